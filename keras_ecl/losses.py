"""Losses that compare distributions, as `keras.losses.Loss` objects.

Every loss here is a `keras.losses.Loss`, so reduction, `sample_weight` and the
division by the number of replicas under `tf.distribute` are Keras' own. The
maths per example lives on the head (`Head.kl_divergence`,
`Head.negative_log_likelihood`); these classes only bind a head to it.
"""

import keras
import tensorflow as tf

from keras_ecl import heads as heads_lib
from keras_ecl.utils import PACKAGE, as_numeric_tensor

__all__ = [
    "UNCERTAINTY_MEASURES",
    "DistributionKL",
    "NegativeLogLikelihood",
    "uncertainty_weights",
]

UNCERTAINTY_MEASURES = ("entropy", "variance", "disagreement")


class _HeadLoss(keras.losses.Loss):
    """A `keras.losses.Loss` computed per example by a head."""

    def __init__(self, head="categorical", reduction="sum_over_batch_size", name=None, **kwargs):
        super().__init__(reduction=reduction, name=name, **kwargs)
        self.head = heads_lib.get(head)

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras casts both to floats first, where non-numbers fail deep in TensorFlow.
        for argument, value in (("y_true", y_true), ("y_pred", y_pred)):
            if not isinstance(value, (list, tuple)):
                as_numeric_tensor(value, argument)
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config["head"] = keras.saving.serialize_keras_object(self.head)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["head"] = heads_lib.get(config["head"])
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class DistributionKL(_HeadLoss):
    """KL(teacher ‖ student) between the distributions two outputs encode.

    `y_true` is the teacher's raw output and `y_pred` the student's; both go
    through the same head and `tfd.kl_divergence` (closed form for Categorical,
    Normal and Laplace heads). For `Categorical` the value is scaled by
    `temperature**2`.

    Args:
        head: A `keras_ecl.heads.Head` or its name. Defaults to "categorical".
        reduction: Keras reduction. Defaults to "sum_over_batch_size".
        name: Loss name. Defaults to "distribution_kl".

    Example:

    ```python
    kl = keras_ecl.losses.DistributionKL(keras_ecl.heads.Normal())
    kl(teacher_outputs, student_outputs)  # scalar
    ```
    """

    def __init__(
        self, head="categorical", reduction="sum_over_batch_size", name="distribution_kl", **kwargs
    ):
        super().__init__(head=head, reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return self.head.kl_divergence(y_true, y_pred)


@keras.saving.register_keras_serializable(package=PACKAGE)
class NegativeLogLikelihood(_HeadLoss):
    """-log p(y) under the head's distribution of the model output.

    Use it to train a probabilistic teacher (`model.compile(loss=...)`): for a
    `Normal` or `Laplace` head it fits both `loc` and `scale`, so the teacher's
    scale learns its uncertainty. For `Categorical` it is the sparse (or
    one-hot) cross-entropy from logits.

    Args:
        head: A `keras_ecl.heads.Head` or its name. Defaults to "categorical".
        reduction: Keras reduction. Defaults to "sum_over_batch_size".
        name: Loss name. Defaults to "negative_log_likelihood".

    Example:

    ```python
    teacher.compile(
        optimizer="adam",
        loss=keras_ecl.losses.NegativeLogLikelihood(keras_ecl.heads.Normal()),
    )
    ```
    """

    def __init__(
        self,
        head="categorical",
        reduction="sum_over_batch_size",
        name="negative_log_likelihood",
        **kwargs,
    ):
        super().__init__(head=head, reduction=reduction, name=name, **kwargs)

    def call(self, y_true, y_pred):
        return self.head.negative_log_likelihood(y_true, y_pred)


def uncertainty_weights(head, teacher_outputs, measure="entropy"):
    """Per-example weights proportional to the teacher's uncertainty.

    With `"entropy"` the weight is proportional to `exp(H)`, the teacher's
    effective number of outcomes (positive even where a continuous entropy is
    negative); with `"variance"` to its predictive variance (for Categorical,
    `1 - sum(p**2)`); with `"disagreement"` (an ensemble teacher's head,
    `keras_ecl.teachers.EnsembleHead`) to how much its members disagree.
    The weights are normalised to mean 1 over the batch, so emphasising
    uncertain samples moves the loss between examples without changing its
    overall scale. No gradient flows through them.

    Args:
        head: The `keras_ecl.heads.Head` (or its name) of the teacher's outputs.
        teacher_outputs: Raw teacher outputs, batch first.
        measure: `"entropy"`, `"variance"` or `"disagreement"` of the teacher.
            Defaults to "entropy".

    Returns:
        A float32 tensor of shape `(batch,)` with mean 1.

    Raises:
        ValueError: If `measure` is not a known measure.

    Example:

    ```python
    logits = np.array([[4.0, 0.0], [0.0, 0.0]], "float32")  # confident, unsure
    keras_ecl.losses.uncertainty_weights("categorical", logits)  # ~[0.71, 1.29]
    ```
    """
    if measure not in UNCERTAINTY_MEASURES:
        raise ValueError(
            f"`measure` must be one of {UNCERTAINTY_MEASURES}. Received: measure={measure!r}"
        )
    head = heads_lib.get(head)
    values = tf.stop_gradient(head.uncertainty(teacher_outputs, measure))
    if measure == "entropy":
        # exp(H) / mean(exp(H)), computed without overflow for large |H|.
        flat = tf.reshape(values, [-1])
        count = tf.cast(tf.size(flat), values.dtype)
        return tf.reshape(tf.nn.softmax(flat) * count, tf.shape(values))
    return values / (tf.reduce_mean(values) + 1e-12)
