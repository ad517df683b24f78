"""Teachers made of several models: `Ensemble`.

Users rarely have one clean teacher: several checkpoints, seeds or
architectures are common, and a deep ensemble is often the best teacher a
small dataset allows (Lakshminarayanan et al., 2017). `Ensemble` runs its
frozen members once on each batch and hands the Distiller all their outputs;
the Distiller's head then combines them (`Head.mixture_outputs`), so the
student matches the members' mixture, and `uncertainty_weighting="disagreement"`
can emphasise the inputs on which the members disagree.

Why a class and not only `Distiller(teacher=[...])`: the ensemble is a model
of its own that users save, calibrate and evaluate apart from any
Distiller. A list passed as `teacher` is shorthand for `Ensemble(list)`.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_ecl import heads as heads_lib
from keras_ecl.samplers import Sampler
from keras_ecl.utils import PACKAGE, check_integer

COMBINES = ("moments", "mixture")


@keras.saving.register_keras_serializable(package=PACKAGE)
class Ensemble(keras.Model):
    """Frozen teacher models whose weighted mixture the student matches.

    Called on a batch, it returns every member's raw outputs stacked on axis
    -2, shape `(batch, ..., members, units)`; `distillation_head(head)` gives
    the head the Distiller uses on those outputs. For `Categorical` the
    teacher's distribution is the mixture of the members' categoricals at the
    distillation temperature (exactly a categorical). For `Normal`/`Laplace`
    the mixture is matched either by `combine="moments"`: the Normal (Laplace)
    with the mixture's mean and variance, one closed-form KL per output; or by
    `combine="mixture"`: a Monte-Carlo KL from the mixture itself, `samples`
    draws per output per step (`samples * (members + 1)` log-densities), which
    keeps a bimodal mixture bimodal.

    Args:
        members: A list of at least two `keras.Model`s with the same inputs and
            output layout (one output tensor each). They are frozen.
        weights: Mixture weights, one positive number per member, or None for
            uniform weights. Normalised to sum to 1.
        combine: `"moments"` or `"mixture"` (location-scale heads; a mixture of
            categoricals is exact either way). Defaults to "moments".
        samples: Monte-Carlo draws per output for `combine="mixture"`, >= 1.
            Defaults to 16.
        seed: Integer seed of those draws. Defaults to 0.
        **kwargs: Forwarded to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: For fewer than two members, a member that is not a
            `keras.Model`, members with different output layouts or inputs,
            or bad `weights`, `combine` or `samples`.

    Example:

    ```python
    members = [make_teacher(seed) for seed in range(3)]
    distiller = keras_ecl.Distiller(
        student, keras_ecl.teachers.Ensemble(members), mode="ecl"
    )  # or teacher=members
    ```
    """

    def __init__(self, members, weights=None, combine="moments", samples=16, seed=0, **kwargs):
        kwargs.setdefault("name", "ensemble")
        super().__init__(**kwargs)
        members = _check_members(members)
        if combine not in COMBINES:
            raise ValueError(f"`combine` must be one of {COMBINES}. Received: combine={combine!r}")
        check_integer("samples", samples, 1)
        self.members = members
        self.mixture_weights = _check_weights(weights, len(members))
        self.combine = combine
        self.samples = int(samples)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        for member in members:
            member.trainable = False
        if all(member.built for member in members):
            self.built = True

    def call(self, inputs, training=False):
        outputs = []
        for index, member in enumerate(self.members):
            output = member(inputs, training=False)
            if isinstance(output, (list, tuple, dict)):
                raise ValueError(
                    f"Ensemble members must output one tensor. Received: member {index} "
                    f"({member.name}) outputs {type(output).__name__}"
                )
            outputs.append(tf.cast(output, tf.float32))
        shapes = {tuple(o.shape[1:]) for o in outputs}
        if len(shapes) > 1:
            raise ValueError(
                "Ensemble members must have the same output layout. Received: output "
                f"shapes {[tuple(o.shape) for o in outputs]}"
            )
        return tf.stack(outputs, axis=-2)

    def compute_output_shape(self, input_shape):
        shape = self.members[0].compute_output_shape(input_shape)
        return (*shape[:-1], len(self.members), shape[-1])

    def distillation_head(self, head):
        """The head the Distiller uses on this teacher's stacked outputs."""
        head = heads_lib.get(head)
        if isinstance(head, heads_lib.MultiOutput):
            raise ValueError(
                "An Ensemble teacher mixes one output per member, so it takes one head, not "
                f"one per output (a MultiOutput). Received: head={head!r}"
            )
        return EnsembleHead(head, self)

    def next_seed(self):
        """A fresh stateless seed for the Monte-Carlo draws, different on every replica."""
        return Sampler.replica_seed(self.seed_generator.next())

    def get_config(self):
        return {
            "name": self.name,
            "members": [serialize_frozen(m) for m in self.members],
            "weights": self.mixture_weights.tolist(),
            "combine": self.combine,
            "samples": self.samples,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["members"] = [keras.saving.deserialize_keras_object(m) for m in config["members"]]
        return cls(**config)


class EnsembleHead(heads_lib.Head):
    """A head for an `Ensemble`'s stacked outputs, built on the student's head.

    Every method combines the members first (`Head.mixture_outputs`), then
    defers to `head`; `kl_divergence` uses the Monte-Carlo mixture KL for
    `combine="mixture"`, and `uncertainty` adds the `"disagreement"` measure
    (mutual information for `Categorical`, variance of the members' means for
    location-scale heads).
    """

    def __init__(self, head, ensemble):
        self.head = head
        self.ensemble = ensemble
        self.units_per_output = head.units_per_output
        self.event_name = head.event_name
        self.raw_outputs = head.raw_outputs

    @property
    def weights(self):
        return tf.constant(self.ensemble.mixture_weights, tf.float32)

    def combined(self, outputs):
        """Raw outputs in `head`'s layout: the members' mixture (or its moments)."""
        return self.head.mixture_outputs(tf.cast(outputs, tf.float32), self.weights)

    def distribution(self, outputs, argument="outputs"):
        return self.head.distribution(self.combined(outputs), argument)

    def kl_divergence(self, teacher_outputs, student_outputs):
        if self.ensemble.combine == "mixture":
            return self.head.mixture_kl(
                tf.cast(teacher_outputs, tf.float32),
                self.weights,
                student_outputs,
                self.ensemble.samples,
                self.ensemble.next_seed(),
            )
        return self.head.kl_divergence(self.combined(teacher_outputs), student_outputs)

    def negative_log_likelihood(self, y, outputs):
        return self.head.negative_log_likelihood(y, self.combined(outputs))

    def uncertainty(self, outputs, measure="entropy"):
        if measure == "disagreement":
            return self.head.disagreement(tf.cast(outputs, tf.float32), self.weights)
        return self.head.uncertainty(self.combined(outputs), measure)

    def serving_outputs(self, outputs):
        return self.head.serving_outputs(self.combined(outputs))

    def point_prediction(self, outputs):
        return self.head.point_prediction(self.combined(outputs))

    def event_size(self, output_shape, role="model"):
        shape = tuple(output_shape)
        return self.head.event_size((*shape[:-2], shape[-1]), role)

    def check_outputs(self, outputs, role, argument):
        values = np.asarray(outputs)
        for index in range(values.shape[-2]):
            self.head.check_outputs(values[..., index, :], f"{role} member {index}", argument)

    def get_config(self):
        return self.head.get_config()

    def __repr__(self):
        return f"EnsembleHead({self.head!r}, members={len(self.ensemble.members)})"


def serialize_frozen(model):
    """`keras.saving.serialize_keras_object(model)` without the model's compile state.

    A teacher is frozen, never trained again: a compiled one would reload with a
    fresh optimizer that cannot take the saved one's state, and Keras would warn
    "Skipping variable loading for optimizer" on every `load_model`.
    """
    config = keras.saving.serialize_keras_object(model)
    if isinstance(config, dict):
        config.pop("compile_config", None)
    return config


def _check_members(members):
    if not isinstance(members, (list, tuple)) or len(members) < 2:
        raise ValueError(
            "`members` must be a list of at least two keras.Models. Received: "
            f"{type(members).__name__}"
            + (f" of length {len(members)}" if isinstance(members, (list, tuple)) else "")
        )
    for index, member in enumerate(members):
        if not isinstance(member, keras.Model):
            raise ValueError(
                f"`members[{index}]` must be a keras.Model. Received: {type(member).__name__}"
            )
    if len({id(m) for m in members}) < len(members):
        raise ValueError("`members` holds the same model twice. Pass each member once.")
    layouts = [_layout(m) for m in members]
    for index, layout in enumerate(layouts):
        if layout is not None and len(layout[1]) > 1:
            raise ValueError(
                "Ensemble members must output one tensor: the ensemble mixes one output "
                "distribution per member. Distil a multi-output teacher as it is, or build "
                "an ensemble per output (e.g. keras.Model(m.inputs, m.output['class'])). "
                f"Received: `members[{index}]` with {len(layout[1])} outputs"
            )
    known = [(i, layout) for i, layout in enumerate(layouts) if layout is not None]
    for index, layout in known[1:]:
        if layout != known[0][1]:
            first = known[0][0]
            raise ValueError(
                "Ensemble members must have the same inputs and output layout (the "
                f"Distiller feeds them one batch and mixes their outputs). Received: "
                f"member {first} {_describe(known[0][1])}, member {index} {_describe(layout)}"
            )
    return list(members)


def _layout(model):
    """`(input shapes, output shapes)` without the batch axis, or None if unknown."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    return (
        tuple(tuple(t.shape[1:]) for t in inputs),
        tuple(tuple(t.shape[1:]) for t in outputs),
    )


def _describe(layout):
    inputs, outputs = layout
    return f"(inputs {list(inputs)}, outputs {list(outputs)})"


def _check_weights(weights, count):
    if weights is None:
        return np.full(count, 1.0 / count)
    values = np.asarray(weights, dtype="float64")
    if values.shape != (count,) or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"`weights` must be {count} positive numbers, one per member. Received: "
            f"weights={weights!r}"
        )
    return values / values.sum()
