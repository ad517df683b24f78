"""The extracurricular `Distiller`: a `keras.Model` that trains a student.

Each training step draws extracurricular inputs around the batch with a
sampler, runs the frozen teacher and the student once on real plus synthetic
inputs, and minimises `w * supervised(y, student(x)) + (1 - w) * mean KL(teacher
‖ student)` over real and synthetic inputs. The same object gives the ERM and
KD baselines through `mode`, so comparisons differ in one argument only.
"""

import inspect
import math
import os

import h5py
import keras
import numpy as np
import tensorflow as tf
from keras.src.backend.tensorflow.trainer import _collective_all_reduce_multi_worker
from keras.src.losses.loss import scale_loss_for_distribution, unscale_loss_for_distribution

from keras_ecl import heads as heads_lib
from keras_ecl import losses as losses_lib
from keras_ecl import samplers as samplers_lib
from keras_ecl.utils import is_number

_PACKAGE = "keras_ecl"
MODES = ("erm", "kd", "ecl")
# Key prefix of the random seed states a Distiller adds to its saved weights.
_SEED_STATE = "seed_state_"
# Rows of each input checked eagerly by `fit` before training starts.
_CHECK_ROWS = 64
# Evaluation draws its synthetic inputs from this fixed seed, so `evaluate` is
# repeatable and leaves the training stream of the sampler untouched.
_EVALUATION_SEED = (2007, 51)


def _batch_size(x):
    """Dynamic batch size of a tensor or of a structure of input tensors."""
    return tf.shape(keras.tree.flatten(x)[0])[0]


def _split(outputs, batch_size):
    """Splits raw outputs (a tensor or a pair) into real and synthetic rows."""
    real = keras.tree.map_structure(lambda t: t[:batch_size], outputs)
    synthetic = keras.tree.map_structure(lambda t: t[batch_size:], outputs)
    return real, synthetic


def _for_multi_worker_mean(logs):
    """Scalar logs as shape-[1] tensors when several workers train.

    Keras (3.15) averages the step logs of `MultiWorkerMirroredStrategy` with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars every
    `train_step` returns. A length-1 axis makes that reduce the mean over the
    workers, a scalar again. Elsewhere the logs pass unchanged.
    """
    if not _collective_all_reduce_multi_worker(tf.distribute.get_strategy()):
        return logs
    return tf.nest.map_structure(
        lambda value: tf.reshape(value, [1]) if value.shape.rank == 0 else value, logs
    )


def _output_shape(outputs):
    """Shape of a raw output, or a list of shapes for a `(loc, raw_scale)` pair."""
    if isinstance(outputs, (list, tuple)):
        return [tuple(o.shape) for o in outputs]
    return tuple(outputs.shape)


def _input_shapes(model):
    """Shapes of a functional/Sequential model's inputs, or None if it has none yet."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [tuple(t.shape) for t in inputs] if inputs else None


def _same_inputs(a, b):
    """Whether two lists of input shapes can take the same batch (Keras may add or
    drop a trailing axis of 1, so shapes of different ranks are not compared)."""
    if len(a) != len(b):
        return False
    return all(
        len(sa) != len(sb) or tf.TensorShape(sa).is_compatible_with(sb)
        for sa, sb in zip(a, b, strict=True)
    )


def _first_batch(dataset, argument):
    """`(x, y, sample_weight)` of a dataset's first batch; raises if it has none."""
    element = next(iter(dataset.take(1)), None)
    if element is None:
        raise ValueError(f"`{argument}` is an empty dataset: it yields no batch.")
    return keras.utils.unpack_x_y_sample_weight(element)


