"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train ECL and agree."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ["-m", "tests.scripts.multi_worker_train"]  # run from ROOT, where `tests` is a package


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


@pytest.mark.large
def test_two_workers_complete_an_epoch_and_agree_on_the_weights(tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    processes = []
    for index in range(2):
        env = {**os.environ, **cluster_env(workers, index), "CUDA_VISIBLE_DEVICES": ""}
        processes.append(
            subprocess.Popen(
                [sys.executable, *SCRIPT, str(tmp_path / f"worker{index}.npz")],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for process in processes:
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output[-6000:]
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["replicas"]) == 2
    assert np.isfinite(first["loss"])
    weights = [k for k in first.files if k.startswith("w")]
    assert len(weights) == 4
    for key in weights:
        np.testing.assert_array_equal(first[key], second[key])
    # It trained: every weight moved from the shared initial values.
    for i in range(len(weights)):
        assert np.abs(first[f"w{i}"] - first[f"initial{i}"]).max() > 1e-4
