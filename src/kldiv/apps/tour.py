"""The guided tour behind ``kldiv demo``: worked examples, a VAE run, a distillation run, and a report that explains them.

:func:`worked_examples` computes the discrete examples with the library (every number below is a call to
:mod:`kldiv`); the terminal (``kldiv demo``) and the report show the same :class:`Example` objects.
:func:`run_tour` trains the runs and writes ``<out>/report.html`` and ``<out>/report.md`` (the same content)
with the runs' PNG plots, under ``<out>/vae``, ``<out>/teacher``, ``<out>/scratch`` and ``<out>/distilled``.

Run folders never destroy work: the tour marks ``--out`` with a ``.kldiv-demo`` file listing the run folders
it makes, and writes only into an empty or missing ``--out`` or one it marked before (``force=True`` allows any
``--out``, still never a run folder inside it that the tour did not make). It deletes nothing.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import kldiv

from .errors import CommandError

# Settings that keep the whole demo well under 3 minutes on a 2-core machine; ``quick`` is for CI.
# The VAE uses ``kldiv train vae``'s own defaults (hidden 256, constant β = 1, 30 epochs): the tour's earlier
# hidden 64, 12 epochs and a linear warm-up over half the run left the KL weight too little time at 1 and the
# encoder too small, and the VAE collapsed (held-out KL 0.49 nats, one dimension at 0.016 nats).
FULL = {"vae_epochs": 30, "teacher_steps": 400, "student_steps": 300, "eval_every": 10, "max_chars": 200_000,
        "eval_chars": 4_000}
QUICK = {"vae_epochs": 2, "teacher_steps": 12, "student_steps": 8, "eval_every": 4, "max_chars": 20_000,
         "eval_chars": 1_000}
RUNS = ("vae", "teacher", "scratch", "distilled")
MARKER = ".kldiv-demo"


# --- the worked examples -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One worked example: a title, paragraphs (with ``code`` and **bold** inline marks), an optional table
    (header, rows of strings) and the library's values it quotes (``values``, for tests and re-use)."""

    title: str
    paragraphs: tuple[str, ...]
    table: tuple[tuple[str, ...], tuple[tuple[str, ...], ...]] | None = None
    values: dict[str, float] = field(default_factory=dict)


def _num(value: float, digits: int = 3) -> str:
    return "∞" if math.isinf(value) else f"{value:.{digits}f}"


