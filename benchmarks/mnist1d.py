"""MNIST-1D benchmark: CNN teacher -> MLP student, ERM / KD / ECL and two controls.

The models, data and ECL settings are the demo's (`examples/mnist1d_distillation.py`);
this script repeats them over seeds, adds Keras' own `keras.distillation.Distiller`
as a second KD, KD given ECL's wall-clock time, and ECL with an identity sampler.

Run `python -m benchmarks.mnist1d` from the repository root (about 15 minutes per seed on a
2-core CPU), or with `--smoke` for a run of seconds.
"""

if not __package__:  # as a file, benchmarks/ on sys.path shadows the `mnist1d` package
    raise SystemExit("Run it from the repository root: python -m benchmarks.mnist1d")

import dataclasses
import os

from benchmarks import cli, harness, metrics, report
from examples import mnist1d_distillation as demo

NAME = "mnist1d"
CONFIGS = {
    "full": harness.TrainConfig(
        teacher_epochs=60,
        student_epochs=200,
        batch_size=100,
        learning_rate=1e-3,
        probe_epochs=3,
    ),
}
CONFIGS["smoke"] = CONFIGS["full"].smoke(train_rows=300, test_rows=200)
CONTROLS = ("ECL", "KD-keras", "KD-equal-time", "Identity")


def runs_for_seed(seed):
    """The demo's ERM, KD and ECL options, with ECL's sampler seeded from `seed`."""
    runs = demo.student_runs()
    runs["ECL"] = {**runs["ECL"], "sampler": harness.reseeded(runs["ECL"]["sampler"], 1000 + seed)}
    return runs


def plot(summary, path):
    """Test accuracy per model, mean with sample-std error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    means = [summary[n]["accuracy"]["mean"] for n in names]
    stds = [summary[n]["accuracy"]["std"] for n in names]
    figure, axes = plt.subplots(figsize=(9, 4))
    axes.bar(names, means, yerr=stds, capsize=4, color=["0.5"] + [f"C{i}" for i in range(7)])
    for i, mean in enumerate(means):
        axes.text(i, mean + 0.02, f"{mean:.3f}", ha="center")
    axes.set_ylim(0, 1.08)
    axes.set_ylabel("test accuracy")
    axes.set_title("MNIST-1D: CNN teacher -> MLP student (mean ± std over seeds)")
    axes.tick_params(axis="x", labelrotation=20)
    report.save_figure(figure, path)


def main(argv=None):
    args, config = cli.parse_args(__doc__, CONFIGS, argv)
    x, y, x_test, y_test = demo.load_mnist1d()
    rows, test_rows = config.train_rows, config.test_rows
    train, test = (x[:rows], y[:rows]), (x_test[:test_rows], y_test[:test_rows])
    print(f"MNIST-1D: {len(train[0])} training and {len(test[0])} test signals", flush=True)

    task = harness.classification_task(
        name=NAME,
        train=train,
        test=test,
        make_teacher=demo.make_teacher,
        make_student=demo.make_student,
        runs=runs_for_seed,
        config=config,
    )
    per_seed = harness.run(task, args.seeds)
    summary = metrics.summarize(per_seed)
    figure = os.path.join(args.output, f"{NAME}.png")
    os.makedirs(args.output, exist_ok=True)
    plot(summary, figure)
    result = {
        "title": "MNIST-1D: CNN teacher -> MLP student",
        "description": (
            "MNIST-1D (`mnist1d`, generated offline: 4000 training / 1000 test signals of "
            "length 40, 10 classes). Teacher: the demo's 1-D CNN (128 channels), trained "
            f"{config.teacher_epochs} epochs per seed. Students: the demo's MLP 256-256, "
            f"{config.student_epochs} epochs, batch {config.batch_size}, Adam "
            f"{config.learning_rate}. KD: T = {demo.TEMPERATURE}, supervised weight "
            f"{demo.SUPERVISED_WEIGHT}, both in `keras_ecl.Distiller(mode='kd')` and in "
            "`keras.distillation.Distiller`. ECL: the demo's settings, 4 samples per input "
            "from OneOf[MixUp(1.0), GaussianNoise(0.5), CutMix(1.0)], fixed in advance."
        ),
        "command": cli.command_line(NAME, argv),
        "seeds": args.seeds,
        "config": dataclasses.asdict(config),
        "columns": report.CLASSIFICATION_COLUMNS,
        "summary": summary,
        "gap_closed": metrics.gaps(summary, "accuracy", True, CONTROLS),
        "per_seed": per_seed,
        "notes": [
            "Gap closed = (acc − acc_KD) / (acc_teacher − acc_KD) on the means over seeds, "
            "with KD = `keras_ecl.Distiller(mode='kd')`. NLL is the test cross-entropy at "
            "temperature 1.",
            *report.control_notes(per_seed, config.student_epochs),
        ],
        "figures": [figure],
    }
    return report.finish(NAME, result, args.output)


if __name__ == "__main__":
    main()
