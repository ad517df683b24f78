"""An ECL run with `keras_ecl.callbacks.BackupAndRestore`, to be killed and restarted.

Usage (from the repository root):
    python -m tests.scripts.resume_train OUTPUT_NPZ BACKUP_DIR EPOCHS [ROWS]

Trains a Distiller whose student has dropout and whose sampler is seeded, under
`tf.config.experimental.enable_op_determinism()` and fixed seeds, with a backup at
the end of every epoch, and prints "epoch N done" as each ends. Started again
after a kill with the same arguments, it resumes from the backup. It writes the
student's weights, the optimizer's step counter and the epochs this process ran
to OUTPUT_NPZ, with the last epoch's loss and the weights it started from. It
trains on ROWS rows (2048 by default), in batches of 32.
With TF_CONFIG naming a cluster it is one worker of a MultiWorkerMirroredStrategy
run.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_ecl  # noqa: E402
from tests.testing import mlp  # noqa: E402


class PrintEpochs(keras.callbacks.Callback):
    """Tells the parent test how far training got (after the backup is written)."""

    def on_epoch_end(self, epoch, logs=None):
        print(f"epoch {epoch + 1} done", flush=True)


def main(output, backup_dir, epochs, rows=2048):
    tf.config.experimental.enable_op_determinism()
    strategy = keras_ecl.distribute.get_strategy()
    if "TF_CONFIG" in os.environ:
        assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 1).astype("int32")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        distiller = keras_ecl.Distiller(
            mlp(units=32, dropout=0.2),
            mlp(units=64),
            sampler=keras_ecl.samplers.MixUp(alpha=1.0, seed=1),
            samples_per_example=2,
            # Two student updates per step keep the recipe's inner loop (and its
            # optimizer steps) to back up, at half the collectives of its four.
            updates_per_batch=2,
        )
        distiller.compile(optimizer=keras.optimizers.Adam(1e-3))
    initial = distiller.student.get_weights()  # before a backup is restored, if any
    history = distiller.fit(
        x,
        y,
        batch_size=32,
        epochs=epochs,
        verbose=0,
        callbacks=[keras_ecl.callbacks.BackupAndRestore(backup_dir), PrintEpochs()],
    )
    np.savez(
        output,
        epochs_run=len(history.history["loss"]),
        iterations=int(distiller.optimizer.iterations.numpy()),
        replicas=strategy.num_replicas_in_sync,
        loss=history.history["loss"][-1],
        **{f"w{i}": w for i, w in enumerate(distiller.student.get_weights())},
        **{f"initial{i}": w for i, w in enumerate(initial)},
    )


if __name__ == "__main__":
    main(*sys.argv[1:3], *map(int, sys.argv[3:]))
