"""The benchmark helpers compute the metrics they claim, and every benchmark's smoke run works."""

import importlib
import json
import math
import pathlib
import sys

import numpy as np
import pytest
from scipy import stats

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

common = importlib.import_module("benchmarks.common")


def test_ece_on_a_hand_example():
    # Confidences 0.9, 0.9 (bin 14, one right: accuracy 0.5) and 0.6 (bin 9, right).
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    labels = np.array([0, 0, 0])
    expected = 2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6)
    assert common.expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_ece_bins_are_closed_on_the_right():
    # Two bins, (0, 0.5] and (0.5, 1]: confidence 0.5 falls in the first, 1.0 in the last.
    probs = np.array([[0.5, 0.5], [0.8, 0.2], [0.3, 0.7], [1.0, 0.0]])
    labels = np.array([1, 0, 1, 0])
    expected = 1 / 4 * abs(0.0 - 0.5) + 3 / 4 * abs(1.0 - (0.8 + 0.7 + 1.0) / 3)
    assert expected == pytest.approx(0.25)
    assert common.expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(expected)


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])
    assert common.expected_calibration_error(probs, labels) == pytest.approx(0.0)


def test_classification_metrics_match_a_direct_computation():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 5.0]])
    labels = np.array([0, 2, 2])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    metrics = common.classification_metrics(logits, labels)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["nll"] == pytest.approx(-np.log(probs[[0, 1, 2], labels]).mean())
    assert metrics["ece"] == pytest.approx(common.expected_calibration_error(probs, labels))


def test_gaussian_nll_matches_scipy():
    rng = np.random.default_rng(0)
    y, loc = rng.normal(size=50), rng.normal(size=50)
    scale = rng.uniform(0.1, 2.0, size=50)
    expected = -stats.norm.logpdf(y, loc, scale).mean()
    assert common.gaussian_nll(y, loc, scale) == pytest.approx(expected, rel=1e-12)


def test_gap_closed():
    assert common.gap_closed(0.84, 0.66, 0.96) == pytest.approx(0.6)
    # Errors: lower is better, same share of the gap.
    assert common.gap_closed(0.3, 0.5, 0.1, higher_is_better=False) == pytest.approx(0.5)
    assert common.gap_closed(0.9, 0.66, 0.96) > 0.0
    # A student worse than KD closes a negative share.
    assert common.gap_closed(0.6, 0.66, 0.96) < 0.0
    # Not quoted where the teacher is not better than KD.
    assert common.gap_closed(0.7, 0.66, 0.66) is None
    assert common.gap_closed(0.3, 0.2, 0.4, higher_is_better=False) is None


