"""The Distiller under tf.distribute.MirroredStrategy on two logical CPUs."""

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


def mlp(units):
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(3)]
    )


def train(strategy, x, y, **kwargs):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        distiller = keras_ecl.Distiller(mlp(4), mlp(16), **kwargs)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    return history.history, distiller.student.get_weights()


def test_two_replicas_match_one_device_for_kd():
    x, y = make_data()
    one = train(tf.distribute.OneDeviceStrategy("/cpu:0"), x, y, mode="kd")
    two = train(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), x, y, mode="kd")
    np.testing.assert_allclose(one[0]["loss"], two[0]["loss"], rtol=1e-5)
    for a, b in zip(one[1], two[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_ecl_trains_on_two_replicas():
    x, y = make_data()
    history, weights = train(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
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
    with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
        distiller = keras_ecl.Distiller(mlp(4), mlp(16), mode="kd")
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(FloatingPointError, match="epoch 1, step 3"):
        distiller.fit(dataset, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())
