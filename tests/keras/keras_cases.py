"""kldiv.keras on one Keras backend (KERAS_BACKEND, chosen before Keras is imported): run by test_keras.py in one
process per backend, since Keras picks its backend at import.

Oracles: float64 direct sums in NumPy and SciPy, keras.losses where their clipping does not bite, closed-form
gradients (softmax(student) - softmax(teacher) for KL from logits), kldiv.vae's NumPy definitions.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import special

keras = pytest.importorskip("keras")

import kldiv  # noqa: E402
from kldiv.keras import Distiller, GaussianKL, KLAnnealing, losses, metrics  # noqa: E402

BACKEND = keras.backend.backend()
rng = np.random.default_rng(1519)


def simplex(*shape, floor=0.0):
    x = rng.random(shape) + floor
    return (x / x.sum(-1, keepdims=True)).astype(np.float32)


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def reference(name, p, q, weight=0.5):
    """Per-row float64 divergences, SciPy's rel_entr / entr (0 log 0 = 0, +inf where q = 0 < p)."""
    p, q = p.astype(np.float64), q.astype(np.float64)
    if name == "kl":
        return special.rel_entr(p, q).sum(-1)
    if name == "reverse_kl":
        return special.rel_entr(q, p).sum(-1)
    if name == "js":
        m = weight * p + (1 - weight) * q
        return weight * special.rel_entr(p, m).sum(-1) + (1 - weight) * special.rel_entr(q, m).sum(-1)
    if name == "tvd":
        return 0.5 * np.abs(p - q).sum(-1)
    return special.rel_entr(p, q).sum(-1) + special.entr(p).sum(-1)  # H(P, Q) = KL + H(P)


def soften(x, temperature, logits):
    """The tempered distribution in float64: softmax(x / T) for logits, p^(1/T) renormalised for probabilities."""
    with np.errstate(divide="ignore"):
        z = x.astype(np.float64) if logits else np.log(x.astype(np.float64))
    return special.softmax(z / temperature, axis=-1)


LOSSES = {"kl": losses.KLDivergence, "reverse_kl": losses.ReverseKLDivergence, "js": losses.JensenShannon,
          "cross_entropy": losses.CrossEntropy}
METRICS = {"kl": metrics.KLDivergence, "reverse_kl": metrics.ReverseKLDivergence, "js": metrics.JensenShannon,
           "cross_entropy": metrics.CrossEntropy}


