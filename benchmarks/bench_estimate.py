"""Honesty and speed of kldiv.estimate: interval coverage on known answers, and the k-NN time at 10^5 points.

Run:  python benchmarks/bench_estimate.py                      # about 15 minutes on 2 busy cores
      python benchmarks/bench_estimate.py --quick              # fewer repeats, no 10^5 timing

Part 1, coverage: every estimator is run ``--repeats`` times on fresh samples from pairs whose divergence is known
exactly (closed forms from ``kldiv.distributions.kl`` for the Gaussian and exponential pairs, ``kldiv.kl`` for the
categorical pairs, 1-D quadrature for the Jensen–Shannon target), and the table gives the mean, the spread over
repeats, the mean reported standard error and the share of 95 % intervals that hold the truth. For the k-NN
estimator the "value ± 1.96 stderr" column is the interval that ignores the bias (what the estimator reported
before), beside its bias-corrected ``ci``. The variational bounds are lower bounds: their intervals cover the
bound, and the table says how far below the truth it lies.

Part 2, speed: ``knn(x, y, k=5)`` on n = m = 10^5 points in 10-D beside the recipe a user would write with SciPy
(``cKDTree(x).query(x, k + 1, workers=-1)`` and ``cKDTree(y).query(x, k, workers=-1)``, default leaf size), in
the same process; the floor is kldiv's own two neighbour queries (no estimate can skip them). Nothing is
downloaded; prints Markdown for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
import warnings

import numpy as np
import torch
import torch.distributions as D

import kldiv
from kldiv.distributions import kl as closed_form
from kldiv.estimate import knn, mc, plugin, variational


def _truth(p: D.Distribution, q: D.Distribution) -> float:
    return float(closed_form(p, q))


def _mvn(mean: float, var: float, d: int) -> D.Distribution:
    return D.MultivariateNormal(torch.full((d,), mean, dtype=torch.float64), var * torch.eye(d, dtype=torch.float64))


def _shift(d: int) -> D.Distribution:
    return D.MultivariateNormal(torch.full((d,), 1 / math.sqrt(d), dtype=torch.float64), torch.eye(d, dtype=torch.float64))


CASES = {  # name: (P, Q), samples drawn with a seeded NumPy generator through the distributions' parameters
    "1-D N(0,1)‖N(1,1)": (D.Normal(0.0, 1.0), D.Normal(1.0, 1.0)),
    "10-D shift, |μ|=1": (_mvn(0.0, 1.0, 10), _shift(10)),
    "10-D N(0,I)‖N(0,2I)": (_mvn(0.0, 1.0, 10), _mvn(0.0, 2.0, 10)),
    "1-D N(0,1)‖N(3,1)": (D.Normal(0.0, 1.0), D.Normal(3.0, 1.0)),
    "Exp(1)‖Exp(2)": (D.Exponential(1.0), D.Exponential(2.0)),
}


def _draw(dist: D.Distribution, n: int, rng: np.random.Generator) -> np.ndarray:
    if isinstance(dist, D.Normal):
        return rng.normal(float(dist.loc), float(dist.scale), size=(n, 1))
    if isinstance(dist, D.Exponential):
        return rng.exponential(1 / float(dist.rate), size=(n, 1))
    chol = dist.scale_tril.numpy()
    return rng.normal(size=(n, chol.shape[0])) @ chol.T + dist.loc.numpy()


def _row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def knn_coverage(sizes: list[int], repeats: dict[int, int]) -> None:
    print("k-NN estimator, 95 % intervals (`knn(x, y, k, ci=0.95)`, n = m):\n")
    print(_row(["case (truth, nats)", "n", "variant", "mean", "sd over repeats", "mean stderr", "mean bias estimate",
                "true bias", "value ± 1.96 stderr covers", "ci covers", "mean ci width"]))
    print("|" + "---|" * 11)
    for seed, (case, (p, q)) in enumerate(CASES.items()):
        truth = _truth(p, q)
        for n in sizes:
            for variant, kwargs in (("k=1", {"k": 1}), ("k=5", {"k": 5}), ("adaptive", {"adaptive": True})):
                rng = np.random.default_rng(seed)
                rows = []
                for r in range(repeats[n]):
                    x, y = _draw(p, n, rng), _draw(q, n, rng)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        e = knn(x, y, ci=0.95, seed=r, **kwargs)
                    rows.append((e.value, e.stderr, e.bias, e.ci[0] <= truth <= e.ci[1], e.ci[1] - e.ci[0]))
                v, se, b, cov, width = (np.array(c, dtype=float) for c in zip(*rows, strict=True))
                naive = np.mean(np.abs(v - truth) <= 1.96 * se)
                print(_row([f"{case} ({truth:.3f})", n, variant, f"{v.mean():.3f}", f"{v.std(ddof=1):.3f}",
                            f"{se.mean():.3f}", f"{b.mean():+.3f}", f"{v.mean() - truth:+.3f}", f"{naive:.0%}",
                            f"{cov.mean():.0%}", f"{width.mean():.3f}"]), flush=True)


def plugin_coverage(repeats: int) -> None:
    print("\nPlug-in estimator on categorical samples, 95 % normal intervals (`plugin(counts_p, counts_q)`):\n")
    print(_row(["pair (truth, nats)", "N = M", "correction", "refused (a category unseen in Q's sample)", "mean",
                "sd over repeats", "mean stderr", "ci covers (of the rest)"]))
    print("|---|---|---|---|---|---|---|---|")
    from scipy.stats import poisson

    rng = np.random.default_rng(0)
    pairs = {
        "10 categories, Dirichlet(1) pair": (rng.dirichlet(np.ones(10)), rng.dirichlet(np.ones(10))),
        "Poisson(3)‖Poisson(4) on 0..30": (poisson(3.0).pmf(np.arange(31)), poisson(4.0).pmf(np.arange(31))),
    }
    for name, (p, q) in pairs.items():
        p, q = p / p.sum(), q / q.sum()
        truth = float(kldiv.kl(p, q))
        for n in (200, 2000):
            for correction in ("miller-madow", "none"):
                values, errors, covered, refused = [], [], [], 0
                draw = np.random.default_rng(1)
                for _ in range(repeats):
                    a, b = draw.multinomial(n, p).astype(float), draw.multinomial(n, q).astype(float)
                    try:
                        e = plugin(a, b, correction=correction)
                    except ValueError:  # infinite plug-in value: refused with a pointer to a pseudo-count
                        refused += 1
                        continue
                    values.append(e.value)
                    errors.append(e.stderr)
                    covered.append(e.ci[0] <= truth <= e.ci[1])
                print(_row([f"{name} ({truth:.4f})", n, correction, f"{refused / repeats:.0%}", f"{np.mean(values):.4f}",
                            f"{np.std(values, ddof=1):.4f}", f"{np.mean(errors):.4f}", f"{np.mean(covered):.0%}"]))


def mc_coverage(repeats: int) -> None:
    print("\nMonte Carlo estimators from log-densities at samples of P, 95 % normal intervals (`mc`), "
          "N(0,1)‖N(1,1), truth 0.5:\n")
    print(_row(["estimator", "n", "mean", "sd over repeats", "mean stderr", "ci covers"]))
    print("|---|---|---|---|---|---|")
    p, q = D.Normal(0.0, 1.0), D.Normal(1.0, 1.0)
    truth = _truth(p, q)
    for n in (100, 1000):
        for estimator in ("k1", "k2", "k3"):
            rng = np.random.default_rng(2)
            values, errors, covered = [], [], []
            for _ in range(repeats):
                x = torch.from_numpy(rng.normal(size=n))
                e = mc(p.log_prob(x).numpy(), q.log_prob(x).numpy(), estimator=estimator)
                values.append(e.value)
                errors.append(e.stderr)
                covered.append(e.ci[0] <= truth <= e.ci[1])
            print(_row([estimator, n, f"{np.mean(values):.4f}", f"{np.std(values, ddof=1):.4f}",
                        f"{np.mean(errors):.4f}", f"{np.mean(covered):.0%}"]))


def _gaussian_js(distance: float) -> float:
    from scipy import integrate, stats

    p, q = stats.norm(0, 1).pdf, stats.norm(distance, 1).pdf

    def integrand(z: float) -> float:
        m = (p(z) + q(z)) / 2
        return 0.5 * (p(z) * math.log(p(z) / m) + q(z) * math.log(q(z) / m))

    return integrate.quad(integrand, -30, 30 + distance, epsabs=1e-13, limit=200)[0]


def variational_table(repeats: int) -> None:
    print("\nVariational lower bounds (`variational(x, y, bound=...)`, defaults: 2×64 critic, 1000 steps, half held "
          "out), Gaussians |μ| = 1 apart, n = m = 4000:\n")
    print(_row(["bound", "d", "truth (nats)", "mean bound", "sd over repeats", "mean stderr",
                "bound ≤ truth + 2 stderr", "ci covers truth", "seconds per call"]))
    print("|---|---|---|---|---|---|---|---|---|")
    for d in (1, 5):
        p, q = _mvn(0.0, 1.0, d), _shift(d)
        for bound in ("dv", "nwj", "js"):
            truth = _gaussian_js(1.0) if bound == "js" else _truth(p, q)
            rng = np.random.default_rng(3)
            values, errors, below, covered, seconds = [], [], [], [], []
            for r in range(repeats):
                x, y = _draw(p, 4000, rng), _draw(q, 4000, rng)
                start = time.perf_counter()
                e = variational(x, y, bound=bound, seed=r)
                seconds.append(time.perf_counter() - start)
                values.append(e.value)
                errors.append(e.stderr)
                below.append(e.value <= truth + 2 * e.stderr)
                covered.append(e.ci[0] <= truth <= e.ci[1])
            print(_row([bound, d, f"{truth:.4f}", f"{np.mean(values):.4f}", f"{np.std(values, ddof=1):.4f}",
                        f"{np.mean(errors):.4f}", f"{np.mean(below):.0%}", f"{np.mean(covered):.0%}",
                        f"{np.mean(seconds):.1f}"]), flush=True)


def _scipy_recipe(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """The k-NN estimate as a user writes it with SciPy (default leaf size, all cores)."""
    from scipy.spatial import cKDTree

    n, d = x.shape
    rho = cKDTree(x).query(x, k=k + 1, workers=-1)[0][:, k]
    nu = cKDTree(y).query(x, k=k, workers=-1)[0][:, k - 1]
    return float(d * np.mean(np.log(nu / rho)) + math.log(len(y) / (n - 1)))


def speed() -> None:
    from kldiv.estimate._knn import knn_terms  # the queries alone: the floor (private on purpose: not an API)

    rng = np.random.default_rng(99)
    n, d, k = 100_000, 10, 5
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + math.sqrt(0.4 / d)  # KL = 0.2
    print(f"\nk-NN time, n = m = 10^5 in 10-D, k = {k} (truth 0.2 nats); wall seconds (CPU seconds of all threads):\n")
    print(_row(["what", "wall s", "CPU s", "value", "load average"]))
    print("|---|---|---|---|---|")

    def timed(label: str, call) -> None:
        start, cpu = time.perf_counter(), time.process_time()
        value = call()
        print(_row([label, f"{time.perf_counter() - start:.1f}", f"{time.process_time() - cpu:.1f}", value,
                    f"{os.getloadavg()[0]:.1f}"]), flush=True)

    timed("SciPy recipe (anchor): cKDTree default leaf size 16, workers=-1", lambda: f"{_scipy_recipe(x, y, k):.4f}")
    timed(f"kldiv queries alone (floor), leaf size {kldiv.get_config().knn_leaf_size}",
          lambda: f"{np.mean(knn_terms(x, y, k, False, -1)[0]) + math.log(n / (n - 1)):.4f}")
    timed("kldiv `knn(x, y, k=5)`: value, stderr, bias (20 fold estimates)", lambda: str(knn(x, y, k=k)))
    timed("kldiv `knn(x, y, k=5, ci=0.95)`", lambda: str(knn(x, y, k=k, ci=0.95)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no n = 10^4, no 10^5 timing")
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start; "
          f"numpy {np.__version__}, torch {torch.__version__}")
    print(f"command: python benchmarks/bench_estimate.py{' --quick' if args.quick else ''}\n")
    if args.quick:
        knn_coverage([1000], {1000: 20})
        plugin_coverage(100)
        mc_coverage(100)
        variational_table(2)
    else:
        knn_coverage([1000, 10_000], {1000: 100, 10_000: 20})
        plugin_coverage(500)
        mc_coverage(500)
        variational_table(5)
        speed()
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
