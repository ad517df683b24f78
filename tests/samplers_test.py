"""Tests of keras_ecl.samplers: shapes, statistics, seeds, graphs, errors, configs."""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_ecl import samplers
from tests import testing

# Tests that compare a statistic with its expectation allow this many
# standard errors (a chance failure has probability below 1e-6).
Z = 5.0


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _tile(x, num_samples):
    return np.tile(x, (num_samples,) + (1,) * (x.ndim - 1))


def _beta_moments(alpha):
    """Variance and fourth central moment of the symmetric Beta(alpha, alpha)."""
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))
    mu4 = 3.0 / (16.0 * (2.0 * alpha + 1.0) * (2.0 * alpha + 3.0))
    return var, mu4


def _assert_mean_and_var(values, mean, var, mu4):
    """Sample mean and variance within Z standard errors of their expectation."""
    n = values.size
    mean_se = np.sqrt(var / n)
    var_se = np.sqrt((mu4 - var**2) / n)
    assert abs(values.mean() - mean) < Z * mean_se, (values.mean(), mean, mean_se)
    assert abs(values.var() - var) < Z * var_se, (values.var(), var, var_se)


# One factory per sampler, used by the generic tests.
FACTORIES = {
    "mixup": lambda: samplers.MixUp(alpha=0.4, seed=1),
    "cutmix": lambda: samplers.CutMix(alpha=1.0, seed=1),
    "gaussian_noise": lambda: samplers.GaussianNoise(scale=0.1, seed=1),
    "identity": lambda: samplers.Identity(seed=1),
    "one_of": lambda: samplers.OneOf(
        [samplers.MixUp(seed=2), samplers.GaussianNoise(scale=0.1, seed=3)], seed=1
    ),
    "from_callable": lambda: samplers.FromCallable(lambda t: t * 2 - 1),
}

SHAPES = {2: (5, 7), 3: (5, 6, 2), 4: (5, 4, 6, 3)}
ATOL = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}


def _check_values(name, x, y, num_samples, atol):
    """Sampler-specific properties of `y = sampler(x, num_samples)`."""
    anchors = _tile(x, num_samples).astype(np.float64)
    y = y.astype(np.float64)
    assert np.isfinite(y).all()
    if name == "identity":
        np.testing.assert_array_equal(y, anchors)
    elif name == "from_callable":
        np.testing.assert_allclose(y, 2 * anchors - 1, atol=atol)
    elif name in ("mixup", "cutmix"):
        # Mixtures of inputs stay within the range of the inputs...
        assert y.min() >= x.min() - atol and y.max() <= x.max() + atol
        # ...and are not just copies of them.
        assert np.abs(y - anchors).max() > 0.01
    elif name == "gaussian_noise":
        diff = np.abs(y - anchors)
        assert 0 < diff.max() < 10 * 0.1 + atol
    elif name == "one_of":
        assert y.min() >= x.min() - 1.0 and y.max() <= x.max() + 1.0
        assert np.abs(y - anchors).max() > 0.01


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_shape_and_dtype_preserved(name):
    sampler = FACTORIES[name]()
    for dtype in ["float32", "float16", "float64"]:
        for rank, shape in SHAPES.items():
            x = np.random.default_rng(rank).uniform(size=shape).astype(dtype)
            for num_samples in (1, 3):
                case = (dtype, rank, num_samples)
                y = sampler(x, num_samples=num_samples)
                assert tuple(y.shape) == (x.shape[0] * num_samples,) + x.shape[1:], case
                assert y.dtype == tf.as_dtype(dtype), case
                _check_values(name, x, _np(y), num_samples, ATOL[dtype])


# MixUp ------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.4, 2.0])
def test_mixup_lambda_follows_beta(alpha):
    n, k = 64, 50
    x = np.eye(n, dtype="float32")
    y = _np(samplers.MixUp(alpha=alpha, seed=0)(x, num_samples=k))
    assert y.shape == (n * k, n)
    rows = np.arange(n * k)
    anchors = rows % n
    # Row r is lam * e_{r mod n} + (1 - lam) * e_partner.
    lam = y[rows, anchors]
    assert ((lam >= 0) & (lam <= 1)).all()
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    others = y.copy()
    others[rows, anchors] = 0.0
    assert (others >= 0).all()
    assert (np.count_nonzero(others, axis=1) <= 1).all()  # a single partner
    np.testing.assert_allclose(others.sum(axis=1), 1.0 - lam, atol=1e-5)
    var, mu4 = _beta_moments(alpha)
    _assert_mean_and_var(lam.astype(np.float64), 0.5, var, mu4)


