"""What kldiv.hf computes, shared by :class:`DistillationTrainer` and :func:`distillation_loss_func`.

No formula lives here: every loss and every logged divergence is a :mod:`kldiv.nn` loss; this module only
aligns a causal LM's positions with its labels, takes the hidden states and LM heads out of Hugging Face
models, reads their logit transforms (soft-capping, logit scale) from the configs, and sums the metrics.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import _validate
from ..nn import DistillationLoss, FusedLinearDistillationLoss, TopK
from ..nn.functional import distillation_loss

# the batch keys under which an offline teacher's top-k travels from the dataset to compute_loss
TOPK_INDICES, TOPK_LOGPROBS = "teacher_topk_indices", "teacher_topk_logprobs"
# rows of logits materialised at a time by the (no-gradient) metrics pass: rows * V stays below ~16M numbers
_METRIC_NUMBERS = 1 << 24


def logit_transform(model: Any) -> tuple[float | None, float | None]:
    """(softcap, logit_scale) a model applies to its logits after the LM head, read from its config.

    Gemma 2 / 3 set ``final_logit_softcapping`` (logits -> cap * tanh(logits / cap)); Cohere sets
    ``logit_scale`` (logits -> scale * logits). None where the model does not transform its logits.
    """
    config = getattr(model, "config", None)
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    return (float(cap) if cap else None, float(scale) if scale is not None and float(scale) != 1.0 else None)


def cap_options(student: Any, teacher: Any | None) -> dict[str, Any]:
    """``softcap=(s, t)`` and ``logit_scale=(s, t)`` for the fused loss, present only when a model sets one
    (so nothing extra is passed for models that do not transform their logits)."""
    s_cap, s_scale = logit_transform(student)
    t_cap, t_scale = logit_transform(teacher) if teacher is not None else (None, None)
    options: dict[str, Any] = {}
    if s_cap is not None or t_cap is not None:
        options["softcap"] = (s_cap, t_cap)
    if s_scale is not None or t_scale is not None:
        options["logit_scale"] = (s_scale or 1.0, t_scale or 1.0)
    return options


def forward(model: Any, inputs: dict[str, Any], fused: bool) -> tuple[Any, torch.Tensor | None]:
    """The model's outputs and, when ``fused``, its last hidden state (B, T, H).

    The fused path asks for ``output_hidden_states`` and, where the model takes it, ``logits_to_keep=1``, so the
    model itself computes one position's logits per sequence instead of (B, T, V). Going through the model's own
    forward (not its base model) keeps DDP's and FSDP's hooks in place.
    """
    if not fused:
        return model(**inputs), None
    kwargs = dict(inputs, output_hidden_states=True, return_dict=True)
    if "logits_to_keep" in inspect.signature(_unwrap(model).forward).parameters:
        kwargs["logits_to_keep"] = 1
    outputs = model(**kwargs)
    return outputs, outputs.hidden_states[-1]


def _unwrap(model: Any) -> Any:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


@dataclass(frozen=True)
class Head:
    """An LM head: ``logits = hidden @ weight.T + bias``."""

    weight: torch.Tensor
    bias: torch.Tensor | None

    @classmethod
    def of(cls, name: str, model: Any) -> Head:
        head = _validate.check_output_embeddings(name, _unwrap(model).get_output_embeddings())
        bias = getattr(head, "bias", None)
        return cls(head.weight, bias if isinstance(bias, torch.Tensor) else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden.to(self.weight.dtype), self.weight, self.bias)


def check_head(name: str, outputs: Any, hidden: torch.Tensor, head: Head) -> None:
    """The last position's logits from the hidden state and head equal the model's own (models without a
    logit transform): catches a model whose last hidden state is not what its head multiplies."""
    with torch.no_grad():
        mine = head.logits(hidden[:, -1]).float()
        theirs = outputs.logits[:, -1].float()
        precise = hidden.dtype in (torch.float32, torch.float64) and outputs.logits.dtype in (torch.float32, torch.float64)
        tolerance = (1e-3 if precise else 5e-2) * (1.0 + theirs.abs().max().item())  # half precision: its rounding
        _validate.check_hidden_matches_logits(name, mine.shape == theirs.shape
                                              and (mine - theirs).abs().max().item() <= tolerance)


def aligned(labels: torch.Tensor | None, shift_labels: torch.Tensor | None, shift: bool) -> tuple[Any, torch.Tensor]:
    """(positions, targets): which positions predict which labels. A causal LM's position t predicts token t + 1:
    positions [..., :-1] against labels[..., 1:]; a collator's own ``shift_labels`` are used as they are."""
    if shift_labels is not None:
        return slice(None), shift_labels
    _validate.check_has_labels(labels)
    if shift:
        return slice(None, -1), labels[..., 1:]
    return slice(None), labels


def at(x: Any, positions: Any) -> Any:
    """x restricted to the predicting positions, along the sequence axis (axis 1)."""
    if isinstance(x, TopK):
        return TopK(x.indices[:, positions], x.logprobs[:, positions], x.tail)
    return x[:, positions]


def one_hot_teacher(targets: torch.Tensor, ignore_index: int) -> TopK:
    """The labels as a teacher: probability 1 on the label. KL(one-hot || S) = -log S(label), the cross-entropy,
    so the hard-label term is a kldiv.nn loss like the rest (masked positions get a placeholder id 0)."""
    ids = torch.where(targets == ignore_index, torch.zeros_like(targets), targets).long().unsqueeze(-1)
    return TopK(ids, torch.zeros(ids.shape, dtype=torch.float32, device=ids.device))


