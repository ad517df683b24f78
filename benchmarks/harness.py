"""Training runs of the accuracy benchmarks: per seed, one teacher and a row per student method.

A benchmark is a frozen `Task` (data, models, `Distiller` options, `TrainConfig`, scoring) whose
`methods` are `(label, train)` pairs, so a new student is one more `Method`, not a new branch.
Every student trains through `Trial.fit` (a timed `fit`), the one place where per-epoch hooks
such as test-metric-vs-wall-clock curves would go.
"""

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

import keras_ecl
from benchmarks import metrics


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Sizes of one benchmark run; a misspelt field fails at construction.

    Benchmarks subclass it for their own fields. `train_rows` and `test_rows`,
    when set, keep only the first rows of the splits (smoke runs).
    """

    teacher_epochs: int
    student_epochs: int
    batch_size: int
    learning_rate: float
    probe_epochs: int
    train_rows: int | None = None
    test_rows: int | None = None

    def smoke(self, **changes):
        """This config with one epoch of everything (a run of seconds), and `changes`."""
        one_epoch = dict(teacher_epochs=1, student_epochs=1, probe_epochs=1)
        return dataclasses.replace(self, **{**one_epoch, **changes})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Task:
    """What a benchmark trains and how it scores, the same for every seed.

    `teacher(seed)` returns a trained teacher and its training seconds;
    `runs(seed)` `keras_ecl.Distiller` options by name ("ERM", "KD" and "ECL"
    for `run`, one per candidate for `sweep`), samplers seeded from `seed`;
    `score(model, teacher)` a dict of metrics; `methods` the students trained
    after the teacher, in order.
    """

    name: str
    data: tuple  # training (x, y)
    teacher: Callable[[int], tuple[keras.Model, float]]
    make_student: Callable[[], keras.Model]
    runs: Callable[[int], dict]
    config: TrainConfig
    score: Callable[[keras.Model, keras.Model], dict]
    methods: "tuple[Method, ...]"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Trial:
    """One seed of a task, with its trained teacher: what each method trains from."""

    task: Task
    seed: int
    runs: dict
    teacher: keras.Model

    def distiller(self, options):
        """A compiled `keras_ecl.Distiller` with `options` around a fresh student."""
        return build_distiller(
            self.task.make_student,
            self.teacher,
            options,
            learning_rate=self.task.config.learning_rate,
            seed=self.seed,
        )

    def fit(self, model, epochs=None, targets=None):
        """`timed_fit` of a student on the training inputs; returns seconds in all and per epoch.

        `epochs` defaults to the config's student epochs, `targets` to the
        training labels.
        """
        config = self.task.config
        x, y = self.task.data
        epochs = config.student_epochs if epochs is None else epochs
        y = y if targets is None else targets
        return timed_fit(model, x, y, epochs, config.batch_size)


@dataclasses.dataclass(frozen=True)
class Trained:
    """A trained student, its training seconds and what else its method measured.

    `epoch_seconds` is the median epoch time of students trained by a
    `keras_ecl.Distiller`; `extra` goes into the seed's result (e.g. the
    equal-time probe).
    """

    student: keras.Model
    seconds: float
    epoch_seconds: float | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Method:
    """A student row of the results: its label and `train(trial) -> Trained`."""

    label: str
    train: Callable[[Trial], Trained]


# Running tasks.


def run(task, seeds, on_models=None):
    """`run_seed` for each seed, clearing Keras' state in between; returns the per-seed results.

    The trained models of a seed go to `on_models(seed, models)` if given
    (e.g. for a figure), not into the results.
    """
    per_seed = []
    for seed in seeds:
        keras.backend.clear_session()
        result, trained = run_seed(task, seed)
        if on_models is not None:
            on_models(seed, trained)
        per_seed.append({"seed": seed, **result})
    return per_seed


def run_seed(task, seed):
    """The teacher and every method's student at one seed, each scored by `task.score`.

    Returns the seed's result (metrics and seconds per model, the methods'
    extras, median epoch seconds) and the trained models by label.
    """
    runs = task.runs(seed)
    teacher, seconds = task.teacher(seed)
    trial = Trial(task=task, seed=seed, runs=runs, teacher=teacher)
    models, extra, epoch_seconds, trained = {}, {}, {}, {}

    def record(label, model, seconds):
        scores = task.score(model, teacher)
        models[label] = {**scores, "seconds": seconds}
        trained[label] = model
        progress(task.name, seed, label, scores, seconds)

    record("teacher", teacher, seconds)
    for method in task.methods:
        result = method.train(trial)
        record(method.label, result.student, result.seconds)
        extra.update(result.extra)
        if result.epoch_seconds is not None:
            epoch_seconds[method.label] = result.epoch_seconds
    return {"models": models, **extra, "median_epoch_seconds": epoch_seconds}, trained


def sweep(task, seed, *, objective):
    """Trains a student per entry of `task.runs(seed)` and scores it with `task.score`.

    `task.score` scores on validation data. Returns `{label: {"val_<metric>":
    value}}` and the label other than "KD" that minimises `objective(metrics)`.
    """
    teacher, _ = task.teacher(seed)
    trial = Trial(task=task, seed=seed, runs=task.runs(seed), teacher=teacher)
    results = {}
    for label, options in trial.runs.items():
        distiller = trial.distiller(options)
        seconds, _ = trial.fit(distiller)
        scores = task.score(distiller.student, teacher)
        results[label] = {f"val_{k}": v for k, v in scores.items()}
        progress(task.name, seed, f"sweep {label} (validation)", results[label], seconds)
    ecl = {k: v for k, v in results.items() if k != "KD"}
    return results, min(ecl, key=lambda k: objective(ecl[k]))


def sweep_runs(runs, samplers):
    """`Task.runs` of a sampler sweep: KD (for reference), then ECL with each of `samplers`.

    `runs(sampler, seed)` returns ERM, KD and ECL options, ECL drawing from
    the sampler named `sampler`.
    """

    def runs_of_seed(seed):
        options = {"KD": runs(samplers[0], seed)["KD"]}
        options.update({name: runs(name, seed)["ECL"] for name in samplers})
        return options

    return runs_of_seed


def progress(benchmark, seed, name, scores, seconds):
    """One progress line per finished run."""
    figures = ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
    print(f"[{benchmark} seed {seed}] {name}: {figures}, {seconds:.1f} s", flush=True)


# Students.


def fit_distiller(trial, options, epochs=None):
    """A `keras_ecl.Distiller` student with `options`, trained for `epochs` (default: all)."""
    distiller = trial.distiller(options)
    seconds, times = trial.fit(distiller, epochs)
    epoch_seconds = float(np.median(times[1:] or times))  # epoch 1 traces
    return Trained(distiller.student, seconds, epoch_seconds)


def distilled(run_name):
    """`train(trial)` of the `keras_ecl.Distiller` run named `run_name` ("ERM", "KD", "ECL")."""

    def train(trial):
        return fit_distiller(trial, trial.runs[run_name])

    return train


def keras_kd(trial):
    """Keras' own Distiller with the temperature and supervised weight of our KD."""
    kd, config = trial.runs["KD"], trial.task.config
    model = build_keras_distiller(
        trial.task.make_student,
        trial.teacher,
        temperature=keras_ecl.heads.get(kd["head"]).temperature,
        student_loss_weight=kd["supervised_weight"],
        learning_rate=config.learning_rate,
        seed=trial.seed,
    )
    seconds, _ = trial.fit(model)
    return Trained(model.student, seconds)


