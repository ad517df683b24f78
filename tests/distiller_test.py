"""Tests of keras_ecl.Distiller: loss terms, training, I/O and bad input."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from keras_ecl import _step_checks, heads, losses, samplers
from tests import testing

LARGE = pytest.mark.large
NUM_CLASSES = testing.CLASSES
make_data = testing.classification_data
make_regression_data = testing.regression_data
mlp = testing.mlp
weights_of = testing.weights_of
assert_same_weights = testing.assert_same_weights


def softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


# Loss terms.


@pytest.mark.parametrize("supervised_weight", [0.0, 0.3, 0.9])
def test_kd_loss_terms_match_hand_computation(supervised_weight):
    x, y = make_data()
    teacher, student = mlp(NUM_CLASSES, units=16), mlp(NUM_CLASSES, units=4)
    temperature = 2.5
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        head=heads.Categorical(temperature),
        mode="kd",
        supervised_weight=supervised_weight,
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

    t_logits = teacher.predict(x, verbose=0).astype("float64")
    s_logits = student.predict(x, verbose=0).astype("float64")
    p_t, p_s = softmax(t_logits / temperature), softmax(s_logits / temperature)
    kl = np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1)) * temperature**2
    ce = np.mean(-np.log(softmax(s_logits)[np.arange(len(y)), y]))
    assert logs["distillation_loss"] == pytest.approx(kl, rel=1e-4)
    assert logs["loss"] == pytest.approx(
        supervised_weight * ce + (1 - supervised_weight) * kl, rel=1e-4
    )
    if supervised_weight > 0:
        assert logs["student_loss"] == pytest.approx(ce, rel=1e-4)
    else:
        assert "student_loss" not in logs
    assert "extracurricular_loss" not in logs


def test_ecl_with_identity_sampler_equals_kd_on_real_inputs():
    """Synthetic copies of the batch give KL_synthetic == KL_real in evaluation."""
    x, y = make_data()
    teacher, student = mlp(NUM_CLASSES, units=16), mlp(NUM_CLASSES, units=4)
    common = dict(head=heads.Categorical(3.0), supervised_weight=0.4)
    ecl = keras_ecl.Distiller(
        student,
        teacher,
        sampler=samplers.Identity(),
        samples_per_example=3,
        real_weight=1.0,
        **common,
    )
    kd = keras_ecl.Distiller(student, teacher, mode="kd", **common)
    for distiller in (ecl, kd):
        distiller.compile(optimizer="sgd")
    ecl_logs = ecl.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    kd_logs = kd.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    assert ecl_logs["extracurricular_loss"] == pytest.approx(
        ecl_logs["distillation_loss"], rel=1e-5
    )
    assert ecl_logs["loss"] == pytest.approx(kd_logs["loss"], rel=1e-5)


def test_ecl_loss_combines_terms_with_sample_count():
    x, y = make_data()
    k, w = 2, 0.25
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4),
        mlp(NUM_CLASSES, units=16),
        sampler=samplers.MixUp(seed=3),
        samples_per_example=k,
        supervised_weight=w,
        real_weight=1.0,
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    expected = w * logs["student_loss"] + (1 - w) * (
        logs["distillation_loss"] + k * logs["extracurricular_loss"]
    ) / (1 + k)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)
    assert logs["extracurricular_loss"] != pytest.approx(logs["distillation_loss"], rel=1e-3)


@pytest.mark.parametrize("real_weight", [0.0, 0.5, 3.0])
def test_real_weight_weights_the_real_kl_against_the_synthetic_ones(real_weight):
    x, y = make_data()
    k, w = 2, 0.25
    teacher, student = mlp(NUM_CLASSES, units=16), mlp(NUM_CLASSES, units=4)
    shift = samplers.FromCallable(lambda t: 0.5 * t + 0.1)  # draws independent of the seed
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        sampler=shift,
        samples_per_example=k,
        supervised_weight=w,
        real_weight=real_weight,
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

    def kl(inputs):
        p_t = softmax(teacher.predict(inputs, verbose=0).astype("float64"))
        p_s = softmax(student.predict(inputs, verbose=0).astype("float64"))
        return np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=-1))

    kl_real, kl_synthetic = kl(x), kl(0.5 * x + 0.1)
    assert logs["extracurricular_loss"] == pytest.approx(kl_synthetic, rel=1e-4)
    expected = w * logs["student_loss"] + (1 - w) * (real_weight * kl_real + k * kl_synthetic) / (
        real_weight + k
    )
    assert logs["loss"] == pytest.approx(expected, rel=1e-4)
    # With weight 0 the teacher never sees the real batch: no real-input KL at all.
    assert ("distillation_loss" in logs) == (real_weight > 0)
    if real_weight > 0:
        assert logs["distillation_loss"] == pytest.approx(kl_real, rel=1e-4)


class BatchRecorder(keras.layers.Layer):
    """Records the batch size of every call (run eagerly)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes = []

    def call(self, inputs):
        if inputs.shape[0] is not None:  # not when Keras builds the model symbolically
            self.sizes.append(int(inputs.shape[0]))
        return inputs


def test_real_weight_zero_runs_the_teacher_on_synthetic_inputs_only():
    recorder = BatchRecorder()
    teacher = keras.Sequential([keras.Input((testing.FEATURES,)), recorder, keras.layers.Dense(3)])
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4),
        teacher,
        sampler=samplers.MixUp(seed=0),
        samples_per_example=2,
        supervised_weight=0.5,
        real_weight=0.0,
    )
    distiller.compile(optimizer="sgd", run_eagerly=True)
    x, y = make_data(48)
    recorder.sizes.clear()
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # The eager check before training sees the rows; then 3 steps of k * 16 synthetic rows.
    assert recorder.sizes == [48, 32, 32, 32]


