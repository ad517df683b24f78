"""One worker of a multi-worker ECL run (tests/multi_worker_test.py starts two).

Usage: python -m tests.scripts.multi_worker_train OUTPUT_NPZ  (TF_CONFIG names the cluster and
this worker's index). Trains a Distiller for an epoch under the strategy that
`keras_ecl.distribute.get_strategy()` picks and saves the student's weights.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_ecl  # noqa: E402
from tests.testing import mlp  # noqa: E402

keras.config.disable_traceback_filtering()


def main(output):
    strategy = keras_ecl.distribute.get_strategy()
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    keras.utils.set_random_seed(0)  # the same initial weights on every worker
    with strategy.scope():
        distiller = keras_ecl.Distiller(
            mlp(units=8),
            mlp(units=16),
            sampler=keras_ecl.samplers.MixUp(alpha=1.0, seed=1),
            samples_per_example=2,
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    initial = distiller.student.get_weights()
    history = distiller.fit(x, y, batch_size=32, epochs=1, verbose=0)
    np.savez(
        output,
        replicas=strategy.num_replicas_in_sync,
        loss=history.history["loss"][-1],
        **{f"w{i}": w for i, w in enumerate(distiller.student.get_weights())},
        **{f"initial{i}": w for i, w in enumerate(initial)},
    )


if __name__ == "__main__":
    main(sys.argv[1])
