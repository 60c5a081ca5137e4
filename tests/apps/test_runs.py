"""Run folders never destroy work: generations with checksums, crash-safe saves, locks, resume that refuses
changed options and data, validation before any write, and no dead end for a run stopped before its first save."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

torch = pytest.importorskip("torch")

from cli_runs import run  # noqa: E402

from kldiv.apps import charlm, runs  # noqa: E402
from kldiv.apps import distill as distill_app  # noqa: E402

TEXT = "the quick brown fox jumps over the lazy dog. " * 60
LM = dict(embed=8, hidden=16, seq_len=16, batch_size=4, steps=4, eval_every=2, eval_chars=300)




def rows(folder):
    return json.loads((folder / "metrics.json").read_text())


def without_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def snapshot(folder):
    """Every file's bytes (hashed), hidden ones included: what a refused command must leave untouched."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def corpus(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture()
def lm_run(tmp_path, corpus):
    folder = tmp_path / "lm"
    charlm.train(charlm.LMConfig(text=str(corpus), **LM), folder, progress=False)
    return folder


def one_line_error(code, err, *needles):
    assert code == 2, err
    assert err.startswith("kldiv: error: ") and err.strip().count("\n") == 0 and "Traceback" not in err
    for needle in needles:
        assert needle in err


# --- the teacher's folder --------------------------------------------------------------------------------------


@pytest.mark.parametrize("inside", ["", "student", "a/b"])
@pytest.mark.parametrize("resume", [False, True])
def test_distill_refuses_an_out_that_is_the_teacher_folder_or_inside_it_and_touches_nothing(lm_run, capsys, inside, resume):
    before = snapshot(lm_run)
    out = lm_run / inside if inside else lm_run
    code, _, err = run(["distill", "--teacher", str(lm_run), "--out", str(out), "--steps", "2", "--quiet",
                        *(["--resume"] if resume else [])], capsys)
    one_line_error(code, err, "teacher's run folder", "another --out")
    assert snapshot(lm_run) == before
    assert not (lm_run / "student").exists() and not (lm_run / "a").exists()


def test_resumed_distillation_refuses_another_teacher_given_on_the_command_line(lm_run, tmp_path, corpus, capsys):
    other = tmp_path / "other"
    charlm.train(charlm.LMConfig(text=str(corpus), **{**LM, "seed": 1}), other, progress=False)
    student = tmp_path / "student"
    args = ["distill", "--teacher", str(lm_run), "--embed", "8", "--hidden", "12", "--seq-len", "16", "--batch-size", "4",
            "--eval-chars", "200", "--steps", "2", "--eval-every", "2", "--quiet", "--out", str(student)]
    assert run(args, capsys)[0] == 0
    before = snapshot(student)
    code, _, err = run(["distill", "--resume", "--teacher", str(other), "--out", str(student), "--quiet"], capsys)
    one_line_error(code, err, "--teacher", str(lm_run), "another --out")
    assert snapshot(student) == before
    # the same teacher named again, and a new step count, apply
    assert run(["distill", "--resume", "--teacher", str(lm_run), "--steps", "4", "--out", str(student), "--quiet"],
               capsys)[0] == 0
    assert [r["step"] for r in rows(student)] == [2, 4]
    assert json.loads((student / "config.json").read_text())["hidden"] == 12  # saved value, not the default 64


def test_resumed_distillation_refuses_a_teacher_whose_weights_changed(lm_run, tmp_path, corpus, capsys):
    config = distill_app.DistillConfig(teacher=str(lm_run), embed=8, hidden=12, seq_len=16, batch_size=4, steps=2,
                                       eval_every=2, eval_chars=200)
    distill_app.distill(config, tmp_path / "student", progress=False)
    charlm.train(charlm.LMConfig(text=str(corpus), **{**LM, "steps": 6}), lm_run, resume=True, progress=False)
    code, _, err = run(["distill", "--resume", "--steps", "4", "--out", str(tmp_path / "student"), "--quiet"], capsys)
    one_line_error(code, err, "teacher's weights", "changed")


# --- resume: options and data --------------------------------------------------------------------------------------


