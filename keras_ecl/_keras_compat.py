"""Every use of Keras or TensorFlow internals in keras_ecl, each with the reason for it.

The rest of the library uses public APIs only; what they cannot do yet is done
here, with the upstream issue or version that makes it necessary, and
`tests/keras_compat_test.py` fails when a workaround stops working or stops
being needed. A Keras upgrade starts by running that file.
"""

import json
import os
import sys
import warnings

__all__ = [
    "TESTED_VERSIONS",
    "BackupAndRestoreHooks",
    "LocalBatchBuild",
    "check_backend",
    "compile_loss",
    "configured_backend",
    "for_multi_worker_mean",
    "forget_uncompiled",
    "is_multi_worker",
    "loss_tracker",
    "scale_loss_for_distribution",
    "seed_generators",
    "set_initial_epoch",
    "strategy_supports_no_merge_call",
    "unscale_loss_for_distribution",
    "warn_if_untested",
]

# The oldest and newest (major.minor) of the range `make test-compat` passes on,
# setup.cfg's install_requires bounds; versions outside work but warn once.
TESTED_VERSIONS = {"keras": ("3.12", "3.15"), "tensorflow": ("2.18", "2.21")}


def _minor(version):
    """`(major, minor)` of a version string such as "2.21.0" or "2.20.0rc1"."""
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def configured_backend():
    """The Keras backend `import keras` would pick, read without importing Keras.

    As Keras 3 does: `KERAS_BACKEND`, else `"backend"` in `$KERAS_HOME/keras.json`
    (`~/.keras/keras.json`), else `"tensorflow"`; a Keras already imported has
    the final word.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"].config.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as file:
            return json.load(file).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def check_backend():
    """Raises an ImportError unless Keras runs on TensorFlow.

    keras_ecl's training step, samplers and export are TensorFlow code
    (`tf.GradientTape`, `tf.distribute`, `tensorflow_probability`): under
    another backend the import would work and training fail deep inside
    TensorFlow, or `import keras` itself would fail on a missing JAX.
    """
    backend = configured_backend()
    if backend != "tensorflow":
        raise ImportError(
            "keras_ecl needs Keras' TensorFlow backend, but the Keras backend is "
            f"{backend!r}. Set the environment variable KERAS_BACKEND=tensorflow before "
            'Python imports keras (or `"backend": "tensorflow"` in ~/.keras/keras.json).'
        )


check_backend()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# keras-team/keras 3.15: the loss scaling of `keras.losses.Loss` for replicas is
# not public; hand-made loss terms (regularizers) must scale the same way.
from keras.src.losses.loss import (  # noqa: E402
    scale_loss_for_distribution,
    unscale_loss_for_distribution,
)

_warned = []  # the untested versions already warned about: once per process


def warn_if_untested(versions=None):
    """Warns once if Keras or TensorFlow is a version the suite has not passed on.

    Args:
        versions: `{"keras": "3.15.1", "tensorflow": "2.21.0"}` to check.
            Defaults to None: the installed versions.

    Returns:
        Whether a warning was issued.
    """
    if versions is None:
        versions = {"keras": keras.version(), "tensorflow": tf.__version__}
    untested = {
        name: version
        for name, version in versions.items()
        if not _minor(TESTED_VERSIONS[name][0])
        <= _minor(version)
        <= _minor(TESTED_VERSIONS[name][1])
    }
    if not untested or _warned:
        return False
    _warned.append(untested)
    found = ", ".join(f"{name} {version}" for name, version in untested.items())
    tested = ", ".join(f"{name} {v[0]} to {v[1]}" for name, v in TESTED_VERSIONS.items())
    warnings.warn(
        f"keras_ecl is tested with {tested}; found {found}. It uses a few Keras internals "
        "(keras_ecl/_keras_compat.py): if training fails, run tests/keras_compat_test.py.",
        stacklevel=2,
    )
    return True


# Multi-worker training (keras-team/keras#20329, Keras 3.15): plain `fit` fails
# under MultiWorkerMirroredStrategy. Keras' private predicate is the one it
# uses itself to decide, so the workarounds below trigger exactly where it fails.
from keras.src.backend.tensorflow.trainer import (  # noqa: E402
    _collective_all_reduce_multi_worker,
)


def is_multi_worker(strategy=None):
    """Whether `strategy` (default: the current one) all-reduces across several workers."""
    return bool(_collective_all_reduce_multi_worker(strategy or tf.distribute.get_strategy()))


def for_multi_worker_mean(logs):
    """Scalar logs as shape-[1] tensors when several workers train.

    Keras 3.15 averages the step logs of `MultiWorkerMirroredStrategy` with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars every
    `train_step` returns. A length-1 axis makes that reduce the mean over the
    workers, a scalar again. Elsewhere the logs pass unchanged.
    """
    if not is_multi_worker():
        return logs
    return tf.nest.map_structure(
        lambda value: tf.reshape(value, [1]) if value.shape.rank == 0 else value, logs
    )


class LocalBatchBuild:
    """Model mixin: builds from this worker's first local batch under a strategy.

    Keras 3.15 reduces the whole first `(x, y)` batch with one
    `strategy.reduce("MEAN", ...)` in `_maybe_symbolic_build`, which
    `MultiWorkerMirroredStrategy` rejects ("Attempt to convert a value
    (PerReplica ..."), as in keras-team/keras#20329. Building needs shapes and
    dtypes only, so the first local replica's batch serves, with no collective.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
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


def strategy_supports_no_merge_call():
    """Whether optimizer updates may run in replica context (TF's own predicate).

    Like Keras' `LossScaleOptimizer`, a conditional update must otherwise go
    through `merge_call` into cross-replica context.
    """
    return tf.__internal__.distribute.strategy_supports_no_merge_call()


def no_dataset_shuffle(params):
    """`fit` arguments with `shuffle=False` for a `tf.data.Dataset`, unless the caller chose.

    Keras 3.15 warns "`shuffle=True` was passed, but will be ignored" on
    every `fit(dataset)`, from its own default `shuffle=True`: a warning the
    user did not cause. `fit` never shuffles a dataset, so nothing else changes.
    """
    if isinstance(params.get("x"), tf.data.Dataset):
        params.setdefault("shuffle", False)
    return params


def compile_loss(model):
    """The loss passed to `model.compile(loss=...)`, or None.

    Keras 3.15 keeps it only as the private `_compile_loss` (a `CompileLoss`
    that `compute_loss` calls); a custom `train_step` that uses it as one term
    of its objective has no public handle.
    """
    return model._compile_loss


def compile_metrics(model):
    """The `CompileMetrics` built from `model.compile(metrics=...)`, or None.

    Keras 3.15 keeps it as the private `_compile_metrics` and lists it in
    `model.metrics`; `compute_metrics` updates it with labels, so data without
    labels must leave it out.
    """
    return model._compile_metrics


def forget_uncompiled(model, loss, metrics, weighted_metrics):
    """Drops the loss and metrics of an earlier `compile` that this one omits.

    Keras 3.15's `compile(loss=None)` or `compile(metrics=None)` keeps the
    previous call's `_compile_loss` / `_compile_metrics`: a recompile without
    metrics would still log the old ones, and one without a loss (the head's
    own likelihood, for a Distiller) would still train on the old loss.
    """
    if loss is None:
        model._compile_loss = None
        model.loss = None
    if metrics is None and weighted_metrics is None:
        model._compile_metrics = None


def loss_tracker(model):
    """The `keras.metrics.Mean` that Keras reports as the `"loss"` metric.

    Keras 3.15 creates it in `Trainer.__init__` and lists it first in
    `model.metrics`; a custom `train_step` must update it for `fit` to log
    `loss`, but only the private `_loss_tracker` names it.
    """
    return model._loss_tracker


def seed_generators(layer):
    """Every `keras.random.SeedGenerator` in `layer` and the layers it holds, once each.

    Keras 3.15 does not save a generator's state with the weights
    (`Layer.save_own_variables` stores trainable and non-trainable variables
    only), so a run resumed from a backup would draw other random numbers; the
    Distiller saves these states itself. Keras lists them only in the private
    `_seed_generators` of each layer, found through `_flatten_layers`.
    """
    generators = {}
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        for generator in sublayer._seed_generators:
            generators.setdefault(id(generator.state), generator)
    return list(generators.values())


def moving_averages(optimizer):
    """`(variable, average)` pairs of an optimizer built with `use_ema=True`, else `[]`.

    Keras 3.15 keeps the averages in the private `_model_variables_moving_average`,
    in the order of the private `_trainable_variables` it was built with, and
    writes them into the weights only when `fit` ends
    (`finalize_variable_values`); nothing public reads them mid-training.
    """
    averages = getattr(optimizer, "_model_variables_moving_average", None)
    if not getattr(optimizer, "use_ema", False) or not averages:
        return []
    pairs = zip(optimizer._trainable_variables, averages, strict=True)
    return [(variable, average) for variable, average in pairs if average is not None]


def set_initial_epoch(model, epoch):
    """Makes the next `fit` start at `epoch`, as Keras' `BackupAndRestore` does.

    Keras 3.15's callback sets the private `model._initial_epoch`, which `fit`
    reads; there is no public way for a callback to move the start epoch.
    """
    model._initial_epoch = epoch


class BackupAndRestoreHooks(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` with its private save/load steps made overridable.

    Keras 3.15 writes its backup in place (`_save_model`), so a kill during
    the write leaves a truncated file. Subclasses override `write_backup` and
    `restore_backup`, and read the paths and progress through properties,
    instead of Keras' private names.
    """

    def _save_model(self):
        self.write_backup()

    def _load_model(self):
        self.restore_backup()

    def write_backup(self):
        """Writes a backup; defaults to Keras' own (in-place) write."""
        super()._save_model()

    def restore_backup(self):
        """Restores the backup, if any; defaults to Keras' own."""
        super()._load_model()

    @property
    def backup_paths(self):
        """`{"weights", "metadata", "previous_weights", "previous_metadata"}` file paths."""
        return {
            "weights": self._weights_path,
            "metadata": self._training_metadata_path,
            "previous_weights": self._prev_weights_path,
            "previous_metadata": self._prev_training_metadata_path,
        }

    @property
    def progress(self):
        """`(epoch, batch)`: the epoch being backed up and the last batch seen."""
        return self._current_epoch, self._last_batch_seen
