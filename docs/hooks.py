"""MkDocs hook: the repository files the pages link to, served from where they are.

BENCHMARKS.md and CONTRIBUTING.md become pages, and the figures and notebook
they and the README link to are copied as they are, so links keep the paths
they have on GitHub.
"""

import glob
import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXTRA = ["BENCHMARKS.md", "CONTRIBUTING.md", "examples/colab_tpu.ipynb"]


def on_files(files, config):
    figures = sorted(glob.glob("benchmarks/results/*.png", root_dir=ROOT))
    for path in [*EXTRA, *figures]:
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
