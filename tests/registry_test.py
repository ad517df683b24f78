"""Every registered head and sampler passes the same harness: a new part adds no test code.

The cases come from the registries (`heads.HEADS`, `samplers.SAMPLERS`): for
each class, its config and `.keras` round trips, the same short fit twice from
one seed (in a graph: it trains, its step traces to static shapes), and
training on two replicas beside one device under XLA. What is particular to a
part (its statistics, hand-computed values) stays in its own test file.

Each fit traces a new step, and tracing is most of a small fit's cost, so a
case checks all it can on the fits it runs (XLA cannot compile a step whose
variables sit on two logical CPUs, so the replicas run without it).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ecl import heads, samplers
from tests import testing

HEAD_EXAMPLES = heads.HEADS.examples()
SAMPLER_EXAMPLES = samplers.SAMPLERS.examples()
# The XLA and two-replica cases of one sampler and one head run in `make test-fast`;
# the other classes take the same code paths and run in `make test`.
FAST_SAMPLER, FAST_HEAD = "OneOf", "Categorical"


def prepared(sampler, x):
    """The sampler, fitted to `x` first if it adapts to data (as Keras preprocessing layers)."""
    if hasattr(sampler, "adapt"):
        sampler.adapt(np.asarray(x))
    return sampler


def _cases(examples, fast):
    return [
        pytest.param(name, marks=() if name == fast else pytest.mark.large) for name in examples
    ]


def test_registries_list_every_public_class_and_name_the_defaults():
    assert set(HEAD_EXAMPLES) == {"Categorical", "DecoupledCategorical", "Normal", "Laplace"}
    assert set(SAMPLER_EXAMPLES) == {
        "MixUp",
        "CutMix",
        "GaussianNoise",
        "GaussianMixture",
        "Identity",
        "OneOf",
        "FromCallable",
    }
    assert heads.HEADS.names() == ["categorical", "decoupled_categorical", "laplace", "normal"]
    assert samplers.SAMPLERS.names() == ["cutmix", "gaussian_noise", "identity", "mixup"]


def test_a_new_sampler_is_one_class_and_a_decorator():
    registry = samplers.SAMPLERS

    @samplers.register("test_flip")
    class Flip(samplers.Sampler):
        requires_float = False

        def sample(self, x, num_samples, seed):
            return tf.tile(x[::-1], [num_samples, 1])

    try:
        assert isinstance(samplers.get("test_flip"), Flip)
        assert "Flip" in registry.examples()
        restored = testing.run_serialization_test(Flip(seed=3))
        assert restored.seed == 3
    finally:  # keep the registry as the library defines it
        registry._names.pop("test_flip")
        registry._examples.pop("Flip")


def test_registering_refuses_other_classes_and_taken_names():
    with pytest.raises(ValueError, match="Only subclasses of Sampler can be registered"):
        samplers.register("dense")(keras.layers.Dense)
    with pytest.raises(ValueError, match="The sampler name 'mixup' is taken by MixUp"):

        @samplers.register("mixup")
        class Other(samplers.Sampler):
            pass


# Samplers.


@pytest.mark.parametrize("name", sorted(SAMPLER_EXAMPLES))
def test_sampler_config_round_trip_keeps_the_draws(name):
    x = np.random.default_rng(0).uniform(size=(4, 5, 5, 3)).astype("float32")
    keras.utils.set_random_seed(1)
    sampler = SAMPLER_EXAMPLES[name]()
    keras.utils.set_random_seed(1)
    restored = testing.run_serialization_test(sampler)
    # A fitted sampler's fit is in its weights, not its config: both fit the same data.
    sampler, restored = prepared(sampler, x), prepared(restored, x)
    np.testing.assert_array_equal(restored(x, num_samples=2), sampler(x, num_samples=2))


# In a graph only: every sampler is compiled by XLA inside a step by
# test_sampler_trains_on_two_replicas_and_under_xla, and samplers_test's
# test_runs_in_tf_function checks the draws of all but GaussianMixture under XLA by value.
@pytest.mark.parametrize("name", sorted(SAMPLER_EXAMPLES))
def test_sampler_draws_in_a_tf_function(name):
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype("float32")
    sampler = prepared(SAMPLER_EXAMPLES[name](), x)
    step = tf.function(
        lambda t: sampler(t, num_samples=3),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    first, second = step(x).numpy(), step(x).numpy()
    assert first.shape == (12, 8, 8, 3) and first.dtype == np.float32
    assert np.all(np.isfinite(first))
    if name != "Identity":  # the seed generator advances inside the graph
        assert not np.array_equal(first, second)


def _seeded_run(head, sampler_factory):
    """Two epochs in a graph from seed 123: `(logs, student weights, distiller)`.

    Every loss term is finite and the loss does not blow up, and the step,
    traced on static batches, holds no Python op and no unknown shape.
    """
    keras.utils.set_random_seed(123)
    x, y, _ = testing.head_case(head)
    sampler = prepared(sampler_factory(), x)
    distiller = testing.make_distiller(head, sampler=sampler, samples_per_example=2)
    history = distiller.fit(x, y, epochs=2, batch_size=32, verbose=0)
    testing.assert_trained(history.history)
    assert "extracurricular_loss" in history.history
    testing.assert_static_graph(distiller, testing.static_batches(x, y).element_spec)
    return history.history, distiller.student.get_weights(), distiller


@pytest.mark.parametrize("name", sorted(SAMPLER_EXAMPLES))
def test_sampler_trains_a_student_the_same_way_twice_from_one_seed_and_saves(name, tmp_path):
    (first_logs, first, _), (second_logs, second, distiller) = (
        _seeded_run("categorical", SAMPLER_EXAMPLES[name]) for _ in range(2)
    )
    assert first_logs == second_logs
    testing.assert_same_weights(first, second)
    # The trained Distiller survives a .keras round trip with its sampler.
    x, _ = testing.classification_data()
    restored = testing.run_saving_test(distiller, x, tmp_path / "distiller.keras")
    assert type(restored.sampler) is type(distiller.sampler)


@pytest.mark.parametrize("name", _cases(SAMPLER_EXAMPLES, FAST_SAMPLER))
def test_sampler_trains_on_two_replicas_and_under_xla(name):
    # Each replica draws around its own half batch with its own fold of the
    # seed, so the draws cannot equal one device's: the run must repeat
    # exactly, stay finite, warn of no stateful RNG and stay close to one device
    # (compiled by XLA there).
    x, y = testing.classification_data(128)

    def run(strategy, jit_compile):
        keras.utils.set_random_seed(5)  # unseeded samplers take their seed from it
        with strategy.scope():  # a fitted sampler's weights live where the Distiller's do
            sampler = prepared(SAMPLER_EXAMPLES[name](), x)
        return testing.train_under(
            strategy, x, y, sampler=sampler, samples_per_example=2, jit_compile=jit_compile
        )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = (run(testing.two_replicas(), jit_compile=False) for _ in range(2))
    assert not [w for w in caught if "random" in str(w.message).lower()]
    assert first[0] == second[0]
    testing.assert_same_weights(first[1], second[1])
    testing.assert_trained(first[0])
    single = run(testing.one_device(), jit_compile=True)
    testing.assert_trained(single[0])
    np.testing.assert_allclose(single[0]["loss"], first[0]["loss"], rtol=0.25)


# Heads.


@pytest.mark.parametrize("name", sorted(HEAD_EXAMPLES))
def test_head_config_round_trip(name):
    head = HEAD_EXAMPLES[name]()
    restored = testing.run_serialization_test(head)
    assert restored.get_config() == head.get_config()
    outputs = testing.head_case(head, n=4)[2]
    raw = np.random.default_rng(0).normal(size=(4, outputs)).astype("float32")
    np.testing.assert_allclose(
        restored.kl_divergence(raw, raw[::-1]), head.kl_divergence(raw, raw[::-1])
    )


@pytest.mark.parametrize("name", sorted(HEAD_EXAMPLES))
def test_head_trains_a_student_the_same_way_twice_from_one_seed(name):
    (first_logs, first, _), (second_logs, second, _) = (
        _seeded_run(HEAD_EXAMPLES[name](), samplers.MixUp) for _ in range(2)
    )
    assert first_logs == second_logs
    testing.assert_same_weights(first, second)


@pytest.mark.parametrize("name", _cases(HEAD_EXAMPLES, FAST_HEAD))
def test_head_on_two_replicas_matches_one_device_under_xla(name):
    # Draws that do not depend on the seed: both runs see the same inputs.
    x, y, _ = testing.head_case(HEAD_EXAMPLES[name](), n=128)
    runs = [
        testing.train_under(
            strategy,
            x,
            y,
            head=HEAD_EXAMPLES[name](),
            sampler=samplers.FromCallable(lambda t: 0.5 * t + 0.1),
            samples_per_example=2,
            jit_compile=jit_compile,
        )
        for strategy, jit_compile in ((testing.one_device(), True), (testing.two_replicas(), False))
    ]
    (one_logs, one_weights), (two_logs, two_weights) = runs
    testing.assert_trained(one_logs)
    for key in ("loss", "student_loss", "extracurricular_loss"):
        np.testing.assert_allclose(one_logs[key], two_logs[key], rtol=1e-5, atol=1e-6)
    for a, b in zip(one_weights, two_weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", _cases(HEAD_EXAMPLES, FAST_HEAD))
def test_head_survives_saving_in_a_distiller(name, tmp_path):
    x, y, _ = testing.head_case(HEAD_EXAMPLES[name]())
    distiller = testing.make_distiller(HEAD_EXAMPLES[name](), mode="kd")
    distiller.fit(x, y, epochs=1, verbose=0)
    restored = testing.run_saving_test(distiller, x, tmp_path / "distiller.keras")
    assert restored.head.get_config() == distiller.head.get_config()
