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
    "KD + features": "student KD + feature matching (on real inputs)",
    "ECL + features": "student ECL + feature matching (on extracurricular inputs)",
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


# The summary: one small table per question a user asks.

SUMMARY_PEERS = ("KD-MSE", "FunMatch", "DKD", "LS-KD")  # the published successors of KD


def summary_section(results, speed=None):
    """BENCHMARKS.md's summary: which method wins, what it costs, how calibrated.

    `results` maps names to result files with a budget; `speed` is the speed
    benchmark's result, if any. Every figure here is also in the sections below.
    """
    shown = [m for m in BUDGET_MODELS if any(m in r["budget"]["summary"] for r in results.values())]
    legend = "; ".join(f"{model} = {LABELS[model]}" for model in shown)
    parts = [
        "## Summary",
        f"One table per question; the sections below give every figure with its spread "
        f"over seeds. Students, shortened: {legend}.",
        "### Which method wins at each budget",
        winners_table(results),
        "The best student within each multiple of KD's training time (ECL's figure "
        "after a semicolon when another wins; a dash where no scoring fell within the "
        "budget). Gap closed: the share of the teacher–KD gap that ECL closes, against "
        "KD at 1x.",
        "### What it costs in time",
        cost_table(results),
    ]
    if speed is not None:
        parts.append(speed_summary(speed))
    parts += [
        "### How calibrated the students are",
        calibration_table(results),
        "Final students (after the largest budget): expected calibration error for "
        "classification, test NLL for regression; lower is better. Best peer: the "
        f"lowest of {', '.join(SUMMARY_PEERS)} where they ran.",
    ]
    return "\n\n".join(parts)


def _at_budget(summary, model, b):
    """A model's mean at budget `b`, or None if no scoring fell within it."""
    values = summary.get(model, {})
    return values[str(b)]["mean"] if str(b) in values else None


def winners_table(results):
    """Per benchmark: the teacher, KD at 1x, the best student at each budget, ECL's gap."""
    rows = []
    for result in results.values():
        budget = result["budget"]
        summary, budgets = budget["summary"], budget["budgets"]
        higher = budget["higher_is_better"]
        teacher = _at_budget(summary, "teacher", budgets[0])
        kd = _at_budget(summary, "KD", budgets[0])
        best = []
        for b in budgets:
            scored = {
                m: round(_at_budget(summary, m, b), 3)
                for m in BUDGET_MODELS
                if _at_budget(summary, m, b) is not None
            }
            top = (max if higher else min)(scored.values())
            cell = f"{', '.join(m for m, v in scored.items() if v == top)} {top:.3f}"
            if "ECL" in scored and scored["ECL"] != top:
                cell += f"; ECL {scored['ECL']:.3f}"
            best.append(cell)
        gaps = [
            metrics.gap_closed(_at_budget(summary, "ECL", b), kd, teacher, higher)
            if _at_budget(summary, "ECL", b) is not None
            else None
            for b in budgets
        ]
        rows.append(
            [
                result["title"],
                budget["label"] + (" (higher is better)" if higher else ""),
                f"{teacher:.3f}",
                f"{kd:.3f}",
                *best,
                *[""] * (3 - len(budgets)),
                " / ".join("–" if gap is None else f"{gap:.0%}" for gap in gaps),
            ]
        )
    headers = ["benchmark", "metric", "teacher", "KD at 1x"]
    headers += [f"best within {b}x KD's time" for b in (1, 2, 4)]
    headers.append("ECL: gap closed at 1x / 2x / 4x")
    return markdown_table(headers, rows)


def cost_table(results):
    """Per benchmark: the seconds 1x stands for, the teacher's, and ECL's time to KD's best."""
    rows = []
    for result in results.values():
        budget, per_seed = result["budget"], result.get("per_seed")
        units = [run["budget_unit_seconds"] for run in per_seed or []]
        teacher = result["summary"]["teacher"].get("seconds")
        row = [
            result["title"],
            metrics.format_mean_std(units, 0) if units else "",
            metrics.format_mean_std(teacher["values"], 0) if teacher else "",
        ]
        if "ECL" in budget["summary"] and per_seed:
            ratios = metrics.time_to_reach_kd(
                per_seed, "ECL", budget["metric"], budget["higher_is_better"]
            )
            row.append(", ".join("never" if r is None else f"{r:.2f}" for r in ratios))
        else:
            row.append("")
        rows.append(row)
    headers = [
        "benchmark",
        "1x: KD's time for its reference epochs (s)",
        "teacher's training (s)",
        "ECL reaches KD's final student in this share of KD's time, per seed",
    ]
    return markdown_table(headers, rows) + (
        "\n\nEvery student trains on the same clock: 1x is KD's time, the others train "
        "for up to 4x (ERM and Keras' Distiller, references, for 1x). KD's final student "
        "is KD after its largest budget."
    )


