"""The Fashion-MNIST benchmark loads through Keras' own loader and its smoke run works.

The data is fake: IDX files of random images written into a temporary Keras home, so
`make test` needs neither the real files nor a network.
"""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import pytest

from benchmarks import data, fashion_mnist
from tests.data_test import write_dataset

TRAIN, TEST = fashion_mnist.VALIDATION_ROWS + 300, 200


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A Keras home whose cache holds a fake Fashion-MNIST: 5300 training, 200 test images."""
    home = tmp_path / "keras_home"
    rng = np.random.default_rng(0)

    def split(n):  # noise plus a bright row at the label's height: learnable, not separable
        labels = rng.integers(0, 10, n).astype("uint8")
        images = rng.integers(0, 160, (n, 28, 28))
        images[np.arange(n), 2 * labels + 4] += 90 + rng.integers(0, 6, (n, 1))
        return labels, images.astype("uint8")

    train_labels, train_images = split(TRAIN)
    test_labels, test_images = split(TEST)
    arrays = {
        "train-labels-idx1-ubyte.gz": train_labels,
        "train-images-idx3-ubyte.gz": train_images,
        "t10k-labels-idx1-ubyte.gz": test_labels,
        "t10k-images-idx3-ubyte.gz": test_images,
    }
    write_dataset(home / "datasets" / "fashion-mnist", arrays)
    monkeypatch.setattr(keras.src.backend.config, "keras_home", lambda: str(home))
    return arrays


def test_load_holds_out_a_fixed_validation_split_disjoint_from_training(keras_home):
    (x, y), (x_test, y_test) = fashion_mnist.load(100)
    (x_again, _), (x_val, y_val) = fashion_mnist.load(100, validation=True)
    assert x.shape == (100, 28, 28, 1) and x.dtype == "float32" and y.dtype == "int32"
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_array_equal(x, x_again)  # the same images whatever is scored
    assert len(x_test) == TEST and len(x_val) == fashion_mnist.VALIDATION_ROWS
    np.testing.assert_array_equal(y_test, keras_home["t10k-labels-idx1-ubyte.gz"])
    images = keras_home["train-images-idx3-ubyte.gz"].reshape(TRAIN, -1)
    index = {row.tobytes(): i for i, row in enumerate(images)}
    trained = {index[(row * 255).round().astype("uint8").tobytes()] for row in x[..., 0]}
    held = {index[(row * 255).round().astype("uint8").tobytes()] for row in x_val[..., 0]}
    assert len(trained) == 100 and not trained & held
    # The same validation split whatever the regime: the full one keeps all the rest.
    (x_full, _), _ = fashion_mnist.load(fashion_mnist.TRAIN_ROWS["full"])
    assert len(x_full) == TRAIN - fashion_mnist.VALIDATION_ROWS


def test_without_the_data_the_error_says_to_run_make_data(tmp_path, monkeypatch):
    monkeypatch.setattr(keras.src.backend.config, "keras_home", lambda: str(tmp_path))
    with pytest.raises(data.DataUnavailable, match="make data"):
        fashion_mnist.load(100)


def test_students_are_small_against_the_teacher():
    teacher = fashion_mnist.make_teacher().count_params()
    cnn = fashion_mnist.make_cnn_student().count_params()
    assert cnn < 10_000 and 10 * cnn <= teacher
    assert fashion_mnist.make_mlp_student().count_params() < teacher


@pytest.mark.large
def test_smoke_run_writes_results_and_caches_the_teacher(keras_home, tmp_path):
    output = tmp_path / "results"
    argv = ["--smoke", "--student", "mlp", "--seeds", "0", "--output", str(output)]
    fashion_mnist.main(argv)
    name = "fashion_mnist_10pct_mlp"
    saved = json.loads((output / f"{name}.json").read_text())
    assert saved["command"] == " ".join(["python -m benchmarks.fashion_mnist", *argv])
    expected = {"teacher", "teacher, calibrated", *(m.label for m in fashion_mnist.METHODS)}
    assert set(saved["summary"]) == expected
    for model, scores in saved["summary"].items():
        assert all(math.isfinite(v) for v in scores["accuracy"]["values"]), model
    run = saved["per_seed"][0]
    assert run["calibration"]["nll_after"] <= run["calibration"]["nll_before"] + 1e-6
    unit = run["budget_unit_seconds"]
    for label, points in run["curves"].items():
        method = next(m for m in fashion_mnist.METHODS if m.label == label)
        budget = method.budget or max(saved["config"]["budgets"])
        assert points[-1]["seconds"] >= budget * unit or label == "KD"
    cached = output / "teachers" / "fashion_mnist_10pct_seed0"
    sidecar = json.loads(cached.with_suffix(".json").read_text())
    assert sidecar["trained_with"]["rows"] == fashion_mnist.SMOKE.train_rows
    # A second task with the same config loads the teacher: the same weights, its seconds.
    task = fashion_mnist.task(
        fashion_mnist.SMOKE,
        fashion_mnist.runs_for_seed,
        "10pct",
        "mlp",
        cache=str(output / "teachers"),
    )
    teacher, seconds = task.teacher(0)
    assert seconds == sidecar["seconds"]
    x = task.data[0][:8]
    first = keras.saving.load_model(str(cached) + ".keras")
    np.testing.assert_allclose(teacher.predict(x, verbose=0), first.predict(x, verbose=0))
    assert os.path.getsize(output / f"{name}.png") > 10_000
    # Another teacher config retrains and replaces the cache.
    other = dataclasses.replace(fashion_mnist.SMOKE, teacher_epochs=2)
    task = fashion_mnist.task(
        other, fashion_mnist.runs_for_seed, "10pct", "mlp", cache=str(output / "teachers")
    )
    task.teacher(0)
    assert (
        json.loads(cached.with_suffix(".json").read_text())["trained_with"]["teacher_epochs"] == 2
    )
