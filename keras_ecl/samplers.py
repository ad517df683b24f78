"""Samplers: extracurricular inputs drawn around the current batch.

A sampler approximates the data distribution near a batch and draws
`num_samples` new inputs per real input (mixup, CutMix, a Gaussian kernel
density estimate, a mixture of these, or any callable). Draws come from
`tensorflow_probability` distributions seeded by a tracked
`keras.random.SeedGenerator`, folded with the replica id under `tf.distribute`,
so a seed reproduces a run: eager and `tf.function` draw the same values, and
XLA (`jit_compile=True`) draws its own stream, reproducibly.

Output `j * batch_size + i` is always derived from real input `i` (its anchor),
and the output has the input's trailing shape and dtype.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from keras_ecl.registry import Registry
from keras_ecl.utils import check_integer, check_positive, check_seed, to_tensor

__all__ = [
    "CutMix",
    "FromCallable",
    "GaussianMixture",
    "GaussianNoise",
    "Identity",
    "MixUp",
    "OneOf",
    "Sampler",
    "default_sampler",
    "get",
    "register",
]

tfd = tfp.distributions


def _tile(x, num_samples):
    """Repeats the batch `num_samples` times along axis 0."""
    return tf.tile(x, [num_samples] + [1] * (x.shape.rank - 1))


def _broadcast_per_example(values, like):
    """Reshapes a `(batch,)` vector to broadcast against `like`."""
    return tf.reshape(tf.cast(values, like.dtype), [-1] + [1] * (like.shape.rank - 1))


class Sampler(keras.layers.Layer):
    """Base class of samplers: `sampler(x, num_samples=k)` returns `k * batch` inputs.

    Subclasses implement `sample(x, num_samples, seed)` with stateless draws
    from `seed` (an int32 tensor of shape `(2,)`). A call may pass its own
    `seed` (shape `(2,)`) to draw reproducibly without advancing the
    generator; the Distiller does so when evaluating. The base class checks the
    input, draws a fresh per-replica seed and checks the output shape/dtype.

    Args:
        seed: Integer seed of the sampler's `keras.random.SeedGenerator`.
            Defaults to None (a random seed).
        **kwargs: Forwarded to `keras.layers.Layer`.
    """

    # Mixing samplers average inputs, which only makes sense for floats.
    requires_float = True

    def __init__(self, seed=None, **kwargs):
        check_seed(seed)
        seed = None if seed is None else int(seed)
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, num_samples=1, seed=None):
        check_integer("num_samples", num_samples, 1)
        x = to_tensor(
            inputs,
            f"Sampler {self.name!r} takes a tensor or array. Received: {type(inputs).__name__}",
        )
        self.check_input(x)
        seed = self.next_seed() if seed is None else self.replica_seed(_check_seed(seed))
        outputs = self.sample(x, num_samples, seed)
        expected = tf.TensorShape(
            [None if x.shape[0] is None else x.shape[0] * num_samples]
        ).concatenate(x.shape[1:])
        if not expected.is_compatible_with(outputs.shape) or outputs.dtype != x.dtype:
            raise ValueError(
                f"Sampler {self.name!r} must return inputs shaped like its input "
                f"repeated num_samples={num_samples} times. Expected: "
                f"shape={tuple(expected)}, dtype={x.dtype.name}. Received: "
                f"shape={tuple(outputs.shape)}, dtype={outputs.dtype.name}"
            )
        if outputs.shape.merge_with(expected) != outputs.shape:
            # A callable that lost the static shape (e.g. tf.py_function): restore it,
            # checked at run time, so that the models downstream can be called on it.
            outputs = tf.ensure_shape(outputs, expected)
        return outputs

    def sample(self, x, num_samples, seed):
        raise NotImplementedError

    def check_input(self, x):
        """Raises a clear error if `x` cannot be sampled from."""
        if x.shape.rank is None or x.shape.rank < 2:
            raise ValueError(
                f"Sampler {self.name!r} expects a batch of shape (batch, ...) with "
                f"rank >= 2. Received: shape={tuple(x.shape)}"
            )
        if self.requires_float and not x.dtype.is_floating:
            raise TypeError(
                f"Sampler {self.name!r} mixes inputs and needs a floating-point "
                f"input. Received: dtype={x.dtype.name}. Cast the inputs to "
                "float32 or wrap an integer-aware generator in FromCallable."
            )

    def next_seed(self):
        """A fresh stateless seed from the generator, different on every replica."""
        return self.replica_seed(self.seed_generator.next())

    @staticmethod
    def replica_seed(seed):
        """Hashes `seed` (shape `(2,)`) to int32 and folds in the replica id."""
        # A cast to int32 would drop the high bits of an int64 state.
        seed = tf.random.stateless_uniform([2], seed, minval=None, maxval=None, dtype=tf.int32)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # SeedGenerator.next() gives every replica the same state.
            replica_id = tf.cast(context.replica_id_in_sync_group, tf.int32)
            seed = tf.random.experimental.stateless_fold_in(seed, replica_id)
        return seed

    def get_config(self):
        config = super().get_config()
        config["seed"] = self.seed
        return config


# Samplers by short name: what `get()` resolves, Keras deserializes and the tests cover.
SAMPLERS = Registry("sampler", Sampler)
register = SAMPLERS.register


def _check_seed(seed):
    """Returns a call's `seed` as a tensor after checking it is two integers (static)."""
    seed = to_tensor(seed, f"`seed` must be two integers, shape (2,). Received: seed={seed!r}")
    if not seed.dtype.is_integer or not seed.shape.is_compatible_with([2]):
        raise ValueError(
            "`seed` must be two integers, shape (2,). Received: "
            f"shape={tuple(seed.shape)}, dtype={seed.dtype.name}"
        )
    return seed


