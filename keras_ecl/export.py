"""Export a trained student for serving: a TensorFlow SavedModel or a TFLite file.

Only the student goes in, never the teacher. The exported function applies the
head, so servers and phones get distribution parameters (class probabilities,
or `loc` and `scale`) rather than raw logits or `raw_scale` units.
"""

import os
import tempfile

import keras
import numpy as np
import tensorflow as tf

from keras_ecl import _atomic
from keras_ecl import heads as heads_lib
from keras_ecl.distiller import Distiller
from keras_ecl.utils import as_numeric_array, check_path

__all__ = ["FORMATS", "QUANTIZATIONS", "export_student", "tflite_predict"]

FORMATS = ("tf_saved_model", "tflite")
QUANTIZATIONS = (None, "dynamic_range", "float16", "int8")
# Where students go when no path is given.
DEFAULT_DIRECTORY = "saved_models"
# Rows of the representative data the int8 converter calibrates on.
_CALIBRATION_ROWS = 200


def export_student(
    model,
    path=None,
    format=None,
    head=None,
    quantization=None,
    representative_data=None,
    input_signature=None,
):
    """Exports a student (or a `Distiller`'s student) with its head applied.

    The serving function (`serving_default` signature of the SavedModel, the
    one signature of the TFLite model) takes a batch of inputs (argument
    `inputs`, or `inputs_0`, `inputs_1`, ... for several) and returns a
    dict: `{"logits", "probabilities"}` for a `Categorical` head,
    `{"loc", "scale"}` for `Normal` and `Laplace` (scale already through
    softplus); for a multi-output student (`heads.MultiOutput`) each
    output's under `<output>_<name>`, e.g. `class_probabilities`,
    `box_loc`. Probabilities are at temperature 1: the distillation
    temperature is a training device, not part of the model.

    Args:
        model: A `keras_ecl.Distiller` (its student and head are exported) or a
            built `keras.Model` whose output is raw head parameters.
        path: Directory of the SavedModel, or the `.tflite` file to write.
            Defaults to None: `saved_models/<student name>` (plus `.tflite`,
            or `_<quantization>.tflite` when quantized).
        format: `"tf_saved_model"` or `"tflite"`. Defaults to None: "tflite"
            for a `path` ending in `.tflite`, else "tf_saved_model".
        head: A `keras_ecl.heads.Head` or its name. Defaults to None: the
            Distiller's head; for a plain model, the head of the last
            Distiller it was the student of, else "categorical".
        quantization: For `"tflite"` only: None (float32), `"dynamic_range"`
            (int8 weights), `"float16"` (float16 weights) or `"int8"` (int8
            weights and activations with float inputs and outputs, calibrated
            on `representative_data`). Defaults to None.
        representative_data: Training inputs (an array, or a
            `tf.data.Dataset` of inputs or `(x, y)` batches) to calibrate
            `"int8"` quantization; up to 200 rows are used. Defaults to None.
        input_signature: A `keras.InputSpec`/`tf.TensorSpec` (or a list of
            them) for students without symbolic inputs (subclassed models).
            Defaults to None: taken from `student.inputs`.

    Returns:
        The path written. It is written beside `path` and renamed into place
        (a SavedModel swapped in whole), so a kill at any moment leaves the
        previous export or the new one there, never a mix.

    Raises:
        ValueError: For an unknown format or quantization, quantization of a
            SavedModel, `"int8"` without `representative_data`, an unbuilt
            model, weights that are NaN or inf, or a `path` that cannot be
            written (a file where the SavedModel folder goes or the reverse,
            under a file, in a read-only folder, or a folder of other files):
            all before any conversion.
        TypeError: If `model` is neither a `Distiller` nor a `keras.Model`, or
            `representative_data` does not hold numbers.

    Example:

    ```python
    keras_ecl.export_student(distiller, "saved_models/student")
    keras_ecl.export_student(distiller, "saved_models/student.tflite", format="tflite")
    served = tf.saved_model.load("saved_models/student")
    probabilities = served.signatures["serving_default"](
        tf.constant(x_test[:8]))["probabilities"]
    ```
    """
    tflite_path = path is not None and str(path).endswith(".tflite")
    if format is None:
        format = "tflite" if tflite_path else "tf_saved_model"
    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {FORMATS}. Received: format={format!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {QUANTIZATIONS}. "
            f"Received: quantization={quantization!r}"
        )
    if format == "tf_saved_model" and tflite_path:
        raise ValueError(
            "`path` ends in .tflite but format='tf_saved_model' writes a directory. "
            f"Pass format='tflite', or a path without the suffix. Received: path={str(path)!r}"
        )
    if quantization is not None and format != "tflite":
        raise ValueError(
            f"`quantization` applies to format='tflite' only. Received: format={format!r}, "
            f"quantization={quantization!r}"
        )
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "quantization='int8' calibrates activations on `representative_data` (training "
            "inputs). Received: representative_data=None"
        )
    if isinstance(model, Distiller):
        student = model.student
        head = model.head if head is None else head
    elif isinstance(model, keras.Model):
        student = model
        # A student keeps the head of the Distiller that trained it (see `Distiller`).
        head = getattr(student, heads_lib.STUDENT_HEAD, None) if head is None else head
    else:
        raise TypeError(
            "`model` must be a keras_ecl.Distiller or a keras.Model. "
            f"Received: model={type(model).__name__}"
        )
    head = heads_lib.get("categorical" if head is None else head)
    if path is None:
        suffix = "" if format == "tf_saved_model" else f"_{quantization}" if quantization else ""
        suffix += ".tflite" if format == "tflite" else ""
        path = os.path.join(DEFAULT_DIRECTORY, student.name + suffix)
    _check_path(path, format, student)
    _check_exportable(student)
    signature = _input_signature(student, input_signature)
    if representative_data is not None and quantization == "int8":
        representative_data = _calibration_rows(representative_data, signature)

    if format == "tf_saved_model":
        archive = _serving_archive(student, head, signature)
        # Written beside `path`, then swapped in whole: a stale export never mixes in.
        _atomic.write_directory(path, lambda scratch: archive.write_out(scratch, verbose=False))
        return path
    flatbuffer = _tflite_flatbuffer(student, head, signature, quantization, representative_data)
    _atomic.write_bytes(path, flatbuffer)
    return path


