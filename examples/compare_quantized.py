"""How far do int8 quantisation and pruning move a language model? An end-to-end ``kldiv compare`` run.

Trains a tiny character-level language model (an MLP over the previous 4 characters) on generated text,
makes three copies (an exact copy, int8 per-row quantised weights, 60 % magnitude-pruned weights), saves
the reference logits with ``save_reference`` and compares each copy with ``Comparison``. No download.

    python examples/compare_quantized.py            # about 20 s on 2 CPU cores
"""

from __future__ import annotations

import copy
import tempfile

import numpy as np
import torch
from torch import nn

from kldiv.compare import Comparison, compare_files, save_reference

CONTEXT = 4


def make_text(n_characters: int, seed: int = 0) -> str:
    """Pseudo-English: words drawn from a small Zipf-like lexicon, so a small model has something to learn."""
    rng = np.random.default_rng(seed)
    words = "the of and to in is was that for it with as his on be at by had are but from or have an they which " \
            "one you were her all she there would their we him been has when who will more no if out so said what " \
            "up its about into than them can only other new some could time these two may then do first any my now"
    lexicon = words.split()
    weights = 1 / np.arange(1, len(lexicon) + 1)
    chosen = rng.choice(len(lexicon), size=n_characters // 4, p=weights / weights.sum())
    return " ".join(lexicon[i] for i in chosen)[:n_characters]


class CharMLP(nn.Module):
    def __init__(self, vocab: int, width: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, 16)
        self.net = nn.Sequential(nn.Linear(16 * CONTEXT, width), nn.GELU(), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, vocab))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(context).flatten(1))


def windows(ids: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(contexts (N, CONTEXT), next characters (N,)) of a sequence of character ids."""
    view = np.lib.stride_tricks.sliding_window_view(ids, CONTEXT + 1)
    return torch.as_tensor(view[:, :CONTEXT].copy()), torch.as_tensor(view[:, CONTEXT].copy())


def train(model: nn.Module, contexts: torch.Tensor, targets: torch.Tensor, steps: int, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(targets), (256,), generator=generator)
        loss = nn.functional.cross_entropy(model(contexts[batch]), targets[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def int8_copy(model: nn.Module) -> nn.Module:
    """Weights rounded to 8 bits, symmetric, one scale per output row (w = s * round(w / s), s = max|w| / 127)."""
    quantised = copy.deepcopy(model)
    with torch.no_grad():
        for module in quantised.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                w = module.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127
                w.copy_(torch.round(w / scale).clamp(-127, 127) * scale)
    return quantised


def pruned_copy(model: nn.Module, fraction: float = 0.6) -> nn.Module:
    """The smallest ``fraction`` of each Linear layer's weights (by magnitude) set to zero."""
    pruned = copy.deepcopy(model)
    with torch.no_grad():
        for module in pruned.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                threshold = w.abs().flatten().kthvalue(int(fraction * w.numel())).values
                w.mul_(w.abs() > threshold)
    return pruned


def run(train_steps: int = 600, n_characters: int = 60_000, seed: int = 0) -> dict[str, object]:
    """Train, copy, compare; returns {copy name: ComparisonResult}."""
    torch.manual_seed(seed)
    text = make_text(n_characters, seed)
    alphabet = sorted(set(text))
    ids = np.array([alphabet.index(c) for c in text])
    split = int(0.9 * len(ids))
    contexts, targets = windows(ids[:split])
    test_contexts, test_targets = windows(ids[split:])
    model = CharMLP(len(alphabet))
    train(model, contexts, targets, train_steps, seed)
    model.eval()
    copies = {"exact copy": copy.deepcopy(model), "int8": int8_copy(model), "pruned 60%": pruned_copy(model)}
    results: dict[str, object] = {}
    with torch.no_grad():
        reference_logits = model(test_contexts)
        for name, other in copies.items():
            comparison = Comparison()
            for lo in range(0, len(test_targets), 1024):  # streaming, as with a model too big for one batch
                comparison.update(reference_logits[lo:lo + 1024], other(test_contexts[lo:lo + 1024]),
                                  labels=test_targets[lo:lo + 1024])
            results[name] = comparison.result()
        # The same through files: the reference saved in llama.cpp's 16-bit format, the int8 copy exactly.
        with tempfile.TemporaryDirectory() as directory:
            save_reference(f"{directory}/reference", reference_logits, labels=test_targets, format="quantized")
            save_reference(f"{directory}/int8", copies["int8"](test_contexts))
            results["int8 (from files)"] = compare_files(f"{directory}/reference", f"{directory}/int8")
    return results


def main() -> None:
    results = run()
    print(f"{'copy':<20}{'mean KLD':>12}{'± SE':>10}{'99% KLD':>10}{'same top':>10}{'PPL ratio':>11}")
    for name, r in results.items():
        print(f"{name:<20}{r.kld_mean:>12.2e}{r.kld_se:>10.1e}{r.kld_percentiles[99.0]:>10.2e}"
              f"{100 * r.same_top_p:>9.2f}%{r.ppl_ratio:>11.4f}")


if __name__ == "__main__":
    main()
