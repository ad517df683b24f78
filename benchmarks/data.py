"""Fashion-MNIST offline: puts the four files `load_data()` reads into Keras' cache.

Benchmarks call the ordinary `keras.datasets.fashion_mnist.load_data()`, and this step fills
Keras' cache from Debian's `dataset-fashion-mnist` package (installed, or fetched with
`apt-get download`, as package registries are the only network here), so benchmark code is the
same as on a machine with internet. Every file is checked as a gzip'd IDX file first, so a
truncated or corrupt one is replaced or reported, never handed to the loader.

Run `python -m benchmarks.data` (`make data`) from the repository root; `--no-apt` uses the
installed package only.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.data")

import argparse
import functools
import gzip
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Callable

from keras_ecl import _atomic

PACKAGE = "dataset-fashion-mnist"
PACKAGE_DIR = "/usr/share/datasets/fashion-mnist"
# The files of `keras.datasets.fashion_mnist.load_data()`, in its order, and the shape of one
# item of each: labels are scalars, images 28x28.
FILES = {
    "train-labels-idx1-ubyte.gz": (),
    "train-images-idx3-ubyte.gz": (28, 28),
    "t10k-labels-idx1-ubyte.gz": (),
    "t10k-images-idx3-ubyte.gz": (28, 28),
}
PAIRS = (  # labels and images of one split have as many items
    ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz"),
    ("t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"),
)
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one these files use
APT_TIMEOUT = 600  # seconds for one apt-get or dpkg command


class DataUnavailable(RuntimeError):
    """The data set is not in Keras' cache and could not be put there; says what to run."""


def keras_cache_dir() -> str:
    """The folder `keras.datasets.fashion_mnist.load_data()` reads its files from.

    The same rule as `keras.utils.get_file`: `<keras home>/datasets/fashion-mnist`, where the
    Keras home is `$KERAS_HOME` (as it was when Keras was imported) or `~/.keras`, and
    `/tmp/.keras` when that folder is not writable.

    Returns:
        The folder's path (it may not exist yet).
    """
    # Imported here so that `--cache-dir` runs never load TensorFlow. `keras_home()` is private.
    from keras.src.backend import config

    base = os.path.expanduser(config.keras_home())
    if not os.access(base, os.W_OK):
        base = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return os.path.join(base, "datasets", "fashion-mnist")


def missing_files(folder: str) -> list[str]:
    """The Fashion-MNIST files absent from `folder`.

    Args:
        folder: A folder that should hold the four files.

    Returns:
        The absent files' names, in the order of `FILES`; empty when all four are there.
    """
    return [name for name in FILES if not os.path.isfile(os.path.join(folder, name))]


def idx_shape(path: str) -> tuple[int, ...]:
    """The shape of the array in a gzip'd IDX file of unsigned bytes, checked to the last byte.

    The header is a magic number (`0x0800` plus the number of dimensions: 2049 for labels,
    2051 for images) and one 4-byte size per dimension; the data must hold exactly as many
    bytes as the sizes' product, and the gzip stream must be complete, with a valid checksum.

    Args:
        path: The `.gz` file.

    Returns:
        The array's shape, e.g. `(60000, 28, 28)`.

    Raises:
        ValueError: If the file is not gzip, is truncated or corrupt, or its IDX header or
            length is wrong; the message names the file and the defect.
    """
    try:
        with gzip.open(path, "rb") as file:
            magic = file.read(4)
            if len(magic) < 4:
                raise ValueError(f"{path}: ends before its IDX header ({len(magic)} bytes)")
            (magic,) = struct.unpack(">I", magic)
            if magic >> 8 != IDX_UBYTE:
                raise ValueError(
                    f"{path}: not an IDX file of unsigned bytes "
                    f"(magic number {magic}, expected 2049 or 2051)"
                )
            ndim = magic & 0xFF
            sizes = file.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise ValueError(f"{path}: ends inside its IDX header")
            shape = struct.unpack(f">{ndim}I", sizes)
            size = 0
            while chunk := file.read(1 << 20):
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a complete gzip file ({error})") from error
    expected = math.prod(shape)
    if size != expected:
        state = "truncated" if size < expected else "too long"
        raise ValueError(
            f"{path}: {state}, {size} data bytes for shape {shape} (expected {expected})"
        )
    return shape