def test_mean_std_uses_the_sample_std():
    mean, std = common.mean_std([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert common.mean_std([0.5]) == (0.5, 0.0)
    assert common.format_mean_std([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"


def test_set_constant_scale_gives_that_scale_everywhere():
    import keras

    import keras_ecl

    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="relu"),
            keras_ecl.heads.HeadLayer("normal", event_size=1),
        ]
    )
    x = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    loc_before, _ = common.normal_parameters(common.predict(model, x))
    common.set_constant_scale(model, 0.7)
    loc, scale = common.normal_parameters(common.predict(model, x))
    np.testing.assert_allclose(scale, 0.7, rtol=1e-5)
    np.testing.assert_allclose(loc, loc_before, rtol=1e-6)


def test_markdown_table():
    table = common.markdown_table(["a", "b"], [["1", "2"]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]


@pytest.mark.large
@pytest.mark.parametrize("name", ["toy_regression", "friedman1", "digits", "mnist1d"])
def test_smoke_run_writes_results(name, tmp_path):
    module = importlib.import_module(f"benchmarks.{name}")
    result = module.main(["--smoke", "--seeds", "0", "1", "--output", str(tmp_path)])
    with open(tmp_path / f"{name}.json") as file:
        saved = json.load(file)
    assert saved["seeds"] == [0, 1]
    models = {"teacher", "ERM", "KD", "ECL", "KD-equal-time", "Identity"}
    assert models <= set(saved["summary"])
    for model, metrics in saved["summary"].items():
        assert len(metrics["seconds"]["values"]) == 2, model
        for values in metrics.values():
            assert all(math.isfinite(v) for v in values["values"]), model
    assert all(run["kd_equal_time"]["epochs"] >= 1 for run in saved["per_seed"])
    section = common.markdown_section(result)
    assert section.startswith(f"## {saved['title']}")
    assert "± " in section
    for figure in saved.get("figures", []):
        assert pathlib.Path(figure).stat().st_size > 10_000


def test_report_is_built_from_result_files(tmp_path):
    run_all = importlib.import_module("benchmarks.run_all")
    result = {
        "title": "Tiny",
        "description": "A hand-made result.",
        "command": "python benchmarks/tiny.py",
        "date": "2026-11-25 12:00 UTC",
        "machine": common.MACHINE,
        "seeds": [0, 1],
        "columns": [["accuracy", "test accuracy", 3]],
        "summary": {
            "teacher": {"accuracy": {"values": [0.9, 0.9]}},
            "KD": {"accuracy": {"values": [0.5, 0.7]}},
            "ECL": {"accuracy": {"values": [0.8, 0.8]}},
        },
        "gap_closed": {"metric": "accuracy", "values": {"ECL": 2 / 3}},
    }
    (tmp_path / "mnist1d.json").write_text(json.dumps(result))
    report = tmp_path / "BENCHMARKS.md"
    run_all.write_report(str(tmp_path), str(report))
    text = report.read_text()
    assert "## Tiny" in text
    assert "| student ECL | 0.800 ± 0.000 | 66.7% |" in text
    assert "| student KD (keras_ecl, mode='kd') | 0.600 ± 0.141 |  |" in text
    # The summary heads the report: ECL closes (0.8 - 0.6) / (0.9 - 0.6) of the gap.
    summary = text.split("## Summary")[1].split("## Tiny")[0]
    assert "| Tiny | test accuracy (higher is better) | 0.900 ± 0.000 | 0.600 ± 0.141 |" in summary
    assert summary.strip().endswith("| 66.7% |")


def test_moment_matched_normal_has_the_mixture_mean_and_variance():
    import keras

    import keras_ecl

    friedman1 = importlib.import_module("benchmarks.friedman1")
    head = keras_ecl.heads.Normal()

    def raw(loc, scale):  # [loc, raw_scale] whose Normal head gives (loc, scale)
        s = scale - head.min_scale
        return np.array([[loc, s + np.log(-np.expm1(-s))]], dtype="float32")

    # Mixture of N(1, 1) and N(3, 2): mean 2, variance (1 + 4) / 2 + (1 + 9) / 2 - 4 = 3.5.
    outputs = friedman1.MomentMatchedNormal()([raw(1.0, 1.0), raw(3.0, 2.0)])
    loc, scale = head.split(keras.ops.convert_to_tensor(outputs))
    assert float(loc[0, 0]) == pytest.approx(2.0, rel=1e-5)
    assert float(scale[0, 0]) == pytest.approx(np.sqrt(3.5), rel=1e-4)


def test_digits_subset_is_stratified_and_keeps_the_evaluation_splits():
    digits = importlib.import_module("benchmarks.digits")
    full = digits.load_digits()
    small = digits.load_digits(250)
    assert len(full[0]) == 1000 and len(small[0]) == 250
    assert np.bincount(small[1], minlength=10).min() >= 24  # about 25 per class
    for a, b in zip(full[2:], small[2:], strict=True):  # validation and test unchanged
        np.testing.assert_array_equal(a, b)
    # The subset is drawn from the full training split.
    rows = {tuple(image.ravel()) for image in full[0]}
    assert all(tuple(image.ravel()) in rows for image in small[0])
