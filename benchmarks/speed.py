"""Training speed: plain `student.fit`, KD (ours), `keras.distillation.Distiller`
and ECL, side by side in one run.

ECL runs the teacher and the student on `(1 + k) * batch` rows per step (the real
batch and `k` synthetic inputs per real input), so its fair baseline is KD on a
batch of the same total size: the ratio ECL / KD(same total rows) is the cost of
sampling itself. Our KD is compared with Keras' own Distiller at equal batches.

Each configuration is compiled once, then trained for a few epochs in rounds
that interleave the configurations (so machine load hits all of them alike);
the figure is the median time of an epoch (compilation happens before, in a
first epoch that is not timed).

What the checks inside our step cost is timed apart, in many short rounds, on
one model traced four times: with its checks; without the label checks but with
the non-finite guard (`GuardOnlyDistiller`: the update is still skipped when it
would leave non-finite state); with no check at all (`UncheckedDistiller`); and
with none again (an A/A pair, whose ratio shows the noise floor). So the label
checks (checked / guard only), the guard (guard only / unchecked) and both
(checked / unchecked) each get a figure. Each round trains one epoch with each
variant's train function, in a shuffled order, and a figure is the median over
rounds of the per-round ratio. The bare step is timed the same way, call by
call (`_step_seconds`): `fit`'s own noise hides a cost of one or two per cent.

Our KD is timed against Keras' Distiller head to head the same way
(`measure_keras_parity`): the models of the table above, one `fit` epoch each
per round in a shuffled order, then their compiled train functions call by
call; the ratios ours / Keras' are per round, on the wall clock and on the CPU
time of the process (`CLOCKS`), which other jobs on a shared machine inflate
less.

Run `python -m benchmarks.speed` from the repository root (about 30 minutes on 2 CPU cores),
or with `--smoke` for a check of a few seconds. On a shared machine, one thread per
process (`TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1`) keeps the others' load
from reshuffling TensorFlow's thread pools between rounds.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.speed")

import argparse
import contextlib
import dataclasses
import functools
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

import keras_ecl
from benchmarks import cli, harness, report
from examples import mnist1d_distillation as demo


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpeedConfig:
    """Random rows timed, the base batch, and interleaved rounds of a few epochs."""

    rows: int
    batch_size: int
    rounds: int
    epochs_per_round: int
    check_rounds: int
    step_rounds: int  # rounds of `steps_per_round` bare `train_step` calls, checked vs not
    steps_per_round: int
    parity_rounds: int  # rounds of one epoch, then of steps, of KD (ours) against Keras'


# Rows divisible by every batch size below, so no partial batch retraces a step.
CONFIGS = {
    "full": SpeedConfig(
        rows=4200,
        batch_size=100,
        rounds=6,
        epochs_per_round=2,
        check_rounds=60,
        step_rounds=40,
        steps_per_round=50,
        parity_rounds=40,
    ),
}
CONFIGS["smoke"] = dataclasses.replace(
    CONFIGS["full"],
    rows=300,
    batch_size=50,
    rounds=1,
    check_rounds=2,
    step_rounds=2,
    steps_per_round=2,
    parity_rounds=2,
)


class GuardOnlyDistiller(keras_ecl.Distiller):
    """The Distiller without its label checks, to time what they cost.

    The non-finite guard stays: the update is applied only if the loss and
    the squared gradients are finite (a conditional update).
    """

    def _checked_labels(self, y, outputs, batch_size):
        return y, tf.constant(True), lambda: None


class UncheckedDistiller(GuardOnlyDistiller):
    """The Distiller without any check inside its step, to time what they cost.

    No label check, and a bare `optimizer.apply`: no finiteness check of the
    loss and the squared gradients, no conditional update.
    """

    def _apply_if_finite(self, gradients, variables, loss, on_skip):
        self.optimizer.apply(gradients, variables)
        return tf.constant(True)


def make_runs(teacher, batch_size):
    """Name -> (model factory, batch size, rows per step) of each configuration."""
    head = keras_ecl.heads.Categorical(temperature=demo.TEMPERATURE)
    weight = demo.SUPERVISED_WEIGHT

    def ours(mode, k=0):
        def build(jit_compile):
            distiller = keras_ecl.Distiller(
                demo.make_student(),
                teacher,
                head=head,
                mode=mode,
                supervised_weight=weight,
                sampler=keras_ecl.samplers.MixUp(alpha=1.0, seed=0) if mode == "ecl" else None,
                samples_per_example=max(k, 1),
                # One update on real + synthetic rows: the cost of sampling alone.
                real_weight=1.0 if mode == "ecl" else 0.0,
                updates_per_batch=1,
                selection=None,  # every draw: the rows above are all the step sees
            )
            distiller.compile(optimizer="adam", jit_compile=jit_compile)
            return distiller

        return build

    def keras_distiller(jit_compile):
        distiller = keras.distillation.Distiller(
            teacher=teacher,
            student=demo.make_student(),
            # An instance, not the string: see benchmarks.harness.keras_logits_distillation.
            distillation_losses=keras.distillation.LogitsDistillation(
                temperature=demo.TEMPERATURE, loss=keras.losses.KLDivergence()
            ),
            student_loss_weight=weight,
        )
        distiller.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        return distiller

    def plain(jit_compile):
        model = demo.make_student()
        model.compile(
            optimizer="adam",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        return model

    b = batch_size
    return {
        "student.fit": (plain, b, b),
        "keras Distiller": (keras_distiller, b, b),
        "KD (ours)": (ours("kd"), b, b),
        "keras Distiller, 2x batch": (keras_distiller, 2 * b, 2 * b),
        "KD (ours), 2x batch": (ours("kd"), 2 * b, 2 * b),
        "ECL k=1": (ours("ecl", 1), b, 2 * b),
        "KD (ours), 3x batch": (ours("kd"), 3 * b, 3 * b),
        "ECL k=2": (ours("ecl", 2), b, 3 * b),
    }


# Our KD against Keras' Distiller on equal batches: (label, ours, Keras').
PARITY = [
    ("KD (ours) / keras Distiller", "KD (ours)", "keras Distiller"),
    ("KD (ours) / keras Distiller, 2x batch", "KD (ours), 2x batch", "keras Distiller, 2x batch"),
]

# Step-time ratios of `measure`: (label, numerator, denominator).
RATIOS = [
    ("ECL k=1 / KD (ours), same rows", "ECL k=1", "KD (ours), 2x batch"),
    ("ECL k=2 / KD (ours), same rows", "ECL k=2", "KD (ours), 3x batch"),
    *PARITY,
]

# The clocks of the head-to-head timing: wall time, and the CPU time of this
# process (all its threads), which other jobs on a shared machine inflate less.
CLOCKS = {name: getattr(time, function) for name, function in harness.CLOCKS.items()}


def make_check_runs(runs):
    """Mode -> factory of the checked Distiller whose checks are timed, from `make_runs`'."""
    return {mode: runs[name][0] for mode, name in [("KD", "KD (ours)"), ("ECL k=1", "ECL k=1")]}


