"""Every file keras_ecl writes survives a SIGKILL at any moment of the write.

For each writer a forked child rewrites one artefact again and again,
alternating two versions, and is killed with SIGKILL at a random moment; the
loader a user would call (tf.saved_model.load, the TFLite interpreter, the
callback's restore, json.load) must then find one of the two versions, whole,
at the path. Forking reuses this process's imports, so a kill costs no
TensorFlow start-up: 3 kills per writer by default, 50 with KERAS_ECL_DEEP=1
(`make test-deep`). What cannot run after a fork is computed before it: the
TFLite child gets its flatbuffers (the converter hangs; its scratch SavedModel
is not the artefact), the gallery's its draws (TensorFlow ops can deadlock).
"""

import json
import os
import random
import select
import signal
import time
import traceback

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from benchmarks import report
from keras_ecl import _atomic, export
from tests.testing import mlp

KILLS = 50 if os.environ.get("KERAS_ECL_DEEP") == "1" else 3
SEED = int(os.environ.get("KERAS_ECL_KILL_SEED", random.randrange(2**16)))
X = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kill tests fork a writer")


def versions_of(model, scale=1.0):
    """Two weight sets of `model`: its own, and every weight shifted by `scale`."""
    first = model.get_weights()
    return [first, [w + scale for w in first]]


def kill_while_writing(write, read, duration):
    """SIGKILLs children that run `write(0)`, `write(1)`, ... in a loop; `read()` after each.

    `write(version)` writes version 0 or 1 of the artefact; `read()` loads what
    is at the path and returns the version it holds (failing if it is neither).
    The kill comes a random time into the writes after the child's first
    (`duration` is one write's time). A child that never completes a write
    (TensorFlow can deadlock in a forked child) is replaced. Fails listing
    every kill after which the artefact was broken; returns the versions
    found, one per kill.
    """
    rng = random.Random(SEED)
    found, stuck, replaced = [], 0, 0
    while len(found) < KILLS:
        context = f"kill {len(found) + 1} of {KILLS} (KERAS_ECL_KILL_SEED={SEED})"
        pid, reader = fork_writer(write, len(found) % 2)
        try:
            # After its first whole write, so kills also land after a version changed.
            first = os.read(reader, 1) if select.select([reader], [], [], 30)[0] else None
            if first:
                time.sleep(rng.uniform(0, 2.5 * duration))
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(reader)
        if first is None:  # a lock some other thread held at the fork: fork again
            stuck, replaced = stuck + 1, replaced + 1
            assert stuck <= 3, f"{context}: 3 forked writers in a row wrote nothing in 30 s"
            continue
        stuck = 0
        assert first and os.WIFSIGNALED(status), f"{context}: the writer failed; see its stderr"
        try:
            found.append(read(context))
        except Exception as error:  # the loader's own error: a broken artefact
            found.append(f"{context}: {type(error).__name__}: {str(error)[:200]}")
    corrupt = [f for f in found if isinstance(f, str)]
    print(f"{KILLS} kills, {len(corrupt)} corrupt, {replaced} stuck forks replaced: {found}")
    assert not corrupt, "\n".join(corrupt)
    return found


