"""The CIFAR-100 recipe: its smoke run on the real tfds code path (mocked data),
its models' sizes, and its input pipeline."""

import importlib.util
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_example():
    spec = importlib.util.spec_from_file_location("cifar100", ROOT / "examples" / "cifar100.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cifar100 = load_example()


def mock_cifar100(num_examples):
    """`tfds.load` yields random examples; USE_CODE reads the features from the
    builder's code, so no metadata files and no network are needed."""
    return tfds.testing.mock_data(
        num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE
    )


@pytest.mark.large
def test_smoke_run_goes_through_tfds_and_prints_the_table(tmp_path, capsys):
    with mock_cifar100(64):
        accuracies = cifar100.main(["--smoke", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "random images" not in out  # the tfds pipeline ran, not the offline fallback
    for name in ("teacher", "ERM", "KD", "ECL"):
        assert re.search(rf"^{name}\s+0\.\d{{3}}\s", out, flags=re.M), out
        assert 0.0 <= accuracies[name] <= 1.0
    assert "not measured here" in out
    assert (tmp_path / "cifar100_resnet20_1ep_smoke.keras").exists()
    for run in ("erm", "kd", "ecl"):
        assert (tmp_path / f"cifar100_resnet8_{run}_smoke.keras").exists()


@pytest.mark.parametrize("name", sorted(cifar100.PUBLISHED_PARAMETERS))
def test_models_have_the_published_number_of_parameters(name):
    model = cifar100.MODELS[name]()
    published = cifar100.PUBLISHED_PARAMETERS[name] * 1e6
    assert abs(cifar100.trainable_parameters(model) - published) / published < 0.1
    assert model.output_shape == (None, 100)


def test_every_pair_is_in_the_registry():
    for teacher, student in cifar100.PAIRS:
        assert {teacher, student} <= set(cifar100.MODELS)
        assert (teacher, student) in cifar100.PUBLISHED_ACCURACY


def make_train_pipeline(dataset, seed=0):
    return cifar100.make_pipeline(dataset, 16, training=True, shuffle_buffer=1, seed=seed)


def test_training_batches_have_a_static_shape_and_are_normalized():
    with mock_cifar100(64):
        train = make_train_pipeline(cifar100.load_split("train", 40, data_dir=None, smoke=True))
    images_spec, labels_spec = train.element_spec
    assert images_spec.shape == (16, 32, 32, 3) and images_spec.dtype == tf.float32
    assert labels_spec.shape == (16,) and labels_spec.dtype == tf.int32
    batches = list(train)
    assert len(batches) == 2  # 40 images: the partial batch of 8 is dropped
    images = np.concatenate([b[0].numpy() for b in batches])
    # Uniform random pixels normalised per channel: mean near (0.5 - mean) / std.
    expected = (0.5 - np.array(cifar100.MEAN)) / np.array(cifar100.STD)
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), expected, atol=0.3)


def test_augmentation_is_seeded_and_differs_between_epochs():
    with mock_cifar100(64):
        raw = cifar100.load_split("train", 40, data_dir=None, smoke=True)
    train = make_train_pipeline(raw, seed=3)
    first_epoch = next(iter(train))[0].numpy()
    second_epoch = next(iter(train))[0].numpy()
    assert not np.array_equal(first_epoch, second_epoch)
    # A new pipeline on the same data (one per model in the recipe) starts over.
    again = make_train_pipeline(raw, seed=3)
    np.testing.assert_array_equal(next(iter(again))[0].numpy(), first_epoch)


def test_evaluation_keeps_every_test_image():
    with mock_cifar100(64):
        dataset = cifar100.load_split("test", 40, data_dir=None, smoke=True)
        test = cifar100.make_pipeline(dataset, 16, training=False)
    assert [int(b[0].shape[0]) for b in test] == [16, 16, 8]


def test_unknown_model_in_pair_is_rejected(capsys):
    with pytest.raises(SystemExit):
        cifar100.parse_args(["--pair", "resnet32x4:resnet9"])
    assert "unknown model 'resnet9'" in capsys.readouterr().err