@pytest.mark.parametrize("n", [2, 64])
def test_mixup_partner_is_never_the_anchor_and_is_uniform(n):
    k = 50 if n > 2 else 200
    x = np.eye(n, dtype="float32")
    # alpha = 50 keeps lam in (0.2, 0.8), so the partner is always visible.
    y = _np(samplers.MixUp(alpha=50.0, seed=3)(x, num_samples=k))
    rows = np.arange(n * k)
    anchors = rows % n
    lam = y[rows, anchors]
    assert ((lam > 0.2) & (lam < 0.8)).all()
    # A partner equal to its anchor would leave a single non-zero entry.
    assert (np.count_nonzero(y, axis=1) == 2).all()
    others = y.copy()
    others[rows, anchors] = 0.0
    partners = others.argmax(axis=1)
    np.testing.assert_allclose(others[rows, partners], 1.0 - lam, atol=1e-6)
    # Partners are uniform over the n - 1 other inputs (chi-square test with a
    # normal approximation of its quantile).
    offsets = (partners - anchors) % n
    counts = np.bincount(offsets, minlength=n)
    assert counts[0] == 0
    if n > 2:
        expected = n * k / (n - 1)
        chi2 = ((counts[1:] - expected) ** 2 / expected).sum()
        dof = n - 2
        assert chi2 < dof + Z * np.sqrt(2 * dof), chi2


# CutMix -----------------------------------------------------------------------


def _labelled(shape):
    """Inputs where every entry of input i equals i."""
    values = np.arange(shape[0], dtype="float32").reshape((-1,) + (1,) * (len(shape) - 1))
    return np.broadcast_to(values, shape).copy()


def _box_sides(mask):
    """Side lengths of the axis-aligned box `mask` covers; fails if it is not a box."""
    if not mask.any():
        return None
    sides = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        covered = np.flatnonzero(mask.any(axis=other) if other else mask)
        # Contiguous along each axis (no wrap-around, no holes)...
        np.testing.assert_array_equal(covered, np.arange(covered[0], covered[-1] + 1))
        sides.append(covered.size)
    # ...and the mask is the full product of those ranges.
    assert mask.sum() == np.prod(sides)
    return sides


@pytest.mark.parametrize(
    "shape", [(32, 24, 40, 3), (32, 64, 2), (32, 64)], ids=["image", "signal", "tabular"]
)
@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_cutmix_pastes_one_box_of_another_input(shape, alpha):
    k = 50
    x = _labelled(shape)
    batch = shape[0]
    y = _np(samplers.CutMix(alpha=alpha, seed=0)(x, num_samples=k))
    assert y.shape == (batch * k,) + shape[1:]
    has_channels = len(shape) > 2
    spatial = shape[1:-1] if has_channels else shape[1:]
    fractions = []
    for r in range(batch * k):
        anchor = r % batch
        pasted = y[r] != anchor
        if has_channels:
            # The same box in every channel.
            assert (pasted == pasted[..., :1]).all()
            pasted = pasted[..., 0]
        fractions.append(pasted.mean())
        sides = _box_sides(pasted)
        if sides is None:
            continue
        # One partner, never the anchor itself.
        values = np.unique(y[r][pasted])
        assert values.size == 1
        assert values[0] != anchor and values[0] in np.arange(batch)
        # Equal side fractions, up to rounding each side to whole pixels.
        side_fractions = np.array(sides) / np.array(spatial)
        assert np.ptp(side_fractions) <= sum(0.5 / n for n in spatial) + 1e-6
    fractions = np.array(fractions, dtype=np.float64)
    # The pasted fraction is 1 - lam, up to rounding every side to whole
    # pixels: that rounding adds at most ~1/(12 n^2) variance per side.
    var, mu4 = _beta_moments(alpha)
    rounding_var = sum(1.0 / (12 * n**2) for n in spatial)
    assert abs(fractions.var() - var) < Z * np.sqrt((mu4 - var**2) / fractions.size) + (
        rounding_var
    )
    assert abs(fractions.mean() - 0.5) < Z * np.sqrt(var / fractions.size)