def test_updates_per_batch_reuse_one_teacher_pass_for_several_student_updates():
    x, y = make_data(32)
    recorder = BatchRecorder()
    teacher = keras.Sequential([keras.Input((testing.FEATURES,)), recorder, keras.layers.Dense(3)])
    shift = samplers.FromCallable(lambda t: 0.5 * t + 0.1)  # the same draws every step

    def trained(updates, epochs):
        keras.utils.set_random_seed(0)
        distiller = keras_ecl.Distiller(
            mlp(NUM_CLASSES, units=4), teacher, sampler=shift, updates_per_batch=updates
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
        recorder.sizes.clear()
        distiller.fit(x, y, batch_size=32, epochs=epochs, verbose=0, shuffle=False)
        return distiller.student.get_weights(), len(recorder.sizes)

    (twice, calls_twice), (two_epochs, calls_epochs) = trained(2, 1), trained(1, 2)
    for a, b in zip(twice, two_epochs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The eager check before training, then one teacher pass per step for both updates.
    assert (calls_twice, calls_epochs) == (1 + 1, 1 + 2)
    with pytest.raises(ValueError, match="`updates_per_batch` must be an integer >= 1"):
        keras_ecl.Distiller(mlp(NUM_CLASSES), teacher, updates_per_batch=0)


@pytest.mark.parametrize("mode, slices", [("kd", 0), ("ecl", 2)])
def test_only_a_step_with_synthetic_inputs_slices_the_students_outputs(mode, slices):
    # Slicing the real rows out of the student's outputs costs a copy in the
    # gradient (StridedSliceGrad, one per part) on every step; KD's rows are all real.
    x, y = make_data(8)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES), mlp(NUM_CLASSES), mode=mode, selection=None, updates_per_batch=1
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=8, epochs=1, verbose=0)
    step = tf.function(lambda a, b: distiller.train_step((a, b)))
    graph = step.get_concrete_function(tf.constant(x), tf.constant(y)).graph
    assert [op.type for op in graph.get_operations()].count("StridedSliceGrad") == slices


def test_warmup_ramps_the_teacher_term_over_the_first_steps():
    x, y = make_data(64)
    options = dict(mode="kd", supervised_weight=0.3)
    teacher = mlp(NUM_CLASSES, units=16)
    warm = keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), teacher, warmup_steps=4, **options)
    warm.compile(optimizer=keras.optimizers.SGD(0.0))  # weights stay: each step sees the same
    history = warm.fit(x, y, batch_size=64, epochs=6, verbose=0, shuffle=False).history
    ce, kl = history["student_loss"][0], history["distillation_loss"][0]
    for step, loss in enumerate(history["loss"], start=1):
        assert loss == pytest.approx(0.3 * ce + 0.7 * kl * min(1.0, step / 4), rel=1e-5)
    logs = warm.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)
    assert logs["loss"] == pytest.approx(0.3 * ce + 0.7 * kl, rel=1e-5)  # full weight
    with pytest.raises(ValueError, match="`warmup_steps` must be an integer >= 0"):
        keras_ecl.Distiller(mlp(NUM_CLASSES), teacher, warmup_steps=-1, **options)


def test_erm_needs_no_teacher_and_reports_only_the_supervised_loss():
    x, y = make_data()
    distiller = keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), mode="erm")
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "student_loss", "accuracy"}
    np.testing.assert_allclose(history.history["loss"], history.history["student_loss"], rtol=1e-6)


def test_uncertainty_weighting_changes_extracurricular_loss():
    x, y = make_data()
    teacher, student = mlp(NUM_CLASSES, units=16), mlp(NUM_CLASSES, units=4)
    values = {}
    for weighting in (None, "entropy"):
        distiller = keras_ecl.Distiller(
            student,
            teacher,
            sampler=samplers.MixUp(seed=5),
            uncertainty_weighting=weighting,
        )
        distiller.compile(optimizer="sgd")
        logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
        values[weighting] = logs["extracurricular_loss"]
    assert values["entropy"] != pytest.approx(values[None], rel=1e-4)


def test_compile_loss_replaces_the_supervised_term():
    x, y = make_data()
    student = mlp(NUM_CLASSES, units=4)
    distiller = keras_ecl.Distiller(student, mode="erm")

    def logit_energy(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_pred), axis=-1)

    distiller.compile(optimizer="sgd", loss=logit_energy)
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    expected = np.mean(np.square(student.predict(x, verbose=0)))
    assert logs["student_loss"] == pytest.approx(expected, rel=1e-5)


# Training.


def test_fit_trains_only_the_student():
    x, y = make_data()
    teacher, student = mlp(NUM_CLASSES, units=16), mlp(NUM_CLASSES, units=4)
    teacher_before, student_before = weights_of(teacher), weights_of(student)
    distiller = keras_ecl.Distiller(student, teacher, sampler=samplers.GaussianNoise(0.2))
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert_same_weights(teacher_before, weights_of(teacher))
    changed = [
        not np.array_equal(a, b) for a, b in zip(student_before, weights_of(student), strict=True)
    ]
    assert all(changed)
    assert {v.path for v in distiller.trainable_variables} == {
        v.path for v in student.trainable_variables
    }