def _partners(batch_size, total, seed):
    """Indices of a partner for each of `total` anchors, never the anchor itself."""
    anchors = tf.range(total) % batch_size
    offsets = tf.random.stateless_uniform(
        [total], seed, minval=1, maxval=tf.maximum(batch_size, 2), dtype=tf.int32
    )
    return (anchors + offsets) % batch_size


@SAMPLERS.register("mixup")
class MixUp(Sampler):
    """Convex combinations of pairs of inputs: `lam * x_i + (1 - lam) * x_j`.

    `lam ~ tfd.Beta(alpha, alpha)` per synthetic input and `j` is another
    input of the batch drawn uniformly. Works for inputs of any rank >= 2
    (tabular, signals, images).

    Args:
        alpha: Concentration of the symmetric Beta, > 0. Small values keep
            samples near the data, `alpha=1` is uniform. Defaults to 1.0.
        seed: Integer seed. Defaults to None.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    sampler = keras_ecl.samplers.MixUp(alpha=0.4, seed=0)
    synthetic = sampler(np.random.rand(8, 40).astype("float32"), num_samples=2)
    synthetic.shape  # (16, 40)
    ```

    References:
        - [Zhang et al., 2018](https://arxiv.org/abs/1710.09412)
    """

    def __init__(self, alpha=1.0, seed=None, **kwargs):
        check_positive("alpha", alpha)
        super().__init__(seed=seed, **kwargs)
        self.alpha = float(alpha)

    def sample(self, x, num_samples, seed):
        batch_size = tf.shape(x)[0]
        total = batch_size * num_samples
        lam_seed, partner_seed = tfp.random.split_seed(seed, n=2)
        lam = tfd.Beta(self.alpha, self.alpha).sample(total, seed=lam_seed)
        anchors = _tile(x, num_samples)
        partners = tf.gather(x, _partners(batch_size, total, partner_seed))
        lam = _broadcast_per_example(lam, x)
        return lam * anchors + (1.0 - lam) * partners

    def get_config(self):
        config = super().get_config()
        config["alpha"] = self.alpha
        return config


