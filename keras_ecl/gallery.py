"""Pictures of what the sampler draws: `SampleGallery`.

A user choosing a sampler cannot see its draws in a loss curve. Every few
epochs the callback draws extracurricular inputs around a fixed batch (a fixed
seed, so epochs compare), runs the teacher on them and writes one picture: an
image grid for images, line plots for 1-D signals, or a 2-D PCA projection of
real and synthetic feature vectors coloured by the teacher's entropy. PNGs go
to a folder; with a TensorBoard `log_dir` the same pictures become image
summaries.

What to look for: draws that look like the real inputs and on which the
teacher is as sure as on real data teach little beyond the data; draws nothing
like the data (noise, broken images) teach noise; useful draws sit in between,
recognisable, with a teacher less sure of them than of real inputs.
"""

import io
import os

import keras
import numpy as np
import tensorflow as tf

from keras_ecl import _atomic
from keras_ecl import heads as heads_lib
from keras_ecl.utils import as_numeric_array, check_integer, check_path

__all__ = ["SampleGallery"]

KINDS = ("auto", "images", "signals", "features")
_GALLERY_SEED = (20, 7)  # fixed: each picture shows the same draws of the sampler


class SampleGallery(keras.callbacks.Callback):
    """Writes a picture of the extracurricular inputs every `every` epochs.

    Args:
        x: A fixed batch of real inputs (an array, batch first) to draw around.
            Its first `anchors` rows are used.
        folder: Directory for the PNGs (`gallery_epoch_<n>.png`); created if
            missing.
        every: Epochs between two pictures, >= 1. Defaults to 1.
        anchors: Real inputs shown, >= 1. Defaults to 8.
        samples: Synthetic inputs drawn per real input, >= 1. Defaults to 2.
        kind: `"images"` (rank-4 NHWC: a grid), `"signals"` (rank 2 or 3: a
            line per input), `"features"` (rank 2: PCA of real vs synthetic,
            coloured by the teacher's entropy), or `"auto"`: images for rank 4,
            signals for rank 3, features for rank 2. Defaults to "auto".
        log_dir: A TensorBoard log directory for image summaries, or None.
            Defaults to None.

    Raises:
        ValueError: For a bad `every`, `anchors`, `samples` or `kind`, an `x`
            whose rank does not fit `kind`, a `folder` or `log_dir` that cannot
            be written (a file, or in a read-only directory), or (when training
            starts) a model that is not an ECL `keras_ecl.Distiller`.
        TypeError: If `x` does not hold numbers.

    Example:

    ```python
    gallery = keras_ecl.callbacks.SampleGallery(x_val[:8], "gallery", every=5)
    distiller.fit(x, y, epochs=20, callbacks=[gallery])  # gallery/gallery_epoch_005.png ...
    ```
    """

    def __init__(self, x, folder, every=1, anchors=8, samples=2, kind="auto", log_dir=None):
        super().__init__()
        check_integer("every", every, 1)
        check_integer("anchors", anchors, 1)
        check_integer("samples", samples, 1)
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}. Received: kind={kind!r}")
        check_path("folder", folder, directory=True, inside=True)
        if log_dir is not None:
            check_path("log_dir", log_dir, directory=True, inside=True)
        x = as_numeric_array(x, "x")
        if x.ndim < 2 or len(x) == 0:
            raise ValueError(
                "`x` must be a non-empty batch of inputs, shape (batch, ...). Received: "
                f"shape={x.shape}"
            )
        if kind == "auto":
            kind = {2: "features", 3: "signals", 4: "images"}.get(x.ndim)
            if kind is None:
                raise ValueError(
                    f"`kind='auto'` knows inputs of rank 2, 3 or 4. Received: shape={x.shape}. "
                    "Pass kind='images', 'signals' or 'features'."
                )
        rank = {"images": (4,), "signals": (2, 3), "features": (2,)}[kind]
        if x.ndim not in rank:
            raise ValueError(
                f"kind={kind!r} needs inputs of rank {' or '.join(map(str, rank))}. "
                f"Received: shape={x.shape}"
            )
        self.x = x[:anchors]
        self.folder = os.fspath(folder)
        self.every, self.samples, self.kind = int(every), int(samples), kind
        self.log_dir = log_dir
        self.paths = []
        self._writer = None

    def on_train_begin(self, logs=None):
        model = self.model
        if not getattr(model, "uses_extracurricular", False):
            mode = getattr(model, "mode", None)
            raise ValueError(
                "SampleGallery pictures the extracurricular inputs of a "
                "keras_ecl.Distiller with mode='ecl'. Received: "
                f"{type(model).__name__}" + ("" if mode is None else f" with mode={mode!r}")
            )
        if isinstance(model.head, heads_lib.MultiOutput):
            raise ValueError(
                "SampleGallery captions each draw with one output's verdict (class "
                "probabilities, or loc and scale); a multi-output Distiller has several. "
                f"Received: head={model.head!r}"
            )
        os.makedirs(self.folder, exist_ok=True)
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(os.fspath(self.log_dir))

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self.write(epoch + 1)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def write(self, epoch):
        """Draws, pictures and writes the gallery of `epoch`; returns the PNG's path."""
        real, synthetic, teacher = self.draw()
        figure = _FIGURES[self.kind](real, synthetic, teacher, self.samples)
        png = _png(figure)
        path = os.path.join(self.folder, f"gallery_epoch_{epoch:03d}.png")
        _atomic.write_bytes(path, png)
        self.paths.append(path)
        if self._writer is not None:
            with self._writer.as_default():
                image = tf.image.decode_png(png, channels=4)[None]
                tf.summary.image("extracurricular_samples", image, step=epoch)
        return path

    def draw(self):
        """`(real, synthetic, teacher)`: the inputs as arrays, and what the teacher says.

        `teacher` holds, for the real rows then the synthetic ones, `"entropy"`
        (at the head's distillation temperature: what the student is taught)
        and the head's serving outputs (`probabilities` at temperature 1, or
        `loc`/`scale`).
        """
        distiller = self.model
        x = tf.convert_to_tensor(self.x)
        seed = tf.constant(_GALLERY_SEED, tf.int32)
        synthetic = distiller.sampler(x, num_samples=self.samples, seed=seed)
        both = tf.concat([x, tf.cast(synthetic, x.dtype)], axis=0)
        outputs = distiller.teacher(both, training=False)
        head = distiller.teacher_head
        said = {k: np.asarray(v) for k, v in head.serving_outputs(outputs).items()}
        said["entropy"] = np.asarray(head.uncertainty(outputs, "entropy"))
        return np.asarray(x), np.asarray(synthetic), said


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "SampleGallery draws its pictures with matplotlib: `pip install matplotlib`."
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _caption(teacher, row):
    """What the teacher says about input `row`, in a few characters."""
    if "probabilities" in teacher:
        probs = teacher["probabilities"][row]
        top = int(np.argmax(probs))
        return f"{top}: p={probs[top]:.2f} H={teacher['entropy'][row]:.2f}"
    loc, scale = np.ravel(teacher["loc"][row]), np.ravel(teacher["scale"][row])
    return f"μ={loc[0]:.2f} σ={scale[0]:.2f}"


