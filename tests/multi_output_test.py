"""Tests of multi-output students and teachers: `heads.MultiOutput` through the Distiller."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from keras_ecl import heads, selection
from keras_ecl.export import tflite_predict
from tests import testing

N = 32


def two_outputs(name, units=8, seed=0):
    """A functional model with dict outputs: 3 class logits, 1 `[loc, raw_scale]` box."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((testing.FEATURES,))
    hidden = keras.layers.Dense(units, activation="relu", name=f"{name}_hidden")(inputs)
    outputs = {
        "class": keras.layers.Dense(testing.CLASSES, name=f"{name}_class")(hidden),
        "box": keras.layers.Dense(2, name=f"{name}_box")(hidden),
    }
    return keras.Model(inputs, outputs, name=name)


def one_output(model, key):
    """The single-output model of `model`'s output `key`, sharing its weights."""
    return keras.Model(model.inputs, model.output[key], name=f"{model.name}_{key}")


def data(n=N):
    x, labels = testing.classification_data(n=n)
    targets = np.sin(3 * x[:, :1]).astype("float32")
    return x, {"class": labels, "box": targets}


def head_dict(box_weight=1.0):
    return heads.MultiOutput(
        {"class": heads.Categorical(), "box": heads.Normal()},
        weights={"class": 1.0, "box": box_weight},
    )


def test_the_loss_is_the_weighted_sum_of_each_outputs_single_output_loss():
    x, y = data()
    teacher, student = two_outputs("teacher", 16, seed=1), two_outputs("student", seed=2)
    settings = dict(
        sampler=keras_ecl.samplers.GaussianNoise(0.3, seed=3),
        samples_per_example=2,
        real_weight=1.0,
        selection=None,
        supervised_weight=0.25,
    )
    multi = keras_ecl.Distiller(student, teacher, head=head_dict(box_weight=0.5), **settings)
    multi.compile(optimizer="sgd")
    logs = multi.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)

    # Evaluation draws from a fixed seed: each single-output Distiller sees the same inputs.
    expected_loss = 0.0
    for key, head, weight in (("class", heads.Categorical(), 1.0), ("box", heads.Normal(), 0.5)):
        single = keras_ecl.Distiller(
            one_output(student, key),
            one_output(teacher, key),
            head=head,
            **{**settings, "sampler": keras_ecl.samplers.GaussianNoise(0.3, seed=3)},
        )
        single.compile(optimizer="sgd")
        alone = single.evaluate(x, y[key], batch_size=N, verbose=0, return_dict=True)
        for name in ("student_loss", "distillation_loss", "extracurricular_loss"):
            assert logs[f"{key}_{name}"] == pytest.approx(alone[name], rel=1e-6)
        expected_loss += weight * alone["loss"]
    assert logs["student_loss"] == pytest.approx(
        logs["class_student_loss"] + 0.5 * logs["box_student_loss"], rel=1e-6
    )
    assert logs["loss"] == pytest.approx(expected_loss, rel=1e-6)


