"""keras_ecl.distribute.get_strategy picks TensorFlow's strategy for the hardware found."""

import json

import pytest
import tensorflow as tf

from keras_ecl import distribute


class Recorder:
    """Stands in for a strategy class and records how it was built."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs


@pytest.fixture
def no_tpu(monkeypatch):
    for name in distribute._TPU_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.setattr(distribute, "_TPU_DEVICE_FILES", ())


def test_one_cpu_machine_gets_the_default_strategy(no_tpu):
    strategy = distribute.get_strategy()
    assert strategy is tf.distribute.get_strategy()
    assert strategy.num_replicas_in_sync == 1


def test_tf_config_with_two_workers_gets_multi_worker_mirrored(no_tpu, monkeypatch):
    cluster = {"worker": ["127.0.0.1:20001", "127.0.0.1:20002"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker"}}))
    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", Recorder)
    assert isinstance(distribute.get_strategy(), Recorder)


def test_tf_config_with_one_worker_stays_on_one_machine(no_tpu, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:20001"]}}))
    assert distribute.get_strategy() is tf.distribute.get_strategy()


def test_malformed_tf_config_is_reported(no_tpu, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: [")
    with pytest.raises(ValueError, match="TF_CONFIG must be a JSON object"):
        distribute.get_strategy()


def test_several_gpus_get_mirrored_over_all_of_them(no_tpu, monkeypatch):
    gpus = [tf.config.LogicalDevice(f"/device:GPU:{i}", "GPU") for i in range(2)]
    monkeypatch.setattr(
        tf.config, "list_logical_devices", lambda kind=None: gpus if kind == "GPU" else []
    )
    monkeypatch.setattr(tf.distribute, "MirroredStrategy", Recorder)
    strategy = distribute.get_strategy()
    assert isinstance(strategy, Recorder)
    assert strategy.args == (["/device:GPU:0", "/device:GPU:1"],)


@pytest.mark.parametrize("variable", ["TPU_NAME", "COLAB_TPU_ADDR"])
def test_an_attached_tpu_gets_tpu_strategy(no_tpu, monkeypatch, variable):
    monkeypatch.setenv(variable, "10.0.0.2:8470")
    calls = []
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", Recorder)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", calls.append)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", calls.append)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", Recorder)
    strategy = distribute.get_strategy()
    assert isinstance(strategy, Recorder)
    (resolver,) = strategy.args
    assert calls == [resolver, resolver]  # connected and initialised before use
    # The TPU wins over a cluster in TF_CONFIG (a TPU pod also sets one).
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]}}))
    assert isinstance(distribute.get_strategy(), Recorder)


def test_a_tpu_vm_is_resolved_locally(no_tpu, monkeypatch, tmp_path):
    device = tmp_path / "accel0"
    device.touch()
    monkeypatch.setattr(distribute, "_TPU_DEVICE_FILES", (str(device),))
    monkeypatch.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", Recorder)
    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", lambda resolver: None)
    monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system", lambda resolver: None)
    monkeypatch.setattr(tf.distribute, "TPUStrategy", Recorder)
    (resolver,) = distribute.get_strategy().args
    assert resolver.kwargs == {"tpu": "local"}