def worked_examples() -> list[Example]:
    """The discrete worked examples, every number computed by :mod:`kldiv`."""
    examples = []

    fair, loaded = np.full(6, 1 / 6), np.array([0.1, 0.1, 0.1, 0.1, 0.1, 0.5])
    v = {"kl_pq": float(kldiv.kl(fair, loaded, base=2)), "kl_qp": float(kldiv.kl(loaded, fair, base=2)),
         "js": float(kldiv.js(fair, loaded, base=2))}
    examples.append(Example(
        "A fair die against a loaded one",
        ("P is a fair die, every face 1/6; Q is loaded, the six comes up half the time (the other faces 0.1 each).",
         f"Coding fair rolls with a code built for the loaded die wastes **KL(P‖Q) = {v['kl_pq']:.3f} bits** per roll; "
         f"coding loaded rolls with the fair die's code wastes KL(Q‖P) = {v['kl_qp']:.3f} bits. Which distribution is "
         f"the truth matters. The Jensen–Shannon divergence, symmetric and never above 1 bit, is {v['js']:.3f} bits."),
        (("quantity", "bits"), (("KL(P‖Q)", _num(v["kl_pq"], 4)), ("KL(Q‖P)", _num(v["kl_qp"], 4)),
                                ("JS(P, Q)", _num(v["js"], 4)))),
        v,
    ))

    p, q = np.array([0.1, 0.9]), np.array([0.9, 0.1])
    v = {"kl_pq": float(kldiv.kl(p, q)), "kl_qp": float(kldiv.kl(q, p)), "kl_pq_bits": float(kldiv.kl(p, q, base=2))}
    examples.append(Example(
        "The coin",
        ("P = (0.1, 0.9): a coin that lands heads 10 % of the time; Q = (0.9, 0.1) expects heads 90 % of the time.",
         f"KL(P‖Q) = 0.1·log(0.1/0.9) + 0.9·log(0.9/0.1) = **{v['kl_pq']:.4f} nats** ({v['kl_pq_bits']:.3f} bits) of "
         "extra surprise per toss when Q is used to predict P's tosses. The two coins are mirror images, so "
         f"KL(Q‖P) = {v['kl_qp']:.4f} too: a coincidence of this pair, not a rule (next example)."),
        None,
        v,
    ))

    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    v = {"kl_pq": float(kldiv.kl(p, q)), "kl_qp": float(kldiv.kl(q, p)),
         "surprise_tail": float(kldiv.cross_entropy(np.array([0.0, 1.0]), q))}
    examples.append(Example(
        "KL is not symmetric",
        ("P = (0.5, 0.5) is a fair coin, Q = (0.9, 0.1) a biased one.",
         f"KL(P‖Q) = {v['kl_pq']:.4f} nats but KL(Q‖P) = {v['kl_qp']:.4f} nats. Judged by Q, every tail of the fair "
         f"coin is a shock (−log 0.1 = {v['surprise_tail']:.3f} nats), and tails are half the tosses; judged by the "
         "fair coin, nothing is ever very surprising. KL(P‖Q) punishes Q for missing what P does, which is why "
         "forward KL makes a student cover all of its teacher's outcomes (mean-seeking) and reverse KL lets it pick "
         "one (mode-seeking)."),
        (("quantity", "nats"), (("KL(P‖Q)", _num(v["kl_pq"], 4)), ("KL(Q‖P)", _num(v["kl_qp"], 4)))),
        v,
    ))

    v = {"cross_entropy": float(kldiv.cross_entropy(fair, loaded)), "entropy": float(kldiv.entropy(fair)),
         "kl": float(kldiv.kl(fair, loaded))}
    examples.append(Example(
        "KL(P‖Q) = H(P, Q) − H(P)",
        (f"Back to the dice. The entropy H(P) = {v['entropy']:.4f} nats (log 6) is what a fair roll costs with its own "
         f"best code; with the loaded die's code it costs the cross-entropy H(P, Q) = {v['cross_entropy']:.4f} nats. "
         f"The difference, {v['cross_entropy'] - v['entropy']:.4f} nats, is KL(P‖Q) = {v['kl']:.4f} nats "
         f"(the {examples[0].values['kl_pq']:.3f} bits of the first example).",
         "This is why minimising the usual cross-entropy loss against fixed targets minimises KL: the entropy of the "
         "targets is a constant."),
        (("quantity", "nats"), (("H(P, Q)", _num(v["cross_entropy"], 4)), ("H(P)", _num(v["entropy"], 4)),
                                ("H(P, Q) − H(P)", _num(v["cross_entropy"] - v["entropy"], 4)),
                                ("KL(P‖Q)", _num(v["kl"], 4)))),
        v,
    ))

    p, q = np.array([0.0, 1.0, 0.0]), np.array([0.2, 0.5, 0.3])
    v = {"kl_pq": float(kldiv.kl(p, q)), "kl_qp": float(kldiv.kl(q, p)), "js": float(kldiv.js(p, q)),
         "log2": float(kldiv.entropy(np.array([0.5, 0.5])))}
    examples.append(Example(
        "Zeros and an infinity",
        ("P = (0, 1, 0) is certain of the middle outcome; Q = (0.2, 0.5, 0.3) spreads its bets.",
         f"Terms with p = 0 contribute exactly 0, so KL(P‖Q) = −log 0.5 = {v['kl_pq']:.4f} nats. The other way, Q gives "
         "0.2 to the first outcome, where P gives 0: something P calls impossible happens under Q, no finite code "
         f"length pays for it, and **KL(Q‖P) = {_num(v['kl_qp'])}**. kldiv returns inf here, never NaN and never an "
         "epsilon-smoothed number.",
         f"The Jensen–Shannon divergence compares both with their mixture first, so it stays finite: "
         f"JS(P, Q) = {v['js']:.4f} nats, below its bound log 2 = {v['log2']:.4f}."),
        (("quantity", "nats"), (("KL(P‖Q)", _num(v["kl_pq"], 4)), ("KL(Q‖P)", _num(v["kl_qp"], 4)),
                                ("JS(P, Q)", _num(v["js"], 4)))),
        v,
    ))

    x, y = np.array([2.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.0])
    grad_x, grad_y = kldiv.grad.kl(x, y, from_logits=True)
    v = {f"grad_y{i}": float(g) for i, g in enumerate(grad_y)} | {f"grad_x{i}": float(g) for i, g in enumerate(grad_x)}
    examples.append(Example(
        "The backward pass: gradients of KL from logits",
        (f"With P = softmax(x), x = {x.tolist()}, and Q = softmax(y), y = {y.tolist()}, `kldiv.grad.kl(x, y, "
         "from_logits=True)` returns both gradients of KL(P‖Q).",
         "In the second side's logits it is softmax(y) − softmax(x): exactly what a distillation student Q receives, "
         "pushing up the logits where the teacher P has more mass than the student and down where it has less, and "
         "zero once they agree."),
        (("logit", "∂KL/∂x", "∂KL/∂y"), tuple((str(i), _num(float(a), 4), _num(float(b), 4))
                                              for i, (a, b) in enumerate(zip(grad_x, grad_y, strict=True)))),
        v,
    ))

    rng = np.random.default_rng(0)
    topics = rng.dirichlet(np.full(8, 0.5), size=4)
    matrix = np.asarray(kldiv.pairwise.kl(topics, topics), dtype=np.float64)
    off = matrix + np.diag(np.full(len(topics), np.inf))
    i, j = np.unravel_index(np.argmin(off), off.shape)
    v = {f"kl_{a}{b}": float(matrix[a, b]) for a in range(len(topics)) for b in range(len(topics))}
    examples.append(Example(
        "A pairwise matrix",
        ("Four random distributions over 8 words (think of topics); `kldiv.pairwise.kl(P, Q)` gives KL(row‖column) "
         "for every pair at once, with one matrix product.",
         f"The diagonal is 0 (every distribution is at distance 0 from itself) and the matrix is not symmetric: "
         f"KL(P0‖P1) = {matrix[0, 1]:.3f} but KL(P1‖P0) = {matrix[1, 0]:.3f}. The smallest entry off the diagonal, "
         f"KL(P{i}‖P{j}) = {matrix[i, j]:.3f}, names the closest pair; sorting a row finds a distribution's nearest "
         "neighbours, the way topics or users are matched."),
        (("", *(f"P{b}" for b in range(len(topics)))),
         tuple((f"P{a}", *(_num(float(value)) for value in row)) for a, row in enumerate(matrix))),
        v,
    ))
    return examples