# GaussianNoise ----------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.3, 2.0])
def test_gaussian_noise_is_centred_with_std_scale(scale):
    batch, k = 32, 10
    x = (3.0 * np.random.default_rng(1).standard_normal((batch, 100))).astype("float32")
    y = _np(samplers.GaussianNoise(scale=scale, seed=0)(x, num_samples=k))
    noise = (y.astype(np.float64) - _tile(x, k)).reshape(k, batch, 100)
    n = noise.size
    assert abs(noise.mean()) < Z * scale / np.sqrt(n)
    assert abs(noise.std() - scale) < Z * scale / np.sqrt(2 * n)
    # About 68.3% of a Normal lies within one standard deviation.
    inside = (np.abs(noise) < scale).mean()
    p = 0.682689
    assert abs(inside - p) < Z * np.sqrt(p * (1 - p) / n)
    # The copies of one input get independent noise.
    corr = np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]
    assert abs(corr) < Z / np.sqrt(batch * 100)


# Identity and FromCallable ----------------------------------------------------


def test_identity_returns_exact_copies_of_any_dtype():
    sampler = samplers.Identity()
    for dtype in ["uint8", "int32", "int64", "bool"]:
        x = np.random.default_rng(0).integers(0, 200, size=(6, 5, 2)).astype(dtype)
        y = sampler(x, num_samples=3)
        assert y.dtype == tf.as_dtype(dtype)
        np.testing.assert_array_equal(_np(y), _tile(x, 3))


def test_from_callable_accepts_integer_inputs():
    x = np.arange(12, dtype="int32").reshape(4, 3)
    y = samplers.FromCallable(lambda t: t + 1)(x, num_samples=2)
    assert y.dtype == tf.int32
    np.testing.assert_array_equal(_np(y), _tile(x, 2) + 1)


def test_from_callable_wraps_rand_augment():
    layer = keras.layers.RandAugment(value_range=(0, 1), seed=0)
    sampler = samplers.FromCallable(layer)
    assert layer.trainable is False
    assert sampler.trainable_weights == []
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    y = sampler(x, num_samples=2)
    assert tuple(y.shape) == (8, 16, 16, 3)
    assert y.dtype == tf.float32
    y = _np(y)
    assert np.isfinite(y).all()
    assert np.abs(y - _tile(x, 2)).max() > 0.05


# OneOf ------------------------------------------------------------------------


def _is_copy(y, x, num_samples):
    """Per row of `y`: whether it equals its anchor exactly."""
    anchors = _tile(x, num_samples)
    return (y == anchors).reshape(len(y), -1).all(axis=1)


@pytest.mark.parametrize("probs", [[1.0, 0.0], [0.0, 1.0]])
def test_one_of_degenerate_probs_pick_one_sampler(probs):
    x = np.random.default_rng(0).uniform(size=(8, 5)).astype("float32")
    sampler = samplers.OneOf(
        [samplers.Identity(), samplers.GaussianNoise(scale=1.0, seed=0)], probs=probs, seed=0
    )
    copies = _is_copy(_np(sampler(x, num_samples=20)), x, 20)
    if probs[0] == 1.0:
        assert copies.all()
    else:
        assert not copies.any()


def test_one_of_mixes_per_row():
    batch, k = 16, 50
    x = np.random.default_rng(0).uniform(size=(batch, 8)).astype("float32")
    sampler = samplers.OneOf(
        [samplers.Identity(), samplers.GaussianNoise(scale=1.0, seed=0)],
        probs=[0.5, 0.5],
        seed=0,
    )
    y = _np(sampler(x, num_samples=k))
    copies = _is_copy(y, x, k)
    n = copies.size
    assert abs(copies.mean() - 0.5) < Z * 0.5 / np.sqrt(n)
    # The other rows are entirely noisy.
    noisy = y[~copies] - _tile(x, k)[~copies]
    assert (noisy != 0).all()
    assert abs(noisy.std() - 1.0) < Z / np.sqrt(2 * noisy.size)


