"""The Fashion-MNIST set-up fills a cache Keras' own loader reads, offline, and rejects bad files.

Every test writes tiny IDX files of its own (5 training and 3 test images) into temporary
folders: no network, no apt, never the user's ~/.keras.
"""

import gzip
import os
import pathlib
import struct
import subprocess

import keras
import numpy as np
import pytest

from benchmarks import data

TRAIN_LABELS = np.array([9, 0, 3, 1, 7], "uint8")
TEST_LABELS = np.array([2, 8, 5], "uint8")


def images(n, start):
    """`n` 28x28 images whose pixels count up from `start` modulo 256."""
    return ((start + np.arange(n * 28 * 28)) % 256).astype("uint8").reshape(n, 28, 28)


TRAIN_IMAGES = images(5, 0)
TEST_IMAGES = images(3, 100)
ARRAYS = {
    "train-labels-idx1-ubyte.gz": TRAIN_LABELS,
    "train-images-idx3-ubyte.gz": TRAIN_IMAGES,
    "t10k-labels-idx1-ubyte.gz": TEST_LABELS,
    "t10k-images-idx3-ubyte.gz": TEST_IMAGES,
}


def write_idx(path, array):
    """Writes `array` as a gzip'd IDX file of unsigned bytes (magic 0x0800 + ndim)."""
    header = struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.tobytes())


def write_dataset(folder, arrays=ARRAYS):
    os.makedirs(folder, exist_ok=True)
    for name, array in arrays.items():
        write_idx(os.path.join(folder, name), array)
    return str(folder)


def contents(folder):
    """Each file's bytes by name: the whole folder, so a left-over temporary file shows."""
    return {path.name: path.read_bytes() for path in sorted(pathlib.Path(folder).iterdir())}


@pytest.fixture
def package(tmp_path):
    """A fake installed package's folder holding the four tiny files."""
    return write_dataset(tmp_path / "package")


def test_idx_shape_reads_the_header_and_counts_the_bytes(package):
    assert data.idx_shape(os.path.join(package, "train-labels-idx1-ubyte.gz")) == (5,)
    assert data.idx_shape(os.path.join(package, "t10k-images-idx3-ubyte.gz")) == (3, 28, 28)
    assert data.invalid_files(package) == {}
    assert data.missing_files(package) == []