def test_distillation_moves_the_student_towards_the_teacher():
    x, y = make_data(256)
    teacher = mlp(NUM_CLASSES, units=32)
    teacher.compile("adam", keras_ecl.losses.NegativeLogLikelihood())
    teacher.fit(x, y, epochs=20, verbose=0)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=16), teacher, sampler=samplers.MixUp(seed=0), supervised_weight=0.0
    )
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2))
    kd = keras_ecl.Distiller(distiller.student, teacher, mode="kd")  # KL on real inputs
    kd.compile(optimizer="sgd")
    before = kd.evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
    distiller.fit(x, y, epochs=15, batch_size=32, verbose=0)
    after = kd.evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
    assert after < 0.5 * before


def test_static_graph_check_catches_python_ops_and_dynamic_shapes():
    x, y = make_data()
    spec = tf.data.Dataset.from_tensor_slices((x, y)).batch(32, drop_remainder=True).element_spec

    def through_python(batch):
        return tf.py_function(lambda t: t, [batch], tf.float32)

    def data_dependent(batch):  # rows kept depend on the values: unknown shape
        return tf.boolean_mask(batch, batch[:, 0] > 0)

    for function in (through_python, data_dependent):
        distiller = keras_ecl.Distiller(
            mlp(NUM_CLASSES, units=4),
            mlp(NUM_CLASSES, units=16),
            sampler=samplers.FromCallable(function),
        )
        distiller.compile(optimizer="adam")
        with pytest.raises(AssertionError):
            testing.assert_static_graph(distiller, spec)


def test_regression_with_a_pair_of_outputs():
    x, y = make_regression_data(outputs=1)

    def two_outputs(units):
        inputs = keras.Input((testing.FEATURES,))
        hidden = keras.layers.Dense(units, activation="relu")(inputs)
        return keras.Model(inputs, [keras.layers.Dense(1)(hidden), keras.layers.Dense(1)(hidden)])

    distiller = keras_ecl.Distiller(
        two_outputs(4), two_outputs(16), head="normal", updates_per_batch=1
    )
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.all(np.isfinite(history.history["extracurricular_loss"]))


def test_fit_with_dataset_sample_weight_validation_and_callbacks(tmp_path):
    x, y = make_data(128)
    sample_weight = np.linspace(0.5, 1.5, len(x)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y, sample_weight)).batch(32)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), updates_per_batch=1
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    checkpoint = tmp_path / "best.keras"
    history = distiller.fit(
        dataset,
        validation_data=(x[:64], y[:64]),
        epochs=4,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True),
            keras.callbacks.TensorBoard(tmp_path / "logs"),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=1),
        ],
    )
    assert {"val_loss", "val_accuracy", "val_extracurricular_loss"} <= set(history.history)
    assert checkpoint.exists()
    restored = keras.saving.load_model(checkpoint)
    assert isinstance(restored, keras_ecl.Distiller)
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))


def test_sample_weight_scales_the_supervised_loss():
    x, y = make_data(64)
    student = mlp(NUM_CLASSES, units=4)
    distiller = keras_ecl.Distiller(student, mode="erm")
    distiller.compile(optimizer="sgd")
    sample_weight = np.zeros(len(x), "float32")
    sample_weight[:16] = 2.0
    logs = distiller.evaluate(
        x, y, sample_weight=sample_weight, batch_size=len(x), verbose=0, return_dict=True
    )
    probs = softmax(student.predict(x, verbose=0).astype("float64"))
    ce = -np.log(probs[np.arange(len(y)), y])
    assert logs["student_loss"] == pytest.approx(np.sum(sample_weight * ce) / len(x), rel=1e-4)


def test_evaluate_and_predict_are_the_students():
    x, y = make_data()
    student = mlp(NUM_CLASSES, units=4)
    distiller = keras_ecl.Distiller(student, mlp(NUM_CLASSES, units=16))
    distiller.compile(metrics=["accuracy"])
    np.testing.assert_allclose(
        distiller.predict(x, verbose=0), student.predict(x, verbose=0), rtol=1e-6
    )
    accuracy = distiller.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    expected = np.mean(np.argmax(student.predict(x, verbose=0), axis=-1) == y)
    assert accuracy == pytest.approx(expected)


# Saving.


def test_keras_file_round_trip_restores_everything(tmp_path):
    x, y = make_data()
    sampler = samplers.OneOf(
        [samplers.MixUp(0.4, seed=1), samplers.CutMix(seed=2)], probs=[0.3, 0.7]
    )
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4),
        mlp(NUM_CLASSES, units=16),
        head=heads.Categorical(3.0),
        sampler=sampler,
        samples_per_example=3,
        supervised_weight=0.2,
        uncertainty_weighting="variance",
        updates_per_batch=2,  # not the default 4, and half its trace
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    distiller.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert [s.alpha for s in restored.sampler.samplers] == [0.4, 1.0]
    assert [s.seed for s in restored.sampler.samplers] == [1, 2]
    for key in (
        "samples_per_example",
        "supervised_weight",
        "mode",
        "uncertainty_weighting",
        "updates_per_batch",
    ):
        assert getattr(restored, key) == getattr(distiller, key)
    assert restored.head.temperature == 3.0
    assert restored.sampler.probs == [0.3, 0.7]
    np.testing.assert_allclose(restored.predict(x, verbose=0), distiller.predict(x, verbose=0))
    np.testing.assert_allclose(
        restored.teacher.predict(x, verbose=0), distiller.teacher.predict(x, verbose=0)
    )
    assert not restored.teacher.trainable_variables


