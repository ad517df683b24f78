"""`calibrate`: recovers a known temperature or scale, reports, saves and distils."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_ecl
from keras_ecl import heads
from tests import testing


def linear_teacher(kernel, bias=None):
    """A teacher computing `x @ kernel + bias` exactly."""
    features, units = kernel.shape
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(units)])
    bias = np.zeros(units, "float32") if bias is None else bias
    model.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return model


def overconfident_classifier(temperature=3.0, rows=4000, classes=5, seed=0):
    """Inputs are true logits; labels drawn from them; the teacher's logits are T times too big."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(rows, classes)).astype("float32")
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = np.array([rng.choice(classes, p=p) for p in probs])
    return linear_teacher(temperature * np.eye(classes)), logits, y


def test_temperature_scaling_recovers_a_known_temperature(capsys):
    teacher, x, y = overconfident_classifier(temperature=3.0)
    calibrated = keras_ecl.calibrate(teacher, (x, y))
    (temperature,) = calibrated.factors
    assert abs(temperature - 3.0) < 0.15, temperature
    report = calibrated.report
    assert report["nll_after"] < report["nll_before"]
    assert report["calibration_error_after"] < 0.03 < report["calibration_error_before"]
    np.testing.assert_allclose(calibrated(x[:4]), teacher(x[:4]) / temperature, rtol=1e-5)
    assert "calibrate: temperature [" in capsys.readouterr().out


@pytest.mark.parametrize("head", ["normal", "laplace"])
def test_variance_scaling_recovers_a_known_factor_per_output(head):
    head = heads.get(head)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6000, 2)).astype("float32")
    true_scales = np.array([2.0, 0.5])
    noise = head._distribution_class(loc=0.0, scale=true_scales).sample(6000, seed=(1, 2))
    y = x + np.asarray(noise)
    # The teacher predicts the right mean and scale 1 for both outputs.
    raw = float(tfp.math.softplus_inverse(1.0 - head.min_scale))
    kernel = np.concatenate([np.eye(2), np.zeros((2, 2))], axis=1)
    teacher = linear_teacher(kernel, np.array([0, 0, raw, raw]))
    calibrated = keras_ecl.calibrate(teacher, (x, y), head=head, verbose=0)
    np.testing.assert_allclose(calibrated.factors, true_scales, rtol=0.06)
    assert calibrated.report["calibration_error_after"] < 0.02
    _, scale = head.split(calibrated(x[:3]))
    np.testing.assert_allclose(scale, np.tile(calibrated.factors, (3, 1)), rtol=1e-4)


def test_a_calibrated_teacher_distils_and_saves_with_the_distiller(tmp_path):
    teacher, x, y = overconfident_classifier(rows=256, classes=3)
    calibrated = keras_ecl.calibrate(teacher, (x, y), verbose=0)
    distiller = keras_ecl.Distiller(
        testing.mlp(inputs=3, units=4), calibrated, mode="ecl", updates_per_batch=1
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=32, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.teacher.factors, calibrated.factors)
    assert loaded.teacher.report == calibrated.report
    np.testing.assert_allclose(loaded.teacher(x[:8]), calibrated(x[:8]), rtol=1e-6)


def test_calibrate_takes_a_dataset_like_arrays():
    teacher, x, y = overconfident_classifier(rows=512)
    from_arrays = keras_ecl.calibrate(teacher, (x, y), verbose=0).factors
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(100)
    from_dataset = keras_ecl.calibrate(teacher, dataset, verbose=0).factors
    np.testing.assert_allclose(from_dataset, from_arrays, rtol=1e-4)


def test_an_ensemble_is_calibrated_as_its_mixture():
    teacher, x, y = overconfident_classifier(rows=2000, temperature=2.0)
    twin = keras.models.clone_model(teacher)
    twin.set_weights(teacher.get_weights())
    ensemble = keras_ecl.teachers.Ensemble([teacher, twin])  # the mixture is the teacher
    calibrated = keras_ecl.calibrate(ensemble, (x, y), verbose=0)
    single = keras_ecl.calibrate(teacher, (x, y), verbose=0)
    np.testing.assert_allclose(calibrated.factors, single.factors, rtol=1e-3)
    probs = tf.nn.softmax(calibrated(x[:5]))
    np.testing.assert_allclose(probs, tf.nn.softmax(single(x[:5])), rtol=1e-4, atol=1e-6)
