"""The GAN app: its true JS against independent integrals, its generator's density, and a short run that learns."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from oracles import gaussian_js  # noqa: E402

from kldiv.apps import gan  # noqa: E402


def generator_at(means, scales):
    model = gan.MixtureGenerator(len(means), 1.0)
    with torch.no_grad():
        model.means.copy_(torch.tensor(means, dtype=torch.float32))
        model.log_scales.copy_(torch.tensor(np.log(scales), dtype=torch.float32))
    return model


@pytest.mark.parametrize("distance", [0.5, 1.0, 3.0])
def test_true_js_of_two_gaussians_equals_one_dimensional_quadrature(distance):
    config = gan.GANConfig(modes=1, radius=0.0, spread=0.5)
    model = generator_at([[distance * 0.5, 0.0]], [[0.5, 0.5]])
    value, mass_data, mass_generator = gan.true_js(config, model)
    assert value == pytest.approx(gaussian_js(distance), rel=1e-4, abs=1e-7)
    assert mass_data == pytest.approx(1, abs=1e-6) and mass_generator == pytest.approx(1, abs=1e-6)


def test_true_js_of_the_ring_against_monte_carlo_with_exact_densities():
    config = gan.GANConfig()
    rng = np.random.default_rng(0)
    model = generator_at(rng.normal(size=(16, 2)), np.exp(rng.normal(-1, 0.3, size=(16, 2))))
    value, _, _ = gan.true_js(config, model)
    means, scales = gan.ring(config)
    stream = torch.Generator().manual_seed(1)
    with torch.no_grad():
        x = gan.sample_data(config, 200_000, stream).double().numpy()
        g = model(200_000, stream).double().numpy()
    gm, gs = model.means.detach().double().numpy(), model.log_scales.detach().double().exp().numpy()
    terms = []
    for points in (x, g):
        lp, lg = gan.mixture_log_density(points, means, scales), gan.mixture_log_density(points, gm, gs)
        lm = np.logaddexp(lp, lg) - math.log(2)
        terms.append((lp if points is x else lg) - lm)
    estimate = 0.5 * (terms[0].mean() + terms[1].mean())
    stderr = 0.5 * math.sqrt(terms[0].var() / len(x) + terms[1].var() / len(g))
    assert abs(value - estimate) < 4 * stderr


def test_mixture_log_density_matches_scipy():
    from scipy import stats
    from scipy.special import logsumexp

    rng = np.random.default_rng(2)
    means, scales, points = rng.normal(size=(3, 2)), np.exp(rng.normal(size=(3, 2))), rng.normal(size=(50, 2))
    expected = logsumexp(
        [stats.multivariate_normal(m, np.diag(s**2)).logpdf(points) for m, s in zip(means, scales, strict=True)],
        axis=0,
    ) - math.log(3)
    assert gan.mixture_log_density(points, means, scales) == pytest.approx(expected, rel=1e-12)


def test_a_short_run_brings_the_generator_closer_and_writes_the_run_folder(tmp_path):
    config = gan.GANConfig(steps=300, eval_every=100, eval_samples=1000, fresh_critic=True, fresh_every=300)
    threads = torch.get_num_threads()
    summary = gan.train(config, tmp_path, progress=False)
    assert torch.get_num_threads() == threads
    import json

    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [row["step"] for row in rows] == [0, 100, 200, 300]
    assert rows[-1]["true_js"] < rows[0]["true_js"] - 0.05
    assert all(0 <= row["true_js"] <= math.log(2) for row in rows)
    assert rows[-1]["fresh_critic_js"] < rows[-1]["true_js"] + 4 * rows[-1]["fresh_critic_stderr"]  # a lower bound
    assert summary["true_js"] == rows[-1]["true_js"]
    for name in ("js.png", "samples.png", "metrics.csv", "config.json", "model.safetensors", "state.json"):
        assert (tmp_path / name).stat().st_size > 0
    assert json.loads((tmp_path / "state.json").read_text())["status"] == "finished"
