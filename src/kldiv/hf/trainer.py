"""``DistillationTrainer``: Hugging Face ``Trainer`` with a kldiv.nn distillation loss, and the
``compute_loss_func`` form for a plain ``Trainer``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from .. import _validate
from ..nn import TopK
from . import _objective as O
from .topk import TeacherTopK, WithTeacherTopK, collate_with_topk

try:
    from transformers import Trainer
except ImportError as error:  # pragma: no cover - the extra is installed in the test environment
    raise _validate.hf_missing("transformers") from error


def _loss_options(divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, vocab_size,
                  tail) -> dict[str, Any]:
    return dict(divergence=divergence, beta=beta, alpha=alpha, temperature=temperature,
                scale_by_temperature_squared=scale_by_temperature_squared, ignore_index=ignore_index,
                reduction="mean", vocab_size=vocab_size, tail=tail)


class DistillationTrainer(Trainer):
    """A ``transformers.Trainer`` that trains ``model`` (the student) to match a teacher with a kldiv loss.

    Per optimiser step the loss is

    ``L = (1 / N) sum_n [ c * D(T_n, S_n) + hard_label_weight * CE(label_n, S_n) ]``

    over the N kept positions of the whole accumulated (and, with ``average_tokens_across_devices``, global)
    batch (``num_items_in_batch``, as the Trainer counts it), with S_n / T_n the student's / teacher's tempered
    next-token distributions, c = T**2 if ``scale_by_temperature_squared`` else 1, D the ``divergence`` of
    :class:`kldiv.nn.DistillationLoss` and CE the untempered cross-entropy. For a causal LM position t predicts
    label t + 1 (``labels[..., 1:]`` against positions ``[..., :-1]``; a collator's ``shift_labels`` are used as
    given); labels equal to ``ignore_index`` (-100) are excluded.

    ``fused=True`` (default) takes both models' last hidden states and output embeddings
    (``get_output_embeddings()``, bias included) and calls :class:`kldiv.nn.FusedLinearDistillationLoss`, so
    the (B, T, V) logits are never materialised (the models are asked for ``logits_to_keep=1``). Soft-capping
    (Gemma 2's ``final_logit_softcapping``) and logit scales (Cohere's ``logit_scale``) are read from each
    model's config and passed to the fused loss as ``softcap=(student, teacher)`` / ``logit_scale=(...)``.
    ``fused=False`` computes :class:`kldiv.nn.DistillationLoss` on the models' own logits.

    The teacher is ``teacher_model`` (run without gradient, in eval mode, on the training device) or
    ``teacher_topk``, a :class:`kldiv.hf.TeacherTopK` written by :func:`kldiv.hf.save_teacher_topk` for
    ``train_dataset`` (same examples, same order; checked): it is trained through :class:`kldiv.nn.TopK` with
    ``tail`` ("bucket" by default, "renormalize").

    Logged (means over the kept positions of the logged steps, key prefix ``distill/``): ``divergence`` (the
    distillation term c * D as the loss computes it), ``hard_label_loss`` (CE, whatever ``hard_label_weight``),
    ``teacher_agreement`` (how often the student's most likely token is the teacher's). With ``teacher_topk``
    and the bucket tail, ``divergence`` is the divergence between the distributions coarsened to k + 1
    outcomes (the top-k tokens and the rest), a lower bound on the full-vocabulary divergence by the
    data-processing inequality (Csiszar 1967). For "kl" what it hides is exactly m * KL(T_tail || S_tail), m the
    teacher's tail mass and T_tail, S_tail the two distributions restricted to the tail and renormalised: zero
    when m = 0, and not bounded above without the teacher's tail (the student may put arbitrarily little
    mass where the teacher's tail lies). ``teacher_tail_mass`` logs m (mean over kept positions of
    1 - sum of the k stored teacher probabilities, at temperature 1): the weight of what cannot be seen.
    These metrics make one extra no-gradient pass over the logits, chunked, on logged steps only.

    Args:
      model: the student (a causal LM, or any model whose outputs have logits and hidden states).
      teacher_model: the teacher, or None with ``teacher_topk``.
      args: ``transformers.TrainingArguments``.
      teacher_topk: an offline teacher for ``train_dataset`` (see above).
      divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, vocab_size, tail:
        as in :class:`kldiv.nn.DistillationLoss` (``vocab_size``: compare the first ``vocab_size`` tokens only,
        for Qwen-style output embeddings padded beyond the tokenizer).
      hard_label_weight: weight >= 0 of the cross-entropy on the labels.
      fused: distil from hidden states and LM heads without materialising the logits.
      shift_labels: positions t against labels t + 1 (causal LMs); False for labels aligned with positions.
      **kwargs: the rest of ``transformers.Trainer``'s arguments (train_dataset, data_collator, ...).

    References:
      Hinton, Vinyals and Dean (2015); Agarwal et al. (2024), GKD; Csiszar (1967), data-processing inequality.
    """

    def __init__(
        self,
        model: Any = None,
        teacher_model: Any = None,
        args: Any = None,
        *,
        teacher_topk: TeacherTopK | None = None,
        divergence: str = "kl",
        beta: float = 0.5,
        alpha: float = 0.1,
        temperature: float = 1.0,
        scale_by_temperature_squared: bool = False,
        ignore_index: int = -100,
        vocab_size: int | None = None,
        tail: str | None = None,
        hard_label_weight: float = 0.0,
        fused: bool = True,
        shift_labels: bool = True,
        **kwargs: Any,
    ) -> None:
        _validate.check_one_teacher_source(teacher_model, teacher_topk)
        options = _loss_options(divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index,
                                vocab_size, tail)
        caps = O.cap_options(model, teacher_model) if fused else {}
        self.objective = O.Objective(options, hard_label_weight, fused, shift_labels, caps)
        if teacher_topk is not None:
            dataset = kwargs.get("train_dataset")
            if dataset is not None:
                kwargs["train_dataset"] = WithTeacherTopK(dataset, teacher_topk)
        super().__init__(model=model, args=args, **kwargs)
        self.teacher_model, self.teacher_topk = teacher_model, teacher_topk
        if teacher_topk is not None:
            self.data_collator = collate_with_topk(self.data_collator, ignore_index, shift_labels)
        if teacher_model is not None:
            teacher_model.to(self.args.device).eval()
        if fused:  # checked here, where the models enter; read again at each step (wrappers may re-place them)
            O.Head.of("model", model)
            if teacher_model is not None:
                O.Head.of("teacher_model", teacher_model)
        self._heads_checked: set[str] = set()
        # Trainer counts num_items_in_batch (over labels[..., 1:] for shifted labels) and treats our loss as
        # already normalised for gradient accumulation only for models that "accept loss kwargs": ours does.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = shift_labels
        self._metric_totals: dict[str, dict[str, float]] = {"train": {}, "eval": {}}

    # -- columns: keep the teacher's top-k through remove_unused_columns --
    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        for key in (O.TOPK_INDICES, O.TOPK_LOGPROBS, "shift_labels"):
            if key not in self._signature_columns:
                self._signature_columns.append(key)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        inputs = dict(inputs)
        labels, shift_labels = inputs.pop("labels", None), inputs.pop("shift_labels", None)
        topk_indices, topk_logprobs = inputs.pop(O.TOPK_INDICES, None), inputs.pop(O.TOPK_LOGPROBS, None)
        positions, targets = O.aligned(labels, shift_labels, self.objective.shift)
        objective = self.objective
        outputs, s_hidden = O.forward(model, inputs, objective.fused)
        if self.teacher_model is not None:
            with torch.no_grad():
                t_outputs, t_hidden = O.forward(self.teacher_model, inputs, objective.fused)
        else:
            _validate.check_teacher_keys(topk_indices is not None)
            t_outputs = t_hidden = None
            topk = TopK(topk_indices.long(), topk_logprobs, self.teacher_topk.tail)
        if objective.fused:
            s_head = O.Head.of("model", model)
            t_head = O.Head.of("teacher_model", self.teacher_model) if t_hidden is not None else None
            self._check_heads(outputs, s_hidden, s_head, t_outputs, t_hidden, t_head)
            student = (s_hidden[:, positions], s_head)
            teacher = O.at(topk, positions) if t_hidden is None else (t_hidden[:, positions], t_head)
            loss = objective.fused_value(student[0], student[1], teacher, targets, num_items_in_batch)
        else:
            student = outputs.logits[:, positions]
            teacher = O.at(topk, positions) if t_outputs is None else t_outputs.logits[:, positions]
            loss = objective.dense_value(student, teacher, targets, num_items_in_batch)
        if self._metrics_due(model):
            O.add_sums(self._metric_totals["train" if model.training else "eval"],
                       objective.metric_sums(student, teacher, targets))
        if getattr(self.args, "average_tokens_across_devices", False) and num_items_in_batch is not None:
            # each rank's loss is its sum over the global count; DDP averages gradients over ranks: undo it
            loss = loss * (self.accelerator.num_processes // self._tp_size() if self.args.n_gpu <= 1 else self.args.n_gpu)
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        return (loss, outputs) if return_outputs else loss

    def _tp_size(self) -> int:
        size = getattr(self, "get_tp_size", None)
        return max(1, int(size())) if callable(size) else 1

    def _check_heads(self, outputs, s_hidden, s_head, t_outputs, t_hidden, t_head) -> None:
        """Once per model without a logit transform: its hidden state and head reproduce its logits."""
        checks = [("model", self.model, outputs, s_hidden, s_head)]
        if t_hidden is not None:
            checks.append(("teacher_model", self.teacher_model, t_outputs, t_hidden, t_head))
        for name, model, out, hidden, head in checks:
            if name in self._heads_checked or O.logit_transform(model) != (None, None):
                continue
            if getattr(out, "logits", None) is not None:
                O.check_head(name, out, hidden, head)
            self._heads_checked.add(name)

    def _metrics_due(self, model: Any) -> bool:
        if not model.training:
            return True
        strategy = str(getattr(self.args.logging_strategy, "value", self.args.logging_strategy))
        if strategy == "no":
            return False
        if strategy != "steps":
            return True
        every = getattr(self.state, "logging_steps", None) or self.args.logging_steps
        every = max(1, math.ceil(every * self.state.max_steps) if every < 1 else int(every))
        step = self.state.global_step
        return (step + 1) % every == 0 or (step == 0 and bool(self.args.logging_first_step))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if "loss" in logs:
            logs.update(O.means(self._metric_totals["train"]))
            self._metric_totals["train"] = {}
        elif "eval_loss" in logs:
            logs.update(O.means(self._metric_totals["eval"], "eval_"))
            self._metric_totals["eval"] = {}
        super().log(logs, *args, **kwargs)


class DistillationLossFunc:
    """Trainer's ``compute_loss_func(outputs, labels, num_items_in_batch)`` distilling from ``teacher_model``.

    ``Trainer`` hands this function the student's outputs and the labels but not the inputs, so the function
    watches the student (a forward pre-hook on ``student_model``) for the inputs of its last forward and runs
    the teacher on them, without gradient. The loss is :class:`kldiv.nn.DistillationLoss` between the two
    models' logits (which the models have already soft-capped or scaled themselves), positions t against
    labels t + 1 for a causal LM, plus ``hard_label_weight`` times the cross-entropy, divided by
    ``num_items_in_batch`` when the Trainer passes it (gradient accumulation), else by the kept positions.
    """

    def __init__(self, teacher_model: Any, student_model: Any = None, **options: Any) -> None:
        hard = options.pop("hard_label_weight", 0.0)
        shift = options.pop("shift_labels", True)
        self.objective = O.Objective(_loss_options(**{**_DEFAULTS, **options}), hard, False, shift)
        self.teacher_model = teacher_model.eval()
        self._inputs: dict[str, Any] | None = None
        self._hook = None
        if student_model is not None:
            self.attach(student_model)

    def attach(self, student_model: Any) -> DistillationLossFunc:
        """Watch ``student_model``'s forward for the inputs the teacher needs."""
        if self._hook is not None:
            self._hook.remove()
        self._hook = O._unwrap(student_model).register_forward_pre_hook(self._capture, with_kwargs=True)
        return self

    def _capture(self, module, args, kwargs):
        inputs = {k: v for k, v in kwargs.items() if k in ("input_ids", "attention_mask", "position_ids",
                                                          "inputs_embeds", "token_type_ids")}
        if args:
            inputs.setdefault("input_ids", args[0])
        self._inputs = inputs

    def __call__(self, outputs: Any, labels: torch.Tensor | None, num_items_in_batch: Any = None) -> torch.Tensor:
        _validate.check_captured_inputs(self._inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else getattr(outputs, "logits", outputs[0])
        device = next(self.teacher_model.parameters()).device
        with torch.no_grad():
            teacher = self.teacher_model(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                                            for k, v in self._inputs.items()}).logits.to(logits.device)
        positions, targets = O.aligned(labels, None, self.objective.shift)
        return self.objective.dense_value(logits[:, positions], teacher[:, positions], targets, num_items_in_batch)


_DEFAULTS = dict(divergence="kl", beta=0.5, alpha=0.1, temperature=1.0, scale_by_temperature_squared=False,
                 ignore_index=-100, vocab_size=None, tail=None)


def distillation_loss_func(teacher_model: Any, student_model: Any = None, **options: Any) -> Callable:
    """A ``compute_loss_func`` for a plain ``transformers.Trainer``: ``Trainer(model=student,
    compute_loss_func=distillation_loss_func(teacher, student), ...)``.

    Args:
      teacher_model: the teacher (kept where it is; run without gradient).
      student_model: the model given to the Trainer; its forward is watched for the teacher's inputs (or call
        ``.attach(student)`` on the result later).
      **options: divergence, beta, alpha, temperature, scale_by_temperature_squared, ignore_index, vocab_size,
        tail, hard_label_weight, shift_labels, as for :class:`DistillationTrainer`.

    Returns:
      A :class:`DistillationLossFunc`, called as ``f(outputs, labels, num_items_in_batch=None)``.
    """
    return DistillationLossFunc(teacher_model, student_model, **options)