def test_missing_files_lists_the_absent_ones_in_keras_order(tmp_path, package):
    os.remove(os.path.join(package, "t10k-labels-idx1-ubyte.gz"))
    os.remove(os.path.join(package, "train-labels-idx1-ubyte.gz"))
    assert data.missing_files(package) == [
        "train-labels-idx1-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]
    assert data.missing_files(tmp_path / "nowhere") == list(data.FILES)


def test_copies_from_the_package_folder_then_has_nothing_to_do(tmp_path, package):
    cache = str(tmp_path / "cache" / "datasets" / "fashion-mnist")
    lines = []
    copied = data.ensure_fashion_mnist(cache, package, apt=False, log=lines.append)
    assert copied == list(data.FILES)
    # Byte for byte, and no temporary file left next to them.
    assert contents(cache) == contents(package)
    assert lines == [f"Copied 4 files from {package} into {cache}."]

    mtimes = {name: os.stat(os.path.join(cache, name)).st_mtime_ns for name in data.FILES}
    lines.clear()
    assert data.ensure_fashion_mnist(cache, package, apt=False, log=lines.append) == []
    assert lines == [f"Fashion-MNIST is already in {cache}: nothing to do."]
    assert {name: os.stat(os.path.join(cache, name)).st_mtime_ns for name in data.FILES} == mtimes


def test_a_truncated_file_in_the_cache_is_reported_and_replaced(tmp_path, package):
    cache = write_dataset(tmp_path / "cache")
    path = os.path.join(cache, "train-images-idx3-ubyte.gz")
    whole = pathlib.Path(path).read_bytes()
    with open(path, "wb") as file:
        file.write(whole[: len(whole) // 2])
    problems = data.invalid_files(cache)
    assert list(problems) == ["train-images-idx3-ubyte.gz"]
    assert "not a complete gzip file" in problems["train-images-idx3-ubyte.gz"]

    lines = []
    assert data.ensure_fashion_mnist(cache, package, apt=False, log=lines.append) == [
        "train-images-idx3-ubyte.gz"
    ]
    assert lines[0] == f"Invalid file in the cache: {problems['train-images-idx3-ubyte.gz']}"
    assert pathlib.Path(path).read_bytes() == whole


def test_defects_are_named(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    # A complete gzip stream whose IDX data stop 784 bytes (one image) short.
    header = struct.pack(">IIII", 2051, 5, 28, 28)
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as file:
        file.write(header + TRAIN_IMAGES.tobytes()[:-784])
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", TEST_IMAGES)  # images where labels go
    write_idx(folder / "t10k-images-idx3-ubyte.gz", TEST_IMAGES)
    problems = data.invalid_files(folder)
    assert problems["train-images-idx3-ubyte.gz"] == (
        f"{folder / 'train-images-idx3-ubyte.gz'}: truncated, 3136 data bytes for shape "
        "(5, 28, 28) (expected 3920)"
    )
    assert "not a complete gzip file" in problems["train-labels-idx1-ubyte.gz"]
    assert problems["t10k-labels-idx1-ubyte.gz"] == (
        f"{folder / 't10k-labels-idx1-ubyte.gz'}: shape (3, 28, 28) (magic number 2051), "
        "expected (n,) (magic number 2049)"
    )
    assert list(problems) == [
        "train-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_labels_and_images_of_a_split_must_agree_in_number(tmp_path):
    cache = write_dataset(
        tmp_path / "cache", {**ARRAYS, "t10k-labels-idx1-ubyte.gz": TEST_LABELS[:2]}
    )
    problems = data.invalid_files(cache)
    assert sorted(problems) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    assert problems["t10k-labels-idx1-ubyte.gz"].endswith(
        ": 2 labels, but 3 images in t10k-images-idx3-ubyte.gz"
    )


def test_without_any_source_the_error_says_what_to_run(tmp_path):
    cache = str(tmp_path / "cache")
    absent = str(tmp_path / "no-package")
    with pytest.raises(data.DataUnavailable) as error:
        data.ensure_fashion_mnist(cache, absent, apt=False, log=lambda line: None)
    message = str(error.value)
    assert f"{absent} does not exist" in message
    assert "`sudo apt-get install dataset-fashion-mnist`" in message
    assert "keras.datasets.fashion_mnist.load_data()" in message
    assert message.endswith(f"into {cache}.")
    assert not os.path.exists(cache)


def test_a_corrupt_file_with_no_source_is_reported(tmp_path):
    cache = write_dataset(tmp_path / "cache")
    (tmp_path / "cache" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(data.DataUnavailable, match="t10k-images-idx3-ubyte.gz"):
        data.require_fashion_mnist(cache)
    with pytest.raises(data.DataUnavailable, match="apt-get install"):
        data.ensure_fashion_mnist(cache, str(tmp_path / "none"), apt=False, log=lambda _: None)


class FakeApt:
    """Stands in for `subprocess.run`: apt's lists start empty, as on a fresh machine."""

    def __init__(self):
        self.updated = False
        self.commands = []

    def __call__(self, command, cwd, **kwargs):
        self.commands.append(command)
        if command == ["apt-get", "download", "dataset-fashion-mnist"] and not self.updated:
            return subprocess.CompletedProcess(
                command, 100, "", "E: Unable to locate package dataset-fashion-mnist\n"
            )
        if command == ["apt-get", "update"]:
            self.updated = True
        elif command[:2] == ["apt-get", "download"]:
            open(os.path.join(cwd, "dataset-fashion-mnist_1.0_all.deb"), "wb").close()
        elif command[:2] == ["dpkg", "-x"]:
            assert command[2] == os.path.join(cwd, "dataset-fashion-mnist_1.0_all.deb")
            write_dataset(os.path.join(command[3], "usr/share/datasets/fashion-mnist"))
        return subprocess.CompletedProcess(command, 0, "", "")


def test_apt_download_updates_the_lists_and_unpacks_the_package(tmp_path, monkeypatch, package):
    apt = FakeApt()
    monkeypatch.setattr(data.subprocess, "run", apt)
    cache = str(tmp_path / "cache")
    lines = []
    assert data.ensure_fashion_mnist(cache, str(tmp_path / "none"), log=lines.append) == list(
        data.FILES
    )
    assert [command[:2] for command in apt.commands] == [
        ["apt-get", "download"],
        ["apt-get", "update"],
        ["apt-get", "download"],
        ["dpkg", "-x"],
    ]
    assert contents(cache) == contents(package)
    assert "Unable to locate package" in lines[2]
    assert lines[-1] == f"Copied 4 files from the dataset-fashion-mnist package into {cache}."


def test_apt_failing_gives_the_clear_error(tmp_path, monkeypatch):
    def no_apt(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    monkeypatch.setattr(data.subprocess, "run", no_apt)
    with pytest.raises(
        data.DataUnavailable, match="`apt-get download dataset-fashion-mnist`: "
    ) as error:
        data.ensure_fashion_mnist(str(tmp_path / "c"), str(tmp_path / "none"), log=lambda _: None)
    assert "`sudo apt-get install dataset-fashion-mnist`" in str(error.value)


def test_require_says_to_run_make_data(tmp_path, package):
    cache = str(tmp_path / "cache")
    with pytest.raises(data.DataUnavailable) as error:
        data.require_fashion_mnist(cache)
    assert str(error.value).startswith(
        f"Fashion-MNIST is not in Keras' cache ({cache}): run `make data`"
    )
    data.ensure_fashion_mnist(cache, package, apt=False, log=lambda _: None)
    assert data.require_fashion_mnist(cache) == cache


def test_keras_own_loader_reads_what_was_copied(tmp_path, monkeypatch, package):
    # Keras reads $KERAS_HOME at import time, so its accessor is what gets pointed elsewhere.
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setattr(keras.src.backend.config, "keras_home", lambda: str(home))
    assert data.keras_cache_dir() == str(home / "datasets" / "fashion-mnist")
    with pytest.raises(data.DataUnavailable, match="make data"):
        data.require_fashion_mnist()

    data.ensure_fashion_mnist(package_dir=package, apt=False, log=lambda _: None)
    data.require_fashion_mnist()
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    np.testing.assert_array_equal(y_train, [9, 0, 3, 1, 7])
    np.testing.assert_array_equal(y_test, [2, 8, 5])
    assert x_train.shape == (5, 28, 28) and x_test.shape == (3, 28, 28)
    # Pixel (i, r, c) counts up from the first one: i * 784 + r * 28 + c, modulo 256.
    assert x_train[1, 0, 0] == 784 % 256 == 16
    assert x_train[4, 27, 27] == (5 * 784 - 1) % 256 == 79
    assert x_test[0, 0, 0] == 100 and x_test[2, 1, 3] == (100 + 2 * 784 + 28 + 3) % 256 == 163
    np.testing.assert_array_equal(x_train, TRAIN_IMAGES)
    np.testing.assert_array_equal(x_test, TEST_IMAGES)


def test_keras_cache_dir_falls_back_to_tmp_like_get_file(monkeypatch):
    monkeypatch.setattr(keras.src.backend.config, "keras_home", lambda: "/nonexistent/keras")
    assert data.keras_cache_dir() == "/tmp/.keras/datasets/fashion-mnist"


def test_main_exit_codes(tmp_path, package, capsys):
    cache = str(tmp_path / "cache")
    assert data.main(["--cache-dir", cache, "--package-dir", package, "--no-apt"]) == 0
    assert capsys.readouterr().out == f"Copied 4 files from {package} into {cache}.\n"
    assert data.main(["--cache-dir", cache, "--package-dir", package, "--no-apt"]) == 0
    assert "nothing to do" in capsys.readouterr().out

    empty = str(tmp_path / "empty")
    assert data.main(["--cache-dir", empty, "--package-dir", empty, "--no-apt"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: Fashion-MNIST could not be put into Keras' cache")
    assert "Traceback" not in captured.err


def test_an_interrupted_copy_leaves_no_file_under_keras_name(tmp_path, monkeypatch, package):
    def copy_half(source, target):
        pathlib.Path(target).write_bytes(pathlib.Path(source).read_bytes()[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.shutil, "copyfile", copy_half)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="No space left"):
        data.ensure_fashion_mnist(str(cache), package, apt=False, log=lambda _: None)
    assert list(cache.iterdir()) == []