def test_one_of_defaults_to_uniform_probs():
    batch, k = 16, 60
    x = np.random.default_rng(0).uniform(size=(batch, 4)).astype("float32")
    sampler = samplers.OneOf(
        [
            samplers.Identity(),
            samplers.FromCallable(lambda t: t + 100.0),
            samplers.GaussianNoise(scale=1.0, seed=0),
        ],
        seed=0,
    )
    y = _np(sampler(x, num_samples=k))
    anchors = _tile(x, k)
    n = batch * k
    fractions = [
        (y == anchors).all(axis=1).mean(),
        (y == anchors + 100.0).all(axis=1).mean(),
    ]
    fractions.append(1.0 - sum(fractions))
    for fraction in fractions:
        assert abs(fraction - 1 / 3) < Z * np.sqrt(2 / 9 / n)


def test_one_of_accepts_integers_only_if_all_samplers_do():
    x = np.arange(8, dtype="int32").reshape(4, 2)
    ok = samplers.OneOf([samplers.Identity(), samplers.FromCallable(lambda t: t * 2)])
    y = _np(ok(x, num_samples=3))
    assert y.dtype == np.int32
    anchors = _tile(x, 3)
    assert ((y == anchors) | (y == 2 * anchors)).all()
    with pytest.raises(TypeError, match="dtype"):
        samplers.OneOf([samplers.Identity(), samplers.MixUp()])(x)


# Seeds ------------------------------------------------------------------------

SEEDED = {
    "mixup": lambda seed: samplers.MixUp(alpha=0.4, seed=seed),
    "cutmix": lambda seed: samplers.CutMix(alpha=1.0, seed=seed),
    "gaussian_noise": lambda seed: samplers.GaussianNoise(scale=0.1, seed=seed),
    # Only the component choice depends on the OneOf's own seed.
    "one_of": lambda seed: samplers.OneOf(
        [samplers.Identity(), samplers.GaussianNoise(scale=0.1, seed=7)], seed=seed
    ),
}


@pytest.mark.parametrize("name", sorted(SEEDED))
def test_seed_reproduces_draws(name):
    x = np.random.default_rng(0).uniform(size=(8, 6, 6, 2)).astype("float32")
    make = SEEDED[name]
    first = make(11)
    a1 = _np(first(x, num_samples=2))
    a2 = _np(first(x, num_samples=2))
    b1 = _np(make(11)(x, num_samples=2))
    c1 = _np(make(12)(x, num_samples=2))
    np.testing.assert_array_equal(a1, b1)
    assert not np.array_equal(a1, a2)
    assert not np.array_equal(a1, c1)
    # The same seed gives the same draws inside a tf.function (up to float
    # rounding of fused graph ops).
    graph_sampler = make(11)
    g1 = tf.function(lambda t: graph_sampler(t, num_samples=2))(tf.constant(x))
    np.testing.assert_allclose(_np(g1), a1, rtol=1e-6, atol=1e-6)
    assert not np.allclose(c1, a1, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["mixup"])
def test_seed_reproduces_draws_under_xla(name):
    x = tf.random.stateless_uniform((8, 6, 6, 2), seed=[1, 2])
    outputs = []
    for _ in range(2):
        sampler = SEEDED[name](11)
        step = tf.function(lambda t, s=sampler: s(t, num_samples=2), jit_compile=True)
        outputs.append(_np(step(x)))
    np.testing.assert_array_equal(outputs[0], outputs[1])


# tf.function and XLA ----------------------------------------------------------


@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_runs_in_tf_function(name, jit_compile):
    sampler = FACTORIES[name]()
    step = tf.function(
        lambda t: sampler(t, num_samples=3),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
        jit_compile=jit_compile,
    )
    # A second input shape checks the unknown dimensions (one XLA compile each).
    for shape in [(4, 8, 8, 3)] + ([] if jit_compile else [(2, 5, 6, 3)]):
        x = np.random.default_rng(0).uniform(size=shape).astype("float32")
        y1, y2 = _np(step(x)), _np(step(x))
        assert y1.shape == (3 * shape[0],) + shape[1:]
        assert y1.dtype == np.float32
        _check_values(name, x, y1, 3, atol=1e-5)
        # The seed generator advances inside the graph.
        assert np.array_equal(y1, y2) == (name in ("identity", "from_callable"))


