"""Ensemble teachers: the mixture maths by hand, and Distillers that train on them."""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_ecl
from keras_ecl import heads, teachers
from tests import testing

softplus_inverse = lambda s: float(tfp.math.softplus_inverse(np.float32(s)))  # noqa: E731


def stacked(*members):
    """Member outputs `(1, M, units)` from one row per member."""
    return tf.constant(np.array(members, "float32")[None])


def ensemble_head(head, members=2, **kwargs):
    ensemble = teachers.Ensemble([testing.mlp(4) for _ in range(members)], **kwargs)
    return ensemble.distillation_head(head)


def test_categorical_members_mix_their_probabilities_at_the_temperature():
    head = heads.Categorical(temperature=2.0)
    a, b = np.array([2.0, 0.0, -1.0]), np.array([-1.0, 1.0, 0.5])
    outputs = stacked(a, b)
    softmax = lambda z: np.exp(z) / np.exp(z).sum()  # noqa: E731
    expected = 0.25 * softmax(a / 2) + 0.75 * softmax(b / 2)
    ensemble = ensemble_head(head, weights=[1, 3])
    probs = ensemble.distribution(outputs).probs_parameter()
    np.testing.assert_allclose(probs[0], expected, rtol=1e-5)
    # KL(mixture || student) is the head's KL (times T^2) from those probabilities.
    student = tf.constant([[0.3, -0.2, 0.1]])
    q = softmax(np.array([0.3, -0.2, 0.1]) / 2)
    kl = 4.0 * np.sum(expected * np.log(expected / q))
    np.testing.assert_allclose(ensemble.kl_divergence(outputs, student), [kl], rtol=1e-4)


def test_categorical_disagreement_is_the_mutual_information():
    head = heads.Categorical()
    ensemble = ensemble_head(head)
    same = stacked([1.0, 0.0], [1.0, 0.0])
    np.testing.assert_allclose(ensemble.uncertainty(same, "disagreement"), [0.0], atol=1e-6)
    opposite = stacked([20.0, 0.0], [0.0, 20.0])  # two sure members, opposite classes
    np.testing.assert_allclose(ensemble.uncertainty(opposite, "disagreement"), [np.log(2)], 1e-5)
    # Entropy of the ensemble is that of the mixture [0.5, 0.5].
    np.testing.assert_allclose(ensemble.uncertainty(opposite, "entropy"), [np.log(2)], 1e-5)


@pytest.mark.parametrize("name, variance_per_scale2", [("normal", 1.0), ("laplace", 2.0)])
def test_location_scale_members_are_moment_matched(name, variance_per_scale2):
    head = heads.get(name)
    raw = softplus_inverse(1.0 - head.min_scale)  # scale 1
    outputs = stacked([0.0, 10.0, raw, raw], [2.0, 10.0, raw, raw])  # two outputs
    ensemble = ensemble_head(head)
    dist = ensemble.distribution(outputs)
    np.testing.assert_allclose(dist.mean()[0], [1.0, 10.0], rtol=1e-5)
    # Mixture variance: mean member variance + variance of the means (1 and 0).
    expected = [variance_per_scale2 + 1.0, variance_per_scale2]
    np.testing.assert_allclose(dist.variance()[0], expected, rtol=1e-4)
    np.testing.assert_allclose(ensemble.uncertainty(outputs, "disagreement"), [1.0], rtol=1e-5)


def test_moment_matching_with_unequal_scales():
    head = heads.Normal()
    raw = lambda scale: softplus_inverse(scale - head.min_scale)  # noqa: E731
    # Mixture of N(1, 1) and N(3, 2): mean 2, variance (1 + 4) / 2 + (1 + 9) / 2 - 4 = 3.5.
    outputs = head.mixture_outputs(stacked([1.0, raw(1.0)], [3.0, raw(2.0)]), [0.5, 0.5])
    loc, scale = head.split(outputs)
    np.testing.assert_allclose([loc[0, 0], scale[0, 0]], [2.0, np.sqrt(3.5)], rtol=1e-4)


