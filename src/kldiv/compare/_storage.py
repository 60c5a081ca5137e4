"""Stored logits: writing a reference model's logits, and reading them back chunk by chunk.

Formats (all but llama.cpp's are safetensors files, written without the ``safetensors`` package):

- ``float32`` / ``float16``: the logits themselves (``float16`` rounds them; its error is measured).
- ``top_k``: per token the k largest log-probabilities and their token ids, plus a tail bucket holding the
  remaining mass, spread uniformly over the other V - k tokens when read back.
- ``quantized``: 16-bit log-probabilities, log p_i = min_log_prob + scale (code_i - 1) over the 64 nats below
  each token's maximum (code 0: probability 0), with ``scale`` and ``min_log_prob`` per token; see
  :func:`_quantize_rows`. (Files of kldiv before reference version 2 used llama.cpp's 16-nat code; they are
  still read.)
- llama.cpp ``--kl-divergence-base`` files (read only): magic ``_logits_``, int32 n_ctx, n_vocab, n_chunk,
  the n_ctx * n_chunk int32 tokens, then per chunk and scored position (the last n_ctx - 1 - n_ctx / 2)
  2 float32 (scale, min_log_prob) followed by n_vocab uint16 codes, padded to an even count.

Integrity of kldiv's own references: each file's header records the SHA-256 of the whole file (computed with the
checksum's own 64 characters read as ``0``), the reference's identity and the chunk's sequence number; a folder's
``manifest.json`` lists every chunk with its checksum, and has a checksum of its own. Every file is checked when
opened (sizes, offsets that tile the data without overlap, dtypes, header), its checksum before its rows are used,
and every block when read (NaN, ranges, the bounds of the 16-bit code, top-k mass); a problem is a
:class:`CorruptFileError` that names the file (and the byte offset where there is one). llama.cpp files carry no
checksum: they get every plausibility check, which catches most but not all damage.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _engine, _validate
from ..measures import KL

FORMATS = ("float32", "float16", "top_k", "quantized")
LLAMA_MAGIC = b"_logits_"
LLAMA_FORMAT = "llama.cpp"
LLAMA_WINDOW = 16.0  # llama.cpp keeps log-probabilities within 16 nats of the maximum
QUANTIZED_WINDOW = 64.0  # kldiv's quantized format keeps 64 nats (a floor mass of at most V e^-64)
REFERENCE_VERSION = 2  # kldiv references with checksums, identity and a manifest
MANIFEST = "manifest.json"
LOCK_FILE = ".kldiv-lock"
CHECKSUM_KEY = "checksum"
_CHECKSUM_MARKER = b'"checksum":"'
TOP_K_MASS_TOLERANCE = 1e-4  # top-k probabilities plus the tail sum to 1 within float32 rounding
CODE_MASS_TOLERANCE = 2e-3  # 16-bit rows sum to 1 within the rounding of their log-probabilities (< 5e-4)
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32, "I64": np.int64,
                       "U16": np.uint16}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
_FORMAT_DTYPES = {"float32": {"logits": "F32"}, "float16": {"logits": "F16"},
                  "top_k": {"indices": "I32", "log_probs": "F32", "tail_log_prob": "F32"},
                  "quantized": {"scale": "F32", "min_log_prob": "F32", "codes": "U16"}}
SUFFIXES = (".safetensors", ".npy", ".kld", ".bin", ".dat")


class CorruptFileError(ValueError):
    """A stored logits file is truncated or corrupt; the message names the file (and the byte offset)."""


# --- writing -------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (bfloat16 has no NumPy twin)
        x = x.detach().to("cpu")
        x = x.float() if x.dtype.itemsize < 4 and x.is_floating_point() else x
        x = x.numpy()
    array = np.asarray(x)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name} has dtype {array.dtype}; pass numbers")
    return array


def _encode_safetensors(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> tuple[bytes, list[bytes]]:
    """The header (8-byte length and JSON, padded to 8 bytes) and the data of a safetensors file. With a
    ``checksum`` entry in ``metadata`` the header carries the SHA-256 of the whole file, computed with that
    entry's 64 characters set to ``0`` (see :func:`_file_checksum`)."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    data = []
    for name, array in tensors.items():
        buffer = np.ascontiguousarray(array).tobytes()
        header[name] = {"dtype": _DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(buffer)]}
        offset += len(buffer)
        data.append(buffer)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    head = struct.pack("<Q", len(encoded)) + encoded
    if CHECKSUM_KEY in metadata:
        digest = hashlib.sha256(head)
        for buffer in data:
            digest.update(buffer)
        at = head.index(_CHECKSUM_MARKER) + len(_CHECKSUM_MARKER)
        head = head[:at] + digest.hexdigest().encode() + head[at + 64:]
    return head, data


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str], *,
                       exclusive: bool = False) -> None:
    head, data = _encode_safetensors(tensors, metadata)
    with open(path, "xb" if exclusive else "wb") as f:
        f.write(head)
        for buffer in data:
            f.write(buffer)


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A plain safetensors file of float64 / int64 arrays (a comparison's state between processes)."""
    _write_safetensors(path, {k: np.asarray(v) for k, v in arrays.items()}, {})


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file written by :func:`write_arrays`, copied into memory."""
    header, _, _ = _read_safetensors_header(path)
    return {name: np.array(info["_array"]) for name, info in header.items()}


def _canonical64(rows: np.ndarray, name: str = "logits") -> _engine.Canon:
    """Log-softmax of rows (n, V) in float64; NaN, +inf and all -inf rows are refused with their index."""
    loc = _validate.Locator(name, rows.shape, 1, (rows.shape[0],))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _engine.canonical(np, rows.astype(np.float64, copy=False), True, True, 0, loc, 0.0)


def _self_error(exact: _engine.Canon, stored_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The error a format adds, per token, measured in float64 on the stored side exactly as the reader returns
    it: KL(exact ‖ stored) (>= 0; second order in the rounding), and the p-weighted mean absolute error of the
    log-probabilities, sum_i p_i |log p̂_i - log p_i| (first order: a comparison's KLD against another model moves
    by about this much times E_p |log p - log q|)."""
    stored = _canonical64(stored_rows)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        kl = KL.value(np, exact, stored)
        weighted = np.where(exact.p > 0, exact.p * np.abs(stored.lp - exact.lp), 0.0).sum(axis=-1)
    return kl, weighted


def quantize_log_probs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp's 16-bit code of logits rows (n, V): (scale, min_log_prob, codes), as ``--kl-divergence-base``
    files store them.

    With m = max_i x_i, lo = max(min_i x_i, m - 16) and L = log sum_i exp(x_i - m):
    scale = (m - lo) / 65535, min_log_prob = lo - m - L, code_i = round((x_i - lo) / scale) for x_i > lo and
    0 otherwise, so log p_i ≈ scale * code_i + min_log_prob (an error of at most scale / 2 <= 1.2e-4 nats); every
    x_i <= lo reads back as lo's log-probability (llama.cpp's KL divergence then skips log p_i <= -16).
    """
    rows = rows.astype(np.float32, copy=False)
    top = rows.max(axis=-1, keepdims=True)
    low = np.maximum(rows.min(axis=-1, keepdims=True), top - LLAMA_WINDOW)
    log_sum = np.log(np.exp(rows - top).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    scale = (top - low) / np.float32(65535)
    safe = np.where(scale > 0, scale, 1)
    codes = np.where((rows > low) & (scale > 0), np.rint((rows - low) / safe), 0)
    return scale[:, 0], (low - top - log_sum)[:, 0], np.clip(codes, 0, 65535).astype(np.uint16)


def dequantize_log_probs(scale: np.ndarray, min_log_prob: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_log_probs`: log p_i = scale * code_i + min_log_prob (float32, as llama.cpp)."""
    return scale[:, None] * codes.astype(np.float32) + min_log_prob[:, None]


