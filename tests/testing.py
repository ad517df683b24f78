"""Shared test helpers: tiny models and data, and the `run_*` harnesses every part is tested by.

As keras-hub's `TestCase`: a new head or sampler is tested by calling these
(the registry-driven `registry_test.py` does it for every registered class),
not by copying a test file. Models are tiny (one hidden layer of a few units)
so that a fit takes a second.
"""

import builtins
import contextlib
import functools
import json
import re
import warnings

import keras
import numpy as np
import tensorflow as tf

import keras_ecl

FEATURES = 6  # input width of every tiny model and data set
CLASSES = 3  # classes of the classification data
REGRESSION_OUTPUTS = 2  # outputs of the regression data (4 units: [loc, raw_scale])


# Python warnings that neither keras_ecl nor its user causes, as `-W` filters (Python's
# syntax: action:message start:category:module), for runs that make every other warning
# an error:
UPSTREAM_WARNINGS = (
    # Keras 3.15's `Variable.__array__` takes no `copy`, so NumPy 2 warns each time Keras
    # itself converts a variable (every `save`); hidden outside `__main__` by default.
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
    # TensorFlow Probability 0.25 checks TensorFlow's version with distutils at import.
    "ignore:distutils Version classes are deprecated:DeprecationWarning:"
    "tensorflow_probability.python",
)


@contextlib.contextmanager
def warnings_as_errors():
    """Every Python warning raised inside is an error, but for `UPSTREAM_WARNINGS`."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for spec in UPSTREAM_WARNINGS:
            action, message, category, *module = spec.split(":")
            warnings.filterwarnings(
                action, re.escape(message), getattr(builtins, category), *map(re.escape, module)
            )
        yield


def mlp(outputs=CLASSES, units=8, inputs=FEATURES, name=None, dropout=None):
    """A tiny `Sequential` MLP: `inputs` features -> `units` ReLU -> `outputs` raw units.

    `dropout`, if given, adds a `Dropout` layer (and its seed generator) after the ReLU.
    """
    layers = [keras.Input((inputs,)), keras.layers.Dense(units, activation="relu")]
    if dropout is not None:
        layers.append(keras.layers.Dropout(dropout))
    return keras.Sequential([*layers, keras.layers.Dense(outputs)], name=name)


def classification_data(n=96, features=FEATURES, seed=0):
    """`(x, y)`: Gaussian features and 3 classes from two thresholds."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    return x, y


def regression_data(n=96, outputs=1, features=FEATURES, seed=0):
    """`(x, y)`: uniform features and `outputs` noisy sine targets."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, features)).astype("float32")
    y = np.sin(3 * x[:, :outputs]) + 0.1 * rng.normal(size=(n, outputs))
    return x, y.astype("float32")


def head_case(head, n=96):
    """`(x, y, outputs)` that fit `head`: 3 classes, or 2 regression outputs (4 units)."""
    head = keras_ecl.heads.get(head)
    if head.event_name == "classes":
        return (*classification_data(n), head.output_units(CLASSES))
    x, y = regression_data(n, outputs=REGRESSION_OUTPUTS)
    return x, y, head.output_units(REGRESSION_OUTPUTS)


def make_distiller(head="categorical", outputs=None, compile=True, jit_compile=False, **kwargs):
    """A Distiller of a 4-unit student and a 16-unit teacher whose outputs fit `head`.

    `outputs` (raw output units) defaults to what `head_case(head)` needs;
    `kwargs` go to the Distiller (`updates_per_batch` defaults to 1 here).
    """
    outputs = head_case(head, n=1)[2] if outputs is None else outputs
    # One update per step and every draw kept keep the harness fast; the recipe's 4
    # updates and its selection are tested on their own.
    kwargs.setdefault("updates_per_batch", 1)
    kwargs.setdefault("selection", None)
    distiller = keras_ecl.Distiller(
        mlp(outputs, units=4), mlp(outputs, units=16), head=head, **kwargs
    )
    if compile:
        distiller.compile(optimizer="adam", jit_compile=jit_compile)
    return distiller


def short_fit(distiller, x, y, jit_compile=False, epochs=2):
    """Fits 2 epochs of batches of 32 and checks that every loss term is finite.

    Under XLA the data come as static batches, as on a TPU, and the traced step
    must hold no Python op and no tensor of unknown shape.
    """
    if jit_compile:
        data = static_batches(x, y)
        history = distiller.fit(data, epochs=epochs, verbose=0)
        assert_static_graph(distiller, data.element_spec)
    else:
        history = distiller.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    assert_trained(history.history)
    return history


def assert_trained(logs):
    """Every loss term of a fit's `logs` is finite and the loss did not blow up."""
    for key, values in logs.items():
        assert np.all(np.isfinite(values)), key
    assert logs["loss"][-1] < logs["loss"][0] * 1.5


