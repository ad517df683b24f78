"""Result files and the markdown report: JSON in, BENCHMARKS.md sections and figures out.

Each run writes one JSON file with its command, date and the machine detected at run time, and
the report is rebuilt from those files alone. Only `machine()` and figures load more than the
standard library and NumPy, and only when called, so rebuilding the report trains nothing.
"""

import datetime
import importlib.metadata
import json
import os
import platform
import re

from benchmarks import metrics
from keras_ecl import _atomic

CLASSIFICATION_COLUMNS = [  # [metric, table header, digits]
    ["accuracy", "test accuracy", 3],
    ["nll", "test NLL", 3],
    ["ece", f"test ECE ({metrics.ECE_BINS} bins)", 3],
    ["seconds", "train s", 0],
]

# Model keys shared by the benchmarks, and how tables name them.
LABELS = {
    "teacher": "teacher",
    "ERM": "student ERM",
    "KD": "student KD (keras_ecl, mode='kd')",
    "KD-keras": "student KD (keras.distillation.Distiller)",
    "KD-MSE": "student KD, MSE to the teacher's mean",
    "FunMatch": "student FunMatch (function matching)",
    "DKD": "student DKD (decoupled KD)",
    "LS-KD": "student KD + logit standardisation",
    "ECL": "student ECL",
    "teacher, calibrated": "teacher, calibrated on validation (keras_ecl.calibrate)",
    "KD-cal": "student KD from the calibrated teacher",
    "ECL-cal": "student ECL from the calibrated teacher",
    "teacher, ensemble of 3": "teachers, ensemble of 3 (keras_ecl.teachers.Ensemble)",
    "KD-ens": "student KD from the ensemble",
    "ECL-ens": "student ECL from the ensemble",
}
# The models of the budget summary, in order (those a result has).
BUDGET_MODELS = (
    *("KD", "ERM", "KD-keras", "KD-MSE", "FunMatch", "DKD", "LS-KD", "ECL"),
    *("KD-cal", "ECL-cal", "KD-ens", "ECL-ens"),
)


# The machine.


def machine():
    """The machine a run is on: CPU model, core count, GPUs and library versions."""
    import keras
    import tensorflow as tf

    import keras_ecl

    gpus = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpus": gpus,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        # Importing TFP takes seconds (and tf-keras) for a version string.
        "tensorflow_probability": importlib.metadata.version("tensorflow-probability"),
        "keras_ecl": keras_ecl.__version__,
    }


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(machine):
    """One line for a result's `machine`; files written before detection hold a string."""
    if isinstance(machine, str):
        return machine
    gpus = ", ".join(machine["gpus"]) or "no GPU"
    return (
        f"{machine['cpu']} ({machine['cores']} cores), {gpus}; Python {machine['python']}, "
        f"TensorFlow {machine['tensorflow']}, Keras {machine['keras']}, "
        f"TFP {machine['tensorflow_probability']}, keras_ecl {machine['keras_ecl']}"
    )


def shown_command(command):
    """A result's command as it runs today.

    Files written before the benchmarks became a package name the script
    (`.venv/bin/python benchmarks/digits.py ...`); the module form replaces it.
    """
    return re.sub(r"^\S*python benchmarks/(\w+)\.py", r"python -m benchmarks.\1", command)


# Result files.


def write_json(path, name, payload):
    """Writes `payload` to `path` under `name`, with the date and the machine; returns it."""
    payload = {
        "name": name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        **payload,
    }
    _atomic.write_bytes(path, json.dumps(payload, indent=2))
    print(f"Wrote {path}", flush=True)
    return payload


def write_results(name, payload, output):
    """Writes `<output>/<name>.json` (see `write_json`); returns what it wrote."""
    return write_json(os.path.join(output, f"{name}.json"), name, payload)


def finish(name, result, output):
    """Writes the result file, prints its table and returns the result."""
    result = write_results(name, result, output)
    print(results_table(result), flush=True)
    return result


# Markdown.


