"""Argument checks shared by heads, samplers and the distiller."""

import numbers


def is_number(value):
    """True for real numbers, NumPy scalars included, but not for bools."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive(name, value):
    """Raises a ValueError naming `name` unless `value` is a number > 0."""
    if not is_number(value) or not value > 0:
        raise ValueError(f"`{name}` must be a number > 0. Received: {name}={value!r}")