@SAMPLERS.register("cutmix")
class CutMix(Sampler):
    """Pastes a box of another input into each input.

    For `(batch, height, width, channels)` images the box covers a fraction
    `1 - lam` of the image, `lam ~ tfd.Beta(alpha, alpha)`; its position is
    `tfd.Uniform` with the box kept inside the image, so the pasted area is
    exactly `1 - lam` up to rounding. All axes between batch and channels are
    cut (rank 3 inputs are `(batch, length, channels)` signals); a rank 2 input
    `(batch, features)` is treated as one signal and a segment of it is cut.

    Args:
        alpha: Concentration of the symmetric Beta, > 0. Defaults to 1.0.
        seed: Integer seed. Defaults to None.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    sampler = keras_ecl.samplers.CutMix(seed=0)
    images = np.random.rand(4, 8, 8, 1).astype("float32")
    sampler(images, num_samples=1).shape  # (4, 8, 8, 1)
    ```

    References:
        - [Yun et al., 2019](https://arxiv.org/abs/1905.04899)
    """

    def __init__(self, alpha=1.0, seed=None, **kwargs):
        check_positive("alpha", alpha)
        super().__init__(seed=seed, **kwargs)
        self.alpha = float(alpha)

    def sample(self, x, num_samples, seed):
        rank = x.shape.rank
        axes = [1] if rank == 2 else list(range(1, rank - 1))
        batch_size = tf.shape(x)[0]
        total = batch_size * num_samples
        lam_seed, box_seed, partner_seed = tfp.random.split_seed(seed, n=3)
        lam = tfd.Beta(self.alpha, self.alpha).sample(total, seed=lam_seed)
        # Equal side fractions whose product is the pasted area 1 - lam.
        side = tf.pow(1.0 - lam, 1.0 / len(axes))
        position = tfd.Uniform(0.0, 1.0).sample([total, len(axes)], seed=box_seed)
        mask = None
        for i, axis in enumerate(axes):
            length = tf.shape(x)[axis]
            length_f = tf.cast(length, tf.float32)
            cut = tf.cast(tf.round(side * length_f), tf.int32)
            start = tf.cast(
                tf.floor(position[:, i] * tf.cast(length - cut + 1, tf.float32)),
                tf.int32,
            )
            start = tf.minimum(start, length - cut)
            index = tf.range(length)[None, :]
            inside = (index >= start[:, None]) & (index < (start + cut)[:, None])
            shape = [-1] + [1] * (rank - 1)
            shape[axis] = length
            inside = tf.reshape(inside, shape)
            mask = inside if mask is None else mask & inside
        anchors = _tile(x, num_samples)
        partners = tf.gather(x, _partners(batch_size, total, partner_seed))
        return tf.where(mask, partners, anchors)

    def get_config(self):
        config = super().get_config()
        config["alpha"] = self.alpha
        return config


@SAMPLERS.register("gaussian_noise")
class GaussianNoise(Sampler):
    """Gaussian kernel density estimate around the batch: `x_i + scale * eps`.

    Each synthetic input picks its anchor `x_i` and adds `tfd.Normal(0, scale)`
    noise, i.e. it is a draw from a KDE with bandwidth `scale` centred on the
    batch. `scale` is in input units: standardise inputs first, or choose it
    per data set on a validation split.

    Args:
        scale: Standard deviation of the kernel, > 0. Defaults to 0.1.
        seed: Integer seed. Defaults to None.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    sampler = keras_ecl.samplers.GaussianNoise(scale=0.3, seed=0)
    sampler(np.zeros((4, 40), "float32"), num_samples=3).shape  # (12, 40)
    ```
    """

    def __init__(self, scale=0.1, seed=None, **kwargs):
        check_positive("scale", scale)
        super().__init__(seed=seed, **kwargs)
        self.scale = float(scale)

    def sample(self, x, num_samples, seed):
        anchors = _tile(x, num_samples)
        noise = tfd.Normal(0.0, self.scale).sample(tf.shape(anchors), seed=seed)
        return anchors + tf.cast(noise, x.dtype)

    def get_config(self):
        config = super().get_config()
        config["scale"] = self.scale
        return config


@SAMPLERS.register("identity")
class Identity(Sampler):
    """Returns the real batch unchanged, repeated `num_samples` times.

    A control: "extracurricular" training with this sampler changes only the
    loss weighting, not the inputs, so a gain over it is due to new samples.

    Example:

    ```python
    keras_ecl.samplers.Identity()(np.ones((2, 3), "float32"), num_samples=2)
    ```
    """

    requires_float = False

    def sample(self, x, num_samples, seed):
        return _tile(x, num_samples)


