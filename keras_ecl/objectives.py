"""The terms of a `Distiller`'s loss: one object per distillation term.

A term compares the teacher's and the student's outputs on one set of inputs;
the `Objective` evaluates every term on the real batch and on the
extracurricular inputs, weighs them with the supervised term, and logs each
under its own name. A new distillation term is a `Term` subclass here: the
Distiller does not change. Terms read the models' outputs or named
intermediate layers ("features"), which the `Objective` extracts in the same
pass that computes the outputs.
"""

import keras
import tensorflow as tf

from keras_ecl import _data_checks
from keras_ecl import _keras_compat as compat
from keras_ecl import heads as heads_lib
from keras_ecl import losses as losses_lib
from keras_ecl.utils import PACKAGE, is_number

__all__ = ["FeatureMatching", "HeadKL", "KerasTerm", "Objective", "Term"]

# Key of a model's outputs among its features (Keras' Distiller uses the same).
OUTPUTS = "final_output"


class Term:
    """One distillation term: a scalar from the teacher's and student's outputs.

    Subclasses implement `__call__(teacher_outputs, student_outputs,
    sample_weight)`. The `Objective` logs the term on real inputs as `name`
    and on extracurricular inputs as `synthetic_name`.

    Args:
        name: Logged name on real inputs. Defaults to "distillation_loss".

    Example:

    ```python
    class L1Logits(keras_ecl.objectives.Term):
        def __init__(self):
            super().__init__("l1_loss")  # logged as l1_loss, extracurricular_l1_loss

        def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
            return keras.losses.MeanAbsoluteError()(
                teacher_outputs, student_outputs, sample_weight
            )

    keras_ecl.Distiller(student, teacher, distillation_losses=[L1Logits()])
    ```
    """

    # The layers whose outputs the term compares; None: the models' outputs.
    teacher_layer_name = None
    student_layer_name = None
    # The key of one output of a multi-output model it compares; None: all.
    output = None

    def __init__(self, name="distillation_loss"):
        self.name = name

    @property
    def synthetic_name(self):
        return f"extracurricular_{self.name}"

    def get_config(self):
        return {"name": self.name}

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__.")


