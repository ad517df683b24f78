"""Every bad input the library guards, as the "Bad input" page (docs/bad-input.md) lists it.

Each table row names a case below; the test runs it and checks the exception
type and that the row's error text is what the library says. Rejected calls
leave the Distiller as it was, and a corrected call then works. Property-based
tests (hypothesis) throw arrays of random shapes and dtypes at the public
functions: they either work or raise a `ValueError`/`TypeError` from keras_ecl's
own checks, never an error from deep inside TensorFlow.
"""

import functools
import inspect
import os
import pathlib
import re
import traceback

import hypothesis
import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import strategies as st

import keras_ecl
from tests import testing

ROOT = pathlib.Path(__file__).resolve().parents[1]
S = keras_ecl.samplers
FEATURES, CLASSES = 4, 3


mlp = functools.partial(testing.mlp, inputs=FEATURES)


def distiller(**kwargs):
    options = dict(
        student=mlp(), teacher=mlp(units=16), sampler=S.MixUp(seed=0), updates_per_batch=1
    )
    options.update(kwargs)
    model = keras_ecl.Distiller(**options)
    model.compile(optimizer="adam")
    return model


def data(rows=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(rows, FEATURES)).astype("float32"), rng.integers(0, CLASSES, rows)


X, Y = data()


def with_values(x, rows, value):
    x = x.copy()
    x[rows] = value
    return x


def nan_teacher():
    teacher = mlp(units=16)
    teacher.layers[-1].kernel.assign(np.full((16, CLASSES), np.nan, "float32"))
    return teacher


def broken_student():
    student = mlp()
    student.layers[0].kernel.assign(np.full((FEATURES, 8), np.inf, "float32"))
    return student


def softmax_mlp(units=16, outputs=CLASSES):
    """A classifier that ends in a softmax: it outputs probabilities, not logits."""
    model = mlp(outputs, units)
    return keras.Sequential([model, keras.layers.Softmax()])


def labelled_batches(bad_batch, labels=None, batch=8):
    """A dataset of batches of 8 whose batch `bad_batch` (1-based) holds class id 7."""
    y = Y.copy() if labels is None else labels
    y[(bad_batch - 1) * batch : bad_batch * batch] = 7
    return tf.data.Dataset.from_tensor_slices((X, y)).batch(batch)


