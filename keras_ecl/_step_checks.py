"""Checks inside the training and evaluation steps, for what `fit` cannot see eagerly.

`Distiller.fit` checks the first batch eagerly (`_data_checks`). Later batches of a
`tf.data.Dataset`, a `keras.utils.PyDataset` or a generator only exist inside the
traced step, where XLA drops `tf.debugging.assert_*` and an out-of-range class id
fails deep in a kernel ("Graph execution error"). So the step checks its labels with
plain tensor ops (`check_labels`), trains on harmless stand-ins for bad rows but
skips the update, records what it saw in a small variable (`LabelRecord`, written
only in the branch that skips) and
reports a NaN loss; `StepGuard`, a callback that `fit` and `evaluate` add, then
raises the error in Python, naming the argument, the batch and the bad values.

The same guard keeps the non-finite promise: a step whose loss or gradients are not
finite, or whose squared gradients overflow (what would turn Adam's state NaN on
huge inputs), is skipped (`finite_update`), so the weights really are the last
finite ones; should an unusual optimizer still make its state non-finite, the
error names exactly which weights and slots are (`non_finite_state`).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from keras_ecl import heads as heads_lib

# What a record holds: bad rows, lowest and highest label of the batch, event size,
# and which output of a `heads.MultiOutput` they belong to (1-based; 0: the only one).
_RECORD_SIZE = 5


class LabelRecord:
    """What the last batch with bad labels held, written inside the step.

    One float32 variable `[bad rows, lowest label, highest label, event size,
    output]`, local to each replica (`ON_READ`), so replicas write without a
    merge and the guard reads each replica's own. It is not a Keras weight: it is not
    saved, and weights files keep their layout. Create it under the strategy's
    scope (the Distiller does, in `__init__`).
    """

    def __init__(self):
        self.variable = tf.Variable(
            tf.zeros([_RECORD_SIZE]),
            trainable=False,
            name="label_record",
            synchronization=tf.VariableSynchronization.ON_READ,
            aggregation=tf.VariableAggregation.SUM,
        )

    def write(self, y, bad, event_size, output=0):
        """Keeps the values of a batch with bad rows; a clean batch leaves the record.

        No `cond` of its own (under XLA one costs more than these few fused
        ops): the training step runs it where it skips an update, the test
        step on every batch.
        """
        values = tf.cast(y, tf.float32)
        bad_rows = tf.reduce_sum(tf.cast(bad, tf.float32))
        found = bad_rows > 0
        stats = [bad_rows, tf.reduce_min(values), tf.reduce_max(values)]
        new = tf.stack([*stats, tf.constant(float(event_size)), tf.constant(float(output))])
        self.variable.assign(tf.where(found, new, self.variable.read_value()))

    def reset(self, strategy):
        for local in strategy.experimental_local_results(self.variable):
            local.assign(tf.zeros([_RECORD_SIZE]))

    def read(self, strategy):
        """`(bad rows, lowest, highest, event size, output)` over the replicas, or None if clean."""
        rows = [np.asarray(v) for v in strategy.experimental_local_results(self.variable)]
        bad = [row for row in rows if row[0] > 0]
        if not bad:
            return None
        count = int(sum(row[0] for row in bad))
        lowest, highest = min(row[1] for row in bad), max(row[2] for row in bad)
        return count, lowest, highest, int(bad[0][3]), int(bad[0][4])


def check_labels(head, y, outputs, event_size, record, output=0):
    """Labels to train on, whether every row was valid, and how to record bad ones.

    Returns `(y, valid, write)`. Bool labels become 0/1 (class ids, or
    targets). Rows the head cannot learn from (`Head.invalid_targets`) are
    replaced by zeros, so that no kernel fails on them; `valid` is a scalar
    bool tensor. `write()` keeps the batch's bad values in `record`: the
    training step calls it only in the branch that skips the update, so a
    clean batch pays for the range check alone. A `heads.MultiOutput` head
    checks each output's labels with its own head (`output`: its 1-based index).
    """
    if isinstance(head, heads_lib.MultiOutput) and isinstance(y, (dict, list, tuple)):
        checked = [
            check_labels(each, y[key], outputs[key], event_size[key], record, index + 1)
            for index, (_, key, each, _) in enumerate(head.items())
        ]
        keys = [key for _, key, _, _ in head.items()]
        safe = [labels for labels, _, _ in checked]
        safe = dict(zip(keys, safe, strict=True)) if isinstance(y, dict) else safe

        def write_each():
            for _, _, write in checked:
                write()

        return safe, tf.reduce_all([valid for _, valid, _ in checked]), write_each
    if y is None or not isinstance(y, tf.Tensor):
        return y, tf.constant(True), _nothing
    if y.dtype == tf.bool:
        y = tf.cast(y, tf.int32)
    bad = head.invalid_targets(y, outputs)
    rows = bad if y.shape.rank == 1 else tf.reshape(bad, [-1] + [1] * (y.shape.rank - 1))
    safe = tf.where(rows, tf.constant(0, y.dtype), y)

    def write():
        record.write(y, bad, event_size, output)

    return safe, tf.logical_not(tf.reduce_any(bad)), write


def _nothing():
    pass


def label_error(head, found, argument, batch, epoch=None):
    """The ValueError for a batch whose labels `record` found bad.

    With an `epoch` the batch was a training one, whose update was skipped.
    """
    count, lowest, highest, event_size, output = found
    if output:  # one output of a multi-output model: name it, and use its head's rule
        _, key, head, _ = head.items()[output - 1]
        argument = f"{argument}[{key!r}]"
    where = f"batch {batch + 1}" + ("" if epoch is None else f" of epoch {epoch + 1}")
    outcome = "That batch was not scored." if epoch is None else "That batch changed no weights."
    return ValueError(
        f"Labels of `{argument}` in {where} must be {head.target_rule(event_size)}. "
        f"Received: labels in [{lowest:g}, {highest:g}], {count} bad row(s). {outcome}"
    )


def finite_update(loss, gradients):
    """Whether an update from these gradients keeps the optimizer's state finite.

    True if the loss and the sum of the squared gradients are finite: every
    gradient is then finite and so is its square, which is what Adam, RMSprop
    and Adagrad accumulate (inputs x 1e20 give finite gradients whose squares
    overflow, and NaN weights one update later). One reduction per gradient,
    no copy of the state: a step this refuses is skipped, not undone.
    """
    total = tf.cast(loss, tf.float32)
    # l2_loss is sum(g ** 2) / 2 in one kernel (half the ops of square + sum).
    halves = [tf.nn.l2_loss(tf.cast(_values(g), tf.float32)) for g in gradients if g is not None]
    if halves:
        total = total + 2.0 * tf.add_n(halves)
    return tf.math.is_finite(total)


def _values(gradient):
    """A gradient's entries: the rows an `IndexedSlices` (Embedding) holds, not a dense copy."""
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def non_finite_state(model):
    """Names of the student's weights and optimizer variables that are not all finite.

    Read eagerly, once, when a step has failed: an update that passed
    `finite_update` can only leave non-finite state through an optimizer of
    unusual arithmetic, and the next step's loss then shows it.
    """
    optimizer = getattr(model, "optimizer", None)
    state = [*model.student.weights, *(optimizer.variables if optimizer is not None else [])]
    return [
        variable.path
        for variable in state
        if variable.dtype.startswith("float") and not np.all(np.isfinite(np.asarray(variable)))
    ]


