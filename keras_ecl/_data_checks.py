"""Eager checks of models and data against a `Distiller`, run before anything is traced.

Keras reports most mistakes from inside a traced graph, if at all (see the
"Bad input" table, docs/bad-input.md); these checks look at the models'
symbolic shapes at construction and at the first batch before `fit`, `evaluate`
and `predict`, and raise an error naming the argument. The rules that depend on the head
(output layout, labels) are the head's own methods.
"""

import keras
import numpy as np
import tensorflow as tf

# Rows of each input checked eagerly by `fit` before training starts.
CHECK_ROWS = 64


def check_models(distiller):
    """Checks the output and input layouts of functional/Sequential models at construction."""
    head, student, teacher = distiller.head, distiller.student, distiller.teacher

    def event_size(model, role):
        outputs = symbolic_outputs(model)
        if outputs is None:
            return None  # Subclassed or unbuilt: `fit` checks it eagerly.
        return head.event_size(output_shape(outputs), role)

    student_size = event_size(student, "student")
    teacher_size = (
        teacher is not None
        and distiller.teacher_head is head  # an ensemble's layout: checked on the first batch
        and event_size(teacher, "teacher")
    )
    if student_size and teacher_size:
        check_same_event_size(head, teacher_size, student_size)
    student_inputs = input_shapes(student)
    teacher_inputs = teacher is not None and input_shapes(teacher)
    if student_inputs and teacher_inputs and not _same_inputs(teacher_inputs, student_inputs):
        raise ValueError(
            "Teacher and student must take the same inputs: each step feeds both the "
            f"same batch. Received: teacher inputs {teacher_inputs}, student inputs "
            f"{student_inputs}"
        )


def check_separate_models(student, teacher):
    """Refuses a teacher that is, or shares weights with, the student.

    Freezing the teacher would freeze those weights in the student too: it
    would train nothing, silently.
    """
    if teacher is None:
        return
    if teacher is student:
        raise ValueError(
            "`teacher` and `student` are the same model. The teacher is frozen, so the "
            "student would not train. Distil into a separate, usually smaller, model "
            "(e.g. `keras.models.clone_model(teacher)` for a copy to fine-tune)."
        )
    teacher_weights = {id(w) for w in teacher.weights}
    shared = [w.path for w in student.trainable_weights if id(w) in teacher_weights]
    if shared:
        raise ValueError(
            f"`teacher` and `student` share {len(shared)} weight(s) (e.g. {shared[0]}). "
            "The teacher is frozen, so these would not train in the student. Build the "
            "student from its own layers."
        )