def speed_summary(speed):
    """One sentence on the cost of a step, from the speed benchmark's ratios."""
    ratios = speed["ratios"]
    per_jit = "; ".join(
        f"jit_compile={jit}: {values['ECL k=1 / KD (ours), same rows']:.3f} "
        f"(k=2: {values['ECL k=2 / KD (ours), same rows']:.3f})"
        for jit, values in ratios.items()
    )
    return (
        "Per step, ECL runs teacher and student on (1 + k) x the batch, and costs what KD "
        "costs on a batch of that many rows. ECL's step time over KD's on the same rows, "
        f"k = 1 synthetic input per real one: {per_jit} (Speed section)."
    )


def calibration_table(results):
    """Per benchmark: ECE (or test NLL) of the final teacher, ERM, KD, best peer and ECL."""
    rows = []
    for result in results.values():
        names = {metric: header for metric, header, _ in result["columns"]}
        nll = [metric for metric in names if "NLL" in names[metric]]
        if "ece" not in names and not nll:
            continue
        measure = "ece" if "ece" in names else nll[0]
        summary = result["summary"]

        def shown(model, summary=summary, measure=measure):
            values = summary.get(model, {}).get(measure)
            return "" if values is None else f"{values['mean']:.3f}"

        peers = {m: summary[m][measure]["mean"] for m in SUMMARY_PEERS if m in summary}
        best = min(peers, key=peers.get) if peers else None
        rows.append(
            [
                result["title"],
                names[measure],
                *map(shown, ("teacher", "ERM", "KD")),
                f"{best} {peers[best]:.3f}" if best else "",
                shown("ECL"),
                shown("ECL-cal"),
            ]
        )
    headers = ["benchmark", "measure", "teacher", "ERM", "KD", "best peer", "ECL"]
    headers.append("ECL from the calibrated teacher")
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
    if "keras_parity" in result:
        parts.append(keras_parity_section(result))
    if "check_cost" in result:
        parts.append(check_cost_section(result))
    return "\n\n".join(parts)


def keras_parity_section(result):
    """KD (ours) against `keras.distillation.Distiller`: per-round ratios, per clock."""
    config = result["config"]
    rows = []
    for jit, pairs in result["keras_parity"].items():
        for timed in pairs.values():
            for level, shown in [
                ("fit, one epoch", "fit"),
                (f"train_step × {config['steps_per_round']}", "train_step"),
            ]:
                ratios = timed[shown]
                rows.append(
                    [jit, timed["batch_size"], level, ratios["rounds"]]
                    + [
                        f"{ratios[clock]['median']:.3f} "
                        f"[{ratios[clock]['q25']:.3f}, {ratios[clock]['q75']:.3f}]"
                        for clock in ("wall", "cpu")
                    ]
                )
    headers = ["jit_compile", "batch", "timed", "rounds", "wall clock", "CPU time"]
    return (
        "### KD (ours) / `keras.distillation.Distiller`, head to head\n\n"
        'The two Distillers of the table above (ours with `mode="kd"`, a '
        "`Categorical(temperature)` head and `supervised_weight`; Keras' with "
        "`LogitsDistillation` at the same temperature and `student_loss_weight`), timed "
        "against each other in interleaved rounds: each round runs one `fit` epoch of "
        "each in a shuffled order, or calls each one's compiled train function on one "
        "batch alternately, call by call, in a shuffled order. A figure is the median "
        "of the per-round ratios ours / Keras' [interquartile range], on the wall clock "
        "and on the CPU time of the process (which other jobs on a shared machine "
        "inflate less); below 1, ours is faster.\n\n" + markdown_table(headers, rows)
    )


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