@pytest.mark.parametrize(
    "jit_compile", [False, pytest.param(True, marks=pytest.mark.large)], ids=["eager", "xla"]
)
def test_every_output_is_matched_on_the_same_synthetic_inputs(jit_compile):
    # Two identical outputs: their KLs agree only if both saw the same draws.
    def twin_outputs(name, seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((testing.FEATURES,))
        logits = keras.layers.Dense(testing.CLASSES)(inputs)
        same = {"a": keras.layers.Identity()(logits), "b": keras.layers.Identity()(logits)}
        return keras.Model(inputs, same, name=name)

    x, _ = data()
    calls = []

    class Recording(keras_ecl.samplers.GaussianNoise):
        def sample(self, x, num_samples, seed):
            calls.append(num_samples)
            return super().sample(x, num_samples, seed)

    distiller = keras_ecl.Distiller(
        twin_outputs("student", 0),
        twin_outputs("teacher", 1),
        head={"a": "categorical", "b": "categorical"},
        sampler=Recording(1.0),
        supervised_weight=0.0,
        updates_per_batch=1,  # one draw a step however many updates: a quarter of the trace
    )
    distiller.compile(optimizer="sgd", jit_compile=jit_compile)
    history = distiller.fit(x, batch_size=N, epochs=2, verbose=0).history
    # The eager check of the first batch, then the one trace: one draw, for both outputs.
    assert calls == [1, 1]
    assert history["a_extracurricular_loss"] == history["b_extracurricular_loss"]
    assert history["a_extracurricular_loss"][0] > 0


def test_per_output_metrics_follow_keras_compile():
    x, y = data()
    teacher, student = two_outputs("teacher", 16), two_outputs("student", seed=2)
    distiller = keras_ecl.Distiller(student, teacher, head=head_dict(), mode="kd")
    distiller.compile(
        optimizer="sgd", metrics={"class": ["accuracy"], "box": [keras.metrics.MeanSquaredError()]}
    )
    logs = distiller.evaluate(x, y, batch_size=N, verbose=0, return_dict=True)
    predicted = student.predict(x, verbose=0)
    accuracy = np.mean(np.argmax(predicted["class"], axis=-1) == y["class"])
    mse = np.mean((predicted["box"][:, :1] - y["box"]) ** 2)  # the point prediction: loc
    assert logs["class_accuracy"] == pytest.approx(accuracy)
    assert logs["box_mean_squared_error"] == pytest.approx(mse, rel=1e-5)
    assert {"class_distillation_loss", "box_distillation_loss", "class_student_loss"} <= set(logs)


def test_list_outputs_take_a_list_of_heads_and_labels():
    x, y = data()
    keras.utils.set_random_seed(0)

    def listed(name):
        model = two_outputs(name)
        return keras.Model(model.inputs, [model.output["class"], model.output["box"]], name=name)

    distiller = keras_ecl.Distiller(
        listed("student"),
        listed("teacher"),
        head=[heads.Categorical(), heads.Normal()],
        selection=None,
        updates_per_batch=1,
    )
    distiller.compile(optimizer="sgd")
    history = distiller.fit(x, [y["class"], y["box"]], batch_size=16, epochs=1, verbose=0).history
    assert {"output_0_student_loss", "output_1_extracurricular_loss"} <= set(history)
    assert np.isfinite(history["loss"][0])


def test_label_free_fit_and_an_explicit_selection_score_the_joint_entropy():
    x, _ = data()
    head = head_dict()
    outputs = two_outputs("student")(x)
    joint = head.uncertainty(outputs)
    each = heads.Categorical().uncertainty(outputs["class"]) + heads.Normal().uncertainty(
        outputs["box"]
    )
    np.testing.assert_allclose(joint, each, rtol=1e-6)

    distiller = keras_ecl.Distiller(
        two_outputs("student"),
        two_outputs("teacher", 16, seed=1),
        head=head,
        supervised_weight=0.0,
        selection=selection.Selection(candidates=2),
    )
    distiller.compile(optimizer="sgd")
    history = distiller.fit(x, batch_size=16, epochs=1, verbose=0).history
    assert set(history) == {"loss", "class_extracurricular_loss", "box_extracurricular_loss"}
    assert (
        keras_ecl.Distiller(two_outputs("s"), two_outputs("t"), head=head).selection is None
    )  # "auto": the recipe's selection is for single classifiers


def test_keras_logits_distillation_over_dict_outputs_trains_to_keras_distillers_weights():
    # student_loss_weight=0: Keras 3.15's Distiller fails on a dict of student losses
    # (its tracked copy of the dict no longer matches the labels' structure).
    x, y = data()
    teacher = two_outputs("teacher", 16, seed=1)
    ours, theirs = two_outputs("ours", seed=2), two_outputs("theirs", seed=2)
    theirs.set_weights(ours.get_weights())
    losses = keras.distillation.LogitsDistillation(
        temperature=2.0, loss={"class": "kl_divergence", "box": "mse"}
    )
    reference = keras.distillation.Distiller(
        teacher=teacher, student=theirs, distillation_losses=losses, student_loss_weight=0.0
    )
    reference.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    distiller = keras_ecl.Distiller(
        ours,
        teacher,
        head=head_dict(),
        mode="kd",
        distillation_losses=losses,
        supervised_weight=0.0,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    distiller.fit(x, batch_size=16, epochs=2, shuffle=False, verbose=0)
    before = two_outputs("before", seed=2).get_weights()
    for a, b, c in zip(ours.get_weights(), theirs.get_weights(), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
        assert not np.allclose(a, c)


def test_a_multi_output_distiller_round_trips_through_a_keras_file(tmp_path):
    x, y = data()
    distiller = keras_ecl.Distiller(
        two_outputs("student"),
        two_outputs("teacher", 16),
        head=head_dict(box_weight=0.5),
        sampler=keras_ecl.samplers.GaussianNoise(0.3, seed=1),
        updates_per_batch=1,
    )
    distiller.compile(optimizer="adam", metrics={"class": ["accuracy"]})
    distiller.fit(x, y, batch_size=N, epochs=1, verbose=0)
    path = tmp_path / "multi.keras"
    distiller.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored.head, heads.MultiOutput)
    assert restored.head.weights == {"class": 1.0, "box": 0.5}
    assert restored.objective.names == distiller.objective.names
    predicted = restored.predict(x, verbose=0)
    for key, value in distiller.predict(x, verbose=0).items():
        np.testing.assert_allclose(predicted[key], value)
    before = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert restored.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(before)
    assert testing.run_serialization_test(head_dict(0.5)).weights == {"class": 1.0, "box": 0.5}
    listed = heads.MultiOutput(["categorical", heads.Normal(min_scale=0.1)], weights=[1.0, 2.0])
    restored = testing.run_serialization_test(listed)
    assert restored.weights == [1.0, 2.0] and restored.heads[1].min_scale == 0.1


def test_export_serves_every_outputs_parameters_under_its_name(tmp_path):
    x, _ = data()
    distiller = keras_ecl.Distiller(
        two_outputs("student"), two_outputs("teacher"), head=head_dict()
    )
    outputs = distiller.student.predict(x, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(outputs["class"]))
    scale = keras.ops.convert_to_numpy(keras.ops.softplus(outputs["box"][:, 1:])) + 1e-3

    path = keras_ecl.export_student(distiller, str(tmp_path / "student"))
    served = tf.saved_model.load(path).signatures["serving_default"](tf.constant(x))
    assert set(served) == {"class_logits", "class_probabilities", "box_loc", "box_scale"}
    np.testing.assert_allclose(served["class_probabilities"], probabilities, rtol=1e-5)
    np.testing.assert_allclose(served["box_scale"], scale, rtol=1e-5)

    path = keras_ecl.export_student(distiller, str(tmp_path / "student.tflite"))
    lite = tflite_predict(path, x)
    np.testing.assert_allclose(lite["class_probabilities"], probabilities, atol=1e-5)
    np.testing.assert_allclose(lite["box_loc"], outputs["box"][:, :1], atol=1e-5)


def test_multi_output_mistakes_are_refused_clearly(tmp_path):
    x, y = data()
    teacher, student = two_outputs("teacher"), two_outputs("student")
    with pytest.raises(ValueError, match="The student's output does not fit Categorical"):
        keras_ecl.Distiller(student, teacher)  # one head for two outputs
    with pytest.raises(
        ValueError,
        match=r"The student's outputs must follow the model's outputs, as `head` does: a "
        r"dict with keys \['class', 'box'\]. Received: one tensor of shape \(None, 3\)",
    ):
        keras_ecl.Distiller(testing.mlp(), testing.mlp(), head=head_dict())
    with pytest.raises(ValueError, match=r"Output 'class': The student's output does not fit Nor"):
        keras_ecl.Distiller(student, teacher, head={"class": "normal", "box": "normal"})
    with pytest.raises(ValueError, match=r"`weights` must be finite numbers >= 0"):
        heads.MultiOutput({"class": "categorical"}, weights={"class": -1.0})
    with pytest.raises(ValueError, match=r"`weights` must follow the model's outputs"):
        heads.MultiOutput({"class": "categorical"}, weights=[1.0])
    distiller = keras_ecl.Distiller(student, teacher, head=head_dict())
    distiller.compile(optimizer="sgd")
    with pytest.raises(
        ValueError,
        match=r"Labels of `x` must follow the model's outputs, as `head` does: a dict with "
        r"keys \['class', 'box'\]. Received: one tensor of shape \(32,\)",
    ):
        distiller.fit(x, y["class"], verbose=0)
    with pytest.raises(ValueError, match=r"Labels of `x\['class'\]` must be integer class ids"):
        distiller.fit(x, {"class": y["class"] + 5, "box": y["box"]}, verbose=0)


def test_bad_labels_in_a_later_batch_name_their_output_and_change_no_weights():
    x, y = data()
    bad = {"class": y["class"].copy(), "box": y["box"].copy()}
    bad["class"][20] = 7  # the second batch of 16: unseen by the eager check
    dataset = tf.data.Dataset.from_tensor_slices((x, bad)).batch(16)
    distiller = keras_ecl.Distiller(
        two_outputs("student"), two_outputs("teacher"), head=head_dict(), mode="kd"
    )
    distiller.compile(optimizer="sgd")
    with pytest.raises(
        ValueError,
        match=r"Labels of `x\['class'\]` in batch 2 of epoch 1 must be integer class ids in "
        r"\[0, 3\).*Received: labels in \[0, 7\], 1 bad row\(s\). That batch changed no",
    ):
        distiller.fit(dataset, epochs=1, verbose=0)
    bad["box"][20] = np.nan
    bad["class"][20] = 0
    dataset = tf.data.Dataset.from_tensor_slices((x, bad)).batch(16)
    with pytest.raises(ValueError, match=r"Labels of `x\['box'\]` in batch 2 must be finite"):
        distiller.evaluate(dataset, verbose=0)


def test_ensembles_calibration_galleries_and_head_layers_refuse_multi_output_clearly(tmp_path):
    x, y = data()
    members = [two_outputs("a"), two_outputs("b")]
    with pytest.raises(ValueError, match=r"Received: `members\[0\]` with 2 outputs"):
        keras_ecl.teachers.Ensemble(members)
    ensemble = keras_ecl.teachers.Ensemble([testing.mlp(), testing.mlp()])
    with pytest.raises(ValueError, match="An Ensemble teacher mixes one output per member"):
        ensemble.distillation_head(head_dict())
    with pytest.raises(ValueError, match=r"Received: head=MultiOutput\(.*teacher with 1 output"):
        keras_ecl.calibrate(testing.mlp(), (x, y["class"]), head=head_dict())
    with pytest.raises(ValueError, match=r"Received: head=Categorical.*teacher with 2 output"):
        keras_ecl.calibrate(two_outputs("teacher"), (x, y["class"]))
    with pytest.raises(ValueError, match="Build one HeadLayer per output"):
        heads.HeadLayer(head_dict(), event_size=3)
    distiller = keras_ecl.Distiller(two_outputs("s"), two_outputs("t"), head=head_dict())
    distiller.compile(optimizer="sgd")
    gallery = keras_ecl.callbacks.SampleGallery(x, str(tmp_path / "gallery"))
    with pytest.raises(ValueError, match="a multi-output Distiller has several"):
        distiller.fit(x, y, epochs=1, verbose=0, callbacks=[gallery])


@pytest.mark.large
def test_the_multi_output_example_runs_in_smoke_mode(tmp_path, capsys):
    from examples import multi_output

    assert multi_output.main(["--smoke", "--output-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("digit_student_loss", "ink_extracurricular_loss", "digit_accuracy"):
        assert name in printed
    teacher = re.search(r"^teacher\s+(0\.\d{3})\s+(\d+\.\d{3})$", printed, flags=re.M)
    student = re.search(r"^student\s+(0\.\d{3})\s+(\d+\.\d{3})$", printed, flags=re.M)
    assert teacher and student, printed
    assert float(teacher[1]) > 0.5  # ten classes: far above chance after two epochs
    assert "digit_logits, digit_probabilities, ink_loc, ink_scale" in printed
    assert (tmp_path / "multi_output" / "saved_model.pb").exists()
