"""Sequences of calls on one Distiller, as users chain them (hypothesis stateful testing).

The other tests call `fit`, `evaluate` or `save` once on a fresh Distiller;
users pre-train without labels and then fine-tune with them, evaluate
between fits, change the batch size or the kind of data, recompile, save and
reload in the middle. This machine drives one tiny Distiller through random
sequences of those calls (and deliberate mistakes) and checks after each that
the call worked, or was refused with an error naming the argument and
changed nothing, and that only fits change the student's weights.

Every warning a call raises is an error (but `testing.UPSTREAM_WARNINGS`):
the user did not cause it. `make test` runs 8 short sequences, each a first
`fit` and up to 6 more calls (derandomized, so the same ones each run); with
the label-free-then-labelled bug put back, the 6th fails (2026-12-07).
`make test-deep` (HYPOTHESIS_PROFILE=deep) runs the profile's many longer,
new ones.
"""

import math
import os
import shutil
import tempfile

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import keras_ecl
from tests import testing

X, Y = testing.classification_data(n=64)
WEIGHTS = np.linspace(0.5, 1.5, len(X)).astype("float32")

SOURCES = ("array", "dataset", "pydataset")
BATCH_SIZES = (32, 48)  # 48: a short last batch of 16

# Mistakes a user makes, as (method, the argument the error must name, keyword arguments
# that replace the good ones). Each is refused before anything is traced or trained.
MISTAKES = {
    "fit NaN inputs": ("fit", "x", {"x": np.where(X > 2, np.nan, X)}),
    "fit wrong width": ("fit", "x", {"x": X[:, :4]}),
    "fit labels out of range": ("fit", "x", {"y": Y + 3}),
    "fit fewer labels": ("fit", "x", {"y": Y[:-1]}),
    "fit negative weights": ("fit", "x", {"sample_weight": -WEIGHTS}),
    "fit bad validation": ("fit", "validation_data", {"validation_data": (X[:, :4], Y)}),
    "evaluate wrong width": ("evaluate", "x", {"x": X[:, :4]}),
    "evaluate labels out of range": ("evaluate", "x", {"y": Y - 1}),
    "predict strings": ("predict", "x", {"x": np.full((4, testing.FEATURES), "a")}),
}


