"""DistillationTrainer and distillation_loss_func against the naive float64 loss on materialised logits."""

from __future__ import annotations

import pytest
from hf_models import ListDataset, args, batch, examples, gemma2, llama, naive_loss

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from kldiv.hf import DistillationTrainer, distillation_loss_func  # noqa: E402


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def oracle(student, teacher, inputs, **options):
    student.zero_grad()
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        t = teacher(**feed).logits
    loss = naive_loss(student(**feed).logits, t, inputs["labels"], **options)
    loss.backward()
    return loss.detach(), grads(student)


def ours(trainer, inputs, num_items=None):
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(inputs), num_items_in_batch=num_items)
    loss.backward()
    return loss.detach(), grads(trainer.model)


def assert_same(a, b, rtol=1e-5, atol=1e-6):
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la.double(), lb.double(), rtol=rtol, atol=atol)
    assert ga.keys() == gb.keys() and ga
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-6, msg=name)


CASES = [
    dict(divergence="kl", temperature=1.0),
    dict(divergence="reverse_kl", temperature=2.0, scale_by_temperature_squared=True),
    dict(divergence="generalized_jsd", beta=0.5, temperature=1.5, hard_label_weight=0.3),
    dict(divergence="generalized_jsd", beta=0.0, hard_label_weight=1.0),  # TRL's endpoint: forward KL
]


def _naive_options(case):
    divergence = case.get("divergence")
    beta = case.get("beta", 0.5)
    if divergence == "generalized_jsd":
        divergence = {0.0: "kl", 1.0: "reverse_kl"}.get(beta, "js")
    return dict(divergence=divergence, beta=beta, temperature=case.get("temperature", 1.0),
                squared=case.get("scale_by_temperature_squared", False), hard=case.get("hard_label_weight", 0.0))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_loss_and_gradients_equal_naive_float64_on_shifted_masked_logits(tmp_path, fused, case):
    student, teacher = llama(0, bias=True), llama(1, hidden=32, layers=2)
    trainer = DistillationTrainer(student, teacher, args(tmp_path), fused=fused, **case)
    inputs = batch(2)
    assert_same(ours(trainer, inputs), oracle(student, teacher, inputs, **_naive_options(case)))


@pytest.mark.parametrize("fused", [True, False])
def test_padded_vocabulary_compares_the_first_vocab_size_tokens(tmp_path, fused):
    # Qwen-style: the output embeddings have more rows (128) than the tokenizer has tokens (96)
    student, teacher = llama(0, vocab=128), llama(1, vocab=128, hidden=32)
    trainer = DistillationTrainer(student, teacher, args(tmp_path), fused=fused, vocab_size=96,
                                  hard_label_weight=0.5)
    inputs = batch(3, vocab=96)
    expected = oracle(student, teacher, inputs, vocab=96, hard=0.5)
    assert_same(ours(trainer, inputs), expected)


def test_soft_capped_gemma2_unfused_uses_the_models_capped_logits(tmp_path):
    student, teacher = gemma2(0, cap=3.0), gemma2(1, cap=5.0)
    trainer = DistillationTrainer(student, teacher, args(tmp_path), fused=False, temperature=2.0)
    inputs = batch(4)
    assert_same(ours(trainer, inputs), oracle(student, teacher, inputs, temperature=2.0))


def test_soft_capped_gemma2_fused_equals_naive_on_capped_logits(tmp_path):
    student, teacher = gemma2(0, cap=3.0), gemma2(1, cap=5.0)
    trainer = DistillationTrainer(student, teacher, args(tmp_path), temperature=2.0, hard_label_weight=0.5)
    inputs = batch(4)
    assert_same(ours(trainer, inputs), oracle(student, teacher, inputs, temperature=2.0, hard=0.5))


def test_models_without_caps_pass_no_softcap_option():
    from kldiv.hf._objective import cap_options  # private: what is passed to the fused loss

    assert cap_options(llama(0), llama(1)) == {}
    assert cap_options(gemma2(0, cap=3.0), llama(1)) == {"softcap": (3.0, None)}


