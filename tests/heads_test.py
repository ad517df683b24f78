"""Tests for keras_ecl.heads: distributions, KL, NLL, uncertainty and HeadLayer.

Every expected value is computed independently with numpy/scipy in float64.
No TensorFlow op runs at import time, so that other test modules can still
configure logical devices when they are imported.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_ecl import heads
from tests.reference import ATOL, RTOL, dkd, standardize
from tests.reference import categorical_kl as _categorical_kl
from tests.reference import laplace_kl as _laplace_kl
from tests.reference import log_softmax as _log_softmax
from tests.reference import normal_kl as _normal_kl
from tests.reference import softplus as _softplus
from tests.reference import split as _split

# Hand computations (float64).


def _raw_pair(batch=5, d=3, seed=0):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(size=(batch, 2 * d)).astype(np.float32)
    student = rng.normal(size=(batch, 2 * d)).astype(np.float32)
    return teacher, student


# KL divergence.


@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
def test_categorical_kl_matches_softmax_kl_times_temperature_squared(temperature):
    rng = np.random.default_rng(1)
    teacher = rng.normal(scale=3.0, size=(6, 5)).astype(np.float32)
    student = rng.normal(scale=3.0, size=(6, 5)).astype(np.float32)
    kl = heads.Categorical(temperature=temperature).kl_divergence(teacher, student)
    assert kl.shape == (6,)
    assert kl.dtype == tf.float32
    expected = _categorical_kl(teacher, student, temperature)
    np.testing.assert_allclose(kl.numpy(), expected, rtol=RTOL, atol=ATOL)


def test_categorical_kl_of_identical_logits_is_zero_and_otherwise_positive():
    logits = np.array([[1.0, -2.0, 0.5], [3.0, 3.0, 3.0]], np.float32)
    head = heads.Categorical(temperature=2.0)
    np.testing.assert_allclose(head.kl_divergence(logits, logits).numpy(), 0.0, atol=1e-6)
    other = logits[::-1].copy()
    assert np.all(head.kl_divergence(logits, other).numpy() > 0)


def test_normal_kl_matches_closed_form_multi_output():
    min_scale = 0.01
    teacher, student = _raw_pair(batch=5, d=3)
    kl = heads.Normal(min_scale=min_scale).kl_divergence(teacher, student)
    assert kl.shape == (5,)
    m1, s1 = _split(teacher, min_scale)
    m2, s2 = _split(student, min_scale)
    np.testing.assert_allclose(kl.numpy(), _normal_kl(m1, s1, m2, s2), rtol=RTOL, atol=ATOL)


def test_laplace_kl_matches_closed_form_multi_output():
    min_scale = 0.05
    teacher, student = _raw_pair(batch=5, d=3, seed=2)
    kl = heads.Laplace(min_scale=min_scale).kl_divergence(teacher, student)
    assert kl.shape == (5,)
    m1, b1 = _split(teacher, min_scale)
    m2, b2 = _split(student, min_scale)
    np.testing.assert_allclose(kl.numpy(), _laplace_kl(m1, b1, m2, b2), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "head_cls, closed_form",
    [(heads.Normal, _normal_kl), (heads.Laplace, _laplace_kl)],
)
def test_location_scale_kl_accepts_loc_raw_scale_tuples(head_cls, closed_form):
    min_scale = 0.02
    teacher, student = _raw_pair(batch=4, d=3, seed=3)
    head = head_cls(min_scale=min_scale)
    as_tuple = head.kl_divergence(
        (teacher[:, :3], teacher[:, 3:]), (student[:, :3], student[:, 3:])
    )
    m1, s1 = _split(teacher, min_scale)
    m2, s2 = _split(student, min_scale)
    np.testing.assert_allclose(as_tuple.numpy(), closed_form(m1, s1, m2, s2), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        as_tuple.numpy(), head.kl_divergence(teacher, student).numpy(), rtol=1e-6
    )


def test_min_scale_enters_the_scale():
    # With raw_scale very negative, softplus(raw) ~ 0 and the scale is min_scale.
    raw = np.array([[0.0, -50.0]], np.float32)
    for min_scale in (0.1, 2.0):
        dist = heads.Normal(min_scale=min_scale).distribution(raw)
        np.testing.assert_allclose(dist.stddev().numpy(), [[min_scale]], rtol=1e-6)


@pytest.mark.parametrize(
    "head",
    [heads.Categorical(temperature=2.5), heads.Normal(min_scale=0.01), heads.Laplace()],
    ids=["categorical", "normal", "laplace"],
)
def test_kl_under_xla_matches_eager(head):
    teacher, student = _raw_pair(batch=8, d=3, seed=4)
    eager = head.kl_divergence(teacher, student)
    compiled = tf.function(head.kl_divergence, jit_compile=True)
    xla = compiled(tf.constant(teacher), tf.constant(student))
    assert xla.shape == eager.shape == (8,)
    np.testing.assert_allclose(xla.numpy(), eager.numpy(), rtol=1e-5, atol=1e-6)


# Negative log-likelihood.


def test_categorical_nll_sparse_labels_ignores_temperature():
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=2.0, size=(6, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3, 0])
    expected = -_log_softmax(logits)[np.arange(6), labels]
    for temperature in (1.0, 5.0):
        nll = heads.Categorical(temperature=temperature).negative_log_likelihood(labels, logits)
        np.testing.assert_allclose(nll.numpy(), expected, rtol=RTOL, atol=ATOL)
    # Float class indices of shape (batch,) are sparse labels as well.
    nll = heads.Categorical().negative_log_likelihood(labels.astype(np.float32), logits)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=RTOL, atol=ATOL)


def test_categorical_nll_integer_labels_with_trailing_axis():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([[2], [0], [1], [1], [2]], np.int64)
    nll = heads.Categorical(temperature=3.0).negative_log_likelihood(labels, logits)
    expected = -_log_softmax(logits)[np.arange(5), labels[:, 0]]
    np.testing.assert_allclose(nll.numpy(), expected, rtol=RTOL, atol=ATOL)


def test_categorical_nll_float_sparse_labels_with_trailing_axis():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    labels = np.array([[2], [0], [1], [1], [2]], np.float32)
    nll = heads.Categorical().negative_log_likelihood(labels, logits)
    expected = -_log_softmax(logits)[np.arange(5), labels[:, 0].astype(int)]
    np.testing.assert_allclose(nll.numpy(), expected, rtol=RTOL, atol=ATOL)


def test_categorical_nll_one_hot_and_soft_labels():
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(4, 3)).astype(np.float32)
    labels = np.array([1, 0, 2, 2])
    one_hot = np.eye(3, dtype=np.float32)[labels]
    head = heads.Categorical(temperature=2.0)
    nll = head.negative_log_likelihood(one_hot, logits)
    np.testing.assert_allclose(
        nll.numpy(), -_log_softmax(logits)[np.arange(4), labels], rtol=RTOL, atol=ATOL
    )
    soft = rng.dirichlet(np.ones(3), size=4).astype(np.float32)
    nll = head.negative_log_likelihood(soft, logits)
    expected = -np.sum(soft * _log_softmax(logits), axis=-1)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "head_cls, scipy_dist", [(heads.Normal, stats.norm), (heads.Laplace, stats.laplace)]
)
def test_location_scale_nll_matches_scipy_multi_output(head_cls, scipy_dist):
    min_scale = 0.03
    rng = np.random.default_rng(8)
    raw = rng.normal(size=(6, 6)).astype(np.float32)
    y = rng.normal(scale=2.0, size=(6, 3)).astype(np.float32)
    loc, scale = _split(raw, min_scale)
    expected = -scipy_dist.logpdf(y, loc=loc, scale=scale).sum(axis=-1)
    head = head_cls(min_scale=min_scale)
    nll = head.negative_log_likelihood(y, raw)
    assert nll.shape == (6,)
    np.testing.assert_allclose(nll.numpy(), expected, rtol=RTOL, atol=ATOL)
    nll_tuple = head.negative_log_likelihood(y, (raw[:, :3], raw[:, 3:]))
    np.testing.assert_allclose(nll_tuple.numpy(), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "head_cls, scipy_dist", [(heads.Normal, stats.norm), (heads.Laplace, stats.laplace)]
)
def test_location_scale_nll_single_output_with_flat_targets(head_cls, scipy_dist):
    rng = np.random.default_rng(9)
    raw = rng.normal(size=(7, 2)).astype(np.float32)
    y = rng.normal(size=(7,)).astype(np.float32)
    loc, scale = _split(raw, 1e-3)
    expected = -scipy_dist.logpdf(y, loc=loc[:, 0], scale=scale[:, 0])
    head = head_cls()
    flat = head.negative_log_likelihood(y, raw)
    assert flat.shape == (7,)
    np.testing.assert_allclose(flat.numpy(), expected, rtol=RTOL, atol=ATOL)
    column = head.negative_log_likelihood(y[:, None], raw)
    assert column.shape == (7,)
    np.testing.assert_allclose(column.numpy(), expected, rtol=RTOL, atol=ATOL)


# Uncertainty.


def test_categorical_uncertainty_entropy_and_variance():
    rng = np.random.default_rng(10)
    logits = rng.normal(scale=2.0, size=(5, 4)).astype(np.float32)
    probs = np.exp(_log_softmax(logits))
    head = heads.Categorical()
    np.testing.assert_allclose(
        head.uncertainty(logits, "entropy").numpy(),
        stats.entropy(probs, axis=-1),
        rtol=RTOL,
        atol=ATOL,
    )
    np.testing.assert_allclose(
        head.uncertainty(logits).numpy(), stats.entropy(probs, axis=-1), rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        head.uncertainty(logits, "variance").numpy(),
        1.0 - np.sum(probs**2, axis=-1),
        rtol=RTOL,
        atol=ATOL,
    )


def test_categorical_uncertainty_extremes():
    uniform = np.zeros((1, 4), np.float32)
    confident = np.array([[100.0, 0.0, 0.0, 0.0]], np.float32)
    head = heads.Categorical()
    np.testing.assert_allclose(head.uncertainty(uniform).numpy(), [np.log(4.0)], rtol=1e-6)
    np.testing.assert_allclose(head.uncertainty(uniform, "variance").numpy(), [0.75], rtol=1e-6)
    np.testing.assert_allclose(head.uncertainty(confident, "variance").numpy(), [0.0], atol=1e-6)


@pytest.mark.parametrize(
    "head_cls, scipy_dist", [(heads.Normal, stats.norm), (heads.Laplace, stats.laplace)]
)
def test_location_scale_uncertainty_sums_over_outputs(head_cls, scipy_dist):
    min_scale = 0.01
    rng = np.random.default_rng(11)
    raw = rng.normal(size=(4, 6)).astype(np.float32)
    loc, scale = _split(raw, min_scale)
    head = head_cls(min_scale=min_scale)
    entropy = head.uncertainty(raw, "entropy")
    variance = head.uncertainty(raw, "variance")
    assert entropy.shape == variance.shape == (4,)
    np.testing.assert_allclose(
        entropy.numpy(),
        scipy_dist.entropy(loc=loc, scale=scale).sum(axis=-1),
        rtol=RTOL,
        atol=ATOL,
    )
    np.testing.assert_allclose(
        variance.numpy(), scipy_dist.var(loc=loc, scale=scale).sum(axis=-1), rtol=RTOL, atol=ATOL
    )


def test_location_scale_uncertainty_hand_values():
    # scale = softplus(0) + min_scale = log(2) + min_scale.
    raw = np.array([[1.0, 0.0]], np.float32)
    s = np.log(2.0) + 1e-3
    np.testing.assert_allclose(
        heads.Normal().uncertainty(raw).numpy(), [0.5 * np.log(2 * np.pi * np.e * s**2)], rtol=1e-6
    )
    np.testing.assert_allclose(
        heads.Normal().uncertainty(raw, "variance").numpy(), [s**2], rtol=1e-6
    )
    np.testing.assert_allclose(
        heads.Laplace().uncertainty(raw).numpy(), [1.0 + np.log(2 * s)], rtol=1e-6
    )
    np.testing.assert_allclose(
        heads.Laplace().uncertainty(raw, "variance").numpy(), [2 * s**2], rtol=1e-6
    )


@pytest.mark.parametrize("head", [heads.Categorical(), heads.Normal(), heads.Laplace()])
def test_uncertainty_rejects_unknown_measure(head):
    with pytest.raises(ValueError, match=r"measure.*'stddev'"):
        head.uncertainty(np.zeros((2, 4), np.float32), "stddev")


# Serving outputs.


def test_categorical_serving_outputs():
    logits = np.array([[1.0, 2.0, 0.0], [-1.0, 0.0, 4.0]], np.float32)
    out = heads.Categorical(temperature=3.0).serving_outputs(logits)
    assert set(out) == {"logits", "probabilities"}
    np.testing.assert_allclose(out["logits"].numpy(), logits)
    # Serving probabilities are the plain softmax, not the softened target.
    np.testing.assert_allclose(
        out["probabilities"].numpy(), np.exp(_log_softmax(logits)), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("head_cls", [heads.Normal, heads.Laplace])
def test_location_scale_serving_outputs(head_cls):
    raw = np.array([[0.5, -1.0, 0.0, 2.0], [3.0, 1.0, -3.0, 0.5]], np.float32)
    out = head_cls(min_scale=0.1).serving_outputs(raw)
    assert set(out) == {"loc", "scale"}
    np.testing.assert_allclose(out["loc"].numpy(), raw[:, :2])
    np.testing.assert_allclose(out["scale"].numpy(), _softplus(raw[:, 2:]) + 0.1, rtol=1e-6)
    assert np.all(out["scale"].numpy() > 0.1)


# Event size and output units.


# Parametrizations are looped inside a test where each case is pure Python: the
# per-test teardown (`clear_session`) dominates the runtime otherwise.


def test_event_size_accepts_valid_shapes():
    cases = [
        (heads.Categorical(), (None, 10), 10),
        (heads.Categorical(), (32, 7, 4), 4),
        (heads.Normal(), (None, 6), 3),
        (heads.Normal(), (8, 2), 1),
        (heads.Laplace(), [None, 4], 2),
        (heads.Normal(), ((None, 3), (None, 3)), 3),
        (heads.Laplace(), [[None, 2], [None, 2]], 2),
    ]
    for head, shape, expected in cases:
        assert head.event_size(shape) == expected, (head, shape)


def test_event_size_rejects_bad_shapes():
    cases = [
        (heads.Normal(), (None, 5), "teacher"),
        (heads.Laplace(), (4, 3), "student"),
        (heads.Categorical(), (10,), "teacher"),
        (heads.Categorical(), (None, None), "student"),
        (heads.Normal(), (None,), "student"),
    ]
    for head, shape, role in cases:
        with pytest.raises(ValueError) as info:
            head.event_size(shape, role=role)
        message = str(info.value)
        assert f"{role}'s" in message
        assert type(head).__name__ in message
        assert f"shape={tuple(shape)}" in message


def test_event_size_rejects_mismatched_loc_scale_pair():
    with pytest.raises(ValueError) as info:
        heads.Normal().event_size(((None, 3), (None, 2)), role="teacher")
    message = str(info.value)
    assert "teacher's" in message
    assert "(None, 3)" in message and "(None, 2)" in message


@pytest.mark.parametrize("head", [heads.Categorical(), heads.Normal()])
def test_event_size_rejects_empty_last_axis(head):
    with pytest.raises(ValueError):
        head.event_size((None, 0), role="student")


def test_output_units():
    assert heads.Categorical().output_units(10) == 10
    assert heads.Normal().output_units(3) == 6
    assert heads.Laplace().output_units(1) == 2


# Argument validation.


def test_categorical_rejects_bad_temperature():
    for value in [0, 0.0, -1.5, "2.0", None, True, [1.0]]:
        with pytest.raises(ValueError) as info:
            heads.Categorical(temperature=value)
        assert "`temperature` must be" in str(info.value)
        assert f"temperature={value!r}" in str(info.value)


@pytest.mark.parametrize("head_cls", [heads.Normal, heads.Laplace])
def test_location_scale_rejects_bad_min_scale(head_cls):
    for value in [0, -0.01, "0.1", None]:
        with pytest.raises(ValueError) as info:
            head_cls(min_scale=value)
        assert "`min_scale` must be" in str(info.value)
        assert f"min_scale={value!r}" in str(info.value)


def test_valid_numbers_are_accepted_and_stored_as_float():
    head = heads.Categorical(temperature=3)
    assert head.temperature == 3.0 and isinstance(head.temperature, float)
    assert heads.Categorical(temperature=np.float64(0.5)).temperature == 0.5
    assert heads.Laplace(min_scale=2).min_scale == 2.0


def test_get_config_and_repr():
    assert heads.Categorical(temperature=2.0).get_config() == {
        "temperature": 2.0,
        "standardize": False,
    }
    assert heads.Normal(min_scale=0.5).get_config() == {"min_scale": 0.5}
    assert repr(heads.Laplace(min_scale=0.25)) == "Laplace(min_scale=0.25)"
    clone = heads.Normal.from_config(heads.Normal(min_scale=0.2).get_config())
    assert isinstance(clone, heads.Normal) and clone.min_scale == 0.2


# heads.get.


def test_get_by_name():
    for name, cls in [
        ("categorical", heads.Categorical),
        ("Normal", heads.Normal),
        ("LAPLACE", heads.Laplace),
    ]:
        head = heads.get(name)
        assert type(head) is cls
        assert head.get_config() == cls().get_config()


def test_get_returns_instances_unchanged():
    head = heads.Normal(min_scale=0.3)
    assert heads.get(head) is head


@pytest.mark.parametrize(
    "head",
    [heads.Categorical(temperature=3.5), heads.Normal(min_scale=0.05), heads.Laplace(0.2)],
    ids=["categorical", "normal", "laplace"],
)
def test_get_from_serialized_dict(head):
    config = keras.saving.serialize_keras_object(head)
    assert isinstance(config, dict)
    restored = heads.get(config)
    assert type(restored) is type(head)
    assert restored is not head
    assert restored.get_config() == head.get_config()


def test_get_rejects_bad_identifiers():
    for identifier in ["gaussian", "", 3, None, heads.Normal]:
        with pytest.raises(ValueError) as info:
            heads.get(identifier)
        message = str(info.value)
        assert f"head={identifier!r}" in message
        assert "categorical" in message and "normal" in message and "laplace" in message


# HeadLayer.


@pytest.mark.parametrize(
    "head, event_size, units",
    [("categorical", 5, 5), (heads.Normal(), 3, 6), ("laplace", 2, 4), ("normal", 1, 2)],
)
def test_head_layer_output_units(head, event_size, units):
    layer = heads.HeadLayer(head, event_size=event_size)
    out = layer(np.ones((4, 8), np.float32))
    assert tuple(out.shape) == (4, units)
    assert tuple(layer.compute_output_shape((None, 8))) == (None, units)
    assert layer.head.event_size(out.shape) == event_size


@pytest.mark.parametrize("head_cls", [heads.Normal, heads.Laplace])
@pytest.mark.parametrize("initial_scale", [1.0, 0.3, 5.0])
def test_head_layer_initial_scale(head_cls, initial_scale):
    min_scale = 0.01
    layer = heads.HeadLayer(
        head_cls(min_scale=min_scale), event_size=3, initial_scale=initial_scale
    )
    out = layer(np.zeros((2, 4), np.float32))
    bias = keras.ops.convert_to_numpy(layer.dense.bias)
    np.testing.assert_allclose(bias[:3], 0.0)
    # softplus^-1(initial_scale - min_scale), by hand.
    np.testing.assert_allclose(
        bias[3:], np.log(np.expm1(initial_scale - min_scale)), rtol=1e-5, atol=1e-6
    )
    serving = layer.head.serving_outputs(out)
    np.testing.assert_allclose(serving["scale"].numpy(), initial_scale, rtol=1e-5)
    np.testing.assert_allclose(serving["loc"].numpy(), 0.0, atol=1e-7)


def test_head_layer_categorical_bias_starts_at_zero():
    layer = heads.HeadLayer("categorical", event_size=4, initial_scale=3.0)
    out = layer(np.zeros((2, 6), np.float32))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.dense.bias), 0.0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), 0.0)


def test_head_layer_get_config_from_config():
    layer = heads.HeadLayer(
        heads.Laplace(min_scale=0.02), event_size=2, initial_scale=0.4, name="my_head"
    )
    config = layer.get_config()
    assert config["event_size"] == 2
    assert config["initial_scale"] == 0.4
    clone = heads.HeadLayer.from_config(config)
    assert isinstance(clone.head, heads.Laplace)
    assert clone.head.min_scale == 0.02
    assert clone.event_size == 2
    assert clone.initial_scale == 0.4
    assert clone.name == "my_head"


def _small_model(head, event_size, initial_scale=1.0):
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            heads.HeadLayer(head, event_size=event_size, initial_scale=initial_scale),
        ]
    )


@pytest.mark.parametrize(
    "head, event_size",
    [(heads.Normal(min_scale=0.05), 2), (heads.Categorical(temperature=2.0), 3)],
    ids=["normal", "categorical"],
)
def test_head_layer_keras_file_round_trip(tmp_path, head, event_size):
    model = _small_model(head, event_size, initial_scale=0.3)
    # Move the weights away from their initial values.
    for var in model.weights:
        var.assign(var + np.random.default_rng(0).normal(size=var.shape).astype(np.float32))
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    before = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    after = restored.predict(x, verbose=0)
    np.testing.assert_array_equal(after, before)
    layer = restored.layers[-1]
    assert isinstance(layer, heads.HeadLayer)
    assert type(layer.head) is type(head)
    assert layer.head.get_config() == head.get_config()
    assert layer.event_size == event_size
    assert layer.initial_scale == 0.3


def _trainable_count(model):
    return len(model.trainable_variables), len(model.non_trainable_variables)


def test_frozen_head_layer_stays_frozen_after_serialization(tmp_path):
    model = _small_model(heads.Normal(), 2)
    model.trainable = False
    assert _trainable_count(model) == (0, 4)

    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert _trainable_count(restored) == (0, 4)
    head_layer = restored.layers[-1]
    assert head_layer.trainable is False
    assert head_layer.dense.trainable is False
    assert head_layer.trainable_variables == []

    path = tmp_path / "frozen.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert _trainable_count(loaded) == (0, 4)


def test_frozen_head_layer_from_config_has_no_trainable_weights():
    layer = heads.HeadLayer("laplace", event_size=2, trainable=False)
    clone = heads.HeadLayer.from_config(layer.get_config())
    clone.build((None, 3))
    assert clone.trainable is False
    assert clone.dense.trainable is False
    assert clone.trainable_weights == []
    assert len(clone.non_trainable_weights) == 2
    # Unfreezing the head unfreezes its dense sub-layer too.
    clone.trainable = True
    assert len(clone.trainable_weights) == 2


def test_head_layer_rejects_bad_event_size():
    for event_size in [0, -1, 1.5, "3", True, None]:
        with pytest.raises(ValueError) as info:
            heads.HeadLayer("normal", event_size=event_size)
        assert f"event_size={event_size!r}" in str(info.value)


def test_head_layer_rejects_bad_initial_scale():
    for initial_scale in [0, -1.0]:
        with pytest.raises(ValueError) as info:
            heads.HeadLayer("normal", event_size=1, initial_scale=initial_scale)
        assert f"initial_scale={initial_scale!r}" in str(info.value)


def test_head_layer_rejects_bad_head():
    with pytest.raises(ValueError, match="head="):
        heads.HeadLayer("poisson", event_size=1)


# Rules a head carries for the Distiller's eager checks and for HeadLayer.


def test_categorical_targets_are_class_ids_or_one_hot_rows():
    head = heads.Categorical()
    head.check_targets(np.array([0, 2, 1]), 3, 2, "y")
    head.check_targets(np.array([[0], [2]]), 3, 2, "y")
    head.check_targets(np.eye(3)[[0, 2]], 3, 2, "y")
    with pytest.raises(ValueError, match=r"integer class ids in \[0, 3\).*labels in \[0, 3\]"):
        head.check_targets(np.array([0, 3]), 3, 2, "y")
    with pytest.raises(ValueError, match="integer class ids"):
        head.check_targets(np.array([0.5, 1.0]), 3, 2, "y")
    with pytest.raises(ValueError, match="One-hot labels of `y` must have 3 columns"):
        head.check_targets(np.eye(4), 3, 2, "y")


def test_location_scale_targets_have_a_column_per_output():
    head = heads.Normal()
    head.check_targets(np.zeros(5), 1, 2, "y")  # one output, no column axis
    head.check_targets(np.zeros((5, 2)), 2, 2, "y")
    with pytest.raises(ValueError, match=r"must have 2 column\(s\).*shape=\(5, 3\)"):
        head.check_targets(np.zeros((5, 3)), 2, 2, "y")


@pytest.mark.parametrize(
    "labels, dtype, outputs_shape, expected",
    [
        ([0, 2, 3, -1], "int32", (4, 3), [False, False, True, True]),
        ([[0], [3]], "int64", (2, 3), [False, True]),  # ids with a trailing axis
        ([0, 255], "uint8", (2, 300), [False, False]),  # 300 classes: no uint8 wrap-around
        ([0.0, 2.5, np.nan, 2.0, 3.0], "float32", (5, 3), [False, True, True, False, True]),
        ([[0, 1, 0], [0, -1, 1]], "int32", (2, 3), [False, True]),  # one-hot rows
        ([[0.2, 0.8, 0.0], [np.inf, 0.0, 0.0]], "float32", (2, 3), [False, True]),
    ],
)
def test_categorical_invalid_targets_by_hand(labels, dtype, outputs_shape, expected):
    # The in-step twin of check_targets, for batches fit could not peek at.
    flags = heads.Categorical().invalid_targets(
        tf.constant(np.array(labels, dtype=dtype)), tf.zeros(outputs_shape)
    )
    assert flags.dtype == tf.bool
    assert flags.numpy().tolist() == expected


@pytest.mark.parametrize(
    "targets, expected",
    [
        (np.array([[0.5, 1.0], [np.nan, 0.0], [0.0, -np.inf]], "float32"), [False, True, True]),
        (np.array([3, -7, 0], "int32"), [False, False, False]),  # integers are always finite
    ],
)
def test_location_scale_invalid_targets_are_the_non_finite_rows(targets, expected):
    flags = heads.Normal().invalid_targets(tf.constant(targets), tf.zeros((3, 4)))
    assert flags.numpy().tolist() == expected


def test_a_new_classification_head_inherits_the_class_rules():
    class SharpCategorical(heads.Categorical):
        """A new head as a contributor would write it: no rule switches to edit."""

    head = SharpCategorical()
    assert head.event_name == "classes"
    with pytest.raises(ValueError, match="integer class ids"):
        head.check_targets(np.array([5]), 3, 2, "y")
    assert head.initial_bias(3, 1.0) is None


def test_initial_bias_starts_the_scale_at_initial_scale():
    head = heads.Laplace(min_scale=0.01)
    bias = head.initial_bias(2, initial_scale=0.5)
    np.testing.assert_allclose(bias[:2], 0.0)
    _, scale = head.split(bias[None])
    np.testing.assert_allclose(scale, 0.5, rtol=1e-5)
    assert heads.Categorical().initial_bias(3, 1.0) is None


# Logit standardisation and decoupled KD (the peers' losses).


def test_standardized_logits_by_hand():
    # mean 0, unbiased std sqrt((4 + 0 + 4) / 2) = 2: z-scores [1, 0, -1], then / T.
    head = heads.Categorical(temperature=2.0, standardize=True)
    np.testing.assert_allclose(head.scaled_logits([[2.0, 0.0, -2.0]]), [[0.5, 0.0, -0.5]], 1e-6)
    # The same relations at another range and offset give the same distribution.
    np.testing.assert_allclose(
        head.scaled_logits([[10.0, 5.0, 0.0]]), head.scaled_logits([[2.0, 0.0, -2.0]]), atol=1e-6
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_standardized_kl_matches_the_reference(temperature):
    rng = np.random.default_rng(1)
    teacher, student = 3 * rng.normal(size=(2, 16, 10))
    head = heads.Categorical(temperature, standardize=True)
    expected = _categorical_kl(standardize(teacher), standardize(student), temperature)
    np.testing.assert_allclose(head.kl_divergence(teacher, student), expected, rtol=1e-4, atol=1e-6)
    # The supervised NLL still uses the raw logits.
    y = rng.integers(0, 10, 16)
    raw = heads.Categorical().negative_log_likelihood(y, student)
    np.testing.assert_allclose(head.negative_log_likelihood(y, student), raw, rtol=1e-6)


@pytest.mark.parametrize(
    "temperature, alpha, beta", [(4.0, 1.0, 8.0), (1.0, 1.0, 1.0), (2.0, 0.0, 2.0)]
)
def test_decoupled_kd_matches_mdistiller(temperature, alpha, beta):
    rng = np.random.default_rng(2)
    teacher, student = 3 * rng.normal(size=(2, 32, 10))
    head = heads.DecoupledCategorical(temperature, alpha, beta)
    np.testing.assert_allclose(
        head.kl_divergence(teacher, student),
        dkd(teacher, student, temperature, alpha, beta),
        rtol=1e-4,
        atol=1e-6,
    )


def test_decoupled_kd_parts_add_up_to_the_kl():
    # KL = TCKD + (1 - p_target) * NCKD (Zhao et al., eq. 5): with one class a
    # near-certain target, (1 - p_target) is small and DKD(1, 1) exceeds KL.
    rng = np.random.default_rng(3)
    teacher, student = rng.normal(size=(2, 8, 5))
    tckd = heads.DecoupledCategorical(1.0, 1.0, 0.0).kl_divergence(teacher, student)
    nckd = heads.DecoupledCategorical(1.0, 0.0, 1.0).kl_divergence(teacher, student)
    probs = np.exp(_log_softmax(teacher))
    p_target = probs.max(-1)
    kl = _categorical_kl(teacher, student, 1.0)
    np.testing.assert_allclose(tckd + (1 - p_target) * nckd, kl, rtol=1e-4, atol=1e-6)
    assert np.all(
        np.asarray(heads.DecoupledCategorical(1.0, 1.0, 1.0).kl_divergence(teacher, teacher)) < 1e-6
    )


def test_peer_head_arguments_are_checked():
    with pytest.raises(ValueError, match="`standardize` must be True or False"):
        heads.Categorical(standardize="yes")
    with pytest.raises(ValueError, match="`beta` must be a finite number >= 0. Received: beta=-8"):
        heads.DecoupledCategorical(beta=-8)