# --- inline marks: `code` and **bold**, for the terminal and the report -------------------------------------

_INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")


def inline_parts(text: str) -> list[tuple[str, str]]:
    """Split ``text`` into ``(kind, text)`` parts, kind ``plain``, ``code`` or ``bold``."""
    parts, start = [], 0
    for match in _INLINE.finditer(text):
        if match.start() > start:
            parts.append(("plain", text[start:match.start()]))
        parts.append(("code", match.group(1)) if match.group(1) is not None else ("bold", match.group(2)))
        start = match.end()
    if start < len(text):
        parts.append(("plain", text[start:]))
    return parts


def inline_html(text: str) -> str:
    """HTML of ``text`` with its inline marks rendered (everything else escaped)."""
    tags = {"code": ("<code>", "</code>"), "bold": ("<strong>", "</strong>"), "plain": ("", "")}
    return "".join(tags[kind][0] + html.escape(part) + tags[kind][1] for kind, part in inline_parts(text))


def print_example(console: Any, number: int, example: Example) -> None:
    """One worked example in the terminal (Rich)."""
    from rich.table import Table
    from rich.text import Text

    console.rule(f"[bold]{number}. {example.title}")
    styles = {"plain": "", "code": "cyan", "bold": "bold"}
    for paragraph in example.paragraphs:
        console.print(Text.assemble(*((part, styles[kind]) for kind, part in inline_parts(paragraph))))
    if example.table is not None:
        header, rows = example.table
        table = Table()
        for k, name in enumerate(header):
            table.add_column(name, justify="left" if k == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)


# --- the output folder -----------------------------------------------------------------------------------


def _made_by_demo(out: Path) -> set[str]:
    """The run folders an earlier ``kldiv demo`` made in ``out`` (listed in its marker); empty if unmarked."""
    try:
        return set(json.loads((out / MARKER).read_text()).get("runs", []))
    except (OSError, ValueError, AttributeError):
        return set()