class Batches(keras.utils.PyDataset):
    """A PyDataset of batches of 8 of `x`, `y`."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x) // 8

    def __getitem__(self, index):
        rows = slice(8 * index, 8 * index + 8)
        return self.x[rows], self.y[rows]


def with_bad_label(y, row, value):
    y = y.copy()
    y[row] = value
    return y


def named_inputs_mlp(units=8):
    """A functional MLP taking a dict `{"features": x}`."""
    inputs = keras.Input((FEATURES,), name="features")
    hidden = keras.layers.Dense(units, activation="relu")(inputs)
    return keras.Model({"features": inputs}, keras.layers.Dense(CLASSES)(hidden))


def two_outputs(units=8):
    """A functional model with dict outputs: class logits and a `[loc, raw_scale]` box."""
    inputs = keras.Input((FEATURES,))
    hidden = keras.layers.Dense(units, activation="relu")(inputs)
    box = keras.layers.Dense(2)(hidden)
    return keras.Model(inputs, {"class": keras.layers.Dense(CLASSES)(hidden), "box": box})


MULTI_HEAD = {"class": "categorical", "box": "normal"}
MULTI_Y = {"class": Y, "box": X[:, :1]}


def shared_layers_student():
    teacher = mlp(units=16)
    return keras.Sequential([keras.Input((FEATURES,)), *teacher.layers]), teacher


def write(path, text):
    pathlib.Path(path).write_text(text)
    return path


def folder(path):
    path.mkdir()
    return path


def read_only(request, path):
    """`path`, with `os.access` answering as for a read-only disk (root ignores chmod)."""
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setattr(os, "access", lambda _, mode: not mode & os.W_OK)
    return path


def saved_distiller(tmp_path):
    model = distiller()
    model.fit(X, Y, epochs=1, verbose=0)
    model.save_weights(tmp_path / "mixup.weights.h5")
    return tmp_path / "mixup.weights.h5"


def one_of_distiller():
    model = distiller(sampler=S.OneOf([S.MixUp(), S.CutMix()]))
    model.fit(X, Y, epochs=1, verbose=0)
    return model


@pytest.fixture(scope="module")
def tflite_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "student.tflite"
    return keras_ecl.export_student(mlp(), path, format="tflite")


def set_tf_config(monkeypatch, value):
    monkeypatch.setenv("TF_CONFIG", value)
    return keras_ecl.distribute.get_strategy()


# Case id -> call(d, tmp_path, request): `d` is a fresh Distiller (`distiller()`,
# or the case's own from DISTILLERS) whose weights a rejected call must leave
# alone, and which the corrected call (CORRECTED, else `fit(X, Y)`) must then
# train without a new `compile`. The docs/bad-input.md row with the same id gives the
# exception type and the error text.
CASES = {
    # Inputs
    "x-features": lambda d, *_: d.fit(np.zeros((32, 5), "float32"), Y, verbose=0),
    "validation-features": lambda d, *_: d.fit(X, Y, validation_data=(X[:, :2], Y), verbose=0),
    "x-strings": lambda d, *_: d.fit(np.full((32, FEATURES), "a"), Y, verbose=0),
    "x-integers-to-mixup": lambda d, *_: d.fit(X.astype("int64"), Y, verbose=0),
    "x-nan": lambda d, *_: d.fit(with_values(X, [0, 5, 9], np.nan), Y, verbose=0),
    "x-empty": lambda d, *_: d.fit(X[:0], Y[:0], verbose=0),
    "dataset-empty": lambda d, *_: d.fit(
        tf.data.Dataset.from_tensor_slices((X, Y)).take(0).batch(8), verbose=0
    ),
    "dataset-inf-after-first-batch": lambda d, *_: d.fit(
        tf.data.Dataset.from_tensor_slices((with_values(X, [12], np.inf), Y)).batch(8),
        verbose=0,
    ),
    "ecl-several-inputs": lambda d, *_: d.fit([X, X], Y, verbose=0),
    "x-huge": lambda d, *_: d.fit(X * 1e20, Y, batch_size=8, verbose=0),
    "pydataset-features": lambda d, *_: d.fit(Batches(np.zeros((32, 5), "float32"), Y), verbose=0),
    # Labels
    "labels-missing": lambda d, *_: d.fit(X, verbose=0),
    "labels-count": lambda d, *_: d.fit(X, Y[:10], verbose=0),
    "sample-weights-count": lambda d, *_: d.fit(X, Y, sample_weight=np.ones(10), verbose=0),
    "sample-weights-nan": lambda d, *_: d.fit(
        X, Y, sample_weight=with_values(np.ones(32), [4], np.nan), verbose=0
    ),
    "sample-weights-zero": lambda d, *_: d.fit(X, Y, sample_weight=np.zeros(32), verbose=0),
    "sample-weights-negative": lambda d, *_: d.fit(
        X, Y, sample_weight=with_values(np.ones(32), [3], -1.0), verbose=0
    ),
    "sample-weights-strings": lambda d, *_: d.fit(X, Y, sample_weight=np.full(32, "a"), verbose=0),
    "labels-strings": lambda d, *_: d.fit(X, np.full(32, "a"), verbose=0),
    "labels-out-of-range": lambda d, *_: d.fit(X, Y + 3, verbose=0),
    "evaluate-labels-out-of-range": lambda d, *_: d.evaluate(X, Y + 5, verbose=0),
    "dataset-labels-later-batch": lambda d, *_: d.fit(labelled_batches(2), verbose=0),
    "evaluate-dataset-labels-later-batch": lambda d, *_: d.evaluate(labelled_batches(3), verbose=0),
    "validation-labels-later-batch": lambda d, *_: d.fit(
        X, Y, validation_data=labelled_batches(2), verbose=0
    ),
    "pydataset-labels-later-batch": lambda d, *_: d.fit(
        Batches(X, with_bad_label(Y, 12, -1)), verbose=0
    ),
    "kd-dict-inputs-labels": lambda d, *_: d.fit({"features": X}, Y + 3, batch_size=8, verbose=0),
    "predict-empty": lambda d, *_: d.predict(X[:0], verbose=0),
    "predict-features": lambda d, *_: d.predict(np.zeros((2, 5), "float32"), verbose=0),
    "one-hot-width": lambda d, *_: d.fit(X, np.eye(4)[Y], verbose=0),
    "regression-targets-nan": lambda *_: distiller(
        student=mlp(2), teacher=mlp(2, 16), head="normal"
    ).fit(X, with_values(X[:, 0], [3], np.nan), verbose=0),
    "regression-targets-width": lambda *_: distiller(
        student=mlp(2), teacher=mlp(2, 16), head="normal"
    ).fit(X, X[:, :2], verbose=0),
    # Heads, class counts and the teacher
    "class-count-mismatch": lambda *_: distiller(student=mlp(4)),
    "teacher-student-inputs": lambda *_: distiller(student=mlp(inputs=5)),
    "categorical-one-class": lambda *_: distiller(student=mlp(1), teacher=mlp(1, 16)),
    "normal-odd-units": lambda *_: distiller(head="normal"),
    "teacher-nan-outputs": lambda *_: distiller(teacher=nan_teacher()).fit(X, Y, verbose=0),
    "same-model": lambda *_: keras_ecl.Distiller(*[mlp()] * 2),
    "shared-weights": lambda *_: keras_ecl.Distiller(*shared_layers_student()),
    "teacher-softmax": lambda d, *_: d.fit(X, Y, verbose=0),
    "student-softmax": lambda d, *_: d.fit(X, Y, verbose=0),
    "normal-head-probabilities": lambda d, *_: d.fit(X, X[:, 0], verbose=0),
    "head-name": lambda *_: distiller(head="gaussian"),
    "temperature": lambda *_: keras_ecl.heads.Categorical(temperature=0),
    "kl-shapes": lambda *_: keras_ecl.losses.DistributionKL()(np.zeros((2, 3)), np.zeros((2, 4))),
    "nll-class-ids": lambda *_: keras_ecl.losses.NegativeLogLikelihood()(
        np.array([1, 5]), np.zeros((2, 3))
    ),
    "head-strings": lambda *_: keras_ecl.heads.Normal().distribution(np.array([["a", "b"]])),
    # Distiller arguments
    "mode": lambda *_: distiller(mode="dark"),
    "student-type": lambda *_: distiller(student="resnet"),
    "teacher-missing": lambda *_: distiller(teacher=None),
    "samples-per-example": lambda *_: distiller(samples_per_example=1.5),
    "supervised-weight": lambda *_: distiller(supervised_weight=2),
    "sampler-without-ecl": lambda *_: distiller(mode="kd"),
    "real-weight": lambda *_: distiller(real_weight=-1),
    "supervised-weight-one": lambda *_: distiller(mode="kd", sampler=None, supervised_weight=1),
    "option-outside-its-mode": lambda *_: distiller(
        mode="kd", sampler=None, uncertainty_weighting="entropy"
    ),
    "compile-loss-probabilities": lambda d, *_: d.compile(loss="sparse_categorical_crossentropy"),
    "selection-without-ecl": lambda *_: distiller(
        mode="kd", sampler=None, selection=keras_ecl.selection.Selection(2)
    ),
    "dkd-beta": lambda *_: keras_ecl.heads.DecoupledCategorical(beta=-8),
    # Ensemble teachers
    "ensemble-one-member": lambda *_: keras_ecl.teachers.Ensemble([mlp(units=16)]),
    "ensemble-layouts": lambda *_: keras_ecl.teachers.Ensemble([mlp(), mlp(outputs=4)]),
    "ensemble-weights": lambda *_: keras_ecl.teachers.Ensemble([mlp(), mlp()], weights=[1, -1]),
    "ensemble-combine": lambda *_: keras_ecl.teachers.Ensemble([mlp(), mlp()], combine="mean"),
    "disagreement-one-teacher": lambda *_: distiller(uncertainty_weighting="disagreement"),
    # The sample gallery
    "gallery-kind": lambda _, tmp_path, __: keras_ecl.callbacks.SampleGallery(
        X, tmp_path, kind="video"
    ),
    "gallery-rank": lambda _, tmp_path, __: keras_ecl.callbacks.SampleGallery(
        X, tmp_path, kind="images"
    ),
    "gallery-folder-is-a-file": lambda _, tmp_path, __: keras_ecl.callbacks.SampleGallery(
        X, write(tmp_path / "gallery", "mine")
    ),
    "gallery-log-dir-is-a-file": lambda _, tmp_path, __: keras_ecl.callbacks.SampleGallery(
        X, tmp_path / "gallery", log_dir=write(tmp_path / "logs", "mine")
    ),
    "gallery-x-strings": lambda _, tmp_path, __: keras_ecl.callbacks.SampleGallery(
        np.full(X.shape, "a"), tmp_path
    ),
    "gallery-not-ecl": lambda d, tmp_path, __: d.fit(
        X, Y, verbose=0, callbacks=[keras_ecl.callbacks.SampleGallery(X, tmp_path)]
    ),
    # Calibration
    "calibrate-validation-data": lambda *_: keras_ecl.calibrate(mlp(), X),
    "calibrate-lengths": lambda *_: keras_ecl.calibrate(mlp(), (X, Y[:5]), verbose=0),
    "calibrate-empty": lambda *_: keras_ecl.calibrate(mlp(), (X[:0], Y[:0]), verbose=0),
    "calibrate-inputs-strings": lambda *_: keras_ecl.calibrate(mlp(), (np.full(X.shape, "a"), Y)),
    "calibrate-labels-ragged": lambda *_: keras_ecl.calibrate(mlp(), (X, [[0], [1, 2]] * 16)),
    "sampler-not-fitted": lambda *_: distiller(sampler=S.GaussianMixture(2)).fit(X, Y, verbose=0),
    # Samplers
    "sampler-name": lambda *_: distiller(sampler="mixupp"),
    "mixup-alpha": lambda *_: S.MixUp(alpha=-1),
    "cutmix-alpha-inf": lambda *_: S.CutMix(alpha=float("inf")),
    "sampler-seed-bool": lambda *_: S.MixUp(seed=False),
    "noise-scale": lambda *_: S.GaussianNoise(scale=0),
    "one-of-probs": lambda *_: S.OneOf([S.MixUp(), S.CutMix()], probs=[0.5, 0.6]),
    "one-of-probs-nan": lambda *_: S.OneOf([S.MixUp(), S.CutMix()], probs=[float("nan"), 1]),
    "one-of-empty": lambda *_: S.OneOf([]),
    "from-callable-not-callable": lambda *_: S.FromCallable(3),
    "sampler-changes-shape": lambda *_: distiller(sampler=S.FromCallable(lambda x: x[:, :2])).fit(
        X, Y, verbose=0
    ),
    "sampler-rank-1": lambda *_: S.MixUp()(np.zeros(8, "float32")),
    "sampler-nan-draws": lambda *_: distiller(
        sampler=S.FromCallable(lambda x: x * float("nan"))
    ).fit(X, Y, verbose=0),
    "num-samples": lambda *_: S.CutMix()(X, num_samples=0),
    "call-seed-shape": lambda *_: S.MixUp()(X, seed=np.array([1, 2, 3], "int32")),
    # Export and loading
    "export-unbuilt": lambda *_: keras_ecl.export_student(
        keras.Sequential([keras.layers.Dense(3)])
    ),
    "export-not-a-model": lambda *_: keras_ecl.export_student("student.keras"),
    "export-format": lambda _, tmp_path, __: keras_ecl.export_student(mlp(), tmp_path, "onnx"),
    "export-quantized-saved-model": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), tmp_path, quantization="float16"
    ),
    "export-int8-without-data": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), tmp_path / "s.tflite", "tflite", quantization="int8"
    ),
    "export-tflite-path-saved-model": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), tmp_path / "s.tflite", "tf_saved_model"
    ),
    "export-into-a-folder": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), write(tmp_path / "notes.txt", "mine").parent
    ),
    "export-non-finite-weights": lambda _, tmp_path, __: keras_ecl.export_student(
        broken_student(), tmp_path
    ),
    "export-path-is-a-file": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), write(tmp_path / "student", "mine")
    ),
    "export-tflite-path-is-a-folder": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), folder(tmp_path / "student.tflite")
    ),
    "export-parent-is-a-file": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), write(tmp_path / "notes.txt", "mine") / "student"
    ),
    "export-parent-not-writable": lambda _, tmp_path, request: keras_ecl.export_student(
        mlp(), read_only(request, tmp_path / "student")
    ),
    "export-representative-data-strings": lambda _, tmp_path, __: keras_ecl.export_student(
        mlp(), tmp_path / "s.tflite", quantization="int8", representative_data=np.full(X.shape, "a")
    ),
    "tflite-path-is-a-folder": lambda _, tmp_path, __: keras_ecl.export.tflite_predict(tmp_path, X),
    "tflite-x-strings": lambda _, __, request: keras_ecl.export.tflite_predict(
        request.getfixturevalue("tflite_file"), np.full((2, FEATURES), "a")
    ),
    "tflite-x-ragged": lambda _, __, request: keras_ecl.export.tflite_predict(
        request.getfixturevalue("tflite_file"), [[1.0, 2.0, 3.0, 4.0], [1.0]]
    ),
    "tflite-missing-file": lambda _, tmp_path, __: keras_ecl.export.tflite_predict(
        tmp_path / "none.tflite", X
    ),
    "tflite-not-a-model": lambda _, tmp_path, __: keras_ecl.export.tflite_predict(
        write(tmp_path / "notes.tflite", "not a model"), X
    ),
    "tflite-input-shape": lambda _, __, request: keras_ecl.export.tflite_predict(
        request.getfixturevalue("tflite_file"), np.zeros((2, 5), "float32")
    ),
    "weights-not-hdf5": lambda d, tmp_path, __: d.load_weights(
        write(tmp_path / "a.weights.h5", "not weights")
    ),
    "weights-of-another-distiller": lambda _, tmp_path, __: one_of_distiller().load_weights(
        saved_distiller(tmp_path)
    ),
    "backup-dir-shared": lambda _, tmp_path, __: keras_ecl.callbacks.BackupAndRestore(
        write(tmp_path / "notes.txt", "mine").parent
    ),
    "backup-dir-is-a-file": lambda _, tmp_path, __: keras_ecl.callbacks.BackupAndRestore(
        write(tmp_path / "backup", "mine")
    ),
    "backup-dir-not-writable": lambda _, tmp_path, request: keras_ecl.callbacks.BackupAndRestore(
        read_only(request, tmp_path / "backup")
    ),
    # Distribution
    "tf-config": lambda _, __, request: set_tf_config(
        request.getfixturevalue("monkeypatch"), "{not json"
    ),
    # Multi-output models
    "multi-output-one-head": lambda *_: distiller(student=two_outputs(), teacher=two_outputs(16)),
    "multi-output-heads-one-output": lambda *_: distiller(head=MULTI_HEAD),
    "multi-output-labels-structure": lambda d, *_: d.fit(X, Y, verbose=0),
    "multi-output-labels-later-batch": lambda d, *_: d.fit(
        tf.data.Dataset.from_tensor_slices(
            (X, {**MULTI_Y, "class": with_bad_label(Y, 12, 7)})
        ).batch(8),
        verbose=0,
    ),
    "multi-output-ensemble": lambda *_: keras_ecl.teachers.Ensemble([two_outputs(), two_outputs()]),
    "multi-output-calibrate": lambda *_: keras_ecl.calibrate(two_outputs(), (X, Y)),
}


# Cases about a Distiller other than `distiller()`: how to build it.
DISTILLERS = {
    "teacher-softmax": lambda: distiller(teacher=softmax_mlp()),
    "student-softmax": lambda: distiller(student=softmax_mlp(8)),
    "normal-head-probabilities": lambda: distiller(
        student=mlp(2), teacher=softmax_mlp(outputs=2), head="normal"
    ),
    "gallery-not-ecl": lambda: distiller(mode="kd", sampler=None),
    "kd-dict-inputs-labels": lambda: distiller(
        student=named_inputs_mlp(), teacher=named_inputs_mlp(16), mode="kd", sampler=None
    ),
    **{
        case: lambda: distiller(student=two_outputs(), teacher=two_outputs(16), head=MULTI_HEAD)
        for case in ("multi-output-labels-structure", "multi-output-labels-later-batch")
    },
}
# The corrected call of a case whose Distiller cannot take `fit(X, Y)`; for a
# wrong model the correction is a right Distiller, so there is none to call.
CORRECTED = {
    "kd-dict-inputs-labels": lambda d: d.fit({"features": X}, Y, batch_size=8, verbose=0),
    "teacher-softmax": None,
    "student-softmax": None,
    "normal-head-probabilities": None,
    "multi-output-labels-structure": lambda d: d.fit(X, MULTI_Y, verbose=0),
    "multi-output-labels-later-batch": lambda d: d.fit(X, MULTI_Y, verbose=0),
}


def documented_rows():
    """id -> (exception name, error text) of docs/bad-input.md's "Every refusal" table."""
    text = (ROOT / "docs" / "bad-input.md").read_text()
    section = text.split("## Every refusal, verbatim", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = re.match(r"\| `([\w-]+)` \|.*\| `(\w+)` \| `` (.+) `` \|$", line)
        if match:
            rows[match[1]] = (match[2], match[3])
    return rows


ROWS = documented_rows()


def test_every_documented_row_has_a_case_and_every_case_a_row():
    assert len(ROWS) >= 60
    assert sorted(ROWS) == sorted(CASES)


def calls_the_distiller(case):
    """Whether a case calls the fresh Distiller it is given (its first argument, `d`)."""
    return next(iter(inspect.signature(CASES[case]).parameters)) == "d"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_the_documented_error_and_corrupts_nothing(case, tmp_path, request):
    exception_name, text = ROWS[case]
    # Argument-only cases (constructors, export, TF_CONFIG) get no Distiller to build.
    model = DISTILLERS.get(case, distiller)() if calls_the_distiller(case) else None
    before = None if model is None else [w.copy() for w in model.get_weights()]
    with pytest.raises(Exception) as caught:
        CASES[case](model, tmp_path, request)
    assert type(caught.value).__name__ == exception_name, caught.value
    assert text in " ".join(str(caught.value).split()), str(caught.value)
    if model is None:
        return  # an argument refused: nothing was built to corrupt
    # Nothing changed, or (a bad batch found inside `fit`) only the steps before
    # it trained, as they should: every weight is still finite.
    weights = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)
    if exception_name != "FloatingPointError" and "later-batch" not in case:
        for a, b in zip(weights, before, strict=True):
            np.testing.assert_array_equal(a, b)
    # The corrected call works without a new `compile`.
    corrected = CORRECTED.get(case, lambda d: d.fit(X, Y, epochs=1, verbose=0))
    if corrected is not None:
        assert np.isfinite(corrected(model).history["loss"][-1])


