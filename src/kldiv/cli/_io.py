"""Reading arrays a user names on the command line: inline lists or .npy/.csv/.txt/.json files (never pickle).

A file is recognised by its content as well as its name: a zip archive (``.npz``, ``torch.save``), a pickle or a
text file named ``.npy`` is named as what it is, a file of another kind gets the list of formats read, and a
FIFO or device is refused before it is opened (reading one could block forever).
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import numpy as np

from ._errors import CommandError

SUFFIXES = (".npy", ".csv", ".tsv", ".txt", ".json")
FORMATS = "a .npy (numpy.save), .csv/.tsv/.txt (numbers, an optional header row) or .json (nested lists) file"
_INLINE = re.compile(r"^[\s,;0-9eE.+\-infatINFAT]*$")  # digits, separators, exponents, inf and nan
_NPY_MAGIC = b"\x93NUMPY"


def load_array(spec: str, name: str) -> np.ndarray:
    """An inline list such as ``0.1,0.9`` (``;`` separates rows) or a file path.

    An existing file is read; otherwise text made of numbers and separators, or with a ``,`` or ``;`` and no
    known file suffix, is an inline list, and anything else (``p.parquet``, ``data/p``) a missing file.
    """
    path = Path(spec)
    if _exists(spec):
        return _load_file(path, name)
    if _INLINE.match(spec):
        return _parse_inline(spec, name)
    if path.suffix.lower() not in SUFFIXES and ("," in spec or ";" in spec):
        return _parse_inline(spec, name)
    if path.suffix or os.sep in spec or (os.altsep or os.sep) in spec:
        return _load_file(path, name)
    return _parse_inline(spec, name)


def _exists(spec: str) -> bool:
    try:
        return os.path.lexists(spec)
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        return False


def _parse_inline(spec: str, name: str) -> np.ndarray:
    try:
        rows = [[float(v) for v in row.split(",") if v.strip()] for row in spec.split(";") if row.strip()]
    except ValueError:
        bad = next(v for row in spec.split(";") for v in row.split(",") if v.strip() and not _is_number(v))
        raise CommandError(f"{name}: {bad.strip()!r} is not a number; give numbers like 0.1,0.9 or {FORMATS}") from None
    if not rows:
        raise CommandError(f"{name} is empty; give numbers like 0.1,0.9 or {FORMATS}")
    if len({len(r) for r in rows}) > 1:
        raise CommandError(f"{name}: rows separated by ';' have different lengths {[len(r) for r in rows]}")
    return np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _kind(path: Path, head: bytes) -> str | None:
    """What a file is, from its first bytes (and a zip's list of members), where that is not what kldiv reads."""
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        import zipfile

        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            members = []
        if members and all(m.endswith(".npy") for m in members):
            shown = ", ".join(m[:-4] for m in members[:5]) + (", ..." if len(members) > 5 else "")
            return (f"an .npz archive from numpy.savez (arrays {shown}); extract one with numpy.load, then "
                    "numpy.save it")
        if any(m.endswith("data.pkl") for m in members):
            return "a torch.save file; save the tensor with numpy.save(path, tensor.numpy())"
        return "a zip archive"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a pickle (from pickle.dump or an old torch.save), which kldiv never loads"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    return None


def _load_file(path: Path, name: str) -> np.ndarray:
    shown = repr(str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise CommandError(f"{name}: file {shown} does not exist") from None
    except OSError as error:
        raise CommandError(f"{name}: cannot open {shown} ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CommandError(f"{name}: {shown} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise CommandError(f"{name}: {shown} is not a regular file (a FIFO, device or socket); save the numbers in {FORMATS}")
    if info.st_size == 0:
        raise CommandError(f"{name}: {shown} is empty (0 bytes); it holds no numbers")
    suffix = path.suffix.lower()
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as error:
        raise CommandError(f"{name}: cannot read {shown} ({error.strerror or error})") from None
    kind = _kind(path, head)
    if kind is not None:
        raise CommandError(f"{name}: {shown} is {kind}; kldiv reads {FORMATS}")
    if suffix == ".npy" and not head.startswith(_NPY_MAGIC):
        text = head.decode("ascii", errors="replace")
        looks_text = all(c.isprintable() or c in "\r\n\t" for c in text)
        what = "holds text" if looks_text else "does not start with NumPy's magic bytes"
        fix = "; rename it .csv or .txt if it holds numbers as text" if looks_text else f"; kldiv reads {FORMATS}"
        raise CommandError(f"{name}: {shown} is not a .npy file (it {what}){fix}")
    if suffix not in SUFFIXES and not head.startswith(_NPY_MAGIC):
        raise CommandError(f"{name}: {shown} is a {suffix or 'suffix-less'} file; kldiv reads {FORMATS}")
    if head.startswith(_NPY_MAGIC):
        array = _read_npy(path, name, shown)
    elif suffix == ".json":
        array = _read_json(path, name, shown)
    else:
        array = _read_table(path, name, shown, suffix)
    if array.dtype.kind not in "biuf":
        raise CommandError(f"{name}: {shown} holds {array.dtype} data, not numbers")
    if array.size == 0:
        raise CommandError(f"{name}: {shown} holds no numbers (shape {array.shape})")
    return array.astype(np.float64) if array.dtype.kind != "f" else array


def _read_npy(path: Path, name: str, shown: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except MemoryError:
        raise CommandError(f"{name}: {shown} declares an array too large for this machine's memory") from None
    except ValueError as error:
        if "pickle" in str(error):
            raise CommandError(f"{name}: {shown} holds Python objects (pickled), not numbers; kldiv never loads "
                               "pickles: save a numeric array") from None
        raise CommandError(f"{name}: {shown} is a damaged .npy file ({_detail(error)})") from None
    except Exception as error:  # a damaged header raises whatever NumPy's header parser meets (tokenize, syntax)
        raise CommandError(f"{name}: {shown} is a damaged .npy file (its header cannot be read: {_detail(error)})") from None
    if not isinstance(array, np.ndarray):
        raise CommandError(f"{name}: {shown} is not a single .npy array; kldiv reads {FORMATS}")
    return array


def _read_json(path: Path, name: str, shown: str) -> np.ndarray:
    try:
        value = json.loads(path.read_bytes())
    except RecursionError:
        raise CommandError(f"{name}: {shown} is nested too deeply to be an array of numbers") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CommandError(f"{name}: {shown} is not valid JSON ({_detail(error)})") from None
    try:
        return np.asarray(value, dtype=np.float64)
    except RecursionError:
        raise CommandError(f"{name}: {shown} is nested too deeply to be an array of numbers") from None
    except (ValueError, TypeError) as error:
        raise CommandError(f"{name}: {shown} is not a rectangular array of numbers ({_detail(error)})") from None


def _read_table(path: Path, name: str, shown: str, suffix: str) -> np.ndarray:
    delimiter = {".csv": ",", ".tsv": "\t"}.get(suffix)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CommandError(f"{name}: {shown} is not a text file (byte {error.start} is not UTF-8); kldiv reads "
                           f"{FORMATS}") from None
    except OSError as error:
        raise CommandError(f"{name}: cannot read {shown} ({error.strerror or error})") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if lines and not all(_is_number(v) for v in lines[0].split(delimiter) if v.strip()):
        lines = lines[1:]  # a header row
    if not lines:
        raise CommandError(f"{name}: {shown} holds no numbers")
    try:
        return np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=1)
    except ValueError as error:
        raise CommandError(f"{name}: cannot read {shown} as numbers ({_detail(error)})") from None


def _detail(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:200]