# What is timed against what: the model as built, without its label checks, and
# twice without any check (A/A).
CHECK_VARIANTS = [
    ("checked", None),
    ("guard only", GuardOnlyDistiller),
    ("unchecked", UncheckedDistiller),
    ("unchecked again", UncheckedDistiller),
]

# Figure -> (numerator, denominator) variants of the per-round ratios.
CHECK_RATIOS = {
    "label checks: checked / guard only": ("checked", "guard only"),
    "non-finite guard: guard only / unchecked": ("guard only", "unchecked"),
    "all checks: checked / unchecked": ("checked", "unchecked"),
    "A/A: unchecked again / unchecked": ("unchecked again", "unchecked"),
}


def build_models(runs, x, y, jit_compile):
    """Each run's model, built and trained for a first epoch that traces and compiles it."""
    models = {}
    for name, (build, batch_size, _) in runs.items():
        keras.utils.set_random_seed(0)
        models[name] = build(jit_compile)
        models[name].fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
    return models


def measure(models, runs, x, y, config):
    """Median seconds per step of each run, interleaved over rounds."""
    seconds = {name: [] for name in runs}
    for _ in range(config.rounds):
        for name, (_, batch_size, _) in runs.items():
            timer = harness.EpochTimes()  # epoch hooks keep Keras' async dispatch on
            models[name].fit(
                x,
                y,
                batch_size=batch_size,
                epochs=config.epochs_per_round,
                verbose=0,
                callbacks=[timer],
            )
            seconds[name].extend(timer.times)
    results = {}
    for name, (_, batch_size, rows) in runs.items():
        steps = len(x) // batch_size
        epoch_seconds = statistics.median(seconds[name])
        results[name] = {
            "batch_size": batch_size,
            "rows_per_step": rows,
            "step_ms": 1000 * epoch_seconds / steps,
            "steps_per_s": steps / epoch_seconds,
            "epochs_timed": len(seconds[name]),
        }
    return results