def fork_writer(write, version):
    """A child process running `write(version)`, `write(1 - version)`, ... until killed.

    Returns its pid and a pipe that gets a byte after each whole write.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            while True:
                write(version)
                os.write(writer, b".")
                version = 1 - version
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    os.close(writer)
    return pid, reader


def timed(call):
    start = time.monotonic()
    call()
    return time.monotonic() - start


def which_version(probabilities, expected, context, artefact):
    """The index of the version whose predictions the artefact gives; fails if none."""
    matches = [np.allclose(probabilities, e, atol=1e-6) for e in expected]
    assert any(matches), f"{context}: the {artefact} at the path is neither version"
    return matches.index(True)


def assert_no_scratch_left(folder, write):
    """A finished write removes what killed writers left in `folder`."""
    write(0)
    leftovers = [name for name in os.listdir(folder) if name.startswith(".keras_ecl-")]
    assert not leftovers, leftovers


def test_a_killed_saved_model_export_leaves_a_whole_saved_model(tmp_path):
    student = mlp(inputs=4)
    weights = versions_of(student)
    expected = []
    for version in weights:
        student.set_weights(version)
        expected.append(keras.ops.softmax(student(X)).numpy())
    path = str(tmp_path / "student")

    def write(version):
        student.set_weights(weights[version])
        keras_ecl.export_student(student, path)

    def read(context):
        served = tf.saved_model.load(path).signatures["serving_default"]
        probabilities = served(tf.constant(X))["probabilities"].numpy()
        return which_version(probabilities, expected, context, "SavedModel")

    write(1)
    kill_while_writing(write, read, timed(lambda: write(0)))
    assert_no_scratch_left(tmp_path, write)


def test_a_killed_tflite_export_leaves_a_whole_tflite_file(tmp_path, monkeypatch):
    # Wide enough that writing the file (4 MB) takes a share of each loop.
    student = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(1000),
            keras.layers.Dense(1000),
            keras.layers.Dense(3),
        ]
    )
    weights = versions_of(student, scale=0.01)
    flatbuffers, expected = [], []
    for version in weights:
        student.set_weights(version)
        keras_ecl.export_student(student, tmp_path / "reference.tflite")
        flatbuffers.append((tmp_path / "reference.tflite").read_bytes())
        expected.append(export.tflite_predict(tmp_path / "reference.tflite", X)["probabilities"])
    (tmp_path / "reference.tflite").unlink()
    path = tmp_path / "student.tflite"
    current = []
    monkeypatch.setattr(export, "_tflite_flatbuffer", lambda *_: flatbuffers[current[-1]])

    def write(version):
        current.append(version)
        keras_ecl.export_student(student, path)

    def read(context):
        probabilities = export.tflite_predict(path, X)["probabilities"]
        return which_version(probabilities, expected, context, "TFLite file")

    write(1)
    kill_while_writing(write, read, timed(lambda: write(0)))
    assert_no_scratch_left(tmp_path, write)


def ecl_distiller():
    """An ECL Distiller, built (its models are) but never fitted: fitting is not under test."""
    distiller = keras_ecl.Distiller(
        mlp(inputs=4), mlp(units=16, inputs=4), sampler=keras_ecl.samplers.MixUp(seed=0)
    )
    distiller.compile(optimizer="adam")
    return distiller


def test_a_killed_backup_leaves_a_whole_backup_with_its_epoch(tmp_path):
    distiller = ecl_distiller()
    weights = versions_of(distiller)
    backup_dir = str(tmp_path / "backup")
    backup = keras_ecl.callbacks.BackupAndRestore(backup_dir)
    backup.set_model(distiller)

    def write(version):
        distiller.set_weights(weights[version])
        backup.on_epoch_end(version)  # the backup of epoch `version + 1`

    restored = ecl_distiller()

    def read(context):
        resumed = keras_ecl.callbacks.BackupAndRestore(backup_dir)
        resumed.set_model(restored)
        resumed.on_train_begin()
        matches = [
            all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), w, strict=True))
            for w in weights
        ]
        assert any(matches), f"{context}: the backup holds neither version's weights"
        version = matches.index(True)
        assert restored._initial_epoch == version + 1, f"{context}: weights and epoch disagree"
        return version

    write(1)
    kill_while_writing(write, read, timed(lambda: write(0)))
    assert_no_scratch_left(backup_dir, write)


def test_a_killed_gallery_leaves_a_whole_png(tmp_path, monkeypatch):
    distiller = ecl_distiller()
    gallery = keras_ecl.callbacks.SampleGallery(X, tmp_path / "gallery", anchors=4, samples=1)
    gallery.set_model(distiller)
    gallery.on_train_begin()
    draws = []
    for version in versions_of(distiller.teacher):
        distiller.teacher.set_weights(version)
        draws.append(gallery.draw())
    # The child pictures these draws: TensorFlow's ops can deadlock after a fork.
    current = []
    monkeypatch.setattr(gallery, "draw", lambda: draws[current[-1]])

    def write(version):
        current.append(version)
        gallery.write(1)

    path = tmp_path / "gallery" / "gallery_epoch_001.png"
    pictures = []
    for version in (0, 1, 0):
        write(version)
        pictures.append(path.read_bytes())
    assert pictures[0] == pictures[2] != pictures[1]  # the same draws give the same bytes

    def read(context):
        picture = path.read_bytes()
        assert picture in pictures, f"{context}: the PNG at the path is neither version"
        return pictures.index(picture)

    kill_while_writing(write, read, timed(lambda: write(0)))
    assert_no_scratch_left(tmp_path / "gallery", write)


def test_a_killed_benchmark_report_leaves_a_whole_json_file(tmp_path):
    values = np.random.default_rng(0).normal(size=100_000).round(6).tolist()
    path = str(tmp_path / "result.json")

    def write(version):
        report.write_json(path, "kill", {"version": version, "values": values})

    def read(context):
        with open(path) as file:
            payload = json.load(file)
        assert payload["values"] == values, f"{context}: the values are not those written"
        return payload["version"]

    write(1)
    kill_while_writing(write, read, timed(lambda: write(0)))
    assert_no_scratch_left(tmp_path, write)


def folder_files(path):
    return {name: (path / name).read_text() for name in sorted(os.listdir(path))}


def fill(files):
    def write(scratch):
        os.makedirs(scratch)
        for name, text in files.items():
            with open(os.path.join(scratch, name), "w") as file:
                file.write(text)

    return write


@pytest.mark.parametrize("renameat2", [True, False], ids=["renameat2", "two-renames"])
def test_a_folder_is_replaced_whole_with_or_without_renameat2(tmp_path, monkeypatch, renameat2):
    if not renameat2:  # as on a system without it: the documented fallback
        monkeypatch.setattr(_atomic.ctypes, "CDLL", lambda *_, **__: object())
    renames = []
    rename = os.rename
    monkeypatch.setattr(os, "rename", lambda *paths: renames.append(paths) or rename(*paths))
    path = tmp_path / "model"
    _atomic.write_directory(path, fill({"a": "1", "b": "1"}))
    _atomic.write_directory(path, fill({"a": "2"}))
    assert folder_files(path) == {"a": "2"}  # nothing of the old folder mixes in
    assert os.listdir(tmp_path) == ["model"]
    assert len(renames) == (1 if renameat2 else 4)  # the first write is one plain rename


def test_a_failed_write_leaves_the_previous_artefact_and_no_scratch(tmp_path):
    path = tmp_path / "model"
    _atomic.write_directory(path, fill({"a": "1"}))
    _atomic.write_bytes(tmp_path / "file", b"old")

    def half_then_fail(scratch):
        fill({"a": "half"})(scratch)
        raise OSError("disk full")

    for write in (_atomic.write_directory, _atomic.write_file):
        with pytest.raises(OSError, match="disk full"):
            write(path if write is _atomic.write_directory else tmp_path / "file", half_then_fail)
    assert folder_files(path) == {"a": "1"}
    assert (tmp_path / "file").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["file", "model"]


def test_scratch_of_live_writers_is_kept_and_of_dead_ones_removed(tmp_path):
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)
    for pid in (dead, os.getppid()):
        (tmp_path / f".keras_ecl-{pid}-writing-result.json").write_text("{")
    (tmp_path / f".keras_ecl-{dead}-writing-other.json").write_text("{")  # another target's
    _atomic.write_bytes(tmp_path / "result.json", "{}")
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            f".keras_ecl-{os.getppid()}-writing-result.json",
            f".keras_ecl-{dead}-writing-other.json",
            "result.json",
        ]
    )
