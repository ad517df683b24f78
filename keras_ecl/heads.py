"""Heads: how a model's raw outputs become a `tfp.distributions` object.

A head owns the layout of a model's output tensor (logits, or `loc` and a raw
scale side by side) and builds the matching distribution in float32, so that the
losses can compare teacher and student with a closed-form KL divergence. Heads
hold no weights: `HeadLayer` is the small Keras layer that gives a backbone the
right number of output units.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_ecl.registry import Registry
from keras_ecl.utils import (
    PACKAGE,
    as_numeric_tensor,
    check_integer,
    check_positive,
    is_number,
)

__all__ = [
    "Categorical",
    "DecoupledCategorical",
    "Head",
    "HeadLayer",
    "Laplace",
    "MultiOutput",
    "Normal",
    "get",
    "register",
]

tfd = tfp.distributions
# The attribute through which a Distiller's student remembers its head, for
# `export_student(student)`.
STUDENT_HEAD = "keras_ecl_head"


class Head:
    """Base class: turns raw model outputs into a distribution per example.

    Subclasses define `distribution(outputs)`, `negative_log_likelihood`,
    `serving_outputs` and the number of output units per predicted value
    (`units_per_output`). A head also carries the rules of its outputs, so that
    nothing else switches on head types: `event_size` checks an output shape,
    `check_targets` checks labels eagerly, `initial_bias` starts a `HeadLayer`,
    and `event_name` says what a predicted value is in messages. Heads are
    stateless and serializable; `@keras_ecl.heads.register("name")` makes a new
    one resolvable by `get("name")` (see CONTRIBUTING.md).
    """

    units_per_output = 1
    # What one predicted value is called in messages: a class, or a regression output.
    event_name = "outputs"
    # What the head takes from a model, in messages.
    raw_outputs = "raw outputs"

    def distribution(self, outputs, argument="outputs"):
        """Returns the `tfd.Distribution` (float32) that `outputs` encode.

        `argument` names `outputs` in error messages.
        """
        raise NotImplementedError

    @staticmethod
    def _parameter_shape(distribution):
        return distribution.batch_shape

    def kl_divergence(self, teacher_outputs, student_outputs):
        """KL(teacher ‖ student) per example, summed over the event axis."""
        teacher = self.distribution(teacher_outputs, "teacher_outputs")
        student = self.distribution(student_outputs, "student_outputs")
        teacher_shape = self._parameter_shape(teacher)
        student_shape = self._parameter_shape(student)
        if not teacher_shape.is_compatible_with(student_shape):
            raise ValueError(
                "`teacher_outputs` and `student_outputs` must encode distributions of the "
                f"same shape. Received: teacher={tuple(teacher_shape)}, "
                f"student={tuple(student_shape)}"
            )
        return self._reduce_event(tfd.kl_divergence(teacher, student))

    def negative_log_likelihood(self, y, outputs):
        """-log p(y) under the distribution at temperature 1, per example."""
        raise NotImplementedError

    def uncertainty(self, outputs, measure="entropy"):
        """Per-example uncertainty: `"entropy"` or `"variance"` of the output."""
        dist = self.distribution(outputs)
        if measure == "entropy":
            return self._reduce_event(dist.entropy())
        if measure == "variance":
            return self._reduce_event(dist.variance())
        raise ValueError(
            f"`measure` must be one of 'entropy', 'variance'. Received: measure={measure!r}"
        )

    # Calibration (`keras_ecl.calibrate`): one factor per head, or per output.

    def calibration_size(self, event_size):
        """How many factors calibrate this head's outputs (1, or one per output)."""
        raise NotImplementedError(f"{type(self).__name__} defines no calibration.")

    def calibrated(self, outputs, log_factor):
        """Raw outputs whose distribution is recalibrated by `exp(log_factor)`."""
        raise NotImplementedError(f"{type(self).__name__} defines no calibration.")

    def calibration_error(self, y, outputs):
        """Expected calibration error of `outputs` against targets `y` (a float)."""
        raise NotImplementedError(f"{type(self).__name__} defines no calibration.")

    # Ensembles (`keras_ecl.teachers.Ensemble`): member outputs stacked on axis -2.

    def mixture_outputs(self, member_outputs, weights):
        """Raw outputs, in this head's layout, of the members' weighted mixture.

        Args:
            member_outputs: Raw outputs of `M` members stacked on axis -2,
                shape `(batch, ..., M, units)`.
            weights: `M` mixture weights summing to 1.

        Returns:
            A float32 tensor `(batch, ..., units)`: the mixture itself where the
                head's family holds it (`Categorical`), else the member of the
                family with the mixture's mean and variance (moment matching).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not combine ensemble members: define "
            "`mixture_outputs` (and `disagreement`) to distil from an Ensemble."
        )

    def mixture_kl(self, member_outputs, weights, student_outputs, samples, seed):
        """KL(mixture of the members ‖ student) per example.

        Exact where `mixture_outputs` is the mixture (the default); location-scale
        heads estimate it by Monte Carlo from `samples` draws (stateless `seed`).
        """
        return self.kl_divergence(self.mixture_outputs(member_outputs, weights), student_outputs)

    def disagreement(self, member_outputs, weights):
        """How much the members disagree, per example: the variance of their means."""
        means = self.distribution(member_outputs).mean()  # (batch, ..., M, event)
        return self._reduce_event(_weighted_variance(means, weights))

    def serving_outputs(self, outputs):
        """A dict of user-facing tensors (probabilities, or `loc`/`scale`)."""
        raise NotImplementedError

    def point_prediction(self, outputs):
        """What compiled metrics see: the logits, or the predicted `loc`."""
        return outputs

    def _checked(self, outputs, argument="outputs"):
        """Raw outputs as a float-castable tensor whose last axis fits the head."""
        outputs = as_numeric_tensor(outputs, argument)
        last = outputs.shape[-1]
        if last is not None and (last == 0 or last % self.units_per_output):
            raise ValueError(
                f"`{argument}` does not fit {type(self).__name__}: expected shape "
                f"(batch, ..., {self._layout_hint()}). Received: shape={tuple(outputs.shape)}"
            )
        return outputs

    def output_units(self, event_size):
        """How many output units a model needs to predict `event_size` values."""
        return self.units_per_output * event_size

    def event_size(self, output_shape, role="model"):
        """Checks an output shape against this head and returns its event size.

        Args:
            output_shape: Shape of the raw output, batch axis first.
            role: `"teacher"`, `"student"` or `"model"`, for the error message.

        Returns:
            The number of predicted values (classes, or regression outputs).

        Raises:
            ValueError: If the shape does not fit the head.
        """
        if isinstance(output_shape, dict):
            raise ValueError(
                f"The {role}'s output does not fit {type(self).__name__}: expected one "
                f"tensor. Received: a dict of outputs {list(output_shape)}; pass one head "
                "per output, e.g. head={'class': 'categorical', ...}"
            )
        output_shape = tuple(output_shape)
        if any(isinstance(dim, (list, tuple)) for dim in output_shape):
            raise ValueError(
                f"The {role}'s output does not fit {type(self).__name__}: expected one "
                f"tensor. Received: {len(output_shape)} outputs of shapes {output_shape}"
            )
        last = output_shape[-1] if len(output_shape) >= 2 else None
        if not last or last % self.units_per_output:
            raise ValueError(
                f"The {role}'s output does not fit {type(self).__name__}: "
                f"expected shape (batch, ..., {self._layout_hint()}). "
                f"Received: shape={output_shape}"
            )
        return last // self.units_per_output

    def output_rank(self, output_shape):
        """Rank of the raw output (batch axis included) of shape `output_shape`."""
        return len(output_shape[0] if isinstance(output_shape, list) else output_shape)

    def label_arrays(self, y, argument):
        """The labels `y` as a NumPy array (a structure of them for `MultiOutput`)."""
        del argument
        return np.asarray(y)

    def check_targets(self, y, event_size, output_rank, argument):
        """Checks a NumPy array of labels or targets eagerly, before training.

        Called on the labels `fit` and `evaluate` receive (after the generic
        checks: numbers, no NaN). A head overrides it with its own rules (class
        ids or one-hot rows, regression targets); the base class checks nothing,
        leaving mistakes to fail inside the graph.

        Args:
            y: The labels, a NumPy array with a batch axis.
            event_size: The models' number of predicted values.
            output_rank: Rank of the models' raw output, batch axis included.
            argument: The argument that holds `y`, for error messages.

        Raises:
            ValueError: If `y` does not fit the models' outputs.
        """

    def invalid_targets(self, y, outputs):
        """Flags, inside a traced step, the examples whose labels this head cannot learn from.

        The in-graph twin of `check_targets`, for batches `fit` could not peek
        at (later batches of a dataset, a PyDataset, a generator): plain
        tensor ops, so it also runs under XLA. The base class flags
        non-finite values.

        Args:
            y: A batch of labels (a tensor, batch axis first).
            outputs: The student's raw outputs on the batch.

        Returns:
            A bool tensor of shape `(batch,)`: True where a row is invalid.
        """
        del outputs  # regression targets need only be finite
        if not y.dtype.is_floating:  # integers are always finite
            return tf.zeros(tf.shape(y)[:1], tf.bool)
        return _any_per_row(tf.logical_not(tf.math.is_finite(y)))

    def target_rule(self, event_size):
        """What valid labels are, for the error of a bad batch found in the step."""
        return f"finite numbers, {event_size} per example"

    def check_outputs(self, outputs, role, argument):
        """Refuses raw outputs that are a softmax's probabilities, checked eagerly.

        Every head takes raw outputs (logits, or `[loc, raw_scale]`). A model
        that ends in a softmax (the most common distillation mistake) still
        trains, silently on flattened distributions: for `Categorical` the
        softmax would be applied twice. Rows that all lie in [0, 1] and sum to
        1 are not raw outputs.

        Args:
            outputs: The model's outputs on the first rows of the data.
            role: "teacher" or "student", for the message.
            argument: The argument that holds the data, for the message.

        Raises:
            ValueError: If every row is a probability vector.
        """
        if isinstance(outputs, (list, tuple)):
            return
        values = np.asarray(outputs, dtype="float64")
        if values.ndim < 2 or values.shape[-1] < 2 or not np.all(np.isfinite(values)):
            return
        rows_sum_to_one = np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)
        if rows_sum_to_one and values.min() >= 0 and values.max() <= 1:
            raise ValueError(
                f"The {role}'s outputs on the first rows of `{argument}` are probabilities "
                f"(every row in [0, 1] and summing to 1), but {type(self).__name__} takes "
                f"{self.raw_outputs}. Remove the {role}'s final softmax (e.g. "
                '`Dense(n)` instead of `Dense(n, activation="softmax")`), or build the '
                f"{role} from the layer before it."
            )

    def initial_bias(self, event_size, initial_scale):
        """Starting bias of the `HeadLayer` producing this head's outputs, or None.

        None keeps Keras' default (zeros). Location-scale heads start their
        raw scale at `initial_scale`.
        """
        return None

    def _layout_hint(self):
        return "num_classes"

    @staticmethod
    def _reduce_event(values):
        return values

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


# Heads by short name: what `get()` resolves, Keras deserializes and the tests cover.
HEADS = Registry("head", Head)
register = HEADS.register


@HEADS.register("categorical")
class Categorical(Head):
    """Class probabilities from logits: `tfd.Categorical(logits / temperature)`.

    The distillation KL is multiplied by `temperature**2` so its gradients keep
    the scale of the hard-label loss (Hinton et al., 2015). With
    `standardize=True` each model's logits are z-scored per example before the
    temperature (logit standardisation, Sun et al., 2024), so the student
    matches the teacher's logit *relations* and not their range. The
    supervised negative log-likelihood always uses the raw logits at
    temperature 1.

    Args:
        temperature: Softening temperature of the distillation target, > 0.
            Defaults to 1.0.
        standardize: Z-score the logits, `(z - mean) / (1e-7 + std)` with the
            unbiased std over classes as the reference code does, before the
            temperature. Defaults to False.

    Example:

    ```python
    head = keras_ecl.heads.Categorical(temperature=4.0)
    dist = head.distribution(tf.constant([[2.0, 0.0, -2.0]]))
    dist.probs_parameter()  # softened class probabilities
    ```

    References:
        - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
        - [Sun et al., 2024](https://arxiv.org/abs/2403.01427)
    """

    event_name = "classes"
    raw_outputs = "logits (it applies the softmax itself; a second one flattens every distribution)"

    def __init__(self, temperature=1.0, standardize=False):
        check_positive("temperature", temperature)
        if not isinstance(standardize, bool):
            raise ValueError(
                f"`standardize` must be True or False. Received: standardize={standardize!r}"
            )
        self.temperature = float(temperature)
        self.standardize = standardize

    def scaled_logits(self, outputs, argument="outputs"):
        """The float32 logits of the distillation target: standardized if asked, over T."""
        logits = tf.cast(self._checked(outputs, argument), tf.float32)
        if self.standardize:
            classes = tf.cast(tf.shape(logits)[-1], tf.float32)
            mean = tf.reduce_mean(logits, axis=-1, keepdims=True)
            variance = tf.reduce_sum(tf.square(logits - mean), axis=-1, keepdims=True)
            logits = (logits - mean) / (1e-7 + tf.sqrt(variance / (classes - 1.0)))
        return logits / self.temperature

    def distribution(self, outputs, argument="outputs"):
        return tfd.Categorical(logits=self.scaled_logits(outputs, argument))

    @staticmethod
    def _parameter_shape(distribution):
        return distribution.logits.shape

    def event_size(self, output_shape, role="model"):
        classes = super().event_size(output_shape, role)
        if classes < 2:
            raise ValueError(
                f"The {role}'s output does not fit Categorical: it needs a logit per "
                f"class, at least 2. Received: shape={tuple(output_shape)}. For a "
                "regression output use head='normal' or 'laplace' (units [loc, raw_scale])."
            )
        return classes

    def kl_divergence(self, teacher_outputs, student_outputs):
        return super().kl_divergence(teacher_outputs, student_outputs) * (self.temperature**2)

    def negative_log_likelihood(self, y, outputs):
        logits = tf.cast(self._checked(outputs), tf.float32)
        y = as_numeric_tensor(y, "y")
        same_rank = y.shape.rank == logits.shape.rank
        # keras.losses.Loss casts labels to float, so the dtype cannot tell
        # class ids from one-hot rows: the width of the last axis does.
        if same_rank and y.shape[-1] == logits.shape[-1] and logits.shape[-1] != 1:
            return -tf.reduce_sum(tf.cast(y, tf.float32) * tf.nn.log_softmax(logits), axis=-1)
        if same_rank and y.shape[-1] == 1:
            y = tf.squeeze(y, axis=-1)
        if not y.shape.is_compatible_with(logits.shape[:-1]):
            raise ValueError(
                "`y` must hold a class id per example (shape "
                f"{tuple(logits.shape[:-1])}) or one-hot rows (shape {tuple(logits.shape)}). "
                f"Received: shape={tuple(y.shape)}"
            )
        classes = logits.shape[-1]
        if tf.executing_eagerly() and classes is not None and tf.size(y) > 0:
            # Out-of-range ids fail deep in the kernel; graphs cannot check cheaply.
            low, high = float(tf.reduce_min(y)), float(tf.reduce_max(y))
            if low < 0 or high >= classes:
                raise ValueError(
                    f"`y` must hold class ids in [0, {classes}). "
                    f"Received: ids in [{low:g}, {high:g}]"
                )
        y = tf.cast(y, tf.int32)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)

    def check_targets(self, y, event_size, output_rank, argument):
        """Class ids (one axis less than the outputs, or a trailing axis of 1) or one-hot rows."""
        class_ids = y.ndim == output_rank - 1 or (
            y.ndim == output_rank and y.shape[-1] == 1 and event_size > 1
        )
        if class_ids:
            if y.size and (y.min() < 0 or y.max() >= event_size or np.any(y != np.round(y))):
                raise ValueError(
                    f"Labels of `{argument}` must be integer class ids in "
                    f"[0, {event_size}) for models with {event_size} classes. "
                    f"Received: labels in [{y.min()}, {y.max()}]"
                )
        elif y.shape[-1] != event_size:
            raise ValueError(
                f"One-hot labels of `{argument}` must have {event_size} columns, one per "
                f"class. Received: shape={y.shape}"
            )

    def invalid_targets(self, y, outputs):
        """Class ids outside [0, classes) or not integers; one-hot rows with a negative entry."""
        classes = outputs.shape[-1]
        one_hot = y.shape.rank == outputs.shape.rank and y.shape[-1] == classes != 1
        if y.dtype.is_integer and y.dtype not in (tf.int32, tf.int64):
            y = tf.cast(y, tf.int64)  # a narrow type cannot hold every class count
        # Integer ids need two comparisons; floats also finiteness and wholeness.
        bad = y < tf.zeros([], y.dtype)
        if y.dtype.is_floating:
            bad = tf.logical_or(bad, tf.logical_not(tf.math.is_finite(y)))
        if not one_hot and classes is not None:
            bad = tf.logical_or(bad, y >= tf.cast(classes, y.dtype))
            if y.dtype.is_floating:
                bad = tf.logical_or(bad, y != tf.floor(y))
        return _any_per_row(bad)

    def target_rule(self, event_size):
        return (
            f"integer class ids in [0, {event_size}) (or one-hot rows) for models with "
            f"{event_size} classes"
        )

    def uncertainty(self, outputs, measure="entropy"):
        if measure == "variance":
            # Total variance of the one-hot vector: 1 - sum(p^2).
            probs = self.distribution(outputs).probs_parameter()
            return 1.0 - tf.reduce_sum(tf.square(probs), axis=-1)
        return super().uncertainty(outputs, measure)

    def calibration_size(self, event_size):
        return 1  # temperature scaling (Guo et al., 2017): one scalar

    def calibrated(self, outputs, log_factor):
        """The logits divided by the fitted temperature `exp(log_factor)`."""
        return tf.cast(outputs, tf.float32) * tf.exp(-tf.cast(log_factor, tf.float32))

    def calibration_error(self, y, outputs, bins=15):
        """Top-label ECE: `sum_b |accuracy_b - confidence_b| * share_b` over 15 bins."""
        probs = tf.nn.softmax(tf.cast(outputs, tf.float32)).numpy()
        probs = probs.reshape(-1, probs.shape[-1])
        labels = np.asarray(y).reshape(-1)
        if labels.size != len(probs):  # one-hot rows
            labels = np.asarray(y).reshape(len(probs), -1).argmax(-1)
        confidence, correct = probs.max(-1), probs.argmax(-1) == labels
        which = np.minimum((confidence * bins).astype(int), bins - 1)
        error = 0.0
        for b in range(bins):
            members = which == b
            if members.any():
                gap = correct[members].mean() - confidence[members].mean()
                error += abs(gap) * members.mean()
        return float(error)

    def mixture_outputs(self, member_outputs, weights):
        """`T * log(sum_i w_i softmax(z_i / T))`: a mixture of categoricals is one.

        The head turns these logits back into the mixture's probabilities at
        its temperature (with `standardize=True` it z-scores them first, as it
        does any teacher's logits).
        """
        log_probs = tf.nn.log_softmax(self.scaled_logits(member_outputs), axis=-1)
        log_weights = tf.math.log(tf.cast(weights, tf.float32))[:, None]
        return tf.reduce_logsumexp(log_probs + log_weights, axis=-2) * self.temperature

    def disagreement(self, member_outputs, weights):
        """Mutual information: entropy of the mixture minus the members' mean entropy."""
        log_probs = tf.nn.log_softmax(self.scaled_logits(member_outputs), axis=-1)
        weights = tf.cast(weights, tf.float32)
        entropies = -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)
        mean_log_probs = tf.reduce_logsumexp(log_probs + tf.math.log(weights)[:, None], axis=-2)
        mixture_entropy = -tf.reduce_sum(tf.exp(mean_log_probs) * mean_log_probs, axis=-1)
        return mixture_entropy - tf.reduce_sum(entropies * weights, axis=-1)

    def serving_outputs(self, outputs):
        logits = tf.cast(self._checked(outputs), tf.float32)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    def get_config(self):
        return {"temperature": self.temperature, "standardize": self.standardize}


@HEADS.register("decoupled_categorical")
class DecoupledCategorical(Categorical):
    """Categorical head whose distillation divergence is decoupled KD (DKD).

    DKD splits KL(teacher ‖ student) at the target class: a binary KL of
    "target vs. the rest" (TCKD, weight `alpha`) and a KL between the
    distributions over the non-target classes (NCKD, weight `beta`), each
    times `temperature**2`, as in Zhao et al. (2022) and mdistiller's
    `dkd_loss`. The target is the teacher's top class on every input: on
    synthetic inputs there is no label, and on real training inputs it is the
    label wherever the teacher fits its training data (the published DKD uses
    the label). Everything else (NLL, serving, uncertainty) is `Categorical`'s.

    Args:
        temperature: Softening temperature, > 0. Defaults to 4.0 (DKD's).
        alpha: Weight of TCKD, >= 0. Defaults to 1.0.
        beta: Weight of NCKD, >= 0. Defaults to 8.0.
        standardize: Z-score the logits first (DKD + logit standardisation).
            Defaults to False.

    Example:

    ```python
    head = keras_ecl.heads.DecoupledCategorical(temperature=4.0, alpha=1.0, beta=8.0)
    distiller = keras_ecl.Distiller(student, teacher, head=head, mode="kd")
    ```

    References:
        - [Zhao et al., 2022](https://arxiv.org/abs/2203.08679)
    """

    def __init__(self, temperature=4.0, alpha=1.0, beta=8.0, standardize=False):
        super().__init__(temperature=temperature, standardize=standardize)
        for name, value in (("alpha", alpha), ("beta", beta)):
            if not is_number(value) or not 0 <= value < float("inf"):
                raise ValueError(
                    f"`{name}` must be a finite number >= 0. Received: {name}={value!r}"
                )
        self.alpha = float(alpha)
        self.beta = float(beta)

    def kl_divergence(self, teacher_outputs, student_outputs):
        teacher = self.scaled_logits(teacher_outputs, "teacher_outputs")
        student = self.scaled_logits(student_outputs, "student_outputs")
        if not teacher.shape.is_compatible_with(student.shape):
            raise ValueError(
                "`teacher_outputs` and `student_outputs` must encode distributions of the "
                f"same shape. Received: teacher={tuple(teacher.shape)}, "
                f"student={tuple(student.shape)}"
            )
        target = tf.one_hot(tf.argmax(teacher, axis=-1), tf.shape(teacher)[-1], dtype=tf.float32)
        tckd = _binary_kl(*(_target_log_probs(z, target) for z in (teacher, student)))
        # The non-target classes alone: the target pushed out of the softmax, as mdistiller does.
        teacher_rest = tf.nn.log_softmax(teacher - 1000.0 * target)
        student_rest = tf.nn.log_softmax(student - 1000.0 * target)
        nckd = tf.reduce_sum(tf.exp(teacher_rest) * (teacher_rest - student_rest), axis=-1)
        return (self.alpha * tckd + self.beta * nckd) * (self.temperature**2)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


def _weighted_variance(values, weights):
    """Variance over axis -2 (the members) under `weights`, shape `(..., event)`."""
    weights = tf.cast(weights, tf.float32)[:, None]
    mean = tf.reduce_sum(weights * values, axis=-2, keepdims=True)
    return tf.reduce_sum(weights * tf.square(values - mean), axis=-2)


def _any_per_row(flags):
    """`(batch,)` bools: whether any flag of each example is set."""
    if flags.shape.rank == 1:
        return flags
    return tf.reduce_any(tf.reshape(flags, [tf.shape(flags)[0], -1]), axis=-1)


def _target_log_probs(scaled_logits, target):
    """`(log p_target, log (1 - p_target))` from scaled logits, in log space."""
    log_probs = tf.nn.log_softmax(scaled_logits)
    log_target = tf.reduce_sum(log_probs * target, axis=-1)
    log_rest = tf.reduce_logsumexp(log_probs - 1000.0 * target, axis=-1)
    return log_target, log_rest


def _binary_kl(teacher, student):
    """KL between two Bernoullis given as `(log p, log (1 - p))` pairs."""
    (teacher_in, teacher_out), (student_in, student_out) = teacher, student
    return tf.exp(teacher_in) * (teacher_in - student_in) + tf.exp(teacher_out) * (
        teacher_out - student_out
    )


class _LocationScale(Head):
    """A per-output location-scale distribution from `[loc, raw_scale]` units.

    The raw output's last axis holds `2 * event_size` units: the first half is
    `loc`, the second half goes through `softplus(raw) + min_scale`. A list or
    tuple `(loc, raw_scale)` of two tensors is accepted too.
    """

    units_per_output = 2
    raw_outputs = "`[loc, raw_scale]` columns, not a classifier's probabilities"
    _distribution_class = None

    def __init__(self, min_scale=1e-3):
        check_positive("min_scale", min_scale)
        self.min_scale = float(min_scale)

    def _raw_parameters(self, outputs, argument="outputs"):
        """`(loc, raw_scale)` from a pair of outputs or one `[loc, raw_scale]` tensor."""
        if isinstance(outputs, (list, tuple)):
            if len(outputs) != 2:
                raise ValueError(
                    f"`{argument}` must be one [loc, raw_scale] tensor or a pair "
                    f"(loc, raw_scale). Received: {len(outputs)} tensors"
                )
            loc = as_numeric_tensor(outputs[0], f"{argument}[0] (loc)")
            raw_scale = as_numeric_tensor(outputs[1], f"{argument}[1] (raw_scale)")
            if not loc.shape.is_compatible_with(raw_scale.shape):
                raise ValueError(
                    f"The `loc` and `raw_scale` of `{argument}` must have the same shape. "
                    f"Received: loc={tuple(loc.shape)}, raw_scale={tuple(raw_scale.shape)}"
                )
            return loc, raw_scale
        return tuple(tf.split(self._checked(outputs, argument), 2, axis=-1))

    def split(self, outputs, argument="outputs"):
        """Returns `(loc, scale)` float32 tensors from raw outputs."""
        loc, raw_scale = self._raw_parameters(outputs, argument)
        loc = tf.cast(loc, tf.float32)
        scale = tf.nn.softplus(tf.cast(raw_scale, tf.float32)) + self.min_scale
        return loc, scale

    def distribution(self, outputs, argument="outputs"):
        loc, scale = self.split(outputs, argument)
        return self._distribution_class(loc=loc, scale=scale)

    def negative_log_likelihood(self, y, outputs):
        dist = self.distribution(outputs)
        y = tf.cast(as_numeric_tensor(y, "y"), tf.float32)
        if y.shape.rank == dist.batch_shape.rank - 1:
            y = y[..., None]
        if not y.shape.is_compatible_with(dist.batch_shape):
            raise ValueError(
                f"`y` must have the shape of the predicted `loc`, {tuple(dist.batch_shape)}. "
                f"Received: shape={tuple(y.shape)}"
            )
        return self._reduce_event(-dist.log_prob(y))

    def calibration_size(self, event_size):
        return event_size  # variance scaling (Kuleshov et al., 2018): one per output

    def calibrated(self, outputs, log_factor):
        """`[loc, raw_scale]` with every scale multiplied by its factor `exp(log_factor)`."""
        loc, scale = self.split(outputs)
        scale = scale * tf.exp(tf.cast(log_factor, tf.float32))
        raw = tfp.math.softplus_inverse(tf.maximum(scale - self.min_scale, 1e-6))
        return tf.concat([loc, raw], axis=-1)

    def calibration_error(self, y, outputs, levels=10):
        """Mean `|coverage - level|` of the central intervals at 10 levels in (0, 1).

        The regression analogue of ECE (Kuleshov et al., 2018): a calibrated
        model's 80 % interval holds 80 % of the targets.
        """
        dist = self.distribution(outputs)
        y = np.asarray(y, "float32").reshape(tuple(dist.batch_shape))
        pit = dist.cdf(y).numpy()  # uniform on [0, 1] if calibrated
        level = (np.arange(levels) + 0.5) / levels
        inside = np.abs(pit[..., None] - 0.5) <= level / 2
        coverage = inside.reshape(-1, levels).mean(0)
        return float(np.mean(np.abs(coverage - level)))

    def mixture_outputs(self, member_outputs, weights):
        """`[loc, raw_scale]` of the family member with the mixture's mean and variance."""
        locs, scales = self.split(member_outputs)
        weights = tf.cast(weights, tf.float32)[:, None]
        loc = tf.reduce_sum(weights * locs, axis=-2)
        variance = _weighted_variance(locs, weights[:, 0]) + tf.reduce_sum(
            weights * self._variance(scales), axis=-2
        )
        scale = tf.sqrt(variance / self._variance(tf.constant(1.0)))
        raw = tf.maximum(scale - self.min_scale, 1e-6)
        return tf.concat([loc, tfp.math.softplus_inverse(raw)], axis=-1)

    def _variance(self, scale):
        """The family's variance at `scale` (Normal: scale**2; Laplace: 2 scale**2)."""
        return self._distribution_class(loc=tf.zeros_like(scale), scale=scale).variance()

    def mixture_kl(self, member_outputs, weights, student_outputs, samples, seed):
        """Monte-Carlo KL from the mixture: `samples` draws of it per example.

        `mean_s [log mixture(y_s) - log student(y_s)]`, `y_s` drawn from the
        mixture with a stateless `seed`; the gradient reaches the student
        through its log-density only. Costs `samples * (M + 1)` log-densities
        per output, against one closed-form KL for moment matching.
        """
        locs, scales = self.split(member_outputs)
        # MixtureSameFamily wants the component axis last: (batch, ..., event, M).
        components = self._distribution_class(
            loc=tf.experimental.numpy.swapaxes(locs, -1, -2),
            scale=tf.experimental.numpy.swapaxes(scales, -1, -2),
        )
        weights = tf.cast(weights, tf.float32)
        mixture = tfd.MixtureSameFamily(
            tfd.Categorical(probs=tf.broadcast_to(weights, tf.shape(components.loc))),
            components,
        )
        draws = tf.stop_gradient(mixture.sample(samples, seed=seed))
        student = self.distribution(student_outputs, "student_outputs")
        gap = mixture.log_prob(draws) - student.log_prob(draws)
        return self._reduce_event(tf.reduce_mean(gap, axis=0))

    def serving_outputs(self, outputs):
        loc, scale = self.split(outputs)
        return {"loc": loc, "scale": scale}

    def check_targets(self, y, event_size, output_rank, argument):
        """One target per regression output: a column each, or no axis for one output."""
        size = 1 if y.ndim == output_rank - 1 else y.shape[-1]
        if size != event_size:
            raise ValueError(
                f"Targets of `{argument}` must have {event_size} column(s), one per "
                f"regression output of the models. Received: shape={y.shape}"
            )

    def initial_bias(self, event_size, initial_scale):
        """Zero `loc`, and a raw scale that `split` turns into `initial_scale`."""
        raw = max(initial_scale - self.min_scale, 1e-6)
        inverse_softplus = float(tfp.math.softplus_inverse(raw))
        return np.concatenate(
            [np.zeros(event_size, "float32"), np.full(event_size, inverse_softplus, "float32")]
        )

    def point_prediction(self, outputs):
        return self._raw_parameters(outputs)[0]

    def event_size(self, output_shape, role="model"):
        if (
            isinstance(output_shape, (list, tuple))
            and output_shape
            and isinstance(output_shape[0], (list, tuple))
        ):
            loc_shape, scale_shape = output_shape
            if tuple(loc_shape) != tuple(scale_shape):
                raise ValueError(
                    f"The {role}'s `loc` and `raw_scale` outputs must have the "
                    f"same shape. Received: loc={tuple(loc_shape)}, "
                    f"raw_scale={tuple(scale_shape)}"
                )
            return loc_shape[-1]
        return super().event_size(output_shape, role)

    def _layout_hint(self):
        return "2 * num_outputs) laid out as [loc, raw_scale] (or a pair of tensors"

    @staticmethod
    def _reduce_event(values):
        # Outputs are independent: the joint KL/NLL is the sum over outputs.
        return tf.reduce_sum(values, axis=-1)

    def get_config(self):
        return {"min_scale": self.min_scale}


@HEADS.register("normal")
class Normal(_LocationScale):
    """Independent `tfd.Normal(loc, scale)` per regression output.

    The raw output's last axis is `[loc (d units), raw_scale (d units)]`, and
    `scale = softplus(raw_scale) + min_scale`. Train a regression teacher with
    `keras_ecl.losses.NegativeLogLikelihood(Normal())` so that its scale carries
    its uncertainty.

    Args:
        min_scale: Floor added to the softplus scale, > 0. Defaults to 1e-3.

    Example:

    ```python
    head = keras_ecl.heads.Normal()
    dist = head.distribution(tf.constant([[0.5, 0.0]]))  # loc=0.5, raw_scale=0
    dist.stddev()  # softplus(0) + 1e-3
    ```
    """

    _distribution_class = tfd.Normal


@HEADS.register("laplace")
class Laplace(_LocationScale):
    """Independent `tfd.Laplace(loc, scale)` per regression output.

    Same `[loc, raw_scale]` layout as `Normal`; heavier tails, so an L1-like
    negative log-likelihood that is robust to outliers.

    Args:
        min_scale: Floor added to the softplus scale, > 0. Defaults to 1e-3.

    Example:

    ```python
    head = keras_ecl.heads.Laplace()
    head.distribution(tf.constant([[0.5, 0.0]])).mean()  # [[0.5]]
    ```
    """

    _distribution_class = tfd.Laplace


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiOutput(Head):
    """One head per output of a multi-output model, matched through `keras.tree`.

    `heads` follows the models' output structure: a dict of heads for a
    functional model with dict outputs, a list for list outputs. Each output
    keeps its own rules (labels, layout, serving outputs); a `Distiller` with
    this head distils and supervises every output on the same real and
    synthetic inputs, and logs each under its name (`class_student_loss`,
    `class_distillation_loss`, `box_extracurricular_loss`, ...; the outputs of
    a list are named `output_0`, `output_1`, ...). `Distiller(head=dict)` or
    `head=list` builds one with weights 1.

    The weights mirror `keras.Model.compile(loss_weights=...)`: a structure
    beside the heads, not a number inside each, so a head means the same
    wherever it is used and a Keras user moves `loss_weights` over as it is.
    Output `i`'s weight multiplies its supervised term and its distillation
    term alike, as Keras' `loss_weights` multiplies an output's loss.

    Uncertainty (for `selection` and `uncertainty_weighting`) is the sum of
    the outputs' own, unweighted: for `"entropy"` the entropy of their joint
    distribution, as the outputs are independent given the input. The
    default `selection="auto"` keeps every draw (no selection) for a
    multi-output head: the recipe was chosen on single classifiers; pass a
    `Selection` to score the draws by that joint uncertainty.

    Args:
        heads: A dict or list of `keras_ecl.heads.Head`s (or their names), one
            per model output.
        weights: A structure like `heads` of weights >= 0, or None for 1
            each. Defaults to None.

    Example:

    ```python
    head = keras_ecl.heads.MultiOutput(
        {"class": keras_ecl.heads.Categorical(), "box": keras_ecl.heads.Normal()},
        weights={"class": 1.0, "box": 0.5},
    )
    distiller = keras_ecl.Distiller(student, teacher, head=head)
    distiller.compile(optimizer="adam", metrics={"class": ["accuracy"]})
    distiller.fit(x, {"class": labels, "box": targets})
    ```
    """

    event_name = "values per output"

    def __init__(self, heads, weights=None):
        if isinstance(heads, dict) and heads and all(isinstance(k, str) for k in heads):
            self.heads = {key: get(head) for key, head in heads.items()}
            names = list(self.heads)
        elif isinstance(heads, (list, tuple)) and heads:
            self.heads = [get(head) for head in heads]
            names = [f"output_{i}" for i in range(len(heads))]
        else:
            raise ValueError(
                "`heads` must be a non-empty dict (with string keys) or list of heads, one per "
                f"model output. Received: heads={heads!r}"
            )
        if any(isinstance(head, MultiOutput) for head in keras.tree.flatten(self.heads)):
            raise ValueError(f"`heads` must not nest a MultiOutput. Received: heads={heads!r}")
        if weights is None:
            weights = keras.tree.map_structure(lambda _: 1.0, self.heads)
        self.weights = self._match(lambda _, w: w, weights, "`weights`")
        flat_weights = keras.tree.flatten(self.weights)
        if not all(is_number(w) and 0 <= w < float("inf") for w in flat_weights):
            raise ValueError(
                f"`weights` must be finite numbers >= 0. Received: weights={weights!r}"
            )
        self.weights = keras.tree.map_structure(float, self.weights)
        keys = list(self.heads) if isinstance(self.heads, dict) else range(len(self.heads))
        self.outputs = list(zip(names, keys, strict=True))

    def _match(self, fn, structure, what):
        """`fn(head, value)` for each head and its value in `structure`, in the
        heads' structure; an error naming `what` if `structure` does not follow it."""
        if isinstance(structure, tuple) and not any(
            keras.tree.is_nested(v) or hasattr(v, "shape") for v in structure
        ):
            structure = tf.TensorShape(structure)  # one tensor's shape, a leaf
        try:
            return keras.tree.map_structure_up_to(self.heads, fn, self.heads, structure)
        except (TypeError, ValueError, KeyError) as error:
            if str(error).startswith("Output "):  # a head's own error, already named
                raise
            layout = list(self.heads) if isinstance(self.heads, dict) else len(self.heads)
            kind = "a dict with keys" if isinstance(self.heads, dict) else "a list of length"
            raise ValueError(
                f"{what} must follow the model's outputs, as `head` does: {kind} {layout}. "
                f"Received: {_describe(structure)}"
            ) from None

    def items(self):
        """`(name, key, head, weight)` per output: its name in logs, its key
        (dict) or index (list) in the outputs, its head and its weight."""
        return [(name, key, self.heads[key], self.weights[key]) for name, key in self.outputs]

    def _per_output(self, method, what, *structures):
        """`method(head, name, *values)` per output, errors prefixed with the output's name."""
        values = [self._match(lambda _, v: v, s, what) for s in structures]
        results = []
        for name, key in self.outputs:
            try:
                results.append(method(self.heads[key], name, *(v[key] for v in values)))
            except ValueError as error:
                raise ValueError(f"Output {name!r}: {error}") from None
        return results

    def _pack(self, values):
        if isinstance(self.heads, dict):
            return dict(zip(self.heads, values, strict=True))
        return list(values)

    def _weighted_sum(self, values):
        return tf.add_n([w * v for (*_, w), v in zip(self.items(), values, strict=True)])

    def distribution(self, outputs, argument="outputs"):
        raise ValueError(
            "A MultiOutput head holds one distribution per output: ask its `heads` "
            f"(e.g. head.heads[{self.outputs[0][1]!r}].distribution({argument}[...]))."
        )

    def kl_divergence(self, teacher_outputs, student_outputs):
        """The weighted sum of the outputs' KL(teacher ‖ student), per example."""
        kls = self._per_output(
            lambda h, _, t, s: h.kl_divergence(t, s),
            "The outputs",
            teacher_outputs,
            student_outputs,
        )
        return self._weighted_sum(kls)

    def negative_log_likelihood(self, y, outputs):
        """The weighted sum of the outputs' negative log-likelihoods, per example."""
        nlls = self._per_output(
            lambda h, _, t, o: h.negative_log_likelihood(t, o), "`y`", y, outputs
        )
        return self._weighted_sum(nlls)

    def uncertainty(self, outputs, measure="entropy"):
        """The sum of the outputs' uncertainties (their joint entropy for "entropy")."""
        values = self._per_output(lambda h, _, o: h.uncertainty(o, measure), "The outputs", outputs)
        return tf.add_n(values)

    def serving_outputs(self, outputs):
        """One flat dict, `<output>_<name>`: a SavedModel signature takes no nesting."""
        served = self._per_output(lambda h, _, o: h.serving_outputs(o), "The outputs", outputs)
        return {
            f"{name}_{key}": value
            for (name, _), each in zip(self.outputs, served, strict=True)
            for key, value in each.items()
        }

    def point_prediction(self, outputs):
        return self._match(lambda h, o: h.point_prediction(o), outputs, "The outputs")

    def event_size(self, output_shape, role="model"):
        """The event size of each output, in the heads' structure."""
        what = f"The {role}'s outputs"
        return self._pack(
            self._per_output(lambda h, _, s: h.event_size(s, role), what, output_shape)
        )

    def output_rank(self, output_shape):
        return self._pack(
            self._per_output(lambda h, _, s: h.output_rank(s), "The outputs", output_shape)
        )

    def label_arrays(self, y, argument):
        return self._match(lambda _, v: np.asarray(v), y, f"Labels of `{argument}`")

    def check_targets(self, y, event_size, output_rank, argument):
        for _, key in self.outputs:
            where = f"{argument}[{key!r}]"
            self.heads[key].check_targets(y[key], event_size[key], output_rank[key], where)

    def check_outputs(self, outputs, role, argument):
        self._per_output(
            lambda h, _, o: h.check_outputs(o, role, argument), f"The {role}'s outputs", outputs
        )

    def output_units(self, event_size):
        raise ValueError(
            "A HeadLayer gives one output the layout of one head; a MultiOutput head has "
            f"several. Build one HeadLayer per output. Received: head={self!r}"
        )

    def calibration_size(self, event_size):
        raise ValueError(
            "`calibrate` fits one head's outputs; calibrate each output of a multi-output "
            f"teacher apart. Received: head={self!r}"
        )

    def get_config(self):
        return {
            "heads": keras.tree.map_structure(keras.saving.serialize_keras_object, self.heads),
            "weights": self.weights,
        }


def _describe(structure):
    if isinstance(structure, dict):
        return f"a dict with keys {list(structure)}"
    if isinstance(structure, (list, tuple)):
        return f"a {type(structure).__name__} of length {len(structure)}"
    shape = (
        structure if isinstance(structure, tf.TensorShape) else getattr(structure, "shape", None)
    )
    return repr(structure) if shape is None else f"one tensor of shape {tuple(shape)}"


def get(identifier):
    """Returns a head from an instance, a name or a serialized config.

    Args:
        identifier: A `Head`, one of `"categorical"`, `"normal"`, `"laplace"`,
            a dict from `keras.saving.serialize_keras_object`, or a dict or
            list of them, one per model output (a `MultiOutput`).

    Returns:
        A `Head` instance.

    Raises:
        ValueError: If `identifier` names no head.

    Example:

    ```python
    keras_ecl.heads.get("normal")  # a Normal head with default min_scale
    ```
    """
    serialized = isinstance(identifier, dict) and "class_name" in identifier
    if isinstance(identifier, (list, tuple)) or (isinstance(identifier, dict) and not serialized):
        return MultiOutput(identifier)
    return HEADS.get(identifier)


@keras.saving.register_keras_serializable(package=PACKAGE)
class HeadLayer(keras.layers.Layer):
    """Dense layer that maps backbone features to a head's raw parameters.

    Gives any backbone a probabilistic output: `num_classes` logits for
    `Categorical`, or `[loc, raw_scale]` (2 units per output) for `Normal` and
    `Laplace`. The raw-scale bias starts at `softplus^-1(initial_scale)`.

    Args:
        head: A `Head` (or its name) whose layout to produce.
        event_size: Number of classes, or number of regression outputs.
        initial_scale: Starting scale of location-scale heads, > 0.
            Defaults to 1.0.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    inputs = keras.Input((8,))
    features = keras.layers.Dense(32, activation="relu")(inputs)
    outputs = keras_ecl.heads.HeadLayer("normal", event_size=1)(features)
    model = keras.Model(inputs, outputs)  # outputs [loc, raw_scale]
    ```
    """

    def __init__(self, head, event_size, initial_scale=1.0, **kwargs):
        super().__init__(**kwargs)
        check_integer("event_size", event_size, 1)
        check_positive("initial_scale", initial_scale)
        self.head = get(head)
        self.event_size = int(event_size)
        self.initial_scale = float(initial_scale)
        # Pass `trainable` on: a frozen, deserialized head must stay frozen.
        self.dense = keras.layers.Dense(
            self.head.output_units(event_size),
            name="params",
            dtype=self.dtype_policy,
            trainable=self.trainable,
        )

    def build(self, input_shape):
        self.dense.build(input_shape)
        bias = self.head.initial_bias(self.event_size, self.initial_scale)
        if bias is not None:
            self.dense.bias.assign(bias)

    def call(self, inputs):
        return self.dense(inputs)

    def compute_output_shape(self, input_shape):
        return self.dense.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "head": keras.saving.serialize_keras_object(self.head),
                "event_size": self.event_size,
                "initial_scale": self.initial_scale,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head"] = get(config["head"])
        return cls(**config)