class StepGuard(keras.callbacks.Callback):
    """Turns a skipped step into a Python error: bad labels, or a non-finite update.

    `argument` names the data of `fit`/`evaluate` ("x"); during `fit`'s
    validation the data is "validation_data".
    """

    def __init__(self, argument="x"):
        super().__init__()
        self.argument = argument
        self.training = False
        self.epoch = 0

    def on_train_begin(self, logs=None):
        self.training = True
        self.model._label_record.reset(self.model.distribute_strategy)

    def on_train_end(self, logs=None):
        self.training = False

    def on_test_begin(self, logs=None):
        if not self.training:
            self.model._label_record.reset(self.model.distribute_strategy)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not _finite_loss(logs):
            self.model.stop_training = True
            found = self.model._label_record.read(self.model.distribute_strategy)
            if found is not None:
                raise label_error(self.model.head, found, self.argument, batch, self.epoch)
            loss = float(logs["loss"])
            where = f"at epoch {self.epoch + 1}, step {batch + 1}"
            advice = (
                "Check the inputs and the teacher's outputs for NaN/inf or huge values, "
                "or lower the learning rate."
            )
            broken = non_finite_state(self.model)
            if broken:
                raise FloatingPointError(
                    f"The training loss became non-finite ({loss}) {where} because an "
                    "earlier update, from finite gradients, left non-finite values in: "
                    f"{', '.join(broken)}. Those are the weights now; the other weights "
                    "and optimizer variables are finite. The optimizer's arithmetic "
                    f"overflowed: {advice}"
                )
            raise FloatingPointError(
                f"The training loss or its gradients became non-finite ({loss}) {where}, "
                "or large enough that the optimizer's update would overflow. That "
                "update was skipped: the student's weights and the optimizer's state "
                f"are those of the last finite step. {advice}"
            )

    def on_test_batch_end(self, batch, logs=None):
        if not _finite_loss(logs):
            found = self.model._label_record.read(self.model.distribute_strategy)
            if found is not None:
                argument = "validation_data" if self.training else self.argument
                raise label_error(self.model.head, found, argument, batch)


def _finite_loss(logs):
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))