@pytest.mark.parametrize("fused", [True, False])
def test_micro_batches_with_num_items_in_batch_sum_to_the_big_batch(tmp_path, fused):
    student, teacher = llama(0), llama(1)
    trainer = DistillationTrainer(student, teacher, args(tmp_path), fused=fused, hard_label_weight=0.2)
    inputs = batch(5, n=4)
    whole = ours(trainer, inputs)
    count = int((inputs["labels"][:, 1:] != -100).sum())
    parts = [ours(trainer, {k: v[i:i + 2] for k, v in inputs.items()}, torch.tensor(count)) for i in (0, 2)]
    summed = (parts[0][0] + parts[1][0], {n: parts[0][1][n] + parts[1][1][n] for n in parts[0][1]})
    assert_same(summed, whole)


def _train(tmp_path, name, student, teacher, data, **kwargs):
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in ("fused", "hard_label_weight", "teacher_topk")}
    trainer = DistillationTrainer(student, teacher, args(tmp_path / name, **kwargs), train_dataset=data,
                                  **options)
    trainer.train()
    return trainer


def test_gradient_accumulation_equals_one_big_batch_through_trainer(tmp_path):
    data, teacher = examples(6, n=4, masked=0.5), llama(1)
    common = dict(optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, max_steps=1, learning_rate=0.5)
    big = _train(tmp_path, "big", llama(0), teacher, data, per_device_train_batch_size=4, **common)
    small = _train(tmp_path, "small", llama(0), teacher, data, per_device_train_batch_size=2,
                   gradient_accumulation_steps=2, **common)
    for (name, a), (_, b) in zip(big.model.named_parameters(), small.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(big.model.lm_head.weight, llama(0).lm_head.weight)  # the step did move the model


@pytest.mark.parametrize("fused", [True, False])
def test_trainer_runs_lowers_the_divergence_and_leaves_the_teacher_untouched(tmp_path, fused):
    teacher = llama(1, hidden=32)
    with torch.no_grad():  # a confident teacher, far from the near-uniform student
        teacher.lm_head.weight.mul_(30.0)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    data = ListDataset([examples(7, n=4)[i % 4] for i in range(16)])
    trainer = _train(tmp_path, "run", llama(0), teacher, data, fused=fused, hard_label_weight=0.1, max_steps=8,
                     learning_rate=3e-2, lr_scheduler_type="constant")
    logged = [h for h in trainer.state.log_history if "distill/divergence" in h]
    assert len(logged) == 8
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in logged)
    assert logged[-1]["distill/divergence"] < logged[0]["distill/divergence"]
    assert all(0.0 <= h["distill/teacher_agreement"] <= 1.0 for h in logged)
    for name, p in teacher.named_parameters():
        assert p.grad is None and torch.equal(p, before[name]), name


def test_logged_metrics_equal_naive_divergence_cross_entropy_and_agreement(tmp_path):
    student, teacher = llama(0), llama(1, hidden=32)
    trainer = DistillationTrainer(student, teacher, args(tmp_path), temperature=2.0, hard_label_weight=0.0)
    inputs = batch(8)
    trainer.model.eval()
    trainer.compute_loss(student, dict(inputs))
    logged = trainer._metric_totals["eval"]  # private: the sums before Trainer.log averages them
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        s, t = student(**feed).logits, teacher(**feed).logits
    keep = inputs["labels"][:, 1:] != -100
    n = int(keep.sum())
    assert logged["positions"] == n
    torch.testing.assert_close(logged["divergence"] / n, float(naive_loss(s, t, inputs["labels"], temperature=2.0)),
                               rtol=1e-5, atol=1e-7)
    ce = naive_loss(s, t, inputs["labels"], hard=1.0) - naive_loss(s, t, inputs["labels"])
    torch.testing.assert_close(logged["hard_label_loss"] / n, float(ce), rtol=1e-5, atol=1e-7)
    agree = (s[:, :-1].argmax(-1) == t[:, :-1].argmax(-1))[keep].double().mean()
    assert logged["teacher_agreement"] / n == pytest.approx(float(agree))


def test_compute_loss_func_for_a_plain_trainer_equals_naive_and_trains(tmp_path):
    student, teacher = llama(0), llama(1, hidden=32)
    func = distillation_loss_func(teacher, student, divergence="reverse_kl", temperature=2.0, hard_label_weight=0.5)
    inputs = batch(9)
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = student(**feed)
    loss = func(outputs, inputs["labels"])
    with torch.no_grad():
        t = teacher(**feed).logits
    expected = naive_loss(outputs.logits, t, inputs["labels"], divergence="reverse_kl", temperature=2.0, hard=0.5)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-7)
    trainer = transformers.Trainer(model=student, args=args(tmp_path, max_steps=2), train_dataset=examples(10, n=4),
                                   compute_loss_func=func)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.state.log_history if "loss" in h)