# Errors -----------------------------------------------------------------------


def test_integer_input_raises_type_error():
    for cls in [samplers.MixUp, samplers.CutMix, samplers.GaussianNoise]:
        for dtype in ["int32", "uint8"]:
            with pytest.raises(TypeError, match=f"dtype={dtype}"):
                cls()(np.ones((4, 5), dtype))


def test_rank_one_input_raises():
    for make in FACTORIES.values():
        with pytest.raises(ValueError, match=r"rank >= 2.*shape=\(4,\)"):
            make()(np.ones((4,), "float32"))


def test_bad_num_samples_raises():
    x = np.ones((4, 5), "float32")
    for name in ["mixup", "identity", "one_of"]:
        sampler = FACTORIES[name]()
        for num_samples in [0, -1, 1.5, True, "2", None]:
            with pytest.raises(ValueError, match=re.escape(f"num_samples={num_samples!r}")):
                sampler(x, num_samples=num_samples)
        assert sampler(x, num_samples=2).shape[0] == 8


def test_non_positive_parameters_raise():
    cases = [
        (samplers.MixUp, "alpha", 0),
        (samplers.MixUp, "alpha", -0.5),
        (samplers.MixUp, "alpha", "1"),
        (samplers.CutMix, "alpha", 0.0),
        (samplers.CutMix, "alpha", -2),
        (samplers.GaussianNoise, "scale", 0),
        (samplers.GaussianNoise, "scale", -0.1),
        (samplers.GaussianNoise, "scale", None),
    ]
    for make, argument, value in cases:
        message = re.escape(f"`{argument}`") + ".*" + re.escape(f"{argument}={value!r}")
        with pytest.raises(ValueError, match=message):
            make(**{argument: value})
    # Positive ints and floats are accepted and stored as floats.
    assert samplers.MixUp(alpha=2).alpha == 2.0
    assert samplers.GaussianNoise(scale=1e-3).scale == 1e-3


def _two():
    return [samplers.MixUp(), samplers.Identity()]