def test_resumed_training_matches_uninterrupted(tmp_path):
    """Optimizer state survives saving: one more epoch gives identical weights."""
    x, y = make_regression_data(outputs=1)
    distiller = keras_ecl.Distiller(
        mlp(2, units=4), mlp(2, units=16), head=heads.Laplace(), mode="kd", supervised_weight=0.5
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=2, verbose=0, shuffle=False)
    distiller.save(tmp_path / "d.keras")
    restored = keras.saving.load_model(tmp_path / "d.keras")
    distiller.fit(x, y, epochs=1, verbose=0, shuffle=False)
    restored.fit(x, y, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(distiller.student.get_weights(), restored.student.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("ensemble", [False, True])
def test_a_distiller_with_compiled_teachers_reloads_without_warnings(tmp_path, ensemble):
    # A frozen teacher's compile state is not saved: reloaded, its fresh optimizer met the
    # trained one's state, and Keras warned "Skipping variable loading for optimizer".
    x, y = make_data(64)
    teachers = [mlp(NUM_CLASSES, units=16) for _ in range(2 if ensemble else 1)]
    for teacher in teachers:
        teacher.compile(optimizer="adam", loss=losses.NegativeLogLikelihood())
        teacher.fit(x, y, epochs=1, verbose=0)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4), teachers if ensemble else teachers[0], updates_per_batch=1
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
    distiller.save(tmp_path / "distiller.keras")
    with testing.warnings_as_errors():
        restored = keras.saving.load_model(tmp_path / "distiller.keras")
    np.testing.assert_allclose(
        restored.teacher.predict(x, verbose=0), distiller.teacher.predict(x, verbose=0)
    )
    assert restored.optimizer.iterations.numpy() == distiller.optimizer.iterations.numpy()
    assert teachers[0].compiled  # the user's own models keep their compile state


def test_a_distiller_saved_before_any_fit_reloads_without_warnings(tmp_path):
    # `load_model` builds the optimizer, which then met the saved unbuilt one's state
    # ("Skipping variable loading for optimizer"): `compile` builds it already.
    distiller = testing.make_distiller()
    distiller.save(tmp_path / "distiller.keras")
    with testing.warnings_as_errors():
        restored = keras.saving.load_model(tmp_path / "distiller.keras")
    assert restored.optimizer.built and len(restored.optimizer.variables) == 14  # Adam, EMA


def test_config_round_trip():
    distiller = keras_ecl.Distiller(
        mlp(2, units=4),
        mlp(2, units=16),
        head=heads.Normal(min_scale=0.01),
        sampler="gaussian_noise",
    )
    clone = keras_ecl.Distiller.from_config(distiller.get_config())
    assert clone.head.min_scale == 0.01
    assert isinstance(clone.sampler, samplers.GaussianNoise)
    assert clone.student.count_params() == distiller.student.count_params()


def test_student_file_holds_no_teacher(tmp_path):
    x, y = make_data()
    teacher = mlp(NUM_CLASSES, units=2048, name="big_teacher")
    distiller = keras_ecl.Distiller(mlp(NUM_CLASSES, units=4, name="small_student"), teacher)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    student_path = tmp_path / "student.keras"
    distiller.student.save(student_path)
    distiller.save(tmp_path / "distiller.keras")
    reloaded = keras.saving.load_model(student_path)
    assert reloaded.count_params() == distiller.student.count_params()
    assert "big_teacher" not in str(reloaded.get_config())
    teacher_bytes = 4 * teacher.count_params()
    assert (
        os.path.getsize(student_path)
        < teacher_bytes
        < os.path.getsize(tmp_path / "distiller.keras")
    )
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), distiller.predict(x, verbose=0))


# Bad input: constructor.


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(samples_per_example=-1), "samples_per_example.*Received: samples_per_example=-1"),
        (dict(samples_per_example=1.5), "samples_per_example.*Received: samples_per_example=1.5"),
        (
            dict(supervised_weight=1.5),
            r"supervised_weight.*\[0, 1\].*Received: supervised_weight=1.5",
        ),
        (dict(supervised_weight=-0.1), "Received: supervised_weight=-0.1"),
        (dict(supervised_weight="half"), "Received: supervised_weight='half'"),
        (dict(mode="distil"), "`mode` must be one of.*Received: mode='distil'"),
        (dict(uncertainty_weighting="max"), "uncertainty_weighting.*Received"),
        (dict(head="poisson"), "`head` must be.*Received: head='poisson'"),
        (dict(sampler="noise"), "`sampler` must be.*Received: sampler='noise'"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), **kwargs)


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature.*Received: temperature=0"):
        heads.Categorical(temperature=0)
    with pytest.raises(ValueError, match="Received: temperature=-1"):
        heads.Categorical(temperature=-1)


def test_teacher_required_outside_erm():
    with pytest.raises(ValueError, match="mode='kd' needs a `teacher`"):
        keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), mode="kd")
    with pytest.raises(ValueError, match="`student` must be a keras.Model"):
        keras_ecl.Distiller(lambda x: x, mlp(NUM_CLASSES, units=4))


def test_class_count_mismatch_is_caught_at_construction():
    with pytest.raises(ValueError, match="same number of classes.*teacher=5, student=3"):
        keras_ecl.Distiller(mlp(3, units=4), mlp(5, units=16))


def test_odd_regression_outputs_do_not_fit_a_normal_head():
    with pytest.raises(ValueError, match="student's output does not fit Normal.*Received"):
        keras_ecl.Distiller(mlp(3, units=4), mlp(4, units=16), head="normal")


