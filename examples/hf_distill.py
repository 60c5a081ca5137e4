"""Distil a small Llama into a smaller one with kldiv.hf's DistillationTrainer, and with TRL's GKDTrainer.

Everything is local: the text is the Python standard library's own source, the tokenizer is a byte-level BPE
trained here with `tokenizers`, the models are built from LlamaConfig. Steps:

1. train a teacher Llama (hidden 64, 2 layers) on the text with a plain Trainer (cross-entropy);
2. distil it into a student (hidden 48, 1 layer) with the same data, steps, optimiser and seed:
   - kldiv.hf.DistillationTrainer, fused (the logits are never materialised) and unfused,
   - TRL's GKDTrainer with lmbda = 0 (no on-policy generation) and beta = 0 (forward KL, the same loss), in
     float32 without activation checkpointing like the others (its SFTConfig defaults are bf16 and checkpointing);
3. print per trainer: time per step, peak resident memory above the start, KL(teacher || student) on held-out
   text (kldiv.nn.DistillationLoss over every held-out position) and held-out perplexity.

Each trainer runs in a fresh process (the same data, seed and optimiser), so peak memory is its own.

Run: `PYTHONPATH=src python examples/hf_distill.py` (about 5 minutes on 2 shared cores; `--quick`: a smoke run).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainerCallback, TrainingArguments

from kldiv.hf import DistillationTrainer
from kldiv.nn import DistillationLoss

SEQ = 64


def corpus(max_bytes: int) -> str:
    root = sysconfig.get_paths()["stdlib"]
    parts, size = [], 0
    for name in sorted(os.listdir(root)):
        if name.endswith(".py"):
            with open(os.path.join(root, name), encoding="utf-8", errors="replace") as f:
                text = f.read()
            parts.append(text)
            size += len(text)
            if size >= max_bytes:
                break
    return "\n".join(parts)


def tokenizer_for(text: str, vocab: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>"]))
    return tok


def Chunks(ids: torch.Tensor):
    """Fixed-length sequences as a `datasets.Dataset` (what TRL's trainers require), torch-formatted."""
    import datasets

    rows = ids.tolist()
    data = datasets.Dataset.from_dict({"input_ids": rows, "attention_mask": [[1] * len(r) for r in rows],
                                       "labels": rows})
    return data.with_format("torch")


def collate(features):
    return {key: torch.stack([f[key] for f in features]) for key in features[0]}


def llama(vocab: int, hidden: int, layers: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=SEQ, tie_word_embeddings=False))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """Peak resident memory above the start, sampled every 2 ms by a thread (CPU tensors are not traced)."""

    def __enter__(self):
        self.start = self.peak = rss()
        self.running = True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()
        return self

    def sample(self):
        while self.running:
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss())

    @property
    def mib(self) -> float:
        return (self.peak - self.start) / 2**20


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.t0 = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self.t0)


