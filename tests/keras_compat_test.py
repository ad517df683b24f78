"""Each Keras/TensorFlow workaround of `keras_ecl/_keras_compat.py` still works and is still needed.

Run this file first after a Keras or TensorFlow upgrade. A test named
`..._still_needed` failing means upstream changed what the workaround works
around: check whether it can go. Where proving that needs several workers, the
canary reads Keras' source for the code that fails, and the real run is in
`multi_worker_test.py` / `resume_test.py`.
"""

import inspect
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.tensorflow import trainer as keras_tf_trainer

import keras_ecl
from keras_ecl import _keras_compat as compat
from tests import testing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def import_keras_ecl(env):
    """Imports keras_ecl in a fresh process with `env`; returns (exit code, stderr)."""
    result = subprocess.run(
        [sys.executable, "-c", "import keras_ecl"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.returncode, result.stderr


# Backend and versions.


@pytest.mark.parametrize("backend", ["jax", "torch", "numpy"])
def test_importing_under_another_backend_names_it_and_what_to_set(backend):
    code, stderr = import_keras_ecl({"KERAS_BACKEND": backend})
    assert code != 0
    assert (
        f"ImportError: keras_ecl needs Keras' TensorFlow backend, but the Keras backend is "
        f"'{backend}'. Set the environment variable KERAS_BACKEND=tensorflow" in stderr
    ), stderr[-2000:]


def test_the_backend_of_keras_json_is_refused_too(tmp_path):
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    env = {"KERAS_HOME": str(tmp_path), "KERAS_BACKEND": ""}
    code, stderr = import_keras_ecl(env)
    assert code != 0 and "the Keras backend is 'jax'" in stderr, stderr[-2000:]


def test_a_keras_imported_with_another_backend_is_refused(monkeypatch):
    monkeypatch.setattr(keras.config, "backend", lambda: "torch")
    with pytest.raises(ImportError, match="the Keras backend is 'torch'"):
        compat.check_backend()


def test_an_untested_version_warns_once(monkeypatch):
    monkeypatch.setattr(compat, "_warned", [])
    with pytest.warns(UserWarning, match="found keras 3.99.0. It uses a few Keras internals"):
        assert compat.warn_if_untested({"keras": "3.99.0", "tensorflow": "2.21.0"})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not compat.warn_if_untested({"keras": "3.99.0", "tensorflow": "2.21.0"})


@pytest.mark.parametrize(
    "versions, warns",
    [
        ({"keras": "3.12.0", "tensorflow": "2.18.0"}, False),  # the oldest supported
        ({"keras": "3.13.2", "tensorflow": "2.19.1"}, False),  # inside the range
        ({"keras": "3.15.1", "tensorflow": "2.21.0"}, False),  # the newest
        ({"keras": "3.11.3", "tensorflow": "2.21.0"}, True),
        ({"keras": "3.15.1", "tensorflow": "2.22.0rc0"}, True),
        ({"keras": "3.15.1", "tensorflow": "2.17.1"}, True),
    ],
)
def test_versions_between_the_oldest_and_newest_tested_do_not_warn(monkeypatch, versions, warns):
    monkeypatch.setattr(compat, "_warned", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert compat.warn_if_untested(versions) is warns
    assert len(caught) == int(warns)


def test_the_installed_versions_are_tested_ones(monkeypatch):
    monkeypatch.setattr(compat, "_warned", [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not compat.warn_if_untested()


# Loss scaling for replicas.


def test_loss_scaling_divides_by_the_replicas_in_replica_context():
    strategy = testing.two_replicas()
    scaled = strategy.run(lambda: compat.scale_loss_for_distribution(tf.constant(3.0)))
    unscaled = strategy.run(lambda: compat.unscale_loss_for_distribution(tf.constant(1.5)))
    assert [float(v) for v in strategy.experimental_local_results(scaled)] == [1.5, 1.5]
    assert [float(v) for v in strategy.experimental_local_results(unscaled)] == [3.0, 3.0]
    assert float(compat.scale_loss_for_distribution(tf.constant(3.0))) == 3.0


# The compiled loss and the "loss" tracker of a custom train_step.


def test_compile_loss_is_the_loss_given_to_compile():
    # distiller_test's test_compile_loss_replaces_the_supervised_term checks its value.
    model = testing.mlp()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=loss)
    assert compat.compile_loss(model) is not None
    assert loss in keras.tree.flatten(compat.compile_loss(model)._user_loss)
    model = testing.mlp()
    model.compile(optimizer="adam")
    assert compat.compile_loss(model) is None


def test_loss_tracker_is_the_metric_fit_logs_as_loss():
    model = testing.mlp()
    model.compile(optimizer="adam")
    tracker = compat.loss_tracker(model)
    assert isinstance(tracker, keras.metrics.Mean) and tracker.name == "loss"
    assert model.metrics[0] is tracker


def test_compile_metrics_are_the_metrics_given_to_compile():
    model = testing.mlp()
    model.compile(optimizer="adam", metrics=["accuracy"])
    compiled = compat.compile_metrics(model)
    assert compiled is not None and compiled in model.metrics
    model = testing.mlp()
    model.compile(optimizer="adam")
    assert compat.compile_metrics(model) is None


# Multi-worker training (keras-team/keras#20329).


def test_is_multi_worker_only_for_several_workers():
    assert not compat.is_multi_worker()
    assert not compat.is_multi_worker(testing.two_replicas())
    logs = {"loss": tf.constant(1.0)}
    assert compat.for_multi_worker_mean(logs) is logs  # unchanged on one worker


def test_multi_worker_build_and_log_workarounds_still_needed():
    # Keras reduces the first batch with one strategy.reduce, which
    # MultiWorkerMirroredStrategy rejects for per-replica values ...
    build = inspect.getsource(keras_tf_trainer.TensorFlowTrainer._maybe_symbolic_build)
    assert "distribute_strategy.reduce(" in build
    # ... and averages the step logs on axis 0, which scalars do not have.
    reduce = inspect.getsource(keras_tf_trainer.reduce_per_replica)
    assert 'strategy.reduce("MEAN", v, axis=0)' in reduce
    # The predicate both workarounds key on is still Keras' own.
    assert "_collective_all_reduce_multi_worker(" in reduce


def test_local_batch_build_overrides_the_method_keras_calls():
    assert "_maybe_symbolic_build" in vars(compat.LocalBatchBuild)
    assert "self._maybe_symbolic_build(" in inspect.getsource(
        keras_tf_trainer.TensorFlowTrainer.fit
    )
    assert keras_ecl.Distiller._maybe_symbolic_build is compat.LocalBatchBuild._maybe_symbolic_build


def test_no_merge_call_predicate():
    assert compat.strategy_supports_no_merge_call()
    with testing.two_replicas().scope():
        assert not compat.strategy_supports_no_merge_call()


# Random seed states (not saved by Keras).


def test_seed_generators_finds_each_generator_once():
    dropout_model = testing.mlp(units=4, dropout=0.5)
    sampler = keras_ecl.samplers.OneOf([keras_ecl.samplers.MixUp(), keras_ecl.samplers.CutMix()])
    distiller = keras_ecl.Distiller(dropout_model, testing.mlp(units=8), sampler=sampler)
    generators = compat.seed_generators(distiller)
    assert len(generators) == 4  # dropout, the OneOf's and its two components'
    assert all(isinstance(g, keras.random.SeedGenerator) for g in generators)


def test_saving_seed_states_still_needed():
    # Keras stores a layer's trainable and non-trainable variables only; if it
    # ever stores the seed state, the Distiller's own copy can go.
    dropout = keras.layers.Dropout(0.5)
    dropout.build((None, 3))
    store = {}
    dropout.save_own_variables(store)
    assert store == {}
    assert compat.seed_generators(dropout)


# Resume: the start epoch and Keras' BackupAndRestore internals.


def test_set_initial_epoch_moves_the_start_of_the_next_fit():
    model = testing.mlp()
    model.compile(optimizer="adam", loss="mse")
    compat.set_initial_epoch(model, 2)
    history = model.fit(np.zeros((4, 6)), np.zeros((4, 3)), epochs=3, verbose=0)
    assert history.epoch == [2]


def test_moving_averages_pair_each_weight_with_the_average_fit_leaves():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    model.compile(optimizer=optimizer, loss="mse")
    assert compat.moving_averages(keras.optimizers.SGD(0.1)) == []
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # one step, then finalize
    pairs = compat.moving_averages(optimizer)
    assert [id(variable) for variable, _ in pairs] == [id(v) for v in model.trainable_variables]
    # At the end of fit Keras wrote each average into its weight.
    for variable, average in pairs:
        np.testing.assert_array_equal(variable.numpy(), average.numpy())


def test_backup_hooks_replace_keras_private_save_and_load(tmp_path):
    # The "still needed" half is resume_test's
    # test_keras_own_callback_cannot_resume_after_the_same_kill.
    for name in ("_save_model", "_load_model"):
        assert name in vars(keras.callbacks.BackupAndRestore)
    calls = []

    class Counting(compat.BackupAndRestoreHooks):
        def write_backup(self):
            calls.append(("write", self.progress[0]))
            super().write_backup()

        def restore_backup(self):
            calls.append(("restore", None))
            super().restore_backup()

    callback = Counting(str(tmp_path))
    model = testing.mlp()
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.zeros((4, 6)), np.zeros((4, 3)), epochs=2, verbose=0, callbacks=[callback])
    assert calls == [("restore", None), ("write", 1), ("write", 2)]  # epochs done
    assert set(callback.backup_paths) == {
        "weights",
        "metadata",
        "previous_weights",
        "previous_metadata",
    }
    assert all(str(tmp_path) in path for path in callback.backup_paths.values())


def dataset_fit(model):
    x, y = testing.classification_data(32)
    model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(16), epochs=1, verbose=0)


def test_fit_on_a_dataset_warns_nothing():
    with testing.warnings_as_errors():
        dataset_fit(testing.make_distiller())


def test_dataset_shuffle_workaround_still_needed():
    model = testing.mlp()
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    with pytest.warns(UserWarning, match="`shuffle=True` was passed, but will be ignored"):
        dataset_fit(model)