def test_one_of_invalid_arguments_raise():
    cases = [
        ({"samplers": []}, "samplers"),
        ({"samplers": samplers.MixUp()}, "samplers"),
        ({"samplers": [samplers.MixUp(), "mixup"]}, "samplers"),
        ({"samplers": [samplers.MixUp(), keras.layers.Dense(2)]}, "samplers"),
        ({"samplers": _two(), "probs": [1.0]}, "probs"),
        ({"samplers": _two(), "probs": [0.2, 0.3, 0.5]}, "probs"),
        ({"samplers": _two(), "probs": [0.5, 0.6]}, "probs"),
        ({"samplers": _two(), "probs": [0.3, 0.3]}, "probs"),
        ({"samplers": _two(), "probs": [1.5, -0.5]}, "probs"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            samplers.OneOf(**kwargs)
    # Valid arguments, including a tuple of samplers, are accepted.
    assert samplers.OneOf(tuple(_two()), probs=[0.25, 0.75]).probs == [0.25, 0.75]


def test_from_callable_rejects_non_callables():
    for function in [3, "mixup", None]:
        with pytest.raises(ValueError, match=re.escape(f"function={function!r}")):
            samplers.FromCallable(function)


def test_from_callable_shape_change_raises():
    sampler = samplers.FromCallable(lambda t: t[:, :2])
    with pytest.raises(ValueError) as info:
        sampler(np.ones((4, 5), "float32"), num_samples=2)
    message = str(info.value)
    assert "Expected: shape=(8, 5)" in message
    assert "Received: shape=(8, 2)" in message


def test_from_callable_dtype_change_raises():
    sampler = samplers.FromCallable(lambda t: tf.cast(t, "float64"))
    with pytest.raises(ValueError, match="dtype=float32.*dtype=float64"):
        sampler(np.ones((4, 5), "float32"))


# samplers.get -----------------------------------------------------------------


def test_get_by_name():
    cases = [
        ("mixup", samplers.MixUp),
        ("MixUp", samplers.MixUp),
        ("cutmix", samplers.CutMix),
        ("gaussian_noise", samplers.GaussianNoise),
        ("identity", samplers.Identity),
    ]
    for identifier, cls in cases:
        assert type(samplers.get(identifier)) is cls, identifier


def test_get_instance_and_config():
    sampler = samplers.GaussianNoise(scale=0.7, seed=4)
    assert samplers.get(sampler) is sampler
    restored = samplers.get(keras.saving.serialize_keras_object(sampler))
    assert type(restored) is samplers.GaussianNoise
    assert restored is not sampler
    assert (restored.scale, restored.seed) == (0.7, 4)


def test_get_unknown_raises():
    for identifier in ["unknown", "one_of", "", 3, None]:
        with pytest.raises(ValueError, match=re.escape(f"sampler={identifier!r}")):
            samplers.get(identifier)


# Serialization ----------------------------------------------------------------


def _nested_one_of():
    return samplers.OneOf(
        [
            samplers.MixUp(alpha=0.3, seed=1),
            samplers.OneOf(
                [samplers.Identity(seed=2), samplers.GaussianNoise(scale=0.2, seed=4)],
                probs=[0.25, 0.75],
                seed=5,
            ),
        ],
        probs=[0.4, 0.6],
        seed=9,
    )


def _check_nested_one_of(s):
    assert (s.probs, s.seed) == ([0.4, 0.6], 9)
    mixup, inner = s.samplers
    assert type(mixup) is samplers.MixUp and (mixup.alpha, mixup.seed) == (0.3, 1)
    assert type(inner) is samplers.OneOf and (inner.probs, inner.seed) == ([0.25, 0.75], 5)
    identity, noise = inner.samplers
    assert type(identity) is samplers.Identity and identity.seed == 2
    assert type(noise) is samplers.GaussianNoise and (noise.scale, noise.seed) == (0.2, 4)


def _check_rand_augment(s):
    assert isinstance(s.function, keras.layers.RandAugment)
    assert s.function.trainable is False
    assert s.function.num_ops == 3
    assert s.function.seed == 0
    assert tuple(s.function.value_range) == (0, 1)


# Every registered sampler's round trip is in registry_test.py; these are the
# configurations whose parts it does not reach (a nested mixture, a Keras layer).
SERIALIZATION_CASES = {
    "nested_one_of": (_nested_one_of, lambda s: _check_nested_one_of(s) is None),
    "from_callable_rand_augment": (
        lambda: samplers.FromCallable(
            keras.layers.RandAugment(value_range=(0, 1), num_ops=3, seed=0)
        ),
        lambda s: _check_rand_augment(s) is None,
    ),
}


@pytest.mark.parametrize("name", sorted(SERIALIZATION_CASES))
def test_serialization_round_trip(name):
    make, check = SERIALIZATION_CASES[name]
    original = make()
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(original)))
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is type(original)
    assert restored is not original
    assert check(original) and check(restored)
    assert json.dumps(restored.get_config(), sort_keys=True) == json.dumps(
        original.get_config(), sort_keys=True
    )
    # The seeds survive: first draws agree.
    x = np.random.default_rng(0).uniform(size=(4, 16, 16, 3)).astype("float32")
    np.testing.assert_array_equal(_np(restored(x, num_samples=2)), _np(original(x, num_samples=2)))


# tf.distribute ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["mixup", "cutmix", "gaussian_noise"])
def test_replicas_draw_different_samples(name):
    if len(tf.config.list_logical_devices("CPU")) < 2:
        pytest.skip("needs 2 logical CPU devices")
    strategy = testing.two_replicas()  # the process' one: see its docstring
    with strategy.scope():
        sampler = SEEDED[name](5)
    x = np.random.default_rng(0).uniform(size=(8, 6, 6, 2)).astype("float32")
    values = strategy.experimental_distribute_values_from_function(lambda context: tf.constant(x))

    def step(v):
        return strategy.run(lambda t: sampler(t, num_samples=2), args=(v,))

    # Eagerly, then twice in a tf.function (the seed generator advances).
    graph_step = tf.function(step)
    for run in [step, graph_step, graph_step]:
        results = strategy.experimental_local_results(run(values))
        assert len(results) == 2
        first, second = (_np(t) for t in results)
        assert first.shape == second.shape == (16, 6, 6, 2)
        _check_values(name, x, first, 2, 1e-6)
        _check_values(name, x, second, 2, 1e-6)
        assert not np.array_equal(first, second)


