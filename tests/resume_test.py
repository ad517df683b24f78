"""Nothing lost: a Distiller's backup holds its random seed states, backups are
swapped in whole, and a run killed with SIGKILL resumes from
`keras_ecl.callbacks.BackupAndRestore` to the very same weights.

The kill test runs tests/scripts/resume_train.py in subprocesses: one run goes
through uninterrupted, another is killed at a random point after a backup and
started again with the same arguments (a killed worker of a two-worker cluster:
`multi_worker_test.py`).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import keras
import numpy as np
import pytest

import keras_ecl
from tests.testing import mlp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = ["-m", "tests.scripts.resume_train"]  # run from ROOT, where `tests` is a package
EPOCHS = 6


def make_distiller(sampler_seed, dropout=0.3):
    distiller = keras_ecl.Distiller(
        mlp(units=8, dropout=dropout),
        mlp(units=16),
        sampler=keras_ecl.samplers.MixUp(alpha=1.0, seed=sampler_seed),
        samples_per_example=2,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    return distiller


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)


def seed_states(distiller):
    return [state.numpy() for state in distiller.seed_states()]


def test_saved_weights_carry_the_sampler_and_dropout_seed_states(tmp_path):
    x, y = data()
    keras.utils.set_random_seed(0)
    saved = make_distiller(sampler_seed=1)
    saved.fit(x, y, epochs=1, batch_size=16, verbose=0)
    saved.save_weights(tmp_path / "backup.weights.h5")
    # The sampler's and the Dropout layer's generators, both advanced by training.
    assert len(seed_states(saved)) == 2
    keras.utils.set_random_seed(7)
    restored = make_distiller(sampler_seed=2)
    restored.fit(x, y, epochs=1, batch_size=16, verbose=0)  # other weights, other draws
    restored.load_weights(tmp_path / "backup.weights.h5")
    for expected, state in zip(seed_states(saved), seed_states(restored), strict=True):
        np.testing.assert_array_equal(state, expected)
    # From here on both draw the same synthetic inputs and masks: same training.
    saved.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    restored.fit(x, y, epochs=1, batch_size=16, verbose=0, shuffle=False)
    for a, b in zip(saved.student.get_weights(), restored.student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.large
def test_weights_saved_without_seed_states_still_load(tmp_path):
    x, y = data()
    distiller = make_distiller(sampler_seed=1)
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    path = tmp_path / "old.weights.h5"
    distiller.save_weights(path)
    with h5py.File(path, "a") as file:  # as files written before seed states were saved
        for key in list(file["vars"]):
            del file["vars"][key]
    other = make_distiller(sampler_seed=2)
    other.fit(x, y, epochs=1, batch_size=16, verbose=0)
    before = seed_states(other)
    other.load_weights(path)
    for a, b in zip(other.student.get_weights(), distiller.student.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(seed_states(other), before, strict=True):
        np.testing.assert_array_equal(a, b)


class Killed(Exception):
    """Stands for SIGKILL inside this process."""


def fit_killed_in_third_backup(callback_class, backup_dir, monkeypatch):
    """Trains until the third backup, which dies half-written."""
    x, y = data()
    distiller = make_distiller(sampler_seed=1)
    save_weights = keras_ecl.Distiller.save_weights
    calls = []

    def dying_save_weights(self, filepath, *args, **kwargs):
        calls.append(filepath)
        if len(calls) == 3:
            with open(filepath, "wb") as file:  # an HDF5 signature, then nothing
                file.write(b"\x89HDF\r\n\x1a\n" + bytes(88))
            raise Killed
        return save_weights(self, filepath, *args, **kwargs)

    monkeypatch.setattr(keras_ecl.Distiller, "save_weights", dying_save_weights)
    with pytest.raises(Killed):
        distiller.fit(
            x, y, epochs=5, batch_size=16, verbose=0, callbacks=[callback_class(backup_dir)]
        )
    monkeypatch.undo()


def test_a_kill_while_a_backup_is_written_leaves_the_last_one_whole(tmp_path, monkeypatch):
    backup_dir = tmp_path / "backup"
    fit_killed_in_third_backup(keras_ecl.callbacks.BackupAndRestore, backup_dir, monkeypatch)
    x, y = data()
    resumed = make_distiller(sampler_seed=1)
    backup = keras_ecl.callbacks.BackupAndRestore(backup_dir)
    history = resumed.fit(x, y, epochs=5, batch_size=16, verbose=0, callbacks=[backup])
    assert len(history.history["loss"]) == 3  # epochs 3 to 5: two backups were whole


def test_double_checkpoint_keeps_the_previous_backup_whole(tmp_path):
    class KillAtThirdEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise Killed

    x, y = data()
    backup = keras_ecl.callbacks.BackupAndRestore(tmp_path, double_checkpoint=True)
    with pytest.raises(Killed):
        make_distiller(sampler_seed=1).fit(
            x, y, epochs=5, verbose=0, callbacks=[backup, KillAtThirdEpoch()]
        )
    for name, epochs in (("latest.weights.h5", 2), ("latest.weights.h5.bkp", 1)):
        with h5py.File(tmp_path / name, "r") as file:
            assert file.attrs["keras_ecl_epoch"] == epochs
    with open(tmp_path / "training_metadata.json.bkp") as file:
        assert json.load(file)["epoch"] == 1


def test_keras_own_callback_cannot_resume_after_the_same_kill(tmp_path, monkeypatch):
    # Why keras_ecl has its own: Keras 3.15 writes the backup in place.
    backup_dir = tmp_path / "backup"
    fit_killed_in_third_backup(keras.callbacks.BackupAndRestore, backup_dir, monkeypatch)
    x, y = data()
    with pytest.raises(OSError):
        make_distiller(sampler_seed=1).fit(
            x, y, epochs=5, verbose=0, callbacks=[keras.callbacks.BackupAndRestore(backup_dir)]
        )


def start(output, backup_dir, env=None, rows=2048):
    return subprocess.Popen(
        [sys.executable, *SCRIPT, str(output), str(backup_dir), str(EPOCHS), str(rows)],
        cwd=ROOT,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for(process, line):
    """Reads the process' output until `line`; returns what it read."""
    seen = []
    for output in process.stdout:
        seen.append(output)
        if output.strip() == line:
            return "".join(seen)
    raise AssertionError(f"exited before {line!r}:\n" + "".join(seen)[-4000:])