# Property-based: random shapes and dtypes into the public functions.

DTYPES = ["float16", "float32", "float64", "int32", "int64", "bool", "str"]


@st.composite
def arrays(draw, max_rank=4):
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=max_rank)))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if dtype == "str":
        return np.full(shape, "a")
    if dtype == "bool":
        return rng.random(shape) > 0.5
    return (3 * rng.normal(size=shape)).astype(dtype)


def assert_works_or_fails_clearly(call):
    """Runs `call`; a failure must be a ValueError/TypeError raised by keras_ecl."""
    try:
        call()
    except (ValueError, TypeError) as error:
        frames = traceback.extract_tb(error.__traceback__)
        origin = os.sep + "keras_ecl" + os.sep
        assert any(origin in frame.filename for frame in frames[-3:]), "".join(
            traceback.format_exception(error)
        )[-3000:]
        assert "Received" in str(error) or "`" in str(error), str(error)


# Every registered sampler but FromCallable, whose wrapped function's errors are the user's.
SAMPLERS = {k: v for k, v in S.SAMPLERS.examples().items() if k != "FromCallable"}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@hypothesis.given(x=arrays(), num_samples=st.integers(-1, 3))
def test_samplers_take_any_array_or_fail_clearly(name, x, num_samples):
    assert_works_or_fails_clearly(lambda: SAMPLERS[name]()(x, num_samples=num_samples))


