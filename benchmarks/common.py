"""Shared pieces of the accuracy benchmarks: CLI, metrics, training runs, result files.

Every benchmark trains its teacher and students once per seed and writes
`benchmarks/results/<name>.json`; `run_all.py` turns those files into
`BENCHMARKS.md`. Metrics are computed here in NumPy from the models' raw
outputs, so every model (ours, Keras' `Distiller`, a plain `fit`) is scored
by the same code.
"""

import argparse
import datetime
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_ecl  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join("benchmarks", "results")
MACHINE = "2-core CPU, no GPU"
ECE_BINS = 15

CLASSIFICATION_COLUMNS = [  # [metric, table header, digits]
    ["accuracy", "test accuracy", 3],
    ["nll", "test NLL", 3],
    ["ece", f"test ECE ({ECE_BINS} bins)", 3],
    ["seconds", "train s", 0],
]

# Model keys shared by the benchmarks, and how tables name them.
LABELS = {
    "teacher": "teacher",
    "ERM": "student ERM",
    "KD": "student KD (keras_ecl, mode='kd')",
    "KD-keras": "student KD (keras.distillation.Distiller)",
    "KD-MSE": "student KD, MSE to the teacher's mean",
    "ECL": "student ECL",
    "KD-equal-time": "control: KD at ECL's wall-clock",
    "Identity": "control: ECL with the identity sampler",
}


# Command line.