def finish(process):
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-6000:]


def load(path):
    result = np.load(path)
    return {key: result[key] for key in result.files}


def assert_same_training(resumed, uninterrupted, context):
    assert resumed["iterations"] == uninterrupted["iterations"], context
    weights = [key for key in uninterrupted if key.startswith("w")]
    for key in weights:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=context)


def kill_point():
    """A random epoch to kill after and a delay into the next, reported on failure."""
    seed = int(os.environ.get("KERAS_ECL_KILL_SEED", random.SystemRandom().randrange(10**6)))
    rng = random.Random(seed)
    return rng.randint(1, EPOCHS - 3), rng.uniform(0.0, 0.3), seed


@pytest.mark.large
def test_killed_run_resumes_from_its_backup_to_identical_weights(tmp_path):
    epoch, delay, seed = kill_point()
    context = f"killed {delay:.2f} s after epoch {epoch} (KERAS_ECL_KILL_SEED={seed})"
    uninterrupted = start(tmp_path / "uninterrupted.npz", tmp_path / "backup_uninterrupted")
    killed = start(tmp_path / "resumed.npz", tmp_path / "backup")
    wait_for(killed, f"epoch {epoch} done")
    time.sleep(delay)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, context
    assert not (tmp_path / "resumed.npz").exists(), context
    with open(tmp_path / "backup" / "training_metadata.json") as file:
        backed_up = json.load(file)["epoch"]
    assert epoch <= backed_up < EPOCHS, context

    finish(start(tmp_path / "resumed.npz", tmp_path / "backup"))
    finish(uninterrupted)
    resumed = load(tmp_path / "resumed.npz")
    assert resumed["epochs_run"] == EPOCHS - backed_up, context
    assert not (tmp_path / "backup").exists()  # BackupAndRestore cleans up at the end
    assert_same_training(resumed, load(tmp_path / "uninterrupted.npz"), context)
