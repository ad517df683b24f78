"""The student's weight average: Keras' optimizer EMA, on by default in mode "ecl" only."""

import keras
import numpy as np
import pytest

import keras_ecl
from tests import testing


def fit_steps(distiller, x, y, steps):
    """`steps` updates of one full batch each, in one `fit`."""
    distiller.fit(x, y, batch_size=len(x), epochs=steps, verbose=0, shuffle=False)


def erm(momentum, weights=None):
    student = testing.mlp(units=4)
    if weights is not None:
        student.set_weights(weights)
    distiller = keras_ecl.Distiller(student, mode="erm", ema_momentum=momentum)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))
    return distiller


def test_fit_leaves_the_hand_computed_average_of_the_updates_in_the_student():
    x, y = testing.classification_data(32)
    keras.utils.set_random_seed(0)
    plain = erm(0.0)
    start = testing.weights_of(plain.student)
    iterates = []
    for _ in range(3):  # w1, w2, w3: one update per fit, no averaging
        fit_steps(plain, x, y, 1)
        iterates.append(testing.weights_of(plain.student))
    assert not plain.optimizer.use_ema

    averaged = erm(0.5, start)
    fit_steps(averaged, x, y, 3)
    # Keras' EMA starts at the first update's weights: a1 = w1, then a = 0.5 a + 0.5 w.
    expected = [0.25 * w1 + 0.25 * w2 + 0.5 * w3 for w1, w2, w3 in zip(*iterates, strict=True)]
    for got, want in zip(averaged.student.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The last iterate itself differs: the average really replaced it.
    assert not np.allclose(averaged.student.get_weights()[0], iterates[-1][0])


def test_averaged_weights_swaps_the_average_in_and_the_iterate_back():
    x, y = testing.classification_data(32)
    keras.utils.set_random_seed(0)
    distiller = erm(0.5)
    with keras_ecl.averaging.averaged_weights(distiller):  # before any step: as they are
        untouched = testing.weights_of(distiller.student)
    testing.assert_same_weights(untouched, testing.weights_of(distiller.student))

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            self.iterate = testing.weights_of(distiller.student)
            with keras_ecl.averaging.averaged_weights(self.model):
                self.average = testing.weights_of(distiller.student)
            self.after = testing.weights_of(distiller.student)

    record = Record()
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[record])
    testing.assert_same_weights(record.after, record.iterate)  # training goes on unchanged
    averages = distiller.optimizer._model_variables_moving_average
    for got, want in zip(record.average, averages, strict=True):
        np.testing.assert_array_equal(got, want.numpy())
    assert not np.allclose(record.average[0], record.iterate[0])
    # `fit` ended by writing the same average into the student.
    testing.assert_same_weights(testing.weights_of(distiller.student), record.average)


@pytest.mark.parametrize(
    "mode, expected", [("ecl", (True, 0.99)), ("kd", (False, None)), ("erm", (False, None))]
)
def test_only_ecl_averages_by_default(mode, expected):
    distiller = testing.make_distiller(mode=mode, compile=False)
    distiller.compile(optimizer="adam")
    optimizer = distiller.optimizer
    assert (optimizer.use_ema, optimizer.ema_momentum if optimizer.use_ema else None) == expected


def test_the_users_own_average_and_a_zero_momentum_are_kept():
    own = testing.make_distiller(compile=False)
    own.compile(optimizer=keras.optimizers.Adam(use_ema=True, ema_momentum=0.9))
    assert own.optimizer.ema_momentum == 0.9
    off = testing.make_distiller(compile=False, ema_momentum=0)
    off.compile(optimizer=keras.optimizers.Adam())
    assert not off.optimizer.use_ema


def test_only_an_optimizer_not_yet_built_is_made_to_average():
    distiller = erm(0.5)
    built = keras.optimizers.SGD(0.5)
    built.build(distiller.student.trainable_variables)
    distiller.compile(optimizer=built)  # its state has no averages to match: left as it is
    assert distiller.optimizer is built and not built.use_ema
    x, y = testing.classification_data(32)
    fit_steps(distiller, x, y, 1)
    distiller.compile(optimizer=keras.optimizers.SGD(0.5))  # a fresh one for the recompile
    assert (distiller.optimizer.use_ema, distiller.optimizer.ema_momentum) == (True, 0.5)


def test_mixed_precision_averages_through_the_loss_scale_optimizer():
    keras.config.set_dtype_policy("mixed_float16")
    try:
        distiller = testing.make_distiller()
    finally:
        keras.config.set_dtype_policy("float32")
    assert isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert distiller.optimizer.inner_optimizer.use_ema
    x, y = testing.classification_data()
    testing.short_fit(distiller, x, y)


@pytest.mark.parametrize("momentum", [1.0, -0.1, "0.9", float("nan")])
def test_a_momentum_outside_zero_one_is_refused_by_name(momentum):
    with pytest.raises(ValueError, match=r"`ema_momentum` must be a number in \[0, 1\)"):
        testing.make_distiller(ema_momentum=momentum)


def test_the_average_and_its_momentum_survive_a_keras_file(tmp_path):
    x, y = testing.classification_data()
    distiller = testing.make_distiller(ema_momentum=0.9)
    distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.ema_momentum == 0.9
    assert loaded.optimizer.use_ema and loaded.optimizer.ema_momentum == 0.9
    saved = distiller.optimizer._model_variables_moving_average
    for got, want in zip(loaded.optimizer._model_variables_moving_average, saved, strict=True):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