def _quantize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kldiv's own 16-bit code (``format="quantized"``): (scale, min_log_prob, codes) of logits rows (n, V).

    Code 0 is probability 0 (a logit of -inf); codes 1 to 65535 cover log-probabilities over the
    ``QUANTIZED_WINDOW`` = 64 nats below the row's maximum: with m = max x, lo = max(min of the finite x, m - 64) and
    L = log sum exp(x - m), scale = (m - lo) / 65534, min_log_prob = lo - m - L and
    code_i = 1 + round((max(x_i, lo) - lo) / scale), so log p_i = min_log_prob + scale (code_i - 1) within
    scale / 2 <= 4.9e-4 nats. Entries more than 64 nats below the maximum read back at the window's floor: they
    hold at most V e^-64 (1e-23 for V = 10^5) of probability either way. Computed in float64.
    """
    x = rows.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    finite = np.isfinite(x)
    low = np.maximum(np.where(finite, x, np.inf).min(axis=-1, keepdims=True), top - QUANTIZED_WINDOW)
    with np.errstate(under="ignore"):
        log_sum = np.log(np.exp(x - top).sum(axis=-1, keepdims=True))
    scale = (top - low) / 65534
    safe = np.where(scale > 0, scale, 1.0)
    codes = np.where(finite, 1 + np.rint((np.maximum(x, low) - low) / safe), 0)
    return (scale[:, 0].astype(np.float32), (low - top - log_sum)[:, 0].astype(np.float32),
            np.clip(codes, 0, 65535).astype(np.uint16))


def _dequantize_rows(scale: np.ndarray, min_log_prob: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_quantize_rows` (float32, which keeps the code's 4.9e-4 resolution many times over): -inf
    for code 0, min_log_prob + scale (code - 1) otherwise."""
    values = min_log_prob[:, None] + scale[:, None] * (codes.astype(np.float32) - np.float32(1))
    return np.where(codes == 0, np.float32(-np.inf), values)


LLAMA_SKIP_LOG_PROB = -16.0  # llama.cpp's KL divergence skips the reference's terms at or below this log-probability