def measure_keras_parity(models, runs, x, y, config):
    """Per pair of `PARITY`: quartiles of the per-round ratios ours / Keras', per clock.

    On the models of `build_models`, already traced. Each round runs one `fit`
    epoch of each of the pairs' models in a shuffled order, timed on both
    `CLOCKS`; then the bare steps are timed the same way, round by round:
    `steps_per_round` calls of each model's own `train_function` (the compiled
    step `fit` calls) on one batch, alternating call by call in a shuffled
    order (`_call_seconds`).
    """
    rng = np.random.default_rng(0)
    names = [name for _, *pair in PARITY for name in pair]
    epochs = {clock: {name: [] for name in names} for clock in CLOCKS}
    for _ in range(config.parity_rounds):
        for name in rng.permutation(names):
            timers = {clock: harness.EpochTimes(CLOCKS[clock]) for clock in CLOCKS}
            batch_size = runs[name][1]
            models[name].fit(
                x, y, batch_size=batch_size, epochs=1, verbose=0, callbacks=[*timers.values()]
            )
            for clock, timer in timers.items():
                epochs[clock][name].extend(timer.times)
    calls = {}
    for name in names:
        batch_size = runs[name][1]
        batch = tf.data.Dataset.from_tensor_slices((x[:batch_size], y[:batch_size]))
        calls[name] = functools.partial(
            models[name].train_function, iter(batch.batch(batch_size).repeat())
        )
        calls[name]()  # traces for this iterator
    steps = _call_seconds(calls, config.parity_rounds, config.steps_per_round, rng, CLOCKS)
    results = {}
    for label, ours, theirs in PARITY:
        results[label] = {"batch_size": runs[ours][1]}
        for level, seconds in [("fit", epochs), ("train_step", steps)]:
            results[label][level] = {
                "rounds": config.parity_rounds,
                **{
                    clock: _quartiles(np.array(times[ours]) / np.array(times[theirs]))
                    for clock, times in seconds.items()
                },
            }
        results[label]["train_step"]["calls_per_round"] = config.steps_per_round
    return results


def measure_check_cost(check_runs, x, y, config, jit_compile):
    """Per mode: quartiles of the per-round ratios of `CHECK_RATIOS`.

    One model per mode, traced with and without the checks (`CHECK_VARIANTS`):
    the variants share weights, optimizer state and memory, where separately
    built models differ by a few per cent on their own. Each round runs `fit`
    for one epoch with each variant's train function, in a shuffled order;
    then the bare steps are timed the same way (`_step_seconds`).
    """
    rng = np.random.default_rng(0)
    costs = {}
    for mode, build in check_runs.items():
        keras.utils.set_random_seed(0)
        model = build(jit_compile)
        functions = {}
        for name, cls in CHECK_VARIANTS:
            with _traced_as(model, cls):
                model.make_train_function(force=True)
                model.fit(x, y, batch_size=config.batch_size, epochs=1, verbose=0)  # traces
            functions[name] = model.train_function
        seconds = {name: [] for name in functions}
        for _ in range(config.check_rounds):
            for name in rng.permutation(list(functions)):
                model.train_function = functions[name]
                timer = harness.EpochTimes()
                model.fit(
                    x, y, batch_size=config.batch_size, epochs=1, verbose=0, callbacks=[timer]
                )
                seconds[name].extend(timer.times)
        model.train_function = functions["checked"]
        costs[mode] = {**_check_ratios(seconds), "rounds": config.check_rounds}
        batch = x[: config.batch_size], y[: config.batch_size]
        steps = _step_seconds(model, *batch, config, rng)
        costs[mode]["steps"] = {**_check_ratios(steps), "rounds": config.step_rounds}
    return costs


def _step_seconds(model, x, y, config, rng):
    """Seconds per bare `train_step` call on one batch: median per variant and round.

    Each variant's `train_step` in its own `tf.function` (compiled as the model
    is), on the same model, timed by `_call_seconds` on the wall clock: the
    step without `fit`'s per-epoch and per-step Python work, whose noise hides
    a cost of one or two per cent.
    """
    x, y = tf.constant(x), tf.constant(y)
    steps = {}
    for name, cls in CHECK_VARIANTS:
        own = cls or type(model)
        step = tf.function(
            lambda a, b, own=own: own.train_step(model, (a, b)), jit_compile=model.jit_compile
        )
        with _traced_as(model, cls):
            step(x, y)  # traces, and compiles under XLA
        steps[name] = functools.partial(step, x, y)
    clocks = {"wall": time.perf_counter}
    return _call_seconds(steps, config.step_rounds, config.steps_per_round, rng, clocks)["wall"]


def _call_seconds(calls, rounds, calls_per_round, rng, clocks):
    """`{clock: {name: seconds per call}}`, the median call of each round.

    A call returns when its step has run, so each call is timed alone; the
    calls alternate one by one in a shuffled order, `calls_per_round` of each
    per round, so that load on the machine hits them alike.
    """
    seconds = {clock: {name: [] for name in calls} for clock in clocks}
    for _ in range(rounds):
        times = {clock: {name: [] for name in calls} for clock in clocks}
        for _ in range(calls_per_round):
            for name in rng.permutation(list(calls)):
                start = {clock: read() for clock, read in clocks.items()}
                calls[name]()
                for clock, read in clocks.items():
                    times[clock][name].append(read() - start[clock])
        for clock, per_name in times.items():
            for name, values in per_name.items():
                seconds[clock][name].append(statistics.median(values))
    return seconds


