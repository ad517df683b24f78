"""Argument checks shared by heads, losses, samplers and the distiller: one function per rule.

Every check raises the error Keras' own layers raise for the same mistake,
naming the argument, what it expects and what it received, so messages read
alike across the library (docs/bad-input.md quotes them).
"""

import math
import numbers

import numpy as np
import tensorflow as tf

__all__ = [
    "PACKAGE",
    "as_numeric_tensor",
    "check_integer",
    "check_one_of",
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
