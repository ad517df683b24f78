"""The Distiller under tf.distribute.MirroredStrategy on two logical CPUs.

Every registered head and sampler also trains on two replicas in
`registry_test.py`; this file holds what is particular to distribution.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from tests import testing

pytestmark = pytest.mark.skipif(
    len(tf.config.list_logical_devices("CPU")) < 2, reason="needs two logical CPUs"
)


def assert_same_run(one, two, keys=("loss",)):
    for key in keys:
        np.testing.assert_allclose(one[0][key], two[0][key], rtol=1e-5, atol=1e-6, err_msg=key)
    for a, b in zip(one[1], two[1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_two_replicas_match_one_device_with_the_identity_sampler():
    # Its "draws" are the real batch: both runs see the same inputs.
    x, y = testing.classification_data(128)
    runs = [
        testing.train_under(
            strategy,
            x,
            y,
            sampler=keras_ecl.samplers.Identity(),
            samples_per_example=2,
            real_weight=1.0,
        )
        for strategy in (testing.one_device(), testing.two_replicas())
    ]
    keys = ("loss", "student_loss", "distillation_loss", "extracurricular_loss")
    assert_same_run(*runs, keys=keys)


def test_two_replicas_match_one_device_for_kd():
    x, y = testing.classification_data(128)
    one = testing.train_under(testing.one_device(), x, y, mode="kd")
    two = testing.train_under(testing.two_replicas(), x, y, mode="kd")
    assert_same_run(one, two)


def test_ecl_trains_on_two_replicas():
    x, y = testing.classification_data(128)
    history, weights = testing.train_under(
        testing.two_replicas(),
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
    x, y = testing.classification_data(64)
    x[40:48] = np.nan  # third batch of 16 only
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with testing.two_replicas().scope():
        distiller = keras_ecl.Distiller(testing.mlp(units=4), testing.mlp(units=16), mode="kd")
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    with pytest.raises(FloatingPointError, match="epoch 1, step 3"):
        distiller.fit(dataset, epochs=1, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())


def test_an_overflowing_update_is_skipped_on_every_replica():
    x, y = testing.classification_data(64)
    with testing.two_replicas().scope():
        distiller = keras_ecl.Distiller(testing.mlp(units=4), testing.mlp(units=16), mode="kd")
        distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    state = [*distiller.student.weights, *distiller.optimizer.variables]
    before = [np.array(v) for v in state]
    with pytest.raises(FloatingPointError, match="That update was skipped"):
        distiller.fit(x * 1e20, y, batch_size=16, epochs=1, verbose=0)
    for a, b in zip([np.array(v) for v in state], before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_labels_on_one_replica_are_named_and_skip_the_step():
    x, y = testing.classification_data(64)
    y[37] = 5  # the second replica's half of the third batch of 16
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with testing.two_replicas().scope():
        distiller = keras_ecl.Distiller(testing.mlp(units=4), testing.mlp(units=16), mode="kd")
        distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match=r"batch 3 of epoch 1 .* labels in \[0, 5\], 1 bad row"):
        distiller.fit(dataset, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())
    # The corrected data then trains, without a new compile.
    assert np.isfinite(
        distiller.fit(x, testing.classification_data(64)[1], verbose=0).history["loss"][-1]
    )
