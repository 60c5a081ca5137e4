"""TensorFlow tensors in the core API: values and dtypes, gradients under GradientTape, tf.function graphs, errors.

Run by test_tensorflow.py in a process of its own: TensorFlow must not be loaded in the suite's process, where
importing triton after it (torch.compile does) aborts on LLVM's duplicate options.

Oracles: SciPy and float64 direct sums for values, TensorFlow's own autodiff of the direct formula (strictly positive
inputs) and kldiv.grad on NumPy for gradients, the NumPy path for bit-for-bit agreement.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from scipy import special

from tests.core.strategies import pairs

tf = pytest.importorskip("tensorflow")

import kldiv  # noqa: E402

rng = np.random.default_rng(15)
PAIRED = {"kl": {}, "cross_entropy": {}, "js": {"weight": 0.3}, "skew_kl": {"alpha": 0.2}, "tvd": {}, "hellinger": {},
          "renyi": {"alpha": 2.0}}


def simplex(*shape, zeros=False):
    x = rng.random(shape)
    if zeros:
        x[..., 0] = 0.0
    return x / x.sum(-1, keepdims=True)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", sorted(PAIRED))
def test_every_measure_on_tf_tensors_is_a_tf_tensor_equal_to_the_numpy_value(name, from_logits):
    p, q = (rng.normal(size=(4, 6)), rng.normal(size=(4, 6))) if from_logits else (simplex(4, 6, zeros=True),
                                                                                 simplex(4, 6))
    f = getattr(kldiv, name)
    value = f(tf.constant(p), tf.constant(q), from_logits=from_logits, **PAIRED[name])
    assert tf.is_tensor(value) and value.dtype == tf.float64 and value.shape == (4,)
    np.testing.assert_array_equal(value.numpy(), f(p, q, from_logits=from_logits, **PAIRED[name]))
    grads = getattr(kldiv.grad, name)(tf.constant(p), tf.constant(q), from_logits=from_logits, **PAIRED[name])
    expected = getattr(kldiv.grad, name)(p, q, from_logits=from_logits, **PAIRED[name])
    for g, e in zip(grads, expected, strict=True):
        assert tf.is_tensor(g)
        np.testing.assert_array_equal(g.numpy(), e)


def test_entropy_on_tf_matches_scipy():
    p = simplex(3, 5, zeros=True)
    np.testing.assert_allclose(kldiv.entropy(tf.constant(p)).numpy(), special.entr(p).sum(-1), rtol=1e-14)


@settings(max_examples=25)
@given(pairs(zeros=True))
def test_kl_on_tf_matches_scipy_rel_entr_with_exact_zeros(pq):
    p, q = pq
    value = kldiv.kl(tf.constant(p), tf.constant(q)).numpy()
    np.testing.assert_allclose(value, special.rel_entr(p, q).sum(), rtol=1e-12, atol=1e-15)


def _direct(name, p, q):
    """The stated formulas in TensorFlow ops, for TensorFlow's own autodiff (strictly positive inputs only)."""
    if name == "kl":
        return tf.reduce_sum(p * tf.math.log(p / q), -1)
    if name == "cross_entropy":
        return -tf.reduce_sum(p * tf.math.log(q), -1)
    m = 0.3 * p + 0.7 * q  # js with weight 0.3
    return 0.3 * tf.reduce_sum(p * tf.math.log(p / m), -1) + 0.7 * tf.reduce_sum(q * tf.math.log(q / m), -1)