def check_data(distiller, x, y=None, sample_weight=None, argument="x", training=True):
    """Checks data for `fit`/`evaluate` against the models, head and sampler.

    Args:
        distiller: The `keras_ecl.Distiller` about to train or evaluate.
        x: What `fit` takes as `x`: arrays, a `tf.data.Dataset` of `(x, y)`
            or `(x, y, sample_weight)` batches, or a `(x, y)` tuple.
        y: Labels when `x` is an array. Defaults to None.
        sample_weight: Sample weights when `x` is an array. Defaults to None.
        argument: Name of the argument, for error messages. Defaults to "x".
        training: Whether the data is to train on (all-zero sample weights
            would train nothing) or to score. Defaults to True.

    Raises:
        ValueError: Empty data, missing or out-of-range labels, NaN/inf
            inputs, or outputs that do not fit the head.
        TypeError: Non-numeric inputs, or integer inputs to a mixing sampler.
    """
    batched = isinstance(x, (tf.data.Dataset, keras.utils.PyDataset))
    if isinstance(x, tf.data.Dataset):
        x, y, sample_weight = first_batch(x, argument)
    elif isinstance(x, keras.utils.PyDataset):
        x, y, sample_weight = first_py_batch(x, argument)
    elif argument == "validation_data" and isinstance(x, (tuple, list)):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(x))
    if isinstance(x, (dict, list, tuple)):
        if distiller.uses_extracurricular:
            raise ValueError(
                "mode='ecl' draws extracurricular inputs from a single input "
                f"tensor; `{argument}` holds a {type(x).__name__} of inputs. "
                "Use one input tensor, or mode='kd'."
            )
        return  # Multi-input models: Keras checks the structure itself.
    if not is_array(x):
        return  # Generators and PyDatasets cannot be peeked without consuming them.
    x = check_inputs(x, argument)
    if distiller.uses_labels and y is None:
        raise ValueError(
            f"supervised_weight={distiller.supervised_weight} (mode={distiller.mode!r}) needs "
            f"labels, but `{argument}` has no `y`. Pass (x, y) data, or set "
            "supervised_weight=0 to distil from the teacher alone."
        )
    if y is not None:
        y = distiller.head.label_arrays(y, argument)  # a structure for a MultiOutput head
        for labels in keras.tree.flatten(y):
            if labels.ndim == 0:
                raise ValueError(
                    f"Labels of `{argument}` must have a batch axis. Received: shape=()"
                )
            if len(labels) != len(x):
                raise ValueError(
                    f"`{argument}` has {len(x)} inputs but {len(labels)} labels: they must match."
                )
    if sample_weight is not None:
        _check_sample_weight(sample_weight, len(x), argument, whole=training and not batched)
    check_input_shape(distiller, x.shape, argument)
    rows = tf.convert_to_tensor(x[:CHECK_ROWS])
    # The teacher first: a subclassed student is built by its first call and
    # must not be built for inputs that the teacher then rejects.
    head = distiller.head
    if distiller.uses_teacher:
        teacher_outputs = distiller.teacher(rows, training=False)
        teacher_head = distiller.teacher_head
        teacher_size = teacher_head.event_size(output_shape(teacher_outputs), "teacher")
        if not all(np.all(np.isfinite(o)) for o in tf.nest.flatten(teacher_outputs)):
            raise ValueError(
                f"The teacher's outputs on the first rows of `{argument}` contain NaN "
                "or inf, so there is nothing to distil. Check the teacher's weights "
                "(did its training diverge?) and what it was trained on."
            )
        teacher_head.check_outputs(teacher_outputs, "teacher", argument)
    student_outputs = distiller.student(rows, training=False)
    shape = output_shape(student_outputs)
    event_size = head.event_size(shape, "student")
    head.check_outputs(student_outputs, "student", argument)
    if distiller.uses_teacher:
        check_same_event_size(head, teacher_size, event_size)
    if y is not None:
        _check_labels(head, y, event_size, head.output_rank(shape), argument)
    if distiller.uses_extracurricular:
        synthetic, _ = distiller.draw_extracurricular(rows, training=False)  # a fixed seed
        if not np.all(np.isfinite(synthetic)):
            raise ValueError(
                f"The sampler's draws around the first rows of `{argument}` contain NaN "
                "or inf. Check the sampler (e.g. the function of FromCallable)."
            )


def check_predict_inputs(distiller, x):
    """Checks that `x` for `predict` holds inputs that fit the student (NaN allowed)."""
    inputs = first_batch(x, "x")[0] if isinstance(x, tf.data.Dataset) else x
    if is_array(inputs):
        array = check_inputs(inputs, "x", finite=False)
        check_input_shape(distiller, array.shape, "x", roles=("student",))


def check_inputs(x, argument, finite=True):
    """`x` as a NumPy array of numbers with a non-empty batch axis (and finite)."""
    array = np.asarray(x)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"`{argument}` must hold numbers (int or float). Received: dtype={array.dtype}"
        )
    if array.ndim == 0:
        raise ValueError(f"`{argument}` must have a batch axis. Received: shape=()")
    if array.shape[0] == 0:
        raise ValueError(f"`{argument}` is empty. Received: shape={array.shape}")
    if finite and array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.isfinite(array)))
        raise ValueError(
            f"`{argument}` contains {bad} NaN or inf value(s); training on them "
            "would poison the weights. Clean or impute the inputs first."
        )
    return array


def check_input_shape(distiller, shape, argument, roles=("student", "teacher")):
    """Checks the per-example input shape against models with symbolic inputs."""
    for role in roles:
        if role == "teacher" and not distiller.uses_teacher:
            continue
        shapes = input_shapes(getattr(distiller, role))  # None when subclassed: Keras checks
        if not shapes or len(shapes) != 1:
            continue
        expected = shapes[0][1:]
        if not tf.TensorShape(expected).is_compatible_with(tuple(shape)[1:]):
            raise ValueError(
                f"`{argument}` does not fit the {role}, which takes inputs of shape "
                f"{(None, *expected)}. Received: shape={tuple(shape)}"
            )