@SAMPLERS.register(example=lambda: OneOf([MixUp(), GaussianNoise(scale=0.3)]))
class OneOf(Sampler):
    """A mixture of samplers: each synthetic input comes from one of them.

    The component is drawn per synthetic input from
    `tfd.Categorical(probs=probs)`. Every component runs on the whole batch
    (static shapes for XLA/TPU) and the choice selects among their outputs.
    The mixture's seed drives its components' draws too (their own seeds are
    not used inside a `OneOf`).

    Args:
        samplers: A non-empty list of `Sampler`s.
        probs: Mixture probabilities, one per sampler, summing to 1.
            Defaults to None (uniform).
        seed: Integer seed of the component choice. Defaults to None.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    sampler = keras_ecl.samplers.OneOf(
        [keras_ecl.samplers.MixUp(), keras_ecl.samplers.GaussianNoise(0.3)],
        probs=[0.7, 0.3],
    )
    ```
    """

    def __init__(self, samplers, probs=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        samplers = list(samplers) if isinstance(samplers, (list, tuple)) else samplers
        if (
            not isinstance(samplers, list)
            or not samplers
            or not all(isinstance(s, Sampler) for s in samplers)
        ):
            raise ValueError(
                "`samplers` must be a non-empty list of keras_ecl.samplers.Sampler. "
                f"Received: samplers={samplers!r}"
            )
        if probs is not None:
            message = (
                f"`probs` must be {len(samplers)} non-negative numbers summing to 1. "
                f"Received: probs={probs!r}"
            )
            try:
                probs = [float(p) for p in probs] if not isinstance(probs, str) else None
            except (TypeError, ValueError) as error:
                raise ValueError(message) from error
            if (
                probs is None
                or len(probs) != len(samplers)
                or not all(math.isfinite(p) and p >= 0 for p in probs)
                or abs(sum(probs) - 1.0) > 1e-6
            ):
                raise ValueError(message)
        self.samplers = samplers
        self.probs = probs
        self.requires_float = any(s.requires_float for s in samplers)

    def sample(self, x, num_samples, seed):
        # One seed drives the whole mixture, so a seeded draw repeats exactly.
        seed, *component_seeds = tfp.random.split_seed(seed, n=len(self.samplers) + 1)
        outputs = tf.stack(
            [
                s(x, num_samples=num_samples, seed=s_seed)
                for s, s_seed in zip(self.samplers, component_seeds, strict=True)
            ],
            axis=1,
        )
        probs = self.probs or [1.0 / len(self.samplers)] * len(self.samplers)
        choice = tfd.Categorical(probs=probs).sample(tf.shape(outputs)[0], seed=seed)
        return tf.gather(outputs, choice, axis=1, batch_dims=1)

    def get_config(self):
        config = super().get_config()
        config["samplers"] = [keras.saving.serialize_keras_object(s) for s in self.samplers]
        config["probs"] = self.probs
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["samplers"] = [keras.saving.deserialize_keras_object(s) for s in config["samplers"]]
        return cls(**config)


@SAMPLERS.register(example=lambda: GaussianMixture(components=2, dims=3))
class GaussianMixture(Sampler):
    """Draws from a Gaussian mixture fitted to the training inputs, in PCA space.

    `adapt(data)` fits it, as Keras preprocessing layers adapt: the inputs are
    flattened, projected on their `dims` principal directions, and a mixture
    of `components` full-covariance Gaussians is fitted there by EM (k-means++
    start). The fit is stored in the layer's weights, so it saves and loads
    with a model. Two ways to draw:

    - `around_batch=True`: each synthetic input starts from its anchor's
      projection and moves by `scale` times a draw of the anchor's most likely
      component's covariance (a kernel density estimate shaped like the data
      there); what lies outside the `dims` directions is kept from the anchor.
    - `around_batch=False`: fresh draws from the whole mixture (the anchor is
      ignored), mapped back to input space.

    Args:
        components: Mixture components, an integer >= 1. Defaults to 10.
        dims: Principal directions kept, an integer >= 1, at most the number
            of input features. Defaults to None: all features.
        around_batch: Draw around each anchor rather than from the whole fit.
            Defaults to True.
        scale: Size of the moves around anchors in units of the component's
            standard deviations, > 0. Defaults to 0.5.
        seed: Integer seed of the draws (and of the fit's start). Defaults to None.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    sampler = keras_ecl.samplers.GaussianMixture(components=10, dims=16)
    sampler.adapt(x_train)
    distiller = keras_ecl.Distiller(student, teacher, sampler=sampler)
    ```
    """

    def __init__(self, components=10, dims=None, around_batch=True, scale=0.5, seed=None, **kwargs):
        check_integer("components", components, 1)
        if dims is not None:
            check_integer("dims", dims, 1)
        check_positive("scale", scale)
        if not isinstance(around_batch, bool):
            raise ValueError(
                f"`around_batch` must be True or False. Received: around_batch={around_batch!r}"
            )
        super().__init__(seed=seed, **kwargs)
        self.components = int(components)
        self.dims = None if dims is None else int(dims)
        self.around_batch = around_batch
        self.scale = float(scale)

    def build(self, input_shape):
        features = math.prod(input_shape[1:])
        dims = features if self.dims is None else self.dims
        if dims > features:
            raise ValueError(
                f"`dims` must be at most the {features} input features. Received: dims={dims}"
            )
        k = self.components

        def weight(name, shape):
            return self.add_weight(name=name, shape=shape, initializer="zeros", trainable=False)

        self.center = weight("center", (features,))
        self.basis = weight("basis", (features, dims))
        self.log_weights = weight("log_weights", (k,))
        self.locs = weight("locs", (k, dims))
        self.scale_trils = weight("scale_trils", (k, dims, dims))
        self.adapted = weight("adapted", ())

    def adapt(self, data, steps=100):
        """Fits the mixture to `data` (an array of inputs); returns the sampler.

        Args:
            data: Training inputs, shape `(rows, ...)` as the sampler will see them.
            steps: EM iterations. Defaults to 100.
        """
        check_integer("steps", steps, 1)
        flat = np.asarray(data, np.float64).reshape(len(data), -1)
        if len(flat) < self.components or not np.all(np.isfinite(flat)):
            raise ValueError(
                f"`data` must hold at least components={self.components} finite rows. "
                f"Received: shape={np.shape(data)}"
            )
        if not self.built:
            self.build((None, *np.shape(data)[1:]))
        center = flat.mean(axis=0)
        _, _, directions = np.linalg.svd(flat - center, full_matrices=False)
        basis = directions[: self.basis.shape[1]].T
        projected = (flat - center) @ basis
        # The start follows the seed, or Keras' global seed through the generator.
        start = self.seed
        if start is None:
            start = int(keras.random.randint([], 0, 2**31 - 1, seed=self.seed_generator))
        log_weights, locs, covariances = _fit_mixture(
            projected, self.components, steps, np.random.default_rng(start)
        )
        for variable, value in (
            (self.center, center),
            (self.basis, basis),
            (self.log_weights, log_weights),
            (self.locs, locs),
            (self.scale_trils, np.linalg.cholesky(covariances)),
            (self.adapted, 1.0),
        ):
            variable.assign(np.asarray(value, "float32"))
        return self

    def sample(self, x, num_samples, seed):
        if not self.built or float(self.adapted.numpy() if tf.executing_eagerly() else 1.0) == 0:
            raise ValueError(
                f"Sampler {self.name!r} is not fitted: call `adapt(training_inputs)` first."
            )
        flat = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
        anchors = _tile(flat, num_samples)
        total = tf.shape(anchors)[0]
        normal = tfd.MultivariateNormalTriL(loc=self.locs, scale_tril=self.scale_trils)
        if self.around_batch:
            projected = tf.matmul(anchors - self.center, self.basis)
            # The anchor's most likely component shapes the move around it.
            log_joint = normal.log_prob(projected[:, None, :]) + self.log_weights
            component = tf.argmax(log_joint, axis=-1, output_type=tf.int32)
            noise = tfd.Normal(0.0, 1.0).sample(tf.shape(projected), seed=seed)
            tril = tf.gather(self.scale_trils, component)
            moved = projected + self.scale * tf.linalg.matvec(tril, noise)
            # What lies outside the kept directions stays the anchor's.
            outputs = anchors + tf.matmul(moved - projected, self.basis, transpose_b=True)
        else:
            mixture = tfd.MixtureSameFamily(tfd.Categorical(logits=self.log_weights), normal)
            drawn = mixture.sample(total, seed=seed)
            outputs = self.center + tf.matmul(drawn, self.basis, transpose_b=True)
        return tf.cast(tf.reshape(outputs, tf.concat([[total], tf.shape(x)[1:]], 0)), x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "components": self.components,
                "dims": self.dims,
                "around_batch": self.around_batch,
                "scale": self.scale,
            }
        )
        return config