def _is_array(x):
    """Whether `x` is one array or tensor (not a generator or PyDataset we cannot peek)."""
    return isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Distiller(keras.Model):
    """Trains a student to match a teacher's output distribution, on real and
    extracurricular inputs.

    The teacher is frozen and always called with `training=False`; only the
    student's weights get gradients. `call` returns the student's outputs, so
    `distiller.predict`/`evaluate` are the student's; `distiller.student` is the
    plain Keras model to save or export (the teacher is not part of it).

    Training minimises

        supervised_weight * NLL(y, student(x))
        + (1 - supervised_weight) * (KL_real + k * KL_synthetic) / (1 + k)

    where `k = samples_per_example`, `KL_real` is the mean KL(teacher ‖
    student) over the real batch and `KL_synthetic` over the `k * batch`
    extracurricular inputs that `sampler` draws around it at every step.
    `mode` selects the baselines on the same objects: `"erm"` trains on the
    supervised loss alone (no teacher needed), `"kd"` uses the teacher on real
    inputs only (Hinton KD with a `Categorical(temperature)` head), `"ecl"`
    adds the extracurricular inputs. Labels are never used on synthetic inputs.

    `compile` is Keras' own: `metrics` apply to the student's point
    prediction on real inputs (logits for `Categorical`, `loc` for `Normal`
    and `Laplace`), and an optional `loss` (getting raw outputs, so use
    `from_logits=True` losses) replaces the head's negative log-likelihood as
    the supervised term. The student's regularization losses are added as in
    `keras.Model`. Sample weights weight the supervised and distillation terms
    and carry over to the synthetic inputs drawn around each example.

    Metrics: `loss`, `student_loss` (supervised), `distillation_loss` (KL on
    real inputs) and `extracurricular_loss` (KL on synthetic inputs), as far as
    the mode uses them, plus the compiled metrics. Validation computes the same
    terms with `training=False`, drawing its synthetic inputs from a fixed seed
    so that `evaluate` is repeatable and does not shift the training draws.

    Args:
        student: The `keras.Model` to train. Its output is raw head parameters
            (logits, or `[loc, raw_scale]`).
        teacher: A trained `keras.Model` with outputs of the same layout, or
            None for `mode="erm"`. It is frozen. Defaults to None.
        head: A `keras_ecl.heads.Head` or its name: how outputs become
            distributions. Defaults to "categorical" (temperature 1).
        sampler: A `keras_ecl.samplers.Sampler` or its name, used in
            `mode="ecl"`. Defaults to None (`MixUp(alpha=1.0)` in "ecl").
        samples_per_example: Extracurricular inputs drawn per real input at
            each step, an integer >= 0. Defaults to 1.
        supervised_weight: Weight `w` in [0, 1] of the supervised loss on
            real labels. Defaults to 0.5.
        mode: One of "erm", "kd", "ecl". Defaults to "ecl".
        uncertainty_weighting: None, "entropy" or "variance": weight each
            synthetic input's KL by the teacher's uncertainty there
            (normalised to mean 1). Defaults to None.
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
        supervised_weight=0.5,
        mode="ecl",
        uncertainty_weighting=None,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
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
        if teacher is not None and not isinstance(teacher, keras.Model):
            raise ValueError(
                f"`teacher` must be a keras.Model. Received: teacher={type(teacher).__name__}"
            )
        if (
            not isinstance(samples_per_example, (int, np.integer))
            or isinstance(samples_per_example, bool)
            or samples_per_example < 0
        ):
            raise ValueError(
                "`samples_per_example` must be an integer >= 0. "
                f"Received: samples_per_example={samples_per_example!r}"
            )
        if not is_number(supervised_weight) or not 0.0 <= supervised_weight <= 1.0:
            raise ValueError(
                "`supervised_weight` must be a number in [0, 1]. "
                f"Received: supervised_weight={supervised_weight!r}"
            )
        if uncertainty_weighting not in (None,) + losses_lib.UNCERTAINTY_MEASURES:
            raise ValueError(
                "`uncertainty_weighting` must be None or one of "
                f"{losses_lib.UNCERTAINTY_MEASURES}. "
                f"Received: uncertainty_weighting={uncertainty_weighting!r}"
            )
        self.student = student
        self.teacher = teacher
        self.head = heads_lib.get(head)
        if sampler is None and mode == "ecl":
            sampler = samplers_lib.MixUp(alpha=1.0)
        self.sampler = None if sampler is None else samplers_lib.get(sampler)
        self.samples_per_example = int(samples_per_example)
        self.supervised_weight = float(supervised_weight)
        self.mode = mode
        self.uncertainty_weighting = uncertainty_weighting
        if teacher is not None:
            teacher.trainable = False

        self.supervised_loss = losses_lib.NegativeLogLikelihood(self.head)
        self.distillation_kl = losses_lib.DistributionKL(self.head)
        if self.uses_labels:
            self.student_loss_tracker = keras.metrics.Mean(name="student_loss")
        if self.uses_teacher:
            self.distillation_loss_tracker = keras.metrics.Mean(name="distillation_loss")
        if self.uses_extracurricular:
            self.extracurricular_loss_tracker = keras.metrics.Mean(name="extracurricular_loss")
        self._check_models_symbolically()
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
    def uses_labels(self):
        return self.mode == "erm" or self.supervised_weight > 0

    def call(self, inputs, training=None):
        return self.student(inputs, training=training)

    # Training and evaluation steps.

    def _forward_inputs(self, x, training):
        """Real inputs, followed in ECL by the synthetic ones drawn around them."""
        if not self.uses_extracurricular:
            return x
        seed = None if training else tf.constant(_EVALUATION_SEED, tf.int32)
        synthetic = self.sampler(x, num_samples=self.samples_per_example, seed=seed)
        return tf.concat([x, synthetic], axis=0)

    def _teacher_outputs(self, inputs):
        if not self.uses_teacher:
            return None
        return self.teacher(inputs, training=False)

    def _synthetic_weights(self, sample_weight, teacher_synthetic):
        """Anchors' sample weights, times the teacher's uncertainty if asked."""
        weights = None
        if sample_weight is not None:
            sample_weight = tf.cast(sample_weight, tf.float32)
            repeats = [self.samples_per_example] + [1] * (sample_weight.shape.rank - 1)
            weights = tf.tile(sample_weight, repeats)
        if self.uncertainty_weighting:
            emphasis = losses_lib.uncertainty_weights(
                self.head, teacher_synthetic, self.uncertainty_weighting
            )
            weights = emphasis if weights is None else weights * emphasis
        return weights

    def _objective(self, y, sample_weight, outputs, teacher_outputs, batch_size):
        """Returns the loss and its terms from student and teacher outputs on
        `batch_size` real inputs followed by the synthetic ones."""
        real_outputs, synthetic_outputs = _split(outputs, batch_size)
        terms = {}
        if self.uses_labels:
            supervised_loss = self.supervised_loss
            if self._compile_loss is not None:
                supervised_loss = self._compile_loss
            terms["student_loss"] = supervised_loss(y, real_outputs, sample_weight)
        loss = terms.get("student_loss")
        if self.uses_teacher:
            teacher_real, teacher_synthetic = _split(teacher_outputs, batch_size)
            terms["distillation_loss"] = self.distillation_kl(
                teacher_real, real_outputs, sample_weight
            )
            teacher_term = terms["distillation_loss"]
            if self.uses_extracurricular:
                terms["extracurricular_loss"] = self.distillation_kl(
                    teacher_synthetic,
                    synthetic_outputs,
                    self._synthetic_weights(sample_weight, teacher_synthetic),
                )
                k = float(self.samples_per_example)
                teacher_term = (teacher_term + k * terms["extracurricular_loss"]) / (1.0 + k)
            loss = (1.0 - self.supervised_weight) * teacher_term
            if self.uses_labels and self.supervised_weight > 0:
                loss = loss + self.supervised_weight * terms["student_loss"]
        # The student's weight/activity regularizers, as Keras' compute_loss adds them.
        if self.student.losses:
            loss = loss + scale_loss_for_distribution(tf.add_n(self.student.losses))
        return loss, terms

    def _update_trackers(self, terms, loss, batch_size):
        for name, value in [("loss", loss), *terms.items()]:
            tracker = self._loss_tracker if name == "loss" else getattr(self, f"{name}_tracker")
            tracker.update_state(unscale_loss_for_distribution(value), sample_weight=batch_size)

    def _metrics_result(self, x, y, outputs, sample_weight, batch_size):
        """Compiled metrics on the head's point prediction for real inputs."""
        real_outputs, _ = _split(outputs, batch_size)
        y_pred = self.head.point_prediction(real_outputs)
        logs = self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
        return _for_multi_worker_mean(logs)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = _batch_size(x)
        inputs = self._forward_inputs(x, training=True)
        # Outside the tape: the frozen teacher needs no gradient bookkeeping.
        teacher_outputs = self._teacher_outputs(inputs)
        with tf.GradientTape() as tape:
            outputs = self.student(inputs, training=True)
            loss, terms = self._objective(y, sample_weight, outputs, teacher_outputs, batch_size)
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.student.trainable_variables
        gradients = tape.gradient(scaled_loss, variables)
        finite = self._apply_if_finite(gradients, variables, loss)
        # A skipped step shows as a NaN loss, which `fit` turns into an error.
        loss = tf.where(finite, loss, float("nan"))
        self._update_trackers(terms, loss, batch_size)
        return self._metrics_result(x, y, outputs, sample_weight, batch_size)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = _batch_size(x)
        inputs = self._forward_inputs(x, training=False)
        outputs = self.student(inputs, training=False)
        loss, terms = self._objective(
            y, sample_weight, outputs, self._teacher_outputs(inputs), batch_size
        )
        self._update_trackers(terms, loss, batch_size)
        return self._metrics_result(x, y, outputs, sample_weight, batch_size)

    def _apply_if_finite(self, gradients, variables, loss):
        """Applies the gradients only if they and the loss are finite on every
        replica, and returns whether they were.

        A skipped step leaves weights and optimizer state as they were. The
        gradients are checked too: ReLU maps NaN inputs to 0, so a NaN input
        can give a finite loss and NaN gradients. Under mixed precision the
        `LossScaleOptimizer` skips overflowing steps itself; only a non-finite
        loss then counts as a failure.
        """
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            # It skips overflowing steps and lowers its loss scale by itself.
            self.optimizer.apply(gradients, variables)
            return tf.math.is_finite(loss)
        context = tf.distribute.get_replica_context()
        checks = [tf.reduce_all(tf.math.is_finite(loss))] + [
            tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None
        ]
        bad = tf.cast(tf.logical_not(tf.reduce_all(tf.stack(checks))), tf.float32)
        if context.num_replicas_in_sync > 1:
            bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad)
        finite = tf.equal(bad, 0.0)

        def apply():
            self.optimizer.apply(gradients, variables)

        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            keras.ops.cond(finite, apply, lambda: None)
            return finite

        # Like LossScaleOptimizer: a cond whose branch calls merge_call must
        # run in cross-replica context; per-replica values travel as args.
        def cross_replica(strategy, finite, gradients, variables):
            finite = strategy.experimental_local_results(finite)[0]

            def apply_each():
                strategy.extended.call_for_each_replica(
                    self.optimizer.apply, args=(gradients, variables)
                )

            keras.ops.cond(finite, apply_each, lambda: None)

        context.merge_call(cross_replica, args=(finite, gradients, variables))
        return finite

    # Input checks that run eagerly, before `fit` traces anything.

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
        self.check_data(params.get("x"), params.get("y"), params.get("sample_weight"), "x")
        if params.get("validation_data") is not None:
            self.check_data(params["validation_data"], None, None, "validation_data")
        params["callbacks"] = list(params.get("callbacks") or []) + [_NonFiniteLossGuard()]
        return super().fit(**params)

    def evaluate(self, *args, **kwargs):
        """`keras.Model.evaluate`, after the same eager data checks as `fit`."""
        params = inspect.signature(keras.Model.evaluate).bind(self, *args, **kwargs).arguments
        params.pop("self")
        extra = params.pop("kwargs", {})
        if not extra.get("_use_cached_eval_dataset"):  # fit's validation: checked once
            self.check_data(params.get("x"), params.get("y"), params.get("sample_weight"), "x")
        return super().evaluate(**params, **extra)

    def predict(self, x, *args, **kwargs):
        """`keras.Model.predict`, after checking that `x` holds inputs (NaN allowed)."""
        inputs = _first_batch(x, "x")[0] if isinstance(x, tf.data.Dataset) else x
        if _is_array(inputs):
            array = self._check_inputs(inputs, "x", finite=False)
            self._check_input_shape(array.shape, "x", roles=("student",))
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

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds from this worker's first local batch under a strategy.

        Keras (3.15) reduces the whole first `(x, y)` batch with one
        `strategy.reduce("MEAN", ...)`, which `MultiWorkerMirroredStrategy`
        rejects ("Attempt to convert a value (PerReplica ..."), as in
        keras-team/keras#20329. Building needs shapes and dtypes only, so the
        first local replica's batch serves, with no collective at all.
        """
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None:
            for _, _, distributed in iterator:
                batch = next(distributed)
                break
            else:
                return  # no batch to build from; the train function will build
            data_batch = tf.nest.map_structure(
                lambda value: (
                    strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value
                ),
                batch,
            )
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def check_data(self, x, y=None, sample_weight=None, argument="x"):
        """Checks data against the models, head and sampler; raises if unfit.

        Args:
            x: What `fit` takes as `x`: arrays, a `tf.data.Dataset` of `(x, y)`
                or `(x, y, sample_weight)` batches, or a `(x, y)` tuple.
            y: Labels when `x` is an array. Defaults to None.
            sample_weight: Sample weights when `x` is an array. Defaults to None.
            argument: Name of the argument, for error messages. Defaults to "x".

        Raises:
            ValueError: Empty data, missing or out-of-range labels, NaN/inf
                inputs, or outputs that do not fit the head.
            TypeError: Non-numeric inputs, or integer inputs to a mixing sampler.
        """
        if isinstance(x, tf.data.Dataset):
            x, y, sample_weight = _first_batch(x, argument)
        elif argument == "validation_data" and isinstance(x, (tuple, list)):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(x))
        if isinstance(x, (dict, list, tuple)):
            if self.uses_extracurricular:
                raise ValueError(
                    "mode='ecl' draws extracurricular inputs from a single input "
                    f"tensor; `{argument}` holds a {type(x).__name__} of inputs. "
                    "Use one input tensor, or mode='kd'."
                )
            return  # Multi-input models: Keras checks the structure itself.
        if not _is_array(x):
            return  # Generators and PyDatasets cannot be peeked without consuming them.
        x = self._check_inputs(x, argument)
        if self.uses_labels and y is None:
            raise ValueError(
                f"supervised_weight={self.supervised_weight} (mode={self.mode!r}) needs "
                f"labels, but `{argument}` has no `y`. Pass (x, y) data, or set "
                "supervised_weight=0 to distil from the teacher alone."
            )
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 0:
                raise ValueError(
                    f"Labels of `{argument}` must have a batch axis. Received: shape=()"
                )
        if y is not None and len(y) != len(x):
            raise ValueError(
                f"`{argument}` has {len(x)} inputs but {len(y)} labels: they must match."
            )
        if sample_weight is not None:
            self._check_sample_weight(sample_weight, len(x), argument)
        self._check_input_shape(x.shape, argument)
        rows = tf.convert_to_tensor(x[:_CHECK_ROWS])
        # The teacher first: a subclassed student is built by its first call and
        # must not be built for inputs that the teacher then rejects.
        if self.uses_teacher:
            teacher_outputs = self.teacher(rows, training=False)
            teacher_size = self.head.event_size(_output_shape(teacher_outputs), "teacher")
            if not all(np.all(np.isfinite(o)) for o in tf.nest.flatten(teacher_outputs)):
                raise ValueError(
                    f"The teacher's outputs on the first rows of `{argument}` contain NaN "
                    "or inf, so there is nothing to distil. Check the teacher's weights "
                    "(did its training diverge?) and what it was trained on."
                )
        student_outputs = self.student(rows, training=False)
        output_shape = _output_shape(student_outputs)
        event_size = self.head.event_size(output_shape, "student")
        if self.uses_teacher:
            self._check_same_event_size(teacher_size, event_size)
        if y is not None:
            output_rank = len(output_shape[0] if isinstance(output_shape, list) else output_shape)
            self._check_labels(y, event_size, output_rank, argument)
        if self.uses_extracurricular:
            seed = tf.constant(_EVALUATION_SEED, tf.int32)  # leaves the training stream alone
            synthetic = self.sampler(rows, num_samples=self.samples_per_example, seed=seed)
            if not np.all(np.isfinite(synthetic)):
                raise ValueError(
                    f"The sampler's draws around the first rows of `{argument}` contain NaN "
                    "or inf. Check the sampler (e.g. the function of FromCallable)."
                )
        self.built = True

    def _check_input_shape(self, shape, argument, roles=("student", "teacher")):
        """Checks the per-example input shape against models with symbolic inputs."""
        for role in roles:
            model = self.student if role == "student" else self.teacher
            if role == "teacher" and not self.uses_teacher:
                continue
            shapes = _input_shapes(model)  # None when subclassed: Keras checks the call
            if not shapes or len(shapes) != 1:
                continue
            expected = shapes[0][1:]
            if not tf.TensorShape(expected).is_compatible_with(tuple(shape)[1:]):
                raise ValueError(
                    f"`{argument}` does not fit the {role}, which takes inputs of shape "
                    f"{(None, *expected)}. Received: shape={tuple(shape)}"
                )

    def _check_inputs(self, x, argument, finite=True):
        array = np.asarray(x)
        if array.dtype.kind not in "biuf":
            raise TypeError(
                f"`{argument}` must hold numbers (int or float). Received: dtype={array.dtype}"
            )
        if array.ndim == 0:
            raise ValueError(f"`{argument}` must have a batch axis. Received: shape=()")
        if array.shape[0] == 0:
            raise ValueError(f"`{argument}` is empty. Received: shape={array.shape}")
        if finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            bad = int(np.sum(~np.isfinite(array)))
            raise ValueError(
                f"`{argument}` contains {bad} NaN or inf value(s); training on them "
                "would poison the weights. Clean or impute the inputs first."
            )
        return array

    @staticmethod
    def _check_sample_weight(sample_weight, num_inputs, argument):
        weights = np.asarray(sample_weight)
        if weights.dtype.kind not in "biuf":
            raise TypeError(
                f"Sample weights of `{argument}` must be numbers. Received: dtype={weights.dtype}"
            )
        if weights.ndim == 0 or len(weights) != num_inputs:
            raise ValueError(
                f"`{argument}` has {num_inputs} inputs but sample weights of shape "
                f"{weights.shape}: one weight per input."
            )
        if weights.dtype.kind == "f" and not np.all(np.isfinite(weights)):
            raise ValueError(f"Sample weights of `{argument}` contain NaN or inf values.")

    def _check_labels(self, y, event_size, output_rank, argument):
        """Checks labels against outputs of rank `output_rank` (batch first).

        Labels are class ids when they have one axis less than the outputs
        (or a trailing axis of 1), else one-hot rows or regression targets.
        """
        if y.dtype.kind not in "biuf":
            raise TypeError(f"Labels of `{argument}` must be numbers. Received: dtype={y.dtype}")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValueError(f"Labels of `{argument}` contain NaN or inf values.")
        per_output = y.ndim == output_rank - 1
        if not isinstance(self.head, heads_lib.Categorical):
            size = 1 if per_output else y.shape[-1]
            if size != event_size:
                raise ValueError(
                    f"Targets of `{argument}` must have {event_size} column(s), one per "
                    f"regression output of the models. Received: shape={y.shape}"
                )
        elif per_output or (y.ndim == output_rank and y.shape[-1] == 1 and event_size > 1):
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

    def _check_same_event_size(self, teacher_size, student_size):
        if teacher_size != student_size:
            kind = "classes" if isinstance(self.head, heads_lib.Categorical) else "outputs"
            raise ValueError(
                f"Teacher and student must predict the same number of {kind} for "
                f"{type(self.head).__name__}. Received: teacher={teacher_size}, "
                f"student={student_size}"
            )

    def _check_models_symbolically(self):
        """Checks the output layouts of functional/Sequential models at once."""

        def event_size(model, role):
            try:
                outputs = model.outputs
            except (AttributeError, ValueError):
                return None  # Subclassed or unbuilt: `fit` checks it eagerly.
            if not outputs:
                return None
            outputs = outputs if len(outputs) > 1 else outputs[0]
            return self.head.event_size(_output_shape(outputs), role)

        student_size = event_size(self.student, "student")
        teacher_size = self.teacher is not None and event_size(self.teacher, "teacher")
        if student_size and teacher_size:
            self._check_same_event_size(teacher_size, student_size)
        student_inputs = _input_shapes(self.student)
        teacher_inputs = self.teacher is not None and _input_shapes(self.teacher)
        if student_inputs and teacher_inputs and not _same_inputs(teacher_inputs, student_inputs):
            raise ValueError(
                "Teacher and student must take the same inputs: each step feeds both the "
                f"same batch. Received: teacher inputs {teacher_inputs}, student inputs "
                f"{student_inputs}"
            )

    # Serialization.

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "student": keras.saving.serialize_keras_object(self.student),
                "teacher": keras.saving.serialize_keras_object(self.teacher),
                "head": keras.saving.serialize_keras_object(self.head),
                "sampler": keras.saving.serialize_keras_object(self.sampler),
                "samples_per_example": self.samples_per_example,
                "supervised_weight": self.supervised_weight,
                "mode": self.mode,
                "uncertainty_weighting": self.uncertainty_weighting,
            }
        )
        return config

    def save_own_variables(self, store):
        # Keras saves no `SeedGenerator` state: without it, a run resumed from
        # `BackupAndRestore` would draw other synthetic inputs and dropout masks.
        super().save_own_variables(store)
        for i, state in enumerate(self._seed_states()):
            store[f"{_SEED_STATE}{i}"] = state

    def load_own_variables(self, store):
        seed_keys = [key for key in store.keys() if key.startswith(_SEED_STATE)]
        super().load_own_variables({k: store[k] for k in store.keys() if k not in seed_keys})
        if not seed_keys:  # saved before seed states were: keep the current ones
            return
        states = self._seed_states()
        if len(seed_keys) != len(states):
            raise ValueError(
                f"The weights file holds {len(seed_keys)} random seed states, but this "
                f"Distiller has {len(states)} (sampler, dropout and other random layers). "
                "Load it into a Distiller built like the one that saved it."
            )
        for i, state in enumerate(states):
            state.assign(store[f"{_SEED_STATE}{i}"])

    def _seed_states(self):
        """The state variables of every `SeedGenerator` in the Distiller, in a fixed order."""
        states = {}
        for layer in self._flatten_layers(include_self=True, recursive=True):
            for generator in layer._seed_generators:
                states.setdefault(id(generator.state), generator.state)
        return list(states.values())

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("student", "teacher", "sampler"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        config["head"] = heads_lib.get(config["head"])
        return cls(**config)


class _NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops `fit` with a clear error as soon as the loss is NaN or inf."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            raise FloatingPointError(
                f"The training loss or its gradients became non-finite ({float(loss)}) "
                f"at epoch {self.epoch + 1}, step {batch + 1}. That update was "
                "skipped, so the student keeps the weights of the last finite step. "
                "Check the inputs and the teacher's outputs for NaN/inf, or lower the "
                "learning rate."
            )
