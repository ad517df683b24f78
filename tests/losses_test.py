"""Tests for keras_ecl.losses: DistributionKL, NegativeLogLikelihood and
uncertainty_weights. Expected values are computed with numpy/scipy."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_ecl import heads, losses
from tests import testing
from tests.reference import ATOL, RTOL, laplace_kl, normal_kl, split
from tests.reference import categorical_kl as _categorical_kl
from tests.reference import log_softmax as _log_softmax


def _normal_kl(teacher, student, min_scale):
    return normal_kl(*split(teacher, min_scale), *split(student, min_scale))


def _laplace_kl(teacher, student, min_scale):
    return laplace_kl(*split(teacher, min_scale), *split(student, min_scale))


def _data(batch=6, units=4, seed=0):
    rng = np.random.default_rng(seed)
    teacher = rng.normal(scale=1.5, size=(batch, units)).astype(np.float32)
    student = rng.normal(scale=1.5, size=(batch, units)).astype(np.float32)
    return teacher, student


# Values, reduction and sample_weight.


def test_distribution_kl_is_mean_of_per_example_kl():
    teacher, student = _data(units=6)
    cases = [
        (heads.Normal(min_scale=0.01), _normal_kl(teacher, student, 0.01)),
        (heads.Laplace(min_scale=0.1), _laplace_kl(teacher, student, 0.1)),
        (heads.Categorical(temperature=3.0), _categorical_kl(teacher, student, 3.0)),
    ]
    for head, per_example in cases:
        value = losses.DistributionKL(head)(teacher, student)
        assert value.shape == ()
        np.testing.assert_allclose(float(value), per_example.mean(), rtol=RTOL, atol=ATOL)


def test_distribution_kl_defaults_to_categorical():
    teacher, student = _data()
    loss = losses.DistributionKL()
    assert isinstance(loss.head, heads.Categorical)
    assert loss.name == "distribution_kl"
    np.testing.assert_allclose(
        float(loss(teacher, student)),
        _categorical_kl(teacher, student, 1.0).mean(),
        rtol=RTOL,
        atol=ATOL,
    )


def test_distribution_kl_is_directional():
    # KL(teacher || student): swapping the arguments changes the value.
    teacher, student = _data(units=6, seed=1)
    kl = losses.DistributionKL(heads.Normal())
    forward = float(kl(teacher, student))
    np.testing.assert_allclose(forward, _normal_kl(teacher, student, 1e-3).mean(), rtol=RTOL)
    assert not np.isclose(forward, float(kl(student, teacher)), rtol=1e-3)


def test_negative_log_likelihood_location_scale_matches_scipy():
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(8, 4)).astype(np.float32)
    y = rng.normal(scale=2.0, size=(8, 2)).astype(np.float32)
    loc, scale = split(raw, 0.05)
    for head, dist in [(heads.Normal(0.05), stats.norm), (heads.Laplace(0.05), stats.laplace)]:
        expected = -dist.logpdf(y, loc=loc, scale=scale).sum(axis=-1).mean()
        value = losses.NegativeLogLikelihood(head)(y, raw)
        np.testing.assert_allclose(float(value), expected, rtol=RTOL, atol=ATOL)


def test_negative_log_likelihood_categorical_sparse_and_one_hot():
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=2.0, size=(7, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=7)
    expected = -_log_softmax(logits)[np.arange(7), labels].mean()
    loss = losses.NegativeLogLikelihood(heads.Categorical(temperature=4.0))
    assert loss.name == "negative_log_likelihood"
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=RTOL, atol=ATOL)
    one_hot = np.eye(5, dtype=np.float32)[labels]
    np.testing.assert_allclose(float(loss(one_hot, logits)), expected, rtol=RTOL, atol=ATOL)
    # The head name works as well.
    np.testing.assert_allclose(
        float(losses.NegativeLogLikelihood("categorical")(labels, logits)),
        expected,
        rtol=RTOL,
        atol=ATOL,
    )


def test_negative_log_likelihood_categorical_sparse_labels_with_trailing_axis():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(6, 3)).astype(np.float32)
    labels = rng.integers(0, 3, size=(6, 1))
    expected = -_log_softmax(logits)[np.arange(6), labels[:, 0]].mean()
    value = losses.NegativeLogLikelihood("categorical")(labels, logits)
    np.testing.assert_allclose(float(value), expected, rtol=RTOL, atol=ATOL)


def test_sample_weight_is_sum_of_weighted_losses_over_batch_size():
    teacher, student = _data(batch=5, units=6, seed=5)
    weights = np.array([0.0, 1.0, 2.5, 0.5, 3.0], np.float32)
    per_example = _normal_kl(teacher, student, 1e-3)
    kl = losses.DistributionKL(heads.Normal())
    value = float(kl(teacher, student, sample_weight=weights))
    np.testing.assert_allclose(value, np.sum(weights * per_example) / 5, rtol=RTOL, atol=ATOL)
    # Not the weighted mean (that would divide by sum(weights)).
    assert not np.isclose(value, np.sum(weights * per_example) / weights.sum(), rtol=1e-3)

    rng = np.random.default_rng(6)
    y = rng.normal(size=(5,)).astype(np.float32)
    raw = rng.normal(size=(5, 2)).astype(np.float32)
    loc, scale = split(raw, 1e-3)
    nll = -stats.laplace.logpdf(y, loc=loc[:, 0], scale=scale[:, 0])
    value = losses.NegativeLogLikelihood(heads.Laplace())(y, raw, sample_weight=weights)
    np.testing.assert_allclose(float(value), np.sum(weights * nll) / 5, rtol=RTOL, atol=ATOL)


def test_other_reductions():
    teacher, student = _data(units=6, seed=7)
    per_example = _laplace_kl(teacher, student, 1e-3)
    none = losses.DistributionKL(heads.Laplace(), reduction=None)(teacher, student)
    assert none.shape == (6,)
    np.testing.assert_allclose(none.numpy(), per_example, rtol=RTOL, atol=ATOL)
    total = losses.DistributionKL(heads.Laplace(), reduction="sum")(teacher, student)
    np.testing.assert_allclose(float(total), per_example.sum(), rtol=RTOL, atol=ATOL)


def test_losses_are_keras_losses():
    assert isinstance(losses.DistributionKL(), keras.losses.Loss)
    assert isinstance(losses.NegativeLogLikelihood(), keras.losses.Loss)
    with pytest.raises(ValueError, match="head="):
        losses.DistributionKL("student_t")


# tf.distribute.


def test_loss_is_divided_by_replicas_under_mirrored_strategy():
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices; TensorFlow was initialised too early")
    strategy = testing.two_replicas()  # the process' one: see its docstring
    assert strategy.num_replicas_in_sync == 2

    teacher, student = _data(batch=8, units=6, seed=8)
    halves = [slice(0, 4), slice(4, 8)]
    per_example = _normal_kl(teacher, student, 1e-3)

    def value_fn(ctx, array):
        return tf.constant(array[halves[ctx.replica_id_in_sync_group]])

    teacher_dist = strategy.experimental_distribute_values_from_function(
        lambda ctx: value_fn(ctx, teacher)
    )
    student_dist = strategy.experimental_distribute_values_from_function(
        lambda ctx: value_fn(ctx, student)
    )
    with strategy.scope():
        kl = losses.DistributionKL(heads.Normal())
        reference = keras.losses.MeanSquaredError()

    per_replica = strategy.run(kl, args=(teacher_dist, student_dist))
    values = [float(v) for v in strategy.experimental_local_results(per_replica)]
    for value, half in zip(values, halves, strict=True):
        np.testing.assert_allclose(value, per_example[half].mean() / 2, rtol=RTOL, atol=ATOL)
    # Summed over replicas, the global mean over the batch.
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
    np.testing.assert_allclose(float(total), per_example.mean(), rtol=RTOL, atol=ATOL)

    # Same scaling as a built-in keras.losses.Loss.
    mse = strategy.run(reference, args=(teacher_dist, student_dist))
    for value, half in zip(strategy.experimental_local_results(mse), halves, strict=True):
        expected = np.mean((teacher[half] - student[half]) ** 2) / 2
        np.testing.assert_allclose(float(value), expected, rtol=RTOL, atol=ATOL)

    # And for the negative log-likelihood, inside a tf.function.
    y = np.random.default_rng(9).normal(size=(8, 3)).astype(np.float32)
    y_dist = strategy.experimental_distribute_values_from_function(lambda ctx: value_fn(ctx, y))
    nll = losses.NegativeLogLikelihood(heads.Normal())
    per_replica = tf.function(lambda a, b: strategy.run(nll, args=(a, b)))(y_dist, student_dist)
    loc, scale = split(student, 1e-3)
    per_example_nll = -stats.norm.logpdf(y, loc=loc, scale=scale).sum(axis=-1)
    for value, half in zip(strategy.experimental_local_results(per_replica), halves, strict=True):
        np.testing.assert_allclose(
            float(value), per_example_nll[half].mean() / 2, rtol=RTOL, atol=ATOL
        )


# Serialization.


@pytest.mark.parametrize(
    "loss",
    [
        losses.DistributionKL(heads.Categorical(temperature=2.5), name="kd"),
        losses.DistributionKL(heads.Laplace(min_scale=0.2), reduction="sum"),
        losses.NegativeLogLikelihood(heads.Normal(min_scale=0.05)),
    ],
    ids=["kl_categorical", "kl_laplace", "nll_normal"],
)
def test_serialization_round_trip(loss):
    teacher, student = _data(units=4, seed=10)
    if isinstance(loss, losses.NegativeLogLikelihood):
        teacher = teacher[:, :2]  # targets for the 2 regression outputs
    expected = float(loss(teacher, student))
    for serialize, deserialize in [
        (keras.losses.serialize, keras.losses.deserialize),
        (keras.saving.serialize_keras_object, keras.saving.deserialize_keras_object),
    ]:
        config = serialize(loss)
        assert isinstance(config, dict)
        restored = deserialize(config)
        assert type(restored) is type(loss)
        assert restored is not loss
        assert type(restored.head) is type(loss.head)
        assert restored.head is not loss.head
        assert restored.head.get_config() == loss.head.get_config()
        assert restored.name == loss.name
        assert restored.reduction == loss.reduction
        np.testing.assert_allclose(float(restored(teacher, student)), expected, rtol=1e-6)


def test_get_config_from_config():
    loss = losses.NegativeLogLikelihood(heads.Laplace(min_scale=0.3), name="nll")
    config = loss.get_config()
    assert config["name"] == "nll"
    restored = losses.NegativeLogLikelihood.from_config(config)
    assert isinstance(restored.head, heads.Laplace)
    assert restored.head.min_scale == 0.3


# Behaviour in training.


def test_normal_nll_training_learns_heteroscedastic_scale():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(512, 1)).astype(np.float32)
    noise_std = 0.05 + 0.95 * (x[:, 0] + 1.0) / 2.0  # 0.05 at x=-1, 1.0 at x=1
    y = (0.5 * x[:, 0] + noise_std * rng.normal(size=512)).astype(np.float32)

    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(16, activation="tanh"),
            heads.HeadLayer("normal", event_size=1, initial_scale=0.5),
        ]
    )
    loss = losses.NegativeLogLikelihood(heads.Normal())
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss=loss)
    grid = np.array([[-0.9], [-0.5], [0.0], [0.5], [0.9]], np.float32)
    before = loss(y, model.predict(x, verbose=0))
    history = model.fit(x, y, batch_size=64, epochs=20, verbose=0)
    after = loss(y, model.predict(x, verbose=0))

    assert float(after) < float(before)
    assert history.history["loss"][-1] < history.history["loss"][0]
    scale = model.layers[-1].head.serving_outputs(model.predict(grid, verbose=0))["scale"]
    scale = scale.numpy()[:, 0]
    # The predicted scale grows with the noise and roughly tracks it.
    assert np.all(np.diff(scale) > 0), scale
    assert scale[-1] > 4 * scale[0], scale
    true_std = 0.05 + 0.95 * (grid[:, 0] + 1.0) / 2.0
    np.testing.assert_allclose(scale[2:], true_std[2:], rtol=0.5)


# uncertainty_weights.


def test_uncertainty_weights_entropy_categorical():
    teacher, _ = _data(batch=8, units=5, seed=11)
    probs = np.exp(_log_softmax(teacher))
    effective = np.exp(stats.entropy(probs, axis=-1))
    weights = losses.uncertainty_weights(heads.Categorical(), teacher)
    assert weights.shape == (8,)
    assert weights.dtype == tf.float32
    np.testing.assert_allclose(float(tf.reduce_mean(weights)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights.numpy(), effective / effective.mean(), rtol=RTOL)
    by_name = losses.uncertainty_weights("categorical", teacher)
    np.testing.assert_allclose(by_name.numpy(), weights.numpy())


def test_uncertainty_weights_variance_categorical():
    teacher, _ = _data(batch=8, units=5, seed=12)
    probs = np.exp(_log_softmax(teacher))
    variance = 1.0 - np.sum(probs**2, axis=-1)
    weights = losses.uncertainty_weights(heads.Categorical(), teacher, "variance")
    np.testing.assert_allclose(float(tf.reduce_mean(weights)), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weights.numpy(), variance / variance.mean(), rtol=RTOL)


def test_uncertainty_weights_location_scale():
    rng = np.random.default_rng(13)
    # Scales well below 1: the differential entropies are negative, yet the
    # entropy weights stay positive.
    raw = np.concatenate(
        [rng.normal(size=(6, 2)), rng.uniform(-6.0, -1.0, size=(6, 2))], axis=-1
    ).astype(np.float32)
    loc, scale = split(raw, 1e-3)
    for head, dist in [(heads.Normal(), stats.norm), (heads.Laplace(), stats.laplace)]:
        entropy = dist.entropy(loc=loc, scale=scale).sum(axis=-1)
        assert np.all(entropy < 0)
        weights = losses.uncertainty_weights(head, raw, "entropy").numpy()
        assert np.all(weights > 0)
        np.testing.assert_allclose(weights.mean(), 1.0, rtol=1e-6)
        np.testing.assert_allclose(weights, np.exp(entropy) / np.exp(entropy).mean(), rtol=1e-4)
        variance = dist.var(loc=loc, scale=scale).sum(axis=-1)
        weights = losses.uncertainty_weights(head, raw, "variance").numpy()
        np.testing.assert_allclose(weights, variance / variance.mean(), rtol=1e-4)


@pytest.mark.parametrize("measure", ["entropy", "variance"])
def test_uncertainty_weights_stop_gradient(measure):
    teacher = tf.Variable(_data(batch=4, units=6, seed=14)[0])
    for head in (heads.Categorical(), heads.Normal()):
        with tf.GradientTape(persistent=True) as tape:
            weights = losses.uncertainty_weights(head, teacher, measure)
            total = tf.reduce_sum(weights * tf.range(4, dtype=tf.float32))
            # Sanity: the uncertainty itself is differentiable.
            raw_uncertainty = tf.reduce_sum(head.uncertainty(teacher, measure))
        assert tape.gradient(total, teacher) is None
        assert tape.gradient(raw_uncertainty, teacher) is not None
        del tape


def test_uncertainty_weights_rejects_unknown_measure():
    teacher, _ = _data()
    for measure in ["std", "Entropy", None]:
        with pytest.raises(ValueError) as info:
            losses.uncertainty_weights(heads.Categorical(), teacher, measure)
        message = str(info.value)
        assert "`measure`" in message
        assert f"measure={measure!r}" in message