@pytest.mark.parametrize("name", ["kl", "cross_entropy", "js"])
def test_gradient_tape_gives_tensorflow_autodiff_of_the_formula(name):
    p, q = tf.constant(simplex(3, 5)), tf.constant(simplex(3, 5))
    upstream = tf.constant([0.5, -1.0, 2.0], tf.float64)
    f = getattr(kldiv, name)
    options = {"weight": 0.3} if name == "js" else {}
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([p, q])
        ours = tf.reduce_sum(upstream * f(p, q, **options))
        theirs = tf.reduce_sum(upstream * _direct(name, p, q))
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-13)
    for a, b in zip(tape.gradient(ours, [p, q]), tape.gradient(theirs, [p, q]), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_gradient_tape_at_zeros_and_with_logits_is_kldiv_grad_never_nan():
    p = np.array([[0.0, 0.25, 0.75], [0.5, 0.5, 0.0]])
    q = np.array([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    tp, tq = tf.constant(p), tf.constant(q)
    with tf.GradientTape() as tape:
        tape.watch([tp, tq])
        value = tf.reduce_sum(kldiv.kl(tp, tq))
    gp, gq = tape.gradient(value, [tp, tq])
    ep, eq = kldiv.grad.kl(p, q)
    np.testing.assert_array_equal(gp.numpy(), ep)
    np.testing.assert_array_equal(gq.numpy(), eq)
    assert not np.isnan(gq.numpy()).any() and gq.numpy()[0, 0] == 0.0  # dKL/dq = 0 where p = 0
    x, y = tf.constant(rng.normal(size=(2, 7))), tf.Variable(rng.normal(size=(2, 7)))  # a Variable is watched
    with tf.GradientTape() as tape:
        value = tf.reduce_sum(kldiv.kl(x, y, from_logits=True) * tf.constant([1.0, 3.0], tf.float64))
    g = tape.gradient(value, y)
    softmax = special.softmax
    expected = np.array([1.0, 3.0])[:, None] * (softmax(y.numpy(), -1) - softmax(x.numpy(), -1))  # closed form
    np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12, atol=1e-15)


def test_grad_module_with_upstream_and_broadcasting_sums_over_broadcast_axes():
    p, q = simplex(4, 5), simplex(5)
    upstream = np.array([1.0, 2.0, 0.5, -1.0])
    gp, gq = kldiv.grad.kl(tf.constant(p), tf.constant(q), upstream=tf.constant(upstream))
    assert gp.shape == (4, 5) and gq.shape == (5,)
    np.testing.assert_allclose(gq.numpy(), (upstream[:, None] * -p / q).sum(0), rtol=1e-13)  # d/dq = -p/q
    np.testing.assert_allclose(gp.numpy(), upstream[:, None] * (np.log(p / q) + 1), rtol=1e-13)


def test_tf_function_with_unknown_batch_gives_eager_values_and_gradients():
    spec = tf.TensorSpec((None, 6), tf.float32)

    @tf.function(input_signature=[spec, spec])
    def step(x, y):
        with tf.GradientTape() as tape:
            tape.watch(y)
            value = kldiv.js(x, y, from_logits=True)
            total = tf.reduce_sum(value)
        assert value.shape.as_list() == [None]  # the static batch shape survives the NumPy call
        return value, tape.gradient(total, y), kldiv.grad.js(x, y, from_logits=True)[1]

    x, y = rng.normal(size=(5, 6)).astype(np.float32), rng.normal(size=(5, 6)).astype(np.float32)
    value, g, g2 = step(tf.constant(x), tf.constant(y))
    np.testing.assert_array_equal(value.numpy(), kldiv.js(x, y, from_logits=True))
    np.testing.assert_array_equal(g.numpy(), kldiv.grad.js(x, y, from_logits=True)[1])
    np.testing.assert_array_equal(g2.numpy(), g.numpy())


def test_validation_is_skipped_inside_tf_function_and_applied_eagerly():
    bad = tf.constant([0.5, 0.7])
    with pytest.raises(ValueError, match="does not sum to 1"):
        kldiv.kl(bad, tf.constant([0.5, 0.5]))
    value = tf.function(lambda a, b: kldiv.kl(a, b))(bad, tf.constant([0.5, 0.5]))
    expected = 0.5 * np.log(0.5 / 0.5) + 0.7 * np.log(0.7 / 0.5)  # as under jax.jit: the formula, unchecked
    np.testing.assert_allclose(value.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("dtype, out", [("float16", "float16"), ("float32", "float32"), ("bfloat16", "bfloat16"),
                                        ("int32", "float32")])
def test_result_dtype_follows_the_inputs(dtype, out):
    p = tf.constant([1, 0, 0], dtype=dtype)
    q = tf.constant([1, 0, 0], dtype=dtype) if dtype == "int32" else tf.constant([0.25, 0.25, 0.5], dtype=dtype)
    value = kldiv.kl(p, q)
    assert value.dtype.name == out
    expected = 0.0 if dtype == "int32" else np.log(4.0)
    np.testing.assert_allclose(float(value), expected, rtol=1e-2)
    with tf.GradientTape() as tape:
        tape.watch(q)
        v = kldiv.cross_entropy(p, q)
    if dtype != "int32":
        assert tape.gradient(v, q).dtype == q.dtype


def test_lists_beside_a_tensor_take_its_dtype():
    value = kldiv.kl([0.5, 0.5], tf.constant([0.25, 0.75], tf.float32))
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), 0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75), rtol=1e-6)


def test_unsupported_uses_are_one_line_errors():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="different array libraries"):
        kldiv.kl(tf.constant([0.5, 0.5]), torch.tensor([0.5, 0.5]))
    with pytest.raises(RuntimeError, match="XLA cannot compile"):
        tf.function(lambda a: kldiv.kl(a, a), jit_compile=True)(tf.constant([0.5, 0.5]))
    with pytest.raises(TypeError, match="pass x.numpy"):
        kldiv.normalize(tf.constant([1.0, 2.0]))
    with pytest.raises(TypeError, match="pass x.numpy"):
        kldiv.pairwise.kl(tf.constant([[0.5, 0.5]]), tf.constant([[0.5, 0.5]]))
    with pytest.raises(TypeError, match="not a real number type"):
        kldiv.kl(tf.constant(["a", "b"]), tf.constant([0.5, 0.5]))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        tf.function(lambda a: kldiv.kl(a, a, axis=2))(tf.constant([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="different numbers of outcomes"):
        tf.function(lambda a, b: kldiv.kl(a, b))(tf.constant([[0.5, 0.5]]), tf.constant([[0.2, 0.3, 0.5]]))


def test_gaussian_kl_and_free_bits_on_tf_equal_numpy_and_differentiate():
    mean, log_var = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    tm, tv = tf.constant(mean), tf.constant(log_var)
    with tf.GradientTape() as tape:
        tape.watch(tm)
        per_dim = kldiv.vae.gaussian_kl(tm, tv, reduction="none")
        term = kldiv.vae.free_bits(per_dim, 0.2)
    closed = 0.5 * (np.exp(log_var) - 1 - log_var + mean**2)  # Kingma and Welling, Appendix B
    np.testing.assert_allclose(per_dim.numpy(), closed, rtol=1e-12)
    np.testing.assert_allclose(term.numpy(), np.maximum(closed.mean(0), 0.2).sum(), rtol=1e-12)
    kept = closed.mean(0) > 0.2  # d/dμ of the clamped batch mean: μ / B where the group is above the floor
    np.testing.assert_allclose(tape.gradient(term, tm).numpy(), mean / 4 * kept, rtol=1e-12)