@dataclass
class Objective:
    """The loss options and the losses built from them (validated once, where the options enter)."""

    options: dict[str, Any]
    hard_label_weight: float
    fused: bool
    shift: bool
    caps: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hard_label_weight = _validate.check_hard_label_weight(self.hard_label_weight)
        _validate.check_flag("fused", self.fused)
        _validate.check_flag("shift_labels", self.shift)
        if self.fused:
            self.fused_loss = FusedLinearDistillationLoss(**self.options, hard_label_weight=self.hard_label_weight,
                                                          **self.caps)
        self.dense_loss = DistillationLoss(**self.options)
        self.ignore_index = self.options.get("ignore_index", -100)
        self.vocab_size = self.options.get("vocab_size")

    @property
    def metric_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k != "reduction"}

    def fused_value(self, s_hidden, s_head: Head, teacher: Any, targets, num_items) -> torch.Tensor:
        """The loss from hidden states; ``teacher`` is (hidden, Head) or a TopK."""
        if isinstance(teacher, TopK):  # its log-probabilities are final: the loss transforms the student's only
            return self.fused_loss(s_hidden, s_head.weight, None, None, targets, student_bias=s_head.bias,
                        teacher_logits=teacher, num_items_in_batch=num_items)
        t_hidden, t_head = teacher
        return self.fused_loss(s_hidden, s_head.weight, t_hidden, t_head.weight, targets, student_bias=s_head.bias,
                               teacher_bias=t_head.bias, num_items_in_batch=num_items)

    def dense_value(self, s_logits, teacher: Any, targets, num_items) -> torch.Tensor:
        """The loss from the models' logits (already transformed by the models themselves)."""
        loss = self.dense_loss(s_logits, teacher, targets, num_items_in_batch=num_items)
        if self.hard_label_weight:
            hard = distillation_loss(s_logits, one_hot_teacher(targets, self.ignore_index), targets, divergence="kl",
                                     ignore_index=self.ignore_index, vocab_size=self.vocab_size,
                                     num_items_in_batch=num_items)
            loss = loss + self.hard_label_weight * hard
        return loss

    @torch.no_grad()
    def metric_sums(self, student: Any, teacher: Any, targets: torch.Tensor) -> dict[str, float]:
        """Sums over the kept positions of: the distillation term (as the loss computes it, times T**2 with
        ``scale_by_temperature_squared``), the untempered cross-entropy on the labels, top-1 agreement with the
        teacher, and for a TopK teacher its tail mass. ``student`` is logits (B, T, V) or (hidden, Head);
        ``teacher`` logits, (hidden, Head) or a TopK. Logits are made a chunk of rows at a time."""
        keep = (targets != self.ignore_index).reshape(-1)
        rows = torch.nonzero(keep).reshape(-1)
        labels = targets.reshape(-1)[rows]

        def flat(x):
            if isinstance(x, TopK):
                return TopK(x.indices.reshape(-1, x.indices.shape[-1])[rows],
                            x.logprobs.reshape(-1, x.logprobs.shape[-1])[rows], x.tail)
            if isinstance(x, tuple):
                return (x[0].reshape(-1, x[0].shape[-1])[rows], x[1])
            return x.reshape(-1, x.shape[-1])[rows]

        student, teacher = flat(student), flat(teacher)
        width = student[1].weight.shape[0] if isinstance(student, tuple) else student.shape[-1]
        chunk = max(1, _METRIC_NUMBERS // max(width, 1))
        caps = self.caps if isinstance(student, tuple) else {}
        sums = {"divergence": 0.0, "hard_label_loss": 0.0, "teacher_agreement": 0.0}
        if isinstance(teacher, TopK):
            sums["teacher_tail_mass"] = 0.0
        vocab = self.vocab_size
        for start in range(0, rows.numel(), chunk):
            part = slice(start, start + chunk)
            s = student[1].logits(student[0][part]) if isinstance(student, tuple) else student[part]
            if isinstance(teacher, TopK):
                t = TopK(teacher.indices[part], teacher.logprobs[part], teacher.tail)
                t_top = t.indices[:, 0]
                mass = torch.exp(t.logprobs.double()).sum(-1)
                sums["teacher_tail_mass"] += float((1.0 - mass).clamp(min=0.0).sum())
            else:
                t = teacher[1].logits(teacher[0][part]) if isinstance(teacher, tuple) else teacher[part]
                t_top = t[..., :vocab].argmax(-1)
            sums["divergence"] += float(distillation_loss(s, t, reduction="sum", **self.metric_options,
                                                          **caps))
            sums["hard_label_loss"] += float(distillation_loss(
                s, one_hot_teacher(labels[part], self.ignore_index), divergence="kl", reduction="sum",
                vocab_size=vocab, **caps))
            sums["teacher_agreement"] += float((s[..., :vocab].argmax(-1) == t_top.to(s.device)).sum())
        sums["positions"] = float(rows.numel())
        return sums


def add_sums(total: dict[str, float], sums: dict[str, float]) -> None:
    for key, value in sums.items():
        total[key] = total.get(key, 0.0) + value


def means(total: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Per-position means of the summed metrics (nothing when no position was kept)."""
    n = total.get("positions", 0.0)
    if not n:
        return {}
    return {f"{prefix}distill/{key}": value / n for key, value in total.items() if key != "positions"}