def prepare_output(out: Path, *, force: bool = False) -> set[str]:
    """Check ``out`` and mark it as the demo's; raise :class:`CommandError` before writing anything where the
    tour would overwrite what it did not make. Returns the run folders already holding the demo's own runs
    (which the runs may then overwrite). Deletes nothing.

    The marker is one file in ``out`` listing the run folders the demo makes; the run folders themselves stay
    plain kldiv run folders (a user's own ``runs/teacher`` beside them is never taken for the demo's)."""
    from .runs import atomic_write_json

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"--out: {str(out)!r} exists and is not a folder; give another --out")
    ours = _made_by_demo(out) if out.is_dir() else set()
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not force:
        raise CommandError(
            f"--out: {str(out)!r} is not empty and was not made by kldiv demo (no {MARKER} file in it); give another "
            "--out, or pass --force to write the demo's files into it"
        )
    reused = set()
    for name in RUNS:
        run = out / name
        if run.exists() and not (run.is_dir() and not any(run.iterdir())):
            if not (run.is_dir() and name in ours):
                raise CommandError(
                    f"--out: {str(run)!r} exists and is not a folder kldiv demo made (not listed in {MARKER}); kldiv "
                    "never overwrites it: move it away or give another --out"
                )
            reused.add(name)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / MARKER, {"made_by": "kldiv demo", "runs": list(RUNS),
                                     "note": "kldiv demo may write these run folders again; it deletes nothing"})
    return reused


# --- the runs --------------------------------------------------------------------------------------------


def run_tour(console: Any, out: Path, *, quick: bool = False, force: bool = False, first_section: int = 8) -> Path:
    """Train the short runs, write the report, and return the path of ``report.html``.

    ``first_section`` numbers the terminal sections after the worked examples."""
    import torch

    settings = QUICK if quick else FULL
    out = Path(out)
    reused = prepare_output(out, force=force)
    # These models are small: one thread is as fast, and two threads on a busy 2-core machine spin against each
    # other (5 VAE epochs took 26.6 s of CPU with 2 threads, 4.5 s with 1, measured side by side).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(console, out, settings, quick=quick, first_section=first_section, reused=reused)
    finally:
        torch.set_num_threads(threads)


def _run(console: Any, out: Path, settings: dict[str, int], *, quick: bool, first_section: int,
         reused: set[str]) -> Path:
    from . import charlm, distill, plots, vae

    started = time.perf_counter()
    cpu_started = time.process_time()

    console.rule(f"[bold]{first_section}. A VAE on the bundled digits: reconstruction + KL(q(z|x) ‖ N(0, I))")
    vae_config = vae.VAEConfig(epochs=settings["vae_epochs"], seed=0)
    vae_row = vae.train(vae_config, out / "vae", progress=True, force="vae" in reused)
    console.print(
        f"held-out: reconstruction {vae_row['heldout_recon']:.2f} nats, KL {vae_row['heldout_kl']:.2f} nats, "
        f"ELBO {vae_row['heldout_elbo']:.2f}, KL per dimension "
        f"{', '.join(f'{v:.2f}' for v in vae_row['kl_per_dimension'])}, "
        f"mutual information {vae_row['mutual_information']:.2f} nats",
        highlight=False,
    )
    diagnosis = vae.diagnose(vae_row)
    for sentence in diagnosis:
        console.print(sentence, style="green" if sentence.startswith("No posterior") else "yellow", highlight=False)

    console.rule(f"[bold]{first_section + 1}. Distillation: a small character GRU learns from a bigger one with KL")
    every = settings["eval_every"]
    lm_config = charlm.LMConfig(
        max_chars=settings["max_chars"], embed=32, hidden=128, seq_len=64, batch_size=16,
        steps=settings["teacher_steps"], eval_every=every, eval_chars=settings["eval_chars"],
    )
    teacher = charlm.train(lm_config, out / "teacher", progress=True, force="teacher" in reused)
    common = dict(teacher=str(out / "teacher"), embed=16, hidden=64, seq_len=64, batch_size=16,
                  steps=settings["student_steps"], eval_every=every, eval_chars=settings["eval_chars"])
    scratch = distill.distill(distill.DistillConfig(**common, hard_label_weight=1.0), out / "scratch", progress=True,
                              force="scratch" in reused)
    distilled = distill.distill(distill.DistillConfig(**common, divergence="kl"), out / "distilled", progress=True,
                                force="distilled" in reused)
    histories = {name: json.loads((out / name / "metrics.json").read_text()) for name in ("scratch", "distilled")}
    steps = [row["step"] for row in histories["distilled"]]
    plots.panels(out / "comparison.png", steps, [
        {"series": {"from scratch": [r["heldout_perplexity"] for r in histories["scratch"]],
                    "distilled (KL)": [r["heldout_perplexity"] for r in histories["distilled"]]},
         "references": {"teacher": distilled["teacher_perplexity"]},
         "ylabel": "held-out perplexity (lower is better)", "title": "perplexity on unseen text", "yscale": "log"},
        {"series": {"from scratch": [r["kl_to_teacher"] for r in histories["scratch"]],
                    "distilled (KL)": [r["kl_to_teacher"] for r in histories["distilled"]]},
         "ylabel": "nats per character", "title": "KL(teacher ‖ student)"},
        {"series": {"from scratch": [100 * r["agreement"] for r in histories["scratch"]],
                    "distilled (KL)": [100 * r["agreement"] for r in histories["distilled"]]},
         "ylabel": "% of characters", "title": "top-1 agreement with the teacher"},
    ], title="two students of the same size, seed and steps: text alone vs the teacher's distributions")
    timing = {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started}
    report = write_report(
        out, examples=worked_examples(), vae_config=vae_config, vae_row=vae_row, diagnosis=diagnosis,
        teacher=teacher, students=[scratch, distilled], timing=timing, quick=quick,
    )
    console.print(f"report: [bold]{report}[/] (and {report.with_suffix('.md')})")
    return report


