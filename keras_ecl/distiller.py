"""The extracurricular `Distiller`: a `keras.Model` that trains a student.

Each training step draws extracurricular inputs around the batch with a
sampler, runs the frozen teacher and the student once on real plus synthetic
inputs, and minimises `w * supervised(y, student(x)) + (1 - w) * mean KL(teacher
‖ student)` over real and synthetic inputs. The same object gives the ERM and
KD baselines through `mode` (the defaults of the arguments not given follow it).
"""

import contextlib
import inspect
import os

import h5py
import keras
import tensorflow as tf

from keras_ecl import _data_checks, _step_checks, averaging
from keras_ecl import _keras_compat as compat
from keras_ecl import heads as heads_lib
from keras_ecl import losses as losses_lib
from keras_ecl import objectives as objectives_lib
from keras_ecl import samplers as samplers_lib
from keras_ecl import selection as selection_lib
from keras_ecl import teachers as teachers_lib
from keras_ecl.utils import (
    PACKAGE,
    check_integer,
    check_one_of,
    check_unit_interval,
    is_number,
)

__all__ = ["Distiller", "MODES"]

MODES = ("erm", "kd", "ecl")
# Key prefix of the random seed states a Distiller adds to its saved weights.
_SEED_STATE = "seed_state_"
# Evaluation draws its synthetic inputs from this fixed seed, so `evaluate` is
# repeatable and leaves the training stream of the sampler untouched.
_EVALUATION_SEED = (2007, 51)


def _batch_size(x):
    """Dynamic batch size of a tensor or of a structure of input tensors."""
    return tf.shape(keras.tree.flatten(x)[0])[0]


def _split(outputs, batch_size):
    """Splits raw outputs (a tensor or a structure of them) into real and synthetic rows."""
    real = keras.tree.map_structure(lambda t: t[:batch_size], outputs)
    synthetic = keras.tree.map_structure(lambda t: t[batch_size:], outputs)
    return real, synthetic


