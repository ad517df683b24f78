"""Runs the accuracy benchmarks and the speed benchmark, then writes BENCHMARKS.md.

Each benchmark runs in its own process (smallest first) and writes
`<output>/<name>.json`; BENCHMARKS.md is then rebuilt from whatever result
files exist, so `--report-only` regenerates it without training anything.

Run `python -m benchmarks.run_all` from the repository root (about 5 hours on a 2-core
CPU; `speed` runs last, so that nothing else loads the machine while it times); `--smoke`
for seconds-long runs, `--only toy_regression friedman1` for a subset.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.run_all")

import argparse
import json
import os
import subprocess
import sys

from benchmarks import cli, metrics, report
from keras_ecl import _atomic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCHMARKS = (  # smallest first
    *("toy_regression", "friedman1", "digits", "digits_250", "digits_teachers"),
    *("mnist1d", "mnist1d_teachers"),
    *("fashion_mnist_10pct_cnn", "fashion_mnist_10pct_mlp"),
    *("fashion_mnist_full_cnn", "fashion_mnist_full_mlp"),
)
# Feature matching on real vs extracurricular inputs: sections, not in the summary.
FEATURES = tuple(
    f"features_{task}" for task in ("mnist1d", "fashion_mnist_10pct_mlp", "fashion_mnist_10pct_cnn")
)
ABLATION = "ablation"  # on validation splits, one seed: how the default recipe was chosen
# Benchmarks that are another benchmark's module with more flags.
VARIANTS = {
    "digits_250": ("digits", ["--train-rows", "250"]),
    "digits_teachers": ("digits", ["--teachers"]),
    "mnist1d_teachers": ("mnist1d", ["--teachers"]),
    **{
        f"fashion_mnist_{regime}_{student}": (
            "fashion_mnist",
            ["--regime", regime, "--student", student],
        )
        for regime in ("10pct", "full")
        for student in ("cnn", "mlp")
    },
    **{name: ("features", ["--task", name.removeprefix("features_")]) for name in FEATURES},
}
REPORT = "BENCHMARKS.md"

INTRO = """# Benchmarks

Accuracy of ERM, knowledge distillation (KD), its best published successors
(FunMatch, DKD, KD with logit standardisation) and extracurricular learning (ECL)
students **against training time**. Per seed, KD's time for its reference epochs
is the unit; every other method trains for 4 units on the same teacher, student,
data and seed, and is scored every few epochs, so each benchmark has a frontier
(metric against seconds) and a table of each method within 1x, 2x and 4x KD's
time. Every number is the mean ± sample standard deviation over the seeds
listed. Nothing was tuned on a test split: ECL runs `keras_ecl.Distiller`'s
defaults everywhere, a recipe chosen on validation splits (last section, "Choosing
ECL's recipe"); the peers run their published settings. "Gap closed" is
`(metric − metric_KD) / (metric_teacher − metric_KD)` with KD at 1x (signs
flipped for errors), computed on the means and quoted only where the teacher beats KD.

Regenerate: `make benchmarks` (or `python -m benchmarks.run_all`);
rebuild this file from the JSON results alone with
`python -m benchmarks.run_all --report-only`. Results:
`benchmarks/results/<name>.json` (per seed, per model, with the curves), logs
next to them. docs/results.md ("Benchmarks in words") says what these tables show.
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--output", default=cli.RESULTS_DIR, help="folder of the results")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=[*BENCHMARKS, *FEATURES, ABLATION, "speed"],
        default=[*BENCHMARKS, *FEATURES, ABLATION, "speed"],
    )
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument("--report", default=REPORT, help="path of the markdown report")
    return parser.parse_args(argv)


def run(name, args):
    """Runs one benchmark in its own process; raises if it fails."""
    if name == "speed":  # timings only, into one file: no seeds
        command = [sys.executable, "-m", "benchmarks.speed"]
        command += ["--output", os.path.join(args.output, "speed.json")]
    else:
        module, flags = VARIANTS.get(name, (name, []))
        command = [sys.executable, "-m", f"benchmarks.{module}", *flags, "--output", args.output]
        seeds = args.seeds[:1] if name == ABLATION else args.seeds  # a search, not a result
        command += ["--seeds", *map(str, seeds)]
    command += ["--smoke"] if args.smoke else []
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def with_current_budget(result):
    """`result` with its budget figures recomputed from its per-seed curves.

    Files keep their curves, so a change to how budgets are read (e.g. a
    method capped at 1x has no 2x figure) reaches old files without retraining.
    """
    if "budget" in result and "per_seed" in result:
        budget = result["budget"]
        budget["summary"] = metrics.budget_summary(
            result["per_seed"], budget["metric"], budget["budgets"]
        )
    return result


def write_report(output, path):
    """BENCHMARKS.md from the result files in `output`; returns the sections written."""
    sections, results = [], {}
    for name in (*BENCHMARKS, *FEATURES):
        result_path = os.path.join(output, f"{name}.json")
        if os.path.exists(result_path):
            with open(result_path) as file:
                results[name] = with_current_budget(json.load(file))
            sections.append(report.markdown_section(results[name]))
    budgeted = {
        name: result
        for name, result in results.items()
        if "budget" in result and name not in FEATURES
    }
    if budgeted:
        speed_path = os.path.join(output, "speed.json")
        speed = None
        if os.path.exists(speed_path):
            with open(speed_path) as file:
                speed = json.load(file)
        sections.insert(0, report.summary_section(budgeted, speed))
    ablation_path = os.path.join(output, f"{ABLATION}.json")
    if os.path.exists(ablation_path):
        with open(ablation_path) as file:
            ablation = json.load(file)
        for entry in ablation["results"].values():
            with_current_budget(entry)
        sections.append(report.ablation_section(ablation))
    # One file each, no seeds; quantization.json is written after `make demo`, not here.
    for name, section in [
        ("speed", report.speed_section),
        ("quantization", report.quantization_section),
    ]:
        result_path = os.path.join(output, f"{name}.json")
        if os.path.exists(result_path):
            with open(result_path) as file:
                sections.append(section(json.load(file)))
    _atomic.write_bytes(path, "\n\n".join([INTRO.strip(), *sections]) + "\n")
    print(f"Wrote {path} ({len(sections)} sections)", flush=True)
    return sections


def main(argv=None):
    args = parse_args(argv)
    if not args.report_only:
        for name in args.only:
            run(name, args)
    write_report(args.output, args.report)


if __name__ == "__main__":
    main()