def test_resume_keeps_saved_options_not_given_and_refuses_given_ones_that_differ(lm_run, tmp_path, capsys):
    before = snapshot(lm_run)
    code, _, err = run(["train", "lm", "--resume", "--hidden", "32", "--steps", "6", "--out", str(lm_run), "--quiet"],
                       capsys)
    one_line_error(code, err, "--hidden 16", "not 32", "only --steps can change")
    assert snapshot(lm_run) == before
    assert run(["train", "lm", "--resume", "--hidden", "16", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)[0] == 0
    saved = json.loads((lm_run / "config.json").read_text())
    assert (saved["embed"], saved["batch_size"], saved["steps"]) == (8, 4, 6)  # saved values, not the defaults
    assert [r["step"] for r in rows(lm_run)] == [2, 4, 6]
    # the VAE command keeps its options the same way
    out = tmp_path / "vae"
    assert run(["train", "vae", "--model", "ae", "--epochs", "1", "--hidden", "16", "--batch-size", "256", "--quiet",
                "--out", str(out)], capsys)[0] == 0
    before = snapshot(out)
    code, _, err = run(["train", "vae", "--resume", "--hidden", "32", "--epochs", "2", "--out", str(out), "--quiet"], capsys)
    one_line_error(code, err, "--hidden 16", "not 32", "only --epochs can change")
    assert snapshot(out) == before


def test_train_lm_resume_with_a_changed_text_writes_nothing_and_refuses(lm_run, corpus, tmp_path, capsys):
    before = snapshot(lm_run)
    other = tmp_path / "other.txt"
    other.write_text(TEXT.upper())
    code, _, err = run(["train", "lm", "--resume", "--text", str(other), "--steps", "6", "--out", str(lm_run), "--quiet"],
                       capsys)
    one_line_error(code, err, "--text")
    assert snapshot(lm_run) == before
    # the same file name with other characters: a different vocabulary of the same size
    corpus.write_text(TEXT.replace("q", "Q"))
    assert len(charlm.Vocabulary.from_text(corpus.read_text())) == len(charlm.Vocabulary.from_text(TEXT))
    code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
    one_line_error(code, err, "different vocabulary", "map to other ids")
    assert snapshot(lm_run) == before
    # the same vocabulary but other text: the checkpoint's data fingerprint differs
    corpus.write_text(TEXT[::-1])
    code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
    one_line_error(code, err, "not the data this run was trained on")
    assert snapshot(lm_run) == before


# --- generations: checksums and crashes -----------------------------------------------------------------------------


def test_the_manifest_lists_every_file_with_its_sha256(lm_run):
    manifest = json.loads((lm_run / "manifest.json").read_text())
    for name in ("config.json", "vocab.json", "checkpoint.pt", "model.safetensors", "metrics.json", "metrics.csv",
                 "state.json", "report.json", "samples.txt", "loss.png"):
        data = (lm_run / name).read_bytes()
        assert manifest["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, name
    assert not [p.name for p in lm_run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["checkpoint.pt", "config.json", "model.safetensors", "metrics.json"])
def test_a_damaged_file_is_refused_on_resume_naming_it(lm_run, capsys, name):
    path = lm_run / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
    one_line_error(code, err, name, "checksum")


def test_a_crash_inside_a_checkpoint_save_leaves_the_previous_generation_and_resume_matches_a_straight_run(
        tmp_path, corpus, monkeypatch, capsys):
    straight = tmp_path / "straight"
    charlm.train(charlm.LMConfig(text=str(corpus), **LM), straight, progress=False)
    cut = tmp_path / "cut"
    real = runs._write_durably
    writes = []

    def crash_on_the_second_weights(path, data):
        writes.append(path.name)
        if path.name.startswith(".model.safetensors.") and sum(w.startswith(".model.") for w in writes) == 2:
            raise OSError(28, "No space left on device")  # the disk fills up inside step 4's save
        real(path, data)

    monkeypatch.setattr(runs, "_write_durably", crash_on_the_second_weights)
    with pytest.raises(OSError):
        charlm.train(charlm.LMConfig(text=str(corpus), **LM), cut, progress=False)
    monkeypatch.setattr(runs, "_write_durably", real)
    # the folder is the generation of step 2 throughout: checkpoint, weights, metrics and state agree
    checkpoint = runs.load_checkpoint(cut)
    assert checkpoint["step"] == 2 and [r["step"] for r in rows(cut)] == [2]
    assert json.loads((cut / "state.json").read_text())["step"] == 2
    weights = runs.load_weights(cut / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in checkpoint["model"].items())
    assert run(["train", "lm", "--resume", "--out", str(cut), "--quiet"], capsys)[0] == 0
    assert without_time(rows(cut)) == without_time(rows(straight))
    a, b = runs.load_weights(straight / "model.safetensors"), runs.load_weights(cut / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not [p.name for p in cut.iterdir() if p.name.endswith(".tmp")]


def test_a_crash_after_the_commit_point_is_finished_when_the_folder_is_next_opened(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    with runs.RunFolder(folder) as run_folder, run_folder.generation():
        runs.atomic_write_json(folder / "config.json", {"a": 1})
        runs.atomic_write_text(folder / "state.txt", "one")
    real = os.replace
    moved = []

    def crash_after_one_rename(src, dst):
        if str(src).endswith(".g2.tmp"):
            if moved:
                raise OSError("power cut")
            moved.append(dst)
        real(src, dst)

    monkeypatch.setattr(runs.os, "replace", crash_after_one_rename)
    with pytest.raises(OSError), runs.RunFolder(folder, resume=True) as run_folder, run_folder.generation():
        runs.atomic_write_json(folder / "config.json", {"a": 2})
        runs.atomic_write_text(folder / "state.txt", "two")
    monkeypatch.setattr(runs.os, "replace", real)
    assert len(moved) == 1  # one file of generation 2 in place, the other still staged
    with runs.RunFolder(folder, resume=True):
        pass  # opening finishes the committed generation
    assert json.loads((folder / "config.json").read_text()) == {"a": 2}
    assert (folder / "state.txt").read_text() == "two"
    assert json.loads((folder / "manifest.json").read_text())["generation"] == 2
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_an_exception_inside_a_generation_discards_all_of_it(tmp_path):
    folder = tmp_path / "run"
    with runs.RunFolder(folder) as run_folder:
        with run_folder.generation():
            runs.atomic_write_text(folder / "a.txt", "1")
        with pytest.raises(RuntimeError), run_folder.generation():
            runs.atomic_write_text(folder / "a.txt", "2")
            runs.atomic_write_text(folder / "b.txt", "2")
            raise RuntimeError("plot failed")
    assert (folder / "a.txt").read_text() == "1" and not (folder / "b.txt").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt", "manifest.json"]


# --- one writer at a time ----------------------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_is_refused(lm_run, capsys):
    before = snapshot(lm_run)
    with runs.RunFolder(lm_run, resume=True):  # the first run, still writing
        code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
        one_line_error(code, err, "another kldiv run is writing to")
        code, _, err = run(["train", "lm", "--force", "--out", str(lm_run), "--quiet"], capsys)
        one_line_error(code, err, "another kldiv run is writing to")
    assert snapshot(lm_run) == before
    assert run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)[0] == 0


def test_the_lock_is_held_across_processes(lm_run):
    import subprocess
    import sys

    code = ("import sys; from kldiv.apps import runs\n"
            "try:\n    runs.RunFolder(sys.argv[1], resume=True)\nexcept runs.CommandError as e:\n    print(e); sys.exit(3)")
    with runs.RunFolder(lm_run, resume=True):
        done = subprocess.run([sys.executable, "-c", code, str(lm_run)], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 3 and "another kldiv run" in done.stdout


# --- a run stopped before its first checkpoint --------------------------------------------------------------------


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume(tmp_path, corpus, capsys):
    straight = tmp_path / "straight"
    charlm.train(charlm.LMConfig(text=str(corpus), **LM), straight, progress=False)
    cut = tmp_path / "cut"

    def interrupt(step):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        charlm.train(charlm.LMConfig(text=str(corpus), **LM), cut, progress=False, on_step=interrupt)
    assert not (cut / "checkpoint.pt").exists() and (cut / "config.json").is_file()
    code, _, err = run(["train", "lm", "--text", str(corpus), "--out", str(cut), "--quiet"], capsys)
    one_line_error(code, err, "pass --resume to start it again from the beginning")
    assert run(["train", "lm", "--resume", "--out", str(cut), "--quiet"], capsys)[0] == 0
    assert without_time(rows(cut)) == without_time(rows(straight))


# --- damaged or foreign checkpoints, huge models, damaged teachers ---------------------------------------------


def test_a_checkpoint_of_another_model_or_without_optimizer_is_one_line(lm_run, tmp_path, capsys):
    (lm_run / "manifest.json").unlink()  # a folder from before manifests: no checksums to catch the swap
    good = torch.load(lm_run / "checkpoint.pt", weights_only=True)
    bigger = charlm.CharGRU(len(json.loads((lm_run / "vocab.json").read_text())), 8, 32)
    torch.save({**good, "model": bigger.state_dict()}, lm_run / "checkpoint.pt")
    code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
    one_line_error(code, err, "do not fit this run's model", "size mismatch")
    torch.save({k: v for k, v in good.items() if k != "optimizer"}, lm_run / "checkpoint.pt")
    code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
    one_line_error(code, err, "lacks 'optimizer'")
    (lm_run / "checkpoint.pt").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)
    one_line_error(code, err, "cannot read")


@pytest.mark.parametrize("command", [["train", "vae", "--hidden", "100000000000"],
                                     ["train", "lm", "--max-chars", "6000", "--hidden", "10000000000"],
                                     ["train", "lm", "--max-chars", "6000", "--embed", "100000000000"],
                                     ["train", "lm", "--max-chars", "6000", "--hidden", "10" * 20],
                                     ["train", "vae", "--latent", "10" * 20],
                                     ["train", "lm", "--max-chars", "6000", "--batch-size", "1000000000"]])
def test_a_model_too_large_to_allocate_is_one_line_and_creates_no_folder(tmp_path, capsys, command):
    out = tmp_path / "run"
    code, _, err = run([*command, "--out", str(out), "--quiet"], capsys)
    one_line_error(code, err, command[-2])
    assert "memory" in err or "cannot be allocated" in err
    assert not out.exists()


def test_a_corrupt_teacher_safetensors_is_one_line(lm_run, tmp_path, capsys):
    path = lm_run / "model.safetensors"
    path.write_bytes(path.read_bytes()[:40])
    code, _, err = run(["distill", "--teacher", str(lm_run), "--out", str(tmp_path / "s"), "--quiet"], capsys)
    one_line_error(code, err, "--teacher", "model.safetensors", "checksum")
    (lm_run / "manifest.json").unlink()  # without a manifest, safetensors' own check speaks
    code, _, err = run(["distill", "--teacher", str(lm_run), "--out", str(tmp_path / "s"), "--quiet"], capsys)
    one_line_error(code, err, "--teacher", "not a readable safetensors file")
    assert not (tmp_path / "s").exists()


def test_force_overwrites_a_kldiv_run_but_never_a_folder_of_the_users_own_files(lm_run, tmp_path, corpus, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    (mine / "notes.txt").write_text("keep me")
    before = snapshot(mine)
    code, _, err = run(["train", "lm", "--force", "--text", str(corpus), "--out", str(mine), "--quiet"], capsys)
    one_line_error(code, err, "--force overwrites kldiv run folders only", "another --out")
    assert snapshot(mine) == before
    args = ["train", "lm", "--force", "--text", str(corpus), "--embed", "8", "--hidden", "16", "--seq-len", "16",
            "--batch-size", "4", "--steps", "2", "--eval-every", "2", "--eval-chars", "300", "--out", str(lm_run), "--quiet"]
    assert run(args, capsys)[0] == 0
    assert [r["step"] for r in rows(lm_run)] == [2]


def test_a_run_file_rewritten_outside_a_generation_keeps_its_checksum_true(lm_run, capsys):
    runs.atomic_write_text(lm_run / "samples.txt", "rewritten by a later step\n")
    manifest = json.loads((lm_run / "manifest.json").read_text())
    assert manifest["files"]["samples.txt"]["sha256"] == hashlib.sha256(b"rewritten by a later step\n").hexdigest()
    assert run(["train", "lm", "--resume", "--steps", "6", "--out", str(lm_run), "--quiet"], capsys)[0] == 0


def test_a_new_run_refuses_a_folder_another_run_filled_while_it_validated(tmp_path):
    folder = tmp_path / "run"
    late = runs.RunFolder(folder)  # checked: missing, so empty
    with runs.RunFolder(folder) as first, first.generation():
        runs.atomic_write_text(folder / "a.txt", "first")
    with pytest.raises(runs.CommandError, match="filled by another run"), late.generation():
        runs.atomic_write_text(folder / "a.txt", "second")
    assert (folder / "a.txt").read_text() == "first"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_hostile_data_and_text_files_for_training_are_one_line(tmp_path, capsys):
    import numpy as np

    fifo = tmp_path / "fifo.npy"
    os.mkfifo(fifo)
    np.savez(tmp_path / "a.npz", x=np.ones((4, 2)))
    os.rename(tmp_path / "a.npz", tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.ones((4, 2)))
    damaged = bytearray((tmp_path / "b.npy").read_bytes())
    damaged[damaged.index(b"{")] = ord("(")
    (tmp_path / "c.npy").write_bytes(bytes(damaged))
    for command, needle in ((["train", "vae", "--data", str(fifo)], "not a regular file"),
                            (["train", "lm", "--text", str(fifo)], "not a regular file"),
                            (["train", "vae", "--data", str(tmp_path / "a.npy")], "zip archive"),
                            (["train", "vae", "--data", str(tmp_path / "c.npy")], "cannot read")):
        code, _, err = run([*command, "--out", str(tmp_path / "run"), "--quiet"], capsys)
        one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()
