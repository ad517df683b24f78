"""Tests of keras_ecl.objectives: terms, weights, logs, and parity with keras.distillation."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from keras_ecl import objectives
from tests import testing

# Largest weight difference after the same fit with keras.distillation.Distiller.
PARITY_ATOL = 1e-6


def keras_terms():
    return [
        keras.distillation.LogitsDistillation(temperature=3.0),
        keras.distillation.FeatureDistillation(loss="mse"),
    ]


def twin_students(seed=0):
    """Two students with the same initial weights."""
    keras.utils.set_random_seed(seed)
    first = testing.mlp(units=8)
    second = testing.mlp(units=8)
    second.set_weights(first.get_weights())
    return first, second


@pytest.mark.parametrize(
    "losses, weights",
    [(keras.distillation.LogitsDistillation(temperature=3.0), None), (keras_terms(), [1.0, 0.5])],
    ids=["logits", "logits_and_features"],
)
def test_kd_with_keras_arguments_trains_to_keras_distillers_weights(losses, weights):
    x, y = testing.classification_data(n=64)
    keras.utils.set_random_seed(1)
    teacher = testing.mlp(units=16)
    ours, theirs = twin_students()

    reference = keras.distillation.Distiller(
        teacher=teacher,
        student=theirs,
        distillation_losses=losses,
        distillation_loss_weights=weights,
        student_loss_weight=0.5,
    )
    distiller = keras_ecl.Distiller(
        ours,
        teacher,
        mode="kd",
        distillation_losses=losses,
        distillation_loss_weights=weights,
        supervised_weight=0.5,
    )
    for model in (reference, distiller):
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)

    before = testing.mlp(units=8).get_weights()  # moved: the fit changed something
    for a, b, c in zip(ours.get_weights(), theirs.get_weights(), before, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=PARITY_ATOL)
        assert not np.allclose(a, c)


def test_each_term_is_logged_and_weighted_under_its_own_name():
    x, y = testing.classification_data(n=32)
    keras.utils.set_random_seed(0)
    teacher, student = testing.mlp(units=16), testing.mlp(units=4)
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        mode="kd",
        supervised_weight=0.25,
        distillation_losses=keras_terms(),
        distillation_loss_weights=[2.0, 0.5],
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

    t, s = teacher.predict(x, verbose=0), student.predict(x, verbose=0)
    mse = np.mean((t - s) ** 2)
    # Keras' string "kl_divergence" is the loss function on temperature-scaled logits.
    kl = float(np.mean(keras.losses.kl_divergence(t / 3.0, s / 3.0)))
    assert logs["feature_loss"] == pytest.approx(mse, rel=1e-5)
    assert logs["distillation_loss"] == pytest.approx(kl, rel=1e-5)
    expected = 0.25 * logs["student_loss"] + 0.75 * (2.0 * kl + 0.5 * mse)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_ecl_evaluates_every_term_on_real_and_synthetic_inputs():
    x, _ = testing.classification_data(n=16)
    teacher, student = testing.mlp(units=16), testing.mlp(units=4)
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        supervised_weight=0.0,
        real_weight=1.0,
        selection=None,
        distillation_losses=[objectives.HeadKL(keras_ecl.heads.Categorical()), keras_terms()[1]],
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, verbose=0, return_dict=True)
    names = {
        "distillation_loss",
        "extracurricular_loss",
        "feature_loss",
        "extracurricular_feature_loss",
    }
    assert set(logs) == names | {"loss"}
    # k = r = 1: each term is the mean of its real and synthetic values.
    expected = sum(logs[a] + logs[b] for a, b in [sorted(names)[:2], sorted(names)[2:]]) / 2
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_terms_of_the_same_name_get_numbered():
    teacher, student = testing.mlp(), testing.mlp()
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        mode="kd",
        distillation_losses=[
            keras.distillation.LogitsDistillation(temperature=2.0),
            keras.distillation.LogitsDistillation(temperature=4.0),
        ],
    )
    assert distiller.objective.names == ["student_loss", "distillation_loss", "distillation_loss_2"]


def test_distiller_with_keras_terms_round_trips_through_a_keras_file(tmp_path):
    x, y = testing.classification_data(n=32)
    distiller = keras_ecl.Distiller(
        testing.mlp(),
        testing.mlp(units=16),
        mode="kd",
        distillation_losses=keras_terms(),
        distillation_loss_weights=[1.0, 0.5],
    )
    distiller.compile(optimizer="sgd")
    distiller.fit(x, y, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.distillation_loss_weights == [1.0, 0.5]
    assert [type(loss) for loss in loaded.distillation_losses] == [
        type(loss) for loss in distiller.distillation_losses
    ]
    assert loaded.evaluate(x, y, verbose=0) == pytest.approx(distiller.evaluate(x, y, verbose=0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"distillation_losses": ["kl"]},
            "Each of `distillation_losses` must be a keras.distillation.DistillationLoss",
        ),
        (
            {"distillation_losses": keras_terms(), "distillation_loss_weights": [1.0]},
            "must hold one finite number >= 0 per distillation term (2). "
            "Received: distillation_loss_weights=[1.0]",
        ),
        (
            {"distillation_losses": keras_terms()[:1], "distillation_loss_weights": [-1]},
            "Received: distillation_loss_weights=[-1]",
        ),
        (
            {"mode": "erm", "distillation_losses": keras_terms()[:1]},
            "`distillation_losses` applies to mode='kd' or 'ecl' only",
        ),
    ],
)
def test_bad_distillation_terms_are_refused(kwargs, message):
    with pytest.raises(ValueError) as error:
        keras_ecl.Distiller(testing.mlp(), testing.mlp(), **kwargs)
    assert message in str(error.value)


def named_mlp(units, name):
    """`testing.mlp` with named layers: `<name>_hidden` (ReLU) and `<name>_logits`."""
    return keras.Sequential(
        [
            keras.Input((testing.FEATURES,)),
            keras.layers.Dense(units, activation="relu", name=f"{name}_hidden"),
            keras.layers.Dense(testing.CLASSES, name=f"{name}_logits"),
        ],
        name=name,
    )


def hidden(model, x):
    return keras.Model(model.inputs, model.get_layer(f"{model.name}_hidden").output).predict(
        x, verbose=0
    )


def test_keras_feature_distillation_between_layers_trains_to_keras_distillers_weights():
    x, y = testing.classification_data(n=64)
    keras.utils.set_random_seed(1)
    teacher = named_mlp(8, "teacher")
    keras.utils.set_random_seed(0)
    ours, theirs = named_mlp(8, "student"), named_mlp(8, "student")
    theirs.set_weights(ours.get_weights())
    initial = ours.get_weights()
    losses = [
        keras.distillation.LogitsDistillation(temperature=2.0),
        keras.distillation.FeatureDistillation(
            teacher_layer_name="teacher_hidden", student_layer_name="student_hidden"
        ),
    ]
    reference = keras.distillation.Distiller(
        teacher, theirs, losses, distillation_loss_weights=[1.0, 0.3]
    )
    distiller = keras_ecl.Distiller(
        ours,
        teacher,
        mode="kd",
        supervised_weight=0.5,
        distillation_losses=losses,
        distillation_loss_weights=[1.0, 0.3],
    )
    for model in (reference, distiller):
        model.compile(
            optimizer=keras.optimizers.Adam(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    for a, b, c in zip(ours.get_weights(), theirs.get_weights(), initial, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=PARITY_ATOL)
        assert not np.allclose(a, c)


def feature_distiller(**kwargs):
    keras.utils.set_random_seed(0)
    teacher, student = named_mlp(16, "teacher"), named_mlp(4, "student")
    return keras_ecl.Distiller(
        student,
        teacher,
        distillation_losses=[
            objectives.HeadKL(keras_ecl.heads.Categorical()),
            objectives.FeatureMatching("teacher_hidden", "student_hidden"),
        ],
        distillation_loss_weights=[1.0, 0.1],
        **kwargs,
    )


def test_feature_matching_projects_and_matches_on_real_and_extracurricular_inputs():
    x, y = testing.classification_data(n=32)
    distiller = feature_distiller(
        sampler=keras_ecl.samplers.GaussianNoise(0.3), real_weight=1.0, supervised_weight=0.0
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)

    synthetic, _ = distiller.draw_extracurricular(x, training=False)  # evaluate's fixed seed
    kernel, bias = distiller.feature_projections[0].get_weights()
    assert kernel.shape == (4, 16)  # the student's width to the teacher's

    def feature_mse(inputs):
        projected = hidden(distiller.student, inputs) @ kernel + bias
        return np.mean((hidden(distiller.teacher, inputs) - projected) ** 2)

    assert logs["feature_loss"] == pytest.approx(feature_mse(x), rel=1e-5)
    assert logs["extracurricular_feature_loss"] == pytest.approx(
        feature_mse(synthetic.numpy()), rel=1e-5
    )
    kl = (logs["distillation_loss"] + logs["extracurricular_loss"]) / 2
    features = (logs["feature_loss"] + logs["extracurricular_feature_loss"]) / 2
    assert logs["loss"] == pytest.approx(kl + 0.1 * features, rel=1e-5)


def test_the_projection_trains_but_the_exported_student_is_bare(tmp_path):
    x, y = testing.classification_data(n=32)
    distiller = feature_distiller()
    distiller.compile(optimizer=keras.optimizers.Adam(0.01))
    projection = distiller.feature_projections[0]
    before = projection.get_weights()[0].copy()
    distiller.fit(x, y, batch_size=16, verbose=0)
    assert not np.allclose(projection.get_weights()[0], before)
    assert "student_hidden_projection" not in [
        v.path.split("/")[-2] for v in distiller.student.weights
    ]
    assert len(distiller.student.weights) == 4

    keras_ecl.export_student(distiller, str(tmp_path / "student"))
    served = tf.saved_model.load(str(tmp_path / "student"))
    assert len(served.variables) == 4
    probabilities = served.signatures["serving_default"](tf.constant(x))["probabilities"]
    expected = keras.ops.softmax(distiller.student.predict(x, verbose=0))
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)


def test_distiller_with_feature_terms_round_trips_through_a_keras_file(tmp_path):
    x, y = testing.classification_data(n=32)
    distiller = feature_distiller(updates_per_batch=1)  # a quarter of the recipe's trace
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=16, verbose=0)
    path = str(tmp_path / "distiller.keras")
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    for a, b in zip(
        loaded.feature_projections[0].get_weights(),
        distiller.feature_projections[0].get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    expected = distiller.evaluate(x, y, verbose=0, return_dict=True)
    assert loaded.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(expected)


def test_feature_terms_name_layers_the_models_have():
    teacher, student = named_mlp(8, "teacher"), named_mlp(4, "student")
    term = objectives.FeatureMatching("teacher_hidden", "hidden")
    with pytest.raises(ValueError, match="`student_layer_name` must name a layer of the student"):
        keras_ecl.Distiller(student, teacher, distillation_losses=[term])
    with pytest.raises(ValueError, match="`teacher_layer_name` must be a layer name"):
        objectives.FeatureMatching(None, "student_hidden")


def test_feature_terms_need_models_with_symbolic_inputs():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(testing.CLASSES, name="student_hidden")

        def call(self, x):
            return self.dense(x)

    term = objectives.FeatureMatching("teacher_hidden", "student_hidden")
    with pytest.raises(ValueError, match="needs a functional or Sequential model with an Input"):
        keras_ecl.Distiller(Subclassed(), named_mlp(8, "teacher"), distillation_losses=[term])


class L1Logits(objectives.Term):
    def __init__(self):
        super().__init__("l1_loss")

    def __call__(self, teacher_outputs, student_outputs, sample_weight=None):
        return keras.losses.MeanAbsoluteError()(teacher_outputs, student_outputs, sample_weight)


def test_a_custom_term_is_evaluated_weighted_and_logged():
    x, y = testing.classification_data(n=32)
    teacher, student = testing.mlp(units=16), testing.mlp(units=4)
    distiller = keras_ecl.Distiller(
        student,
        teacher,
        mode="kd",
        supervised_weight=0.0,
        distillation_losses=[L1Logits()],
        distillation_loss_weights=[3.0],
    )
    distiller.compile(optimizer="sgd")
    logs = distiller.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)
    l1 = np.mean(np.abs(teacher.predict(x, verbose=0) - student.predict(x, verbose=0)))
    assert logs["l1_loss"] == pytest.approx(l1, rel=1e-5)
    assert logs["loss"] == pytest.approx(3.0 * l1, rel=1e-5)


def test_keras_argument_order_is_caught():
    teacher, student = testing.mlp(units=16), testing.mlp()
    loss = keras.distillation.LogitsDistillation()
    with pytest.raises(ValueError, match=r"takes \(student, teacher, head, ...\) where Keras'"):
        keras_ecl.Distiller(teacher, student, loss)


def train_feature_distiller(strategy, jit_compile=False):
    x, y = testing.classification_data(n=64)
    with strategy.scope():
        distiller = feature_distiller(
            sampler=keras_ecl.samplers.Identity(),
            real_weight=1.0,
            selection=None,
            updates_per_batch=1,  # a quarter of the recipe's trace, three times
        )
        distiller.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    history = distiller.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    return history.history, distiller.get_weights()


@pytest.mark.large
@pytest.mark.skipif(len(tf.config.list_logical_devices("CPU")) < 2, reason="two logical CPUs")
def test_feature_terms_train_alike_on_two_replicas_one_device_and_under_xla():
    one = train_feature_distiller(testing.one_device())
    for other in (
        train_feature_distiller(testing.two_replicas()),
        train_feature_distiller(testing.one_device(), jit_compile=True),
    ):
        for key in ("loss", "feature_loss", "extracurricular_feature_loss"):
            np.testing.assert_allclose(one[0][key], other[0][key], rtol=1e-5, err_msg=key)
        for a, b in zip(one[1], other[1], strict=True):  # projection included
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
