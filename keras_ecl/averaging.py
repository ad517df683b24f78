"""Averaging the student's weights over its last updates (Polyak averaging), the Keras way.

ECL's student is trained on fresh synthetic inputs at every step, so its weights
wander around a good point more than a KD student's; the moving average of its
weights is a better student than the last iterate. Keras' optimizers already keep
that average (`use_ema=True`) and `fit` writes it into the weights when it ends, so
the Distiller switches it on rather than keeping averages of its own.
"""

import contextlib

import keras

from keras_ecl import _keras_compat as compat

__all__ = ["averaged_weights", "use_moving_average"]


def use_moving_average(optimizer, momentum):
    """Makes `optimizer` keep a moving average of the weights it updates.

    A Keras optimizer (or the one a `LossScaleOptimizer` wraps) that is not built
    yet gets `use_ema=True` and `ema_momentum=momentum`: `fit` then leaves the
    average in the weights. An optimizer the user set up with `use_ema=True`,
    or one already built (its state would not match), is left as it is.

    Args:
        optimizer: A `keras.optimizers.Optimizer`.
        momentum: The momentum of the average, in [0, 1): each update moves the
            average `1 - momentum` of the way to the new weights. 0 leaves
            the optimizer as it is (no averaging).

    Returns:
        Whether the optimizer now averages the weights.

    Example:

    ```python
    optimizer = keras.optimizers.Adam(1e-3)
    keras_ecl.averaging.use_moving_average(optimizer, 0.99)  # True
    model.compile(optimizer=optimizer, loss="mse")  # fit ends with the average
    ```
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not isinstance(inner, keras.optimizers.Optimizer):
        return False
    if inner.use_ema or inner.built or momentum == 0:
        return bool(inner.use_ema)
    inner.use_ema, inner.ema_momentum = True, float(momentum)
    return True


@contextlib.contextmanager
def averaged_weights(model):
    """Gives `model`'s trainable weights their moving averages while the block runs.

    These are the weights `fit` leaves at its end when the optimizer averages
    them (`use_ema=True`, the default of `keras_ecl.Distiller` in mode "ecl"),
    so a callback can score the student it would ship if training stopped now.
    The weights being trained are restored afterwards. Without averaging (or
    before the first step) the block sees the weights as they are.

    Args:
        model: A compiled `keras.Model` (e.g. a `keras_ecl.Distiller`).

    Example:

    ```python
    class Score(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with keras_ecl.averaging.averaged_weights(self.model):
                print(self.model.evaluate(x_val, y_val, verbose=0, return_dict=True))
    ```
    """
    optimizer = getattr(model, "optimizer", None)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    pairs = compat.moving_averages(inner)  # [] without an optimizer or an average
    if not pairs or int(inner.iterations) == 0:
        yield model
        return
    saved = [variable.numpy() for variable, _ in pairs]
    try:
        for variable, average in pairs:
            variable.assign(average)
        yield model
    finally:
        for (variable, _), value in zip(pairs, saved, strict=True):
            variable.assign(value)
