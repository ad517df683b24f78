"""examples/colab_tpu.ipynb: valid notebook JSON, a plain pip install of keras_ecl, and its
code cells run top to bottom on this CPU with `SMOKE = True` (tfds data mocked)."""

import json
import pathlib
import re

import matplotlib
import pytest
import tensorflow_datasets as tfds

from tests import packaging_test

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "colab_tpu.ipynb"


def code_cells():
    notebook = json.loads(NOTEBOOK.read_text())
    return ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]


def test_notebook_is_clean_nbformat_4_for_a_tpu_runtime():
    notebook = json.loads(NOTEBOOK.read_text())
    assert notebook["nbformat"] == 4
    assert notebook["metadata"]["accelerator"] == "TPU"
    assert notebook["cells"][0]["cell_type"] == "markdown"
    for cell in notebook["cells"]:
        assert cell["cell_type"] in ("markdown", "code")
        assert isinstance(cell["source"], list) and cell["source"]
        if cell["cell_type"] == "code":  # committed without outputs
            assert cell["outputs"] == [] and cell["execution_count"] is None
    parameters = [c for c in notebook["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(parameters) == 1 and "SMOKE = False" in "".join(parameters[0]["source"])


def test_install_cell_installs_keras_ecl_with_plain_pip():
    cell = code_cells()[1]
    # No dependency workaround: keras_ecl's own ranges decide, with its extras.
    assert "--no-deps" not in cell
    assert 'pip + [f"{CHECKOUT}[data,export]"]' in cell
    # On TPUs: the newest tensorflow-tpu first, with the tf-keras of its TensorFlow,
    # which setup.cfg's ranges accept, so pip keeps it.
    installed = dict(re.findall(r'"([\w-]+)==([\w.]+)"', cell))
    assert installed == {"tensorflow-tpu": "2.20.0", "tf-keras": "2.20.1"}
    requirements = packaging_test.install_requires()
    assert requirements["tensorflow"].specifier.contains("2.20.0")
    assert requirements["tf-keras"].specifier.contains("2.20.1")


def test_install_cell_names_the_missing_repository(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ValueError, match="`KERAS_ECL_REPO` must name a git URL.*Received: "):
        exec(code_cells()[1], {"KERAS_ECL_REPO": ""})


@pytest.mark.large
def test_cpu_smoke_path_runs_every_cell(tmp_path, monkeypatch, capsys):
    matplotlib.use("Agg")  # plt.show() returns at once
    monkeypatch.chdir(tmp_path)
    cells = code_cells()
    assert "SMOKE = False" in cells[0]
    cells[0] = cells[0].replace("SMOKE = False", "SMOKE = True")
    namespace = {"__name__": "__main__"}
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        for source in cells:
            exec(compile(source, str(NOTEBOOK), "exec"), namespace)
    out = capsys.readouterr().out
    assert "_DefaultDistributionStrategy with 1 replica(s), policy float32" in out
    assert set(namespace["results"]) == {"KD", "ECL"}
    for run in ("KD", "ECL"):
        assert re.search(rf"^{run}\s+0\.\d{{3}}\s", out, flags=re.M), out
    assert (tmp_path / "saved_models" / "cifar100_tpu_curves.png").stat().st_size > 10_000
    best = namespace["best_run"].lower()
    assert (tmp_path / "saved_models" / f"cifar100_resnet8_{best}.tflite").exists()
    error = float(re.search(r"max \|dp\| = (\S+)", out).group(1))
    assert error < 1e-5