@contextlib.contextmanager
def _traced_as(model, cls):
    """Lets `model` trace its steps with the methods of `cls` (None: its own).

    `cls` is a subclass of the model's class that adds no state; the model
    gets its own class back afterwards, and functions traced meanwhile keep
    `cls`'s graph.
    """
    own = model.__class__
    model.__class__ = cls or own
    try:
        yield model
    finally:
        model.__class__ = own


def _check_ratios(seconds):
    """Quartiles of each of `CHECK_RATIOS`, round by round."""
    return {
        label: _quartiles(np.array(seconds[top]) / np.array(seconds[bottom]))
        for label, (top, bottom) in CHECK_RATIOS.items()
    }


def _quartiles(values):
    q25, median, q75 = np.quantile(values, [0.25, 0.5, 0.75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75)}


def text_table(all_results, check_costs=None, parity=None):
    """The timings and ratios of each jit setting as aligned text, for the console."""
    lines = []
    for jit_compile, results in all_results.items():
        lines.append(f"\njit_compile={jit_compile}")
        lines.append(
            f"{'configuration':<28}{'batch':>7}{'rows/step':>11}{'ms/step':>10}{'steps/s':>10}"
        )
        for name, r in results.items():
            lines.append(
                f"{name:<28}{r['batch_size']:>7}{r['rows_per_step']:>11}"
                f"{r['step_ms']:>10.2f}{r['steps_per_s']:>10.1f}"
            )
        for label, ratio in ratios(results).items():
            lines.append(f"  {label}: {ratio:.3f}")
        for label, timed in (parity or {}).get(jit_compile, {}).items():
            for level in ("fit", "train_step"):
                for clock in CLOCKS:
                    q = timed[level][clock]
                    lines.append(
                        f"  head to head ({level}, {clock}), {label}: {q['median']:.3f} "
                        f"[{q['q25']:.3f}, {q['q75']:.3f}]"
                    )
        for mode, cost in (check_costs or {}).get(jit_compile, {}).items():
            for level, ratios_ in [("fit", cost), ("train_step", cost.get("steps", {}))]:
                for label, q in ratios_.items():
                    if label not in ("rounds", "steps"):
                        lines.append(
                            f"  checks ({level}), {mode}, {label}: {q['median']:.3f} "
                            f"[{q['q25']:.3f}, {q['q75']:.3f}]"
                        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a check of a few seconds")
    parser.add_argument("--jit", choices=["off", "on", "both"], default="both")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    config = CONFIGS["smoke" if args.smoke else "full"]

    rng = np.random.default_rng(0)
    x = rng.normal(size=(config.rows, 40)).astype("float32")
    y = rng.integers(0, 10, size=config.rows).astype("int32")
    keras.utils.set_random_seed(0)
    teacher = demo.make_teacher()  # speed does not depend on the teacher's weights
    runs = make_runs(teacher, config.batch_size)
    check_runs = make_check_runs(runs)

    jit_values = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    all_results, check_costs, parity = {}, {}, {}
    for jit_compile in jit_values:
        models = build_models(runs, x, y, jit_compile)
        all_results[jit_compile] = measure(models, runs, x, y, config)
        parity[jit_compile] = measure_keras_parity(models, runs, x, y, config)
        del models
        check_costs[jit_compile] = measure_check_cost(check_runs, x, y, config, jit_compile)
        print(text_table({jit_compile: all_results[jit_compile]}, check_costs, parity), flush=True)
    if args.output:
        write_results(all_results, check_costs, parity, config, args.output, argv)
    return all_results, check_costs, parity


def ratios(results):
    """`{label: step-time ratio}` of `RATIOS` for one jit setting."""
    return {
        label: results[numerator]["step_ms"] / results[denominator]["step_ms"]
        for label, numerator, denominator in RATIOS
    }


def write_results(all_results, check_costs, parity, config, path, argv=None):
    """The timings, their ratios, the head-to-head ratios with Keras, the checks' cost,
    the date, machine and command, as JSON."""
    payload = {
        "command": cli.command_line("speed", argv),
        "config": dataclasses.asdict(config),
        "results": {str(jit): results for jit, results in all_results.items()},
        "ratios": {str(jit): ratios(results) for jit, results in all_results.items()},
        "keras_parity": {str(jit): timed for jit, timed in parity.items()},
        "check_cost": {str(jit): costs for jit, costs in check_costs.items()},
    }
    return report.write_json(path, "speed", payload)


if __name__ == "__main__":
    main()