def parse_args(doc, configs, argv=None, add_arguments=None):
    """The flags every benchmark takes: `--seeds`, `--smoke`, `--output`.

    `add_arguments(parser)`, if given, adds a benchmark's own flags. Returns
    the parsed arguments and the "smoke" or "full" entry of `configs`.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if add_arguments is not None:
        add_arguments(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--output", default=RESULTS_DIR, help="folder of the JSON results")
    args = parser.parse_args(argv)
    return args, configs["smoke" if args.smoke else "full"]


def command_line(module, argv):
    """The command that reproduces a run, as written in BENCHMARKS.md."""
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join([".venv/bin/python", f"benchmarks/{module}.py", *args])


def run_seeds(run_one, seeds, on_models=None):
    """Calls `run_one(seed)` for each seed, clearing Keras' state in between.

    The trained models of a seed (`result["trained"]`) go to
    `on_models(seed, models)` if given (e.g. for a figure), not into the results.
    """
    results = []
    for seed in seeds:
        keras.backend.clear_session()
        result = run_one(seed)
        trained = result.pop("trained")
        if on_models is not None:
            on_models(seed, trained)
        results.append({"seed": seed, **result})
    return results


# Statistics.


def mean_std(values):
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return float(values.mean()), std


def format_mean_std(values, digits=3):
    """`"0.842 ± 0.010"` for a list of per-seed values."""
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def gap_closed(value, kd_value, teacher_value, higher_is_better=True):
    """Share of the teacher–KD gap that `value` closes, or None if the teacher is not better.

    For accuracy `(value - kd) / (teacher - kd)`; for an error (RMSE, NLL) the
    same ratio with the signs flipped, `(kd - value) / (kd - teacher)`.
    """
    sign = 1.0 if higher_is_better else -1.0
    gap = sign * (teacher_value - kd_value)
    if gap <= 0:
        return None
    return sign * (value - kd_value) / gap


# Metrics.


def log_softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def expected_calibration_error(probs, labels, num_bins=ECE_BINS):
    """ECE over `num_bins` equal-width confidence bins `(i/B, (i+1)/B]`.

    `sum_b n_b / n * |accuracy_b - mean confidence_b|`, with the confidence
    the top-class probability (Guo et al., 2017).
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    confidence = probs.max(axis=-1)
    correct = probs.argmax(axis=-1) == labels
    bins = np.clip(np.ceil(confidence * num_bins).astype(int) - 1, 0, num_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        members = bins == b
        ece += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(ece)


def classification_metrics(logits, labels):
    """Accuracy, NLL (mean cross-entropy at temperature 1) and ECE from logits."""
    labels = np.asarray(labels).astype(int)
    log_probs = log_softmax(logits)
    return {
        "accuracy": float((log_probs.argmax(axis=-1) == labels).mean()),
        "nll": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "ece": expected_calibration_error(np.exp(log_probs), labels),
    }


def gaussian_nll(y, loc, scale):
    """Mean negative log-density of `y` under `Normal(loc, scale)`."""
    y, loc, scale = (np.asarray(a, dtype=np.float64) for a in (y, loc, scale))
    return float(np.mean(0.5 * np.log(2 * np.pi * scale**2) + 0.5 * ((y - loc) / scale) ** 2))


def rmse(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def predict(model, x, batch_size=1024):
    """Raw outputs of a model (logits, or `[loc, raw_scale]`) as a NumPy array."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def normal_parameters(outputs):
    """`(loc, scale)` NumPy arrays of one regression output from `[loc, raw_scale]`."""
    loc, scale = keras_ecl.heads.Normal().split(outputs)
    return np.asarray(loc)[:, 0], np.asarray(scale)[:, 0]


# Training.


class EpochTimes(keras.callbacks.Callback):
    """Records the wall-clock seconds of every epoch."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def timed_fit(model, x, y, epochs, batch_size, **kwargs):
    """`model.fit(..., verbose=0)`; returns seconds in all and per epoch."""
    timer = EpochTimes()
    callbacks = [timer, *kwargs.pop("callbacks", [])]
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=callbacks, **kwargs)
    return time.perf_counter() - start, timer.times


def build_distiller(make_student, teacher, options, learning_rate, seed):
    """A compiled `keras_ecl.Distiller` around a fresh student seeded by `seed`."""
    keras.utils.set_random_seed(seed)
    distiller = keras_ecl.Distiller(make_student(), teacher, **options)
    distiller.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return distiller


def keras_logits_distillation(temperature):
    """Keras' `LogitsDistillation` computing Hinton KD: KL of softmax(logits / T), times T².

    The loss is given as a `keras.losses.KLDivergence()` instance on purpose:
    with the default `loss="kl_divergence"` Keras 3.15.1 resolves the string
    to the plain function, misses its `isinstance(loss, KLDivergence)` branch
    and applies KL to the raw `logits / T` (no softmax, no T²). Measured on
    the digits benchmark (seed 0): that student reached 0.684 test accuracy,
    against 0.962 for KD done right, and its "KL" went negative.
    """
    return keras.distillation.LogitsDistillation(
        temperature=temperature, loss=keras.losses.KLDivergence()
    )


def build_keras_distiller(make_student, teacher, temperature, student_loss_weight, lr, seed):
    """Keras' own `keras.distillation.Distiller` with Hinton KD (logits, KL, T²)."""
    keras.utils.set_random_seed(seed)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=make_student(),
        distillation_losses=keras_logits_distillation(temperature),
        student_loss_weight=student_loss_weight,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def reseeded(sampler, seed):
    """A copy of `sampler` drawing from `seed` (a `OneOf`'s seed drives its parts)."""
    return type(sampler).from_config({**sampler.get_config(), "seed": seed})


def equal_time_epochs(build_kd, build_ecl, x, y, batch_size, epochs, probe_epochs, rounds=2):
    """KD epochs that take as long as `epochs` of ECL, timed back to back.

    Both distillers are built and warmed up (tracing) for one epoch, then fit
    `probe_epochs` epochs each in turn, `rounds` times, so that machine load
    hits both alike. Epochs are timed inside `fit` (as in training, without
    the per-call set-up). Returns the KD epoch count and median epoch seconds.
    """
    kd, ecl = build_kd(), build_ecl()
    times = {"kd": [], "ecl": []}
    for round_ in range(rounds + 1):
        for name, model in (("kd", kd), ("ecl", ecl)):
            _, epoch_times = timed_fit(
                model, x, y, epochs=probe_epochs if round_ else 1, batch_size=batch_size
            )
            if round_:
                times[name].extend(epoch_times)
    kd_epoch, ecl_epoch = float(np.median(times["kd"])), float(np.median(times["ecl"]))
    return {
        "epochs": max(1, round(epochs * ecl_epoch / kd_epoch)),
        "kd_epoch_seconds": kd_epoch,
        "ecl_epoch_seconds": ecl_epoch,
    }


def train_students(benchmark, seed, teacher, make_student, runs, data, config, score, baselines):
    """Trains every student of one seed and scores it; returns metrics and timings.

    `runs` maps "ERM", "KD" and "ECL" to `keras_ecl.Distiller` options;
    the controls derive from them: "KD-equal-time" is KD for as many epochs
    as fit in ECL's training time, "Identity" is ECL's loss with the
    identity sampler (its synthetic inputs are the real batch, so its
    teacher term equals KD's whatever `samples_per_example`; 1 is used).
    `baselines` maps more names to callables that train a student and return
    `(model, seconds)`. `score(model)` returns a dict of metrics. The trained
    models come back under "trained".
    """
    x, y = data
    epochs, batch_size, lr = config["student_epochs"], config["batch_size"], config["learning_rate"]
    models, epoch_seconds, trained = {}, {}, {"teacher": teacher}

    def record(name, model, seconds):
        metrics = score(model)
        models[name] = {**metrics, "seconds": seconds}
        trained[name] = model
        report(benchmark, seed, name, metrics, seconds)

    def distiller(options):
        return build_distiller(make_student, teacher, options, lr, seed)

    def train(name, model, num_epochs=epochs):
        seconds, times = timed_fit(model, x, y, num_epochs, batch_size)
        epoch_seconds[name] = float(np.median(times[1:] or times))  # epoch 1 traces
        record(name, model.student, seconds)

    identity = {**runs["KD"], "mode": "ecl", "sampler": "identity", "samples_per_example": 1}
    train("ERM", distiller(runs["ERM"]))
    train("KD", distiller(runs["KD"]))
    for name, baseline in baselines.items():
        record(name, *baseline())
    train("ECL", distiller(runs["ECL"]))
    probe = equal_time_epochs(
        lambda: distiller(runs["KD"]),
        lambda: distiller(runs["ECL"]),
        x,
        y,
        batch_size,
        epochs,
        config["probe_epochs"],
    )
    print(f"[{benchmark} seed {seed}] KD at equal wall-clock: {probe}", flush=True)
    train("KD-equal-time", distiller(runs["KD"]), probe["epochs"])
    train("Identity", distiller(identity))
    return {
        "models": models,
        "kd_equal_time": probe,
        "median_epoch_seconds": epoch_seconds,
        "trained": trained,
    }


def train_teacher(make_teacher, loss, data, config, seed, **fit):
    """A fresh teacher seeded by `seed`, fitted with `loss` on `data = (x, y)`.

    Returns the teacher and its training seconds; `fit` goes to `fit`.
    """
    keras.utils.set_random_seed(seed)
    teacher = make_teacher()
    teacher.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]), loss=loss)
    seconds, _ = timed_fit(teacher, *data, config["teacher_epochs"], config["batch_size"], **fit)
    return teacher, seconds