def test_monte_carlo_mixture_kl_matches_numerical_integration():
    head = heads.Normal()
    raw = softplus_inverse(0.5 - head.min_scale)  # scale 0.5
    outputs = stacked([-1.5, raw], [1.5, raw])  # a bimodal mixture
    student = tf.constant([[0.2, softplus_inverse(1.2 - head.min_scale)]])
    ensemble = ensemble_head(head, combine="mixture", samples=20000, seed=3)
    estimate = float(ensemble.kl_divergence(outputs, student)[0])
    grid = np.linspace(-8, 8, 40001)
    normal = lambda y, m, s: np.exp(-0.5 * ((y - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))  # noqa: E731
    p = 0.5 * normal(grid, -1.5, 0.5) + 0.5 * normal(grid, 1.5, 0.5)
    q = normal(grid, 0.2, 1.2)
    exact = np.trapezoid(p * np.log(p / q), grid)
    assert abs(estimate - exact) < 0.03, (estimate, exact)
    # Moment matching cannot see the two modes: its KL from the same student is smaller.
    moments = ensemble_head(head).kl_divergence(outputs, student)
    assert float(moments[0]) < exact


def test_mixture_kl_draws_move_with_the_seed_and_reach_the_student_only():
    head = heads.Normal()
    outputs = stacked([-1.0, 0.0], [1.0, 0.0])
    student = tf.Variable([[0.0, 0.0]])
    ensemble = ensemble_head(head, combine="mixture", samples=4)
    with tf.GradientTape() as tape:
        first = ensemble.kl_divergence(outputs, student)
    assert tape.gradient(first, student) is not None
    assert float(first[0]) != float(ensemble.kl_divergence(outputs, student)[0])


def test_two_identical_members_distil_like_the_single_teacher():
    x, y = testing.classification_data(64)
    teacher = testing.mlp(units=16)
    twin = keras.models.clone_model(teacher)
    twin.set_weights(teacher.get_weights())
    losses = []
    for t in [teacher, [teacher, twin]]:
        keras.utils.set_random_seed(0)
        distiller = keras_ecl.Distiller(testing.mlp(units=4), t, mode="kd")
        distiller.compile(optimizer="adam")
        losses.append(distiller.evaluate(x, y, verbose=0, return_dict=True))
    np.testing.assert_allclose(
        losses[0]["distillation_loss"], losses[1]["distillation_loss"], rtol=1e-5
    )


# XLA compiles an ensemble's step in ~20 s on CPU, so its cases cover each combine and
# each weighting once; the categorical head under XLA is registry_test's.
@pytest.mark.parametrize(
    "head, combine, weighting, jit_compile",
    [
        ("categorical", "moments", "disagreement", False),
        ("normal", "moments", "entropy", False),
        ("laplace", "mixture", "disagreement", False),
        ("normal", "moments", "entropy", True),
        ("laplace", "mixture", "disagreement", True),
    ],
)
def test_a_distiller_trains_on_an_ensemble_and_leaves_the_members_frozen(
    head, combine, weighting, jit_compile
):
    x, y, units = testing.head_case(head, 64)
    members = [testing.mlp(units, units=16) for _ in range(3)]
    before = [m.get_weights() for m in members]
    distiller = keras_ecl.Distiller(
        testing.mlp(units, units=4),
        teachers.Ensemble(members, combine=combine, samples=4),
        head=head,
        mode="ecl",
        samples_per_example=2,
        uncertainty_weighting=weighting,
        updates_per_batch=1,
        # The KL gap is what is measured: the recipe's label weight and selection would slow
        # it, and its weight average over 24 updates would lag the trained iterate.
        supervised_weight=0.1,
        selection=None,
        ema_momentum=0,
    )
    distiller.compile(optimizer=keras.optimizers.Adam(0.02), jit_compile=jit_compile)
    ensemble_head = distiller.teacher_head

    def gap():  # KL from the moment-matched mixture, on the real rows
        mixture = ensemble_head.combined(distiller.teacher(x))
        kl = ensemble_head.head.kl_divergence(mixture, distiller.student(x))
        return float(tf.reduce_mean(kl))

    before_training = gap()
    history = distiller.fit(x, y, batch_size=16, epochs=6, verbose=0).history
    assert np.all(np.isfinite(history["extracurricular_loss"]))
    assert gap() < 0.7 * before_training
    for member, weights in zip(members, before, strict=True):
        for a, b in zip(member.get_weights(), weights, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_list_teacher_is_an_ensemble_that_saves_and_loads(tmp_path):
    x, y = testing.classification_data(32)
    members = [testing.mlp(units=16, name=f"member_{i}") for i in range(2)]
    distiller = keras_ecl.Distiller(testing.mlp(units=4), members, mode="kd")
    assert isinstance(distiller.teacher, teachers.Ensemble)
    distiller.compile(optimizer="adam")
    distiller.fit(x, y, batch_size=16, verbose=0)
    path = tmp_path / "distiller.keras"
    distiller.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.teacher, teachers.Ensemble)
    np.testing.assert_allclose(loaded.teacher(x), distiller.teacher(x), rtol=1e-6)
    assert loaded.teacher.combine == "moments" and loaded.teacher.samples == 16
    expected = distiller.evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
    got = loaded.evaluate(x, y, verbose=0, return_dict=True)["distillation_loss"]
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_members_whose_outputs_differ_are_refused_when_first_called():
    class Subclassed(keras.Model):  # no static output shape before the first call
        def __init__(self, units):
            super().__init__()
            self.dense = keras.layers.Dense(units)

        def call(self, x):
            return self.dense(x)

    ensemble = teachers.Ensemble([Subclassed(3), Subclassed(4)])
    with pytest.raises(ValueError, match=r"same output layout. .*\(2, 3\), \(2, 4\)"):
        ensemble(np.zeros((2, testing.FEATURES), "float32"))


@pytest.mark.parametrize("policy", ["mixed_float16", "float32-two-replicas"])
def test_an_ensemble_teacher_trains_under_mixed_precision_and_two_replicas(policy):
    x, y, units = testing.head_case("normal", 64)
    two_replicas = policy == "float32-two-replicas"
    if not two_replicas:
        keras.mixed_precision.set_global_policy(policy)
    try:
        scope = testing.two_replicas().scope() if two_replicas else contextlib.nullcontext()
        with scope:
            members = [testing.mlp(units, units=16) for _ in range(2)]
            distiller = keras_ecl.Distiller(
                testing.mlp(units, units=4),
                teachers.Ensemble(members, combine="mixture", samples=4),
                head="normal",
                mode="ecl",
                uncertainty_weighting="disagreement",
                updates_per_batch=1,
            )
            distiller.compile(optimizer="adam")
        history = distiller.fit(x, y, batch_size=16, epochs=2, verbose=0).history
        stacked = distiller.teacher(x[:4])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert stacked.dtype == tf.float32 and tuple(stacked.shape) == (4, 2, units)
    assert np.all(np.isfinite(history["extracurricular_loss"]))
    assert all(np.all(np.isfinite(w)) for w in distiller.student.get_weights())
