"""Run folders: every file written atomically, so an interrupted run leaves the last complete state.

A run folder holds ``config.json`` (the options, used by ``--resume``), ``checkpoint.pt`` (everything needed to
continue: weights, optimiser, random states, history), ``model.safetensors`` (the weights alone),
``metrics.csv`` / ``metrics.json`` (one row per epoch or evaluation), ``state.json`` (``status``: ``running``,
``interrupted`` or ``finished``, and the last completed epoch) and PNG plots.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CommandError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


def write_metrics(folder: Path, rows: list[dict[str, Any]]) -> None:
    """``metrics.json`` and ``metrics.csv`` (its scalar columns) from a list of rows (dicts)."""
    atomic_write_json(folder / "metrics.json", rows)
    buffer = io.StringIO()
    rows = [{k: v for k, v in row.items() if not isinstance(v, list | tuple | dict)} for row in rows]  # CSV: scalars
    if rows:
        fields = list(rows[0])
        for row in rows[1:]:
            fields += [k for k in row if k not in fields]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(folder / "metrics.csv", buffer.getvalue())


def save_torch(path: Path, obj: Any) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_weights(path: Path, state_dict: dict[str, Any]) -> None:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors))


def load_weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block until the block ends, so a group of writes is not cut."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[Any] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def prepare_folder(folder: Path, *, resume: bool, force: bool) -> dict[str, Any] | None:
    """Create the run folder, or check it for ``--resume``; return the saved config when resuming."""
    folder = Path(folder)
    if resume:
        config_path = folder / "config.json"
        if not (folder / "checkpoint.pt").is_file() or not config_path.is_file():
            raise CommandError(
                f"--resume: {str(folder)!r} holds no checkpoint (checkpoint.pt and config.json); "
                "start a new run without --resume"
            )
        try:
            return json.loads(config_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise CommandError(f"--resume: cannot read {str(config_path)!r} ({error})") from None
    if folder.exists() and not folder.is_dir():
        raise CommandError(f"--out: {str(folder)!r} exists and is not a folder")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise CommandError(
            f"--out: run folder {str(folder)!r} is not empty; pass --resume to continue it, "
            "--force to overwrite it, or another --out"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return None


def restore_checkpoint(folder: Path, model: Any, optimizer: Any, generator: Any) -> dict[str, Any]:
    """Load the run's last checkpoint into the model, the optimiser and both random streams (torch's global
    one and the data-shuffling ``generator``); return it, for the history and the position to resume from."""
    import torch

    checkpoint = load_checkpoint(folder)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    generator.set_state(checkpoint["rng"]["shuffle"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    return checkpoint


def load_checkpoint(folder: Path) -> dict[str, Any]:
    import torch

    try:
        return torch.load(Path(folder) / "checkpoint.pt", map_location="cpu", weights_only=True)
    except Exception as error:  # a corrupt file must end as one line, not a traceback
        raise CommandError(f"--resume: cannot read the checkpoint in {str(folder)!r} ({error})") from None
