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

Run `python -m benchmarks.speed` from the repository root (about 20 minutes on 2 CPU cores),
or with `--smoke` for a check of a few seconds.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.speed")

import argparse
import contextlib
import dataclasses
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


def measure(runs, x, y, config, jit_compile):
    """Median seconds per step of each run, interleaved over rounds."""
    models = {}
    seconds = {name: [] for name in runs}
    for name, (build, batch_size, _) in runs.items():
        keras.utils.set_random_seed(0)
        models[name] = build(jit_compile)
        models[name].fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # trace + compile
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
    is), on the same model. A call returns when its step has run, so each call
    is timed alone; the variants alternate call by call in a shuffled order,
    `steps_per_round` calls each per round: the step without `fit`'s per-epoch
    and per-step Python work, whose noise hides a cost of one or two per cent.
    """
    x, y = tf.constant(x), tf.constant(y)
    steps = {}
    for name, cls in CHECK_VARIANTS:
        own = cls or type(model)
        steps[name] = tf.function(
            lambda a, b, own=own: own.train_step(model, (a, b)), jit_compile=model.jit_compile
        )
        with _traced_as(model, cls):
            steps[name](x, y)  # traces, and compiles under XLA
    seconds = {name: [] for name in steps}
    for _ in range(config.step_rounds):
        calls = {name: [] for name in steps}
        for _ in range(config.steps_per_round):
            for name in rng.permutation(list(steps)):
                start = time.perf_counter()
                steps[name](x, y)
                calls[name].append(time.perf_counter() - start)
        for name, times in calls.items():
            seconds[name].append(statistics.median(times))
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


RATIOS = [
    ("ECL k=1 / KD (ours), same rows", "ECL k=1", "KD (ours), 2x batch"),
    ("ECL k=2 / KD (ours), same rows", "ECL k=2", "KD (ours), 3x batch"),
    ("KD (ours) / keras Distiller", "KD (ours)", "keras Distiller"),
    ("KD (ours) / keras Distiller, 2x batch", "KD (ours), 2x batch", "keras Distiller, 2x batch"),
]


def text_table(all_results, check_costs=None):
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
    all_results, check_costs = {}, {}
    for jit_compile in jit_values:
        all_results[jit_compile] = measure(runs, x, y, config, jit_compile)
        check_costs[jit_compile] = measure_check_cost(check_runs, x, y, config, jit_compile)
        print(text_table({jit_compile: all_results[jit_compile]}, check_costs), flush=True)
    if args.output:
        write_results(all_results, check_costs, config, args.output, argv)
    return all_results, check_costs


def ratios(results):
    """`{label: step-time ratio}` of `RATIOS` for one jit setting."""
    return {
        label: results[numerator]["step_ms"] / results[denominator]["step_ms"]
        for label, numerator, denominator in RATIOS
    }


def write_results(all_results, check_costs, config, path, argv=None):
    """The timings, their ratios, the checks' cost, the date, machine and command, as JSON."""
    payload = {
        "command": cli.command_line("speed", argv),
        "config": dataclasses.asdict(config),
        "results": {str(jit): results for jit, results in all_results.items()},
        "ratios": {str(jit): ratios(results) for jit, results in all_results.items()},
        "check_cost": {str(jit): costs for jit, costs in check_costs.items()},
    }
    return report.write_json(path, "speed", payload)


if __name__ == "__main__":
    main()