def kd_mse_student(trial):
    """Regression KD baseline: the student's `loc` fits the teacher's mean by MSE.

    MSE gives no scale, so the student then predicts one constant scale, the
    RMS of its residuals on the training labels (the maximum-likelihood
    homoscedastic fit), for NLL and scale comparisons.
    """
    x, y = trial.task.data
    teacher_loc, _ = normal_parameters(predict(trial.teacher, x))
    keras.utils.set_random_seed(trial.seed)
    student = trial.task.make_student()

    def loc_mse(target, outputs):
        loc = keras_ecl.heads.Normal().point_prediction(outputs)[:, 0]
        return keras.ops.mean(keras.ops.square(loc - keras.ops.reshape(target, [-1])))

    optimizer = keras.optimizers.Adam(trial.task.config.learning_rate)
    student.compile(optimizer=optimizer, loss=loc_mse)
    seconds, _ = trial.fit(student, targets=teacher_loc)
    loc, _ = normal_parameters(predict(student, x))
    set_constant_scale(student, metrics.rmse(loc, np.reshape(y, -1)))
    return Trained(student, seconds)


def kd_equal_time(trial):
    """KD trained for as many epochs as fit in ECL's training time, measured just before."""
    config = trial.task.config
    probe = equal_time_epochs(
        lambda: trial.distiller(trial.runs["KD"]),
        lambda: trial.distiller(trial.runs["ECL"]),
        trial.task.data,
        epochs=config.student_epochs,
        batch_size=config.batch_size,
        probe_epochs=config.probe_epochs,
    )
    print(f"[{trial.task.name} seed {trial.seed}] KD at equal wall-clock: {probe}", flush=True)
    trained = fit_distiller(trial, trial.runs["KD"], probe["epochs"])
    return dataclasses.replace(trained, extra={"kd_equal_time": probe})