# --- the report ------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _vae_blocks(out: Path, config: Any, row: dict, diagnosis: list[str]) -> list[tuple[str, Any]]:
    blocks: list[tuple[str, Any]] = [("h2", "Part 2: a variational autoencoder on scikit-learn's digits")]
    blocks.append(("p", "A VAE squeezes each 8×8 digit into a code z of "
                        f"{config.latent} numbers and learns to draw the digit back from it. Its loss per image is the "
                        "reconstruction cost −log p(x|z) (Bernoulli pixels) plus **KL(q(z|x) ‖ N(0, I))**: how far the "
                        "encoder's distribution over codes for this image is from the prior, the price in nats of "
                        "writing the code down. The sum is −ELBO, a bound on −log p(x). The KL term is "
                        f"`kldiv.vae.gaussian_kl`; {config.epochs} epochs, β = {config.beta:g}, the same settings as "
                        "`kldiv train vae`."))
    blocks.append(("table", (["held-out quantity (nats per image)", "value"], [
        ["reconstruction −log p(x|z)", _fmt(row["heldout_recon"])], ["KL(q(z|x) ‖ p(z))", _fmt(row["heldout_kl"])],
        ["−ELBO = reconstruction + KL", _fmt(-row["heldout_elbo"])],
        ["KL per latent dimension", ", ".join(f"{v:.3f}" for v in row["kl_per_dimension"])],
        ["mutual information I(x; z) (He et al. 2019)", _fmt(row["mutual_information"])],
        ["active units, Var E[z|x] > 0.01 (Burda et al. 2016)", _fmt(row["active_units"])],
    ])))
    blocks.append(("h3", "Is the code used? (posterior collapse)"))
    blocks.extend(("p", sentence) for sentence in diagnosis)
    blocks.append(("p", "Posterior collapse is the classic VAE failure: the KL term is cheapest at 0, so a decoder that "
                        "can do without z teaches the encoder to output the prior, and every image gets the same code. "
                        "The KL per dimension is the test: it bounds how many nats each dimension carries."))
    figures = [
        ("loss.png", "training curves",
         "Left: reconstruction and −ELBO on held-out images per epoch (lower is better; the train loss is beside "
         "them). Right: the KL term. A KL that rises and settles means the code carries information; a KL sinking "
         "towards 0 is posterior collapse."),
        ("kl_per_dimension.png", "KL per latent dimension",
         "One bar per dimension of z: its held-out KL from the prior, an upper bound on what it tells about the "
         "image. A bar near 0 is a dimension the decoder ignores."),
        ("reconstructions.png", "reconstructions",
         "Top: held-out digits the model never saw; bottom: the decoder's image from each one's code. Recognisable "
         "digits mean two numbers carry the digit's identity; the same blob in every column would mean collapse."),
        ("samples.png", "samples from the prior",
         "Images decoded from codes drawn from N(0, I): what the model generates. Blurry in-between shapes come from "
         "codes that lie between two digits' regions."),
        ("latent_map.png", "the latent space",
         "Each held-out image at its code (posterior mean), coloured by its true digit. The labels were never used in "
         "training: clusters mean the VAE sorted the digits by itself."),
    ]
    for name, caption, reading in figures:
        if (out / "vae" / name).exists():
            blocks.append(("img", (f"vae/{name}", caption)))
            blocks.append(("p", reading))
    return blocks


