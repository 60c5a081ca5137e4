"""A character-level GRU language model (embedding → GRU → dense over the vocabulary).

The default corpus is the source text of the running Python's standard library (``sysconfig`` ``stdlib``
path): its ``.py`` files in sorted path order, concatenated up to ``max_chars`` characters, so every
machine has it and the same Python gives the same corpus. The last 10 % is held out. The training loss is the
cross-entropy of the next character, i.e. KL(one-hot ‖ model) over the vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sysconfig
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from . import plots, runs
from .errors import CommandError
from .progress import Progress, format_duration

UNKNOWN = "\ufffd"


@dataclass
class LMConfig:
    """Options of ``kldiv train lm`` (saved as ``config.json``)."""

    text: str | None = None
    max_chars: int = 1_000_000
    embed: int = 64
    hidden: int = 256
    layers: int = 1
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 1000
    learning_rate: float = 3e-3
    eval_every: int = 100
    eval_chars: int = 20_000
    seed: int = 0

    def validate(self) -> LMConfig:
        for name in ("max_chars", "embed", "hidden", "layers", "seq_len", "batch_size", "steps", "eval_every", "eval_chars"):
            value = getattr(self, name)
            if value < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise CommandError(f"--learning-rate must be > 0, got {self.learning_rate}")
        return self


# --- corpus ------------------------------------------------------------------------------------------


def stdlib_text(max_chars: int) -> str:
    """The standard library's ``.py`` sources in sorted path order, up to ``max_chars`` characters."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for folder, subfolders, files in os.walk(root):
        # installed packages live under the stdlib folder: never walk them (tens of thousands of files)
        subfolders[:] = [name for name in subfolders if name not in ("site-packages", "dist-packages")]
        found += [Path(folder, name) for name in files if name.endswith(".py")]
    parts: list[str] = []
    total = 0
    for path in sorted(found, key=lambda p: p.relative_to(root).as_posix()):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


def read_text_file(spec: str, max_chars: int) -> str:
    path = Path(spec)
    if not path.exists():
        raise CommandError(f"--text: file {spec!r} does not exist")
    if path.is_dir():
        raise CommandError(f"--text: {spec!r} is a folder, not a text file")
    if not path.is_file():  # reading a FIFO or a device could block forever
        raise CommandError(f"--text: {spec!r} is not a regular file (a FIFO, device or socket); give a text file")
    data = path.read_bytes()[: 4 * max_chars]
    if not data.strip():
        raise CommandError(f"--text: {spec!r} is empty; give a UTF-8 text file with some content")
    if b"\x00" in data:
        raise CommandError(f"--text: {spec!r} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(data) - 4:  # not just a character cut by the size cap
            raise CommandError(f"--text: {spec!r} is not UTF-8 text (bad byte at offset {error.start})") from None
        text = data[: error.start].decode("utf-8")
    return text[:max_chars]


def load_corpus(text: str | None, max_chars: int, seq_len: int) -> str:
    corpus = stdlib_text(max_chars) if text is None else read_text_file(text, max_chars)
    needed = 20 * (seq_len + 1)
    if len(corpus) < needed:
        source = "the standard library source" if text is None else repr(text)
        raise CommandError(
            f"--text: {source} has {len(corpus)} characters; need at least {needed} (20 windows of --seq-len + 1)"
        )
    return corpus


class Vocabulary:
    """Characters seen at least ``min_count`` times, plus one unknown symbol at index 0."""

    def __init__(self, chars: list[str]):
        self.chars = [UNKNOWN] + [c for c in chars if c != UNKNOWN]
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str, min_count: int = 3) -> Vocabulary:
        counts = Counter(text)
        return cls(sorted(c for c, n in counts.items() if n >= min_count))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids: Any) -> str:
        return "".join(self.chars[int(i)] for i in ids)


# --- model -------------------------------------------------------------------------------------------


