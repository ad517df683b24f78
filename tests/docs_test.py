"""The README and CONTRIBUTING snippets run as written, and the main job's smoke variant runs."""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from tests import testing

ROOT = pathlib.Path(__file__).resolve().parents[1]


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.large
def test_readme_snippets_run_as_written_in_order(tmp_path, monkeypatch):
    quickstart, export, distributed, resume = python_blocks(ROOT / "README.md")[:4]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "saved_models").mkdir()
    namespace = {}
    # A user who runs these sees no Python warning: each would be ours to fix.
    with testing.warnings_as_errors():
        exec(compile(quickstart, "README.md quickstart", "exec"), namespace)
        assert (tmp_path / "saved_models" / "student.keras").exists()
        history = namespace["distiller"].history.history
        assert {"loss", "student_loss", "extracurricular_loss"} <= set(history)

        exec(compile(export, "README.md export", "exec"), namespace)
        for name in ("student/saved_model.pb", "student.tflite", "student_int8.tflite"):
            assert (tmp_path / "saved_models" / name).exists(), name
        assert namespace["probabilities"].shape == (4, 3)
        assert namespace["on_device"]["probabilities"].shape == (4, 3)

        exec(compile(distributed, "README.md multi-GPU / TPU", "exec"), namespace)
        history = namespace["distiller"].history.history
        assert len(history["extracurricular_loss"]) == 2
        assert namespace["strategy"].num_replicas_in_sync == 1  # one CPU here: the default

        exec(compile(resume, "README.md resume", "exec"), namespace)
        history = namespace["distiller"].history.history
        assert len(history["loss"]) == 3  # no backup yet: from the start (kills: resume_test.py)
        assert not (tmp_path / "backups" / "student").exists()  # removed at the end


@pytest.mark.large
def test_demo_smoke_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            # Warnings are errors (the user would see them), but for upstream ones.
            *(f"-W{spec}" for spec in ("error", *testing.UPSTREAM_WARNINGS)),
            str(ROOT / "examples" / "mnist1d_distillation.py"),
            "--smoke",
            "--output-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for name in ("teacher", "ERM", "KD", "ECL"):
        assert re.search(rf"^{name}\s+0\.\d{{3}}", table, flags=re.M), table
    assert (tmp_path / "mnist1d_ecl_student.keras").exists()
    assert (tmp_path / "mnist1d_ecl_student" / "saved_model.pb").exists()
    assert (tmp_path / "mnist1d_demo.png").stat().st_size > 10_000
    # The TFLite student is scored on the test set and agrees with the Keras one.
    keras_line = re.search(r"Keras .* test accuracy (0\.\d{3})", table)
    tflite_line = re.search(r"TFLite .*\.tflite\s+test accuracy (0\.\d{3})", table)
    assert keras_line and tflite_line, table
    assert abs(float(keras_line[1]) - float(tflite_line[1])) <= 0.002


@pytest.mark.parametrize(
    "module", ["heads", "losses", "samplers", "distiller", "export", "callbacks", "distribute"]
)
def test_public_docstrings_have_examples(module):
    import importlib
    import inspect

    mod = importlib.import_module(f"keras_ecl.{module}")
    for name, obj in vars(mod).items():
        public = inspect.isclass(obj) or inspect.isfunction(obj)
        if name.startswith("_") or not public or obj.__module__ != mod.__name__:
            continue
        if name in ("Head", "Sampler"):
            continue  # base classes document the contract, not a use
        assert "Example:" in (obj.__doc__ or ""), f"{module}.{name} has no Example"


CONTRIBUTING_CHECK = """
import numpy as np
import keras_ecl
from tests import testing

sampler = keras_ecl.samplers.get("uniform_noise")
assert type(sampler).__name__ == "UniformNoise", sampler
assert "UniformNoise" in keras_ecl.samplers.SAMPLERS.examples()
testing.run_serialization_test(sampler)
x, y = testing.classification_data()
distiller = testing.make_distiller(sampler="uniform_noise", samples_per_example=2)
testing.short_fit(distiller, x, y)
head = keras_ecl.heads.get("logistic")
raw = np.zeros((2, 2), "float32")
assert np.isfinite(head.negative_log_likelihood(np.zeros((2, 1)), raw)).all()
try:
    head.kl_divergence(raw, raw)
except NotImplementedError:
    print("walkthrough ok")
"""


@pytest.mark.large
def test_contributing_walkthrough_registers_a_sampler_and_a_head_that_work():
    # In a subprocess: registering classes must not leak into the other tests.
    sampler, head = python_blocks(ROOT / "CONTRIBUTING.md")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "\n".join(map(textwrap.dedent, [sampler, head, CONTRIBUTING_CHECK])),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "walkthrough ok" in result.stdout


def test_the_api_reference_builds_with_warnings_as_errors(tmp_path):
    # --strict: a docstring naming a parameter the signature lacks, a bad section
    # or a broken link fails the build, and so CI.
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    for page in ["index", "distiller", "heads", "samplers", "teachers", "bad-input", "BENCHMARKS"]:
        assert (site / f"{page}.html").stat().st_size > 5_000, page
    heads = (site / "heads.html").read_text()
    assert "DecoupledCategorical" in heads and "min_scale" in heads  # docstrings rendered
    assert "Every refusal, verbatim" in (site / "bad-input.html").read_text()  # README included
    assert (site / "benchmarks" / "results" / "mnist1d.png").exists()