@keras.saving.register_keras_serializable(package=PACKAGE)
class Distiller(compat.LocalBatchBuild, keras.Model):
    """Trains a student to match a teacher's output distribution, on real and
    extracurricular inputs.

    The teacher is frozen and always called with `training=False`; only the
    student's weights get gradients. `call` returns the student's outputs, so
    `distiller.predict`/`evaluate` are the student's; `distiller.student` is the
    plain Keras model to save or export (the teacher is not part of it).

    Training minimises

        supervised_weight * NLL(y, student(x))
        + (1 - supervised_weight) * (r * KL_real + k * KL_synthetic) / (r + k)

    where `k = samples_per_example`, `r = real_weight`, `KL_real` is the mean
    KL(teacher ‖ student) over the real batch and `KL_synthetic` over the
    `k * batch` extracurricular inputs that `sampler` draws around it at every
    step (with a `selection`, the best of several draws each). With
    `real_weight=0` the teacher does not run on the real batch at all.

    The defaults are the recipe chosen on validation splits (BENCHMARKS.md,
    "Choosing ECL's recipe"): one synthetic input per real one from
    `OneOf([MixUp, CutMix])`, for classification the best of 4 draws by the
    student's uncertainty (`selection`: the cheap student chooses where to ask
    the costly teacher), the KL on synthetic inputs only (`real_weight=0`, as
    function matching does), labels at weight 0.5 (free on real inputs, where the teacher is not
    run), 4 student updates per teacher pass (`updates_per_batch`), which
    pays when the teacher costs far more than the student, as it usually does,
    and the student's weights averaged over its last updates (`ema_momentum`,
    Keras' optimizer EMA): fresh synthetic inputs at every step make the last
    iterate wander, and the average is the better student.
    The same recipe serves vectors, signals and images (chosen on MNIST-1D
    signals, digits and Fashion-MNIST images). The head's temperature
    stays the user's (1 for `heads.Categorical()`).

    `mode` selects the baselines on the same objects: `"erm"` trains on the
    supervised loss alone (no teacher needed), `"kd"` uses the teacher on real
    inputs only (Hinton KD with a `Categorical(temperature)` head), `"ecl"`
    adds the extracurricular inputs. Labels are never used on synthetic inputs.

    `compile` is Keras' own (but refuses a `loss` that expects
    probabilities): `metrics` apply to the student's point prediction on
    real inputs (logits for `Categorical`, `loc` for `Normal` and
    `Laplace`), and an optional `loss` (getting raw outputs, so use
    `from_logits=True` losses) replaces the head's negative log-likelihood as
    the supervised term. The student's regularization losses are added as in
    `keras.Model`. Sample weights weight the supervised and distillation terms
    and carry over to the synthetic inputs drawn around each example.

    Metrics: `loss`, `student_loss` (supervised), `distillation_loss` (KL on
    real inputs) and `extracurricular_loss` (KL on synthetic inputs), as far as
    the mode uses them, plus the compiled metrics; with `distillation_losses`,
    each term's own name (`feature_loss`, ...); with several outputs, each
    output's (`class_student_loss`, `box_extracurricular_loss`, ...) and
    `compile(metrics={"class": [...]})` as in Keras. Validation computes the
    same terms with `training=False`, drawing its synthetic inputs from a fixed
    seed so that `evaluate` is repeatable and does not shift the training draws.

    Args:
        student: The `keras.Model` to train. Its output is raw head parameters
            (logits, or `[loc, raw_scale]`).
        teacher: A trained `keras.Model` with outputs of the same layout, a
            list of them (shorthand for `keras_ecl.teachers.Ensemble(list)`:
            the student matches their mixture), or
            None for `mode="erm"`. It is frozen. Defaults to None.
        head: A `keras_ecl.heads.Head` or its name: how outputs become
            distributions; a dict or list of them for multi-output models
            (`heads.MultiOutput`). Defaults to "categorical" (temperature 1).
        sampler: A `keras_ecl.samplers.Sampler` or its name, used in
            `mode="ecl"`. Defaults to None: `samplers.default_sampler()`,
            `OneOf([MixUp(1.0), CutMix(1.0)])`, in "ecl".
        samples_per_example: Extracurricular inputs drawn per real input at
            each step, an integer >= 0. Defaults to 1.
        supervised_weight: Weight `w` in [0, 1] of the supervised loss on
            real labels. Defaults to None: 0.5 in `mode="ecl"`, 0.1 in "kd"
            (Hinton KD's usual weight).
        real_weight: Weight `r` >= 0 of the KL on a real input relative to
            one synthetic input's, in `mode="ecl"`. 0 distils on synthetic
            inputs only, as function matching (FunMatch) does, and saves the
            teacher's pass over the real batch. Defaults to 0.0.
        selection: A `keras_ecl.selection.Selection`, None to keep every
            draw of the sampler, or "auto". Defaults to "auto":
            `selection.default_selection()`, the best of 4 draws by the
            student's entropy, in `mode="ecl"` with a `Categorical` head; None
            for regression heads and in the other modes.
        updates_per_batch: Student updates per training step, all on the
            step's inputs and the teacher's outputs there, an integer >= 1.
            The teacher, usually far costlier than the student, then runs once
            for several updates. Defaults to None: 4 in `mode="ecl"`, 1 in
            "kd" and "erm" (the textbook baselines).
        warmup_steps: Student updates over which the teacher term's weight
            grows linearly from `1 / warmup_steps` of its value to all of it,
            as DKD's warm-up does; an integer >= 0 (0: none). Evaluation
            always uses the full weight. Defaults to 0.
        mode: One of "erm", "kd", "ecl". Defaults to "ecl".
        uncertainty_weighting: None, "entropy" or "variance": weight each
            synthetic input's KL by the teacher's uncertainty there
            (normalised to mean 1); with an ensemble teacher also
            "disagreement", how much its members disagree there. Defaults to None.
        distillation_losses: The teacher's terms instead of the head's KL: a
            `keras.distillation.LogitsDistillation` or `FeatureDistillation`
            (computed as Keras computes them), a `keras_ecl.objectives.Term`,
            or a list of them, each evaluated on real and synthetic inputs as
            the KL is (`keras_ecl.objectives.Objective`). Defaults to None: the
            head's KL.
        distillation_loss_weights: One weight >= 0 per distillation term, as in
            `keras.distillation.Distiller`. Defaults to None: 1 each.
        ema_momentum: Momentum in [0, 1) of a moving average of the student's
            weights, which `fit` leaves in them when it ends: `compile` sets
            Keras' own `use_ema=True, ema_momentum=...` on an optimizer not
            yet built and not already averaging. 0 turns it off. Defaults to
            None: 0.99 in `mode="ecl"`, 0 in "kd" and "erm" (the textbook
            baselines).
        name: Model name. Defaults to "distiller".
        **kwargs: Forwarded to `keras.Model`.

    Raises:
        ValueError: For arguments of the wrong type or range, and teacher or
            student outputs that do not fit the head or each other.

    Example:

    ```python
    distiller = keras_ecl.Distiller(
        student=student,
        teacher=teacher,
        head=keras_ecl.heads.Categorical(temperature=4.0),
        sampler=keras_ecl.samplers.OneOf(
            [keras_ecl.samplers.MixUp(alpha=1.0),
             keras_ecl.samplers.GaussianNoise(scale=0.3)]
        ),
        samples_per_example=2,
        supervised_weight=0.5,
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x_train, y_train, epochs=10)
    distiller.student.save("saved_models/student.keras")
    ```

    References:
        - [Pouransari et al., 2020](https://arxiv.org/abs/2007.00051)
        - [Hinton et al., 2015](https://arxiv.org/abs/1503.02531)
    """

    def __init__(
        self,
        student,
        teacher=None,
        head="categorical",
        sampler=None,
        samples_per_example=1,
        supervised_weight=None,
        mode="ecl",
        uncertainty_weighting=None,
        real_weight=0.0,
        selection="auto",
        warmup_steps=0,
        updates_per_batch=None,
        distillation_losses=None,
        distillation_loss_weights=None,
        ema_momentum=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        check_one_of("mode", mode, MODES)
        if not isinstance(student, keras.Model):
            raise ValueError(
                f"`student` must be a keras.Model. Received: student={type(student).__name__}"
            )
        if teacher is None and mode != "erm":
            raise ValueError(
                f"mode={mode!r} needs a `teacher` (a keras.Model). Received: teacher=None. "
                "Use mode='erm' to train the student without a teacher."
            )
        if sampler is not None and mode != "ecl":
            raise ValueError(
                "`sampler` draws extracurricular inputs, which only mode='ecl' uses. "
                f"Received: sampler={sampler!r}, mode={mode!r}. Drop the sampler or use "
                "mode='ecl'."
            )
        if isinstance(teacher, (list, tuple)):
            teacher = teachers_lib.Ensemble(teacher)
        if teacher is not None and not isinstance(teacher, keras.Model):
            raise ValueError(
                "`teacher` must be a keras.Model or a list of them (an ensemble). "
                f"Received: teacher={type(teacher).__name__}"
            )
        _data_checks.check_separate_models(student, teacher)
        check_integer("samples_per_example", samples_per_example, 0)
        check_integer("warmup_steps", warmup_steps, 0)
        if updates_per_batch is None:
            updates_per_batch = 4 if mode == "ecl" else 1
        check_integer("updates_per_batch", updates_per_batch, 1)
        if ema_momentum is None:
            ema_momentum = 0.99 if mode == "ecl" else 0.0
        if not is_number(ema_momentum) or not 0 <= ema_momentum < 1:
            raise ValueError(
                "`ema_momentum` must be a number in [0, 1). "
                f"Received: ema_momentum={ema_momentum!r}"
            )
        if supervised_weight is None:
            supervised_weight = 0.5 if mode == "ecl" else 0.1
        check_unit_interval("supervised_weight", supervised_weight)
        if not is_number(real_weight) or not 0 <= real_weight < float("inf"):
            raise ValueError(
                f"`real_weight` must be a finite number >= 0. Received: real_weight={real_weight!r}"
            )
        if mode == "ecl" and real_weight == 0 and samples_per_example == 0:
            raise ValueError(
                "real_weight=0 with samples_per_example=0 leaves nothing to distil on. "
                "Draw synthetic inputs (samples_per_example >= 1) or use real_weight > 0."
            )
        if mode != "erm" and supervised_weight == 1:
            raise ValueError(
                f"supervised_weight=1 leaves no weight on the teacher: mode={mode!r} would "
                "train on labels alone, at the teacher's cost. Use a weight below 1 (the "
                "labels' share of the loss), or mode='erm'."
            )
        for argument, value, default, modes in (
            ("uncertainty_weighting", uncertainty_weighting, None, ("ecl",)),
            ("real_weight", real_weight, 0.0, ("ecl",)),
            ("warmup_steps", warmup_steps, 0, ("kd", "ecl")),
            ("distillation_losses", distillation_losses, None, ("kd", "ecl")),
        ):
            if mode not in modes and value != default:
                raise ValueError(
                    f"`{argument}` applies to mode={' or '.join(map(repr, modes))} only; "
                    f"mode={mode!r} would ignore it. Received: {argument}={value!r}"
                )
        if isinstance(head, keras.distillation.DistillationLoss):
            raise ValueError(
                "`head` received a keras.distillation loss: keras_ecl.Distiller takes (student, "
                "teacher, head, ...) where Keras' takes (teacher, student, distillation_losses). "
                f"Pass them by keyword. Received: head={head!r}"
            )
        head = heads_lib.get(head)
        if isinstance(selection, str) and selection == "auto":
            # Measured on classification only; Friedman #1's NLL got worse with it.
            classifies = isinstance(head, heads_lib.Categorical)
            selection = selection_lib.default_selection() if mode == "ecl" and classifies else None
        if selection is not None and not isinstance(selection, selection_lib.Selection):
            raise ValueError(
                "`selection` must be a keras_ecl.selection.Selection, None or 'auto'. "
                f"Received: selection={selection!r}"
            )
        if selection is not None and mode != "ecl":
            raise ValueError(
                "`selection` chooses among extracurricular inputs, which only mode='ecl' "
                f"draws. Received: selection={selection!r}, mode={mode!r}"
            )
        if uncertainty_weighting not in (None,) + losses_lib.UNCERTAINTY_MEASURES:
            raise ValueError(
                "`uncertainty_weighting` must be None or one of "
                f"{losses_lib.UNCERTAINTY_MEASURES}. "
                f"Received: uncertainty_weighting={uncertainty_weighting!r}"
            )
        self.student = student
        self.teacher = teacher
        self.head = head
        # The head of the teacher's outputs: the student's, or an ensemble's own.
        distillation_head = getattr(teacher, "distillation_head", lambda head: head)
        self.teacher_head = distillation_head(self.head)
        if uncertainty_weighting == "disagreement" and self.teacher_head is self.head:
            raise ValueError(
                "uncertainty_weighting='disagreement' measures how much the members of an "
                "ensemble teacher disagree; this teacher is one model. Pass "
                "teacher=[model, ...] (or a keras_ecl.teachers.Ensemble), or use "
                "'entropy' or 'variance'."
            )
        if sampler is None and mode == "ecl":
            sampler = samplers_lib.default_sampler()
        self.sampler = None if sampler is None else samplers_lib.get(sampler)
        self.samples_per_example = int(samples_per_example)
        self.supervised_weight = float(supervised_weight)
        self.mode = mode
        self.uncertainty_weighting = uncertainty_weighting
        self.real_weight = float(real_weight)
        self.selection = selection
        self.warmup_steps = int(warmup_steps)
        self.updates_per_batch = int(updates_per_batch)
        self.ema_momentum = float(ema_momentum)
        if teacher is not None:
            teacher.trainable = False

        self.distillation_losses = distillation_losses
        self.distillation_loss_weights = distillation_loss_weights
        self.objective = objectives_lib.Objective(
            self, distillation_losses, distillation_loss_weights
        )
        _data_checks.check_models(self)
        # `export_student(distiller.student)` then applies the right head.
        setattr(student, heads_lib.STUDENT_HEAD, self.head)
        # Bad labels found inside a step, for `StepGuard`'s error (not a weight).
        self._label_record = _step_checks.LabelRecord()
        # train_step never calls self(...): mark built so fit/saving see it.
        if student.built and (teacher is None or teacher.built):
            self.built = True

    @property
    def uses_teacher(self):
        return self.mode != "erm"

    @property
    def uses_extracurricular(self):
        return self.mode == "ecl" and self.samples_per_example > 0

    @property
    def teacher_sees_real(self):
        """Whether the teacher runs on the real batch (not in ECL with `real_weight=0`)."""
        return self.uses_teacher and not (self.uses_extracurricular and self.real_weight == 0)

    @property
    def uses_labels(self):
        return self.mode == "erm" or self.supervised_weight > 0

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    # Training and evaluation steps.

    def draw_extracurricular(self, x, training):
        """The synthetic inputs drawn around `x`, and the teacher's outputs on
        them if a selection already computed those (else None).

        Training draws advance the sampler's seed; evaluation draws (`training=False`)
        come from a fixed seed, so they repeat and leave the training stream alone.
        """
        if not self.uses_extracurricular:
            return None, None
        seed = None if training else tf.constant(_EVALUATION_SEED, tf.int32)
        candidates = 1 if self.selection is None else self.selection.candidates
        drawn = self.sampler(x, num_samples=self.samples_per_example * candidates, seed=seed)
        if self.selection is None:
            return drawn, None
        slots = _batch_size(x) * self.samples_per_example
        return self.selection.select(
            drawn, slots, self.student, self.teacher, self.head, self.teacher_head
        )

    def _forward(self, x, training):
        """Student inputs (real, then synthetic) and the pair of the teacher's
        outputs and features (`objectives.Objective.teacher_pass`) on the real
        and on the synthetic ones (None where the loss needs none)."""
        synthetic, teacher_synthetic = self.draw_extracurricular(x, training)
        inputs = x if synthetic is None else tf.concat([x, synthetic], axis=0)
        teacher_pass = self.objective.teacher_pass
        if teacher_synthetic is not None:  # a selection's: outputs, but no features
            teacher_synthetic = self.objective.from_outputs(teacher_synthetic, synthetic)
        teacher_real = None
        if synthetic is not None and teacher_synthetic is None and self.teacher_sees_real:
            # One teacher pass over real and synthetic inputs together.
            teacher_real, teacher_synthetic = _split(teacher_pass(inputs), _batch_size(x))
        else:
            if self.teacher_sees_real:
                teacher_real = teacher_pass(x)
            if synthetic is not None and teacher_synthetic is None:
                teacher_synthetic = teacher_pass(synthetic)
        return inputs, (teacher_real, teacher_synthetic)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Keras' own; data without labels leaves the compiled metrics alone.

        Label-free distillation (`supervised_weight=0`, `fit(x)`) then logs its
        losses only, while labelled validation data still gets the compiled
        metrics.
        """
        if y is not None:
            return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return self._results(skip=compat.compile_metrics(self))

    def get_metrics_result(self):
        """Keras' own, without compiled metrics that have not seen a label yet."""
        compiled = compat.compile_metrics(self)
        return self._results(skip=compiled if compiled is not None and not compiled.built else None)

    def _results(self, skip=None):
        results = {}
        for metric in self.metrics:
            if metric is not skip:
                result = metric.result()
                results.update(result if isinstance(result, dict) else {metric.name: result})
        return results

    def _split_rows(self, outputs, batch_size):
        """The student's outputs (or features) on real and on synthetic rows.

        Without extracurricular inputs every row is real: no slicing, whose
        gradient would copy the outputs on every step.
        """
        if not self.uses_extracurricular:
            return outputs, None
        return _split(outputs, batch_size)

    def _metrics_result(self, x, y, outputs, sample_weight, batch_size):
        """Compiled metrics on the head's point prediction for real inputs."""
        real_outputs, _ = self._split_rows(outputs, batch_size)
        y_pred = self.head.point_prediction(real_outputs)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return compat.for_multi_worker_mean(logs)

    def _checked_labels(self, y, outputs, batch_size):
        """The labels to use, whether all were valid, and a callable that
        records the bad ones (see `_step_checks.check_labels`)."""
        real_outputs, _ = self._split_rows(outputs, batch_size)
        event_size = self.head.event_size(_data_checks.output_shape(real_outputs))
        return _step_checks.check_labels(self.head, y, real_outputs, event_size, self._label_record)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = _batch_size(x)
        # Outside the tape: sampling, selection and the frozen teacher need no gradients.
        inputs, teachers = self._forward(x, training=True)
        variables = self.student.trainable_variables + self.objective.trainable_variables
        all_finite = tf.constant(True)
        # The teacher's outputs serve `updates_per_batch` student updates.
        for update in range(self.updates_per_batch):
            with tf.GradientTape() as tape:
                features = self.objective.student_pass(inputs, training=True)
                outputs = features[objectives_lib.OUTPUTS]
                if update == 0:  # bad labels: no update at all, and an error (StepGuard)
                    y, labels_valid, record_labels = self._checked_labels(y, outputs, batch_size)
                rows = self._split_rows(features, batch_size)
                loss, terms = self.objective(y, sample_weight, rows, teachers, training=True)
                scaled_loss = self.optimizer.scale_loss(loss)
            gradients = tape.gradient(scaled_loss, variables)
            checked_loss = tf.where(labels_valid, loss, float("nan"))
            finite = self._apply_if_finite(gradients, variables, checked_loss, record_labels)
            all_finite = tf.logical_and(all_finite, finite)
        # A skipped step shows as a NaN loss, which `StepGuard` turns into an error.
        loss = tf.where(all_finite, loss, float("nan"))
        self.objective.update_trackers(terms, loss, batch_size)
        return self._metrics_result(x, y, outputs, sample_weight, batch_size)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = _batch_size(x)
        inputs, teachers = self._forward(x, training=False)
        features = self.objective.student_pass(inputs, training=False)
        outputs = features[objectives_lib.OUTPUTS]
        y, labels_valid, record_labels = self._checked_labels(y, outputs, batch_size)
        record_labels()
        loss, terms = self.objective(
            y, sample_weight, self._split_rows(features, batch_size), teachers, training=False
        )
        loss = tf.where(labels_valid, loss, float("nan"))
        self.objective.update_trackers(terms, loss, batch_size)
        return self._metrics_result(x, y, outputs, sample_weight, batch_size)

    def _apply_if_finite(self, gradients, variables, loss, on_skip):
        """Applies the gradients only if the update keeps the state finite on
        every replica (`_step_checks.finite_update`), and returns whether it did;
        a skipped step also runs `on_skip` (which records bad labels).

        A skipped step leaves weights and optimizer state as they were. The
        gradients are checked too: ReLU maps NaN inputs to 0, so a NaN input can
        give a finite loss and NaN gradients; and Adam turns gradients whose
        squares overflow (inputs x 1e20) into NaN weights. Under mixed
        precision the `LossScaleOptimizer` skips overflowing steps itself; only
        a non-finite loss then counts as a failure.
        """
        context = tf.distribute.get_replica_context()
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            finite = tf.math.is_finite(loss)
        else:
            finite = _step_checks.finite_update(loss, gradients)
        if context.num_replicas_in_sync > 1:
            bad = tf.cast(tf.logical_not(finite), tf.float32)
            finite = tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, bad), 0.0)

        if compat.strategy_supports_no_merge_call():

            def apply():
                self.optimizer.apply(gradients, variables)
                return tf.constant(True)

            def skip():
                on_skip()
                return tf.constant(False)

            return keras.ops.cond(finite, apply, skip)

        # Like LossScaleOptimizer: a cond whose branch calls merge_call must
        # run in cross-replica context; per-replica values travel as args.
        # `on_skip` writes replica-local state, so it runs here, on every step
        # (it keeps only a bad batch's values).
        on_skip()

        def cross_replica(strategy, finite, gradients, variables):
            def apply():
                strategy.extended.call_for_each_replica(
                    self.optimizer.apply, args=(gradients, variables)
                )
                return tf.constant(True)

            finite = strategy.experimental_local_results(finite)[0]
            return keras.ops.cond(finite, apply, lambda: tf.constant(False))

        return context.merge_call(cross_replica, args=(finite, gradients, variables))

    # Input checks that run eagerly, before `fit` traces anything.

    def compile_from_config(self, config):
        """Keras' own (used by `keras.saving.load_model`), through this `compile`."""
        self.compile(**keras.saving.deserialize_keras_object(config))

    def compile(self, *args, **kwargs):
        """`keras.Model.compile`, refusing a `loss` that expects probabilities.

        A compiled `loss` replaces the head's negative log-likelihood and gets
        the student's raw outputs (logits): a cross-entropy with
        `from_logits=False` (the Keras default, and what a loss named by a
        string is) would softmax-squash them a second time, silently.
        """
        params = inspect.signature(keras.Model.compile).bind(self, *args, **kwargs).arguments
        params.pop("self")
        loss = params.get("loss")
        from_logits = getattr(loss, "from_logits", None)
        if isinstance(loss, str) and "crossentropy" in loss.lower():
            from_logits = False
        if from_logits is False:
            raise ValueError(
                "A compiled `loss` gets the student's raw outputs (logits), but this one "
                "expects probabilities. Pass e.g. keras.losses.SparseCategoricalCrossentropy("
                "from_logits=True), or no loss (the head's own). "
                f"Received: loss={loss!r}"
            )
        params["optimizer"] = keras.optimizers.get(params.get("optimizer", "rmsprop"))
        averaging.use_moving_average(params["optimizer"], self.ema_momentum)
        super().compile(**params)
        compat.forget_uncompiled(self, loss, params.get("metrics"), params.get("weighted_metrics"))
        if self.built and not self.optimizer.built:  # as `load_model` does: a save before
            with self.distribute_strategy.scope():  # any fit then reloads without a warning
                self.optimizer.build(self.trainable_variables)

    def fit(self, *args, **kwargs):
        """`keras.Model.fit`, after checking the data and models eagerly.

        The first batch (whole arrays for NumPy input) is checked against the
        head, the teacher, the student and the sampler, so bad input fails
        with a clear message before training starts. A non-finite loss stops
        training with a `FloatingPointError` naming the epoch and step; that
        step's update is skipped, so the weights are the last finite ones.
        """
        # Only what the caller passed goes on, so Keras' defaults stay Keras'.
        params = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        params.pop("self")
        compat.no_dataset_shuffle(params)
        self._check_data(params.get("x"), params.get("y"), params.get("sample_weight"), "x")
        if params.get("validation_data") is not None:
            self._check_data(
                params["validation_data"], None, None, "validation_data", training=False
            )
        params["callbacks"] = list(params.get("callbacks") or []) + [_step_checks.StepGuard()]
        with self._fresh_functions("train_function", "test_function"):
            return super().fit(**params)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`, after the same eager data checks as `fit`."""
        params = inspect.signature(keras.Model.evaluate).bind(self, *args, **kwargs).arguments
        params.pop("self")
        extra = params.pop("kwargs", {})
        within_fit = extra.get("_use_cached_eval_dataset")  # fit's validation: checked once
        if not within_fit:
            self._check_data(
                params.get("x"), params.get("y"), params.get("sample_weight"), "x", training=False
            )
        callbacks = params.get("callbacks")
        if not isinstance(callbacks, keras.callbacks.CallbackList):  # fit's hold the guard
            params["callbacks"] = list(callbacks or []) + [_step_checks.StepGuard()]
        # Within `fit`, whose start traced afresh already: not on every epoch.
        with self._fresh_functions(*(() if within_fit else ("test_function",))):
            result = super().evaluate(**params, **extra)
        # Keras >= 3.13 returns Python floats; 3.12 its last step's tensors.
        if isinstance(result, dict):
            return {name: _python_number(value) for name, value in result.items()}
        if isinstance(result, list):
            return [_python_number(value) for value in result]
        return _python_number(result)

    @contextlib.contextmanager
    def _fresh_functions(self, *names):
        """Forgets the step functions `names` while the compiled metrics are
        unbuilt (they build on the first labelled batch, which a step traced
        without labels cannot do on a retrace), and every one when the call
        fails (an error while tracing leaves a step half-built)."""
        compiled = compat.compile_metrics(self)
        if compiled is not None and not compiled.built:
            for name in names:
                setattr(self, name, None)
        try:
            yield
        except Exception:
            self.train_function = self.test_function = self.predict_function = None
            raise

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, after checking that `x` holds inputs (NaN allowed)."""
        _data_checks.check_predict_inputs(self, x)
        with self._fresh_functions():
            return super().predict(x, *args, **kwargs)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """`keras.Model.load_weights`, refusing files that are not Keras weights first."""
        path = str(filepath)
        if path.endswith(".h5") and os.path.isfile(path) and not h5py.is_hdf5(path):
            raise ValueError(
                "`filepath` is not a Keras weights file (HDF5), so it holds no Distiller "
                f"weights. Received: filepath={path!r}"
            )
        return super().load_weights(filepath, skip_mismatch=skip_mismatch, **kwargs)

    def _check_data(self, x, y, sample_weight, argument, training=True):
        _data_checks.check_data(self, x, y, sample_weight, argument, training)
        # train_step never calls self(...): built once the checks have built the models.
        if self.student.built and (self.teacher is None or self.teacher.built):
            self.built = True

    # Serialization.

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": teachers_lib.serialize_frozen(self.teacher),
                "head": keras.saving.serialize_keras_object(self.head),
                "sampler": keras.saving.serialize_keras_object(self.sampler),
                "samples_per_example": self.samples_per_example,
                "supervised_weight": self.supervised_weight,
                "mode": self.mode,
                "uncertainty_weighting": self.uncertainty_weighting,
                "real_weight": self.real_weight,
                "selection": keras.saving.serialize_keras_object(self.selection),
                "warmup_steps": self.warmup_steps,
                "updates_per_batch": self.updates_per_batch,
                "distillation_losses": keras.saving.serialize_keras_object(
                    self.distillation_losses
                ),
                "distillation_loss_weights": self.distillation_loss_weights,
                "ema_momentum": self.ema_momentum,
            }
        )
        return config

    def save_own_variables(self, store):
        # Keras saves no `SeedGenerator` state: without it, a run resumed from
        # `BackupAndRestore` would draw other synthetic inputs and dropout masks.
        super().save_own_variables(store)
        for i, state in enumerate(self.seed_states()):
            store[f"{_SEED_STATE}{i}"] = state.numpy()  # np.asarray(variable) warns on NumPy 2

    def load_own_variables(self, store):
        seed_keys = [key for key in store.keys() if key.startswith(_SEED_STATE)]
        super().load_own_variables({k: store[k] for k in store.keys() if k not in seed_keys})
        if not seed_keys:  # saved before seed states were: keep the current ones
            return
        states = self.seed_states()
        if len(seed_keys) != len(states):
            raise ValueError(
                f"The weights file holds {len(seed_keys)} random seed states, but this "
                f"Distiller has {len(states)} (sampler, dropout and other random layers). "
                "Load it into a Distiller built like the one that saved it."
            )
        for i, state in enumerate(states):
            state.assign(store[f"{_SEED_STATE}{i}"])

    def seed_states(self):
        """The state variables of every `SeedGenerator` in the Distiller, in a fixed order."""
        return [generator.state for generator in compat.seed_generators(self)]

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher", "sampler", "selection", "distillation_losses"):
            config[key] = keras.saving.deserialize_keras_object(config.get(key))
        config["head"] = heads_lib.get(config["head"])
        return cls(**config)


def _python_number(value):
    """`value` as a Python float where it is a scalar (a tensor or NumPy number)."""
    try:
        return float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return value
