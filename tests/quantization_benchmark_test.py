"""The quantization benchmark scores every TFLite quantization against the Keras student."""

import json

import keras
import numpy as np
import pytest

from benchmarks import quantization, report


@pytest.mark.large
def test_smoke_run_scores_every_quantization_against_keras(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    student = keras.Sequential([keras.Input((40,)), keras.layers.Dense(10)])
    path = tmp_path / "student.keras"
    student.save(path)
    output = tmp_path / "quantization.json"
    argv = ["--student", str(path), "--smoke", "--output", str(output)]
    result = quantization.main(argv)

    rows = {row["quantization"]: row for row in result["rows"]}
    assert list(rows) == ["none (float32)", "float16", "dynamic_range", "int8"]
    float32 = rows["none (float32)"]
    assert float32["same_class"] == 1.0 and float32["max_abs_error"] < 1e-5
    assert float32["accuracy"] == pytest.approx(result["keras_accuracy"])
    # Quantized weights are smaller than float32 ones.
    assert rows["float16"]["kib"] < float32["kib"] and rows["int8"]["kib"] < float32["kib"]
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["same_class"] <= 1.0
        assert np.isfinite(row["max_abs_error"])
    saved = json.loads(output.read_text())
    assert saved["command"] == " ".join(["python -m benchmarks.quantization", *argv])
    assert saved["rows"] == result["rows"]
    printed = capsys.readouterr().out
    assert report.quantization_table(result) in printed
    section = report.quantization_section(saved)
    assert "| none (float32) |" in section and f"Student: `{path}`" in section


def test_a_missing_student_says_to_run_the_demo(tmp_path):
    with pytest.raises(SystemExit, match="run `make demo` first"):
        quantization.main(["--student", str(tmp_path / "absent.keras")])