def _top_k_rows(log_probs: _engine.Canon, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lp = log_probs.lp
    v = lp.shape[-1]
    index = np.argpartition(lp, v - k, axis=-1)[:, v - k:] if k < v else np.broadcast_to(np.arange(v), lp.shape)
    order = np.argsort(-np.take_along_axis(lp, index, axis=-1), axis=-1, kind="stable")
    index = np.take_along_axis(index, order, axis=-1).astype(np.int32)
    top = np.take_along_axis(lp, index, axis=-1).astype(np.float32)
    # The tail's mass 1 - sum(top p), in log space; -inf when the top k hold everything.
    with np.errstate(divide="ignore"):
        tail = np.log(np.clip(1 - np.exp(top.astype(np.float64)).sum(axis=-1), 0, None)).astype(np.float32)
    return index, top, tail


def _expand_top_k(index: np.ndarray, top: np.ndarray, tail: np.ndarray, v: int) -> np.ndarray:
    """Full log-probability rows (float32) from top-k entries and a tail spread uniformly over the other V - k ids."""
    k = index.shape[-1]
    fill = tail.astype(np.float64) - math.log(v - k) if k < v else np.full(tail.shape, -np.inf)
    rows = np.repeat(fill.astype(np.float32)[:, None], v, axis=-1)
    np.put_along_axis(rows, index.astype(np.int64), top.astype(np.float32), axis=-1)
    return rows


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``folder`` (its ``.kldiv-lock`` file) for one writer at a time."""
    with open(folder / LOCK_FILE, "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # Windows
            import msvcrt

            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                handle.seek(0)
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    body = {key: value for key, value in manifest.items() if key != CHECKSUM_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Replace ``manifest.json`` atomically (a reader sees the old one or the new one, never half)."""
    manifest[CHECKSUM_KEY] = _manifest_checksum(manifest)
    temporary = folder / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(temporary, folder / MANIFEST)


def save_reference(
    path: str | Path,
    logits: Any,
    *,
    labels: Any = None,
    format: str = "float32",
    top_k: int | None = None,
) -> Path:
    """Store one chunk of a reference model's logits for a later ``Comparison`` (``kldiv compare``).

    Call it once per chunk: when ``path`` is a directory (created if missing) each call writes the next
    ``chunk-NNNNNN.safetensors`` in it and records it in the folder's ``manifest.json``; a path ending in
    ``.safetensors`` is written as given (and never over an existing file).

    Integrity: every file carries the SHA-256 of its own bytes, its sequence number and the reference's identity,
    and the manifest lists each chunk with its checksum; reading verifies all of it, so a damaged, missing,
    reordered or foreign chunk is an error naming the file, never a silently different report. Writers into one
    folder take turns on an advisory lock (``.kldiv-lock``), so concurrent processes never lose or overwrite a
    chunk; a name that exists already is never overwritten.

    The approximation error a format adds is measured on the stored data and recorded in the file (and shown by
    the report), computed in float64 between the logits given and the rows the reader returns: the mean and
    maximum over tokens of KL(exact ‖ stored), in nats (second order in the rounding), and the p-weighted mean
    absolute log-probability error sum_i p_i |log p̂_i - log p_i| (first order: what moves a comparison's KLD
    against another model, by about this figure times E_p |log p - log q|). Both are 0 for ``float32`` from
    float32 logits; for ``quantized`` they are about 1e-8 nats and 2.5e-4 nats (log-probabilities rounded to 16
    bits over 64 nats below the maximum: on 32,000 tokens of N(0, 5^2) logits against a model 0.05 away, the KLD
    moves by 1e-4 relative); for ``top_k`` they are the cost of spreading the mass outside the top k uniformly.

    Args:
      path: a directory for one file per chunk, or a ``.safetensors`` file.
      logits: (N, V) or (B, T, V) logits, NumPy or PyTorch (any device; copied to the CPU).
      labels: optional integer labels of the batch shape, stored with the logits.
      format: ``"float32"`` (exact for float32 logits), ``"float16"``, ``"top_k"`` or ``"quantized"`` (16 bits).
      top_k: k for the ``top_k`` format (at most V; default min(64, V)).

    Returns:
      The path of the file written.

    Raises:
      FileExistsError: ``path`` is an existing ``.safetensors`` file, or the folder's next chunk name exists
        without being in its manifest.
      ValueError: bad arguments, or a folder that holds logits files but no kldiv manifest.

    References:
      llama.cpp ``tools/perplexity/perplexity.cpp`` (``log_softmax`` with ``uint16_t * log_prob``), whose 16-bit
      idea the ``quantized`` format follows over a wider window; the safetensors format (8-byte header length,
      JSON header, raw little-endian data).
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    array = _to_numpy(logits, "logits")
    if array.ndim not in (2, 3):
        raise ValueError(f"logits has shape {array.shape}; pass (tokens, vocab) or (batch, sequence, vocab) logits")
    batch, v = array.shape[:-1], array.shape[-1]
    top_k = min(64, v) if top_k is None else top_k
    if format == "top_k" and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= v):
        raise ValueError(f"top_k must be an integer in [1, {v}] (the vocabulary size), got {top_k!r}")
    rows = array.reshape(-1, v)
    exact = _canonical64(rows)
    tensors: dict[str, np.ndarray] = {}
    if format in ("float32", "float16"):
        limit = np.finfo(np.float32 if format == "float32" else np.float16).max
        finite = np.isfinite(rows)
        if np.abs(np.where(finite, rows, 0)).max(initial=0) > limit:
            raise ValueError(f"logits reach {np.abs(np.where(finite, rows, 0)).max():.4g}, beyond {format}'s range "
                             f"(±{limit:.6g}); use format='quantized' (log-probabilities) or shift the logits")
        stored = array.astype(np.float32 if format == "float32" else np.float16)
        tensors["logits"] = stored
        error, log_error = _self_error(exact, stored.reshape(-1, v))
    elif format == "top_k":
        index, top, tail = _top_k_rows(exact, top_k)
        tensors.update(indices=index, log_probs=top, tail_log_prob=tail)
        error, log_error = _self_error(exact, _expand_top_k(index, top, tail, v))
    else:
        scale, minimum, codes = _quantize_rows(rows)
        tensors.update(scale=scale, min_log_prob=minimum, codes=codes)
        error, log_error = _self_error(exact, _dequantize_rows(scale, minimum, codes))
    if labels is not None:
        label_array = _to_numpy(labels, "labels")
        if label_array.shape != batch or label_array.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers of shape {batch} (one per token), got {label_array.dtype} {label_array.shape}")
        tensors["labels"] = label_array.astype(np.int64)
    metadata = {
        "kldiv_reference": str(REFERENCE_VERSION),
        "kldiv_format": format,
        "vocab_size": str(v),
        "batch_shape": json.dumps(list(batch)),
        "top_k": str(top_k if format == "top_k" else 0),
        "self_kl_mean": repr(float(np.mean(error))),
        "self_kl_max": repr(float(np.max(error))),
        "log_prob_error_mean": repr(float(np.mean(log_error))),
    }
    target = Path(path)
    if target.suffix == ".safetensors":
        metadata[CHECKSUM_KEY] = "0" * 64
        try:
            _write_safetensors(target, tensors, metadata, exclusive=True)
        except FileExistsError:
            raise FileExistsError(f"{target} exists; kldiv never overwrites a file: choose another name or move it "
                                  "away") from None
        return target
    target.mkdir(parents=True, exist_ok=True)
    with _folder_lock(target):
        manifest = _read_manifest(target)
        if manifest is None:
            strays = sorted(p.name for p in target.iterdir() if p.is_file() and p.suffix in SUFFIXES)
            if strays:
                raise ValueError(f"{target} holds {strays[0]} but no kldiv {MANIFEST}; save the reference into a new "
                                 "or empty folder")
            manifest = {"kldiv_reference": REFERENCE_VERSION, "reference_id": uuid.uuid4().hex, "chunks": []}
        sequence = len(manifest["chunks"])
        name = f"chunk-{sequence:06d}.safetensors"
        metadata.update(reference_id=manifest["reference_id"], sequence=str(sequence), checksum="0" * 64)
        head, data = _encode_safetensors(tensors, metadata)
        try:
            with open(target / name, "xb") as f:
                f.write(head)
                for buffer in data:
                    f.write(buffer)
        except FileExistsError:
            raise FileExistsError(f"{target / name} exists but is not in {target / MANIFEST}; move it out of the "
                                  "folder (kldiv never overwrites a file)") from None
        checksum = json.loads(head[8:])["__metadata__"][CHECKSUM_KEY]
        manifest["chunks"].append({"file": name, "sequence": sequence, "tokens": int(rows.shape[0]),
                                   "checksum": checksum})
        _write_manifest(target, manifest)
    return target / name


# --- reading -------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """The rows of one file: ``read(lo, hi)`` gives logits or log-probabilities of rows [lo, hi) (float32; float64
    for llama.cpp files, to hold llama.cpp's arithmetic to 1e-6), after ``check()`` has verified the file's checksum once (if it has one)."""

    path: Path
    format: str
    n_rows: int
    vocab: int
    read: Callable[[int, int], np.ndarray]
    labels: np.ndarray | None  # (n_rows,) int64 or None
    positions: np.ndarray  # (n_rows,) int64; -1 for rows of a (tokens, vocab) file, which have no positions
    self_kl_mean: float | None = None  # measured approximation error of the format, if known
    log_prob_error_mean: float | None = None  # its p-weighted mean absolute log-probability error, if known
    check: Callable[[], None] | None = None  # verifies the file's bytes; None when it records no checksum
    identity: tuple[str, int] | None = None  # (reference id, sequence number) of a kldiv chunk

    def verified(self) -> Segment:
        """This segment, its file's checksum verified (once)."""
        if self.check is not None:
            self.check()
            self.check = None
        return self


@dataclass
class Block:
    """Rows [lo, hi) of a stream: the reference side's values for :meth:`Comparison._update_rows`."""

    logits: np.ndarray
    labels: np.ndarray | None
    positions: np.ndarray
    # llama.cpp rows only (None without any): log of the kept probability mass, and log p(label) as stored
    log_mass: np.ndarray | None = None
    label_log_prob: np.ndarray | None = None


def _corrupt(path: Path, offset: int, message: str) -> CorruptFileError:
    return CorruptFileError(f"{path}: byte offset {offset}: {message}")


def _check_logit_block(path: Path, block: np.ndarray, row0: int, data_offset: int, itemsize: int, v: int) -> None:
    """NaN or +inf logits mean a damaged file: name the first one's byte offset."""
    top = block.max(axis=-1)
    if np.isfinite(top).all():
        return
    bad = np.isnan(block) | np.isposinf(block)
    if not bad.any():  # a row of only -inf
        r = int(np.argmax(~np.isfinite(top)))
        raise _corrupt(path, data_offset + (row0 + r) * v * itemsize,
                       f"every logit of token {row0 + r} is -inf; the file is corrupt (write it again)")
    r, c = divmod(int(np.argmax(bad.reshape(-1))), v)
    what = "NaN" if np.isnan(block[r, c]) else "+inf"
    raise _corrupt(path, data_offset + ((row0 + r) * v + c) * itemsize,
                   f"logit [{row0 + r}, {c}] is {what}; the file is corrupt (write it again)")


def _positions(batch: tuple[int, ...]) -> np.ndarray:
    """Each row's position in its sequence for a (batch, sequence) shape; -1 (unknown) for (tokens,)."""
    return np.broadcast_to(np.arange(batch[-1]) if len(batch) == 2 else -1, batch).reshape(-1).astype(np.int64)


def _file_checksum(path: Path, checksum_at: int) -> str:
    """SHA-256 of the file with the 64 characters at ``checksum_at`` (its recorded checksum) read as ``0``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = bytearray(f.read(checksum_at + 64))
        head[checksum_at:checksum_at + 64] = b"0" * 64
        digest.update(head)
        while chunk := f.read(16 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _read_safetensors_header(path: Path) -> tuple[dict[str, Any], dict[str, str], int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _corrupt(path, len(head), f"the file has only {size} bytes; a safetensors file starts with an "
                                            "8-byte header length (truncated?)")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8 or length > 100 << 20:
            raise _corrupt(path, 0, f"the header length {length} runs past the end of the file ({size} bytes); "
                                    "the file is truncated or not a safetensors file")
        raw = f.read(length)
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise _corrupt(path, 8, f"the header is not valid JSON ({str(error).splitlines()[0]}); the file is corrupt") from None
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, 8, "the header's __metadata__ is not a map of strings; the file is corrupt")
    data_start = 8 + length
    spans = []
    for name, info in header.items():
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
            if any(s < 0 for s in shape):
                raise ValueError
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, 8, f"tensor {name!r} has an unreadable or unsupported entry {info!r} in the header") from None
        if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
            raise _corrupt(path, data_start + begin, f"tensor {name!r} of shape {shape} and dtype {info['dtype']} needs "
                                                     f"{math.prod(shape) * dtype.itemsize} bytes but its offsets span {end - begin}")
        if data_start + end > size:
            raise _corrupt(path, size, f"the file ends at byte {size} but tensor {name!r} needs bytes "
                                       f"{data_start + begin} to {data_start + end}: the file is truncated")
        spans.append((begin, end, name))
        info["_array"] = np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=data_start + begin,
                                   shape=shape) if math.prod(shape) else np.zeros(shape, dtype)
        info["_offset"] = data_start + begin
    # the data region is the tensors' bytes, back to back (the safetensors rule): no overlap, no gap, no tail
    at, previous = 0, None
    for begin, end, name in sorted(spans):
        if begin != at:
            what = f"overlaps tensor {previous!r}" if begin < at else f"leaves bytes {data_start + at} to {data_start + begin} unused"
            raise _corrupt(path, data_start + begin, f"tensor {name!r} (bytes {data_start + begin} to {data_start + end}) "
                                                     f"{what}; the file is corrupt")
        at, previous = end, name
    if data_start + at != size:
        raise _corrupt(path, data_start + at, f"the tensors end at byte {data_start + at} but the file has {size} bytes; "
                                              "the file is corrupt")
    return header, metadata, data_start


def _check_dtypes(path: Path, header: dict, fmt: str) -> None:
    """A kldiv reference's tensors have the dtypes and shapes its writer gives them: a reinterpreted dtype is
    corruption, not a different number."""
    expected = {**_FORMAT_DTYPES[fmt], "labels": "I64"}
    for name, info in header.items():
        if name in expected and info["dtype"] != expected[name]:
            raise _corrupt(path, 8, f"tensor {name!r} has dtype {info['dtype']} but a {fmt} reference stores "
                                    f"{expected[name]}; the file is corrupt")


def _open_safetensors(path: Path) -> Segment:
    header, metadata, data_start = _read_safetensors_header(path)
    fmt = metadata.get("kldiv_format", "float32" if "logits" in header else None)
    need = {"float32": ("logits",), "float16": ("logits",), "top_k": ("indices", "log_probs", "tail_log_prob"),
            "quantized": ("scale", "min_log_prob", "codes")}.get(fmt)
    if need is None or any(n not in header for n in need):
        raise _corrupt(path, 8, "no 'logits' tensor and no kldiv reference format in the header; save logits with "
                                "kldiv.compare.save_reference or as a tensor named 'logits'")
    version = metadata.get("kldiv_reference")
    if "kldiv_format" in metadata:
        _check_dtypes(path, header, fmt)
    try:
        self_kl = float(metadata["self_kl_mean"]) if "self_kl_mean" in metadata else None
        log_error = float(metadata["log_prob_error_mean"]) if "log_prob_error_mean" in metadata else None
    except ValueError:
        raise _corrupt(path, 8, "the header's self_kl_mean or log_prob_error_mean is not a number") from None
    if fmt in ("float32", "float16"):
        logits = header["logits"]["_array"]
        if logits.ndim not in (2, 3):
            raise _corrupt(path, 8, f"tensor 'logits' has shape {logits.shape}; it must be (tokens, vocab) or (batch, sequence, vocab)")
        batch, v = logits.shape[:-1], logits.shape[-1]
        rows = logits.reshape(-1, v)
        offset, itemsize = header["logits"]["_offset"], logits.dtype.itemsize

        def read(lo: int, hi: int) -> np.ndarray:
            block = np.asarray(rows[lo:hi], dtype=np.float32)
            _check_logit_block(path, block, lo, offset, itemsize, v)
            return block
    else:
        try:
            batch = tuple(int(b) for b in json.loads(metadata["batch_shape"]))
            v = int(metadata["vocab_size"])
            if not batch or len(batch) > 2 or v < 1 or any(b < 0 for b in batch):
                raise ValueError
        except (KeyError, ValueError, TypeError):
            raise _corrupt(path, 8, "the header's metadata lacks a readable batch_shape or vocab_size") from None
        n = math.prod(batch)
        k = header["indices"]["_array"].shape[-1] if fmt == "top_k" else 0
        shapes = {"indices": (n, k), "log_probs": (n, k), "tail_log_prob": (n,), "scale": (n,), "min_log_prob": (n,),
                  "codes": (n, v)}
        arrays = {name: header[name]["_array"] for name in need}
        for name, array in arrays.items():
            if array.shape != shapes[name] or (fmt == "top_k" and not 1 <= k <= v):
                raise _corrupt(path, header[name]["_offset"], f"tensor {name!r} has shape {array.shape} but the "
                                                              f"metadata says {n} tokens of a vocabulary of {v}")
        if fmt == "top_k":
            read = _top_k_reader(path, header, arrays, v)
        else:
            read = _quantized_reader(path, header, arrays, v, legacy=version is None)
    n_rows = math.prod(batch)
    labels = None
    if "labels" in header:
        labels = np.asarray(header["labels"]["_array"], dtype=np.int64).reshape(-1)
        if labels.size != n_rows:
            raise _corrupt(path, header["labels"]["_offset"], f"tensor 'labels' has {labels.size} entries for {n_rows} tokens")
    check, identity = None, None
    if version is not None:
        recorded = metadata.get(CHECKSUM_KEY, "")
        with open(path, "rb") as f:
            at = f.read(data_start).find(_CHECKSUM_MARKER)
        if len(recorded) != 64 or at < 0:
            raise _corrupt(path, 8, "the header of this kldiv reference has no checksum; the file is corrupt")
        if "reference_id" in metadata or "sequence" in metadata:  # a chunk of a folder (single files have neither)
            try:
                identity = (metadata["reference_id"], int(metadata["sequence"]))
            except (KeyError, ValueError):
                raise _corrupt(path, 8, "the header lacks the reference's identity or the chunk's sequence number; "
                                        "the file is corrupt") from None

        def check() -> None:
            if _file_checksum(path, at + len(_CHECKSUM_MARKER)) != recorded:
                raise CorruptFileError(f"{path}: its bytes do not match the SHA-256 recorded when it was saved: the "
                                       "file is damaged; save the reference again")
    return Segment(path, fmt, n_rows, v, read, labels, _positions(batch), self_kl, log_error, check, identity)


def _rows_error(path: Path, offset: int, token: int, message: str) -> CorruptFileError:
    return _corrupt(path, offset, f"token {token} {message}; the file is corrupt")


def _top_k_reader(path: Path, header: dict, arrays: dict, v: int) -> Callable[[int, int], np.ndarray]:
    def read(lo: int, hi: int) -> np.ndarray:
        index = np.asarray(arrays["indices"][lo:hi])
        top = np.asarray(arrays["log_probs"][lo:hi], dtype=np.float32)
        tail = np.asarray(arrays["tail_log_prob"][lo:hi], dtype=np.float32)
        k = index.shape[-1]
        bad = (index < 0) | (index >= v)
        if bad.any():
            r, c = divmod(int(np.argmax(bad.reshape(-1))), k)
            offset = header["indices"]["_offset"] + ((lo + r) * k + c) * index.dtype.itemsize
            raise _corrupt(path, offset, f"token id {int(index[r, c])} of token {lo + r} is outside the vocabulary "
                                         f"[0, {v}); the file is corrupt")
        for name, values in (("log_probs", top), ("tail_log_prob", tail)):
            flat = values.reshape(len(values), -1)
            bad = np.isnan(flat) | (flat > 1e-3) | np.isposinf(flat)
            if bad.any():
                r, c = divmod(int(np.argmax(bad.reshape(-1))), flat.shape[-1])
                offset = header[name]["_offset"] + ((lo + r) * flat.shape[-1] + c) * 4
                raise _corrupt(path, offset, f"{name} [{lo + r}] = {flat[r, c]} is not a log-probability (<= 0); "
                                             "the file is corrupt")
        ordered = np.sort(index, axis=-1)
        problems = [
            ((ordered[:, 1:] == ordered[:, :-1]).any(axis=-1), "indices", "lists a token id twice"),
            ((top[:, 1:] > top[:, :-1]).any(axis=-1), "log_probs", "has top-k log-probabilities out of order"),
        ]
        with np.errstate(under="ignore"):
            mass = np.exp(top.astype(np.float64)).sum(axis=-1) + np.exp(tail.astype(np.float64))
        problems.append((np.abs(mass - 1) > TOP_K_MASS_TOLERANCE, "log_probs", "has top-k probabilities and a tail "
                                                                               "that do not sum to 1"))
        for bad, name, what in problems:
            if bad.any():
                r = int(np.argmax(bad))
                extra = f" (they sum to {mass[r]:.6g})" if "sum" in what else ""
                raise _rows_error(path, header[name]["_offset"] + (lo + r) * max(k, 1) * 4, lo + r, what + extra)
        return _expand_top_k(index, top, tail, v)

    return read


def _check_codes(path: Path, scale: np.ndarray, minimum: np.ndarray, codes: np.ndarray, log_probs: np.ndarray,
                 row0: int, offsets: tuple[int, int, int], strides: tuple[int, int, int], window: float,
                 levels: int, llama: bool) -> None:
    """The 16-bit rows are what their writer produces: the scale within its real bound window / levels, the top
    code at the top of the range, the normaliser L = -(min_log_prob + levels scale) in [0, log V] and the
    probabilities summing to 1 (above the floor at most, everything at least) within the rounding."""
    v = codes.shape[-1]
    bound = window / levels * (1 + 1e-6)
    with np.errstate(invalid="ignore", over="ignore"):
        log_norm = -(minimum.astype(np.float64) + levels * scale.astype(np.float64))
    bad_scale = ~np.isfinite(scale) | (scale < 0) | (scale > bound)
    bad_min = ~np.isfinite(minimum) | ~(log_norm >= -1e-3) | ~(log_norm <= math.log(v) + 1e-3)
    top_code = codes.max(axis=-1)
    lowest = 0 if llama else 1
    bad_top = np.where(scale > 0, top_code != 65535, top_code > lowest)
    with np.errstate(under="ignore", invalid="ignore", over="ignore"):
        p = np.exp(log_probs)
        above = np.where(codes > 0, p, 0).sum(axis=-1, dtype=np.float64)
        everything = p.sum(axis=-1, dtype=np.float64) if llama else above
    bad_mass = ~(above <= 1 + CODE_MASS_TOLERANCE) | ~(everything >= 1 - CODE_MASS_TOLERANCE)
    for bad, what, which in (
        (bad_scale, f"has scale {{s}}, outside its real bound [0, {window:g}/{levels}]", 0),
        (bad_min, "has min log-prob {m}, which no writer produces with its scale {s}", 1),
        (bad_top, "has a largest code of {c}, where the writer always gives the top entry 65535", 2),
        (bad_mass, "has stored probabilities summing to {t:.6g}, not 1", 2),
    ):
        if bad.any():
            r = int(np.argmax(bad))
            message = what.format(s=scale[r], m=minimum[r], c=int(top_code[r]), t=float(everything[r]))
            raise _rows_error(path, offsets[which] + (row0 + r) * strides[which], row0 + r, message)


def _quantized_reader(path: Path, header: dict, arrays: dict, v: int, legacy: bool) -> Callable[[int, int], np.ndarray]:
    """Rows of a ``quantized`` file (float32); files of kldiv before reference version 2 used llama.cpp's code."""
    offsets = (header["scale"]["_offset"], header["min_log_prob"]["_offset"], header["codes"]["_offset"])
    strides = (4, 4, 2 * v)

    def read(lo: int, hi: int) -> np.ndarray:
        scale = np.asarray(arrays["scale"][lo:hi], dtype=np.float32)
        minimum = np.asarray(arrays["min_log_prob"][lo:hi], dtype=np.float32)
        codes = np.asarray(arrays["codes"][lo:hi])
        if legacy:
            rows = dequantize_log_probs(scale, minimum, codes)
            _check_codes(path, scale, minimum, codes, rows, lo, offsets, strides, LLAMA_WINDOW, 65535, llama=True)
            return rows
        rows = _dequantize_rows(scale, minimum, codes)
        _check_codes(path, scale, minimum, codes, rows, lo, offsets, strides, QUANTIZED_WINDOW, 65534, llama=False)
        return rows

    return read


def _open_npy(path: Path) -> Segment:
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except (ValueError, OSError, SyntaxError) as error:
            raise _corrupt(path, 0, f"not a readable .npy file ({str(error).splitlines()[0]})") from None
        offset = f.tell()
    if dtype.kind != "f" or fortran or len(shape) not in (2, 3):
        raise _corrupt(path, 0, f"holds a {'Fortran-order ' if fortran else ''}{dtype} array of shape {shape}; "
                                "logits must be a C-order float array of shape (tokens, vocab) or (batch, sequence, vocab)")
    need = offset + math.prod(shape) * dtype.itemsize
    if size < need:
        raise _corrupt(path, size, f"the file ends at byte {size} but its {dtype} array of shape {shape} needs "
                                   f"{need} bytes: the file is truncated")
    array = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
    batch, v = shape[:-1], shape[-1]
    rows = array.reshape(-1, v)

    def read(lo: int, hi: int) -> np.ndarray:
        block = np.asarray(rows[lo:hi], dtype=np.float32)
        _check_logit_block(path, block, lo, offset, dtype.itemsize, v)
        return block

    return Segment(path, "npy", math.prod(batch), v, read, None, _positions(tuple(batch)))


def _open_llama(path: Path) -> Segment:
    """A llama.cpp ``--kl-divergence-base`` file (see the module docstring for its layout). Rows are the stored
    log-probabilities as llama.cpp reads them (float64 of float32 arithmetic: scale * code + min_log_prob),
    the floor entries included; :meth:`LogitsSource.read` applies llama.cpp's -16 rule."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20:
        raise _corrupt(path, len(head), f"the file has only {size} bytes; a llama.cpp logits file has a 20-byte header")
    n_ctx, n_vocab, n_chunk = struct.unpack("<iii", head[8:20])
    for name, value, offset, low in (("n_ctx", n_ctx, 8, 2), ("n_vocab", n_vocab, 12, 1), ("n_chunk", n_chunk, 16, 1)):
        if not low <= value < 1 << 28:
            raise _corrupt(path, offset, f"{name} = {value} is not a plausible size; the file is corrupt")
    tokens_end = 20 + 4 * n_ctx * n_chunk
    if size < tokens_end:
        raise _corrupt(path, size, f"the file ends at byte {size} but its {n_ctx * n_chunk} tokens need bytes 20 to "
                                   f"{tokens_end}: the file is truncated")
    tokens = np.fromfile(path, dtype="<i4", count=n_ctx * n_chunk, offset=20).reshape(n_chunk, n_ctx)
    first = n_ctx // 2
    scored = n_ctx - 1 - first
    words = 2 * ((n_vocab + 1) // 2) + 4
    record = 2 * words
    need = tokens_end + n_chunk * scored * record
    if size < need:
        complete = (size - tokens_end) // record
        chunk, position = divmod(complete, scored)
        raise _corrupt(path, tokens_end + complete * record,
                       f"the file ends at byte {size} but {n_chunk} chunks need {need} bytes; the record of chunk "
                       f"{chunk}, position {first + position} is cut off: the file is truncated")
    if size > need:
        raise _corrupt(path, need, f"the file has {size} bytes but {n_chunk} chunks of {n_ctx} tokens over a "
                                   f"vocabulary of {n_vocab} take {need}; the file is corrupt")
    labels = tokens[:, first + 1:].reshape(-1).astype(np.int64)
    bad = (labels < 0) | (labels >= n_vocab)
    if bad.any():
        i = int(np.argmax(bad))
        chunk, j = divmod(i, scored)
        raise _corrupt(path, 20 + 4 * (chunk * n_ctx + first + 1 + j),
                       f"token {int(labels[i])} is outside the vocabulary [0, {n_vocab}); the file is corrupt")
    data = np.memmap(path, dtype="<u2", mode="r", offset=tokens_end, shape=(n_chunk * scored, words))

    def read(lo: int, hi: int) -> np.ndarray:
        block = np.asarray(data[lo:hi])
        header = np.ascontiguousarray(block[:, :4]).view("<f4")
        scale, minimum = header[:, 0].astype(np.float32), header[:, 1].astype(np.float32)
        codes = block[:, 4:4 + n_vocab]
        with np.errstate(invalid="ignore", over="ignore"):
            rows = dequantize_log_probs(scale, minimum, codes).astype(np.float64)
        _check_codes(path, scale, minimum, codes, rows, lo, (tokens_end, tokens_end + 4, tokens_end + 8),
                     (record, record, record), LLAMA_WINDOW, 65535, llama=True)
        return rows

    positions = np.tile(np.arange(first, n_ctx - 1), n_chunk).astype(np.int64)
    return Segment(path, LLAMA_FORMAT, n_chunk * scored, n_vocab, read, labels, positions)


def _open_file(path: Path) -> Segment:
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic == LLAMA_MAGIC:
        return _open_llama(path)
    if magic[:6] == b"\x93NUMPY":
        return _open_npy(path)
    if path.suffix == ".npy":
        raise _corrupt(path, 0, "does not start with the .npy magic bytes; the file is corrupt or not a .npy file")
    return _open_safetensors(path)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's manifest, checked (its own checksum and layout); None if it has none."""
    path = folder / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        chunks = manifest["chunks"]
        ok = (isinstance(manifest, dict) and manifest.get("kldiv_reference") == REFERENCE_VERSION
              and isinstance(manifest.get("reference_id"), str) and isinstance(chunks, list)
              and all(isinstance(c, dict) and isinstance(c.get("file"), str) and isinstance(c.get("sequence"), int)
                      and isinstance(c.get("tokens"), int) and isinstance(c.get("checksum"), str) for c in chunks))
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, RecursionError):
        ok = False
    if not ok or manifest.get(CHECKSUM_KEY) != _manifest_checksum(manifest):
        raise CorruptFileError(f"{path}: the manifest is damaged (not the JSON kldiv wrote, or its checksum does not "
                               "match); the reference cannot be verified")
    return manifest


def _open_reference_folder(folder: Path, files: list[Path], manifest: dict[str, Any]) -> list[Segment]:
    """The chunks of a kldiv reference folder in sequence order, each matched against the manifest: present,
    of this reference, at its place, and (when read) with the bytes it was saved with."""
    listed = {c["file"] for c in manifest["chunks"]}
    for p in files:
        if p.name not in listed:
            raise CorruptFileError(f"{p}: not part of the reference in {folder / MANIFEST} (copied from another "
                                   "reference, or left by an interrupted save?); move it out of the folder")
    segments = []
    for place, entry in enumerate(manifest["chunks"]):
        path = folder / entry["file"]
        if entry["sequence"] != place:
            raise CorruptFileError(f"{folder / MANIFEST}: lists {entry['file']} as chunk {entry['sequence']} at place "
                                   f"{place}; the manifest is damaged")
        if not path.is_file():
            raise CorruptFileError(f"{path}: chunk {place} of this reference is missing (deleted or renamed?); the "
                                   f"reference in {folder} is incomplete")
        segment = _open_file(path)
        if segment.identity is None:
            raise CorruptFileError(f"{path}: not a chunk written by kldiv's save_reference, but {MANIFEST} lists it")
        reference_id, sequence = segment.identity
        if reference_id != manifest["reference_id"] or sequence != place or segment.n_rows != entry["tokens"]:
            where = "another reference" if reference_id != manifest["reference_id"] else f"chunk {sequence}"
            raise CorruptFileError(f"{path}: holds {where}, but {MANIFEST} lists this name as chunk {place} of "
                                   f"{entry['tokens']} tokens: chunks renamed, reordered or copied from another "
                                   "reference")
        recorded = entry["checksum"]
        own = segment.check

        def check(path: Path = path, own: Callable[[], None] | None = own, recorded: str = recorded) -> None:
            with open(path, "rb") as f:
                head = f.read(8 + struct.unpack("<Q", f.read(8))[0])
            if recorded.encode() not in head:
                raise CorruptFileError(f"{path}: its checksum is not the one {MANIFEST} records for it: the file was "
                                       "replaced or damaged")
            if own is not None:
                own()

        segment.check = check
        segments.append(segment)
    return segments


class LogitsSource:
    """Stored logits of one model: a file, or a directory of files read in name order as one stream of rows.

    A folder written by :func:`save_reference` is read in the order of its ``manifest.json``, and every chunk is
    verified against it (present, of this reference, at its place, bytes unchanged: each file's SHA-256 is checked
    before its first rows are used).

    Args:
      path: a ``.safetensors`` or ``.npy`` file, a llama.cpp ``--kl-divergence-base`` file, or a directory of them.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist; give a file or a directory of saved logits")
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
            manifest = _read_manifest(self.path)
            if manifest is not None:
                self.segments = _open_reference_folder(self.path, files, manifest)
                if not self.segments:
                    raise ValueError(f"{self.path} is a reference without chunks; save some with "
                                     "kldiv.compare.save_reference")
            else:
                if not files:
                    raise ValueError(f"{self.path} holds no logits files ({', '.join(SUFFIXES)}); save some with "
                                     "kldiv.compare.save_reference")
                self.segments = [_open_file(p) for p in files]
                chunk = next((s for s in self.segments if s.identity is not None), None)
                if chunk is not None:
                    raise CorruptFileError(f"{chunk.path}: a chunk of a kldiv reference, but {self.path / MANIFEST} "
                                           "is missing; the reference cannot be verified (restore the manifest)")
        else:
            self.segments = [_open_file(self.path)]
        vocabularies = {s.vocab for s in self.segments}
        if len(vocabularies) > 1:
            first, odd = self.segments[0], next(s for s in self.segments if s.vocab != self.segments[0].vocab)
            raise ValueError(f"{first.path} has a vocabulary of {first.vocab} but {odd.path} has {odd.vocab}; "
                             "all files of one model must share the vocabulary")
        self.vocab = self.segments[0].vocab
        self.n_rows = sum(s.n_rows for s in self.segments)
        self._starts = np.cumsum([0] + [s.n_rows for s in self.segments])

    @property
    def formats(self) -> list[str]:
        return sorted({s.format for s in self.segments})

    @property
    def self_kl_mean(self) -> float | None:
        """Token-weighted mean of the measured approximation error, if every file recorded one."""
        if any(s.self_kl_mean is None for s in self.segments):
            return None
        return max(0.0, float(sum(s.self_kl_mean * s.n_rows for s in self.segments) / max(self.n_rows, 1)))

    @property
    def log_prob_error_mean(self) -> float | None:
        """Token-weighted mean of the measured log-probability error, if every file recorded one."""
        if any(s.log_prob_error_mean is None for s in self.segments):
            return None
        return max(0.0, float(sum(s.log_prob_error_mean * s.n_rows for s in self.segments) / max(self.n_rows, 1)))

    @property
    def has_labels(self) -> bool:
        return all(s.labels is not None for s in self.segments)

    def _pieces(self, lo: int, hi: int):
        i = int(np.searchsorted(self._starts, lo, side="right")) - 1
        while lo < hi:
            s, start = self.segments[i], int(self._starts[i])
            end = min(hi, start + s.n_rows)
            if end > lo:
                yield s, lo - start, end - start
            lo, i = max(lo, end), i + 1

    def labels(self, lo: int, hi: int) -> np.ndarray | None:
        """The stored labels of rows [lo, hi), or None unless every file stores labels."""
        if not self.has_labels:
            return None
        return np.concatenate([s.labels[a:b] for s, a, b in self._pieces(lo, hi)])

    def read(self, lo: int, hi: int, labels: np.ndarray | None = None, *, skip_floor: bool = True) -> Block:
        """Rows [lo, hi) of the whole stream, each file's checksum verified before its first rows are used.

        Rows of llama.cpp files follow llama.cpp's arithmetic: with ``skip_floor`` (KL(reference ‖ other)) every
        stored log-probability at or below -16 is an outcome the KL skips (-inf here), and ``log_mass`` is the log
        of the probability kept, so that the caller can undo the renormalisation; ``label_log_prob`` is
        log p(label) as stored (llama.cpp's perplexity uses it even below -16) for ``labels`` (default: the
        file's own tokens). Without ``skip_floor`` the rows are the stored values, floor included.
        """
        parts = list(self._pieces(lo, hi))
        rows, log_mass, label_log_prob = [], [], []
        llama = any(s.format == LLAMA_FORMAT for s, _, _ in parts)
        done = 0
        for s, a, b in parts:
            block = s.verified().read(a, b)
            if s.format == LLAMA_FORMAT:
                wanted = s.labels[a:b] if labels is None else labels[done:done + b - a]
                picked = np.take_along_axis(block, np.where(wanted < 0, 0, wanted)[:, None], axis=-1)[:, 0]
                label_log_prob.append(np.where(wanted < 0, np.nan, picked))
                if skip_floor:
                    block = np.where(block > LLAMA_SKIP_LOG_PROB, block, -np.inf)
                    top = block.max(axis=-1, keepdims=True)
                    with np.errstate(under="ignore"):
                        log_mass.append((top + np.log(np.exp(block - top).sum(axis=-1, keepdims=True)))[:, 0])
                else:
                    log_mass.append(np.zeros(b - a))
            elif llama:
                label_log_prob.append(np.full(b - a, np.nan))
                log_mass.append(np.zeros(b - a))
            rows.append(block)
            done += b - a
        dtype = np.result_type(*(r.dtype for r in rows))
        logits = np.concatenate([r.astype(dtype, copy=False) for r in rows]) if len(rows) > 1 else rows[0]
        positions = np.concatenate([s.positions[a:b] for s, a, b in parts])
        return Block(logits, self.labels(lo, hi), positions,
                     np.concatenate(log_mass) if llama else None, np.concatenate(label_log_prob) if llama else None)
