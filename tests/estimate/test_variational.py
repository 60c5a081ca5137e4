"""Variational bounds: DV and NWJ against closed-form Gaussian KL, the JS bound against numerical integration."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from oracles import gaussian_js  # noqa: E402

from kldiv.distributions import kl as closed_form_kl  # noqa: E402
from kldiv.estimate import Estimate, variational  # noqa: E402


def normal_pair(n, d=1, distance=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) + distance / math.sqrt(d)


@pytest.mark.parametrize("bound", ["dv", "nwj"])
def test_kl_bounds_come_close_to_the_closed_form_from_below(bound):
    truth = float(closed_form_kl(torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(1.0, 1.0)))
    x, y = normal_pair(3000, seed=1)
    result = variational(x, y, bound=bound, steps=600)
    assert isinstance(result, Estimate) and result.n == 1500
    assert truth - 0.1 < result.value < truth + 3 * result.stderr
    assert result.ci[0] < result.value < result.ci[1]


def test_js_bound_matches_numerical_integration():
    truth = gaussian_js(1.0)
    x, y = normal_pair(3000, seed=2)
    result = variational(x, y, bound="js", steps=600)
    assert abs(result.value - truth) < 3 * result.stderr + 0.01
    assert 0 <= result.value <= math.log(2)


def test_js_bound_in_three_dimensions_stays_below_log_two_and_near_the_truth():
    truth = gaussian_js(2.0)
    x, y = normal_pair(3000, d=3, distance=2.0, seed=3)
    result = variational(x, y, bound="js", steps=600)
    assert truth - 0.05 < result.value < truth + 3 * result.stderr
    assert result.value < math.log(2)


def test_identical_distributions_give_a_bound_near_zero():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(2000, 2)), rng.normal(size=(2000, 2))
    for bound in ("dv", "js"):
        result = variational(x, y, bound=bound, steps=300)
        assert abs(result.value) < 3 * result.stderr + 0.01


def test_variational_is_deterministic_for_a_seed_and_varies_across_seeds():
    x, y = normal_pair(600, seed=5)
    first = variational(x, y, bound="nwj", steps=100, seed=7)
    assert variational(x, y, bound="nwj", steps=100, seed=7) == first
    assert variational(x, y, bound="nwj", steps=100, seed=8).value != first.value


def test_variational_leaves_torch_settings_alone_and_accepts_tensors():
    x, y = normal_pair(400, seed=6)
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    from_tensors = variational(torch.tensor(x), torch.tensor(y), steps=50)
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)
    assert from_tensors == variational(x, y, steps=50)


def test_variational_base_two_gives_bits():
    x, y = normal_pair(400, seed=7)
    nats, bits = variational(x, y, steps=50), variational(x, y, steps=50, base=2)
    assert bits.value == pytest.approx(nats.value / math.log(2)) and bits.stderr == pytest.approx(nats.stderr / math.log(2))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"bound": "kl"}, ValueError, "unknown bound 'kl'; choose one of 'dv', 'nwj', 'js'"),
        ({"holdout": 1.5}, ValueError, "holdout must be a fraction strictly between 0 and 1"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"learning_rate": -1.0}, ValueError, "learning_rate must be a positive number"),
        ({"ci": 2.0}, ValueError, "ci must be a confidence level"),
    ],
)
def test_variational_bad_arguments_are_one_line_errors(kwargs, error, message):
    x, y = normal_pair(100)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        variational(x, y, **kwargs)


def test_variational_bad_samples_are_named():
    x, y = normal_pair(100, d=2)
    with pytest.raises(ValueError, match=r"x has 2 dimension\(s\) per sample but y has 3"):
        variational(x, np.zeros((10, 3)))
    with pytest.raises(ValueError, match="y has 5 point"):
        variational(x, y[:5])
    x[3, 0] = np.nan
    with pytest.raises(ValueError, match="x row 3 contains NaN"):
        variational(x, y)