class CharGRU(nn.Module):
    """``Embedding(V, E) → GRU(E, H, layers) → Linear(H, V)``: logits of the next character."""

    def __init__(self, vocab_size: int, embed: int, hidden: int, layers: int = 1):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed)
        self.gru = nn.GRU(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        out, state = self.gru(self.embedding(ids), state)
        return self.head(out), state


def build_model(config: dict[str, Any], vocab_size: int) -> CharGRU:
    return CharGRU(vocab_size, config["embed"], config["hidden"], config["layers"])


def batches(ids: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows: inputs and next-character targets, shape (batch, seq_len)."""
    starts = torch.randint(0, len(ids) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([ids[s : s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


def heldout_windows(ids: torch.Tensor, seq_len: int, max_chars: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping held-out windows covering up to ``max_chars`` characters."""
    n = max(1, min(len(ids) - 1, max_chars) // seq_len)
    windows = torch.stack([ids[i * seq_len : i * seq_len + seq_len + 1] for i in range(n) if i * seq_len + seq_len + 1 <= len(ids)])
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def logits_in_chunks(model: nn.Module, inputs: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """The model's logits in eval mode; the model's previous mode (train or eval) is restored afterwards,
    so a frozen teacher stays in eval mode."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(inputs[i : i + chunk])[0] for i in range(0, len(inputs), chunk)])
    finally:
        model.train(was_training)


@torch.no_grad()
def perplexity(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    logits = logits_in_chunks(model, inputs)
    return math.exp(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))))


@torch.no_grad()
def generate(model: CharGRU, vocab: Vocabulary, prompt: str, length: int, *, temperature: float = 0.8, seed: int = 0) -> str:
    """Sample ``length`` characters after ``prompt`` (unknown symbols are never sampled)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    ids = vocab.encode(prompt)[None, :]
    logits, state = model(ids)
    out = []
    for _ in range(length):
        step_logits = logits[0, -1] / temperature
        step_logits[0] = -math.inf
        next_id = torch.multinomial(torch.softmax(step_logits, dim=-1), 1, generator=generator)
        out.append(int(next_id))
        logits, state = model(next_id[None, :], state)
    model.train(was_training)
    return prompt + vocab.decode(out)


# --- the training loop shared with distillation ------------------------------------------------------------


@dataclass
class Corpus:
    vocab: Vocabulary
    train: torch.Tensor
    heldout: torch.Tensor


def prepare_corpus(text: str | None, max_chars: int, seq_len: int) -> Corpus:
    corpus = load_corpus(text, max_chars, seq_len)
    vocab = Vocabulary.from_text(corpus)
    ids = vocab.encode(corpus)
    split = int(len(ids) * 0.9)
    return Corpus(vocab, ids[:split], ids[split:])


ESTIMATE_AFTER = 10  # steps timed before the run's duration is estimated and printed


def run_steps(
    run: runs.RunFolder,
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    evaluate: Callable[[], dict[str, Any]],
    *,
    train_ids: torch.Tensor,
    config: dict[str, Any],
    title: str,
    checkpoint: dict[str, Any] | None,
    initial_files: dict[str, Any],
    fingerprint: str | None = None,
    progress: bool,
    on_step: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """Adam steps on random windows; every ``eval_every`` steps evaluate and commit a checkpoint generation.

    ``checkpoint`` (verified, from ``run.load_checkpoint()``) is restored before anything is written; the first
    generation then holds ``initial_files`` (name -> JSON object: the config, the vocabulary) and the state.
    Each checkpoint records ``fingerprint``, the SHA-256 of the training data (see :func:`check_data`). With
    ``progress``, the time per step is measured over the first :data:`ESTIMATE_AFTER` steps and the remaining
    time printed once (evaluations add a few per cent at the default sizes).
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"])
    generator = torch.Generator().manual_seed(config["seed"])
    history: list[dict[str, Any]] = []
    start = 0
    if checkpoint is not None:
        runs.restore(checkpoint, model, optimizer, generator, run.path)
        history, start = checkpoint["history"], int(checkpoint["step"])
    total = config["steps"]
    with run.generation():
        for name, content in initial_files.items():
            runs.atomic_write_json(run.path / name, content)
        runs.atomic_write_json(run.path / "state.json", {"status": "running", "step": start, "steps": total})

    try:
        with Progress(title, total, start, enabled=progress) as bar:
            sums: dict[str, float] = {}
            count = 0
            started = run_started = time.perf_counter()
            for step in range(start, total):
                inputs, targets = batches(train_ids, config["batch_size"], config["seq_len"], generator)
                loss, parts = loss_fn(inputs, targets)
                if not math.isfinite(loss.item()):
                    raise CommandError(f"the loss became {loss.item()} at step {step + 1}; lower --learning-rate")
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                for k, v in {"train_loss": loss.item(), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
                if on_step is not None:
                    on_step(step)
                bar.advance()
                done = step + 1
                if progress and done - start == ESTIMATE_AFTER and total - done > ESTIMATE_AFTER:
                    per_step = (time.perf_counter() - run_started) / ESTIMATE_AFTER
                    bar.message(
                        f"{per_step:.2f} s per step on this machine: the remaining {total - done} steps take about "
                        f"{format_duration(per_step * (total - done))} (Ctrl-C keeps the last checkpoint; --resume "
                        "continues)"
                    )
                if done % config["eval_every"] == 0 or done == total:
                    row = {"step": done, **{k: v / count for k, v in sums.items()}, **evaluate()}
                    row["seconds"] = time.perf_counter() - started
                    history.append(row)
                    sums, count, started = {}, 0, time.perf_counter()
                    with run.generation():
                        runs.save_torch(
                            run.path / "checkpoint.pt",
                            {
                                "model": model.state_dict(),
                                "optimizer": optimizer.state_dict(),
                                "rng": {"torch": torch.get_rng_state(), "shuffle": generator.get_state()},
                                "history": history,
                                "step": done,
                                **({} if fingerprint is None else {"data_sha256": fingerprint}),
                            },
                        )
                        runs.save_weights(run.path / "model.safetensors", model.state_dict())
                        runs.write_metrics(run.path, history)
                        runs.atomic_write_json(run.path / "state.json", {"status": "running", "step": done, "steps": total})
                    stats = "  ".join(f"{k} {v:.3g}" for k, v in row.items() if k in ("train_loss", "heldout_perplexity", "kl_to_teacher", "agreement"))
                    bar.note(stats)
    except KeyboardInterrupt:
        last = history[-1]["step"] if history else 0
        with run.generation():
            runs.atomic_write_json(run.path / "state.json", {"status": "interrupted", "step": last, "steps": total})
        raise
    return history


def check_vocabulary(run: runs.RunFolder, vocab: Vocabulary, what: str) -> None:
    """On resume: the corpus must give the saved vocabulary, or every character would map to another id."""
    saved = run.read_json("vocab.json")
    if saved != vocab.chars:
        raise CommandError(
            f"{what} now gives a different vocabulary ({len(vocab)} characters) than when the run in "
            f"{str(run.path)!r} started ({len(saved) if isinstance(saved, list) else '?'} characters), so characters "
            "would map to other ids; resume with the original text, or start a new run in another --out"
        )


def check_step_memory(config: dict[str, Any], vocab_size: int) -> None:
    """The working memory of one step (logits and their gradients, the GRU's gates and states, float32)."""
    positions = config["batch_size"] * config["seq_len"]
    per_position = 4 * (4 * vocab_size + 8 * config["hidden"] * config["layers"] + 2 * config["embed"]) + 16
    sizes = " ".join(f"--{k.replace('_', '-')} {config[k]}" for k in ("batch_size", "seq_len", "embed", "hidden", "layers"))
    runs.check_memory(positions * per_position, f"{sizes} (vocabulary {vocab_size})")


def check_data(checkpoint: dict[str, Any] | None, fingerprint: str, what: str) -> None:
    """On resume: the training data must be what the checkpoint was trained on (its SHA-256)."""
    saved = None if checkpoint is None else checkpoint.get("data_sha256")
    if saved is not None and saved != fingerprint:
        raise CommandError(
            f"{what} is not the data this run was trained on (its content changed since the checkpoint); resume "
            "with the original data, or start a new run in another --out"
        )


def train(
    config: LMConfig, folder: Path, *, resume: bool = False, force: bool = False, progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train the character model; write the run folder; return the report (held-out perplexity, samples).

    ``resume`` continues the run in ``folder`` (its options must equal ``config`` except ``steps``); every input
    is validated, and the checkpoint verified and restored, before anything is written.
    """
    folder = Path(folder)
    config.validate()
    with runs.RunFolder(folder, resume=resume, force=force) as run:
        corpus = prepare_corpus(config.text, config.max_chars, config.seq_len)
        settings = dataclasses.asdict(config)
        text_name = "the standard library source" if config.text is None else f"--text {config.text!r}"
        checkpoint = None
        if resume:
            runs.check_resume(run.saved_config(), settings, changeable=("steps",))
            check_vocabulary(run, corpus.vocab, text_name)
            checkpoint = run.load_checkpoint() if run.has_checkpoint else None
        fingerprint = runs.fingerprint(torch.cat([corpus.train, corpus.heldout]).numpy().tobytes())
        check_data(checkpoint, fingerprint, text_name)
        check_step_memory(settings, len(corpus.vocab))
        torch.manual_seed(config.seed)
        model = runs.build_model(
            lambda: build_model(settings, len(corpus.vocab)),
            f"--embed {config.embed} --hidden {config.hidden} --layers {config.layers}",
        )
        held_in, held_out = heldout_windows(corpus.heldout, config.seq_len, config.eval_chars)

        def loss_fn(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            logits, _ = model(inputs)
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)), {}

        history = run_steps(
            run, model, loss_fn, lambda: {"heldout_perplexity": perplexity(model, held_in, held_out)},
            train_ids=corpus.train, config=settings, title="char GRU steps",
            checkpoint=checkpoint, initial_files={"config.json": settings, "vocab.json": corpus.vocab.chars},
            fingerprint=fingerprint, progress=progress,
            on_step=on_step,
        )
        prompt = corpus.vocab.decode(corpus.heldout[:32])
        report = {
            "corpus_chars": len(corpus.train) + len(corpus.heldout),
            "vocab_size": len(corpus.vocab),
            "parameters": sum(p.numel() for p in model.parameters()),
            "steps": history[-1]["step"],
            "heldout_perplexity": history[-1]["heldout_perplexity"],
            "bits_per_char": math.log2(history[-1]["heldout_perplexity"]),
            "samples": [generate(model, corpus.vocab, prompt, 200, seed=config.seed + i) for i in range(2)],
        }
        with run.generation():
            runs.atomic_write_json(folder / "report.json", report)
            runs.atomic_write_text(folder / "samples.txt", "\n\n----------\n\n".join(report["samples"]) + "\n")
            plots.curves(
                folder / "loss.png", [r["step"] for r in history],
                {"train cross-entropy (nats/char)": [r["train_loss"] for r in history],
                 "held-out log perplexity": [math.log(r["heldout_perplexity"]) for r in history]},
                xlabel="step", ylabel="nats per character", title="character GRU",
            )
            runs.atomic_write_json(folder / "state.json", {"status": "finished", "step": history[-1]["step"], "steps": config.steps})
    return report


def load_trained(folder: Path) -> tuple[CharGRU, Vocabulary, dict[str, Any]]:
    """The model, vocabulary and config of a finished (or interrupted) ``kldiv train lm`` run folder."""
    folder = Path(folder)
    needed = [folder / "config.json", folder / "vocab.json", folder / "model.safetensors"]
    missing = [p.name for p in needed if not p.is_file()]
    if missing:
        raise CommandError(
            f"--teacher: {str(folder)!r} is not a `kldiv train lm` run folder (missing {', '.join(missing)})"
        )
    manifest = runs.read_manifest(folder)
    try:
        config = json.loads(runs.read_verified(needed[0], manifest))
        vocab = Vocabulary(json.loads(runs.read_verified(needed[1], manifest)))
        weights = runs.weights_from_bytes(runs.read_verified(needed[2], manifest), repr(str(needed[2])))
        model = runs.build_model(lambda: build_model(config, len(vocab)), "--teacher")
        model.load_state_dict(weights)
    except CommandError as error:
        raise CommandError(f"--teacher: {error}") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise CommandError(f"--teacher: cannot load the model in {str(folder)!r} ({str(error).splitlines()[0]})") from None
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, vocab, config


__all__ = ["LMConfig", "CharGRU", "Vocabulary", "train", "generate", "load_trained", "stdlib_text"]
