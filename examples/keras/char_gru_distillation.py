"""A character-level GRU text generator trained on the Python standard library's source, and a smaller student
distilled from it with an exact KL loss (Keras 3).

The teacher (GRU 128) learns next-character prediction with the cross-entropy of the true next character. Two
students (GRU 32) are then trained for the same number of steps: one on the true characters alone, one with
kldiv.keras.Distiller, whose loss adds T² · KL(softmax(teacher / T) ‖ softmax(student / T)) at every position
(kldiv.keras.losses.Distillation, Hinton et al. 2015). Prints the held-out bits per character of all three, the
KL from the teacher to each student, and text sampled from the teacher and the distilled student.

    python examples/keras/char_gru_distillation.py      # about a minute of CPU time (KERAS_BACKEND: any)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import sysconfig
from pathlib import Path

import numpy as np
from scipy.special import log_softmax

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def stdlib_text(chars: int) -> str:
    """The first ``chars`` characters of the standard library's top-level modules, in sorted order."""
    parts, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= chars:
            break
    return "".join(parts)[:chars]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--tiny", action="store_true", help="a few steps, for the tests")
    args = parser.parse_args(argv)
    if args.tiny:
        args.chars, args.epochs = 6_000, 1

    import keras

    import kldiv
    from kldiv.keras import Distiller, losses

    keras.utils.set_random_seed(0)
    text = stdlib_text(args.chars)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index[c] for c in text], np.int32)
    length = 64
    n = (len(ids) - 1) // length
    x = ids[: n * length].reshape(n, length)
    y = ids[1: n * length + 1].reshape(n, length)
    split = int(0.9 * n)
    x_train, y_train, x_test, y_test = x[:split], y[:split], x[split:], y[split:]
    v = len(vocab)

    def gru(units: int, name: str) -> keras.Model:
        return keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(v, 32),
                                 keras.layers.GRU(units, return_sequences=True), keras.layers.Dense(v)], name=name)

    def fit(model, **kwargs):
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0, **kwargs)

    hard = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    teacher = gru(128, "teacher")
    teacher.compile(optimizer=keras.optimizers.Adam(5e-3), loss=hard)
    fit(teacher)
    teacher.trainable = False

    student_alone = gru(32, "student_alone")
    student_alone.compile(optimizer=keras.optimizers.Adam(5e-3), loss=hard)
    fit(student_alone)

    student = gru(32, "student_distilled")
    distiller = Distiller(student, teacher, losses.Distillation("kl", temperature=args.temperature))
    distiller.compile(optimizer=keras.optimizers.Adam(5e-3), loss=hard)  # true characters + the teacher's KL
    fit(distiller)

    def logits(model):
        return np.concatenate([keras.ops.convert_to_numpy(model(x_test[i: i + 64])) for i in range(0, len(x_test), 64)])

    t_logits = logits(teacher).astype(np.float64)
    report = {"chars": len(text), "vocabulary": v}
    for name, model in (("teacher", teacher), ("student_alone", student_alone), ("student_distilled", student)):
        s_logits = t_logits if model is teacher else logits(model).astype(np.float64)
        log_q = log_softmax(s_logits, axis=-1)
        report[f"{name}_bits_per_char"] = float(-np.take_along_axis(log_q, y_test[..., None], -1).mean() / math.log(2))
        if model is not teacher:
            report[f"{name}_kl_from_teacher_bits"] = float(np.mean(kldiv.kl(t_logits, s_logits, from_logits=True,
                                                                            base=2)))

    def sample(model, prompt="def ", count=160, temperature=0.7):
        rng = np.random.default_rng(0)
        out = [index[c] for c in prompt]
        for _ in range(count):
            last = keras.ops.convert_to_numpy(model(np.array([out[-length:]], np.int32)))[0, -1].astype(np.float64)
            p = np.exp((last - last.max()) / temperature)
            out.append(int(rng.choice(v, p=p / p.sum())))
        return "".join(vocab[i] for i in out)

    report["teacher_sample"] = sample(teacher, count=40 if args.tiny else 160)
    report["student_sample"] = sample(student, count=40 if args.tiny else 160)
    print(f"{len(text)} characters of the standard library's source, {v} symbols, {args.epochs} epochs each, "
          f"backend {keras.backend.backend()}")
    print("held-out cross-entropy (bits per character):")
    print(f"  teacher GRU 128                               {report['teacher_bits_per_char']:.3f}")
    print(f"  student GRU 32, true characters only          {report['student_alone_bits_per_char']:.3f}   "
          f"KL(teacher ‖ student) {report['student_alone_kl_from_teacher_bits']:.3f} bits")
    print(f"  student GRU 32, distilled (T = {args.temperature:g}, exact KL)   "
          f"{report['student_distilled_bits_per_char']:.3f}   "
          f"KL(teacher ‖ student) {report['student_distilled_kl_from_teacher_bits']:.3f} bits")
    print("teacher:", repr(report["teacher_sample"]))
    print("distilled student:", repr(report["student_sample"]))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
