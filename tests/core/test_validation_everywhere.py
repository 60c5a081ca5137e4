"""One policy for numeric arguments in every package (kldiv._validate): a bool is never a number, a NumPy scalar is.

Each case is a call taking the value of one numeric argument. Passing ``True`` (or ``numpy.True_``) must raise a
one-line TypeError that names the argument and says a bool is not accepted; passing a NumPy scalar must give
exactly what the equal Python number gives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

import kldiv
import kldiv.vae as kvae
from kldiv.distributions import kl as distribution_kl
from kldiv.estimate import Estimate, knn, mc, plugin
from kldiv.nn import DistillationLoss, FusedLinearDistillationLoss
from kldiv.nn.functional import distillation_loss

P, Q = np.array([0.2, 0.3, 0.5]), np.array([0.4, 0.4, 0.2])
g = torch.Generator().manual_seed(0)
S, T = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
LABELS = torch.zeros(2, 3, dtype=torch.long)
N, H, V = 5, 4, 8
HIDDEN, WEIGHT = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g)
TEACHER_HIDDEN, TEACHER_WEIGHT = torch.randn(N, H, generator=g), torch.randn(V, H, generator=g)
FUSED_LABELS = torch.randint(0, V, (N,), generator=g)
KL_TERMS = np.array([[0.1, 3.0], [0.3, 1.0]])
MEAN = np.random.default_rng(0).normal(size=(16, 2))
LOG_VAR = np.random.default_rng(1).normal(size=(16, 2)) * 0.1
X = np.random.default_rng(2).normal(size=(40, 1))
Y = np.random.default_rng(3).normal(size=(40, 1)) + 0.5
LOG_P, LOG_Q = np.array([-1.0, -1.2, -0.9, -1.1]), np.array([-1.3, -1.0, -1.4, -0.8])


def _fused(**options: Any) -> torch.Tensor:
    loss = FusedLinearDistillationLoss(**options)
    return loss(HIDDEN, WEIGHT, TEACHER_HIDDEN, TEACHER_WEIGHT, FUSED_LABELS)


# (argument, call taking its value, a valid Python value, the equal NumPy scalar)
CASES = [
    # core
    ("base", lambda v: kldiv.kl(P, Q, base=v), 2.0, np.float64(2.0)),
    ("base", lambda v: kldiv.kl(P, Q, base=v), 2, np.int64(2)),
    ("weight", lambda v: kldiv.js(P, Q, weight=v), 0.5, np.float64(0.5)),
    ("alpha", lambda v: kldiv.skew_kl(P, Q, alpha=v), 0.5, np.float64(0.5)),
    ("alpha", lambda v: kldiv.renyi(P, Q, alpha=v), 2, np.int64(2)),
    ("axis", lambda v: kldiv.kl(P, Q, axis=v), 0, np.int64(0)),
    # kldiv.nn
    ("temperature", lambda v: DistillationLoss(temperature=v)(S, T), 2.0, np.float64(2.0)),
    ("beta", lambda v: DistillationLoss("js", beta=v)(S, T), 0.5, np.float64(0.5)),
    ("alpha", lambda v: DistillationLoss("skew_kl", alpha=v)(S, T), 0.5, np.float64(0.5)),
    ("ignore_index", lambda v: DistillationLoss(ignore_index=v)(S, T, LABELS), 3, np.int64(3)),
    ("vocab_size", lambda v: DistillationLoss(vocab_size=v)(S, T), 3, np.int64(3)),
    ("num_items_in_batch", lambda v: DistillationLoss()(S, T, LABELS, num_items_in_batch=v), 3, np.int64(3)),
    ("num_items_in_batch", lambda v: distillation_loss(S, T, LABELS, num_items_in_batch=v), 2.5, np.float64(2.5)),
    ("temperature", lambda v: _fused(temperature=v), 2.0, np.float64(2.0)),
    ("hard_label_weight", lambda v: _fused(hard_label_weight=v), 0.5, np.float64(0.5)),
    # kldiv.vae
    ("beta", lambda v: kvae.beta_kl(KL_TERMS, v), 0.5, np.float64(0.5)),
    ("capacity", lambda v: kvae.capacity_kl(KL_TERMS, v), 2.0, np.float64(2.0)),
    ("beta", lambda v: kvae.capacity_kl(KL_TERMS, 2.0, beta=v), 3, np.int64(3)),
    ("threshold", lambda v: kvae.free_bits(KL_TERMS, v), 0.5, np.float64(0.5)),
    ("threshold", lambda v: kvae.active_units(MEAN, threshold=v), 0.5, np.float64(0.5)),
    ("samples", lambda v: kvae.mutual_information(MEAN, LOG_VAR, samples=v), 2, np.int64(2)),
    ("seed", lambda v: kvae.mutual_information(MEAN, LOG_VAR, seed=v), 3, np.int64(3)),
    ("value", lambda v: kvae.ConstantSchedule(v)(0), 0.5, np.float64(0.5)),
    ("step", lambda v: kvae.LinearWarmup(10)(v), 3, np.int64(3)),
    ("warmup_steps", lambda v: kvae.LinearWarmup(v)(3), 10, np.int64(10)),
    ("delay", lambda v: kvae.LinearWarmup(10, delay=v)(5), 2, np.int64(2)),
    ("stop", lambda v: kvae.LinearWarmup(10, stop=v)(5), 4.0, np.float64(4.0)),
    ("total_steps", lambda v: kvae.CyclicalSchedule(v)(30), 100, np.int64(100)),
    ("n_cycles", lambda v: kvae.CyclicalSchedule(100, n_cycles=v)(30), 2, np.int64(2)),
    ("ratio", lambda v: kvae.CyclicalSchedule(100, ratio=v)(10), 0.5, np.float64(0.5)),
    # kldiv.estimate
    ("k", lambda v: knn(X, Y, k=v), 3, np.int64(3)),
    ("ci", lambda v: knn(X, Y, ci=v, resamples=5, seed=0), 0.9, np.float64(0.9)),
    ("resamples", lambda v: knn(X, Y, ci=0.9, resamples=v, seed=0), 5, np.int64(5)),
    ("seed", lambda v: knn(X, Y, ci=0.9, resamples=5, seed=v), 1, np.int64(1)),
    ("workers", lambda v: knn(X, Y, workers=v), 1, np.int64(1)),
    ("base", lambda v: knn(X, Y, base=v), 2.0, np.float64(2.0)),
    ("correction", lambda v: plugin([3, 0, 1], [1, 2, 2], correction=v), 0.5, np.float64(0.5)),
    ("ci", lambda v: plugin([3, 1, 1], [1, 2, 2], ci=v), 0.9, np.float64(0.9)),
    ("ci", lambda v: mc(LOG_P, LOG_Q, ci=v), 0.5, np.float32(0.5)),
    ("base", lambda v: mc(LOG_P, LOG_Q, base=v), 2, np.int64(2)),
    # kldiv.distributions
    ("samples", lambda v: distribution_kl(stats.t(3), stats.norm(), samples=v, seed=0), 100, np.int64(100)),
    ("seed", lambda v: distribution_kl(stats.t(3), stats.norm(), samples=100, seed=v), 1, np.int64(1)),
]
IDS = [f"{c[0]}-{i}" for i, c in enumerate(CASES)]


def _numbers(result: Any) -> np.ndarray:
    if isinstance(result, Estimate):
        return np.array([float(result), result.stderr, *(result.ci or ())])
    if isinstance(result, torch.Tensor):
        return result.detach().double().numpy()
    return np.asarray(result, dtype=np.float64)


@pytest.mark.parametrize("flag", [True, False, np.True_], ids=["True", "False", "numpy.True_"])
@pytest.mark.parametrize(("name", "call", "python", "numpy"), CASES, ids=IDS)
def test_a_bool_is_refused_as_a_number_with_a_one_line_type_error_naming_the_argument(name, call, python, numpy, flag):
    with pytest.raises(TypeError, match=rf"^{name} must be .*got {flag!r}; a bool is not accepted as a number") as info:
        call(flag)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "call", "python", "numpy"), CASES, ids=IDS)
def test_a_numpy_scalar_is_accepted_and_gives_what_the_python_number_gives(name, call, python, numpy):
    np.testing.assert_array_equal(_numbers(call(numpy)), _numbers(call(python)))


# Where two packages disagreed, the strict rule now holds everywhere.


@pytest.mark.parametrize(
    "call",
    [
        lambda: kvae.beta_kl(KL_TERMS, "2"),  # was read with float("2")
        lambda: kvae.beta_kl(KL_TERMS, np.array(2.0)),  # a 0-d array is not a number either
        lambda: kvae.CyclicalSchedule(100, ratio="0.5"),
        lambda: kvae.LinearWarmup(10, start="0"),
        lambda: kvae.LinearWarmup(2.5),  # was a ValueError
        lambda: kvae.mutual_information(MEAN, LOG_VAR, samples=2.0),  # was a ValueError
        lambda: knn(X, Y, ci=0.9, resamples=5.0),  # was a ValueError
        lambda: distillation_loss(S, T, LABELS, num_items_in_batch="4"),  # was a ValueError
        lambda: distillation_loss(S, T, LABELS, num_items_in_batch=torch.tensor(True)),
        lambda: distribution_kl(stats.t(3), stats.norm(), samples=10.5),  # was a ValueError
    ],
)
def test_a_value_of_the_wrong_type_is_a_type_error_in_every_package(call):
    with pytest.raises(TypeError, match="must be"):
        call()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: kvae.LinearWarmup(-3), "warmup_steps must be an int >= 0, got -3"),
        (lambda: kvae.mutual_information(MEAN, LOG_VAR, samples=0), "samples must be an int >= 1, got 0"),
        (lambda: knn(X, Y, ci=0.9, resamples=np.int64(1)), "resamples must be an integer >= 2"),
        (lambda: kldiv.js(P, Q, weight=np.float64(1.5)), r"weight must lie in \[0, 1\]"),
        (lambda: DistillationLoss(temperature=np.float32(0.0)), "temperature must be a positive finite number"),
    ],
)
def test_a_number_of_the_right_type_but_out_of_range_is_a_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_long_value_is_shown_by_its_type_so_the_message_stays_on_one_line():
    with pytest.raises(TypeError, match="temperature must be a positive number .*got a Tensor") as info:
        DistillationLoss(temperature=torch.ones(20, 20))
    assert "\n" not in str(info.value)