def training_args(out: str, steps: int, batch: int, lr: float, **extra) -> dict:
    return dict(output_dir=out, report_to=[], use_cpu=True, per_device_train_batch_size=batch, learning_rate=lr,
                max_steps=steps, logging_steps=max(1, steps // 4), save_strategy="no", disable_tqdm=True,
                dataloader_num_workers=0, seed=0, lr_scheduler_type="cosine", warmup_steps=0, **extra)


@torch.no_grad()
def held_out(student, teacher, data: torch.Tensor) -> tuple[float, float]:
    """(mean KL(teacher || student) per position, perplexity), over every next-token position of ``data``."""
    student.eval()
    kl_sum = ce_sum = 0.0
    n = 0
    for i in range(0, len(data), 32):
        ids = data[i:i + 32]
        s, t = student(input_ids=ids).logits[:, :-1], teacher(input_ids=ids).logits[:, :-1]
        kl_sum += float(DistillationLoss("kl", reduction="sum")(s, t))
        ce_sum += float(torch.nn.functional.cross_entropy(s.reshape(-1, s.shape[-1]).double(),
                                                          ids[:, 1:].reshape(-1), reduction="sum"))
        n += ids[:, 1:].numel()
    return kl_sum / n, math.exp(ce_sum / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, little text")
    parser.add_argument("--steps", type=int, default=None, help="distillation steps per trainer")
    parser.add_argument("--out", default=None, help="a new scratch folder (default: a fresh temporary one)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        return worker(options.worker, options.out, options.steps)
    if options.out is not None and os.path.exists(options.out) and os.listdir(options.out):
        parser.error(f"{options.out} is not empty; pass a new folder (nothing is overwritten)")
    out = options.out or tempfile.mkdtemp(prefix="kldiv_hf_distill_")
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)  # a shared machine: one thread, the same for every trainer
    quick = options.quick
    vocab, text_bytes = (256, 150_000) if quick else (4096, 800_000)
    teacher_steps, steps = (10, 6) if quick else (200, options.steps or 60)

    t0 = time.perf_counter()
    text = corpus(text_bytes)
    tok = tokenizer_for(text, vocab)
    ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
    chunks = ids[: len(ids) // SEQ * SEQ].reshape(-1, SEQ)
    g = torch.Generator().manual_seed(0)
    chunks = chunks[torch.randperm(len(chunks), generator=g)]
    held, train = chunks[:64], chunks[64:]
    vocab = tok.get_vocab_size()
    print(f"text {len(text) / 1e3:.0f} kB of stdlib source, {len(ids)} tokens, vocabulary {vocab}, "
          f"{len(train)} training and {len(held)} held-out sequences of {SEQ} ({time.perf_counter() - t0:.1f} s)")

    teacher = llama(vocab, 64, 2, seed=1)
    t0 = time.perf_counter()
    Trainer(model=teacher, args=TrainingArguments(**training_args(f"{out}/teacher", teacher_steps, 16, 5e-3)),
            train_dataset=Chunks(train), data_collator=collate).train()
    teacher.eval()
    _, ppl = held_out(teacher, teacher, held)
    print(f"teacher: {teacher_steps} steps in {time.perf_counter() - t0:.0f} s, held-out perplexity {ppl:.2f}")
    teacher.save_pretrained(f"{out}/teacher_model")
    tok.save(f"{out}/tokenizer.json")
    save_file({"train": train.contiguous(), "held": held.contiguous()}, f"{out}/data.safetensors")

    rows = []
    for name in TRAINERS:  # one fresh process each, so that no trainer inherits another's freed memory
        done = subprocess.run([sys.executable, __file__, "--worker", name, "--out", out, "--steps", str(steps)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            print(f"{name}: did not run: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        rows.append(json.loads(lines[-1][len("RESULT "):]))

    print(f"\nstudent hidden 48 x 1 layer, teacher hidden 64 x 2 layers, vocabulary {vocab}, {steps} steps of "
          f"16 x {SEQ} tokens, one thread")
    print("| trainer | time per step (median) | peak RSS above start of training | held-out KL(teacher ‖ student) "
          "| held-out perplexity |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['ms']:.0f} ms | {r['mib']:.0f} MiB | {r['kl']:.4f} nats | {r['ppl']:.2f} |")


TRAINERS = ("kldiv DistillationTrainer (fused)", "kldiv DistillationTrainer (fused=False)",
            "TRL GKDTrainer (lmbda=0, beta=0)", "floor: both models' forwards, no logits, no loss")


class FloorTrainer(Trainer):
    """The floor of a distillation step: the student's forward and backward and the teacher's forward, up to the
    last hidden states, with a negligible stand-in loss (no LM head, no logits, no divergence)."""

    def __init__(self, teacher, **kwargs):
        super().__init__(**kwargs)
        self.teacher = teacher

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        feed = {k: v for k, v in inputs.items() if k != "labels"}
        hidden = model.model(**feed).last_hidden_state
        with torch.no_grad():
            teacher_hidden = self.teacher.model(**feed).last_hidden_state
        return 1e-9 * (hidden.square().mean() + teacher_hidden.mean())


def worker(name: str, out: str, steps: int) -> None:
    """Distil a fresh student with one trainer; print its figures as one JSON line."""
    torch.set_num_threads(1)
    teacher = LlamaForCausalLM.from_pretrained(f"{out}/teacher_model").eval()
    data = load_file(f"{out}/data.safetensors")
    train, held = data["train"], data["held"]
    student, timer = llama(teacher.config.vocab_size, 48, 1, seed=2), StepTimer()
    args = training_args(f"{out}/run{TRAINERS.index(name)}", steps, 16, 3e-3)
    if name.startswith("floor"):
        trainer = FloorTrainer(teacher, model=student, args=TrainingArguments(**args), train_dataset=Chunks(train),
                               data_collator=collate, callbacks=[timer])
    elif name.startswith("kldiv"):
        trainer = DistillationTrainer(student, teacher, TrainingArguments(**args), train_dataset=Chunks(train),
                                      data_collator=collate, callbacks=[timer], divergence="kl",
                                      fused="fused=False" not in name)
    else:
        from transformers import PreTrainedTokenizerFast
        from trl.experimental.gkd import GKDConfig, GKDTrainer

        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(f"{out}/tokenizer.json"), pad_token="<pad>")
        trainer = GKDTrainer(model=student, teacher_model=teacher, train_dataset=Chunks(train), data_collator=collate,
                             args=GKDConfig(**args, lmbda=0.0, beta=0.0, seq_kd=False, max_length=SEQ,
                                            bf16=False, gradient_checkpointing=False),  # as the others
                             callbacks=[timer], processing_class=tok)
    with Peak() as peak:
        trainer.train()
    kl, ppl = held_out(student, teacher, held)
    times = sorted(timer.times[1:])
    print("RESULT " + json.dumps({"name": name, "ms": times[len(times) // 2] * 1e3, "mib": peak.mib, "kl": kl,
                                  "ppl": ppl}))


if __name__ == "__main__":
    main()