def benchmark_seed(
    benchmark, seed, data, models, runs, config, score, loss, baselines, fit, teacher=None
):
    """Teacher, students and controls of one seed, all scored by `score(model)`.

    `models` is `(make_teacher, make_student)`, `data` the training `(x, y)`,
    `baselines(teacher)` the extra students of `train_students`. `teacher`,
    if given, is a callable `teacher(seed) -> (model, seconds)` used instead
    of one `fit` of `make_teacher()` with `loss`.
    """
    make_teacher, make_student = models
    if teacher is None:
        teacher, seconds = train_teacher(make_teacher, loss, data, config, seed, **fit)
    else:
        teacher, seconds = teacher(seed)
    teacher_metrics = score(teacher)
    report(benchmark, seed, "teacher", teacher_metrics, seconds)
    result = train_students(
        benchmark, seed, teacher, make_student, runs, data, config, score, baselines(teacher)
    )
    result["models"] = {"teacher": {**teacher_metrics, "seconds": seconds}, **result["models"]}
    return result


def classification_seed(benchmark, seed, data, models, runs, config):
    """Teacher, ERM, KD (ours and Keras'), ECL and the controls for one seed.

    `data` is `(x, y, x_test, y_test)`; every model is scored on the test split.
    """
    x, y, x_test, y_test = data
    kd = runs["KD"]

    def score(model):
        return classification_metrics(predict(model, x_test), y_test)

    def keras_kd(teacher):
        temperature = keras_ecl.heads.get(kd["head"]).temperature
        model = build_keras_distiller(
            models[1], teacher, temperature, kd["supervised_weight"], config["learning_rate"], seed
        )
        seconds, _ = timed_fit(model, x, y, config["student_epochs"], config["batch_size"])
        return model.student, seconds

    loss = keras_ecl.losses.NegativeLogLikelihood()
    return benchmark_seed(
        benchmark,
        seed,
        (x, y),
        models,
        runs,
        config,
        score,
        loss,
        lambda teacher: {"KD-keras": lambda: keras_kd(teacher)},
        {},
    )


