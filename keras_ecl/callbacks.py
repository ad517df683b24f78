"""Callbacks: backups that survive a kill, and `SampleGallery` (see `keras_ecl.gallery`).

Keras' `BackupAndRestore` rewrites its backup in place, so a kill during the
write leaves a truncated file that the restarted run cannot open, and a kill
between the weights and the epoch record resumes the wrong epoch. The one here
writes each backup whole, with its epoch inside, and swaps it in atomically.
"""

import functools
import json
import os
import shutil

import h5py

from keras_ecl import _atomic
from keras_ecl._keras_compat import BackupAndRestoreHooks, set_initial_epoch
from keras_ecl.gallery import SampleGallery
from keras_ecl.utils import check_path

__all__ = ["BackupAndRestore", "SampleGallery"]

_EPOCH = "keras_ecl_epoch"  # attribute of the weights file: epochs it holds


class BackupAndRestore(BackupAndRestoreHooks):
    """`keras.callbacks.BackupAndRestore` whose backups survive a kill at any moment.

    A backup is written to a scratch file in `backup_dir`, flushed to disk and
    renamed over the previous one (`os.replace`, atomic on one filesystem), so
    `backup_dir` always holds one complete backup; `tests/crash_safety_test.py`
    kills writers to check it. The number of epochs it
    covers is stored in the weights file itself, so weights and epoch cannot
    disagree. Everything else is Keras' callback: use it the same way. With a
    `keras_ecl.Distiller` the backup also holds its random seed states, so a
    resumed run draws the synthetic inputs the uninterrupted run would have.

    Remote `backup_dir`s (`gs://...`) have no atomic rename: there the callback
    behaves exactly as Keras' own.

    Args:
        backup_dir: Directory of the backup; it must not be shared with
            another run or another callback.
        save_freq: `"epoch"` or a number of batches. Only end-of-epoch backups
            resume exactly: Keras 3.15 restarts an interrupted epoch from its
            first batch. Defaults to "epoch".
        double_checkpoint: Keep the previous backup too. Defaults to False.
        delete_checkpoint: Remove `backup_dir` when training ends. Defaults
            to True.

    Raises:
        ValueError: If `backup_dir` cannot be written (a file, under a file,
            or in a read-only folder) or, with `delete_checkpoint=True`, holds
            other files.

    Example:

    ```python
    backup = keras_ecl.callbacks.BackupAndRestore("backups/student")
    distiller.fit(x, y, epochs=100, callbacks=[backup])  # rerun after a kill: resumes
    ```
    """

    def __init__(
        self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True
    ):
        super().__init__(
            backup_dir,
            save_freq=save_freq,
            double_checkpoint=double_checkpoint,
            delete_checkpoint=delete_checkpoint,
        )
        self._check_backup_dir()

    def _check_backup_dir(self):
        """Refuses a `backup_dir` that cannot be written, or holds files training's end deletes."""
        check_path("backup_dir", self.backup_dir, directory=True, inside=True)
        if not (self._is_local() and self.delete_checkpoint and os.path.isdir(self.backup_dir)):
            return
        own = {os.path.basename(path) for path in self.backup_paths.values()}
        others = sorted(
            name
            for name in os.listdir(self.backup_dir)
            if name not in own and not _atomic.is_scratch(name)
        )
        if others:
            raise ValueError(
                f"`backup_dir` holds other files ({', '.join(others[:3])}), and the whole "
                "directory is deleted when training ends (delete_checkpoint=True). Give the "
                "backup a directory of its own, e.g. "
                f"{os.path.join(str(self.backup_dir), 'backup')!r}. "
                f"Received: backup_dir={str(self.backup_dir)!r}"
            )

    def _is_local(self):
        return not _atomic.is_remote(self.backup_dir)

    def write_backup(self):
        if not self._is_local():
            return super().write_backup()
        paths = self.backup_paths
        epoch, batch = self.progress
        if self.double_checkpoint and os.path.exists(paths["weights"]):
            for name in ("weights", "metadata"):
                if os.path.exists(paths[name]):
                    copy = functools.partial(shutil.copyfile, paths[name])
                    _atomic.write_file(paths[f"previous_{name}"], copy)

        def write_weights(scratch):
            self.model.save_weights(scratch, overwrite=True)
            with h5py.File(scratch, "a") as file:
                file.attrs[_EPOCH] = epoch

        _atomic.write_file(paths["weights"], write_weights)
        _atomic.write_bytes(paths["metadata"], json.dumps({"epoch": epoch, "batch": batch}))

    def restore_backup(self):
        super().restore_backup()
        weights = self.backup_paths["weights"]
        if self._is_local() and os.path.exists(weights):
            with h5py.File(weights, "r") as file:
                if _EPOCH in file.attrs:  # the weights' own epoch wins over the record
                    set_initial_epoch(self.model, int(file.attrs[_EPOCH]))