class Subclassed(keras.Model):
    def __init__(self, outputs, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(outputs)

    def call(self, x):
        return self.dense(x)


def test_class_count_mismatch_of_unbuilt_models_is_caught_before_training():
    x, y = make_data()
    student = Subclassed(NUM_CLASSES)
    distiller = keras_ecl.Distiller(student, Subclassed(NUM_CLASSES + 2))
    distiller.compile(optimizer="adam")
    with pytest.raises(ValueError, match="teacher=5, student=3"):
        distiller.fit(x, y, epochs=1, verbose=0)
    assert distiller.optimizer.iterations.numpy() == 0


# Bad input: data.


def _distiller(**kwargs):
    kwargs.setdefault("sampler", samplers.MixUp(seed=0))
    distiller = keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), **kwargs)
    distiller.compile(optimizer="adam")
    return distiller


def _fit_fails(distiller, error, match, *args, **kwargs):
    before = weights_of(distiller.student)
    with pytest.raises(error, match=match):
        distiller.fit(*args, epochs=1, verbose=0, **kwargs)
    assert_same_weights(before, weights_of(distiller.student))


def test_dataset_without_labels():
    x, _ = make_data()
    dataset = tf.data.Dataset.from_tensor_slices(x).batch(16)
    _fit_fails(_distiller(), ValueError, r"supervised_weight=0.5.*needs labels.*no `y`", dataset)
    # Distilling from the teacher alone needs no labels.
    _distiller(supervised_weight=0.0).fit(dataset, epochs=1, verbose=0)


def test_labels_out_of_range():
    x, y = make_data()
    _fit_fails(
        _distiller(),
        ValueError,
        r"class ids in \[0, 3\).*Received: labels in \[1, 7\]",
        x,
        y * 3 + 1,
    )
    _fit_fails(_distiller(), ValueError, r"\[-1, ", x, y - 1)


def test_mismatched_lengths():
    x, y = make_data()
    _fit_fails(_distiller(), ValueError, "96 inputs but 50 labels", x, y[:50])


def test_empty_inputs():
    x, y = make_data()
    _fit_fails(_distiller(), ValueError, "`x` is empty", x[:0], y[:0])
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(8)
    _fit_fails(_distiller(), ValueError, "empty dataset", empty)


def test_string_inputs():
    _, y = make_data(4)
    x = np.array([["a"] * testing.FEATURES] * 4)
    _fit_fails(_distiller(), TypeError, "must hold numbers.*dtype=<U1", x, y)


def test_nan_inputs():
    x, y = make_data()
    x[5, 2] = np.nan
    x[7, 1] = np.inf
    _fit_fails(_distiller(), ValueError, "contains 2 NaN or inf", x, y)


def test_integer_inputs_to_a_mixing_sampler():
    x, y = make_data()
    _fit_fails(_distiller(), TypeError, "floating-point input.*dtype=int64", x.astype("int64"), y)


def test_sampler_that_changes_the_shape():
    x, y = make_data()
    sampler = samplers.FromCallable(lambda t: t[:, :2])
    _fit_fails(
        _distiller(sampler=sampler),
        ValueError,
        r"num_samples=4 times. Expected: shape=\(256, 6\)",
        x,
        y,
    )


def test_bad_validation_data():
    x, y = make_data()
    _fit_fails(
        _distiller(), ValueError, "validation_data", x, y, validation_data=(x, y + NUM_CLASSES)
    )


def test_regression_targets_of_the_wrong_width():
    x, y = make_regression_data(outputs=3)
    distiller = keras_ecl.Distiller(mlp(4, units=4), mlp(4, units=16), head="normal")
    distiller.compile(optimizer="adam")
    _fit_fails(distiller, ValueError, r"2 column\(s\).*shape=\(96, 3\)", x, y)