class Batches(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` over in-memory arrays: `(x, ...)` batches."""

    def __init__(self, arrays, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.arrays, self.batch_size = arrays, batch_size

    def __len__(self):
        return math.ceil(len(self.arrays[0]) / self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        batch = tuple(array[rows] for array in self.arrays)
        return batch if len(batch) > 1 else batch[0]


def data_arguments(source, labels, weighted, batch_size):
    """`fit`/`evaluate` keyword arguments for X (and Y, WEIGHTS) in the form `source`."""
    if source == "array":
        return {
            "x": X,
            "y": Y if labels else None,
            "sample_weight": WEIGHTS if weighted else None,
            "batch_size": batch_size,
        }
    # Batched data carries weights as (x, y, weight) only: no weights without labels.
    arrays = (X, Y, WEIGHTS) if labels and weighted else (X, Y) if labels else (X,)
    if source == "dataset":
        data = tf.data.Dataset.from_tensor_slices(arrays if len(arrays) > 1 else X)
        return {"x": data.batch(batch_size)}
    return {"x": Batches(arrays, batch_size)}


def student_weights(distiller):
    return testing.weights_of(distiller.student)


class DistillerMachine(RuleBasedStateMachine):
    """One Distiller through a sequence of public calls."""

    def __init__(self):
        super().__init__()
        self.directory = tempfile.mkdtemp()
        self.saves = 0
        self.scores = {}  # evaluate's results by data, while the weights stay

    def teardown(self):
        shutil.rmtree(self.directory, ignore_errors=True)

    @initialize(
        source=st.sampled_from(SOURCES),
        labels=st.booleans(),
        weighted=st.booleans(),
        batch_size=st.sampled_from(BATCH_SIZES),
        validate=st.booleans(),
    )
    def build_and_fit(self, **first_fit):
        keras.utils.set_random_seed(0)
        # Without a supervised term, so that both label-free and labelled calls are right.
        self.distiller = testing.make_distiller(compile=False, supervised_weight=0.0)
        # A trained teacher was compiled, and its optimizer holds state (saved with it).
        teacher = self.distiller.teacher
        teacher.compile(optimizer="adam", loss=keras_ecl.losses.NegativeLogLikelihood())
        teacher.optimizer.build(teacher.weights)
        self.compile_with(metrics=True)
        self.weights = student_weights(self.distiller)
        # Users fit first (pre-train without labels, or train with them), then go on.
        self.fit(**first_fit)

    def compile_with(self, metrics):
        self.metrics = metrics
        self.call("compile", optimizer="adam", metrics=["accuracy"] if metrics else None)

    def call(self, method, **kwargs):
        """`distiller.<method>(**kwargs)`, which must neither fail nor warn."""
        with testing.warnings_as_errors():  # a warning here is one the user did not cause
            return getattr(self.distiller, method)(**kwargs)

    @rule(metrics=st.booleans())
    def recompile(self, metrics):
        self.compile_with(metrics)

    @rule(
        source=st.sampled_from(SOURCES),
        labels=st.booleans(),
        weighted=st.booleans(),
        batch_size=st.sampled_from(BATCH_SIZES),
        validate=st.booleans(),
    )
    def fit(self, source, labels, weighted, batch_size, validate):
        kwargs = data_arguments(source, labels, weighted, batch_size)
        if validate:
            kwargs["validation_data"] = (X[:16], Y[:16]) if labels else X[:16]
        history = self.call("fit", epochs=1, verbose=0, **kwargs).history
        assert all(np.isfinite(values).all() for values in history.values()), history
        assert ("accuracy" in history) == (self.metrics and labels), history
        after = student_weights(self.distiller)
        changed = [not np.array_equal(a, b) for a, b in zip(after, self.weights, strict=True)]
        assert any(changed), "the fit updated no weight"
        self.weights = after
        self.scores.clear()

    @rule(
        source=st.sampled_from(SOURCES),
        labels=st.booleans(),
        batch_size=st.sampled_from(BATCH_SIZES),
    )
    def evaluate(self, source, labels, batch_size):
        kwargs = data_arguments(source, labels, False, batch_size)
        scores = self.call("evaluate", verbose=0, return_dict=True, **kwargs)
        assert all(np.isfinite(value) for value in scores.values()), scores
        assert ("accuracy" in scores) == (self.metrics and labels), scores
        # The same data and weights score the same (evaluation draws from a fixed seed).
        key = (labels, batch_size)
        if key in self.scores:
            np.testing.assert_allclose(
                [scores[name] for name in sorted(scores)],
                [self.scores[key][name] for name in sorted(scores)],
                rtol=1e-5,
            )
        self.scores[key] = scores

    @rule(source=st.sampled_from(SOURCES), batch_size=st.sampled_from(BATCH_SIZES))
    def predict(self, source, batch_size):
        kwargs = data_arguments(source, False, False, batch_size)
        if source == "array":  # predict takes no labels or weights, even None
            kwargs = {"x": X, "batch_size": batch_size}
        outputs = self.call("predict", verbose=0, **kwargs)
        expected = self.distiller.student(X, training=False)
        np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-6)

    @rule(export=st.booleans())
    def save(self, export):
        self.saves += 1
        if export:
            self.export_student()
            return
        path = os.path.join(self.directory, f"distiller_{self.saves}.keras")
        self.call("save", filepath=path)
        with testing.warnings_as_errors():
            restored = keras.saving.load_model(path)
        assert type(restored) is keras_ecl.Distiller
        testing.assert_same_weights(student_weights(restored), self.weights)
        assert restored.compiled
        np.testing.assert_array_equal(
            restored.predict(X, verbose=0), self.distiller.predict(X, verbose=0)
        )
        self.distiller = restored

    def export_student(self):
        path = os.path.join(self.directory, f"student_{self.saves}")
        with testing.warnings_as_errors():
            keras_ecl.export_student(self.distiller, path, format="tf_saved_model")
        served = tf.saved_model.load(path).signatures["serving_default"](inputs=tf.constant(X))
        expected = keras.ops.softmax(self.distiller.student(X, training=False))
        np.testing.assert_allclose(served["probabilities"], expected, rtol=1e-5, atol=1e-6)

    @rule(mistake=st.sampled_from(sorted(MISTAKES)), batch_size=st.sampled_from(BATCH_SIZES))
    def mistake_then_correction(self, mistake, batch_size):
        method, argument, bad = MISTAKES[mistake]
        good = {"x": X, "batch_size": batch_size, "verbose": 0}
        if method != "predict":
            good["y"] = Y
        self.refused(method, argument, {**good, **bad})
        # The corrected call works at once, without a new `compile`.
        self.call(method, **good)
        if method == "fit":
            self.weights = student_weights(self.distiller)
            self.scores.clear()

    def refused(self, method, argument, kwargs):
        """The call raises a keras_ecl error naming `argument` and changes no weight."""
        before = student_weights(self.distiller)
        with pytest.raises((ValueError, TypeError), match=f"`{argument}`"):
            self.call(method, **kwargs)
        testing.assert_same_weights(student_weights(self.distiller), before)

    @invariant()
    def only_fits_change_the_weights(self):
        weights = student_weights(self.distiller)
        assert all(np.isfinite(w).all() for w in weights)
        testing.assert_same_weights(weights, self.weights)


# `make test`'s size (see the module docstring); the deep profile runs its own.
if os.environ.get("HYPOTHESIS_PROFILE") != "deep":
    DistillerMachine.TestCase.settings = hypothesis.settings(
        hypothesis.settings.default, max_examples=8, stateful_step_count=6
    )
TestDistillerMachine = DistillerMachine.TestCase
