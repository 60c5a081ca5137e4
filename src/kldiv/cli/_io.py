"""Reading arrays a user names on the command line: inline lists or .npy/.csv/.txt/.json files (never pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._errors import CommandError

SUFFIXES = (".npy", ".csv", ".txt", ".json")


def load_array(spec: str, name: str) -> np.ndarray:
    """An inline list such as ``0.1,0.9`` (``;`` separates rows) or a file path."""
    path = Path(spec)
    if path.suffix.lower() in SUFFIXES or path.exists():
        return _load_file(path, name)
    try:
        rows = [[float(v) for v in row.split(",") if v.strip()] for row in spec.split(";") if row.strip()]
    except ValueError:
        bad = next(v for row in spec.split(";") for v in row.split(",") if v.strip() and not _is_number(v))
        raise CommandError(
            f"{name}: {bad.strip()!r} is not a number; give numbers like 0.1,0.9 or a .npy/.csv/.txt/.json file"
        ) from None
    if not rows:
        raise CommandError(f"{name} is empty; give numbers like 0.1,0.9 or a file")
    if len({len(r) for r in rows}) > 1:
        raise CommandError(f"{name}: rows separated by ';' have different lengths {[len(r) for r in rows]}")
    return np.array(rows[0] if len(rows) == 1 else rows, dtype=np.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _load_file(path: Path, name: str) -> np.ndarray:
    if not path.exists():
        raise CommandError(f"{name}: file {str(path)!r} does not exist")
    if path.is_dir():
        raise CommandError(f"{name}: {str(path)!r} is a directory, not a file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".json":
            array = np.asarray(json.loads(path.read_text()), dtype=np.float64)
        else:
            delimiter = "," if suffix == ".csv" else None
            array = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=1)
    except (ValueError, OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CommandError(f"{name}: cannot read {str(path)!r} as numbers ({detail})") from None
    if array.dtype.kind not in "biuf":
        raise CommandError(f"{name}: {str(path)!r} holds {array.dtype} data, not numbers")
    if array.size == 0:
        raise CommandError(f"{name}: {str(path)!r} holds no numbers")
    return array.astype(np.float64) if array.dtype.kind != "f" else array
