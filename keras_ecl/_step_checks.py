"""Checks inside the training and evaluation steps, for what `fit` cannot see eagerly.

`Distiller.fit` checks the first batch eagerly (`_data_checks`). Later batches of a
`tf.data.Dataset`, a `keras.utils.PyDataset` or a generator only exist inside the
traced step, where XLA drops `tf.debugging.assert_*` and an out-of-range class id
fails deep in a kernel ("Graph execution error"). So the step checks its labels with
plain tensor ops (`check_labels`), trains on harmless stand-ins for bad rows but
skips the update, records what it saw in a small variable (`LabelRecord`) and
reports a NaN loss; `StepGuard`, a callback that `fit` and `evaluate` add, then
raises the error in Python, naming the argument, the batch and the bad values.

The same guard keeps the non-finite promise: a step whose loss or gradients are not
finite is skipped, and an update that leaves a weight or an optimizer slot
non-finite although its gradients were finite (Adam on huge inputs) is undone
(`apply_or_restore`), so the weights really are the last finite ones.
"""

import math

import keras
import numpy as np
import tensorflow as tf

# What a record holds: bad rows, lowest and highest label of the batch, event size.
_RECORD_SIZE = 4


class LabelRecord:
    """What the last batch with bad labels held, written inside the step.

    One float32 variable `[bad rows, lowest label, highest label, event size]`,
    local to each replica (`ON_READ`), so replicas write without a merge and
    the guard reads each replica's own. It is not a Keras weight: it is not
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

    def write(self, bad_rows, lowest, highest, event_size):
        """Keeps the values of a batch with bad rows; a clean batch leaves the record."""
        new = tf.stack([bad_rows, lowest, highest, tf.constant(float(event_size))])
        self.variable.assign(tf.where(bad_rows > 0, new, self.variable.read_value()))

    def reset(self, strategy):
        for local in strategy.experimental_local_results(self.variable):
            local.assign(tf.zeros([_RECORD_SIZE]))

    def read(self, strategy):
        """`(bad rows, lowest, highest, event size)` over the replicas, or None if clean."""
        rows = [np.asarray(v) for v in strategy.experimental_local_results(self.variable)]
        bad = [row for row in rows if row[0] > 0]
        if not bad:
            return None
        count = int(sum(row[0] for row in bad))
        return count, min(row[1] for row in bad), max(row[2] for row in bad), int(bad[0][3])


def check_labels(head, y, outputs, event_size, record):
    """Labels to train on, and whether every row was valid (a scalar bool tensor).

    Bool labels become 0/1 (class ids, or targets). Rows the head cannot learn
    from (`Head.invalid_targets`) are replaced by zeros, so that no kernel
    fails on them, and written to `record`; the caller skips the update.
    """
    if y is None or not isinstance(y, tf.Tensor):
        return y, tf.constant(True)
    if y.dtype == tf.bool:
        y = tf.cast(y, tf.int32)
    bad = head.invalid_targets(y, outputs)
    values = tf.cast(y, tf.float32)
    record.write(
        tf.reduce_sum(tf.cast(bad, tf.float32)),
        tf.reduce_min(values),
        tf.reduce_max(values),
        event_size,
    )
    rows = tf.reshape(bad, [-1] + [1] * (y.shape.rank - 1))
    return tf.where(rows, tf.zeros_like(y), y), tf.logical_not(tf.reduce_any(bad))


def label_error(head, found, argument, batch, epoch=None):
    """The ValueError for a batch whose labels `record` found bad.

    With an `epoch` the batch was a training one, whose update was skipped.
    """
    count, lowest, highest, event_size = found
    where = f"batch {batch + 1}" + ("" if epoch is None else f" of epoch {epoch + 1}")
    outcome = "That batch was not scored." if epoch is None else "That batch changed no weights."
    return ValueError(
        f"Labels of `{argument}` in {where} must be {head.target_rule(event_size)}. "
        f"Received: labels in [{lowest:g}, {highest:g}], {count} bad row(s). {outcome}"
    )


def apply_or_restore(optimizer, gradients, variables, strategy=None):
    """Applies the gradients; undoes the update if it left any state non-finite.

    The state is the variables and the optimizer's own (slots, iterations),
    copied before the update. Returns whether the update was kept. In replica
    context (or on one device) pass no `strategy`; in cross-replica context
    (inside a `merge_call`) pass it, and the update runs on each replica.
    """
    if not optimizer.built:  # its slots must exist to be copied
        optimizer.build(variables)
    state = [_tf_variable(v) for v in [*variables, *optimizer.variables]]
    before = [tf.identity(v) for v in state]
    with tf.control_dependencies(before):
        if strategy is None:
            optimizer.apply(gradients, variables)
        else:
            strategy.extended.call_for_each_replica(optimizer.apply, args=(gradients, variables))
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in state if v.dtype.is_floating]
    kept = tf.reduce_all(tf.stack(checks))

    def restore():
        def assign_all(strategy, state, before):
            for variable, value in zip(state, before, strict=True):
                strategy.extended.update(variable, _assign, args=(value,), group=False)

        # In replica context only where the strategy needs no merge_call (the
        # Distiller's check), as the optimizer's own update does.
        assign_all(strategy or tf.distribute.get_strategy(), state, before)

    with tf.control_dependencies([kept]):
        keras.ops.cond(kept, lambda: None, restore)
    return tf.identity(kept)


def _assign(variable, value):
    return variable.assign(value)


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


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
            raise FloatingPointError(
                f"The training loss, its gradients or the update they gave became "
                f"non-finite ({loss}) at epoch {self.epoch + 1}, step {batch + 1}. That "
                "update was skipped or undone: the student's weights and the optimizer's "
                "state are those of the last finite step. Check the inputs and the "
                "teacher's outputs for NaN/inf or huge values, or lower the learning rate."
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