def test_compute_loss_func_without_the_student_is_a_one_line_error():
    func = distillation_loss_func(llama(1))
    with pytest.raises(ValueError, match="student_model="):
        func(llama(0)(input_ids=batch(0)["input_ids"]), batch(0)["labels"])


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationTrainer(llama(0), None, args(tmp_path))
    with pytest.raises(ValueError, match="temperature"):
        DistillationTrainer(llama(0), llama(1), args(tmp_path), temperature=0.0)
    with pytest.raises(ValueError, match="divergence"):
        DistillationTrainer(llama(0), llama(1), args(tmp_path), divergence="kll")
    trainer = DistillationTrainer(llama(0), llama(1), args(tmp_path))
    inputs = batch(0)
    inputs.pop("labels")
    with pytest.raises(ValueError, match="no 'labels'"):
        trainer.compute_loss(trainer.model, inputs)


@pytest.fixture(scope="module")
def shared_trainer(tmp_path_factory):
    return DistillationTrainer(llama(0), llama(1), args(tmp_path_factory.mktemp("h")), hard_label_weight=0.5)


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(masks=st.lists(st.lists(st.booleans(), min_size=9, max_size=9), min_size=4, max_size=4),
       split=st.integers(1, 3))
def test_any_split_into_micro_batches_sums_to_the_big_batch(shared_trainer, masks, split):
    # whatever is masked, including micro-batches with no kept position at all
    inputs = batch(14, n=4)
    inputs["labels"][torch.tensor(masks)] = -100
    count = int((inputs["labels"][:, 1:] != -100).sum())
    whole = ours(shared_trainer, inputs, torch.tensor(count))
    parts = [ours(shared_trainer, {k: v[s] for k, v in inputs.items()}, torch.tensor(count))
             for s in (slice(0, split), slice(split, 4))]
    total = parts[0][0] + parts[1][0]
    torch.testing.assert_close(total, whole[0], rtol=1e-5, atol=1e-7)
    assert torch.isfinite(total)
    if count:
        naive = oracle(shared_trainer.model, shared_trainer.teacher_model, inputs, hard=0.5)[0]
        torch.testing.assert_close(whole[0].double(), naive, rtol=1e-5, atol=1e-7)
    for name in whole[1]:
        torch.testing.assert_close(parts[0][1].get(name, 0) + parts[1][1].get(name, 0), whole[1][name],
                                   rtol=1e-4, atol=1e-6)


def test_evaluate_logs_the_distillation_metrics(tmp_path):
    trainer = DistillationTrainer(llama(0), llama(1), args(tmp_path), train_dataset=examples(15, n=4),
                                  eval_dataset=examples(16, n=4))
    metrics = trainer.evaluate()
    assert {"eval_loss", "eval_distill/divergence", "eval_distill/teacher_agreement"} <= metrics.keys()
    assert metrics["eval_loss"] == pytest.approx(metrics["eval_distill/divergence"], rel=1e-4)


@pytest.mark.parametrize("average", [True, False])
def test_average_tokens_across_devices_undoes_ddps_mean_over_ranks(tmp_path, monkeypatch, average):
    # with W ranks each dividing its sum by the global count, DDP's mean over ranks needs the loss times W
    trainer = DistillationTrainer(llama(0), llama(1), args(tmp_path, average_tokens_across_devices=average))
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    inputs = batch(17)
    count = int((inputs["labels"][:, 1:] != -100).sum())
    loss = trainer.compute_loss(trainer.model, dict(inputs), num_items_in_batch=torch.tensor(2 * count))
    expected = oracle(trainer.model, trainer.teacher_model, inputs, num_items=2 * count)[0]
    torch.testing.assert_close(loss.double(), expected * (2 if average else 1), rtol=1e-5, atol=1e-7)


def test_a_model_that_transforms_its_logits_unannounced_is_refused_on_the_fused_path(tmp_path):
    student = llama(0)
    student.lm_head.register_forward_hook(lambda module, args, out: 2.0 * out)  # e.g. a custom logit scale
    trainer = DistillationTrainer(student, llama(1), args(tmp_path))
    with pytest.raises(ValueError, match="use fused=False"):
        trainer.compute_loss(student, batch(18))
    unfused = DistillationTrainer(student, llama(1), args(tmp_path), fused=False)
    assert torch.isfinite(unfused.compute_loss(student, batch(18)))