def invalid_files(folder: str) -> dict[str, str]:
    """The Fashion-MNIST files in `folder` that `load_data()` must not read, and why.

    A file is invalid if `idx_shape` rejects it, if it is not labels `(n,)` or 28x28 images
    `(n, 28, 28)` as its name says, or if the labels and images of a split differ in number
    (then both are listed). Any consistent number is accepted, so tests can use tiny files.

    Args:
        folder: A folder holding some or all of the four files; missing ones are skipped.

    Returns:
        Each invalid file's name mapped to the reason; empty when every present file is fine.
    """
    shapes, problems = {}, {}
    for name, item_shape in FILES.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            shape = idx_shape(path)
        except ValueError as error:
            problems[name] = str(error)
            continue
        if len(shape) != 1 + len(item_shape) or shape[1:] != item_shape:
            expected = f"(n, {', '.join(map(str, item_shape))})" if item_shape else "(n,)"
            problems[name] = (
                f"{path}: shape {shape} (magic number {0x800 + len(shape)}), expected "
                f"{expected} (magic number {0x801 + len(item_shape)})"
            )
        else:
            shapes[name] = shape
    for labels, images in PAIRS:
        if labels in shapes and images in shapes and shapes[labels][0] != shapes[images][0]:
            n_labels, n_images = shapes[labels][0], shapes[images][0]
            problems[labels] = (
                f"{os.path.join(folder, labels)}: {n_labels} labels, but {n_images} images "
                f"in {images}"
            )
            problems[images] = (
                f"{os.path.join(folder, images)}: {n_images} images, but {n_labels} labels "
                f"in {labels}"
            )
    return problems


def require_fashion_mnist(cache_dir: str | None = None) -> str:
    """Checks that `keras.datasets.fashion_mnist.load_data()` will read four valid files.

    Nothing is copied or downloaded: benchmarks call this before `load_data()` so that a
    missing data set fails with what to run instead of a download error.

    Args:
        cache_dir: The folder to check. Defaults to `keras_cache_dir()`.

    Returns:
        The checked folder.

    Raises:
        DataUnavailable: If a file is missing or invalid; the message says to run `make data`.
    """
    folder = keras_cache_dir() if cache_dir is None else cache_dir
    missing = missing_files(folder)
    if missing:
        raise DataUnavailable(
            f"Fashion-MNIST is not in Keras' cache ({folder}): run `make data` "
            f"(python -m benchmarks.data) first. Missing: {', '.join(missing)}"
        )
    problems = invalid_files(folder)
    if problems:
        raise DataUnavailable(
            f"Fashion-MNIST in Keras' cache ({folder}) is damaged: run `make data` "
            f"(python -m benchmarks.data) to replace it. {'; '.join(problems.values())}"
        )
    return folder