def test_non_finite_loss_stops_training_and_keeps_the_last_good_weights():
    x, y = make_data(64)
    poisoned = x.copy()
    poisoned[40:48] = np.nan  # only in the third batch of 16: the eager check sees batch 1
    dataset = tf.data.Dataset.from_tensor_slices((poisoned, y)).batch(16)
    teacher = mlp(NUM_CLASSES, units=16)
    keras.utils.set_random_seed(1)
    distiller = keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), teacher, mode="kd")
    distiller.compile(optimizer=keras.optimizers.SGD(0.1))
    initial = weights_of(distiller.student)
    with pytest.raises(FloatingPointError, match="epoch 1, step 3"):
        distiller.fit(dataset, epochs=2, verbose=0)
    after = weights_of(distiller.student)
    assert all(np.all(np.isfinite(w)) for w in after)

    # The same two good steps from the same start give the same weights.
    reference = keras_ecl.Distiller(mlp(NUM_CLASSES, units=4), teacher, mode="kd")
    reference.student.set_weights(initial)
    reference.compile(optimizer=keras.optimizers.SGD(0.1))
    reference.fit(dataset.take(2), epochs=1, verbose=0)
    for a, b in zip(after, weights_of(reference.student), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


# Behaviours found in review: each pins a fix.


def test_mixed_precision_overflow_lowers_the_loss_scale_instead_of_stopping():
    x, y = make_data(64)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        distiller = keras_ecl.Distiller(
            mlp(NUM_CLASSES, units=8), mlp(NUM_CLASSES, units=16), mode="kd"
        )
        distiller.compile(optimizer="sgd")
        initial_scale = float(distiller.optimizer.initial_scale)
        # Large inputs make float16 gradients overflow at the initial scale.
        history = distiller.fit(x * 300, y, batch_size=16, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert float(distiller.optimizer.dynamic_scale.numpy()) < initial_scale
    assert np.all(np.isfinite(history.history["loss"]))


def test_student_regularization_is_part_of_the_loss():
    x, y = make_data()
    student = keras.Sequential(
        [
            keras.Input((testing.FEATURES,)),
            keras.layers.Dense(NUM_CLASSES, kernel_regularizer=keras.regularizers.L2(10.0)),
        ]
    )
    distiller = keras_ecl.Distiller(student, mode="erm")
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    penalty = 10.0 * np.sum(np.square(student.layers[0].kernel.numpy()))
    assert logs["loss"] == pytest.approx(logs["student_loss"] + penalty, rel=1e-5)


def test_uncertainty_weights_stay_finite_for_many_outputs():
    teacher = np.concatenate(
        [np.zeros((8, 40)), np.linspace(-8, 25, 8)[:, None] * np.ones((8, 40))], axis=-1
    ).astype("float32")
    weights = keras_ecl.losses.uncertainty_weights("normal", teacher).numpy()
    assert np.all(np.isfinite(weights)) and weights.mean() == pytest.approx(1.0, rel=1e-5)
    assert weights[-1] > weights[0]


def _two_input_model(units, dict_inputs=False):
    a, b = keras.Input((4,), name="a"), keras.Input((2,), name="b")
    hidden = keras.layers.Dense(units, activation="relu")(keras.layers.Concatenate()([a, b]))
    inputs = {"a": a, "b": b} if dict_inputs else [a, b]
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES)(hidden))


@pytest.mark.parametrize("dict_inputs", [False, True])
def test_multi_input_models_train_in_kd(dict_inputs):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 4)).astype("float32")
    b = rng.normal(size=(64, 2)).astype("float32")
    y = (a[:, 0] > 0).astype("int32")
    x = {"a": a, "b": b} if dict_inputs else [a, b]
    distiller = keras_ecl.Distiller(
        _two_input_model(4, dict_inputs), _two_input_model(16, dict_inputs), mode="kd"
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    label_free = keras_ecl.Distiller(
        _two_input_model(4, dict_inputs),
        _two_input_model(16, dict_inputs),
        mode="kd",
        supervised_weight=0.0,
    )
    label_free.compile(optimizer="adam")
    label_free.fit(x, epochs=1, batch_size=16, verbose=0)


def test_per_timestep_labels_are_accepted():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5, testing.FEATURES)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=(32, 5))

    def sequence_model(units):
        return keras.Sequential(
            [keras.Input((5, testing.FEATURES)), keras.layers.Dense(units), keras.layers.Dense(3)]
        )

    distiller = keras_ecl.Distiller(sequence_model(4), sequence_model(8), mode="kd")
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"class ids in \[0, 3\)"):
        distiller.fit(x, y + 3, epochs=1, verbose=0)


def test_loss_terms_are_averaged_over_examples_not_batches():
    x, y = make_data(9)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), mode="kd"
    )
    distiller.compile(optimizer="sgd")
    whole = distiller.evaluate(x, y, batch_size=9, verbose=0, return_dict=True)
    split = distiller.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    for key in ("loss", "student_loss", "distillation_loss"):
        assert split[key] == pytest.approx(whole[key], rel=1e-5), key


def test_compiled_metrics_see_the_predicted_loc():
    x, y = make_regression_data(outputs=1)
    student = mlp(2, units=4)
    distiller = keras_ecl.Distiller(student, head="normal", mode="erm")
    distiller.compile(optimizer="sgd", metrics=["mae"])
    mae = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["mae"]
    loc = student.predict(x, verbose=0)[:, :1]
    assert mae == pytest.approx(np.mean(np.abs(loc - y)), rel=1e-5)


def test_evaluate_is_repeatable_and_leaves_the_training_draws_alone():
    x, y = make_data()

    def train(validate):
        keras.utils.set_random_seed(0)
        distiller = keras_ecl.Distiller(
            mlp(NUM_CLASSES, units=4),
            mlp(NUM_CLASSES, units=16),
            sampler=samplers.MixUp(seed=3),
            updates_per_batch=1,
        )
        distiller.compile(optimizer="sgd")
        values = [
            distiller.evaluate(x, y, verbose=0, return_dict=True)["extracurricular_loss"]
            for _ in range(2 if validate else 0)
        ]
        distiller.fit(x, y, epochs=2, batch_size=32, verbose=0, shuffle=False)
        return values, distiller.student.get_weights()

    values, with_evaluation = train(validate=True)
    _, without_evaluation = train(validate=False)
    assert values[0] == values[1]
    assert_same_weights(with_evaluation, without_evaluation)


def test_zero_weighted_examples_contribute_nothing_synthetic():
    x, y = make_data(32)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4),
        mlp(NUM_CLASSES, units=16),
        sampler=samplers.GaussianNoise(0.3, seed=1),
        uncertainty_weighting="entropy",
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(
        x, y, sample_weight=np.zeros(32, "float32"), verbose=0, return_dict=True
    )
    assert logs["extracurricular_loss"] == 0.0 and logs["loss"] == 0.0