@pytest.mark.parametrize("head", sorted(keras_ecl.heads.HEADS.examples()))
@hypothesis.given(outputs=arrays(), other=arrays(), y=arrays())
def test_heads_and_losses_take_any_array_or_fail_clearly(head, outputs, other, y):
    head = keras_ecl.heads.HEADS.examples()[head]()
    assert_works_or_fails_clearly(lambda: head.distribution(outputs))
    assert_works_or_fails_clearly(lambda: head.kl_divergence(outputs, other))
    assert_works_or_fails_clearly(lambda: head.negative_log_likelihood(y, outputs))
    assert_works_or_fails_clearly(lambda: keras_ecl.losses.DistributionKL(head)(other, outputs))
    assert_works_or_fails_clearly(lambda: keras_ecl.losses.NegativeLogLikelihood(head)(y, outputs))


@pytest.fixture(scope="module")
def trained():
    model = distiller()
    model.fit(X, Y, epochs=1, verbose=0)
    return model


@st.composite
def fit_data(draw):
    """Any arrays, or (half the time each) inputs and labels shaped like real ones,
    so that the checks past the first ones and training itself run too."""
    rows = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = draw(arrays())
    if draw(st.booleans()):
        dtype = draw(st.sampled_from(["float16", "float32", "float64", "int32"]))
        x = rng.normal(size=(rows, FEATURES)).astype(dtype)
    y = draw(arrays(max_rank=2))
    if draw(st.booleans()):
        dtype = draw(st.sampled_from(["int32", "int64", "float32"]))
        y = rng.integers(-1, CLASSES + 1, size=draw(st.sampled_from([(rows,), (rows, 1)])))
        y = y.astype(dtype)
    return x, y


