"""One registry per kind of part (heads, samplers): what `get()` resolves and the tests cover.

Registering a class makes it serializable by Keras, gives it a short name for
`get()` if it can be built with default arguments, and puts it in the
registry-driven tests (`tests/registry_test.py`), so a new part is one class.
"""

import keras

from keras_ecl.utils import PACKAGE

__all__ = ["Registry"]


class Registry:
    """The classes of one kind of part, by short name and by class name.

    Args:
        kind: The user-facing argument that takes these parts, e.g. `"sampler"`;
            error messages name it.
        base: The base class every registered class derives from.

    Example:

    ```python
    SAMPLERS = Registry("sampler", Sampler)

    @SAMPLERS.register("mixup")
    class MixUp(Sampler):
        ...

    SAMPLERS.get("mixup")  # MixUp()
    ```
    """

    def __init__(self, kind, base):
        self.kind = kind
        self.base = base
        self._names = {}  # short name -> class
        self._examples = {}  # class name -> zero-argument factory of a small instance

    def register(self, name=None, example=None):
        """Class decorator: registers a class with Keras and with this registry.

        Args:
            name: Short name that `get()` resolves by building the class with
                its default arguments, or None for classes that need arguments.
                Defaults to None.
            example: Zero-argument callable returning a small instance for the
                registry-driven tests. Defaults to None: the class itself
                (default arguments), which then needs none.

        Returns:
            The decorator, which returns the class unchanged.

        Raises:
            ValueError: If the class is not a subclass of `base`, or `name` is
                taken by another class.
        """

        def decorator(cls):
            if not issubclass(cls, self.base):
                raise ValueError(
                    f"Only subclasses of {self.base.__name__} can be registered as a "
                    f"{self.kind}. Received: {cls.__name__}"
                )
            if name is not None:
                taken = self._names.get(name.lower())
                if taken is not None and taken is not cls:
                    raise ValueError(
                        f"The {self.kind} name {name!r} is taken by {taken.__name__}. "
                        f"Received: {cls.__name__}"
                    )
                self._names[name.lower()] = cls
            self._examples[cls.__name__] = example or cls
            return keras.saving.register_keras_serializable(package=PACKAGE)(cls)

        return decorator

    def names(self):
        """The short names `get()` resolves, sorted."""
        return sorted(self._names)

    def examples(self):
        """`{class name: zero-argument factory of a small instance}` of every class."""
        return dict(self._examples)

    def get(self, identifier):
        """Returns an instance from an instance, a short name or a serialized dict.

        Args:
            identifier: An instance of `base`, a short name (any case), or a
                dict from `keras.saving.serialize_keras_object`.

        Returns:
            An instance of `base`.

        Raises:
            ValueError: If `identifier` is none of these.
        """
        if isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, dict):
            return keras.saving.deserialize_keras_object(identifier)
        if isinstance(identifier, str) and identifier.lower() in self._names:
            return self._names[identifier.lower()]()
        module = self.base.__module__.split(".")[-1]
        raise ValueError(
            f"`{self.kind}` must be a keras_ecl.{module}.{self.base.__name__} "
            f"or one of {self.names()}. Received: {self.kind}={identifier!r}"
        )