def value_and_grad(f, x):
    """f(x) (a scalar) and its gradient, by the backend's own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = f(x)
        return float(value), tape.gradient(value, x).numpy()
    if BACKEND == "jax":
        import jax

        value, grad = jax.value_and_grad(f)(jax.numpy.asarray(x))
        return float(value), np.asarray(grad)
    import torch

    x = torch.tensor(x, requires_grad=True)
    value = f(x)
    value.backward()
    return float(value.detach()), x.grad.numpy()


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_matches_the_float64_reference_with_every_reduction(name, from_logits, temperature):
    p = simplex(6, 5)
    if name != "reverse_kl":  # KL(Q‖P) is +inf where P has zeros: checked in the next test for KL
        p[0] = [0, 1, 0, 0, 0]  # a one-hot target
        p[1, 2] = 0.0
        p[1] /= p[1].sum()
    q = rng.normal(size=(6, 5)).astype(np.float32) if from_logits else simplex(6, 5)
    expected = reference(name, soften(p, temperature, False), soften(q, temperature, from_logits),
                         **({"weight": 0.3} if name == "js" else {}))
    options = {"weight": 0.3} if name == "js" else {}
    weights = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 3.0], np.float32)
    for reduction, want in (("none", expected), (None, expected), ("sum", expected.sum()),
                            ("sum_over_batch_size", expected.mean()),
                            ("weighted", (weights * expected).sum() / 6)):
        loss = LOSSES[name](from_logits=from_logits, temperature=temperature,
                            reduction="sum_over_batch_size" if reduction == "weighted" else reduction, **options)
        got = loss(p, q, sample_weight=weights) if reduction == "weighted" else loss(p, q)
        np.testing.assert_allclose(numpy(got), want, rtol=2e-5, atol=1e-6)


@settings(max_examples=12)
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 7]), st.sampled_from(sorted(LOSSES)))
def test_losses_are_exact_on_random_distributions_with_zeros(seed, outcomes, name):
    draw = np.random.default_rng(seed)
    p, q = draw.dirichlet(np.ones(outcomes), 3), draw.dirichlet(np.ones(outcomes), 3)
    p[draw.random((3, outcomes)) < 0.3] = 0.0  # exact zeros in P (at least one positive entry per row)
    p[np.arange(3), draw.integers(0, outcomes, 3)] += 0.5
    p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
    q = q.astype(np.float32)
    got = numpy(LOSSES[name](reduction=None)(p, q))
    np.testing.assert_allclose(got, reference(name, p, q), rtol=2e-5, atol=2e-6)


def test_kl_matches_keras_where_its_clipping_does_not_bite_and_is_exact_where_it_does():
    p, q = simplex(8, 6, floor=0.01), simplex(8, 6, floor=0.01)
    ours = numpy(losses.KLDivergence()(p, q))
    np.testing.assert_allclose(ours, numpy(keras.losses.KLDivergence()(p, q)), rtol=1e-5)
    np.testing.assert_allclose(ours, reference("kl", p, q).mean(), rtol=1e-5)
    one_hot = np.eye(3, dtype=np.float32)[[0]]
    q = np.array([[1e-9, 0.5, 0.5 - 1e-9]], np.float32)
    exact = -np.log(np.float64(q[0, 0]))  # KL(one-hot ‖ Q) = -log q_0 = 20.7
    np.testing.assert_allclose(float(numpy(losses.KLDivergence()(one_hot, q))), exact, rtol=1e-5)
    assert abs(float(numpy(keras.losses.KLDivergence()(one_hot, q))) - exact) > 4  # clipped at 1e-7: 16.1
    assert float(numpy(losses.KLDivergence(reduction="none")(one_hot, np.array([[0.0, 0.5, 0.5]], np.float32)))[0]) \
        == np.inf


def test_cross_entropy_from_logits_is_keras_categorical_crossentropy():
    labels, logits = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 9)], rng.normal(size=(9, 7)).astype(np.float32)
    ours = numpy(losses.CrossEntropy(from_logits=True)(labels, logits))
    np.testing.assert_allclose(ours, numpy(keras.losses.CategoricalCrossentropy(from_logits=True)(labels, logits)),
                               rtol=1e-5)


def test_gradients_are_the_closed_form_on_this_backend():
    p = simplex(4, 6)
    p[0, :3] = 0.0
    p[0] /= p[0].sum()
    logits = rng.normal(size=(4, 6)).astype(np.float32)
    loss = losses.KLDivergence(from_logits=True)
    value, grad = value_and_grad(lambda x: loss(p, x), logits)
    np.testing.assert_allclose(value, reference("kl", p, special.softmax(logits.astype(np.float64), -1)).mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(grad, (special.softmax(logits.astype(np.float64), -1) - p) / 4, atol=1e-6)
    teacher = rng.normal(size=(4, 6)).astype(np.float32)
    distill = losses.Distillation("kl", temperature=2.0)
    _, grad = value_and_grad(lambda x: distill(teacher, x), logits)
    # d/ds of T² KL(softmax(t/T) ‖ softmax(s/T)) averaged over the batch = T (softmax(s/T) - softmax(t/T)) / B
    expected = 2.0 * (special.softmax(logits / 2.0, -1) - special.softmax(teacher / 2.0, -1)) / 4
    np.testing.assert_allclose(grad, expected, atol=1e-6)


@pytest.mark.parametrize("divergence", ["kl", "reverse_kl", "js", "cross_entropy", "tvd"])
def test_distillation_loss_is_the_tempered_divergence_times_t_squared(divergence):
    teacher, student = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    loss = losses.Distillation(divergence, temperature=3.0, weight=0.4, reduction="none")
    expected = 9.0 * reference(divergence, soften(teacher, 3.0, True), soften(student, 3.0, True), weight=0.4)
    np.testing.assert_allclose(numpy(loss(teacher, student)), expected, rtol=2e-5, atol=1e-6)
    plain = losses.Distillation(divergence, temperature=3.0, scale_by_temperature_squared=False, weight=0.4,
                                reduction="none")
    np.testing.assert_allclose(numpy(plain(teacher, student)), expected / 9.0, rtol=2e-5, atol=1e-6)


def test_metrics_are_weighted_streaming_means():
    p1, q1, p2, q2 = simplex(4, 5), simplex(4, 5), simplex(3, 5), simplex(3, 5)
    w1, w2 = np.array([1, 2, 0, 1], np.float32), np.array([0.5, 1, 1], np.float32)
    for name, cls in METRICS.items():
        metric = cls()
        metric.update_state(p1, q1, sample_weight=w1)
        metric.update_state(p2, q2, sample_weight=w2)
        values = np.concatenate([reference(name, p1, q1), reference(name, p2, q2)])
        weights = np.concatenate([w1, w2])
        np.testing.assert_allclose(float(numpy(metric.result())), (values * weights).sum() / weights.sum(), rtol=1e-5)
        metric.reset_state()
        metric.update_state(p1, q1)
        np.testing.assert_allclose(float(numpy(metric.result())), reference(name, p1, q1).mean(), rtol=1e-5)
        clone = cls.from_config(metric.get_config())
        assert clone.get_config() == metric.get_config()


def test_configs_round_trip():
    for cls in LOSSES.values():
        loss = cls(from_logits=True, temperature=1.5, reduction="sum", name="mine")
        assert cls.from_config(loss.get_config()).get_config() == loss.get_config()
    loss = losses.Distillation("js", temperature=2.0, weight=0.2)
    assert losses.Distillation.from_config(loss.get_config()).get_config() == loss.get_config()
    layer = GaussianKL(beta=0.5, free_bits=0.1, free_bits_mode="sample")
    assert GaussianKL.from_config(layer.get_config()).get_config() == layer.get_config()


def _classifier(outputs=4):
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(outputs)])


def test_model_fit_trains_saves_and_reloads_with_every_loss_and_metric(tmp_path):
    x = rng.normal(size=(128, 3)).astype(np.float32)
    target = special.softmax(np.stack([x[:, 0], x[:, 1], -x[:, 0], x[:, 2]], -1) * 2, -1).astype(np.float32)
    for name, cls in LOSSES.items():
        keras.utils.set_random_seed(0)
        model = _classifier()
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=cls(from_logits=True),
                      metrics=[METRICS[name](from_logits=True), metrics.KLDivergence(from_logits=True, name="kl")])
        history = model.fit(x, target, epochs=6, batch_size=32, verbose=0).history
        assert history["loss"][-1] < 0.7 * history["loss"][0], (name, history["loss"])
        np.testing.assert_allclose(history[METRICS[name]().name][-1], history["loss"][-1], rtol=1e-5)
        before = model.evaluate(x, target, verbose=0, return_dict=True)
        predicted = model.predict(x, verbose=0)
        expected = reference(name, target, special.softmax(predicted.astype(np.float64), -1)).mean()
        np.testing.assert_allclose(before["loss"], expected, rtol=1e-4)
        path = tmp_path / f"{name}.keras"
        model.save(path)
        reloaded = keras.models.load_model(path)
        assert type(reloaded.loss) is cls and reloaded.loss.get_config() == model.loss.get_config()
        after = reloaded.evaluate(x, target, verbose=0, return_dict=True)
        np.testing.assert_allclose(after["loss"], before["loss"], rtol=1e-6)
        np.testing.assert_allclose(after["kl"], before["kl"], rtol=1e-6)


def test_validation_refuses_bad_targets_eagerly_and_probing_tensors_pass():
    with pytest.raises(ValueError, match=r"y_true does not sum to 1 .* the sum is 3"):
        losses.KLDivergence()(np.ones((2, 3), np.float32), simplex(2, 3))
    bad = simplex(2, 3)
    bad[1, 1] = -0.1
    with pytest.raises(ValueError, match=r"y_pred\[1, 1\] = -0.1 is negative"):
        losses.CrossEntropy()(simplex(2, 3), bad)
    with pytest.raises(ValueError, match="temperature must be a positive"):
        losses.KLDivergence(temperature=0)
    with pytest.raises(ValueError, match="unknown divergence"):
        losses.Distillation("kld")
    with pytest.raises(TypeError, match="from_logits must be True or False"):
        losses.KLDivergence(from_logits="yes")
    # Keras infers output shapes by running the loss on stand-in tensors (all ones on torch): never validated
    from keras.src.backend import compute_output_spec

    for loss in (losses.KLDivergence(), losses.CrossEntropy(from_logits=True), losses.Distillation()):
        spec = compute_output_spec(loss.call, keras.KerasTensor((None, 3)), keras.KerasTensor((None, 3)))
        assert tuple(spec.shape) == (None,)


def test_distiller_fit_brings_the_student_to_the_teacher_and_reloads(tmp_path):
    keras.utils.set_random_seed(1)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    labels = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 256)]
    teacher, student = _classifier(), _classifier()
    teacher_before = [w.copy() for w in teacher.get_weights()]

    def gap():
        t, s = teacher.predict(x, verbose=0).astype(np.float64), student.predict(x, verbose=0).astype(np.float64)
        return reference("kl", special.softmax(t / 2, -1), special.softmax(s / 2, -1)).mean()

    start = gap()
    distiller = Distiller(student, teacher, losses.Distillation("kl", temperature=2.0))
    distiller.compile(optimizer=keras.optimizers.Adam(0.02))
    history = distiller.fit(x, epochs=6, batch_size=32, verbose=0).history
    assert gap() < 0.3 * start and history["loss"][-1] < history["loss"][0]
    for before, after in zip(teacher_before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # the teacher is frozen
    # with a compiled hard-label loss the objective is the sum of both
    both = Distiller(student, teacher, losses.Distillation("kl", temperature=2.0), distillation_weight=0.5)
    both.compile(optimizer="adam", loss=losses.CrossEntropy(from_logits=True))
    value = both.evaluate(x, labels, verbose=0, return_dict=True)["loss"]
    s, t = student.predict(x, verbose=0).astype(np.float64), teacher.predict(x, verbose=0).astype(np.float64)
    expected = reference("cross_entropy", labels, special.softmax(s, -1)).mean() + 0.5 * 4 * reference(
        "kl", special.softmax(t / 2, -1), special.softmax(s / 2, -1)).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-4)
    path = tmp_path / "distiller.keras"
    both.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


def _vae(beta=0.0, free_bits=0.0, mode="batch"):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    mean, log_var = keras.layers.Dense(2)(hidden), keras.layers.Dense(2)(hidden)
    mean, log_var = GaussianKL(beta=beta, free_bits=free_bits, free_bits_mode=mode, name="kl")([mean, log_var])
    encoder = keras.Model(inputs, [mean, log_var])
    return keras.Model(inputs, keras.layers.Dense(6)(mean)), encoder


@pytest.mark.parametrize("mode", ["batch", "sample"])
def test_gaussian_kl_layer_adds_beta_times_the_free_bits_kl(mode):
    model, encoder = _vae(beta=0.7, free_bits=0.3, mode=mode)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    model(x)
    (added,) = model.losses
    mean, log_var = (numpy(t).astype(np.float64) for t in encoder(x))
    per_dim = 0.5 * (np.exp(log_var) - 1 - log_var + mean**2)  # Kingma and Welling, Appendix B
    floor = np.maximum(per_dim.mean(0), 0.3).sum() if mode == "batch" else np.maximum(per_dim, 0.3).sum(1).mean()
    np.testing.assert_allclose(float(numpy(added)), 0.7 * floor, rtol=1e-5)
    np.testing.assert_allclose(float(numpy(kldiv.vae.free_bits(per_dim, 0.3, mode=mode))), floor, rtol=1e-12)


def test_kl_annealing_sets_beta_from_the_schedule_during_fit_and_models_reload(tmp_path):
    model, _ = _vae()
    model.compile(optimizer="adam", loss="mse")
    x = rng.normal(size=(40, 6)).astype(np.float32)
    schedule = kldiv.vae.LinearWarmup(8)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(numpy(self.model.get_layer("kl").beta)))

    annealing = KLAnnealing(schedule)
    history = model.fit(x, x, epochs=2, batch_size=10, verbose=0, callbacks=[annealing, Record()]).history
    np.testing.assert_allclose(seen, [schedule(step) for step in range(8)], rtol=1e-7)
    assert history["beta"] == [schedule(3), schedule(7)]
    path = tmp_path / "vae.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.get_layer("kl"), GaussianKL)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="no kldiv.keras.GaussianKL layer"):
        plain = _classifier()
        plain.compile(optimizer="adam", loss="mse")
        plain.fit(x[:, :3], x[:, :4], epochs=1, verbose=0, callbacks=[KLAnnealing(schedule)])


@pytest.mark.skipif(not hasattr(keras, "distillation"), reason="keras.distillation is in Keras 3.12 and later")
def test_distillation_loss_plugs_into_keras_logits_distillation():
    teacher, student = rng.normal(size=(6, 5)).astype(np.float32), rng.normal(size=(6, 5)).astype(np.float32)
    keras_side = keras.distillation.LogitsDistillation(temperature=2.0, loss=losses.Distillation("kl"))
    value = float(numpy(keras_side.compute_loss(teacher, student)))  # Keras divides by T; ours then has T = 1
    expected = reference("kl", soften(teacher, 2.0, True), soften(student, 2.0, True)).mean()
    np.testing.assert_allclose(value, expected, rtol=1e-5)
