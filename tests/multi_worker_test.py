"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train ECL, agree, and
complete from their backups after one of them is killed.

The workers run tests/scripts/resume_train.py with TF_CONFIG naming the cluster
(the helpers are those of `resume_test.py`).
"""

import json
import signal
import socket
import time

import numpy as np
import pytest

from tests import resume_test
from tests.resume_test import EPOCHS, assert_same_training, finish, load


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def cluster_env(workers, index):
    """The TF_CONFIG variable of worker `index` of a cluster of `workers`."""
    config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    return {"TF_CONFIG": json.dumps(config)}


def start_cluster(directory, workers=None):
    """Two workers on loopback ports, each with its own backup directory."""
    workers = workers or [f"127.0.0.1:{port}" for port in free_ports(2)]
    # 512 rows, 16 steps an epoch: a step costs a worker some 50 ms of CPU in
    # collectives, so a kill at most 0.3 s after epoch 3 still lands well before the
    # end. 2048 rows made this test 212 CPU s, 512 rows 165 (2026-12-07, under load).
    return workers, [
        resume_test.start(
            directory / f"worker{i}.npz",
            directory / f"backup{i}",
            cluster_env(workers, i),
            rows=512,
        )
        for i in range(2)
    ]


@pytest.mark.large
def test_killed_worker_restarts_and_the_cluster_completes_from_the_backup(tmp_path):
    epoch, delay, seed = resume_test.kill_point()
    context = f"worker 1 killed {delay:.2f} s after epoch {epoch} (KERAS_ECL_KILL_SEED={seed})"
    workers, cluster = start_cluster(tmp_path)
    resume_test.wait_for(cluster[1], f"epoch {epoch} done")
    time.sleep(delay)
    cluster[1].send_signal(signal.SIGKILL)
    cluster[1].communicate(timeout=60)
    # The survivor's next all-reduce fails once worker 1 misses its heartbeats.
    output, _ = cluster[0].communicate(timeout=120)
    assert cluster[0].returncode != 0 and "UnavailableError" in output, output[-3000:]
    with open(tmp_path / "backup1" / "training_metadata.json") as file:
        backed_up = json.load(file)["epoch"]
    assert epoch <= backed_up < EPOCHS, context

    # Both restarted with the same TF_CONFIG: they resume from their backups.
    for process in start_cluster(tmp_path, workers)[1]:
        finish(process)
    first, second = (load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert first["replicas"] == 2 and first["epochs_run"] == EPOCHS - backed_up, context
    assert_same_training(second, first, context)  # the workers agree

    # An uninterrupted 2-worker run: it trains (every weight moves from the
    # initial values both workers share), its workers agree on the weights, and
    # the resumed cluster ends where it ends.
    (tmp_path / "uninterrupted").mkdir()
    for process in start_cluster(tmp_path / "uninterrupted")[1]:
        finish(process)
    one, two = (load(tmp_path / "uninterrupted" / f"worker{i}.npz") for i in range(2))
    assert one["replicas"] == 2 and one["epochs_run"] == EPOCHS
    assert np.isfinite(one["loss"])
    weights = [key for key in one if key.startswith("w")]
    assert len(weights) == 4
    for i in range(len(weights)):
        np.testing.assert_array_equal(one[f"initial{i}"], two[f"initial{i}"])
        assert np.abs(one[f"w{i}"] - one[f"initial{i}"]).max() > 1e-4
    assert_same_training(two, one, "uninterrupted")
    assert_same_training(first, one, context)