def check_same_event_size(head, teacher_size, student_size):
    """Raises unless teacher and student predict as many values (classes, outputs)."""
    if teacher_size != student_size:
        raise ValueError(
            f"Teacher and student must predict the same number of {head.event_name} for "
            f"{type(head).__name__}. Received: teacher={teacher_size}, "
            f"student={student_size}"
        )


def _check_sample_weight(sample_weight, num_inputs, argument, whole=True):
    weights = np.asarray(sample_weight)
    if weights.dtype.kind not in "biuf":
        raise TypeError(
            f"Sample weights of `{argument}` must be numbers. Received: dtype={weights.dtype}"
        )
    if weights.ndim == 0 or len(weights) != num_inputs:
        raise ValueError(
            f"`{argument}` has {num_inputs} inputs but sample weights of shape "
            f"{weights.shape}: one weight per input."
        )
    if weights.dtype.kind == "f" and not np.all(np.isfinite(weights)):
        raise ValueError(f"Sample weights of `{argument}` contain NaN or inf values.")
    # All zero is refused for whole arrays only: a dataset's first batch may be.
    if weights.size and (weights.min() < 0 or (whole and not np.any(weights))):
        raise ValueError(
            f"Sample weights of `{argument}` must be >= 0 and not all 0 (all-zero weights "
            f"train nothing). Received: weights in [{weights.min():g}, {weights.max():g}]"
        )


def _check_labels(head, y, event_size, output_rank, argument):
    """Numbers without NaN, then the head's own rules (`Head.check_targets`)."""
    for labels in keras.tree.flatten(y):
        if labels.dtype.kind not in "biuf":
            raise TypeError(
                f"Labels of `{argument}` must be numbers. Received: dtype={labels.dtype}"
            )
        if labels.dtype.kind == "f" and not np.all(np.isfinite(labels)):
            raise ValueError(f"Labels of `{argument}` contain NaN or inf values.")
    head.check_targets(y, event_size, output_rank, argument)


def output_shape(outputs):
    """Shape of a raw output, or a list (dict) of shapes for a `(loc, raw_scale)`
    pair or a multi-output model's list (dict) of outputs."""
    if isinstance(outputs, dict):
        return {key: output_shape(o) for key, o in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return [output_shape(o) for o in outputs]
    return tuple(outputs.shape)


def symbolic_outputs(model):
    """A functional/Sequential model's symbolic outputs in its structure, or None."""
    try:
        return model.output  # the model's structure: `model.outputs` sorts a dict's keys
    except (AttributeError, ValueError):  # a Sequential never called has `outputs` only
        pass
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        return None
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else outputs


def input_shapes(model):
    """Shapes of a functional/Sequential model's inputs, or None if it has none yet."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    return [tuple(t.shape) for t in inputs] if inputs else None


def _same_inputs(a, b):
    """Whether two lists of input shapes can take the same batch (Keras may add or
    drop a trailing axis of 1, so shapes of different ranks are not compared)."""
    if len(a) != len(b):
        return False
    return all(
        len(sa) != len(sb) or tf.TensorShape(sa).is_compatible_with(sb)
        for sa, sb in zip(a, b, strict=True)
    )


def first_batch(dataset, argument):
    """`(x, y, sample_weight)` of a dataset's first batch; raises if it has none."""
    element = next(iter(dataset.take(1)), None)
    if element is None:
        raise ValueError(f"`{argument}` is an empty dataset: it yields no batch.")
    return keras.utils.unpack_x_y_sample_weight(element)


def first_py_batch(dataset, argument):
    """`(x, y, sample_weight)` of a `keras.utils.PyDataset`'s first batch, by index.

    Indexing reads the batch without consuming anything; a PyDataset of
    unknown length (`num_batches` None) may not support it and is not peeked.
    """
    if dataset.num_batches is None:
        return None, None, None
    if dataset.num_batches == 0:
        raise ValueError(f"`{argument}` is an empty PyDataset: it yields no batch.")
    batch = dataset[0]
    batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)  # as Keras reads it
    return keras.utils.unpack_x_y_sample_weight(batch)


def is_array(x):
    """Whether `x` is one array or tensor (not a generator or PyDataset we cannot peek)."""
    return isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__")