def _distill_blocks(teacher: dict, students: list[dict]) -> list[tuple[str, Any]]:
    scratch, distilled = students
    blocks: list[tuple[str, Any]] = [("h2", "Part 3: distilling a character language model")]
    blocks.append(("p", f"The teacher is a GRU with {teacher['parameters']:,} parameters trained for {teacher['steps']} "
                        "steps to predict the next character of the Python standard library's source (held-out "
                        f"perplexity {teacher['heldout_perplexity']:.2f}: as unsure as a fair choice among that many "
                        f"characters). Two students with {scratch['student_parameters']:,} parameters each, the same "
                        "seed, data and steps: one learns from the text alone (cross-entropy with the character "
                        "that came next), the other from the teacher's whole next-character distribution with "
                        "**KL(teacher ‖ student)** (`kldiv.nn.DistillationLoss(\"kl\")`)."))
    blocks.append(("table", (["student", "held-out perplexity", "KL(teacher ‖ student), nats/char", "top-1 agreement"], [
        [s["method"], _fmt(s["heldout_perplexity"]), _fmt(s["kl_to_teacher"], 4), f"{100 * s['agreement']:.1f} %"]
        for s in students
    ])))
    gain = scratch["heldout_perplexity"] - distilled["heldout_perplexity"]
    if gain > 0:
        verdict = (f"The distilled student reaches perplexity {distilled['heldout_perplexity']:.2f} against "
                   f"{scratch['heldout_perplexity']:.2f} from scratch ({gain:.2f} lower) and sits "
                   f"{distilled['kl_to_teacher']:.3f} nats per character from the teacher instead of "
                   f"{scratch['kl_to_teacher']:.3f}: a full distribution per character is a richer signal than the one "
                   "character that happened to come next.")
    else:
        verdict = (f"In this short run distillation did not help: perplexity {distilled['heldout_perplexity']:.2f} "
                   f"distilled against {scratch['heldout_perplexity']:.2f} from scratch. Longer runs "
                   "(`kldiv distill --steps`) usually separate them.")
    blocks.append(("p", verdict))
    blocks.append(("img", ("comparison.png", "from scratch against distilled")))
    blocks.append(("p", "Both students, measured on held-out text every few steps. Left: perplexity on a log scale (lower "
                        "is better; the dashed line is the teacher, the floor a student this small can approach). Middle: "
                        "KL(teacher ‖ student) per character, the quantity the distilled student minimises. Right: how "
                        "often the student's most likely next character is the teacher's."))
    blocks.append(("img", ("teacher/loss.png", "the teacher's training curve")))
    blocks.append(("p", "The teacher's training cross-entropy and held-out log perplexity, in nats per character: "
                        "both fall together while the model learns; a held-out curve turning up would mean overfitting."))
    blocks.append(("h3", "A sample from the distilled student"))
    blocks.append(("p", "Generated character by character at temperature 0.8 after a prompt from held-out text: "
                        "it has learnt the look of Python (indentation, keywords, brackets), not its meaning."))
    blocks.append(("pre", distilled["samples"][0]))
    return blocks


