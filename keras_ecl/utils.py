"""Argument checks and name resolution shared by heads, samplers and the distiller."""

import numbers

import keras


def is_number(value):
    """True for real numbers, NumPy scalars included, but not for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name, value):
    """Raises a ValueError naming `name` unless `value` is a number > 0."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")


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
