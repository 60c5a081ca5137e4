"""Stored logits: writing a reference model's logits, and reading them back chunk by chunk.

Formats (all but llama.cpp's are safetensors files, written without the ``safetensors`` package):

- ``float32`` / ``float16``: the logits themselves (``float16`` rounds them; its error is measured).
- ``top_k``: per token the k largest log-probabilities and their token ids, plus a tail bucket holding the
  remaining mass, spread uniformly over the other V - k tokens when read back.
- ``quantized``: llama.cpp's 16-bit form: log p_i = scale * code_i + min_log_prob over [max - 16, max],
  with ``scale`` and ``min_log_prob`` per token (``perplexity.cpp``, ``log_softmax``).
- llama.cpp ``--kl-divergence-base`` files (read only): magic ``_logits_``, int32 n_ctx, n_vocab, n_chunk,
  the n_ctx * n_chunk int32 tokens, then per chunk and scored position (the last n_ctx - 1 - n_ctx / 2)
  2 float32 (scale, min_log_prob) followed by n_vocab uint16 codes, padded to an even count.

Every file is checked when opened (sizes, offsets, header) and every block when read (NaN, ranges), and
a problem is a :class:`CorruptFileError` that names the file and the byte offset.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _engine, _validate
from ..measures import KL

FORMATS = ("float32", "float16", "top_k", "quantized")
LLAMA_MAGIC = b"_logits_"
LLAMA_FORMAT = "llama.cpp"
QUANTIZED_WINDOW = 16.0  # llama.cpp keeps log-probabilities within 16 nats of the maximum
_SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I32": np.int32, "I64": np.int64,
                       "U16": np.uint16}
_DTYPE_NAMES = {np.dtype(v): k for k, v in _SAFETENSORS_DTYPES.items()}
_BLOCK_BYTES = 64 << 20


class CorruptFileError(ValueError):
    """A stored logits file is truncated or corrupt; the message names the file and the byte offset."""


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


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for name, array in tensors.items():
        header[name] = {"dtype": _DTYPE_NAMES[array.dtype], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for array in tensors.values():
            f.write(np.ascontiguousarray(array).tobytes())


def _log_softmax(rows: np.ndarray) -> _engine.Canon:
    loc = _validate.Locator("logits", rows.shape, 1, (rows.shape[0],))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return _engine.canonical(np, rows.astype(np.float32, copy=False), True, True, 0, loc, 0.0)


def _self_kl(exact: _engine.Canon, stored_log_probs: np.ndarray) -> np.ndarray:
    """KL(exact ‖ stored) per token: the approximation error a storage format adds."""
    stored = _log_softmax(stored_log_probs)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return KL.value(np, exact, stored)


def quantize_log_probs(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp's 16-bit code of logits rows (n, V): (scale, min_log_prob, codes).

    With m = max_i x_i, lo = max(min_i x_i, m - 16) and L = log sum_i exp(x_i - m):
    scale = (m - lo) / 65535, min_log_prob = lo - m - L, code_i = round((x_i - lo) / scale) for x_i > lo and
    0 otherwise, so log p_i ≈ scale * code_i + min_log_prob (an error of at most scale / 2 <= 1.2e-4 nats).
    """
    rows = rows.astype(np.float32, copy=False)
    top = rows.max(axis=-1, keepdims=True)
    low = np.maximum(rows.min(axis=-1, keepdims=True), top - QUANTIZED_WINDOW)
    log_sum = np.log(np.exp(rows - top).sum(axis=-1, keepdims=True, dtype=np.float64)).astype(np.float32)
    scale = (top - low) / np.float32(65535)
    safe = np.where(scale > 0, scale, 1)
    codes = np.where((rows > low) & (scale > 0), np.rint((rows - low) / safe), 0)
    return scale[:, 0], (low - top - log_sum)[:, 0], np.clip(codes, 0, 65535).astype(np.uint16)