def write_report(
    out: Path,
    *,
    examples: list[Example],
    vae_config: Any,
    vae_row: dict,
    diagnosis: list[str],
    teacher: dict,
    students: list[dict],
    timing: dict[str, float],
    quick: bool,
) -> Path:
    """``report.md`` and ``report.html``: the worked examples, the runs' tables, plots and what they mean."""
    from .runs import atomic_write_text

    blocks: list[tuple[str, Any]] = [("h1", "kldiv demo: KL divergence at work")]
    blocks.append(("p", f"Generated by `kldiv demo{' --quick' if quick else ''}`: the runs took "
                        f"{timing['seconds']:.0f} s ({timing['cpu_seconds']:.0f} s of CPU time). "
                        "All numbers are the library's, on held-out data where a model is involved; nats unless "
                        "it says bits (1 bit = log 2 = 0.693 nats)."))
    blocks.append(("p", "KL(P‖Q) = Σ p log(p/q) measures how much worse Q describes data drawn from P than P itself "
                        "does: the extra nats per observation of using the wrong model. It is 0 only when P = Q, "
                        "never negative, and not symmetric."))
    blocks.append(("h2", "Part 1: worked examples"))
    for number, example in enumerate(examples, 1):
        blocks.append(("h3", f"{number}. {example.title}"))
        blocks.extend(("p", paragraph) for paragraph in example.paragraphs)
        if example.table is not None:
            header, rows = example.table
            blocks.append(("table", (list(header), [list(row) for row in rows])))
    blocks += _vae_blocks(out, vae_config, vae_row, diagnosis)
    blocks += _distill_blocks(teacher, students)
    scratch, distilled = students
    blocks.append(("h2", "What you just saw"))
    blocks.append(("ul", [
        f"KL is the extra cost of the wrong model: {examples[0].values['kl_pq']:.3f} bits per roll for the loaded "
        "die, and it depends on which side is the truth.",
        "KL(P‖Q) = H(P, Q) − H(P): minimising cross-entropy is minimising KL.",
        "It is infinite when Q rules out what P allows; JS and the other bounded measures stay finite.",
        f"In a VAE, KL(q(z|x) ‖ p(z)) is the price of the code: {vae_row['heldout_kl']:.2f} nats per image here, and "
        "its value per dimension tells whether the code is used at all.",
        f"In distillation, KL(teacher ‖ student) is the loss: {distilled['kl_to_teacher']:.3f} nats per character "
        f"from the teacher distilled, {scratch['kl_to_teacher']:.3f} from scratch.",
        "Next: `kldiv train vae --help`, `kldiv train lm`, `kldiv distill --help`, or `kldiv compute P Q` on your own "
        "distributions.",
    ]))
    if quick:
        blocks.append(("p", "`--quick` trains for a few steps only: the numbers show the pipeline, not what it can reach."))
    return _write(out, blocks, atomic_write_text)


def _write(out: Path, blocks: list[tuple[str, Any]], write: Any) -> Path:
    md, body = [], []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            md.append("#" * int(kind[1]) + " " + content)
            body.append(f"<{kind}>{inline_html(content)}</{kind}>")
        elif kind == "p":
            md.append(content)
            body.append(f"<p>{inline_html(content)}</p>")
        elif kind == "ul":
            md.append("\n".join(f"- {item}" for item in content))
            body.append("<ul>" + "".join(f"<li>{inline_html(item)}</li>" for item in content) + "</ul>")
        elif kind == "pre":
            md.append("```\n" + content + "\n```")
            body.append(f"<pre>{html.escape(content)}</pre>")
        elif kind == "img":
            path, caption = content
            md.append(f"![{caption}]({path})")
            body.append(f'<figure><img src="{html.escape(path)}" alt="{html.escape(caption)}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        else:
            header, rows = content
            md.append("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
            md[-1] += "".join("\n| " + " | ".join(row) + " |" for row in rows)
            cells = "".join(f"<th>{inline_html(h)}</th>" for h in header)
            trs = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
            body.append(f"<table><tr>{cells}</tr>{trs}</table>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}"
             "table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.3em .6em}"
             "td+td{text-align:right;font-variant-numeric:tabular-nums}"
             "code{background:#f0f0f0;padding:0 .2em;border-radius:3px}"
             "img{max-width:100%}figure{margin:1em 0 .2em}figcaption{color:#555;font-size:.9em}"
             "pre{background:#f4f4f4;padding:.6em;overflow:auto}h2{margin-top:2em;border-bottom:1px solid #ddd}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>kldiv demo</title><style>{style}</style></head>"
            f"<body>{''.join(body)}</body></html>\n")
    write(out / "report.md", "\n\n".join(md) + "\n")
    write(out / "report.html", page)
    return out / "report.html"
