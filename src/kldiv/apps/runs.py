"""Run folders: one consistent state at every instant, whatever interrupts the run, and one writer at a time.

A run folder holds ``config.json`` (the options, used by ``--resume``), ``checkpoint.pt`` (everything needed to
continue: weights, optimiser, random states, history), ``model.safetensors`` (the weights alone),
``metrics.csv`` / ``metrics.json`` (one row per epoch or evaluation), ``state.json`` (``status``: ``running``,
``interrupted`` or ``finished``, and the last completed epoch or step), PNG plots and ``manifest.json``.

Generations. The files a run writes together (a checkpoint: weights, metrics, state; the final report and plots)
are committed as one generation, with a redo log: each file is first written in full (and fsync'ed) under a
staging name ``.NAME.gN.tmp``; then ``manifest.json`` is replaced atomically by one listing generation ``N`` and
the SHA-256 and size of every file of the run (the commit point); then the staged files are renamed into place.
A crash before the commit leaves the previous generation untouched (the staged files are removed when the folder
is next opened); a crash after it is finished when the folder is next opened (the staged files of the committed
generation are renamed into place). Every file a resume reads is checked against its checksum, so a damaged or
edited file is an error naming it, never a silently different run.

Locking. :class:`RunFolder` holds an exclusive advisory lock (``fcntl.flock`` on the folder itself) from the
moment it opens an existing folder, or creates a new one, until it is closed: a second run on the same folder is
refused with a message instead of interleaving its writes with the first. (On platforms without ``fcntl`` no
lock is taken.)
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import hashlib
import io
import json
import math
import os
import re
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import CommandError

MANIFEST = "manifest.json"
_STAGED = re.compile(r"^\.(?P<name>.+)\.g(?P<generation>\d+)\.tmp$")
_FORMAT = "kldiv run folder"


def _fsync_folder(folder: Path) -> None:
    """Make renames inside ``folder`` durable (a no-op where folders cannot be opened, as on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_atomically(path: Path, data: bytes) -> None:
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


class _Generation:
    """The files of one generation, staged under ``.NAME.gN.tmp`` until :meth:`commit`."""

    def __init__(self, folder: Path, number: int):
        self.folder, self.number = folder, number
        self.files: dict[str, dict[str, Any]] = {}

    def staged(self, name: str) -> Path:
        return self.folder / f".{name}.g{self.number}.tmp"

    def add(self, name: str, data: bytes) -> None:
        _write_durably(self.staged(name), data)
        self.files[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def discard(self) -> None:
        for name in self.files:
            with contextlib.suppress(OSError):
                os.unlink(self.staged(name))


_CURRENT: contextvars.ContextVar[_Generation | None] = contextvars.ContextVar("kldiv_run_generation", default=None)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: staged into the open generation of ``path``'s run folder (see
    :meth:`RunFolder.generation`), or else through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    generation = _CURRENT.get()
    if generation is not None and path.parent.resolve() == generation.folder.resolve():
        generation.add(path.name, data)
        return
    _replace_atomically(path, data)
    _record_outside_generation(path, data)


def _record_outside_generation(path: Path, data: bytes) -> None:
    """A file of a run folder rewritten outside a generation keeps its manifest entry true (else the next
    resume would call it damaged)."""
    if path.name == MANIFEST or not (path.parent / MANIFEST).is_file():
        return
    try:
        manifest = read_manifest(path.parent)
    except CommandError:
        return
    if manifest is None or path.name not in manifest["files"]:
        return
    manifest["files"][path.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    _replace_atomically(path.parent / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


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


def weights_from_bytes(data: bytes, what: str) -> dict[str, Any]:
    """The tensors of a safetensors file's bytes; a damaged file is a :class:`CommandError` naming ``what``."""
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as error:  # safetensors raises its own SafetensorError for every kind of damage
        raise CommandError(f"{what} is not a readable safetensors file ({_first_line(error)})") from None


def load_weights(path: Path) -> dict[str, Any]:
    """The tensors of ``path``, checked against the run folder's manifest where it has one."""
    path = Path(path)
    return weights_from_bytes(read_verified(path), repr(str(path)))


def _first_line(error: BaseException) -> str:
    """The error's first informative line (torch's "Error(s) in loading state_dict for X:" heads a list)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]


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


# --- manifests and verified reads -------------------------------------------------------------------------


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """The folder's ``manifest.json``, or None where there is none (a folder written before manifests)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise CommandError(f"{str(path)!r} is damaged ({_first_line(error)}); the run folder cannot be trusted") from None
    if not (isinstance(manifest, dict) and manifest.get("format") == _FORMAT and isinstance(manifest.get("files"), dict)
            and isinstance(manifest.get("generation"), int)):
        raise CommandError(f"{str(path)!r} is not a kldiv run manifest; the run folder cannot be trusted")
    return manifest


def _mismatch(path: Path) -> CommandError:
    return CommandError(
        f"{str(path)!r} does not match the checksum kldiv recorded for it in {MANIFEST} (it was changed or damaged "
        "after kldiv wrote it); restore the original, or start a new run in another --out"
    )


def read_verified(path: Path, manifest: dict[str, Any] | None = None) -> bytes:
    """The bytes of ``path``, checked against the SHA-256 its run folder's manifest records (where it has one).

    The checksum is computed over the very bytes returned, so what is used is what was verified.
    """
    path = Path(path)
    if manifest is None:
        manifest = read_manifest(path.parent)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{str(path)!r} does not exist") from None
    except OSError as error:
        raise CommandError(f"cannot read {str(path)!r} ({_first_line(error)})") from None
    entry = (manifest or {}).get("files", {}).get(path.name)
    if entry is not None and (len(data) != entry.get("bytes") or hashlib.sha256(data).hexdigest() != entry.get("sha256")):
        raise _mismatch(path)
    return data


def file_checksum(path: Path) -> str | None:
    """The SHA-256 the run folder's manifest records for ``path`` (None without a manifest entry)."""
    manifest = read_manifest(Path(path).parent)
    entry = (manifest or {}).get("files", {}).get(Path(path).name)
    return None if entry is None else entry.get("sha256")


# --- the run folder -----------------------------------------------------------------------------------------


def _lock(folder: Path) -> int | None:
    """An exclusive advisory lock on ``folder`` (its file descriptor), or a CommandError if another run holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks on folders
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CommandError(
            f"--out: another kldiv run is writing to {str(folder)!r} (it holds the folder's lock); wait for it to "
            "finish, or choose another --out"
        ) from None
    return fd


def same_or_inside(path: Path, folder: Path) -> bool:
    """True where ``path`` is ``folder`` or lies inside it (symbolic links resolved)."""
    path, folder = Path(path).resolve(), Path(folder).resolve()
    return path == folder or folder in path.parents


class RunFolder:
    """The run folder of one training run, held by this process (advisory lock) until :meth:`close`.

    ``resume=False`` needs an empty or missing folder, or with ``force`` a kldiv run folder (never a folder of the
    user's own files); ``resume=True`` needs a kldiv run in it
    (``config.json``): its last committed generation is recovered and verified. A run stopped before its first
    checkpoint has a ``config.json`` but no ``checkpoint.pt``: resuming it starts it again from the beginning
    with its saved options (``has_checkpoint`` is False).
    """

    def __init__(self, folder: Path, *, resume: bool = False, force: bool = False):
        self.path = Path(folder)
        self.resume = resume
        self._force = force
        self._fd: int | None = None
        self.manifest: dict[str, Any] | None = None
        if self.path.exists() and not self.path.is_dir():
            raise CommandError(f"--out: {str(self.path)!r} exists and is not a folder")
        if self.path.is_dir():
            self._fd = _lock(self.path)
        try:
            self._open(force)
        except BaseException:
            self.close()
            raise

    def _open(self, force: bool) -> None:
        exists = self.path.is_dir()
        if exists:
            self.manifest = read_manifest(self.path)
            self._recover()
        config = self.path / "config.json"
        if self.resume:
            if not config.is_file():
                state = "is empty" if not exists or not any(self.path.iterdir()) else "holds no kldiv run (no config.json)"
                raise CommandError(
                    f"--resume: {str(self.path)!r} {state}; start a new run without --resume"
                    + ("" if state == "is empty" else " in another --out")
                )
            for name in (self.manifest or {}).get("files", {}):
                if (self.path / name).exists():
                    read_verified(self.path / name, self.manifest)
        elif exists and any(self.path.iterdir()) and force:
            legacy = config.is_file() and (self.path / "state.json").is_file()  # a run from before manifests
            if self.manifest is None and not legacy:
                sample = sorted(p.name for p in self.path.iterdir())[:3]
                raise CommandError(
                    f"--force overwrites kldiv run folders only, and {str(self.path)!r} is not one (it holds "
                    f"{', '.join(map(repr, sample))}, which kldiv did not write); choose another --out"
                )
        elif exists and any(self.path.iterdir()):
            if self.manifest is None and not config.is_file():
                raise CommandError(f"--out: {str(self.path)!r} is not empty and is not a kldiv run folder (kldiv never "
                                   "writes into a folder of other files); choose another --out")
            if config.is_file() and not (self.path / "checkpoint.pt").is_file():
                hint = "pass --resume to start it again from the beginning with its saved options (it was stopped "
                hint += "before its first checkpoint)"
            else:
                hint = "pass --resume to continue it"
            raise CommandError(f"--out: run folder {str(self.path)!r} is not empty; {hint}, --force to overwrite it, "
                               "or another --out")

    def _recover(self) -> None:
        """Finish the committed generation (rename its staged files into place); remove uncommitted ones."""
        committed = (self.manifest or {}).get("generation")
        finished = False
        for entry in os.listdir(self.path):
            match = _STAGED.match(entry)
            if match is None:
                continue
            staged = self.path / entry
            name = match["name"]
            if int(match["generation"]) == committed and name in self.manifest["files"]:
                os.replace(staged, self.path / name)
                finished = True
            else:
                with contextlib.suppress(OSError):
                    os.unlink(staged)
        if finished:
            _fsync_folder(self.path)

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / "checkpoint.pt").is_file()

    def saved_config(self) -> dict[str, Any]:
        """The verified ``config.json`` of the run."""
        return _json_object(read_verified(self.path / "config.json", self.manifest), self.path / "config.json")

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(read_verified(path, self.manifest))
        except ValueError as error:
            raise CommandError(f"cannot read {str(path)!r} ({_first_line(error)})") from None

    def load_checkpoint(self) -> dict[str, Any]:
        return load_checkpoint(self.path, self.manifest)

    def start(self) -> None:
        """Create the folder (if new) and take its lock: call once every input has been validated."""
        if self._fd is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._fd = _lock(self.path)
            if not self.resume and not self._force and any(self.path.iterdir()):
                # another run created the folder and wrote into it while this one was validating its inputs
                self.close()
                raise CommandError(f"--out: run folder {str(self.path)!r} was filled by another run meanwhile; "
                                   "choose another --out")

    @contextlib.contextmanager
    def generation(self) -> Iterator[None]:
        """Every file written into this folder inside the block (``atomic_write_*``, ``save_*``, the plots)
        becomes part of one generation, committed when the block ends (Ctrl-C held until then); an exception
        inside the block discards the whole generation."""
        self.start()
        number = (self.manifest or {}).get("generation", 0) + 1
        pending = _Generation(self.path, number)
        with deferred_interrupt():
            token = _CURRENT.set(pending)
            try:
                yield
            except BaseException:
                pending.discard()
                raise
            finally:
                _CURRENT.reset(token)
            self._commit(pending)

    def _commit(self, pending: _Generation) -> None:
        if not pending.files:
            return
        files = dict((self.manifest or {}).get("files", {}))
        files.update(pending.files)
        manifest = {"format": _FORMAT, "generation": pending.number, "files": files}
        _replace_atomically(self.path / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())  # the commit point
        self.manifest = manifest
        for name in pending.files:
            os.replace(pending.staged(name), self.path / name)
        _fsync_folder(self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _json_object(data: bytes, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as error:
        raise CommandError(f"cannot read {str(path)!r} ({_first_line(error)})") from None
    if not isinstance(value, dict):
        raise CommandError(f"{str(path)!r} is not a run's config (a JSON object)")
    return value


def saved_config(folder: Path) -> dict[str, Any] | None:
    """The verified ``config.json`` of the run in ``folder``, or None where there is none (read only)."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    return _json_object(read_verified(path), path)


def check_resume(saved: dict[str, Any], config: dict[str, Any], changeable: tuple[str, ...]) -> None:
    """Refuse a resumed run whose options differ from the saved ones, except those in ``changeable``.

    The command line fills options that were not given from the saved config, so a difference here is an
    option the user gave: it is refused rather than silently replaced.
    """
    for name, value in config.items():
        if name in changeable or name not in saved or saved[name] == value:
            continue
        flag = "--" + name.replace("_", "-")
        can = ", ".join("--" + c.replace("_", "-") for c in changeable)
        raise CommandError(
            f"--resume: this run was started with {flag} {saved[name]!r}, not {value!r}; a resumed run keeps its "
            f"options (only {can} can change); start a new run in another --out to change {flag}"
        )


def restore(checkpoint: dict[str, Any], model: Any, optimizer: Any, generator: Any, folder: Path) -> None:
    """Load a checkpoint into the model, the optimiser and both random streams (torch's global one and the
    data-shuffling ``generator``); a checkpoint that does not fit them is a :class:`CommandError`."""
    import torch

    where = str(Path(folder) / "checkpoint.pt")
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CommandError(f"--resume: the weights in {where!r} do not fit this run's model ({_first_line(error)}); "
                           "the checkpoint belongs to another run") from None
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
        generator.set_state(checkpoint["rng"]["shuffle"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
    except (RuntimeError, KeyError, TypeError, ValueError) as error:
        raise CommandError(f"--resume: the optimiser or random state in {where!r} does not fit this run "
                           f"({_first_line(error)}); the checkpoint belongs to another run") from None


def fingerprint(data: bytes | str) -> str:
    """SHA-256 of a run's input data (the corpus, the training array): recorded in the checkpoint, so a
    resumed run refuses data that changed under the same file name."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def load_checkpoint(folder: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The verified ``checkpoint.pt`` of the run in ``folder`` (tensors only: ``weights_only=True``, so no pickle
    of arbitrary objects); a damaged or foreign file is a :class:`CommandError`."""
    import torch

    path = Path(folder) / "checkpoint.pt"
    data = read_verified(path, manifest)
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file must end as one line, not a traceback
        raise CommandError(f"--resume: cannot read {str(path)!r} ({_first_line(error)})") from None
    needed = ("model", "optimizer", "rng", "history")
    missing = [k for k in needed if not isinstance(checkpoint, dict) or k not in checkpoint]
    if missing:
        raise CommandError(f"--resume: {str(path)!r} lacks {', '.join(map(repr, missing))}; it is not a checkpoint "
                           "kldiv wrote; start a new run in another --out")
    return checkpoint


def physical_memory() -> int | None:
    """Bytes of physical memory, where the platform says (None elsewhere)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(needed: float, what: str) -> None:
    """Refuse, before anything is allocated or written, options whose working memory (``needed`` bytes, an
    estimate) exceeds this machine's physical memory: they would fail or swap for hours mid-run."""
    total = physical_memory()
    if total is not None and needed > total:
        raise CommandError(f"{what}: a training step would need about {needed / 2**30:,.0f} GiB, more than this "
                           f"machine's {total / 2**30:,.0f} GiB of memory; lower them")


def build_model(build: Any, what: str) -> Any:
    """``build()``, with an allocation failure (a model too large for this machine) as a CommandError."""
    try:
        return build()
    except (OverflowError, TypeError) as error:
        if "overflow" not in str(error).lower():
            raise
        raise CommandError(f"{what}: sizes this large cannot be allocated on any machine; lower them") from None
    except MemoryError:
        raise CommandError(f"{what}: the model does not fit in memory; lower the sizes") from None
    except RuntimeError as error:
        if "alloc" not in str(error).lower():
            raise
        raise CommandError(f"{what}: the model does not fit in memory ({_first_line(error)[:160]}); lower the "
                           "sizes") from None


def prepare_folder(folder: Path, *, resume: bool, force: bool) -> dict[str, Any] | None:
    """Check ``folder`` for a new run or ``--resume`` (the rules of :class:`RunFolder`) and return the saved
    config when resuming. For commands that do not hold a :class:`RunFolder` themselves; the applications do."""
    with RunFolder(folder, resume=resume, force=force) as run:
        return run.saved_config() if resume else None


def restore_checkpoint(folder: Path, model: Any, optimizer: Any, generator: Any) -> dict[str, Any]:
    """Load the verified checkpoint of ``folder`` into the model, the optimiser and both random streams; return it."""
    checkpoint = load_checkpoint(folder)
    restore(checkpoint, model, optimizer, generator, folder)
    return checkpoint