def _fit_mixture(points, components, steps, rng):
    """EM for a full-covariance Gaussian mixture; `(log weights, means, covariances)`."""
    n, d = points.shape
    # k-means++ start: spread the first means over the data.
    means = [points[rng.integers(n)]]
    for _ in range(components - 1):
        distance = np.min([np.sum((points - m) ** 2, axis=1) for m in means], axis=0)
        means.append(points[rng.choice(n, p=distance / distance.sum())])
    means = np.array(means)
    ridge = 1e-6 * np.trace(np.cov(points.T).reshape(d, d)) / d + 1e-9
    covariances = np.repeat(np.cov(points.T).reshape(1, d, d), components, axis=0)
    covariances += ridge * np.eye(d)
    log_weights = np.full(components, -np.log(components))
    for _ in range(steps):
        log_resp = (
            np.stack(
                [
                    _gaussian_log_density(points, m, c)
                    for m, c in zip(means, covariances, strict=True)
                ],
                axis=1,
            )
            + log_weights
        )
        log_resp -= _logsumexp(log_resp)
        resp = np.exp(log_resp)
        counts = resp.sum(axis=0) + 1e-12
        log_weights = np.log(counts / n)
        means = resp.T @ points / counts[:, None]
        for j in range(components):
            centred = points - means[j]
            covariances[j] = (resp[:, j, None] * centred).T @ centred / counts[j]
            covariances[j] += ridge * np.eye(d)
    return log_weights, means, covariances


