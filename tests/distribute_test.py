"""The Distiller under tf.distribute.MirroredStrategy on two logical CPUs."""

import functools
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl

pytestmark = pytest.mark.skipif(
    len(tf.config.list_logical_devices("CPU")) < 2, reason="needs two logical CPUs"
)


def make_data(n=128):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")


def mlp(units, outputs=3):
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(units, activation="relu"),
            keras.layers.Dense(outputs),
        ]
    )


def train(strategy, x, y, units=3, **kwargs):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        distiller = keras_ecl.Distiller(mlp(4, units), mlp(16, units), **kwargs)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    return history.history, distiller.student.get_weights()


def one_device():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


@functools.cache
def two_replicas():
    # One strategy per process: separate MirroredStrategy objects reuse
    # collective instance keys, and models of other shapes then collide
    # ("Shape mismatch in the collective instance").
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def head_case(head):
    """Data and output units for a head: 3 classes, or 2 regression outputs."""
    x, y = make_data()
    if head == "categorical":
        return x, y, 3
    return x, np.sin(3 * x[:, :2]).astype("float32"), 4


# Draws that do not depend on the seed, so one device and two replicas see the
# same synthetic inputs and must agree to float tolerance.
DETERMINISTIC_SAMPLERS = {
    "identity": lambda: keras_ecl.samplers.Identity(),
    "from_callable": lambda: keras_ecl.samplers.FromCallable(lambda x: 0.5 * x + 0.1),
}
RANDOM_SAMPLERS = {
    "mixup": lambda: keras_ecl.samplers.MixUp(seed=1),
    "cutmix": lambda: keras_ecl.samplers.CutMix(seed=1),
    "gaussian_noise": lambda: keras_ecl.samplers.GaussianNoise(0.3, seed=1),
    "one_of": lambda: keras_ecl.samplers.OneOf(
        [keras_ecl.samplers.MixUp(seed=1), keras_ecl.samplers.GaussianNoise(0.3, seed=2)], seed=3
    ),
}
HEADS = ["categorical", "normal", "laplace"]


def assert_same_run(one, two):
    for key in ("loss", "student_loss", "distillation_loss", "extracurricular_loss"):
        np.testing.assert_allclose(one[0][key], two[0][key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(one[1], two[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("sampler", sorted(DETERMINISTIC_SAMPLERS))
@pytest.mark.parametrize("head", HEADS)
def test_two_replicas_match_one_device_per_head(head, sampler):
    x, y, units = head_case(head)
    options = dict(head=head, units=units, samples_per_example=2)
    runs = [
        train(strategy, x, y, sampler=DETERMINISTIC_SAMPLERS[sampler](), **options)
        for strategy in (one_device(), two_replicas())
    ]
    assert_same_run(*runs)


@pytest.mark.parametrize("sampler", sorted(RANDOM_SAMPLERS))
@pytest.mark.parametrize(
    "head", ["categorical", *(pytest.param(h, marks=pytest.mark.large) for h in HEADS[1:])]
)
def test_random_samplers_on_two_replicas_repeat_and_stay_close_to_one_device(head, sampler):
    # Each replica mixes within its own half batch with its own fold of the
    # seed, so the draws cannot equal one device's; the runs must still be
    # repeatable, finite and free of stateful-RNG warnings, and the loss
    # must stay close to a one-device run of the same global batch.
    x, y, units = head_case(head)
    options = dict(head=head, units=units, samples_per_example=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = (
            train(two_replicas(), x, y, sampler=RANDOM_SAMPLERS[sampler](), **options)
            for _ in range(2)
        )
    assert not [w for w in caught if "random" in str(w.message).lower()]
    assert_same_run(first, second)
    assert np.all(np.isfinite(first[0]["extracurricular_loss"]))
    single = train(one_device(), x, y, sampler=RANDOM_SAMPLERS[sampler](), **options)
    np.testing.assert_allclose(single[0]["loss"], first[0]["loss"], rtol=0.25)


def test_two_replicas_match_one_device_for_kd():
    x, y = make_data()
    one = train(one_device(), x, y, mode="kd")
    two = train(two_replicas(), x, y, mode="kd")
    np.testing.assert_allclose(one[0]["loss"], two[0]["loss"], rtol=1e-5)
    for a, b in zip(one[1], two[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_ecl_trains_on_two_replicas():
    x, y = make_data()
    history, weights = train(
        two_replicas(),
        x,
        y,
        sampler=keras_ecl.samplers.OneOf(
            [keras_ecl.samplers.MixUp(seed=1), keras_ecl.samplers.GaussianNoise(0.3, seed=2)]
        ),
        samples_per_example=2,
    )
    assert np.all(np.isfinite(history["extracurricular_loss"]))
    assert all(np.all(np.isfinite(w)) for w in weights)


def test_non_finite_step_is_skipped_on_every_replica():
    x, y = make_data(64)
    x[40:48] = np.nan  # third batch of 16 only
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with two_replicas().scope():
        distiller = keras_ecl.Distiller(mlp(4), mlp(16), mode="kd")
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(FloatingPointError, match="epoch 1, step 3"):
        distiller.fit(dataset, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())
