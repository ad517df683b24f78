"""Pick TensorFlow's own `tf.distribute` strategy for the machine at hand.

Nothing here distributes by itself: the function returns the strategy that
TensorFlow provides for the hardware found (TPU, several GPUs, a multi-worker
cluster named by `TF_CONFIG`, or one device), and the `Distiller`, heads,
samplers and losses built under its `scope()` train correctly in each.
"""

import json
import os

import tensorflow as tf

__all__ = ["get_strategy"]

# Environment variables that say a TPU is attached (Cloud TPU, legacy Colab).
_TPU_ENVIRONMENT = ("TPU_NAME", "COLAB_TPU_ADDR")
# Device files of a TPU VM (the current Colab TPU runtime is one).
_TPU_DEVICE_FILES = ("/dev/accel0", "/dev/vfio/0")


def get_strategy(tpu=None):
    """Returns the `tf.distribute` strategy that fits this machine.

    In order: a `TPUStrategy` when a TPU is reachable (`tpu` given, the
    `TPU_NAME`/`COLAB_TPU_ADDR` variables set, or a TPU VM), a
    `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster of more
    than one worker, a `MirroredStrategy` over all GPUs when there are
    several, else the default (one-device) strategy.

    Build the models, the `Distiller` and its optimizer under
    `strategy.scope()`, and give `fit` the global batch size (it is split
    across replicas). Under a multi-worker strategy, every worker runs the
    same program with its own `TF_CONFIG`.

    Args:
        tpu: Name or address of a TPU (`"local"` on a TPU VM, `""` on Colab),
            to force the TPU path. Defaults to None: detect.

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: If `TF_CONFIG` is not valid JSON.

    Example:

    ```python
    strategy = keras_ecl.distribute.get_strategy()
    with strategy.scope():
        distiller = keras_ecl.Distiller(make_student(), teacher, head="categorical")
        distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(dataset.batch(64 * strategy.num_replicas_in_sync), epochs=10)
    ```
    """
    if tpu is not None or _tpu_attached():
        if tpu is None and not _tpu_named_by_environment():
            # A TPU VM (the current Colab TPU runtime) serves its chips locally;
            # a named TPU is found by the resolver from the variables itself.
            tpu = "local"
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if _cluster_workers() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


def _tpu_named_by_environment():
    return any(os.environ.get(name) for name in _TPU_ENVIRONMENT)


def _tpu_attached():
    return _tpu_named_by_environment() or any(os.path.exists(path) for path in _TPU_DEVICE_FILES)


def _cluster_workers():
    """Number of workers (and a chief) that `TF_CONFIG` names, 0 without one."""
    config = os.environ.get("TF_CONFIG")
    if not config:
        return 0
    try:
        cluster = json.loads(config).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG must be a JSON object with a 'cluster'. Received: {config!r}"
        ) from error
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))
