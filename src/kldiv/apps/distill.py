"""Distil a trained character GRU (``kldiv train lm``) into a smaller one with :class:`kldiv.nn.DistillationLoss`.

Per step, on random training windows: ``loss = (1 − w) · D(teacher ‖ student) + w · CE(labels, student)`` with D
any divergence of :class:`kldiv.nn.DistillationLoss` at temperature T (scaled by T², Hinton et al. 2015) and
``w`` the hard-label weight; ``w = 1`` trains the student from scratch on the text alone (the baseline).
With ``top_k`` the teacher's distribution is kept only as its k most likely characters
(:class:`kldiv.nn.TopK`, tail mass in one bucket), the way stored-logit distillation works at scale.

Held-out report: the student's perplexity, KL(teacher ‖ student) per character (``kldiv.kl`` at T = 1), how
often its most likely next character is the teacher's (top-1 agreement), and generated samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

import kldiv

from . import charlm, plots, runs
from .errors import CommandError

DIVERGENCES = ("kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tvd")


@dataclass
class DistillConfig:
    """Options of ``kldiv distill`` (saved as ``config.json``)."""

    teacher: str = "runs/lm"
    divergence: str = "kl"
    temperature: float = 1.0
    hard_label_weight: float = 0.0
    top_k: int | None = None
    beta: float = 0.5
    alpha: float = 0.1
    embed: int = 32
    hidden: int = 64
    layers: int = 1
    seq_len: int = 64
    batch_size: int = 32
    steps: int = 500
    learning_rate: float = 3e-3
    eval_every: int = 100
    eval_chars: int = 20_000
    seed: int = 0

    def validate(self) -> DistillConfig:
        if self.divergence not in DIVERGENCES:
            raise CommandError(f"--divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise CommandError(f"--temperature must be > 0, got {self.temperature}")
        if not (0.0 <= self.hard_label_weight <= 1.0):
            raise CommandError(f"--hard-label-weight must be in [0, 1] (1 = no teacher), got {self.hard_label_weight}")
        if self.top_k is not None and self.top_k < 1:
            raise CommandError(f"--top-k must be >= 1, got {self.top_k}")
        for name in ("beta", "alpha"):
            if not (0.0 <= getattr(self, name) <= 1.0):
                raise CommandError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("embed", "hidden", "layers", "seq_len", "batch_size", "steps", "eval_every", "eval_chars"):
            if getattr(self, name) < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise CommandError(f"--learning-rate must be > 0, got {self.learning_rate}")
        return self

    @property
    def label(self) -> str:
        if self.hard_label_weight == 1.0:
            return "from scratch (cross-entropy only)"
        text = f"{self.divergence}, T={self.temperature:g}"
        if self.hard_label_weight:
            text += f", hard-label weight {self.hard_label_weight:g}"
        if self.top_k:
            text += f", teacher top-{self.top_k}"
        return text


@torch.no_grad()
def heldout_report(student: torch.nn.Module, teacher_logits: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Perplexity of the student, KL(teacher ‖ student) per character (nats) and top-1 agreement, held out."""
    logits = charlm.logits_in_chunks(student, inputs)
    flat_s, flat_t = logits.reshape(-1, logits.shape[-1]), teacher_logits.reshape(-1, logits.shape[-1])
    cross_entropy = float(F.cross_entropy(flat_s, targets.reshape(-1)))
    kl = float(torch.mean(kldiv.kl(flat_t.double(), flat_s.double(), from_logits=True)))
    agreement = float((flat_s.argmax(dim=-1) == flat_t.argmax(dim=-1)).double().mean())
    return {"heldout_perplexity": math.exp(cross_entropy), "kl_to_teacher": kl, "agreement": agreement}