def _tflite_flatbuffer(student, head, signature, quantization, representative_data):
    """The TFLite model, converted from a scratch SavedModel of the student."""
    with tempfile.TemporaryDirectory() as saved_model_dir:
        _serving_archive(student, head, signature).write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=["serving_default"]
        )
        _configure_quantization(converter, quantization, representative_data, signature)
        return converter.convert()


def _check_path(path, format, student):
    """Refuses a path the export could not write, or would destroy other files at."""
    check_path("path", path, directory=format == "tf_saved_model")
    if format == "tf_saved_model" and os.path.isdir(path) and os.listdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(
                f"`path` is a directory that holds other files, not a SavedModel: "
                "exporting would replace them. Name a new directory for the student, "
                f"e.g. {os.path.join(str(path), student.name)!r}. Received: path={str(path)!r}"
            )


def _check_exportable(student):
    if not student.built or not student.weights:
        raise ValueError(
            f"The student {student.name!r} is not built: it has no weights to export. "
            "Call it on data (or train it) first."
        )
    # `w.numpy()`: NumPy 2 warns on `np.array` of a Keras 3.15 variable (no `copy` in `__array__`).
    bad = [w.path for w in student.weights if not np.all(np.isfinite(w.numpy()))]
    if bad:
        raise ValueError(
            f"The student has NaN or inf weights, so it is not exported: {bad[:5]}. "
            "Restore the last good checkpoint instead."
        )


def _input_signature(student, input_signature):
    if input_signature is None:
        try:
            inputs = student.inputs
        except (AttributeError, ValueError):
            inputs = None
        if not inputs:
            raise ValueError(
                f"The student {student.name!r} has no symbolic inputs (a subclassed "
                "model?): pass `input_signature`, e.g. "
                "[keras.InputSpec(shape=(None, 40), dtype='float32')]."
            )
        names = ["inputs"] if len(inputs) == 1 else [f"inputs_{i}" for i in range(len(inputs))]
        input_signature = [
            tf.TensorSpec(shape=(None, *t.shape[1:]), dtype=t.dtype, name=name)
            for t, name in zip(inputs, names, strict=True)
        ]
    if not isinstance(input_signature, (list, tuple)):
        input_signature = [input_signature]
    return [
        spec
        if isinstance(spec, tf.TensorSpec)
        else tf.TensorSpec(shape=spec.shape, dtype=spec.dtype or "float32")
        for spec in input_signature
    ]


