"""Argument checks and name resolution shared by heads, losses, samplers and the distiller."""

import math
import numbers

import keras
import tensorflow as tf


def is_number(value):
    """True for real numbers, NumPy scalars included, but not for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name, value):
    """Raises a ValueError naming `name` unless `value` is a finite number > 0."""
    if not is_number(value) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a finite number > 0. Received: {name}={value!r}")


def resolve(identifier, base, names, argument):
    """Returns a `base` instance from an instance, a name or a serialized dict.

    Args:
        identifier: An instance of `base`, a key of `names` (any case), or a
            dict from `keras.saving.serialize_keras_object`.
        base: The class the result must be an instance of.
        names: Dict of short names to classes built with default arguments.
        argument: The user-facing argument name, for the error message.

    Raises:
        ValueError: If `identifier` is none of these.
    """
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str) and identifier.lower() in names:
        return names[identifier.lower()]()
    raise ValueError(
        f"`{argument}` must be a keras_ecl.{base.__module__.split('.')[-1]}.{base.__name__} "
        f"or one of {sorted(names)}. Received: {argument}={identifier!r}"
    )


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