def step_loss(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    loss_module: torch.nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    hard_label_weight: float,
    top_k: int | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One training loss: ``(1 − w) · D(teacher ‖ student) + w · CE(targets, student)``.

    Teacher and student read the same ``inputs`` window, so position n of both predicts ``targets[:, n]`` (the
    character after ``inputs[:, n]``); no shift is applied to either. The teacher runs without gradient, in eval mode.
    """
    from ..nn import TopK

    logits, _ = student(inputs)
    flat = logits.reshape(-1, logits.shape[-1])
    hard = F.cross_entropy(flat, targets.reshape(-1))
    w = hard_label_weight
    if w == 1.0:
        return hard, {"hard_loss": hard.item()}
    with torch.no_grad():
        if teacher.training:
            teacher.eval()
        teacher_logits = teacher(inputs)[0].reshape(-1, logits.shape[-1])
        # k = V keeps the whole distribution: use it dense (kldiv.nn's bucket tail gives inf at k = V, where the
        # empty tail's rounding leftover meets a zero student tail)
        if top_k is not None and top_k < teacher_logits.shape[-1]:
            logprobs, indices = torch.log_softmax(teacher_logits, dim=-1).topk(top_k, dim=-1)
            teacher_logits = TopK(indices, logprobs, tail="bucket")
    soft = loss_module(flat, teacher_logits)
    return (1 - w) * soft + w * hard, {"distill_loss": soft.item(), "hard_loss": hard.item()}


def distill(
    config: DistillConfig, folder: Path, *, resume: bool = False, force: bool = False, progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train the student; write the run folder (a loadable ``train lm`` folder itself); return the report.

    The run folder may not be the teacher's folder or lie inside it. ``resume`` continues the run in ``folder``
    (its options must equal ``config`` except ``steps``, and the teacher's weights must be the ones it started
    with); every input is validated, and the checkpoint verified and restored, before anything is written.
    """
    from ..nn import DistillationLoss

    folder = Path(folder)
    config.validate()
    if runs.same_or_inside(folder, config.teacher):
        raise CommandError(
            f"--out {str(folder)!r} is the teacher's run folder or inside it ({config.teacher!r}); the student would "
            "overwrite the teacher's files; choose another --out"
        )
    with runs.RunFolder(folder, resume=resume, force=force) as run:
        teacher, vocab, teacher_config = charlm.load_trained(Path(config.teacher))
        teacher_weights = runs.fingerprint(runs.read_verified(Path(config.teacher) / "model.safetensors"))
        if config.top_k is not None and config.top_k > len(vocab):
            raise CommandError(f"--top-k is {config.top_k} but the teacher's vocabulary has only {len(vocab)} characters")
        settings = dataclasses.asdict(config)
        checkpoint = None
        if resume:
            saved = run.saved_config()
            runs.check_resume(saved, settings, changeable=("steps",))
            if saved.get("teacher_sha256", teacher_weights) != teacher_weights:
                raise CommandError(
                    f"--resume: the teacher's weights in {config.teacher!r} changed since this run started; resume "
                    "with the original teacher, or start a new run in another --out"
                )
            checkpoint = run.load_checkpoint() if run.has_checkpoint else None
        corpus = charlm.load_corpus(teacher_config.get("text"), teacher_config["max_chars"], config.seq_len)
        fingerprint = runs.fingerprint(corpus)
        charlm.check_data(checkpoint, fingerprint, "the teacher's text")
        ids = vocab.encode(corpus)
        split = int(len(ids) * 0.9)
        train_ids, heldout_ids = ids[:split], ids[split:]
        charlm.check_step_memory(settings, len(vocab))
        torch.manual_seed(config.seed)
        student = runs.build_model(
            lambda: charlm.build_model(settings, len(vocab)),
            f"--embed {config.embed} --hidden {config.hidden} --layers {config.layers}",
        )
        held_in, held_out = charlm.heldout_windows(heldout_ids, config.seq_len, config.eval_chars)
        teacher_heldout = charlm.logits_in_chunks(teacher, held_in)
        teacher_perplexity = math.exp(float(F.cross_entropy(teacher_heldout.reshape(-1, len(vocab)), held_out.reshape(-1))))
        loss_module = DistillationLoss(
            config.divergence, beta=config.beta, alpha=config.alpha, temperature=config.temperature,
            scale_by_temperature_squared=True,
        )
        w = config.hard_label_weight
        bytes_dense = config.batch_size * config.seq_len * len(vocab) * 4
        bytes_topk = config.batch_size * config.seq_len * (config.top_k or 0) * (4 + 8)

        def loss_fn(inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            return step_loss(student, teacher, loss_module, inputs, targets, hard_label_weight=w, top_k=config.top_k)

        saved_config = {**settings, "text": teacher_config.get("text"), "max_chars": teacher_config["max_chars"],
                        "teacher_sha256": teacher_weights}
        started = time.perf_counter()
        history = charlm.run_steps(
            run, student, loss_fn, lambda: heldout_report(student, teacher_heldout, held_in, held_out),
            train_ids=train_ids, config=settings, title=f"distil ({config.label})", checkpoint=checkpoint,
            initial_files={"config.json": saved_config, "vocab.json": vocab.chars}, fingerprint=fingerprint,
            progress=progress, on_step=on_step,
        )
        seconds = time.perf_counter() - started
        last = history[-1]
        prompt = vocab.decode(heldout_ids[:32])
        report = {
            "method": config.label,
            "steps": last["step"],
            "heldout_perplexity": last["heldout_perplexity"],
            "kl_to_teacher": last["kl_to_teacher"],
            "agreement": last["agreement"],
            "teacher_perplexity": teacher_perplexity,
            "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
            "student_parameters": sum(p.numel() for p in student.parameters()),
            "teacher_logit_bytes_per_batch": None if w == 1.0 else (bytes_topk if config.top_k else bytes_dense),
            "dense_teacher_logit_bytes_per_batch": bytes_dense,
            "train_seconds_this_session": seconds,
            "samples": [charlm.generate(student, vocab, prompt, 200, seed=config.seed + i) for i in range(2)],
        }
        with run.generation():
            runs.atomic_write_json(folder / "report.json", report)
            runs.atomic_write_text(folder / "samples.txt", "\n\n----------\n\n".join(report["samples"]) + "\n")
            steps = [r["step"] for r in history]
            plots.curves(
                folder / "heldout.png", steps,
                {"student perplexity": [r["heldout_perplexity"] for r in history],
                 "teacher perplexity": [teacher_perplexity] * len(history)},
                xlabel="step", ylabel="held-out perplexity", title=f"distillation: {config.label}",
            )
            plots.curves(
                folder / "teacher_gap.png", steps,
                {"KL(teacher ‖ student), nats/char": [r["kl_to_teacher"] for r in history],
                 "top-1 agreement": [r["agreement"] for r in history]},
                xlabel="step", ylabel="", title="how close the student is to the teacher (held out)",
            )
            runs.atomic_write_json(folder / "state.json", {"status": "finished", "step": last["step"], "steps": config.steps})
    return report


def load_report(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "report.json").read_text())
