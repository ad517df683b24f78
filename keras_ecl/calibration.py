"""Calibrate a teacher on held-out data before distilling it: `calibrate`.

A faithful student copies its teacher's confidence, overconfidence included
(on the toy regression ECL's student had a worse test NLL than KD's because it
matched an overconfident teacher better). `calibrate` fits, by negative
log-likelihood on validation data, one temperature for a `Categorical` teacher
(temperature scaling, Guo et al., 2017) or one scale factor per output for a
`Normal`/`Laplace` teacher (variance scaling, Kuleshov et al., 2018), and
returns the teacher wrapped so that its outputs carry the fitted factor. The
wrapper is a Keras model that saves and loads with the Distiller; per step it
costs one multiply of the logits (a few elementwise ops per regression output).
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_ecl import heads as heads_lib
from keras_ecl.utils import PACKAGE, as_numeric_array, check_integer

__all__ = ["Calibrated", "calibrate"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class Calibrated(keras.Model):
    """A frozen teacher whose outputs are recalibrated by fitted factors.

    Built by `calibrate`; `factors` holds the temperature (`Categorical`) or
    the scale factor of each output (`Normal`/`Laplace`), and `report` the
    teacher's validation NLL and calibration error before and after.

    Args:
        teacher: The `keras.Model` to wrap (frozen).
        head: The `keras_ecl.heads.Head` (or its name) of its outputs.
        factors: The fitted factors, positive: a temperature, or one scale
            factor per output.
        report: Optional dict of validation figures, kept for reading.
        **kwargs: Forwarded to `keras.Model`.
    """

    def __init__(self, teacher, head, factors, report=None, **kwargs):
        kwargs.setdefault("name", f"calibrated_{teacher.name}")
        super().__init__(**kwargs)
        self.teacher = teacher
        self.head = heads_lib.get(head)
        factors = np.asarray(factors, "float32").reshape(-1)
        if factors.size == 0 or not np.all(np.isfinite(factors)) or np.any(factors <= 0):
            raise ValueError(
                f"`factors` must be positive finite numbers. Received: factors={factors.tolist()}"
            )
        self.factors = factors
        self.report = dict(report or {})
        teacher.trainable = False
        self.built = teacher.built

    def call(self, inputs, training=False):
        outputs = _combined(self.teacher, self.head, self.teacher(inputs, training=False))
        log_factor = tf.constant(np.log(self.factors), tf.float32)
        return self.head.calibrated(outputs, log_factor)

    def compute_output_shape(self, input_shape):
        return self.teacher.compute_output_shape(input_shape)

    def get_config(self):
        return {
            "name": self.name,
            "teacher": keras.saving.serialize_keras_object(self.teacher),
            "head": keras.saving.serialize_keras_object(self.head),
            "factors": self.factors.tolist(),
            "report": self.report,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        config["head"] = heads_lib.get(config["head"])
        return cls(**config)


def calibrate(teacher, validation_data, head="categorical", batch_size=256, verbose="auto"):
    """Returns `teacher` calibrated on `validation_data`, as a `Calibrated` model.

    Runs the teacher once over the validation data, then fits by negative
    log-likelihood (L-BFGS on the log of the factors, so they stay positive):
    one temperature dividing the logits for `Categorical`, one factor
    multiplying each output's scale for `Normal`/`Laplace`. The figures before
    and after (NLL, and the calibration error: top-label ECE over 15 bins, or
    the central-interval coverage error for regression) are printed and kept
    in `.report`. Use held-out data the teacher was not trained on, never the
    test split.

    An ensemble (`keras_ecl.teachers.Ensemble`) is calibrated as one model:
    its members are combined by `head` (their mixture, or its moments), and
    the calibrated teacher is that combination, no longer an ensemble
    (`uncertainty_weighting="disagreement"` then needs the uncalibrated one).

    Args:
        teacher: A trained `keras.Model` with raw outputs for `head`.
        validation_data: `(x, y)` arrays, or a `tf.data.Dataset` of `(x, y)`
            batches.
        head: The `keras_ecl.heads.Head` (or its name) of the teacher's
            outputs; the temperature of a `Categorical` head does not enter
            (calibration is at temperature 1). Defaults to "categorical".
        batch_size: Rows per teacher call over arrays, >= 1. Defaults to 256.
        verbose: Keras' `predict` verbosity, and whether to print the report
            (0 prints nothing). Defaults to "auto".

    Returns:
        A `Calibrated` model (the teacher, frozen, plus its factors).

    Raises:
        ValueError: If `teacher` is not a Keras model or has several outputs
            (or `head` is a `MultiOutput`), `validation_data` is
            not `(x, y)` or a dataset of them, is empty, holds more or fewer labels
            than inputs, or the teacher's outputs on it are not finite.
        TypeError: If the inputs or labels of `validation_data` are not numbers.

    Example:

    ```python
    teacher = keras_ecl.calibrate(teacher, (x_val, y_val))  # prints NLL/ECE
    teacher.factors  # [temperature]
    distiller = keras_ecl.Distiller(student, teacher, mode="ecl")
    ```
    """
    if not isinstance(teacher, keras.Model):
        raise ValueError(
            f"`teacher` must be a keras.Model. Received: teacher={type(teacher).__name__}"
        )
    head = heads_lib.get(head)
    if isinstance(head, heads_lib.MultiOutput) or _output_count(teacher) > 1:
        raise ValueError(
            "`calibrate` fits the factors of one output under one head. Calibrate each "
            "output of a multi-output teacher apart, e.g. calibrate(keras.Model("
            "teacher.inputs, teacher.output['class']), ...). Received: "
            f"head={head!r}, teacher with {_output_count(teacher)} output(s)"
        )
    check_integer("batch_size", batch_size, 1)
    outputs, y = _teacher_outputs(teacher, validation_data, batch_size, verbose)
    outputs = np.asarray(_combined(teacher, head, outputs), "float32")
    if not np.all(np.isfinite(outputs)):
        raise ValueError(
            "The teacher's outputs on `validation_data` contain NaN or inf: there is "
            "nothing to calibrate. Check the teacher's weights and the data."
        )
    size = head.calibration_size(head.event_size(outputs.shape, "teacher"))
    outputs_tensor, y_tensor = tf.constant(outputs), tf.constant(y)

    def nll(log_factor):
        calibrated = head.calibrated(outputs_tensor, log_factor)
        return tf.reduce_mean(head.negative_log_likelihood(y_tensor, calibrated))

    def value_and_gradient(log_factor):
        return tfp.math.value_and_gradient(nll, log_factor)

    result = tfp.optimizer.lbfgs_minimize(
        value_and_gradient, initial_position=tf.zeros([size]), max_iterations=200
    )
    log_factor = result.position
    if not bool(result.converged) or not np.all(np.isfinite(log_factor)):
        log_factor = _fallback(nll, size)
    factors = np.exp(log_factor.numpy())
    report = {
        "nll_before": float(nll(tf.zeros([size]))),
        "nll_after": float(nll(log_factor)),
        "calibration_error_before": head.calibration_error(y, outputs),
        "calibration_error_after": head.calibration_error(
            y, head.calibrated(outputs_tensor, log_factor).numpy()
        ),
        "rows": int(len(outputs)),
    }
    if verbose != 0:
        name = "temperature" if size == 1 and head.event_name == "classes" else "scale factors"
        print(
            f"calibrate: {name} {np.round(factors, 4).tolist()}; validation NLL "
            f"{report['nll_before']:.4f} -> {report['nll_after']:.4f}, calibration error "
            f"{report['calibration_error_before']:.4f} -> "
            f"{report['calibration_error_after']:.4f} ({report['rows']} rows)"
        )
    return Calibrated(teacher, head, factors, report)


def _output_count(model):
    """How many outputs a functional model has (1 when it has no symbolic ones)."""
    try:
        return len(model.outputs or [None])
    except (AttributeError, ValueError):
        return 1


def _combined(teacher, head, outputs):
    """An ensemble's members' outputs combined by `head` (its mixture); others as they are."""
    if hasattr(teacher, "distillation_head"):
        return teacher.distillation_head(head).combined(outputs)
    return outputs


def _fallback(nll, size, steps=500):
    """Adam on the log factors, if L-BFGS did not converge."""
    log_factor = tf.Variable(tf.zeros([size]))
    optimizer = keras.optimizers.Adam(0.05)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            value = nll(log_factor)
        optimizer.apply([tape.gradient(value, log_factor)], [log_factor])
    return tf.convert_to_tensor(log_factor)


def _teacher_outputs(teacher, validation_data, batch_size, verbose):
    """The teacher's outputs on the validation inputs, and the labels, as arrays."""
    if isinstance(validation_data, tf.data.Dataset):
        outputs, labels = [], []
        for batch in validation_data:
            if not isinstance(batch, (tuple, list)) or len(batch) < 2:
                raise ValueError(
                    "`validation_data` must yield (x, y) batches: calibration fits "
                    "the teacher's likelihood of the labels."
                )
            outputs.append(np.asarray(teacher(batch[0], training=False)))
            labels.append(as_numeric_array(batch[1], "validation_data"))
        if not outputs:
            raise ValueError("`validation_data` has no rows: calibration fits on labelled rows.")
        return np.concatenate(outputs), np.concatenate(labels)
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError(
            "`validation_data` must be (x, y) or a tf.data.Dataset of (x, y) batches. "
            f"Received: {type(validation_data).__name__}"
            + (f" of length {len(validation_data)}" if hasattr(validation_data, "__len__") else "")
        )
    x, y = validation_data
    if not isinstance(x, dict) and not _several_inputs(teacher):
        x = as_numeric_array(x, "validation_data[0]")  # lists of rows are one input
        rows = len(x) if x.ndim else 0
    else:
        rows = len(next(iter(x.values())) if isinstance(x, dict) else x[0])
    y = as_numeric_array(y, "validation_data[1]")
    if rows == 0:
        raise ValueError("`validation_data` has no rows: calibration fits on labelled rows.")
    labels = len(y) if y.ndim else 0
    if labels != rows:
        raise ValueError(
            f"`validation_data` has {rows} inputs but {labels} labels: they must match."
        )
    return teacher.predict(x, batch_size=batch_size, verbose=verbose), y


def _several_inputs(model):
    try:
        return len(model.inputs) > 1
    except (AttributeError, ValueError, TypeError):  # subclassed, not yet called
        return False