def _images(real, synthetic, teacher, samples):
    """Columns: a real image, then its draws; the teacher's verdict under each."""
    plt = _pyplot()
    anchors = len(real)
    figure, axes = plt.subplots(
        1 + samples, anchors, figsize=(1.7 * anchors, 1.9 * (1 + samples)), squeeze=False
    )
    low, high = min(real.min(), synthetic.min()), max(real.max(), synthetic.max())
    for column in range(anchors):
        rows = [column] + [anchors + s * anchors + column for s in range(samples)]
        pictures = [real[column]] + [synthetic[s * anchors + column] for s in range(samples)]
        for line, (row, picture) in enumerate(zip(rows, pictures, strict=True)):
            axis = axes[line, column]
            picture = (picture - low) / (high - low + 1e-12)
            axis.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray")
            axis.set_title(_caption(teacher, row), fontsize=7)
            axis.set_xticks([])
            axis.set_yticks([])
        axes[0, column].set_ylabel("real" if column == 0 else "", fontsize=8)
    for s in range(samples):
        axes[1 + s, 0].set_ylabel(f"draw {s + 1}", fontsize=8)
    figure.suptitle("Real inputs (top) and the sampler's draws around them", fontsize=9)
    return figure


def _signals(real, synthetic, teacher, samples):
    """One panel per real signal: it in black, its draws in colour; the teacher's
    verdict on each in the legend."""
    plt = _pyplot()
    anchors = len(real)
    columns = min(anchors, 2)
    rows = -(-anchors // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3 * rows), squeeze=False)
    for index in range(rows * columns):
        axis = axes.flat[index]
        if index >= anchors:
            axis.axis("off")
            continue
        signal = real[index].reshape(len(real[index]), -1)
        axis.plot(signal, color="k", linewidth=1.6, label=f"real: {_caption(teacher, index)}")
        for s in range(samples):
            row = s * anchors + index
            axis.plot(
                synthetic[row].reshape(len(signal), -1),
                linewidth=1.0,
                label=f"draw {s + 1}: {_caption(teacher, anchors + row)}",
            )
        axis.legend(fontsize=8, loc="best", framealpha=0.8)
        axis.set_xticks([])
    figure.suptitle(
        "Real signals (black) and the sampler's draws around them; legend: teacher's top "
        "class: probability, entropy",
        fontsize=10,
    )
    return figure


def _features(real, synthetic, teacher, samples):
    """PCA of real and synthetic vectors; draws coloured by the teacher's entropy."""
    plt = _pyplot()
    both = np.concatenate([real, synthetic]).reshape(len(real) + len(synthetic), -1)
    centred = both - both.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    if projected.shape[1] == 1:
        projected = np.concatenate([projected, np.zeros_like(projected)], axis=1)
    entropy = teacher["entropy"]
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    drawn = axis.scatter(
        projected[len(real) :, 0],
        projected[len(real) :, 1],
        c=entropy[len(real) :],
        cmap="viridis",
        s=18,
        label="draws",
    )
    axis.scatter(
        projected[: len(real), 0], projected[: len(real), 1], c="k", marker="x", s=40, label="real"
    )
    figure.colorbar(drawn, ax=axis, label="teacher entropy")
    axis.set_xlabel("PC 1")
    axis.set_ylabel("PC 2")
    axis.legend(fontsize=8)
    axis.set_title("Real inputs and draws, PCA of both", fontsize=9)
    return figure


_FIGURES = {"images": _images, "signals": _signals, "features": _features}


def _png(figure):
    """The figure as PNG bytes (100 dpi); closes it."""
    plt = _pyplot()
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
