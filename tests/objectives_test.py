"""Tests of keras_ecl.objectives: terms, weights, logs, and parity with keras.distillation."""

import keras
import numpy as np
import pytest

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


def test_feature_terms_between_named_layers_are_refused_for_now():
    teacher, student = testing.mlp(), testing.mlp()
    loss = keras.distillation.FeatureDistillation(
        teacher_layer_name=teacher.layers[0].name, student_layer_name=student.layers[0].name
    )
    with pytest.raises(ValueError, match="between named intermediate layers is not supported"):
        keras_ecl.Distiller(student, teacher, distillation_losses=loss)