def markdown_table(headers, rows):
    """A GitHub markdown table from a header row and rows of strings."""
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(result):
    """The mean ± std table of a result file, with a gap-closed column if any."""
    columns = result["columns"]  # [[metric, header, digits], ...]
    gap = result.get("gap_closed", {})
    headers = ["model", *(header for _, header, _ in columns)]
    if gap:
        headers.append(f"gap closed vs KD ({gap['metric']})")
    rows = []
    for model, model_metrics in result["summary"].items():
        row = [LABELS.get(model, model)]
        for metric, _, digits in columns:
            values = model_metrics.get(metric)
            row.append(metrics.format_mean_std(values["values"], digits) if values else "")
        if gap:
            value = gap["values"].get(model)
            row.append("" if value is None else f"{value:.1%}")
        rows.append(row)
    return markdown_table(headers, rows)


def budget_table(result):
    """Each model's headline metric within 1x, 2x, 4x KD's time, and ECL's gap closed.

    The gap is closed against KD at 1x (its reference epochs), where the teacher beats it.
    """
    budget = result["budget"]
    metric, higher, budgets = budget["metric"], budget["higher_is_better"], budget["budgets"]
    summary = budget["summary"]
    headers = ["model", *(f"{metric} within {b:g}x KD's time" for b in budgets)]
    rows = [
        [LABELS.get(model, model)]
        + [
            metrics.format_mean_std(values[str(b)]["values"]) if str(b) in values else ""
            for b in budgets
        ]
        for model, values in summary.items()
    ]
    teacher = summary["teacher"][str(budgets[0])]["mean"]
    kd = summary["KD"][str(budgets[0])]["mean"]
    if "ECL" in summary:
        gaps = [
            metrics.gap_closed(summary["ECL"][str(b)]["mean"], kd, teacher, higher)
            if str(b) in summary["ECL"]
            else None
            for b in budgets
        ]
        rows.append(
            ["ECL: share of the teacher–KD(1x) gap closed"]
            + ["" if gap is None else f"{gap:.1%}" for gap in gaps]
        )
    table = markdown_table(headers, rows)
    if "ECL" in summary and "per_seed" in result:
        ratios = metrics.time_to_reach_kd(result["per_seed"], "ECL", metric, higher)
        shown = ", ".join("never" if r is None else f"{r:.2f}" for r in ratios)
        table += (
            f"\n\nECL reaches KD's final {metric} (KD after {max(budgets):g}x) in this share "
            f"of KD's time, per seed: {shown}."
        )
    return table


def frontier_figure(result, path, title):
    """Headline metric against training time (in KD-time units), mean over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    budget, per_seed = result["budget"], result["per_seed"]
    grid = np.linspace(0.0, max(budget["budgets"]), 200)[1:]
    unit = float(np.mean([run["budget_unit_seconds"] for run in per_seed]))
    figure, axes = plt.subplots(figsize=(8, 4.5))
    teacher = np.mean([run["models"]["teacher"][budget["metric"]] for run in per_seed])
    axes.axhline(teacher, color="0.4", linestyle="--", label="teacher")
    for i, model in enumerate(m for m in per_seed[0]["curves"]):
        curve = metrics.mean_curve(per_seed, model, budget["metric"], grid)
        style = dict(linewidth=2.5) if model == "ECL" else dict(linewidth=1.3)
        axes.plot(grid, curve, label=LABELS.get(model, model), color=f"C{i}", **style)
    for b in budget["budgets"]:
        axes.axvline(b, color="0.85", linewidth=0.8)
    axes.set_xlabel(
        f"training time, in units of KD's time for its reference epochs (~{unit:.0f} s)"
    )
    axes.set_ylabel(budget["label"])
    axes.set_title(f"{title} (mean over {len(per_seed)} seeds)")
    axes.legend(fontsize=8, loc="lower right" if budget["higher_is_better"] else "upper right")
    save_figure(figure, path)


def section_head(result, command_label):
    """A section's title, description, and a line with its command, date, seeds and machine."""
    seeds = ", ".join(str(s) for s in result["seeds"])
    return [
        f"## {result['title']}",
        result["description"],
        f"{command_label}: `{shown_command(result['command'])}`  \nDate: {result['date']}; "
        f"seeds {seeds}; machine: {describe_machine(result['machine'])}.",
    ]