# Two thirds of the profile's examples (conftest.py): each one fits and evaluates.
@hypothesis.settings(max_examples=max(1, hypothesis.settings.default.max_examples * 2 // 3))
@hypothesis.given(data=fit_data())
def test_distiller_fit_and_evaluate_take_any_array_or_fail_clearly(trained, data):
    x, y = data
    assert_works_or_fails_clearly(lambda: trained.fit(x, y, epochs=1, verbose=0))
    assert_works_or_fails_clearly(lambda: trained.evaluate(x, y, verbose=0))


@hypothesis.given(x=arrays())
def test_tflite_predict_takes_any_array_or_fails_clearly(tflite_file, x):
    assert_works_or_fails_clearly(lambda: keras_ecl.export.tflite_predict(tflite_file, x))


class SubclassedStudent(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(CLASSES)

    def call(self, inputs):
        return self.dense(inputs)


def test_lists_and_tuples_are_taken_as_arrays(tflite_file, tmp_path):
    predict = keras_ecl.export.tflite_predict
    expected = predict(tflite_file, X[:2])["probabilities"]
    for rows in (X[:2].tolist(), tuple(map(tuple, X[:2].tolist())), [X[:2]]):
        np.testing.assert_array_equal(predict(tflite_file, rows)["probabilities"], expected)
    teacher = mlp()
    y = np.argmax(teacher(X), axis=-1)  # its own labels, a quarter flipped: a finite temperature
    y[::4] = (y[::4] + 1) % CLASSES
    factors = keras_ecl.calibrate(teacher, (X, y), verbose=0).factors
    from_lists = keras_ecl.calibrate(teacher, (X.tolist(), tuple(y.tolist())), verbose=0)
    np.testing.assert_allclose(from_lists.factors, factors, rtol=1e-5)
    gallery = keras_ecl.callbacks.SampleGallery(X.tolist(), tmp_path, anchors=3)
    np.testing.assert_array_equal(gallery.x, X[:3])


def test_a_rejected_fit_leaves_a_subclassed_student_unbuilt():
    # A subclassed model is built by its first call: a check that called it on
    # the bad inputs would build it for them, and the corrected fit would fail.
    model = distiller(student=SubclassedStudent())
    with pytest.raises(ValueError, match="does not fit the teacher"):
        model.fit(np.zeros((32, 5), "float32"), Y, verbose=0)
    assert not model.student.built
    assert np.isfinite(model.fit(X, Y, epochs=1, verbose=0).history["loss"][-1])