def _gaussian_log_density(points, mean, covariance):
    tril = np.linalg.cholesky(covariance)
    solved = np.linalg.solve(tril, (points - mean).T)
    return (
        -0.5 * np.sum(solved**2, axis=0)
        - np.log(np.diag(tril)).sum()
        - 0.5 * len(mean) * np.log(2 * np.pi)
    )


def _logsumexp(values):
    top = values.max(axis=1, keepdims=True)
    return top + np.log(np.exp(values - top).sum(axis=1, keepdims=True))


@SAMPLERS.register(example=lambda: FromCallable(keras.layers.GaussianNoise(0.1)))
class FromCallable(Sampler):
    """Wraps a Keras layer, model or function as a sampler.

    The batch is repeated `num_samples` times and passed through `function`:
    an augmentation layer (`keras.layers.RandAugment`, `keras.layers.AugMix`),
    or a generator network that maps inputs to new
    inputs. Keras layers are called with `training=True` and kept frozen. The
    output must keep the input's shape and dtype.

    Args:
        function: A `keras.layers.Layer` or a callable `x -> x_new`.
        seed: Unused by the wrapper itself (layers carry their own seeds);
            kept for a uniform signature. Defaults to None.
        **kwargs: Forwarded to `keras.layers.Layer`.

    Example:

    ```python
    augment = keras.layers.RandAugment(value_range=(0, 1), seed=0)
    sampler = keras_ecl.samplers.FromCallable(augment)
    ```
    """

    requires_float = False

    def __init__(self, function, seed=None, **kwargs):
        if not callable(function):
            raise ValueError(
                f"`function` must be a Keras layer or a callable. Received: function={function!r}"
            )
        super().__init__(seed=seed, **kwargs)
        self.function = function
        if isinstance(function, keras.layers.Layer):
            function.trainable = False

    def sample(self, x, num_samples, seed):
        anchors = _tile(x, num_samples)
        if isinstance(self.function, keras.layers.Layer):
            outputs = self.function(anchors, training=True)
        else:
            outputs = self.function(anchors)
        return tf.convert_to_tensor(outputs)

    def get_config(self):
        config = super().get_config()
        config["function"] = keras.saving.serialize_keras_object(self.function)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["function"] = keras.saving.deserialize_keras_object(config["function"])
        return cls(**config)


def default_sampler(seed=None):
    """The sampler of `keras_ecl.Distiller`'s default recipe: `OneOf([MixUp, CutMix])`.

    Both parts are free of scale (they recombine real inputs), so the default
    needs no tuning to the data's units; they work on inputs of any rank
    (feature vectors, signals, images). Chosen on validation splits, see
    BENCHMARKS.md, "Choosing ECL's recipe".

    Args:
        seed: Integer seed of the mixture (it drives its parts). Defaults to None.

    Returns:
        A `OneOf` of `MixUp(alpha=1.0)` and `CutMix(alpha=1.0)`, equally likely.

    Example:

    ```python
    sampler = keras_ecl.samplers.default_sampler(seed=0)
    sampler(np.random.rand(8, 40).astype("float32")).shape  # (8, 40)
    ```
    """
    return OneOf([MixUp(alpha=1.0), CutMix(alpha=1.0)], seed=seed)


def get(identifier):
    """Returns a sampler from an instance, a name or a serialized config.

    Args:
        identifier: A `Sampler`, one of `"mixup"`, `"cutmix"`,
            `"gaussian_noise"`, `"identity"`, or a serialized dict.

    Returns:
        A `Sampler`.

    Raises:
        ValueError: If `identifier` names no sampler.

    Example:

    ```python
    keras_ecl.samplers.get("cutmix")  # CutMix(alpha=1.0)
    ```
    """
    return SAMPLERS.get(identifier)
