"""The benchmark helpers compute the metrics they claim, and every benchmark's smoke run works."""

import dataclasses
import importlib
import json
import math
import pathlib
import subprocess
import sys
import time
import types
import warnings

import numpy as np
import pytest
from scipy import stats

from benchmarks import cli, harness, metrics, mnist1d, report

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = [
    *("toy_regression", "friedman1", "digits", "mnist1d", "fashion_mnist"),
    *("speed", "quantization", "run_all", "data"),
]


def test_ece_on_a_hand_example():
    # Confidences 0.9, 0.9 (bin 14, one right: accuracy 0.5) and 0.6 (bin 9, right).
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    labels = np.array([0, 0, 0])
    expected = 2 / 3 * abs(0.5 - 0.9) + 1 / 3 * abs(1.0 - 0.6)
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_ece_bins_are_closed_on_the_right():
    # Two bins, (0, 0.5] and (0.5, 1]: confidence 0.5 falls in the first, 1.0 in the last.
    probs = np.array([[0.5, 0.5], [0.8, 0.2], [0.3, 0.7], [1.0, 0.0]])
    labels = np.array([1, 0, 1, 0])
    expected = 1 / 4 * abs(0.0 - 0.5) + 3 / 4 * abs(1.0 - (0.8 + 0.7 + 1.0) / 3)
    assert expected == pytest.approx(0.25)
    assert metrics.expected_calibration_error(probs, labels, num_bins=2) == pytest.approx(expected)


def test_ece_is_zero_when_confidence_matches_accuracy():
    probs = np.array([[0.75, 0.25]] * 4)
    labels = np.array([0, 0, 0, 1])
    assert metrics.expected_calibration_error(probs, labels) == pytest.approx(0.0)


def test_classification_metrics_match_a_direct_computation():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 5.0]])
    labels = np.array([0, 2, 2])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scores = metrics.classification_metrics(logits, labels)
    assert scores["accuracy"] == pytest.approx(2 / 3)
    assert scores["nll"] == pytest.approx(-np.log(probs[[0, 1, 2], labels]).mean())
    assert scores["ece"] == pytest.approx(metrics.expected_calibration_error(probs, labels))


def test_gaussian_nll_matches_scipy():
    rng = np.random.default_rng(0)
    y, loc = rng.normal(size=50), rng.normal(size=50)
    scale = rng.uniform(0.1, 2.0, size=50)
    expected = -stats.norm.logpdf(y, loc, scale).mean()
    assert metrics.gaussian_nll(y, loc, scale) == pytest.approx(expected, rel=1e-12)


def test_gap_closed():
    assert metrics.gap_closed(0.84, 0.66, 0.96) == pytest.approx(0.6)
    # Errors: lower is better, same share of the gap.
    assert metrics.gap_closed(0.3, 0.5, 0.1, higher_is_better=False) == pytest.approx(0.5)
    assert metrics.gap_closed(0.9, 0.66, 0.96) > 0.0
    # A student worse than KD closes a negative share.
    assert metrics.gap_closed(0.6, 0.66, 0.96) < 0.0
    # Not quoted where the teacher is not better than KD.
    assert metrics.gap_closed(0.7, 0.66, 0.66) is None
    assert metrics.gap_closed(0.3, 0.2, 0.4, higher_is_better=False) is None