def identity(trial):
    """ECL's loss with the identity sampler: its synthetic inputs are the real batch.

    Its teacher term then equals KD's whatever `samples_per_example`; 1 is used.
    """
    options = {**trial.runs["KD"], "mode": "ecl", "sampler": "identity", "samples_per_example": 1}
    return fit_distiller(trial, options)


ERM = Method("ERM", distilled("ERM"))
KD = Method("KD", distilled("KD"))
KD_KERAS = Method("KD-keras", keras_kd)
KD_MSE = Method("KD-MSE", kd_mse_student)
ECL = Method("ECL", distilled("ECL"))
KD_EQUAL_TIME = Method("KD-equal-time", kd_equal_time)
IDENTITY = Method("Identity", identity)
# In the order of the result tables: the students, then the two controls.
CLASSIFICATION_METHODS = (ERM, KD, KD_KERAS, ECL, KD_EQUAL_TIME, IDENTITY)
REGRESSION_METHODS = (ERM, KD, KD_MSE, ECL, KD_EQUAL_TIME, IDENTITY)


# Tasks.


def classification_task(*, name, train, test, make_teacher, make_student, runs, config):
    """A `Task` with an NLL-trained teacher and the classification students.

    Every model is scored by accuracy, NLL and ECE on `test = (x, y)`.
    """
    x_test, y_test = test
    return Task(
        name=name,
        data=train,
        teacher=trained_teacher(
            make_teacher, keras_ecl.losses.NegativeLogLikelihood(), data=train, config=config
        ),
        make_student=make_student,
        runs=runs,
        config=config,
        score=lambda model, teacher: metrics.classification_metrics(predict(model, x_test), y_test),
        methods=CLASSIFICATION_METHODS,
    )


def trained_teacher(make_teacher, loss, *, data, config, **fit):
    """`teacher(seed)` of a `Task`: `train_teacher` with these arguments."""

    def teacher(seed):
        return train_teacher(make_teacher, seed, loss=loss, data=data, config=config, **fit)

    return teacher


def train_teacher(make_teacher, seed, *, loss, data, config, **fit):
    """A fresh teacher seeded by `seed`, fitted with `loss` on `data = (x, y)`.

    Returns the teacher and its training seconds; `fit` goes to `fit`.
    """
    keras.utils.set_random_seed(seed)
    teacher = make_teacher()
    teacher.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss)
    seconds, _ = timed_fit(teacher, *data, config.teacher_epochs, config.batch_size, **fit)
    return teacher, seconds


def student_options(head, *, supervised_weight, sampler, samples_per_example):
    """`keras_ecl.Distiller` options of ERM, KD and ECL that differ in `mode` only."""
    kd = dict(mode="kd", head=head, supervised_weight=supervised_weight)
    return {
        "ERM": dict(mode="erm", head=head),
        "KD": kd,
        "ECL": dict(kd, mode="ecl", sampler=sampler, samples_per_example=samples_per_example),
    }


def reseeded(sampler, seed):
    """A copy of `sampler` drawing from `seed` (a `OneOf`'s seed drives its parts)."""
    return type(sampler).from_config({**sampler.get_config(), "seed": seed})


# Training and prediction.


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


def build_distiller(make_student, teacher, options, *, learning_rate, seed):
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


def build_keras_distiller(
    make_student, teacher, *, temperature, student_loss_weight, learning_rate, seed
):
    """Keras' own `keras.distillation.Distiller` with Hinton KD (logits, KL, T²)."""
    keras.utils.set_random_seed(seed)
    distiller = keras.distillation.Distiller(
        teacher=teacher,
        student=make_student(),
        distillation_losses=keras_logits_distillation(temperature),
        student_loss_weight=student_loss_weight,
    )
    distiller.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return distiller


def equal_time_epochs(build_kd, build_ecl, data, *, epochs, batch_size, probe_epochs, rounds=2):
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
                model, *data, epochs=probe_epochs if round_ else 1, batch_size=batch_size
            )
            if round_:
                times[name].extend(epoch_times)
    kd_epoch, ecl_epoch = float(np.median(times["kd"])), float(np.median(times["ecl"]))
    return {
        "epochs": max(1, round(epochs * ecl_epoch / kd_epoch)),
        "kd_epoch_seconds": kd_epoch,
        "ecl_epoch_seconds": ecl_epoch,
    }


def predict(model, x, batch_size=1024):
    """Raw outputs of a model (logits, or `[loc, raw_scale]`) as a NumPy array."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0))


def normal_parameters(outputs):
    """`(loc, scale)` NumPy arrays of one regression output from `[loc, raw_scale]`."""
    loc, scale = keras_ecl.heads.Normal().split(outputs)
    return np.asarray(loc)[:, 0], np.asarray(scale)[:, 0]


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