def ensure_fashion_mnist(
    cache_dir: str | None = None,
    package_dir: str = PACKAGE_DIR,
    apt: bool = True,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Puts the four Fashion-MNIST files into Keras' cache, offline, unless they are there.

    Missing or invalid files (see `invalid_files`) are copied from `package_dir` when it holds
    all four valid files, else from Debian's package fetched with `apt-get download` (after
    `apt-get update` if that fails) and unpacked with `dpkg -x`, nothing installed. Each file
    is copied next to its target and renamed over it (`keras_ecl._atomic`), so an interrupted
    run never leaves a partial file under the name Keras reads.

    Args:
        cache_dir: The folder to fill. Defaults to `keras_cache_dir()`, the one Keras reads.
        package_dir: Where the installed package keeps the files. Defaults to
            `"/usr/share/datasets/fashion-mnist"`.
        apt: Whether to fetch the package with apt when `package_dir` cannot serve. Defaults
            to `True`.
        log: Called with one line per step. Defaults to `print`.

    Returns:
        The names of the files copied; empty when the cache was already complete.

    Raises:
        DataUnavailable: If no source could provide the files; the message says what to run.
    """
    folder = keras_cache_dir() if cache_dir is None else cache_dir
    problems = invalid_files(folder)
    for reason in problems.values():
        log(f"Invalid file in the cache: {reason}")
    stale = {*problems, *missing_files(folder)}
    needed = [name for name in FILES if name in stale]
    if not needed:
        log(f"Fashion-MNIST is already in {folder}: nothing to do.")
        return []
    unusable = _unusable(package_dir)
    if unusable is None:
        _copy(package_dir, folder, needed)
        log(f"Copied {len(needed)} files from {package_dir} into {folder}.")
    elif not apt:
        raise DataUnavailable(_instructions(folder, unusable))
    else:
        log(f"{unusable}: fetching the {PACKAGE} package instead.")
        with tempfile.TemporaryDirectory() as scratch:
            source = _unpack_package(scratch, folder, log)
            _copy(source, folder, needed)
        log(f"Copied {len(needed)} files from the {PACKAGE} package into {folder}.")
    problems = invalid_files(folder)
    if problems:
        raise DataUnavailable(_instructions(folder, "; ".join(problems.values())))
    return needed


def _unusable(package_dir: str) -> str | None:
    """Why `package_dir` cannot serve the four files, or None when it can."""
    if not os.path.isdir(package_dir):
        return f"{package_dir} does not exist"
    missing = missing_files(package_dir)
    if missing:
        return f"{package_dir} lacks {', '.join(missing)}"
    problems = invalid_files(package_dir)
    return "; ".join(problems.values()) if problems else None


def _copy(source: str, folder: str, names: list[str]) -> None:
    for name in names:
        copy = functools.partial(shutil.copyfile, os.path.join(source, name))
        _atomic.write_file(os.path.join(folder, name), copy)


def _unpack_package(scratch: str, folder: str, log: Callable[[str], None]) -> str:
    """Downloads the package's .deb into `scratch`, unpacks it there; returns its data folder."""
    log(f"Downloading the {PACKAGE} package with apt-get (nothing is installed).")
    download = _run(["apt-get", "download", PACKAGE], scratch, folder)
    if download.returncode != 0:
        # Empty or stale package lists: "Unable to locate package", or a version gone.
        log(f"apt-get download failed ({_last_line(download)}); running apt-get update.")
        _check(_run(["apt-get", "update"], scratch, folder), folder)
        _check(_run(["apt-get", "download", PACKAGE], scratch, folder), folder)
    debs = sorted(name for name in os.listdir(scratch) if name.endswith(".deb"))
    if not debs:
        raise DataUnavailable(_instructions(folder, "apt-get download wrote no .deb file"))
    root = os.path.join(scratch, "root")
    _check(_run(["dpkg", "-x", os.path.join(scratch, debs[0]), root], scratch, folder), folder)
    source = os.path.join(root, PACKAGE_DIR.lstrip("/"))
    missing = missing_files(source)
    if missing:
        reason = f"{debs[0]} has no {', '.join(missing)} in {PACKAGE_DIR}"
        raise DataUnavailable(_instructions(folder, reason))
    return source


def _run(command: list[str], cwd: str, folder: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DataUnavailable(_instructions(folder, f"`{' '.join(command)}`: {error}")) from error


def _check(result: subprocess.CompletedProcess, folder: str) -> None:
    if result.returncode != 0:
        reason = f"`{' '.join(result.args)}` failed: {_last_line(result)}"
        raise DataUnavailable(_instructions(folder, reason))


def _last_line(result: subprocess.CompletedProcess) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1] if lines else f"exit code {result.returncode}"


def _instructions(folder: str, reason: str) -> str:
    return (
        f"Fashion-MNIST could not be put into Keras' cache ({folder}): {reason}. "
        f"Either install it (`sudo apt-get install {PACKAGE}`) and run `make data` again, "
        "or, on a machine with network, run "
        '`python -c "import keras; keras.datasets.fashion_mnist.load_data()"` and copy the '
        f"four files of ~/.keras/datasets/fashion-mnist ({', '.join(FILES)}) into {folder}."
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.data`: fills Keras' cache; 0 on success, 1 with the reason."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache-dir", default=None, help="folder to fill (default: the one Keras reads)"
    )
    parser.add_argument(
        "--package-dir", default=PACKAGE_DIR, help="where the installed package keeps the files"
    )
    parser.add_argument("--no-apt", action="store_true", help="never run apt-get or dpkg")
    args = parser.parse_args(argv)
    try:
        ensure_fashion_mnist(args.cache_dir, args.package_dir, apt=not args.no_apt)
    except DataUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