def test_pair_outputs_do_not_fit_a_categorical_head():
    def two_outputs(units):
        inputs = keras.Input((testing.FEATURES,))
        hidden = keras.layers.Dense(units)(inputs)
        return keras.Model(inputs, [keras.layers.Dense(3)(hidden), keras.layers.Dense(3)(hidden)])

    with pytest.raises(ValueError, match="expected one tensor"):
        keras_ecl.Distiller(two_outputs(4), two_outputs(8))


# One case per code path (float16 with loss scaling, bfloat16 without) in `make test-fast`.
FAST_PRECISION_CASES = {("mixed_float16", "categorical"), ("mixed_bfloat16", "normal")}


@pytest.mark.parametrize(
    "policy, head_name",
    [
        pytest.param(policy, head, marks=() if (policy, head) in FAST_PRECISION_CASES else LARGE)
        for policy in ("mixed_float16", "mixed_bfloat16")
        for head in ("categorical", "normal", "laplace")
    ],
)
def test_mixed_precision_trains_with_float32_losses(policy, head_name):
    x, y, _ = testing.head_case(head_name)
    head = heads.get(head_name)
    keras.mixed_precision.set_global_policy(policy)
    try:
        distiller = testing.make_distiller(
            head,
            sampler=samplers.OneOf([samplers.MixUp(seed=1), samplers.GaussianNoise(0.3, seed=2)]),
        )
        history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
        outputs = distiller.student(x[:4])
        kl = losses.DistributionKL(head)(distiller.teacher(x[:4]), outputs)
        nll = losses.NegativeLogLikelihood(head)(y[:4], outputs)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    compute_dtype = policy.removeprefix("mixed_")
    assert keras.backend.standardize_dtype(outputs.dtype) == compute_dtype
    assert kl.dtype == nll.dtype == tf.float32
    # Only float16 needs loss scaling; Keras wraps the optimizer for it alone.
    scaled = isinstance(distiller.optimizer, keras.optimizers.LossScaleOptimizer)
    assert scaled == (policy == "mixed_float16")
    for key in ("loss", "extracurricular_loss"):
        assert np.all(np.isfinite(history.history[key])), key
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())


def test_unseeded_sampler_follows_keras_global_seed():
    x, y = make_data()

    def run(seed):
        keras.utils.set_random_seed(seed)
        distiller = keras_ecl.Distiller(
            mlp(NUM_CLASSES, units=4),
            mlp(NUM_CLASSES, units=16),
            sampler=samplers.MixUp(),
            updates_per_batch=1,
        )
        distiller.compile(optimizer="adam")
        distiller.fit(x, y, epochs=1, batch_size=32, verbose=0)
        # The draws alone, from the trained sampler's next seed.
        return distiller.sampler(tf.constant(x[:8]), num_samples=2).numpy()

    draws = run(7)
    np.testing.assert_array_equal(run(7), draws)
    assert not np.allclose(run(8), draws)


# Mistakes real users make (issue 13): what must work, and the guard's promise.


def test_bool_labels_train_as_class_ids():
    x, y = make_data(64)
    y = (y > 0).astype(bool)
    runs = []
    for labels in (y, y.astype("int32")):
        keras.utils.set_random_seed(3)
        distiller = keras_ecl.Distiller(mlp(2, units=4), mlp(2, units=16), mode="kd")
        distiller.compile(optimizer="adam")
        distiller.fit(x, labels, batch_size=16, epochs=2, verbose=0)
        runs.append(weights_of(distiller.student))
    assert_same_weights(*runs)


def test_label_free_fit_with_compiled_metrics_scores_labelled_validation():
    x, y = make_data(64)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4),
        mlp(NUM_CLASSES, units=16),
        supervised_weight=0,
        updates_per_batch=1,
    )
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    history = distiller.fit(x, validation_data=(x, y), batch_size=16, epochs=2, verbose=0)
    assert "accuracy" not in history.history  # no labels to score the training batches
    assert 0 <= history.history["val_accuracy"][-1] <= 1
    # The same compiled Distiller then scores labelled data, and trains on it.
    accuracy = distiller.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    expected = np.mean(np.argmax(distiller.predict(x, verbose=0), axis=-1) == y)
    np.testing.assert_allclose(accuracy, expected, atol=1e-6)


@pytest.mark.parametrize("method", ["fit", "evaluate"])
def test_a_labelled_call_after_a_label_free_one_scores_the_labels(method):
    # The compiled metrics build on the first labelled batch inside the traced step; the
    # step traced on unlabelled data failed to create them on its retrace (stateful_test).
    x, y = make_data(64)
    distiller = testing.make_distiller(compile=False, supervised_weight=0.0)
    distiller.compile(optimizer="adam", metrics=["accuracy"])
    call = getattr(distiller, method)
    call(x, batch_size=32, verbose=0)
    call(x, y, batch_size=32, verbose=0)
    accuracy = distiller.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    expected = np.mean(np.argmax(distiller.predict(x, verbose=0), axis=-1) == y)
    np.testing.assert_allclose(accuracy, expected, atol=1e-6)


def test_a_recompile_without_metrics_or_loss_drops_the_earlier_ones():
    # Keras 3.15 keeps the previous compile's loss and metrics when a recompile
    # omits them (found by stateful_test at its deep size).
    x, y = make_data(64)
    distiller = testing.make_distiller(compile=False, mode="kd")
    distiller.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    distiller.fit(x, y, batch_size=32, verbose=0)
    distiller.compile(optimizer="adam")
    history = distiller.fit(x, y, batch_size=32, verbose=0).history
    assert set(history) == {"loss", "student_loss", "distillation_loss"}, history
    assert set(distiller.evaluate(x, y, verbose=0, return_dict=True)) == set(history)
    # The supervised term is the head's own likelihood again, not the old loss.
    distiller.compile(optimizer="adam", loss=lambda y, logits: keras.ops.ones_like(logits[:, 0]))
    assert distiller.evaluate(x, y, verbose=0, return_dict=True)["student_loss"] == 1.0
    distiller.compile(optimizer="adam")
    assert distiller.evaluate(x, y, verbose=0, return_dict=True)["student_loss"] != 1.0