def test_seeds_differing_by_two_to_the_32_draw_differently():
    x = np.random.default_rng(0).random((8, 5)).astype("float32")
    first = samplers.MixUp(seed=2**32)(x)
    second = samplers.MixUp(seed=0)(x)
    assert not np.array_equal(first.numpy(), second.numpy())


def test_numpy_scalars_are_accepted_as_parameters():
    assert samplers.MixUp(alpha=np.float32(0.5)).alpha == 0.5
    assert samplers.GaussianNoise(scale=np.int64(2)).scale == 2.0
    with pytest.raises(ValueError, match="Received: alpha=np.float32"):
        samplers.MixUp(alpha=np.float32(-0.5))


# GaussianMixture: a density fitted to the training inputs.


def two_clusters(rows=2000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(rows // 2, 3)) * [1.0, 0.2, 0.2] + [3.0, 0.0, 0.0]
    b = rng.normal(size=(rows // 2, 3)) * [0.2, 1.0, 0.2] + [-3.0, 0.0, 0.0]
    return np.concatenate([a, b]).astype("float32")


def test_gaussian_mixture_fit_recovers_the_clusters_and_draws_their_moments():
    x = two_clusters()
    sampler = samplers.GaussianMixture(components=2, around_batch=False, seed=0).adapt(x)
    np.testing.assert_allclose(np.exp(sampler.log_weights.numpy()), [0.5, 0.5], atol=0.02)
    locs = sampler.locs.numpy() @ sampler.basis.numpy().T + sampler.center.numpy()
    cluster_means = [x[1000:].mean(axis=0), x[:1000].mean(axis=0)]  # the sample's own
    np.testing.assert_allclose(locs[np.argsort(locs[:, 0])], cluster_means, atol=0.02)
    draws = _np(sampler(x, num_samples=4))
    assert draws.shape == (8000, 3)
    np.testing.assert_allclose(draws.mean(axis=0), x.mean(axis=0), atol=0.15)
    np.testing.assert_allclose(np.cov(draws.T), np.cov(x.T), atol=0.15, rtol=0.05)


def test_gaussian_mixture_moves_around_anchors_within_the_kept_directions():
    x = two_clusters()
    sampler = samplers.GaussianMixture(components=2, dims=2, scale=0.5, seed=0).adapt(x)
    draws = _np(sampler(x[:4], num_samples=2000)).reshape(2000, 4, 3)
    np.testing.assert_allclose(draws.mean(axis=0), x[:4], atol=0.05)
    # Anchors of the first cluster move with half its std along its two main directions,
    np.testing.assert_allclose(draws.std(axis=0)[:, :2], [[0.5, 0.1]] * 4, rtol=0.1)
    # and hardly along the third, which the two kept directions leave out (they
    # are the first two axes up to the sampling error of the principal directions).
    np.testing.assert_allclose(draws.std(axis=0)[:, 2], 0.0, atol=0.01)


def test_gaussian_mixture_fit_saves_and_loads_with_its_weights(tmp_path):
    x = two_clusters(400)
    sampler = samplers.GaussianMixture(components=2, dims=2, seed=3).adapt(x)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.sampler = sampler  # tracked: its weights go into the file
    model.save_weights(tmp_path / "m.weights.h5")
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    fresh.sampler = samplers.GaussianMixture(components=2, dims=2, seed=3)
    fresh.sampler.build((None, 3))
    fresh.load_weights(tmp_path / "m.weights.h5")
    for a, b in zip(fresh.sampler.get_weights(), sampler.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_gaussian_mixture_needs_adapt_and_valid_arguments():
    with pytest.raises(ValueError, match="is not fitted: call `adapt"):
        samplers.GaussianMixture(components=2)(np.zeros((4, 3), "float32"))
    with pytest.raises(ValueError, match="`dims` must be at most the 3 input features"):
        samplers.GaussianMixture(dims=5).adapt(two_clusters(40))
    with pytest.raises(ValueError, match="at least components=10 finite rows"):
        samplers.GaussianMixture(components=10).adapt(two_clusters(4))
    with pytest.raises(ValueError, match="`components` must be an integer >= 1"):
        samplers.GaussianMixture(components=0)