def _serving_archive(student, head, signature):
    """An export archive whose `serving_default` returns the head's serving outputs."""

    def serve(*inputs):
        x = inputs[0] if len(inputs) == 1 else list(inputs)
        return head.serving_outputs(student(x, training=False))

    archive = keras.export.ExportArchive()
    archive.track(student)
    archive.add_endpoint("serve", serve, input_signature=signature)
    return archive


def _configure_quantization(converter, quantization, representative_data, signature):
    if quantization is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "int8":  # `representative_data`: rows from `_calibration_rows`

        def representative_dataset():
            for row in representative_data:
                yield [row[None]]

        converter.representative_dataset = representative_dataset


def _calibration_rows(data, signature):
    """Up to `_CALIBRATION_ROWS` single inputs from an array or a dataset."""
    if isinstance(data, tf.data.Dataset):
        batches = []
        count = 0
        for element in data:
            x = element[0] if isinstance(element, (tuple, list)) else element
            batches.append(np.asarray(x))
            count += len(batches[-1])
            if count >= _CALIBRATION_ROWS:
                break
        data = np.concatenate(batches) if batches else np.zeros((0,))
    rows = as_numeric_array(data, "representative_data")
    if rows.ndim == 0 or len(rows) == 0 or rows.shape[1:] != tuple(signature[0].shape[1:]):
        raise ValueError(
            "`representative_data` must hold training inputs of shape "
            f"(rows, {', '.join(str(d) for d in signature[0].shape[1:])}). "
            f"Received: shape={rows.shape}"
        )
    return rows[:_CALIBRATION_ROWS].astype(signature[0].dtype.as_numpy_dtype)


def _rank(value):
    try:
        return np.ndim(value)
    except ValueError:  # ragged: refused with a clear message later
        return None


def tflite_predict(path, x):
    """Runs an exported `.tflite` student on a batch; returns its output dict.

    Args:
        path: A file written by `export_student(..., format="tflite")`.
        x: A batch of inputs (an array, or anything `np.asarray` takes, such
            as nested lists of rows), or a list of arrays for several inputs.

    Returns:
        A dict of NumPy arrays, e.g. `{"logits", "probabilities"}`.

    Raises:
        ValueError: If `path` is not a TFLite model file, or `x` does not fit
            its inputs.
        TypeError: If `x` does not hold numbers.

    Example:

    ```python
    probabilities = keras_ecl.export.tflite_predict(
        "saved_models/student.tflite", x_test)["probabilities"]
    ```
    """
    from ai_edge_litert.interpreter import Interpreter

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(
            f"`path` must be a .tflite file, but it is a directory. Received: path={path!r}"
        )
    if not os.path.isfile(path):
        raise ValueError(f"`path` names no file. Received: path={path!r}")
    with open(path, "rb") as file:
        header = file.read(8)
    if header[4:8] != b"TFL3":  # the FlatBuffer file identifier of TFLite models
        raise ValueError(
            "`path` is not a TFLite model (no TFL3 identifier): write one with "
            f"export_student(..., format='tflite'). Received: path={path!r}"
        )
    interpreter = Interpreter(model_path=path)
    signatures = interpreter.get_signature_list()
    if "serving_default" not in signatures:
        raise ValueError(
            "`path` is a TFLite model without the `serving_default` signature that "
            f"export_student writes. Received: path={path!r}, signatures={sorted(signatures)}"
        )
    runner = interpreter.get_signature_runner("serving_default")
    names = signatures["serving_default"]["inputs"]
    details = runner.get_input_details()
    arrays = x if isinstance(x, (list, tuple)) else [x]
    rank = len(details[names[0]]["shape_signature"])
    if len(names) == 1 and not (len(arrays) == 1 and _rank(arrays[0]) == rank):
        arrays = [x]  # one input given as nested lists of rows
    if len(arrays) != len(names):
        raise ValueError(
            f"The TFLite model takes {len(names)} input(s) {names}. Received: {len(arrays)}"
        )
    feeds = {}
    # Signature inputs are listed by name: inputs_0, inputs_1, ... in order.
    for name, array in zip(names, arrays, strict=True):
        array = as_numeric_array(array, "x")
        expected = tuple(int(d) for d in details[name]["shape_signature"])
        if array.ndim != len(expected) or any(
            e != -1 and e != r for e, r in zip(expected[1:], array.shape[1:], strict=True)
        ):
            shape = tuple(None if d == -1 else d for d in expected)
            raise ValueError(
                f"The TFLite model takes inputs of shape {shape}. Received: shape={array.shape}"
            )
        feeds[name] = array.astype(details[name]["dtype"])
    return runner(**feeds)