def static_batches(x, y, batch_size=32):
    """`(x, y)` as a dataset of static batches, as a TPU (and XLA) sees them."""
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size, drop_remainder=True)


def assert_static_graph(distiller, spec):
    """The train step traced on static shapes has no Python op and no unknown shape."""
    graph = tf.function(distiller.train_step).get_concrete_function(spec).graph
    python_ops = {"PyFunc", "EagerPyFunc", "PyFuncStateless"}
    assert not [op.type for op in graph.get_operations() if op.type in python_ops]
    unknown = [
        (op.name, tensor.shape)
        for op in graph.get_operations()
        for tensor in op.outputs
        if tensor.dtype != tf.resource and not tensor.shape.is_fully_defined()
    ]
    assert not unknown, unknown[:5]


def run_serialization_test(instance):
    """Serializes `instance` to JSON and back; returns the restored object.

    Checks the class, that the config survives unchanged, and that the
    restored object is a new one.
    """
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(instance)))
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(instance)
    assert restored is not instance
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(
        instance.get_config(), sort_keys=True
    )
    return restored


def run_saving_test(distiller, x, path):
    """Saves a trained Distiller as `.keras`, loads it and checks it predicts the same.

    Returns the loaded Distiller; its configuration and teacher are checked too.
    """
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert type(restored) is type(distiller)
    assert json.dumps(restored.get_config(), sort_keys=True, default=str) == json.dumps(
        distiller.get_config(), sort_keys=True, default=str
    )
    np.testing.assert_allclose(restored.predict(x, verbose=0), distiller.predict(x, verbose=0))
    if distiller.teacher is not None:
        np.testing.assert_allclose(
            restored.teacher.predict(x, verbose=0), distiller.teacher.predict(x, verbose=0)
        )
        assert not restored.teacher.trainable_variables
    return restored


def weights_of(model):
    return [w.copy() for w in model.get_weights()]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for wa, wb in zip(a, b, strict=True):
        np.testing.assert_array_equal(wa, wb)


def one_device():
    return tf.distribute.OneDeviceStrategy("/cpu:0")


@functools.cache
def two_replicas():
    """The process' one MirroredStrategy over the two logical CPUs of conftest.py.

    One strategy per process: separate MirroredStrategy objects reuse
    collective instance keys, and models of other shapes then collide
    ("Shape mismatch in the collective instance").
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def train_under(strategy, x, y, head="categorical", outputs=None, jit_compile=False, **kwargs):
    """Two epochs of a seeded Distiller built under `strategy`; `(logs, student weights)`.

    With `jit_compile=True` each replica's step is compiled by XLA.
    """
    keras.utils.set_random_seed(0)
    with strategy.scope():
        distiller = make_distiller(head, outputs, compile=False, **kwargs)
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    history = distiller.fit(x, y, batch_size=32, epochs=2, verbose=0, shuffle=False)
    return history.history, distiller.student.get_weights()