def markdown_section(result):
    """A BENCHMARKS.md section for one accuracy result file."""
    parts = section_head(result, "Command")
    parts[-1] += f" Mean ± sample std over {len(result['seeds'])} seed(s)."
    if "budget" in result:
        parts.append(budget_table(result))
        parts.append(
            "Final students (after the largest budget; teacher as trained):\n\n"
            + results_table(result)
        )
    else:
        parts.append(results_table(result))
    if result.get("notes"):
        parts.append("\n".join(f"- {note}" for note in result["notes"]))
    for figure in result.get("figures", []):
        parts.append(f"![{result['title']}]({figure})")
    return "\n\n".join(parts)


def ablation_table(entry, reference="default recipe"):
    """Each variant's metric within each budget, and its difference to `reference`."""
    budget = entry["budget"]
    summary, budgets = budget["summary"], budget["budgets"]
    headers = ["variant", *(f"{budget['label']} within {b:g}x KD's time" for b in budgets)]
    headers += [f"change vs {reference} at {b:g}x" for b in budgets]
    rows = []
    for model, values in summary.items():
        if model == "teacher":
            continue
        row = [LABELS.get(model, model)]
        row += [
            metrics.format_mean_std(values[str(b)]["values"]) if str(b) in values else ""
            for b in budgets
        ]
        for b in budgets:
            if model == reference or str(b) not in values or str(b) not in summary[reference]:
                row.append("")
                continue
            delta = values[str(b)]["mean"] - summary[reference][str(b)]["mean"]
            row.append(f"{delta:+.3f}")
        rows.append(row)
    teacher = summary["teacher"][str(budgets[0])]["mean"]
    return f"Teacher: {teacher:.3f}.\n\n" + markdown_table(headers, rows)


def ablation_section(result):
    """The BENCHMARKS.md section of the ablation's result file."""
    parts = section_head(result, "Last command")
    for name, entry in result["results"].items():
        command = f"Command: `{entry['command']}`\n\n" if "command" in entry else ""
        parts.append(f"### {name}\n\n{command}{ablation_table(entry)}")
    if result.get("notes"):
        parts.append("\n".join(f"- {note}" for note in result["notes"]))
    return "\n\n".join(parts)


def finish_ablation(name, result, output):
    """Writes the ablation's result file, prints its tables and returns the result."""
    result = write_results(name, result, output)
    print(ablation_section(result), flush=True)
    return result


def budget_summary_table(results):
    """One row per benchmark: the teacher, then each model at 1x / 2x / 4x KD's time."""
    models = [
        m for m in BUDGET_MODELS if any(m in r["budget"]["summary"] for r in results.values())
    ]
    headers = ["benchmark", "metric", "teacher", *(LABELS[m] for m in models)]
    rows = []
    for result in results.values():
        budget = result["budget"]
        summary = budget["summary"]
        first = str(budget["budgets"][0])
        row = [
            result["title"].split(":")[0],
            budget["label"] + (" (higher is better)" if budget["higher_is_better"] else ""),
            f"{summary['teacher'][first]['mean']:.3f}",
        ]
        for model in models:
            values = summary.get(model, {})
            row.append(
                " / ".join(
                    f"{values[str(b)]['mean']:.3f}" if str(b) in values else "–"
                    for b in budget["budgets"]
                )
                if values
                else ""
            )
        rows.append(row)
    return markdown_table(headers, rows)