def dequantize_log_probs(scale: np.ndarray, min_log_prob: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_log_probs`: log p_i = scale * code_i + min_log_prob (float32)."""
    return scale[:, None] * codes.astype(np.float32) + min_log_prob[:, None]


LLAMA_SKIP_LOG_PROB = -16.0  # llama.cpp's KL divergence skips the reference's terms at or below this log-probability


def llama_log_probs(log_probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The reference rows of a llama.cpp file as llama.cpp reads them: every log-probability at or below -16 is
    a term llama.cpp's KL divergence skips (``p_log_base > -16`` in ``tools/perplexity``), so it is an impossible
    outcome here, except the scored token's own, which llama.cpp's perplexity uses as stored. (Read as
    probabilities, those entries sit at the quantisation floor and add mass the reference never had: on a
    32,000-token vocabulary that overstated the mean KLD ninefold.)"""
    out = np.where(log_probs > LLAMA_SKIP_LOG_PROB, log_probs, -np.inf).astype(np.float32)
    rows = np.arange(len(out))
    out[rows, labels] = log_probs[rows, labels]
    return out


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
    """Full log-probability rows from top-k entries and a tail spread uniformly over the other V - k ids."""
    k = index.shape[-1]
    fill = tail - np.float32(math.log(v - k)) if k < v else np.full_like(tail, -np.inf)
    rows = np.repeat(fill[:, None], v, axis=-1).astype(np.float32)
    np.put_along_axis(rows, index.astype(np.int64), top, axis=-1)
    return rows


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
    ``chunk-NNNNNN.safetensors`` in it; a path ending in ``.safetensors`` is written as given.

    The approximation error a format adds is measured on the chunk and stored in the file (and shown by
    the report): the mean and maximum over tokens of KL(exact ‖ stored), in nats. It is 0 for
    ``float32``; for ``quantized`` it is bounded by the rounding of log p to scale / 2 <= 1.2e-4 nats plus
    the mass below max - 16; for ``top_k`` it is the mass outside the top k spread uniformly.

    Args:
      path: a directory for one file per chunk, or a ``.safetensors`` file.
      logits: (N, V) or (B, T, V) logits, NumPy or PyTorch (any device; copied to the CPU).
      labels: optional integer labels of the batch shape, stored with the logits.
      format: ``"float32"`` (exact), ``"float16"``, ``"top_k"`` or ``"quantized"`` (llama.cpp's 16 bits).
      top_k: k for the ``top_k`` format (at most V; default min(64, V)).

    Returns:
      The path of the file written.

    References:
      llama.cpp ``tools/perplexity/perplexity.cpp`` (``log_softmax`` with ``uint16_t * log_prob``);
      the safetensors format (8-byte header length, JSON header, raw little-endian data).
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
    exact = _log_softmax(rows)
    tensors: dict[str, np.ndarray] = {}
    if format in ("float32", "float16"):
        stored = array.astype(np.float32 if format == "float32" else np.float16)
        tensors["logits"] = stored
        error = np.zeros(rows.shape[0]) if format == "float32" else _self_kl(exact, stored.reshape(-1, v).astype(np.float32))
    elif format == "top_k":
        index, top, tail = _top_k_rows(exact, top_k)
        tensors.update(indices=index, log_probs=top, tail_log_prob=tail)
        error = _self_kl(exact, _expand_top_k(index, top, tail, v))
    else:
        scale, minimum, codes = quantize_log_probs(rows)
        tensors.update(scale=scale.astype(np.float32), min_log_prob=minimum.astype(np.float32), codes=codes)
        error = _self_kl(exact, dequantize_log_probs(scale, minimum, codes))
    if labels is not None:
        label_array = _to_numpy(labels, "labels")
        if label_array.shape != batch or label_array.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers of shape {batch} (one per token), got {label_array.dtype} {label_array.shape}")
        tensors["labels"] = label_array.astype(np.int64)
    metadata = {
        "kldiv_format": format,
        "vocab_size": str(v),
        "batch_shape": json.dumps(list(batch)),
        "top_k": str(top_k if format == "top_k" else 0),
        "self_kl_mean": repr(float(np.mean(error))),
        "self_kl_max": repr(float(np.max(error))),
    }
    target = Path(path)
    if target.suffix != ".safetensors":
        target.mkdir(parents=True, exist_ok=True)
        target = target / f"chunk-{len(list(target.glob('chunk-*.safetensors'))):06d}.safetensors"
    _write_safetensors(target, tensors, metadata)
    return target


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """A plain safetensors file of float64 / int64 arrays (a comparison's state between processes)."""
    _write_safetensors(path, {k: np.asarray(v) for k, v in arrays.items()}, {})


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file written by :func:`write_arrays`, copied into memory."""
    header, _, _ = _read_safetensors_header(path)
    return {name: np.array(info["_array"]) for name, info in header.items()}


# --- reading -------------------------------------------------------------------------------------------


@dataclass
class Segment:
    """The rows of one file: ``read(lo, hi)`` gives float32 logits (or log-probabilities) of rows [lo, hi)."""

    path: Path
    format: str
    n_rows: int
    vocab: int
    read: Callable[[int, int], np.ndarray]
    labels: np.ndarray | None  # (n_rows,) int64 or None
    positions: np.ndarray  # (n_rows,) int64; -1 for rows of a (tokens, vocab) file, which have no positions
    self_kl_mean: float | None = None  # measured approximation error of the format, if known


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
    except (ValueError, UnicodeDecodeError) as error:
        raise _corrupt(path, 8, f"the header is not valid JSON ({str(error).splitlines()[0]}); the file is corrupt") from None
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + length
    for name, info in header.items():
        try:
            dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, 8, f"tensor {name!r} has an unreadable or unsupported entry {info!r} in the header") from None
        if end - begin != math.prod(shape) * dtype.itemsize or begin < 0:
            raise _corrupt(path, data_start + begin, f"tensor {name!r} of shape {shape} and dtype {info['dtype']} needs "
                                                     f"{math.prod(shape) * dtype.itemsize} bytes but its offsets span {end - begin}")
        if data_start + end > size:
            raise _corrupt(path, size, f"the file ends at byte {size} but tensor {name!r} needs bytes "
                                       f"{data_start + begin} to {data_start + end}: the file is truncated")
        info["_array"] = np.memmap(path, dtype=dtype.newbyteorder("<"), mode="r", offset=data_start + begin,
                                   shape=shape) if math.prod(shape) else np.zeros(shape, dtype)
        info["_offset"] = data_start + begin
    return header, metadata, data_start


def _open_safetensors(path: Path) -> Segment:
    header, metadata, _ = _read_safetensors_header(path)
    fmt = metadata.get("kldiv_format", "float32" if "logits" in header else None)
    need = {"float32": ("logits",), "float16": ("logits",), "top_k": ("indices", "log_probs", "tail_log_prob"),
            "quantized": ("scale", "min_log_prob", "codes")}.get(fmt)
    if need is None or any(n not in header for n in need):
        raise _corrupt(path, 8, "no 'logits' tensor and no kldiv reference format in the header; save logits with "
                                "kldiv.compare.save_reference or as a tensor named 'logits'")
    self_kl = float(metadata["self_kl_mean"]) if "self_kl_mean" in metadata else None
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
            batch = tuple(json.loads(metadata["batch_shape"]))
            v = int(metadata["vocab_size"])
        except (KeyError, ValueError, TypeError):
            raise _corrupt(path, 8, "the header's metadata lacks a readable batch_shape or vocab_size") from None
        n = math.prod(batch)
        arrays = {name: header[name]["_array"] for name in need}
        for name, array in arrays.items():
            if array.shape[0] != n:
                raise _corrupt(path, header[name]["_offset"], f"tensor {name!r} has {array.shape[0]} rows but the "
                                                              f"metadata says {n} tokens")
        read = _top_k_reader(path, header, arrays, v) if fmt == "top_k" else _quantized_reader(path, header, arrays, v)
    n_rows = math.prod(batch)
    labels = None
    if "labels" in header:
        labels = np.asarray(header["labels"]["_array"], dtype=np.int64).reshape(-1)
        if labels.size != n_rows:
            raise _corrupt(path, header["labels"]["_offset"], f"tensor 'labels' has {labels.size} entries for {n_rows} tokens")
    return Segment(path, fmt, n_rows, v, read, labels, _positions(batch), self_kl)


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
            bad = np.isnan(flat) | (flat > 1e-3)
            if bad.any():
                r, c = divmod(int(np.argmax(bad.reshape(-1))), flat.shape[-1])
                offset = header[name]["_offset"] + ((lo + r) * flat.shape[-1] + c) * 4
                raise _corrupt(path, offset, f"{name} [{lo + r}] = {flat[r, c]} is not a log-probability (<= 0); "
                                             "the file is corrupt")
        return _expand_top_k(index, top, tail, v)

    return read


def _check_scales(path: Path, scale: np.ndarray, minimum: np.ndarray, row0: int, offsets: tuple[int, int],
                  stride: tuple[int, int]) -> None:
    bad = ~np.isfinite(scale) | (scale < 0) | (scale > 1) | ~np.isfinite(minimum) | (minimum > 1e-3)
    if bad.any():
        r = int(np.argmax(bad))
        offset = offsets[0] + (row0 + r) * stride[0] if not (np.isfinite(scale[r]) and 0 <= scale[r] <= 1) else \
            offsets[1] + (row0 + r) * stride[1]
        raise _corrupt(path, offset, f"token {row0 + r} has scale {scale[r]} and min log-prob {minimum[r]}, which no "
                                     "writer produces (scale in [0, 16/65535], min log-prob <= 0); the file is corrupt")


def _quantized_reader(path: Path, header: dict, arrays: dict, v: int) -> Callable[[int, int], np.ndarray]:
    def read(lo: int, hi: int) -> np.ndarray:
        scale = np.asarray(arrays["scale"][lo:hi], dtype=np.float32)
        minimum = np.asarray(arrays["min_log_prob"][lo:hi], dtype=np.float32)
        _check_scales(path, scale, minimum, lo, (header["scale"]["_offset"], header["min_log_prob"]["_offset"]), (4, 4))
        return dequantize_log_probs(scale, minimum, np.asarray(arrays["codes"][lo:hi]))

    return read


def _open_npy(path: Path) -> Segment:
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
        except (ValueError, OSError) as error:
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
    """A llama.cpp ``--kl-divergence-base`` file (see the module docstring for its layout)."""
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
        _check_scales(path, scale, minimum, lo, (tokens_end, tokens_end + 4), (record, record))
        return llama_log_probs(dequantize_log_probs(scale, minimum, block[:, 4:4 + n_vocab]), labels[lo:hi])

    positions = np.tile(np.arange(first, n_ctx - 1), n_chunk).astype(np.int64)
    return Segment(path, LLAMA_FORMAT, n_chunk * scored, n_vocab, read, labels, positions)


SUFFIXES = (".safetensors", ".npy", ".kld", ".bin", ".dat")


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


class LogitsSource:
    """Stored logits of one model: a file, or a directory of files read in name order as one stream of rows.

    Args:
      path: a ``.safetensors`` or ``.npy`` file, a llama.cpp ``--kl-divergence-base`` file, or a directory of them.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path} does not exist; give a file or a directory of saved logits")
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.is_file() and p.suffix in SUFFIXES)
            if not files:
                raise ValueError(f"{self.path} holds no logits files ({', '.join(SUFFIXES)}); save some with "
                                 "kldiv.compare.save_reference")
        else:
            files = [self.path]
        self.segments = [_open_file(p) for p in files]
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
        return float(sum(s.self_kl_mean * s.n_rows for s in self.segments) / max(self.n_rows, 1))

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

    def read(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Rows [lo, hi) of the whole stream: (float32 logits, labels or None, positions)."""
        parts = list(self._pieces(lo, hi))
        logits = np.concatenate([s.read(a, b) for s, a, b in parts]) if len(parts) > 1 else parts[0][0].read(*parts[0][1:])
        labels = np.concatenate([s.labels[a:b] for s, a, b in parts]) if self.has_labels else None
        positions = np.concatenate([s.positions[a:b] for s, a, b in parts])
        return logits, labels, positions