def test_an_update_that_would_make_weights_non_finite_is_skipped():
    # Adam turns finite gradients whose squares overflow (inputs x 1e20) into inf/NaN state.
    x, y = make_data(64)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), mode="kd"
    )
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = [np.array(v) for v in [*distiller.student.weights, *distiller.optimizer.variables]]
    with pytest.raises(
        FloatingPointError, match="epoch 1, step 1, or large enough .* That update was skipped"
    ):
        distiller.fit(x * 1e20, y, batch_size=16, epochs=1, verbose=0)
    after = [np.array(v) for v in [*distiller.student.weights, *distiller.optimizer.variables]]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "loss, gradients, expected",
    [
        (1.0, [[1e18, -1.0], None], True),  # 1e36 + 1: squares stay finite
        (1.0, [[1e20, 0.0]], False),  # 1e40 overflows float32: Adam's v would be inf
        (1.0, [[1e19], [1e19], [1e19], [1e19]], False),  # each square fits, their sum does not
        (1.0, [[np.nan]], False),
        (np.inf, [[0.0]], False),
        (2.0, [], True),
    ],
)
def test_finite_update_is_the_finiteness_of_loss_plus_squared_gradients(loss, gradients, expected):
    gradients = [None if g is None else tf.constant(g, tf.float32) for g in gradients]
    assert bool(_step_checks.finite_update(tf.constant(loss), gradients)) is expected


def test_finite_update_reads_the_rows_of_sparse_gradients():
    # An Embedding's gradient is IndexedSlices: its rows are checked without a dense copy.
    def rows(value):
        values = tf.constant([[value, 0.0]])
        return tf.IndexedSlices(values, tf.constant([3]), tf.constant([1000, 2]))

    assert bool(_step_checks.finite_update(tf.constant(1.0), [rows(1.0)]))
    assert not bool(_step_checks.finite_update(tf.constant(1.0), [rows(1e20)]))


class OverflowingSGD(keras.optimizers.SGD):
    """SGD whose arithmetic overflows: finite gradients, non-finite weights."""

    def update_step(self, gradient, variable, learning_rate):
        self.assign_sub(variable, gradient * np.float32(3e38) * np.float32(3e38))


def test_an_optimizer_that_makes_weights_non_finite_is_named_in_the_error():
    # The in-step check cannot foresee every optimizer's arithmetic: then the
    # error says exactly which state is non-finite instead of promising it is not.
    x, y = make_data(64)
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), mode="kd"
    )
    distiller.compile(optimizer=OverflowingSGD())
    with pytest.raises(FloatingPointError) as caught:
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    message = str(caught.value)
    assert "epoch 1, step 2" in message  # step 1's update broke the weights
    named = message.split("non-finite values in: ")[1].split(". Those")[0].split(", ")
    broken = [v.path for v in distiller.student.weights if not np.all(np.isfinite(np.asarray(v)))]
    assert sorted(named) == sorted(broken) and broken


class NaNGradient(keras.layers.Layer):
    """The identity, whose gradient turns NaN once `poisoned` is set."""

    def __init__(self):
        super().__init__()
        self.poisoned = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, inputs):
        poisoned = self.poisoned

        @tf.custom_gradient
        def identity(t):
            def grad(upstream):
                return tf.where(poisoned > 0, upstream * np.nan, upstream)

            return tf.identity(t), grad

        return identity(inputs)


def test_an_injected_nan_gradient_skips_the_update_and_keeps_the_state():
    x, y = make_data(64)
    layer = NaNGradient()
    student = keras.Sequential(
        [
            keras.Input((testing.FEATURES,)),
            keras.layers.Dense(4),
            layer,
            keras.layers.Dense(NUM_CLASSES),
        ]
    )
    distiller = keras_ecl.Distiller(student, mlp(NUM_CLASSES, units=16), mode="kd")
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = [np.array(v) for v in [*student.trainable_weights, *distiller.optimizer.variables]]
    layer.poisoned.assign(1.0)
    with pytest.raises(FloatingPointError, match="epoch 1, step 1"):
        distiller.fit(x, y, batch_size=16, epochs=1, verbose=0)
    after = [np.array(v) for v in [*student.trainable_weights, *distiller.optimizer.variables]]
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)
    layer.poisoned.assign(0.0)  # and training goes on from there
    assert np.isfinite(distiller.fit(x, y, batch_size=16, verbose=0).history["loss"][-1])


def test_the_in_step_label_check_names_the_batch_under_xla():
    # XLA drops tf.debugging asserts: the check is plain tensor ops.
    x, y = make_data(64)
    y[40] = 9
    distiller = keras_ecl.Distiller(
        mlp(NUM_CLASSES, units=4), mlp(NUM_CLASSES, units=16), mode="kd"
    )
    distiller.compile(optimizer="adam", jit_compile=True)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    with pytest.raises(
        ValueError, match=r"in batch 3 of epoch 1 must be integer class ids in \[0, 3\)"
    ):
        distiller.fit(dataset, verbose=0)
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())
