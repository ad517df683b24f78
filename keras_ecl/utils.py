"""Argument checks shared by heads, losses, samplers and the distiller: one function per rule.

Every check raises the error Keras' own layers raise for the same mistake,
naming the argument, what it expects and what it received, so messages read
alike across the library (docs/bad-input.md quotes them).
"""

import math
import numbers
import os

import numpy as np
import tensorflow as tf

from keras_ecl import _atomic

__all__ = [
    "PACKAGE",
    "as_numeric_array",
    "as_numeric_tensor",
    "check_integer",
    "check_one_of",
    "check_path",
    "check_positive",
    "check_seed",
    "check_unit_interval",
    "is_integer",
    "is_number",
    "to_tensor",
]

# The package name under which every serializable class is registered with Keras.
PACKAGE = "keras_ecl"


def is_number(value):
    """True for real numbers, NumPy scalars included, but not for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    """True for Python and NumPy integers, but not for bools."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_positive(name, value):
    """Raises a ValueError naming `name` unless `value` is a finite number > 0."""
    if not is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")


def check_integer(name, value, minimum):
    """Raises a ValueError naming `name` unless `value` is an integer >= `minimum`."""
    if not is_integer(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")


def check_unit_interval(name, value):
    """Raises a ValueError naming `name` unless `value` is a number in [0, 1]."""
    if not is_number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1]. Received: {name}={value!r}")


def check_one_of(name, value, options):
    """Raises a ValueError naming `name` unless `value` is one of `options` (a tuple)."""
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options}. Received: {name}={value!r}")


def check_seed(seed):
    """Raises a ValueError unless `seed` is an integer or None.

    Keras' `SeedGenerator` takes a bool for an int and then fails deep in TensorFlow.
    """
    if seed is not None and not is_integer(seed):
        raise ValueError(f"`seed` must be an integer or None. Received: seed={seed!r}")


def check_path(name, path, directory, inside=False):
    """Raises a ValueError naming `name` unless `path` can be written, before any work.

    Args:
        name: The argument's name, for the message.
        path: The file or directory to write (remote `scheme://` paths pass).
        directory: Whether `path` is a directory (else a file).
        inside: Whether files are written inside the directory (which then
            must be writable itself if it exists), rather than `path` being
            replaced whole from beside it. Defaults to False.
    """
    path = os.fspath(path)
    if _atomic.is_remote(path):
        return
    received = f"Received: {name}={path!r}"
    if directory and os.path.lexists(path) and not os.path.isdir(path):
        raise ValueError(f"`{name}` must be a directory, but a file exists there. {received}")
    if not directory and os.path.isdir(path):
        raise ValueError(f"`{name}` must be a file, but a directory exists there. {received}")
    folder = path if inside and os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    while not os.path.lexists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(
            f"`{name}` cannot be created: {folder!r} is a file, not a directory. {received}"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(
            f"`{name}` cannot be written: the directory {folder!r} is not writable. {received}"
        )


def as_numeric_array(value, name):
    """`value` as a NumPy array of numbers (whatever `np.asarray` takes); a clear error if not."""
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(
            f"`{name}` must be an array (or nested lists of equal lengths). "
            f"Received: {type(value).__name__} ({error})"
        ) from error
    if array.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must hold numbers. Received: dtype={array.dtype}")
    return array


def as_numeric_tensor(value, argument):
    """`value` as a tensor of numbers with a batch axis; raises a clear error if not.

    Python-side checks of dtype and static rank only: free under `tf.function`/XLA.
    """
    if isinstance(value, tf.Tensor) or tf.is_symbolic_tensor(value):
        tensor = value
    else:
        tensor = to_tensor(
            value,
            f"`{argument}` must be a tensor or array of numbers. Received: {type(value).__name__}",
        )
    dtype = tf.as_dtype(tensor.dtype)
    if not (dtype.is_floating or dtype.is_integer) or dtype.is_quantized:
        raise TypeError(f"`{argument}` must hold numbers. Received: dtype={dtype.name}")
    if tensor.shape.rank == 0:
        raise ValueError(
            f"`{argument}` must have a batch axis (rank >= 1). "
            f"Received: shape={tuple(tensor.shape)}"
        )
    return tensor


def to_tensor(value, message):
    """`tf.convert_to_tensor(value)`, or a TypeError with `message` if it cannot be one."""
    try:
        return tf.convert_to_tensor(value)
    except (TypeError, ValueError) as error:
        raise TypeError(message) from error