def test_mean_std_uses_the_sample_std():
    mean, std = metrics.mean_std([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert metrics.mean_std([0.5]) == (0.5, 0.0)
    assert metrics.format_mean_std([1.0, 2.0, 3.0], digits=2) == "2.00 ± 1.00"


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
    loc_before, _ = harness.normal_parameters(harness.predict(model, x))
    harness.set_constant_scale(model, 0.7)
    loc, scale = harness.normal_parameters(harness.predict(model, x))
    np.testing.assert_allclose(scale, 0.7, rtol=1e-5)
    np.testing.assert_allclose(loc, loc_before, rtol=1e-6)


def test_markdown_table():
    table = report.markdown_table(["a", "b"], [["1", "2"]])
    assert table.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | 2 |"]


class FakeCurve:
    """A curve whose scorings are given: `(epoch, seconds, m)` triples."""

    def __init__(self, points):
        self.points = [{"epoch": e, "seconds": t, "m": m} for e, t, m in points]

    def seconds_at(self, epoch):
        return next(p["seconds"] for p in self.points if p["epoch"] == epoch)

    def final(self):
        return self.points[-1]


def test_run_times_kd_first_and_gives_the_others_its_budget():
    # Stand-ins for models: `run` hands them to the task's own callables only.
    budgets_seen = []

    def kd(trial):
        budgets_seen.append(trial.budget_seconds)
        return harness.Trained(trial.teacher, FakeCurve([(1, 2.0, 0.1), (2, 4.0, 0.2)]))

    def other(trial):
        budgets_seen.append(trial.budget_seconds)
        return harness.Trained(
            trial.teacher, FakeCurve([(1, 3.0, 0.5), (2, 12.0, 0.6)]), extra={"x": 1}
        )

    config = harness.TrainConfig(
        teacher_epochs=1, student_epochs=2, batch_size=8, learning_rate=1e-3, budgets=(1.0, 3.0)
    )
    task = harness.Task(
        name="fake",
        data=(None, None),
        teacher=lambda seed: (f"teacher {seed}", 10.0 + seed),
        make_student=None,
        runs=lambda seed: {},
        config=config,
        score=lambda model, teacher: {"m": float(teacher[-1])},
        methods=(
            harness.Method("KD", kd),
            harness.Method("A", other),
            harness.Method("B", other, budget=1.0),
        ),
    )
    seen = []
    per_seed = harness.run(task, [0, 1], on_models=lambda seed, models: seen.append(models))
    assert seen[1] == {
        "teacher": "teacher 1",
        "KD": "teacher 1",
        "A": "teacher 1",
        "B": "teacher 1",
    }
    # KD's time for its 2 reference epochs is the unit: A trains for 3 units, B for its 1.
    assert budgets_seen == [None, 12.0, 4.0, None, 12.0, 4.0]
    assert per_seed[1]["budget_unit_seconds"] == 4.0 and per_seed[1]["x"] == 1
    assert per_seed[1]["models"]["A"] == {"seconds": 12.0, "m": 0.6}
    assert per_seed[1]["models"]["teacher"] == {"m": 1.0, "seconds": 11.0}
    budget = metrics.budget_summary(per_seed, "m", config.budgets)
    assert budget["KD"]["1.0"]["values"] == [0.2, 0.2]  # epoch 2, at 4 s
    assert budget["A"]["1.0"]["values"] == [0.5, 0.5]  # its scoring at 3 s is within 4 s
    assert budget["A"]["3.0"]["values"] == [0.6, 0.6]
    with pytest.raises(ValueError, match="must be KD. Received: A"):
        harness.run(dataclasses.replace(task, methods=task.methods[1:]), [0])


def test_at_budget_takes_the_last_scoring_within_it():
    points = [{"seconds": s, "m": m} for s, m in [(1.0, 0.1), (2.0, 0.2), (3.03, 0.3)]]
    assert metrics.at_budget(points, 2.5, "m") == 0.2
    assert metrics.at_budget(points, 3.0, "m") == 0.3  # 3.03 is 1 % over: within the slack
    assert metrics.at_budget(points, 2.0, "m") == 0.2
    assert metrics.at_budget(points, 0.5, "m") is None
    # A curve that ends well short of a budget (a 1x reference) has no figure there.
    assert metrics.at_budget(points, 3.15, "m") == 0.3
    assert metrics.at_budget(points, 3.3, "m") is None
    # KD trains a fixed epoch count: its end counts for the largest budget.
    assert metrics.at_budget(points, 3.3, "m", fixed_epochs=True) == 0.3


def test_time_to_reach_kd_is_the_first_scoring_as_good_as_kds_end():
    def curve(*points):
        return [{"seconds": s, "m": m} for s, m in points]

    kd = curve((2.0, 0.5), (4.0, 0.8))
    runs = [
        {"curves": {"KD": kd, "ECL": curve((1.0, 0.7), (1.5, 0.8), (3.0, 0.9))}},
        {"curves": {"KD": kd, "ECL": curve((1.0, 0.7), (8.0, 0.79))}},  # never gets there
    ]
    assert metrics.time_to_reach_kd(runs, "ECL", "m", True) == [1.5 / 4.0, None]
    # For an error, lower is better: 0.5 is reached at once, 0.4 never.
    errors = [{"curves": {"KD": curve((4.0, 0.5)), "ECL": curve((1.0, 0.5), (2.0, 0.6))}}]
    assert metrics.time_to_reach_kd(errors, "ECL", "m", False) == [0.25]


def test_mean_curve_steps_and_averages_over_seeds():
    runs = [
        {"budget_unit_seconds": 1.0, "curves": {"A": [{"seconds": 1.0, "m": 1.0}]}},
        {
            "budget_unit_seconds": 2.0,
            "curves": {"A": [{"seconds": 1.0, "m": 3.0}, {"seconds": 2.0, "m": 3.0}]},
        },
    ]
    curve = metrics.mean_curve(runs, "A", "m", np.array([0.25, 0.5, 1.0, 3.0]))
    # Seed 2 scores at 0.5 and 1 units, seed 1 at 1 unit: before both and after both, NaN.
    assert np.isnan(curve[0]) and curve[1] == 3.0 and curve[2] == 2.0 and np.isnan(curve[3])


def test_curve_scores_every_few_epochs_stops_at_its_budget_and_excludes_scoring_time(monkeypatch):
    import keras

    # A clock that ticks 1 s per reading and 100 s per scoring: the curve's
    # seconds are then known exactly (a wall clock under load is not).
    now = [0.0]

    def perf_counter():
        now[0] += 1.0
        return now[0]

    def score():
        now[0] += 100.0  # scoring time must not count
        return {"m": float(len(curve.points) + 1)}

    monkeypatch.setattr(harness, "time", types.SimpleNamespace(perf_counter=perf_counter))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    curve = harness.Curve(score, every=2, budget_seconds=None)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=5, verbose=0, callbacks=[curve])
    assert [p["epoch"] for p in curve.points] == [2, 4, 5]  # and the last epoch
    assert [p["seconds"] for p in curve.points] == [2.0, 4.0, 5.0]  # one tick per epoch
    assert curve.seconds == 5.0
    budgeted = harness.Curve(score, every=100, budget_seconds=1e-9)
    model.fit(np.zeros((4, 2)), np.zeros((4, 1)), epochs=50, verbose=0, callbacks=[budgeted])
    assert [p["epoch"] for p in budgeted.points] == [1]  # stopped at the first epoch end


def test_a_fractional_eval_every_scores_within_epochs_and_walks_through_the_data():
    import keras

    def config(eval_every):
        return harness.TrainConfig(
            teacher_epochs=1,
            student_epochs=1,
            batch_size=2,
            learning_rate=0.1,
            eval_every=eval_every,
        )

    for bad in (0.3, 1.5, 0):
        message = rf"1/k for a whole number k; received eval_every={bad}"
        with pytest.raises(ValueError, match=message):
            config(bad)
    assert config(0.25).parts_per_epoch == 4 and config(3).parts_per_epoch == 1
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.arange(10, dtype="float32")[:, None]  # 5 batches of 2: halves of 3 and 2 batches
    task = harness.Task(
        name="fake",
        data=(x, x),
        teacher=None,
        make_student=None,
        runs=None,
        config=config(0.5),
        score=lambda student, teacher: {"steps": int(student.optimizer.iterations)},
        methods=(),
    )
    trial = harness.Trial(task=task, seed=0, runs={}, teacher=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Your input ran out of data")
        curve = trial.fit(model, epochs=2)
    # Each half epoch is scored; the short second half ends a pass, the next starts afresh.
    steps = [(p["epoch"], p["steps"]) for p in curve.points]
    assert steps == [(0.5, 3), (1.0, 5), (1.5, 8), (2.0, 10)]
    assert curve.seconds_at(1) == curve.points[1]["seconds"]


# Each smoke run traces some ten models (about 12-16 s on 2 shared cores): all
# run in `make test`, none in `make test-fast`. digits runs end to end in the
# teacher-choice smoke below (its classification students: mnist1d's here).
@pytest.mark.large
@pytest.mark.parametrize("name", ["friedman1", "mnist1d", "toy_regression"])
def test_smoke_run_writes_results(name, tmp_path):
    module = importlib.import_module(f"benchmarks.{name}")
    argv = ["--smoke", "--seeds", "0", "--output", str(tmp_path)]
    result = module.main(argv)
    saved = json.loads((tmp_path / f"{name}.json").read_text())
    assert saved["seeds"] == [0]
    assert saved["command"] == " ".join(["python -m", f"benchmarks.{name}", *argv])
    assert saved["config"] == json.loads(json.dumps(dataclasses.asdict(module.CONFIGS["smoke"])))
    assert saved["machine"]["cores"] >= 1
    regression = name in ("friedman1", "toy_regression")
    methods = harness.CLASSIFICATION_METHODS
    teachers = {"teacher"}
    if regression:  # and the same KD and ECL from the teacher calibrated on validation
        methods = harness.REGRESSION_METHODS + harness.CALIBRATED_METHODS
        teachers.add("teacher, calibrated")
    assert set(saved["summary"]) == {*teachers, *(m.label for m in methods)}
    for model, scores in saved["summary"].items():
        assert len(scores["seconds"]["values"]) == 1, model
        for values in scores.values():
            assert all(math.isfinite(v) for v in values["values"]), model
    run = saved["per_seed"][0]
    if regression:
        calibration = run["calibration"]
        assert calibration["nll_after"] <= calibration["nll_before"] + 1e-6
        assert all(f > 0 for f in calibration["factors"])
    unit = run["budget_unit_seconds"]
    budgets = {m.label: m.budget or max(saved["config"]["budgets"]) for m in methods}
    for label, points in run["curves"].items():
        assert points[-1]["seconds"] >= budgets[label] * unit or label == "KD"
    assert set(saved["budget"]["summary"]["KD"]) == {"1.0", "2.0"}
    section = report.markdown_section(result)
    assert section.startswith(f"## {saved['title']}")
    assert "± " in section
    for figure in saved.get("figures", []):
        assert pathlib.Path(figure).stat().st_size > 10_000


def _at(**budgets):
    """A budget summary entry: `{"1.0": {"mean", "values"}, ...}` from `x1=[...]`, `x2=[...]`."""
    return {key[1:] + ".0": {"mean": float(np.mean(v)), "values": v} for key, v in budgets.items()}


def test_report_is_built_from_result_files(tmp_path):
    run_all = importlib.import_module("benchmarks.run_all")
    result = {
        "title": "Tiny: hand-made",
        "description": "A hand-made result.",
        # As written before the benchmarks were a package.
        "command": ".venv/bin/python benchmarks/tiny.py --seeds 0 1",
        "date": "2026-11-25 12:00 UTC",
        "machine": "2-core CPU, no GPU",
        "seeds": [0, 1],
        "columns": [["accuracy", "test accuracy", 3], ["ece", "test ECE", 3]],
        "summary": {
            "teacher": {
                "accuracy": {"values": [0.9, 0.9]},
                "ece": {"mean": 0.04, "values": [0.03, 0.05]},
            },
            "KD": {
                "accuracy": {"values": [0.5, 0.7]},
                "ece": {"mean": 0.15, "values": [0.1, 0.2]},
            },
            "ECL": {
                "accuracy": {"values": [0.8, 0.8]},
                "ece": {"mean": 0.03, "values": [0.02, 0.04]},
            },
        },
        "budget": {
            "metric": "accuracy",
            "label": "test accuracy",
            "higher_is_better": True,
            "budgets": [1.0, 2.0],
            "summary": {
                "teacher": _at(x1=[0.9, 0.9], x2=[0.9, 0.9]),
                "KD": _at(x1=[0.5, 0.7], x2=[0.6, 0.7]),
                "ECL": _at(x2=[0.8, 0.8]),  # first scored after 1x
            },
        },
    }
    (tmp_path / "mnist1d.json").write_text(json.dumps(result))
    ablation = {
        "title": "Choosing",
        "description": "One change at a time.",
        "command": "python -m benchmarks.ablation --seeds 0 --only mnist1d",
        "date": "2026-11-25 12:00 UTC",
        "machine": "2-core CPU, no GPU",
        "seeds": [0],
        "results": {
            "mnist1d": {
                "command": "python -m benchmarks.ablation --seeds 0 --only mnist1d",
                "budget": {
                    **result["budget"],
                    "label": "validation accuracy",
                    "summary": {
                        "teacher": _at(x1=[0.9], x2=[0.9]),
                        "default recipe": _at(x1=[0.7], x2=[0.8]),
                        "k = 2": _at(x1=[0.75], x2=[0.78]),
                    },
                },
            }
        },
    }
    (tmp_path / "ablation.json").write_text(json.dumps(ablation))
    path = tmp_path / "BENCHMARKS.md"
    run_all.write_report(str(tmp_path), str(path))
    text = path.read_text()
    assert "## Tiny: hand-made" in text
    assert "Command: `python -m benchmarks.tiny --seeds 0 1`" in text
    assert "machine: 2-core CPU, no GPU." in text
    # Within each budget; ECL closes (0.8 - 0.6) / (0.9 - 0.6) of the gap to KD at 1x.
    assert "| student KD (keras_ecl, mode='kd') | 0.600 ± 0.141 | 0.650 ± 0.071 |" in text
    assert "| student ECL |  | 0.800 ± 0.000 |" in text
    assert "| ECL: share of the teacher–KD(1x) gap closed |  | 66.7% |" in text
    # The summary heads the report: per budget the best student (KD at 1x, where ECL
    # has no scoring: a dash in its gap), and the final students' calibration.
    summary = text.split("## Summary")[1].split("## Tiny")[0]
    winners = "| Tiny: hand-made | test accuracy (higher is better) | 0.900 | 0.600 | KD 0.600 |"
    assert winners + " ECL 0.800 |  | – / 67% |" in summary
    assert "| Tiny: hand-made | test ECE | 0.040 |  | 0.150 |  | 0.030 |  |" in summary
    for line in summary.splitlines():
        assert line.count(" | ") <= 7, line  # no summary table wider than 8 columns
    # The ablation comes last, each variant against the default recipe.
    section = text.split("## Choosing")[1]
    assert "| k = 2 | 0.750 ± 0.000 | 0.780 ± 0.000 | +0.050 | -0.020 |" in section
    assert "Command: `python -m benchmarks.ablation --seeds 0 --only mnist1d`" in section


def test_configs_are_frozen_and_reject_unknown_fields():
    sizes = dict(teacher_epochs=1, student_epochs=1, batch_size=8, learning_rate=1e-3)
    with pytest.raises(TypeError, match="probe_epochs"):
        harness.TrainConfig(**sizes, probe_epochs=1)
    friedman1 = importlib.import_module("benchmarks.friedman1")
    with pytest.raises(TypeError, match="teacher_member"):
        friedman1.Config(**sizes, patience=1, teacher_member=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        friedman1.CONFIGS["smoke"].student_epochs = 3


def test_machine_is_detected_at_run_time():
    machine = report.machine()
    assert set(machine) == {
        "cpu",
        "cores",
        "gpus",
        "python",
        "tensorflow",
        "keras",
        "tensorflow_probability",
        "keras_ecl",
    }
    assert machine["cpu"].strip() and machine["cores"] >= 1
    line = report.describe_machine(machine)
    assert line.startswith(f"{machine['cpu']} ({machine['cores']} cores)")
    assert f"TensorFlow {machine['tensorflow']}" in line
    # Result files from before the detection hold a plain string, shown as it is.
    assert report.describe_machine("2-core CPU, no GPU") == "2-core CPU, no GPU"


def test_command_line_is_the_module_form():
    assert cli.command_line("digits", ["--seeds", "0"]) == "python -m benchmarks.digits --seeds 0"
    old = ".venv/bin/python benchmarks/digits.py --train-rows 250 --seeds 0 1 2"
    shown = "python -m benchmarks.digits --train-rows 250 --seeds 0 1 2"
    assert report.shown_command(old) == shown
    assert report.shown_command(shown) == shown


def test_add_seeds_keeps_the_seeds_it_does_not_rerun(tmp_path):
    config = mnist1d.CONFIGS["smoke"]
    earlier = {
        "config": dataclasses.asdict(config),
        "command": "python -m benchmarks.mnist1d --seeds 0 1",
        "date": "2026-12-05 06:53 UTC",
        "per_seed": [{"seed": 0, "models": "a"}, {"seed": 1, "models": "old"}],
    }
    (tmp_path / "mnist1d.json").write_text(json.dumps(earlier))
    args, _ = cli.parse_args(
        "doc", mnist1d.CONFIGS, ["--smoke", "--add-seeds", "--output", str(tmp_path)]
    )
    loaded = cli.earlier_result(args, "mnist1d", config)
    new = [{"seed": 2, "models": "c"}, {"seed": 1, "models": "new"}]
    per_seed, command, date = cli.with_earlier_seeds(loaded, new, "python -m x --seeds 2 1")
    assert [(entry["seed"], entry["models"]) for entry in per_seed] == [
        (0, "a"),
        (1, "new"),
        (2, "c"),
    ]
    assert command == "python -m benchmarks.mnist1d --seeds 0 1 && python -m x --seeds 2 1"
    assert date.startswith("2026-12-05 06:53 UTC (seeds 0); ") and date.endswith("(seeds 2 1)")
    # Without the flag nothing is read and the new seeds stand alone.
    args, _ = cli.parse_args("doc", mnist1d.CONFIGS, ["--smoke", "--output", str(tmp_path)])
    assert cli.earlier_result(args, "mnist1d", config) is None
    assert cli.with_earlier_seeds(None, new, "c")[:2] == (new, "c")


def test_add_seeds_refuses_a_missing_or_different_run(tmp_path):
    args, config = cli.parse_args(
        "doc", mnist1d.CONFIGS, ["--smoke", "--add-seeds", "--output", str(tmp_path)]
    )
    with pytest.raises(FileNotFoundError, match="--add-seeds needs an earlier result file"):
        cli.earlier_result(args, "mnist1d", config)
    other = dataclasses.asdict(mnist1d.CONFIGS["full"])
    (tmp_path / "mnist1d.json").write_text(json.dumps({"config": other, "per_seed": []}))
    with pytest.raises(ValueError, match="was run with another config"):
        cli.earlier_result(args, "mnist1d", config)


@pytest.mark.parametrize("name", SCRIPTS)
def test_running_a_file_says_to_run_the_module(name):
    result = subprocess.run(
        [sys.executable, f"benchmarks/{name}.py", "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr == f"Run it from the repository root: python -m benchmarks.{name}\n"


def test_predict_combines_an_ensemble_teacher_as_its_student_sees_it():
    import keras_ecl

    members = [small_mlp(units) for units in (4, 8)]
    ensemble = keras_ecl.teachers.Ensemble(members)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    stacked = np.stack([m.predict(x, verbose=0) for m in members], axis=-2)
    for head in ["categorical", "normal"]:
        expected = keras_ecl.heads.get(head).mixture_outputs(stacked, [0.5, 0.5])
        np.testing.assert_allclose(harness.predict(ensemble, x, head=head), expected, rtol=1e-5)


def small_mlp(units):
    from tests import testing

    return testing.mlp(outputs=4, units=units)


def test_peers_are_distiller_options_with_their_published_settings():
    peers = harness.peer_options(seed=0, steps_per_epoch=40)
    assert peers["FunMatch"]["supervised_weight"] == 0.0 and peers["FunMatch"]["real_weight"] == 0
    assert peers["DKD"]["head"].get_config() == {
        "temperature": 4.0,
        "standardize": False,
        "alpha": 1.0,
        "beta": 8.0,
    }
    assert peers["DKD"]["warmup_steps"] == 20 * 40
    assert peers["LS-KD"]["head"].standardize and peers["LS-KD"]["head"].temperature == 2.0
    # CE : KD = 0.1 : 9, as the reference configs weigh them.
    weight = peers["LS-KD"]["supervised_weight"]
    assert weight / (1 - weight) == pytest.approx(0.1 / 9)


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


@pytest.mark.large
def test_teacher_choice_smoke_run_distils_from_three_teachers(tmp_path):
    # digits --teachers: KD and ECL from the teacher, from it calibrated on the
    # validation split, and from an ensemble of 3 (the first member is the teacher).
    module = importlib.import_module("benchmarks.digits")
    argv = ["--smoke", "--teachers", "--seeds", "0", "--output", str(tmp_path)]
    result = module.main(argv)
    saved = json.loads((tmp_path / "digits_teachers.json").read_text())
    teachers = {"teacher", "teacher, calibrated", "teacher, ensemble of 3"}
    methods = {m.label for m in harness.TEACHER_CHOICE_METHODS}
    assert methods == {"KD", "ECL", "KD-cal", "ECL-cal", "KD-ens", "ECL-ens"}
    assert set(saved["summary"]) == teachers | methods
    run = saved["per_seed"][0]
    assert run["calibration"]["nll_after"] <= run["calibration"]["nll_before"] + 1e-6
    members = run["ensemble_members"]
    assert len(members) == 3 and members[0] == {
        k: v for k, v in run["models"]["teacher"].items() if k != "seconds"
    }
    assert saved["config"]["budgets"] == [1.0, 2.0]
    # What the plain digits smoke checked of its own run (its parametrization is gone).
    assert saved["command"] == " ".join(["python -m", "benchmarks.digits", *argv])
    for model, scores in saved["summary"].items():
        for values in scores.values():
            assert all(math.isfinite(v) for v in values["values"]), model
    section = report.markdown_section(result)
    assert section.startswith(f"## {saved['title']}") and "± " in section


def test_a_method_names_a_known_teacher():
    with pytest.raises(ValueError, match="teacher must be one of .*Received: 'calibrate'"):
        harness.Method("KD-x", harness.distilled("KD"), teacher="calibrate")


def test_the_cpu_clock_ignores_time_spent_waiting(monkeypatch):
    monkeypatch.setitem(harness._clock, "name", "wall")
    start = harness.clock()
    time.sleep(0.3)
    assert harness.clock() - start >= 0.3
    harness.use_clock("cpu")
    start = harness.clock()
    time.sleep(0.3)  # a machine busy with other jobs: waiting is not this run's time
    assert harness.clock() - start < 0.1
    with pytest.raises(ValueError, match="`clock` must be one of \\['cpu', 'wall'\\]"):
        harness.use_clock("gpu")
    notes = harness.budget_notes(mnist1d.CONFIGS["smoke"], "cpu")
    assert "the process's CPU seconds (`--clock cpu`" in notes[1]
    assert harness.budget_notes(mnist1d.CONFIGS["smoke"])[1].endswith("same machine.")


def test_add_seeds_refuses_a_run_on_another_clock(tmp_path):
    config = mnist1d.CONFIGS["smoke"]
    earlier = {"config": dataclasses.asdict(config), "per_seed": []}  # no clock: wall
    (tmp_path / "mnist1d.json").write_text(json.dumps(earlier))
    args, _ = cli.parse_args(
        "doc", mnist1d.CONFIGS, ["--smoke", "--add-seeds", "--output", str(tmp_path)]
    )
    args.clock = "cpu"
    with pytest.raises(ValueError, match="timed on another clock.*Expected: --clock wall"):
        cli.earlier_result(args, "mnist1d", config)
    args.clock = "wall"
    assert cli.earlier_result(args, "mnist1d", config)["per_seed"] == []


@pytest.mark.large
def test_features_smoke_run_matches_the_penultimate_layers_with_and_without_extracurricular(
    tmp_path, monkeypatch
):
    features = importlib.import_module("benchmarks.features")
    import keras_ecl

    built = []

    class Recording(keras_ecl.Distiller):
        def __init__(self, student, teacher, **options):
            super().__init__(student, teacher, **options)
            built.append((student, teacher, self))

    monkeypatch.setattr(keras_ecl, "Distiller", Recording)
    argv = ["--task", "mnist1d", "--smoke", "--seeds", "0", "--output", str(tmp_path)]
    features.main(argv)
    saved = json.loads((tmp_path / "features_mnist1d.json").read_text())
    assert set(saved["summary"]) == {"teacher", "KD", "KD + features", "ECL", "ECL + features"}
    assert saved["budget"]["budgets"] == [1.0, 2.0] and saved["clock"] == "wall"
    # KD and ECL come from the harness with the head's KL alone; the other two add the term.
    assert [d.distillation_losses is None for _, _, d in built] == [True, False, True, False]
    with_features = [entry for entry in built if entry[2].distillation_losses is not None]
    for (student, teacher, distiller), mode in zip(with_features, ("kd", "ecl"), strict=True):
        head_kl, term = distiller.distillation_losses
        assert isinstance(head_kl, keras_ecl.objectives.HeadKL) and distiller.mode == mode
        # The layers the heads read: the teacher's Flatten (2560) and the student's Dense 256.
        assert term.teacher_layer_name == teacher.layers[-2].name
        assert term.student_layer_name == student.layers[-2].name
        assert term.projection.units == 2560
        assert distiller.distillation_loss_weights == [1.0, features.FEATURE_WEIGHT]
    assert "student ECL + feature matching (on extracurricular inputs)" in (
        report.markdown_section(saved)
    )
