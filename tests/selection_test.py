"""Guided extracurricular inputs: the kept draw is the argmax of its score, at no wasted pass."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from keras_ecl import heads, samplers
from keras_ecl.selection import SCORES, Selection
from tests import testing
from tests.reference import categorical_kl, log_softmax


def linear(weights):
    """A model whose logits are `x @ weights` (no bias), to compute scores by hand."""
    model = keras.Sequential(
        [keras.Input((weights.shape[0],)), keras.layers.Dense(weights.shape[1], use_bias=False)]
    )
    model.layers[0].set_weights([weights])
    return model


def entropy(logits):
    log_p = log_softmax(logits)
    return -np.sum(np.exp(log_p) * log_p, axis=-1)


CANDIDATES, SLOTS = 3, 4
RNG = np.random.default_rng(0)
DRAWN = RNG.normal(size=(CANDIDATES * SLOTS, 5)).astype("float32")
STUDENT = RNG.normal(size=(5, 3)).astype("float32")
TEACHER = 2 * RNG.normal(size=(5, 3)).astype("float32")


@pytest.mark.parametrize("score", SCORES)
def test_the_kept_draw_of_each_slot_is_the_argmax_of_its_score(score):
    head = heads.Categorical(2.0)
    kept, teacher_outputs = Selection(CANDIDATES, score).select(
        tf.constant(DRAWN), SLOTS, linear(STUDENT), linear(TEACHER), head
    )
    student_logits, teacher_logits = DRAWN @ STUDENT / 2.0, DRAWN @ TEACHER / 2.0
    scores = {
        "student_uncertainty": entropy(student_logits),
        "teacher_uncertainty": entropy(teacher_logits),
        "disagreement": categorical_kl(DRAWN @ TEACHER, DRAWN @ STUDENT, 2.0),
    }[score].reshape(CANDIDATES, SLOTS)
    rows = scores.argmax(axis=0) * SLOTS + np.arange(SLOTS)
    np.testing.assert_array_equal(kept.numpy(), DRAWN[rows])
    if score == "student_uncertainty":
        assert teacher_outputs is None  # the teacher runs on the kept inputs only, later
    else:  # the teacher's outputs on the kept inputs, reused rather than recomputed
        np.testing.assert_allclose(teacher_outputs, DRAWN[rows] @ TEACHER, rtol=1e-5)


def test_one_candidate_keeps_every_draw_and_runs_no_model():
    def fail(*args, **kwargs):
        raise AssertionError("no model should run")

    kept, teacher_outputs = Selection(1, "disagreement").select(DRAWN, 12, fail, fail, None)
    assert kept is DRAWN and teacher_outputs is None


def test_the_kept_inputs_keep_the_sampler_layout():
    # Every candidate of slot j * batch + i is drawn around real input i, so the
    # kept one is too: sample weights and uncertainty weights follow their anchors.
    x, _ = testing.classification_data(32)
    distiller = testing.make_distiller(
        sampler=samplers.GaussianNoise(0.01, seed=0),
        samples_per_example=2,
        selection=Selection(3, "teacher_uncertainty"),
    )
    synthetic, teacher_outputs = distiller.draw_extracurricular(tf.constant(x), training=False)
    assert synthetic.shape == (64, testing.FEATURES) and teacher_outputs.shape == (64, 3)
    np.testing.assert_allclose(synthetic.numpy().reshape(2, 32, -1) - x, 0.0, atol=0.1)


@pytest.mark.parametrize(
    "score", [SCORES[0], *(pytest.param(s, marks=pytest.mark.large) for s in SCORES[1:])]
)
def test_distillers_with_selection_train(score):
    x, y = testing.classification_data()
    distiller = testing.make_distiller(
        sampler=samplers.MixUp(seed=1), samples_per_example=2, selection=Selection(3, score)
    )
    testing.short_fit(distiller, x, y)


@pytest.mark.large
def test_selection_trains_under_xla_and_on_two_replicas():
    x, y = testing.classification_data(128)
    distiller = testing.make_distiller(
        sampler=samplers.MixUp(seed=1),
        samples_per_example=2,
        selection=Selection(3, "disagreement"),
        jit_compile=True,
    )
    testing.short_fit(distiller, x, y, jit_compile=True)
    logs, weights = testing.train_under(
        testing.two_replicas(),
        x,
        y,
        sampler=samplers.MixUp(seed=1),
        samples_per_example=2,
        selection=Selection(3, "teacher_uncertainty"),
    )
    assert np.all(np.isfinite(logs["extracurricular_loss"]))


def test_selection_survives_config_and_saving(tmp_path):
    x, y = testing.classification_data()
    selection = Selection(5, "teacher_uncertainty", "variance")
    assert testing.run_serialization_test(selection).get_config() == selection.get_config()
    distiller = testing.make_distiller(sampler="mixup", selection=selection, real_weight=0.0)
    distiller.fit(x, y, epochs=1, verbose=0)
    restored = testing.run_saving_test(distiller, x, tmp_path / "distiller.keras")
    assert restored.selection.get_config() == selection.get_config()
    assert restored.real_weight == 0.0


def test_bad_selection_arguments():
    with pytest.raises(
        ValueError, match="`candidates` must be an integer >= 1. Received: candidates=0"
    ):
        Selection(0)
    with pytest.raises(ValueError, match="`score` must be one of"):
        Selection(2, "loss")
    with pytest.raises(ValueError, match="`measure` must be one of"):
        Selection(2, measure="range")
    with pytest.raises(ValueError, match="only mode='ecl' draws"):
        testing.make_distiller(mode="kd", selection=Selection(2))
    with pytest.raises(ValueError, match="`selection` must be a keras_ecl.selection.Selection"):
        testing.make_distiller(selection="disagreement")
    with pytest.raises(ValueError, match="real_weight=0 with samples_per_example=0"):
        testing.make_distiller(real_weight=0.0, samples_per_example=0)
    with pytest.raises(ValueError, match="`real_weight` must be a finite number >= 0"):
        keras_ecl.Distiller(testing.mlp(), testing.mlp(), real_weight=-1)


def test_the_default_recipe_selects_by_student_uncertainty_in_ecl_only():
    def distiller(**kwargs):
        return keras_ecl.Distiller(testing.mlp(), testing.mlp(units=16), **kwargs)

    ecl = distiller(sampler="mixup")
    assert ecl.selection.get_config() == {
        "candidates": 4,
        "score": "student_uncertainty",
        "measure": "entropy",
    }
    assert ecl.supervised_weight == 0.5
    # Regression heads keep every draw (selection measured no better there).
    outputs = testing.head_case("normal", n=1)[2]
    regression = keras_ecl.Distiller(
        testing.mlp(outputs), testing.mlp(outputs, units=16), head="normal", sampler="mixup"
    )
    assert regression.selection is None and regression.supervised_weight == 0.5
    # Hinton KD keeps its usual label weight and draws nothing to select from.
    kd = distiller(mode="kd")
    assert kd.selection is None and kd.supervised_weight == 0.1
    # None keeps every draw; "auto" spelt out is the default.
    assert distiller(sampler="mixup", selection=None).selection is None
    explicit = distiller(sampler="mixup", selection="auto", supervised_weight=0.2)
    assert explicit.selection.candidates == 4 and explicit.supervised_weight == 0.2
    with pytest.raises(ValueError, match="Selection, None or 'auto'. Received: selection='best'"):
        distiller(selection="best")


def test_distillers_saved_before_the_default_recipe_changed_keep_theirs(tmp_path):
    # Configs of 2026-12-06 stored the old defaults explicitly: they load unchanged.
    config = testing.make_distiller(sampler="mixup", selection="auto").get_config()
    old = {**config, "supervised_weight": 0.1, "selection": None}
    restored = keras_ecl.Distiller.from_config(old)
    assert restored.selection is None and restored.supervised_weight == 0.1
    # The new defaults survive a round trip too.
    again = keras_ecl.Distiller.from_config(config)
    assert again.selection.get_config() == keras_ecl.selection.default_selection().get_config()
    assert again.supervised_weight == 0.5