def speed_section(result):
    """The BENCHMARKS.md section of the speed benchmark's result file."""
    parts = [
        "## Speed: steps per second, ECL vs KD vs `keras.distillation.Distiller`",
        "MNIST-1D-shaped random data (4200 rows of length 40), the demo's CNN teacher "
        "and MLP student, Adam. ECL with k samples per input runs teacher and student on "
        "(1 + k) x batch rows, so it is compared with KD on a batch of the same total "
        "size: that ratio is the cost of sampling itself. Each figure is the median "
        f"epoch time over {result['config']['rounds']} interleaved rounds of "
        f"{result['config']['epochs_per_round']} epochs, after a first, untimed epoch "
        "that traces and compiles. On this 2-core machine the ratios move by up to about "
        "±10 % between back-to-back runs: read differences smaller than that as parity.",
        f"Command: `{shown_command(result['command'])}`  \nDate: {result['date']}; "
        f"machine: {describe_machine(result['machine'])}.",
    ]
    for jit, results in result["results"].items():
        rows = [
            [
                name,
                r["batch_size"],
                r["rows_per_step"],
                f"{r['step_ms']:.2f}",
                f"{r['steps_per_s']:.1f}",
            ]
            for name, r in results.items()
        ]
        table = markdown_table(["configuration", "batch", "rows/step", "ms/step", "steps/s"], rows)
        ratio_lines = "\n".join(
            f"- {label}: **{value:.3f}**" for label, value in result["ratios"][jit].items()
        )
        parts.append(f"### jit_compile={jit}\n\n{table}\n\n{ratio_lines}")
    if "check_cost" in result:
        parts.append(check_cost_section(result))
    return "\n\n".join(parts)


def check_cost_section(result):
    """What the checks inside the step cost: per-round ratios between traced variants."""
    rows, labels = [], []
    for jit, costs in result["check_cost"].items():
        for mode, cost in costs.items():
            levels = [("fit, one epoch", cost)]
            if "steps" in cost:
                levels.append(
                    (f"train_step × {result['config']['steps_per_round']}", cost["steps"])
                )
            for level, ratios in levels:
                labels = [label for label in ratios if label not in ("rounds", "steps")]
                rows.append(
                    [mode, jit, level, ratios["rounds"]]
                    + [
                        f"{ratios[label]['median']:.3f} "
                        f"[{ratios[label]['q25']:.3f}, {ratios[label]['q75']:.3f}]"
                        for label in labels
                    ]
                )
    headers = ["mode", "jit_compile", "timed", "rounds", *labels]
    return (
        "### What the checks inside the step cost\n\n"
        "One Distiller per mode, traced four times: with the checks inside its step; "
        "without its label checks but with the non-finite guard "
        "(`benchmarks.speed.GuardOnlyDistiller`: the update is applied only if the "
        "loss and the squared gradients are finite); with no check at all "
        "(`benchmarks.speed.UncheckedDistiller`: no label check, no finiteness check, "
        "no conditional update); and with none again (A/A: the noise floor). The four "
        "share weights and optimizer state. Each round runs one `fit` epoch with each "
        "variant's train function, or calls each variant's `train_step` on one batch "
        "(inside a `tf.function`, compiled as the model is) alternately, call by call, "
        "a fixed number of times, in a shuffled order; a figure is the median of the "
        "per-round ratios [interquartile range] (per round: epoch times, or the median "
        "call).\n\n" + markdown_table(headers, rows)
    )


def quantization_table(result):
    """`benchmarks.quantization`'s rows as a Markdown table."""
    rows = [
        [
            row["quantization"],
            f"{row['kib']:.0f} KiB",
            f"{row['accuracy']:.3f}",
            f"{100 * row['same_class']:.1f} %",
            f"{row['max_abs_error']:.2g}",
        ]
        for row in result["rows"]
    ]
    headers = [
        "TFLite quantization",
        "size",
        "test accuracy",
        "same class as Keras",
        "max abs. probability error",
    ]
    return markdown_table(headers, rows)


def quantization_section(result):
    """The TFLite quantization section of BENCHMARKS.md."""
    parts = [
        "## Quantization: the shipped student as TFLite",
        f"Student: `{result['student']}` (Keras test accuracy "
        f"{result['keras_accuracy']:.3f} on MNIST-1D's test set), exported with each "
        "quantization of `keras_ecl.export_student` (`int8` calibrated on training "
        "inputs) and scored next to the Keras model.",
        f"Command: `{shown_command(result['command'])}`  \nDate: {result['date']}; "
        f"machine: {describe_machine(result['machine'])}.",
        quantization_table(result),
    ]
    return "\n\n".join(parts)


def save_figure(figure, path):
    """Saves a matplotlib figure at 100 dpi and closes it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    _atomic.write_file(path, lambda scratch: figure.savefig(scratch, dpi=100))
    plt.close(figure)