def regression_seed(benchmark, seed, data, models, runs, config, score, teacher=None, **fit):
    """Normal-head teacher (NLL), ERM, KD by MSE and by KL, ECL and the controls.

    `data` is `(x, y)` for training; `score(model)` evaluates a model and
    `fit` goes to the teacher's `fit` (validation data, callbacks);
    `teacher(seed) -> (model, seconds)` replaces that fit if given.
    """
    loss = keras_ecl.losses.NegativeLogLikelihood(keras_ecl.heads.Normal())

    def baselines(teacher):
        return {"KD-MSE": lambda: kd_mse_student(models[1], teacher, *data, config, seed)}

    return benchmark_seed(
        benchmark, seed, data, models, runs, config, score, loss, baselines, fit, teacher
    )


def student_options(head, supervised_weight, sampler, samples_per_example):
    """`keras_ecl.Distiller` options of ERM, KD and ECL that differ in `mode` only."""
    kd = dict(mode="kd", head=head, supervised_weight=supervised_weight)
    return {
        "ERM": dict(mode="erm", head=head),
        "KD": kd,
        "ECL": dict(kd, mode="ecl", sampler=sampler, samples_per_example=samples_per_example),
    }


def sweep(benchmark, seed, teacher, make_student, candidates, data, config, score, objective):
    """Trains a student per option set in `candidates` and scores it on validation data.

    Returns `{label: {"val_<metric>": value}}` and the label other than "KD"
    that minimises `objective(metrics)`.
    """
    results = {}
    for label, options in candidates.items():
        distiller = build_distiller(make_student, teacher, options, config["learning_rate"], seed)
        seconds, _ = timed_fit(distiller, *data, config["student_epochs"], config["batch_size"])
        results[label] = {f"val_{k}": v for k, v in score(distiller.student).items()}
        report(benchmark, seed, f"sweep {label} (validation)", results[label], seconds)
    ecl = {k: v for k, v in results.items() if k != "KD"}
    return results, min(ecl, key=lambda k: objective(ecl[k]))


def set_constant_scale(model, scale):
    """Makes a `[loc, raw_scale]` model predict the same Normal `scale` everywhere.

    Zeroes the raw-scale columns of the last Dense kernel and sets their bias
    to `softplus^-1(scale - min_scale)` (the `Normal` head's default floor).
    """
    layer = model.layers[-1]
    dense = getattr(layer, "dense", layer)  # a HeadLayer wraps its Dense
    kernel, bias = dense.get_weights()
    half = kernel.shape[1] // 2
    kernel[:, half:] = 0.0
    raw = scale - keras_ecl.heads.Normal().min_scale
    bias[half:] = raw + np.log(-np.expm1(-raw))  # inverse softplus
    dense.set_weights([kernel, bias])


def kd_mse_student(make_student, teacher, x, y, config, seed):
    """Regression KD baseline: the student's `loc` fits the teacher's mean by MSE.

    MSE gives no scale, so the student then predicts one constant scale, the
    RMS of its residuals on the training labels (the maximum-likelihood
    homoscedastic fit), for NLL and scale comparisons.
    """
    teacher_loc, _ = normal_parameters(predict(teacher, x))
    keras.utils.set_random_seed(seed)
    student = make_student()

    def loc_mse(target, outputs):
        loc = keras_ecl.heads.Normal().point_prediction(outputs)[:, 0]
        return keras.ops.mean(keras.ops.square(loc - keras.ops.reshape(target, [-1])))

    student.compile(optimizer=keras.optimizers.Adam(config["learning_rate"]), loss=loc_mse)
    seconds, _ = timed_fit(student, x, teacher_loc, config["student_epochs"], config["batch_size"])
    loc, _ = normal_parameters(predict(student, x))
    set_constant_scale(student, rmse(loc, np.reshape(y, -1)))
    return student, seconds