@keras.saving.register_keras_serializable(package=PACKAGE)
class HeadKL(Term):
    """The default term: mean KL(teacher ‖ student) of the head's distributions.

    Sample weights, and on extracurricular inputs the teacher's uncertainty
    weights, weight it per example. With `output`, it compares that output of
    multi-output models only, logged as `<name>_distillation_loss` and
    `<name>_extracurricular_loss` (one per output of a `heads.MultiOutput`).

    Args:
        head: The `keras_ecl.heads.Head` of the teacher's outputs.
        output: The key (dict) or index (list) of one output of multi-output
            models, or None for the models' outputs. Defaults to None.
        output_name: What the output is called in the logs. Defaults to None:
            `output` itself.

    Example:

    ```python
    kl = keras_ecl.objectives.HeadKL(keras_ecl.heads.Categorical(temperature=4.0))
    kl(teacher_logits, student_logits)  # scalar, times temperature**2
    ```
    """

    def __init__(self, head, output=None, output_name=None):
        self.output_name = output if output_name is None else output_name
        self.prefix = "" if output is None else f"{self.output_name}_"
        super().__init__(f"{self.prefix}distillation_loss")
        self.head = heads_lib.get(head)
        self.kl = losses_lib.DistributionKL(self.head)
        self.output = output

    @property
    def synthetic_name(self):
        # Its name from before there were other terms.
        if self.name == f"{self.prefix}distillation_loss":
            return f"{self.prefix}extracurricular_loss"
        return super().synthetic_name

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
        return self.kl(teacher_outputs, student_outputs, sample_weight)

    def get_config(self):
        return {
            "head": keras.saving.serialize_keras_object(self.head),
            "output": self.output,
            "output_name": self.output_name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(heads_lib.get(config.pop("head")), **config)


class KerasTerm(Term):
    """A `keras.distillation.DistillationLoss`, computed as Keras computes it.

    Its `compute_loss` gets the teacher's and the student's outputs, so
    `LogitsDistillation` and `FeatureDistillation` of the final outputs mean
    what they mean in `keras.distillation.Distiller`; like there, sample weights
    do not weight them.

    Args:
        loss: A `keras.distillation.DistillationLoss`.

    Example:

    ```python
    term = keras_ecl.objectives.KerasTerm(keras.distillation.FeatureDistillation("mse"))
    term.name  # 'feature_loss'
    ```
    """

    def __init__(self, loss):
        feature = isinstance(loss, keras.distillation.FeatureDistillation)
        super().__init__("feature_loss" if feature else "distillation_loss")
        self.loss = loss
        self.teacher_layer_name = getattr(loss, "teacher_layer_name", None)
        self.student_layer_name = getattr(loss, "student_layer_name", None)

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
        self.loss.validate_outputs(teacher_outputs, student_outputs)
        return self.loss.compute_loss(teacher_outputs, student_outputs)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureMatching(Term):
    """Matches a student layer's outputs to a teacher layer's (FitNets' hint).

    Where the two layers' widths (last axes) differ, a learned linear
    projection of the student's features (FitNets' regressor) maps them to the
    teacher's width; it trains with the student, is saved with the
    `Distiller`, and is not part of the student (`export_student` leaves it
    out). On a `Distiller` in mode "ecl" the term is evaluated on the real batch
    and on the extracurricular inputs, like the head's KL.

    Args:
        teacher_layer_name: Name of the teacher's layer.
        student_layer_name: Name of the student's layer.
        loss: A `keras.losses.Loss` over the (projected) features. Defaults
            to None: `keras.losses.MeanSquaredError()`.
        name: Logged name. Defaults to "feature_loss".

    Example:

    ```python
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        distillation_losses=[
            keras_ecl.objectives.HeadKL(keras_ecl.heads.Categorical()),
            keras_ecl.objectives.FeatureMatching("teacher_hidden", "student_hidden"),
        ],
        distillation_loss_weights=[1.0, 0.1],
    )
    ```

    References:
        - [Romero et al., 2015](https://arxiv.org/abs/1412.6550)
    """

    def __init__(self, teacher_layer_name, student_layer_name, loss=None, name="feature_loss"):
        super().__init__(name)
        for argument, value in (
            ("teacher_layer_name", teacher_layer_name),
            ("student_layer_name", student_layer_name),
        ):
            if not isinstance(value, str) or not value:
                raise ValueError(
                    f"`{argument}` must be a layer name. Received: {argument}={value!r}"
                )
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.loss = keras.losses.MeanSquaredError() if loss is None else loss
        if not isinstance(self.loss, keras.losses.Loss):
            raise ValueError(f"`loss` must be a keras.losses.Loss. Received: loss={loss!r}")
        self.projection = None

    def build(self, student_shape, teacher_shape):
        """Adds the projection when the two layers' widths differ."""
        if student_shape[-1] != teacher_shape[-1]:
            self.projection = keras.layers.Dense(
                teacher_shape[-1], name=f"{self.student_layer_name}_projection"
            )
            self.projection.build(student_shape)

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
        if self.projection is not None:
            student_outputs = self.projection(student_outputs)
        return self.loss(teacher_outputs, student_outputs, sample_weight)

    def get_config(self):
        return {
            **super().get_config(),
            "teacher_layer_name": self.teacher_layer_name,
            "student_layer_name": self.student_layer_name,
            "loss": keras.losses.serialize(self.loss),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = keras.losses.deserialize(config["loss"])
        return cls(**config)


def _feature_model(model, terms, role):
    """A functional model of `model`'s outputs (`OUTPUTS`) and the outputs of
    the layers the terms name for `role`, sharing its weights; None if none."""
    layer_names = list(
        dict.fromkeys(filter(None, [getattr(t, f"{role}_layer_name") for t in terms]))
    )
    if not layer_names:
        return None
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"Feature terms read the {role}'s intermediate layers, which needs a functional "
            f"or Sequential model with an Input. Received: {role}={type(model).__name__} "
            "without symbolic inputs"
        )
    features = {OUTPUTS: _data_checks.symbolic_outputs(model)}
    for name in layer_names:
        try:
            features[name] = model.get_layer(name).output
        except ValueError as error:
            raise ValueError(
                f"`{role}_layer_name` must name a layer of the {role}. "
                f"Received: {role}_layer_name={name!r} ({error})"
            ) from None
    return keras.Model(inputs, features, name=f"{model.name}_features")


def _term(loss):
    """The `Term` for one entry of `distillation_losses`."""
    if isinstance(loss, Term):
        return loss
    if isinstance(loss, keras.distillation.DistillationLoss):
        return KerasTerm(loss)
    raise ValueError(
        "Each of `distillation_losses` must be a keras.distillation.DistillationLoss "
        "(LogitsDistillation, FeatureDistillation) or a keras_ecl.objectives.Term. "
        f"Received: {loss!r}"
    )


def _pick(features, key, output):
    """The features under `key`, or one output (`Term.output`) of them."""
    return features[key] if output is None else features[key][output]


def _weights(weights, count):
    """`distillation_loss_weights` as floats, one finite weight >= 0 per term."""
    if weights is None:
        return [1.0] * count
    weights = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if len(weights) != count or not all(is_number(w) and 0 <= w < float("inf") for w in weights):
        raise ValueError(
            f"`distillation_loss_weights` must hold one finite number >= 0 per distillation "
            f"term ({count}). Received: distillation_loss_weights={weights!r}"
        )
    return [float(w) for w in weights]


class Objective:
    """The loss a `Distiller` minimises, from its terms and weights.

        supervised_weight * supervised
        + (1 - supervised_weight) * sum_i weight_i * term_i

    where each `term_i` is `(r * term_i(real) + k * term_i(synthetic)) / (r + k)`
    in mode "ecl" (`k = samples_per_example`, `r = real_weight`) and
    `term_i(real)` in mode "kd".

    With a `heads.MultiOutput` head, `supervised` is the weighted sum of the
    outputs' negative log-likelihoods (each logged as `<output>_student_loss`,
    whatever `compile(loss=...)` trains on) and, without `distillation_losses`,
    each output has its own `HeadKL` term, weighted by the output's weight.

    Args:
        distiller: The `Distiller` whose settings (mode, weights, head,
            compiled loss, optimizer step) the objective follows.
        distillation_losses: A `Term`, a `keras.distillation.DistillationLoss`,
            a list of them, or None for the head's KL (`HeadKL`). Defaults to None.
        distillation_loss_weights: One weight >= 0 per term, or None for 1
            each. Defaults to None.

    Raises:
        ValueError: For terms of an unknown type, or weights that do not fit them.

    Example:

    ```python
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        distillation_losses=[
            keras.distillation.LogitsDistillation(temperature=3.0),
            keras.distillation.FeatureDistillation(loss="mse"),
        ],
        distillation_loss_weights=[1.0, 0.5],
    )
    # ['student_loss', 'extracurricular_distillation_loss', 'extracurricular_feature_loss']
    distiller.objective.names
    ```
    """

    def __init__(self, distiller, distillation_losses=None, distillation_loss_weights=None):
        self.distiller = distiller
        # One supervised term and one KL per output of a multi-output head.
        multi = isinstance(distiller.head, heads_lib.MultiOutput)
        outputs = distiller.head.items() if multi else []
        output_weights = [w for *_, w in outputs] or [1.0]
        if distillation_losses is None:
            losses = [HeadKL(head, key, name) for name, key, head, _ in outputs]
            losses = losses or [HeadKL(distiller.teacher_head)]
        elif isinstance(distillation_losses, (list, tuple)):
            losses = list(distillation_losses)
        else:
            losses = [distillation_losses]
        for loss in losses:
            if isinstance(loss, keras.distillation.DistillationLoss):
                loss.validate_model_compatibility(distiller.teacher, distiller.student)
        self.terms = [_term(loss) for loss in losses]
        if distillation_losses is None:  # a weight for the KL, times each output's
            weight = _weights(distillation_loss_weights, 1)[0]
            self.weights = [weight * w for w in output_weights]
        else:
            self.weights = _weights(distillation_loss_weights, len(self.terms))
        seen = set()
        for term in self.terms:  # each logged under a name of its own
            base, count = term.name, 1
            while term.name in seen:
                count += 1
                term.name = f"{base}_{count}"
            seen.add(term.name)
        self.supervised_loss = losses_lib.NegativeLogLikelihood(distiller.head)
        self.supervised = [
            (f"{name}_student_loss", key, losses_lib.NegativeLogLikelihood(head), weight)
            for name, key, head, weight in outputs
        ]
        # Built once; the teacher's frozen. Both run in the pass that computes the outputs.
        self.teacher_model = _feature_model(distiller.teacher, self.terms, "teacher")
        self.student_model = _feature_model(distiller.student, self.terms, "student")
        if self.teacher_model is not None:
            self.teacher_model.trainable = False
        projections = []
        for term in self.terms:
            if isinstance(term, FeatureMatching):
                term.build(
                    self.student_model.output[term.student_layer_name].shape,
                    self.teacher_model.output[term.teacher_layer_name].shape,
                )
                projections += [term.projection] if term.projection is not None else []
        if projections:  # trained and saved with the Distiller, not part of the student
            distiller.feature_projections = projections
        self.trainable_variables = [v for p in projections for v in p.trainable_variables]
        # One `Mean` per logged term, an attribute of the Distiller (so its
        # saved files keep their layout) named `<term>_tracker`.
        for name in self.names:
            setattr(distiller, f"{name}_tracker", keras.metrics.Mean(name=name))

    @property
    def names(self):
        """The names of the terms a step logs, besides `loss`."""
        d = self.distiller
        names = ["student_loss", *(s[0] for s in self.supervised)] if d.uses_labels else []
        for term in self.terms if d.uses_teacher else []:
            names += [term.name] if d.teacher_sees_real else []
            names += [term.synthetic_name] if d.uses_extracurricular else []
        return list(dict.fromkeys(names))

    def teacher_pass(self, x):
        """The frozen teacher's outputs (`OUTPUTS`) and features on `x`, in one pass."""
        if self.teacher_model is None:
            return {OUTPUTS: self.distiller.teacher(x, training=False)}
        return self.teacher_model(x, training=False)

    def student_pass(self, x, training):
        """The student's outputs (`OUTPUTS`) and features on `x`, in one pass."""
        if self.student_model is None:
            return {OUTPUTS: self.distiller.student(x, training=training)}
        return self.student_model(x, training=training)

    def from_outputs(self, teacher_outputs, x):
        """`teacher_pass(x)` from outputs already computed on `x`, if the terms
        need no teacher features; else None (the teacher must run again)."""
        return {OUTPUTS: teacher_outputs} if self.teacher_model is None else None

    def update_trackers(self, logs, loss, batch_size):
        """Adds a step's loss and terms (unscaled, per example) to the trackers."""
        for name, value in [("loss", loss), *logs.items()]:
            tracker = (
                compat.loss_tracker(self.distiller)
                if name == "loss"
                else getattr(self.distiller, f"{name}_tracker")
            )
            tracker.update_state(
                compat.unscale_loss_for_distribution(value), sample_weight=batch_size
            )

    def synthetic_weights(self, sample_weight, teacher_synthetic):
        """Anchors' sample weights, times the teacher's uncertainty if asked."""
        d = self.distiller
        weights = None
        if sample_weight is not None:
            sample_weight = tf.cast(sample_weight, tf.float32)
            repeats = [d.samples_per_example] + [1] * (sample_weight.shape.rank - 1)
            weights = tf.tile(sample_weight, repeats)
        if d.uncertainty_weighting:
            emphasis = losses_lib.uncertainty_weights(
                d.teacher_head, teacher_synthetic, d.uncertainty_weighting
            )
            weights = emphasis if weights is None else weights * emphasis
        return weights

    def __call__(self, y, sample_weight, outputs, teacher, training):
        """Returns the loss and its logged terms.

        Args:
            y: The real batch's labels.
            sample_weight: The real batch's sample weights, or None.
            outputs: `(real, synthetic)` outputs and features of the student
                (`student_pass`).
            teacher: `(real, synthetic)` outputs and features of the teacher
                (`teacher_pass`; None where it did not run).
            training: Whether warm-up applies.
        """
        d = self.distiller
        (real, synthetic), (teacher_real, teacher_synthetic) = outputs, teacher
        logs = {}
        if d.uses_labels:
            # Per output, the head's negative log-likelihood (Keras logs a
            # compiled loss's own per output, as `<output>_loss`).
            for name, key, nll, _ in self.supervised:
                logs[name] = nll(y[key], real[OUTPUTS][key], sample_weight)
            supervised_loss = compat.compile_loss(d)
            if supervised_loss is not None or not self.supervised:
                supervised_loss = supervised_loss or self.supervised_loss
                logs["student_loss"] = supervised_loss(y, real[OUTPUTS], sample_weight)
            else:
                logs["student_loss"] = tf.add_n([w * logs[n] for n, _, _, w in self.supervised])
        loss = logs.get("student_loss")
        if d.uses_teacher:
            k, r = float(d.samples_per_example), d.real_weight
            if d.uses_extracurricular:
                synthetic_weight = self.synthetic_weights(sample_weight, teacher_synthetic[OUTPUTS])
            teacher_term = 0.0
            for term, weight in zip(self.terms, self.weights, strict=True):
                t_key = term.teacher_layer_name or OUTPUTS
                s_key = term.student_layer_name or OUTPUTS
                if teacher_real is not None:
                    value = term(
                        _pick(teacher_real, t_key, term.output),
                        _pick(real, s_key, term.output),
                        sample_weight,
                    )
                    logs[term.name] = value
                if d.uses_extracurricular:
                    on_synthetic = term(
                        _pick(teacher_synthetic, t_key, term.output),
                        _pick(synthetic, s_key, term.output),
                        synthetic_weight,
                    )
                    logs[term.synthetic_name] = on_synthetic
                    value = k * on_synthetic
                    if teacher_real is not None and r > 0:
                        value = value + r * logs[term.name]
                    value = value / (r + k)
                teacher_term = teacher_term + weight * value
            if training and d.warmup_steps:
                step = tf.cast(d.optimizer.iterations + 1, tf.float32)
                teacher_term = teacher_term * tf.minimum(1.0, step / d.warmup_steps)
            loss = (1.0 - d.supervised_weight) * teacher_term
            if d.uses_labels and d.supervised_weight > 0:
                loss = loss + d.supervised_weight * logs["student_loss"]
        # The student's weight/activity regularizers, as Keras' compute_loss adds them.
        if d.student.losses:
            loss = loss + compat.scale_loss_for_distribution(tf.add_n(d.student.losses))
        return loss, logs
