"""Tests of keras_ecl.export: SavedModel and TFLite round trips, with heads applied."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from keras_ecl import heads
from keras_ecl.export import tflite_predict
from tests import testing

NUM_FEATURES = 6


mlp = testing.mlp


def make_x(n=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, NUM_FEATURES)).astype("float32")


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softplus(z):
    return np.logaddexp(0.0, z)


def served(path, x):
    return {
        k: v.numpy()
        for k, v in tf.saved_model.load(path)
        .signatures["serving_default"](inputs=tf.constant(x))
        .items()
    }


def test_saved_model_returns_logits_and_probabilities(tmp_path):
    student = mlp(3, units=8)
    x = make_x()
    path = keras_ecl.export_student(student, str(tmp_path / "student"))
    outputs = served(path, x)
    logits = student.predict(x, verbose=0)
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-5)
    np.testing.assert_allclose(outputs["probabilities"], softmax(logits), atol=1e-6)


@pytest.mark.parametrize("head", [heads.Normal(min_scale=0.01), heads.Laplace()])
def test_saved_model_of_a_location_scale_head_returns_loc_and_scale(tmp_path, head):
    student = mlp(4, units=8)  # two regression outputs: [loc, raw_scale]
    x = make_x()
    distiller = keras_ecl.Distiller(student, mlp(4, units=16), head=head, mode="kd")
    outputs = served(keras_ecl.export_student(distiller, str(tmp_path / "s")), x)
    raw = student.predict(x, verbose=0)
    assert set(outputs) == {"loc", "scale"}
    np.testing.assert_allclose(outputs["loc"], raw[:, :2], atol=1e-5)
    np.testing.assert_allclose(
        outputs["scale"], softplus(raw[:, 2:]) + head.min_scale, rtol=1e-5, atol=1e-6
    )


def test_distiller_export_holds_the_student_only(tmp_path):
    teacher = mlp(3, units=512)  # far more weights than the student
    student = mlp(3, units=8)
    distiller = keras_ecl.Distiller(student, teacher, mode="kd")
    path = keras_ecl.export_student(distiller, str(tmp_path / "s.tflite"), format="tflite")
    teacher_bytes = 4 * teacher.count_params()
    assert os.path.getsize(path) < teacher_bytes / 4
    probabilities = tflite_predict(path, make_x())["probabilities"]
    np.testing.assert_allclose(
        probabilities, softmax(student.predict(make_x(), verbose=0)), atol=1e-5
    )


# Quantized exports: (mean |error| bound on probabilities, size vs float32).
QUANTIZATIONS = {
    "dynamic_range": (0.02, 0.7),
    "float16": (1e-3, 0.7),
    "int8": (0.05, 0.7),
}


@pytest.mark.parametrize("quantization", sorted(QUANTIZATIONS))
def test_quantized_tflite_is_smaller_and_close(tmp_path, quantization):
    # Big enough that weights, not the file's fixed overhead, set the size.
    student = mlp(3, units=2048)
    x = make_x(200)
    float_path = keras_ecl.export_student(student, str(tmp_path / "f.tflite"), format="tflite")
    path = keras_ecl.export_student(
        student,
        str(tmp_path / "q.tflite"),
        format="tflite",
        quantization=quantization,
        representative_data=x,
    )
    tolerance, size_ratio = QUANTIZATIONS[quantization]
    assert os.path.getsize(path) < size_ratio * os.path.getsize(float_path)
    reference = softmax(student.predict(x, verbose=0))
    error = np.abs(tflite_predict(path, x)["probabilities"] - reference)
    assert error.mean() < tolerance


def test_int8_calibrates_on_a_dataset_of_batches(tmp_path):
    student = mlp(3, units=16)
    x = make_x(96)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(96, "int32"))).batch(32)
    path = keras_ecl.export_student(
        student,
        str(tmp_path / "q.tflite"),
        format="tflite",
        quantization="int8",
        representative_data=dataset,
    )
    assert tflite_predict(path, x)["probabilities"].shape == (96, 3)


def test_export_replaces_a_stale_saved_model(tmp_path):
    path = str(tmp_path / "s")
    keras_ecl.export_student(mlp(3, units=8), path)
    student = mlp(3, units=8)
    keras_ecl.export_student(student, path)
    x = make_x()
    np.testing.assert_allclose(served(path, x)["logits"], student.predict(x, verbose=0), atol=1e-5)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(3)

    def call(self, x):
        return self.dense(x)


def test_subclassed_student_needs_and_uses_an_input_signature(tmp_path):
    student = Subclassed()
    x = make_x()
    student(x)
    with pytest.raises(ValueError, match="input_signature"):
        keras_ecl.export_student(student, str(tmp_path / "a"))
    spec = keras.InputSpec(shape=(None, NUM_FEATURES), dtype="float32")
    path = keras_ecl.export_student(student, str(tmp_path / "b"), input_signature=[spec])
    signature = tf.saved_model.load(path).signatures["serving_default"]
    (name,) = signature.structured_input_signature[1]
    outputs = signature(**{name: tf.constant(x)})
    np.testing.assert_allclose(outputs["logits"], student.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"format": "onnx"}, r"`format` must be one of .*Received: format='onnx'"),
        ({"quantization": "int4", "format": "tflite"}, "Received: quantization='int4'"),
        ({"quantization": "float16"}, "format='tflite' only"),
        ({"quantization": "int8", "format": "tflite"}, "representative_data=None"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    path = str(tmp_path / "out")
    with pytest.raises(ValueError, match=message):
        keras_ecl.export_student(mlp(3, units=8), path, **kwargs)
    assert not os.path.exists(path)


def test_unbuilt_student_is_refused(tmp_path):
    student = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not built"):
        keras_ecl.export_student(student, str(tmp_path / "s"))


def test_nan_weights_are_not_exported(tmp_path):
    student = mlp(3, units=8)
    weights = student.get_weights()
    weights[0][0, 0] = np.nan
    student.set_weights(weights)
    path = str(tmp_path / "s")
    with pytest.raises(ValueError, match="NaN or inf weights"):
        keras_ecl.export_student(student, path)
    assert not os.path.exists(path)


def test_not_a_model_is_refused(tmp_path):
    with pytest.raises(TypeError, match="Received: model=str"):
        keras_ecl.export_student("student.keras", str(tmp_path / "s"))


def test_representative_data_of_the_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(rows, 6\)\. Received: shape=\(10, 5\)"):
        keras_ecl.export_student(
            mlp(3, units=8),
            str(tmp_path / "q.tflite"),
            format="tflite",
            quantization="int8",
            representative_data=np.zeros((10, 5), "float32"),
        )


def test_default_paths_are_under_saved_models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    student = mlp(3, units=8)
    student.name = "tiny_student"
    x = make_x()
    saved = keras_ecl.export_student(student)
    flat = keras_ecl.export_student(student, format="tflite")
    small = keras_ecl.export_student(student, format="tflite", quantization="float16")
    assert saved == os.path.join("saved_models", "tiny_student")
    assert flat == os.path.join("saved_models", "tiny_student.tflite")
    assert small == os.path.join("saved_models", "tiny_student_float16.tflite")
    np.testing.assert_allclose(served(saved, x)["logits"], student.predict(x, verbose=0), atol=1e-5)
    assert os.path.exists(flat) and os.path.exists(small)


def test_a_distillers_student_exports_with_that_distillers_head(tmp_path):
    # `export_student(distiller.student)`: the plain model remembers its head.
    student = mlp(4, units=8)
    keras_ecl.Distiller(student, mlp(4, units=16), head="normal", mode="kd")
    outputs = served(keras_ecl.export_student(student, str(tmp_path / "s")), make_x())
    assert set(outputs) == {"loc", "scale"}
    plain = served(keras_ecl.export_student(mlp(4, units=8), str(tmp_path / "p")), make_x())
    assert set(plain) == {"logits", "probabilities"}  # a model no Distiller trained


def test_a_tflite_path_writes_a_tflite_file(tmp_path):
    student = mlp(3, units=8)
    path = keras_ecl.export_student(student, str(tmp_path / "student.tflite"))
    assert os.path.isfile(path)
    x = make_x(8)
    probabilities = tflite_predict(path, x)["probabilities"]
    np.testing.assert_allclose(probabilities, softmax(student.predict(x, verbose=0)), atol=1e-5)
