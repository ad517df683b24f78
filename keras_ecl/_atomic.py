"""Crash-safe writes: every file and folder keras_ecl writes appears whole or not at all.

A writer fills a hidden scratch sibling of its target, flushes it to disk and
renames it into place, so a kill at any moment leaves at the path either the
previous complete artefact or the new one (before the first write completes:
nothing). A file is renamed over the old one (`os.replace`). A folder, which a
rename cannot replace while it holds files, is swapped with the old one in
one step by Linux's `renameat2(RENAME_EXCHANGE)`; then the old one is removed.

Fallback where that call is missing (other systems, glibc < 2.28, filesystems
without the flag): the old folder is renamed aside, then the new one into
place. A kill between those two renames leaves no folder at the path, and the
previous one whole at `.keras_ecl-<pid>-previous-<name>` beside it.

Scratch siblings are named `.keras_ecl-<pid>-<kind>-<name>`, keeping the
target's suffix (Keras and matplotlib read the format from it); the next write
to the same target removes those of processes that are gone. Remote paths
(`gs://...`) have no rename: they are written in place.
"""

import ctypes
import errno
import os
import shutil

__all__ = [
    "SCRATCH_PREFIX",
    "is_remote",
    "is_scratch",
    "write_bytes",
    "write_directory",
    "write_file",
]

SCRATCH_PREFIX = ".keras_ecl-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def is_scratch(name):
    """Whether a file name is one of this module's scratch siblings."""
    return os.path.basename(name).startswith(SCRATCH_PREFIX)


def write_file(path, write):
    """Writes the file `path` by calling `write(scratch_path)`, then renames it into place.

    Args:
        path: The file to write (or replace).
        write: A callable that writes the complete new file at the path it is
            given (e.g. `model.save_weights`, `figure.savefig`).
    """

    def settle(scratch, path):
        _fsync(scratch)
        os.replace(scratch, path)

    _write(os.fspath(path), write, settle)


def write_bytes(path, data):
    """Writes `data` (bytes, or str as UTF-8) to the file `path`, whole or not at all."""
    data = data.encode() if isinstance(data, str) else data

    def write(scratch):
        with open(scratch, "wb") as file:
            file.write(data)

    write_file(path, write)


def write_directory(path, write):
    """Writes the folder `path` by calling `write(scratch_path)`, then swaps it into place.

    Args:
        path: The folder to write (or replace).
        write: A callable that creates and fills the new folder at the path it
            is given (e.g. `tf.saved_model.save`'s `export_dir`).
    """

    def settle(scratch, path):
        for folder, _, names in os.walk(scratch):
            for name in names:
                _fsync(os.path.join(folder, name))
            _fsync(folder)
        if os.path.isdir(path):
            _exchange(scratch, path)  # `scratch` now holds the previous folder
        else:
            os.rename(scratch, path)

    _write(os.fspath(path).rstrip(os.sep) or os.sep, write, settle)


def is_remote(path):
    """Whether `path` names remote storage (`gs://...`), which has no rename."""
    return "://" in os.fspath(path)


def _write(path, write, settle):
    """`write(scratch)`, then `settle(scratch, path)` puts it in place; any
    failure removes the scratch, and whatever is left there afterwards (a
    folder's previous version) goes too."""
    if is_remote(path):
        write(path)
        return
    scratch = _begin(path, "writing")
    try:
        write(scratch)
        settle(scratch, path)
    except BaseException:
        _remove(scratch)
        raise
    _remove(scratch)
    _fsync(os.path.dirname(os.path.abspath(path)))


def _begin(path, kind):
    """The scratch sibling of `path` for this process, after clearing stale ones."""
    parent, name = os.path.split(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    for entry in os.listdir(parent):
        pid = _owner(entry, name)
        if pid is not None and not _alive(pid):
            _remove(os.path.join(parent, entry))
    scratch = os.path.join(parent, f"{SCRATCH_PREFIX}{os.getpid()}-{kind}-{name}")
    _remove(scratch)  # left by a failed write of this process
    return scratch


def _owner(entry, name):
    """The pid in a scratch sibling's name if it belongs to target `name`, else None."""
    if not entry.startswith(SCRATCH_PREFIX):
        return None
    pid, _, rest = entry[len(SCRATCH_PREFIX) :].partition("-")
    _, _, target = rest.partition("-")
    return int(pid) if pid.isdigit() and target == name else None


def _alive(pid):
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _exchange(source, target):
    """Swaps two folders in one step, or (without renameat2) in two renames."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError, TypeError):  # not Linux, or an old C library
        renameat2 = None
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p] * 2 + [ctypes.c_uint]
        paths = os.fsencode(source), os.fsencode(target)
        if renameat2(_AT_FDCWD, paths[0], _AT_FDCWD, paths[1], _RENAME_EXCHANGE) == 0:
            return
        error = ctypes.get_errno()
        if error not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(error, os.strerror(error), target)
    parent, name = os.path.split(target)
    previous = os.path.join(parent, f"{SCRATCH_PREFIX}{os.getpid()}-previous-{name}")
    os.rename(target, previous)
    os.rename(source, target)
    os.rename(previous, source)


def _fsync(path):
    """Flushes a file or folder to disk (a folder: its entries, i.e. renames)."""
    if os.name == "nt" and os.path.isdir(path):
        return  # Windows cannot open a folder to flush it
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.unlink(path)
