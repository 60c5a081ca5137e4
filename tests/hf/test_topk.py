"""Offline top-k teachers: save_teacher_topk, TeacherTopK, and training from the file."""

from __future__ import annotations

import json
import os

import pytest
from hf_models import ListDataset, args, batch, examples, llama

torch = pytest.importorskip("torch")

from kldiv.hf import DistillationTrainer, TeacherTopK, save_teacher_topk  # noqa: E402
from kldiv.nn import DistillationLoss, TopK  # noqa: E402


def varied(seed, n=5):
    """Examples of different lengths, as a tokenised corpus has."""
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 96, (int(torch.randint(3, 12, (1,), generator=g)),), generator=g)}
            for _ in range(n)]


def test_saved_then_loaded_topk_equals_torch_topk_of_the_teachers_log_softmax(tmp_path):
    teacher, data = llama(1), varied(0, n=7)
    store = save_teacher_topk(teacher, data, tmp_path / "t", k=5, batch_size=3, examples_per_shard=2)
    assert len(store) == 7 and len(store.manifest["shards"]) == 4
    reread = TeacherTopK(tmp_path / "t")
    for i, example in enumerate(data):
        with torch.no_grad():
            logits = teacher(input_ids=example["input_ids"][None]).logits[0]
        values, ids = torch.log_softmax(logits.float(), -1).topk(5, dim=-1)
        got = reread[i]
        assert isinstance(got, TopK)
        assert torch.equal(got.indices, ids)
        torch.testing.assert_close(got.logprobs, values, rtol=0, atol=1e-6)
        assert torch.equal(reread.input_ids(i), example["input_ids"])


def test_padded_vocabulary_is_cut_before_the_log_softmax(tmp_path):
    teacher, data = llama(1, vocab=128), varied(1, n=2)
    store = save_teacher_topk(teacher, data, tmp_path / "t", k=4, vocab_size=96)
    with torch.no_grad():
        logits = teacher(input_ids=data[1]["input_ids"][None]).logits[0, :, :96]
    values, ids = torch.log_softmax(logits, -1).topk(4, dim=-1)
    assert torch.equal(store[1].indices, ids) and store.vocab_size == 96
    torch.testing.assert_close(store[1].logprobs, values, rtol=0, atol=1e-6)


def test_a_flipped_byte_in_a_shard_is_detected(tmp_path):
    save_teacher_topk(llama(1), varied(2, n=3), tmp_path / "t", k=3)
    path = tmp_path / "t" / "shard-00000.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        TeacherTopK(tmp_path / "t")[0]


def test_an_existing_non_empty_folder_is_refused_and_left_as_it_was(tmp_path):
    folder = tmp_path / "t"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="never overwrites"):
        save_teacher_topk(llama(1), varied(3), folder, k=3)
    assert os.listdir(folder) == ["mine.txt"] and (folder / "mine.txt").read_text() == "keep me"
    save_teacher_topk(llama(1), varied(3), tmp_path / "empty_is_fine", k=3)  # a new folder is created


def test_bad_files_and_arguments_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        TeacherTopK(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a teacher top-k folder"):
        TeacherTopK(tmp_path)
    with pytest.raises(ValueError, match="k must be between 1"):
        save_teacher_topk(llama(1), varied(4), tmp_path / "k", k=1000)
    with pytest.raises(ValueError, match="no 'input_ids'"):
        save_teacher_topk(llama(1), [{"text": "hi"}], tmp_path / "n", k=3)


def test_training_from_the_file_gives_the_live_teachers_topk_loss(tmp_path):
    student, teacher = llama(0), llama(1, hidden=32)
    data = examples(11, n=4)
    store = save_teacher_topk(teacher, data, tmp_path / "t", k=8)
    inputs = batch(11, n=4)
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    for fused in (True, False):
        trainer = DistillationTrainer(student, None, args(tmp_path / f"r{fused}"), teacher_topk=store,
                                      train_dataset=data, fused=fused, temperature=1.0)
        features = [trainer.train_dataset[i] for i in range(4)]
        collated = trainer.data_collator(features)
        student.zero_grad()
        loss = trainer.compute_loss(student, collated)
        loss.backward()
        ours = {n: p.grad.clone() for n, p in student.named_parameters()}
        # the live teacher through kldiv.nn's TopK on materialised logits
        student.zero_grad()
        with torch.no_grad():
            values, ids = torch.log_softmax(teacher(**feed).logits, -1).topk(8, dim=-1)
        expected = DistillationLoss("kl")(student(**feed).logits[:, :-1], TopK(ids[:, :-1], values[:, :-1]),
                                          inputs["labels"][:, 1:])
        expected.backward()
        torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
        for name, p in student.named_parameters():
            torch.testing.assert_close(ours[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_trainer_trains_from_the_file_and_logs_the_tail_mass(tmp_path):
    teacher = llama(1, hidden=32)
    data = ListDataset([dict(e, labels=e["input_ids"].clone()) for e in varied(5, n=6)])
    store = save_teacher_topk(teacher, data, tmp_path / "t", k=6)

    def pad(features):  # right padding, labels -100 there
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros((len(features), n), dtype=torch.long)
        labels = torch.full((len(features), n), -100)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])], labels[i, : len(f["input_ids"])] = f["input_ids"], f["labels"]
        return {"input_ids": ids, "attention_mask": (labels != -100).long(), "labels": labels}

    trainer = DistillationTrainer(llama(0), None, args(tmp_path / "run", max_steps=3), teacher_topk=store,
                                  train_dataset=data, data_collator=pad)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "distill/teacher_tail_mass" in h]
    assert len(logged) == 3
    for h in logged:
        assert 0.0 < h["distill/teacher_tail_mass"] < 1.0 and h["distill/divergence"] >= 0.0


def test_a_dataset_other_than_the_files_is_refused(tmp_path):
    store = save_teacher_topk(llama(1), examples(12, n=4), tmp_path / "t", k=3)
    with pytest.raises(ValueError, match="has 3 examples but the teacher top-k file 4"):
        DistillationTrainer(llama(0), None, args(tmp_path), teacher_topk=store, train_dataset=examples(12, n=3))
    trainer = DistillationTrainer(llama(0), None, args(tmp_path), teacher_topk=store, train_dataset=examples(13, n=4))
    with pytest.raises(ValueError, match="other input_ids"):
        trainer.train_dataset[0]
    with pytest.raises(ValueError, match="not both"):
        DistillationTrainer(llama(0), llama(1), args(tmp_path), teacher_topk=store, train_dataset=examples(12, n=4))


def test_a_soft_capped_student_trains_from_the_file_fused_as_unfused(tmp_path):

    from hf_models import gemma2

    student, data = gemma2(0, cap=3.0), examples(19, n=4)
    store = save_teacher_topk(llama(1), data, tmp_path / "t", k=6)
    losses = []
    for fused in (True, False):
        trainer = DistillationTrainer(student, None, args(tmp_path / f"r{fused}"), teacher_topk=store,
                                      train_dataset=data, fused=fused, temperature=2.0, hard_label_weight=0.5)
        collated = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
        student.zero_grad()
        loss = trainer.compute_loss(student, collated)
        loss.backward()
        losses.append((loss.detach(), student.model.norm.weight.grad.clone()))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=1e-4, atol=1e-6)