def report(benchmark, seed, name, metrics, seconds):
    """One progress line per finished run."""
    figures = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"[{benchmark} seed {seed}] {name}: {figures}, {seconds:.1f} s", flush=True)


# Results.


def summarize(per_seed):
    """`{model: {metric: {"mean", "std", "values"}}}` over the per-seed results."""
    models = per_seed[0]["models"]
    summary = {}
    for model, metrics in models.items():
        summary[model] = {}
        for metric in metrics:
            values = [run["models"][model][metric] for run in per_seed]
            mean, std = mean_std(values)
            summary[model][metric] = {"mean": mean, "std": std, "values": values}
    return summary


def gaps(summary, metric, higher_is_better, models):
    """Gap closed vs KD for `models` on `metric`, from the means over seeds."""
    teacher, kd = summary["teacher"][metric]["mean"], summary["KD"][metric]["mean"]
    values = {
        model: gap_closed(summary[model][metric]["mean"], kd, teacher, higher_is_better)
        for model in models
        if model in summary
    }
    return {"metric": metric, "values": values}


def control_notes(per_seed, epochs):
    """How the two controls were run, with the equal-time KD epochs per seed."""
    equal = [run["kd_equal_time"]["epochs"] for run in per_seed]
    return [
        f"KD at ECL's wall-clock: KD trained for round({epochs} × ECL epoch s / KD epoch s) "
        "epochs, both epoch times measured back to back right before (median of "
        f"interleaved epochs); epochs per seed: {equal}.",
        "Identity control: `mode='ecl'` with `samplers.Identity()`. Its synthetic inputs "
        "are the real batch, so its teacher term equals KD's and only the sampling differs "
        "from ECL; samples_per_example=1 suffices since the loss is the same for every k.",
    ]


def sweep_note(sweep, metrics):
    """One line listing a sampler sweep's validation figures and its choice."""
    rows = ", ".join(
        f"{label}: " + " / ".join(f"{values[f'val_{m}']:.3f}" for m in metrics)
        for label, values in sweep["results"].items()
    )
    return (
        f"Sampler sweep (seed {sweep['seed']}, validation {' / '.join(metrics)}; KD for "
        f"reference): {rows}. Chosen: {sweep['choice']}."
    )


def save_figure(figure, path):
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(figure)


def finish(name, result, output):
    """Writes the result file, prints its table and returns the result."""
    result = write_results(name, result, output)
    print(results_table(result), flush=True)
    return result


def write_results(name, payload, output):
    """Writes `<output>/<name>.json` with the date and machine; returns what it wrote."""
    return write_json(os.path.join(output, f"{name}.json"), name, payload)


def write_json(path, name, payload):
    """Writes `payload` to `path` under `name`, with today's date and the machine."""
    payload = {
        "name": name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": MACHINE,
        **payload,
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        json.dump(payload, file, indent=2)
    print(f"Wrote {path}", flush=True)
    return payload


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
    for model, metrics in result["summary"].items():
        row = [LABELS.get(model, model)]
        for metric, _, digits in columns:
            values = metrics.get(metric)
            row.append(format_mean_std(values["values"], digits) if values else "")
        if gap:
            value = gap["values"].get(model)
            row.append("" if value is None else f"{value:.1%}")
        rows.append(row)
    return markdown_table(headers, rows)


def markdown_section(result):
    """A BENCHMARKS.md section for one result file."""
    seeds = ", ".join(str(s) for s in result["seeds"])
    parts = [
        f"## {result['title']}",
        result["description"],
        f"Command: `{result['command']}`  \nDate: {result['date']}; seeds {seeds}; "
        f"machine: {result['machine']}. Mean ± sample std over {len(result['seeds'])} seed(s).",
        results_table(result),
    ]
    if result.get("notes"):
        parts.append("\n".join(f"- {note}" for note in result["notes"]))
    for figure in result.get("figures", []):
        parts.append(f"![{result['title']}]({figure})")
    return "\n\n".join(parts)
