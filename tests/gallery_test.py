"""`SampleGallery`: PNGs on disk and image summaries in TensorBoard, for each kind of input."""

import glob

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_ecl
from keras_ecl import samplers
from tests import testing

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def image_distiller():
    def model(units):
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Flatten(),
                keras.layers.Dense(units),
                keras.layers.Dense(3),
            ]
        )

    distiller = keras_ecl.Distiller(
        model(4), model(16), sampler=samplers.CutMix(seed=0), updates_per_batch=1
    )
    distiller.compile(optimizer="adam")
    return distiller


def test_images_are_written_as_pngs_and_tensorboard_images(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 32)
    gallery = keras_ecl.callbacks.SampleGallery(
        x, tmp_path / "gallery", every=2, anchors=4, samples=2, log_dir=tmp_path / "logs"
    )
    image_distiller().fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[gallery])
    assert [p.rsplit("/", 1)[1] for p in gallery.paths] == [
        "gallery_epoch_002.png",
        "gallery_epoch_004.png",
    ]
    for path in gallery.paths:
        with open(path, "rb") as file:
            assert file.read(8) == PNG_SIGNATURE
    steps = []
    for events in glob.glob(str(tmp_path / "logs" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(events):
            for value in event.summary.value:
                if value.tag == "extracurricular_samples":
                    steps.append(event.step)
                    image = tf.make_ndarray(value.tensor)  # [width, height, png bytes]
                    assert image[2].startswith(PNG_SIGNATURE)
    assert sorted(steps) == [2, 4]


def test_what_the_gallery_draws_is_what_the_teacher_sees(tmp_path):
    distiller = image_distiller()
    x = np.random.default_rng(1).normal(size=(6, 8, 8, 1)).astype("float32")
    gallery = keras_ecl.callbacks.SampleGallery(x, tmp_path, anchors=3, samples=2)
    gallery.set_model(distiller)
    real, synthetic, teacher = gallery.draw()
    assert real.shape == (3, 8, 8, 1) and synthetic.shape == (6, 8, 8, 1)
    logits = distiller.teacher(np.concatenate([real, synthetic]))
    np.testing.assert_allclose(teacher["probabilities"], tf.nn.softmax(logits), rtol=1e-5)
    # A fixed seed: the next picture shows the same draws.
    np.testing.assert_array_equal(gallery.draw()[1], synthetic)


@pytest.mark.parametrize("kind, head", [("signals", "categorical"), ("features", "normal")])
def test_signals_and_feature_vectors_get_their_picture(tmp_path, kind, head):
    x, y, _ = testing.head_case(head, 32)
    distiller = testing.make_distiller(head)
    gallery = keras_ecl.callbacks.SampleGallery(x, tmp_path, kind=kind)
    distiller.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[gallery])
    (path,) = gallery.paths
    with open(path, "rb") as file:
        assert file.read(8) == PNG_SIGNATURE
