"""1-D toy regression: does the student learn the teacher's mean *and* uncertainty?

A known function `f(x) = sin(3x) + 0.3x` with input-dependent noise is seen at
a few training points. A Normal-head teacher fitted by NLL is distilled into a
small student by MSE to its mean (KD for regression), by Normal KL on the
training points (`mode="kd"`) and by Normal KL on the training points plus
extracurricular inputs around them (ECL). Fidelity to the teacher is measured
on a dense grid a bit wider than the data.

Run `python -m benchmarks.toy_regression` from the repository root, or with `--smoke` for a
run of seconds.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.toy_regression")

import dataclasses
import os

import keras
import numpy as np

import keras_ecl
from benchmarks import cli, harness, metrics, report

NAME = "toy_regression"
DATA_SEED = 7  # the data are fixed; seeds vary the training only
NUM_TRAIN = 40
# Fit calls pay a fixed cost per epoch: an "epoch" is 50 passes over the tiled points.
TILES = 50
NUM_TEST = 2000
VALIDATION_SEED = 8  # held-out points for `keras_ecl.calibrate`, as many as for training
DOMAIN = (-3.0, 3.0)
GRID = (-3.5, 3.5, 1000)
SUPERVISED_WEIGHT = 0.1


CONFIGS = {
    "full": harness.TrainConfig(
        teacher_epochs=40, student_epochs=100, batch_size=NUM_TRAIN, learning_rate=3e-3
    ),
}
CONFIGS["smoke"] = CONFIGS["full"].smoke()


def true_function(x):
    return np.sin(3.0 * x) + 0.3 * x


def noise_scale(x):
    """Noise grows from left to right: 0.05 at x = -3, 0.35 at x = 3."""
    return 0.2 + 0.05 * x


def sample(num, rng):
    x = rng.uniform(*DOMAIN, size=(num, 1)).astype("float32")
    y = true_function(x) + noise_scale(x) * rng.normal(size=x.shape)
    return x, y.astype("float32")


def make_mlp(widths, name, l2=0.0):
    regularizer = keras.regularizers.L2(l2) if l2 else None
    layers = [keras.Input((1,))]
    layers += [
        keras.layers.Dense(w, activation="silu", kernel_regularizer=regularizer) for w in widths
    ]
    layers.append(keras_ecl.heads.HeadLayer("normal", event_size=1, initial_scale=0.5))
    return keras.Sequential(layers, name=name)


def make_teacher():
    # Weight decay keeps the NLL-trained teacher from shrinking its scale onto the noise.
    return make_mlp([64, 64, 64], "mlp_teacher", l2=1e-3)


def make_student():
    return make_mlp([32, 32], "mlp_student")


def plot(models, x, y, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(*GRID).astype("float32")[:, None]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, name in zip(axes, ("KD-MSE", "ECL"), strict=True):
        for model_name, color in (("teacher", "0.3"), (name, "C1" if name == "ECL" else "C0")):
            loc, scale = harness.normal_parameters(harness.predict(models[model_name], grid))
            ax.plot(grid[:, 0], loc, color=color, label=f"{model_name} mean")
            ax.fill_between(
                grid[:, 0],
                loc - 2 * scale,
                loc + 2 * scale,
                color=color,
                alpha=0.2,
                label=f"{model_name} ± 2 scale",
            )
        ax.plot(grid[:, 0], true_function(grid[:, 0]), "k:", label="f(x)")
        ax.scatter(x[:, 0], y[:, 0], s=12, color="k", zorder=3, label="training points")
        ax.set_title(f"teacher vs student {report.LABELS[name].removeprefix('student ')}")
        ax.set_xlabel("x")
        ax.legend(fontsize=7, loc="upper left")
    axes[0].set_ylim(-3, 3)
    report.save_figure(figure, path)


def main(argv=None):
    args, config = cli.parse_args(__doc__, CONFIGS, argv)
    rng = np.random.default_rng(DATA_SEED)
    x, y = sample(NUM_TRAIN, rng)
    x_test, y_test = sample(NUM_TEST, rng)
    validation = sample(NUM_TRAIN, np.random.default_rng(VALIDATION_SEED))
    tiled = (np.tile(x, (TILES, 1)), np.tile(y, (TILES, 1)))
    grid = np.linspace(*GRID).astype("float32")[:, None]

    def score(model, teacher):
        loc, scale = harness.normal_parameters(harness.predict(model, grid))
        teacher_loc, teacher_scale = harness.normal_parameters(harness.predict(teacher, grid))
        test_loc, test_scale = harness.normal_parameters(harness.predict(model, x_test))
        return {
            "loc_rmse": metrics.rmse(loc, teacher_loc),
            "scale_rmse": metrics.rmse(scale, teacher_scale),
            "test_nll": metrics.gaussian_nll(y_test[:, 0], test_loc, test_scale),
            "test_rmse": metrics.rmse(test_loc, y_test[:, 0]),
        }

    def runs(seed):
        head = keras_ecl.heads.Normal()
        return {
            **harness.kd_and_erm(None, SUPERVISED_WEIGHT, head=head),
            "ECL": harness.ecl_options(seed=1000 + seed, head=head),
        }

    loss = keras_ecl.losses.NegativeLogLikelihood(keras_ecl.heads.Normal())
    task = harness.Task(
        name=NAME,
        data=tiled,
        teacher=harness.trained_teacher(make_teacher, loss, data=tiled, config=config),
        make_student=make_student,
        runs=runs,
        config=config,
        score=score,
        methods=harness.REGRESSION_METHODS + harness.CALIBRATED_METHODS,
        validation=validation,
    )
    os.makedirs(args.output, exist_ok=True)
    figure = os.path.join(args.output, f"{NAME}.png")

    def on_models(seed, models):
        if seed == args.seeds[0]:
            plot(models, x, y, figure)

    per_seed = harness.run(task, args.seeds, on_models)
    result = {
        "title": "Toy 1-D regression: Normal-head teacher -> small student",
        "description": (
            f"f(x) = sin(3x) + 0.3x, {NUM_TRAIN} training points x ~ U{DOMAIN} (fixed, data "
            f"seed {DATA_SEED}), noise std 0.2 + 0.05x (0.05 to 0.35). Teacher: MLP SiLU "
            "64-64-64 with a Normal head and L2 1e-3, NLL. Student: MLP SiLU 32-32 with a "
            f"Normal head. Teacher {config.teacher_epochs} epochs, students' budget unit "
            f"KD's {config.student_epochs} epochs; an epoch is {TILES} passes over the "
            f"points (tiled), batch {NUM_TRAIN}, Adam {config.learning_rate}. "
            "KD-MSE: the student's mean fits the teacher's mean by MSE (then one constant "
            "scale, the RMS training residual). KD: Normal KL on the training points "
            f"(`mode='kd'`, supervised weight {SUPERVISED_WEIGHT}). {harness.ECL_DESCRIPTION}"
        ),
        "command": cli.command_line(NAME, argv),
        "seeds": args.seeds,
        "clock": args.clock,
        "config": dataclasses.asdict(config),
        "columns": [
            ["loc_rmse", "mean RMSE vs teacher (grid)", 3],
            ["scale_rmse", "scale RMSE vs teacher (grid)", 3],
            ["test_nll", "test NLL", 3],
            ["test_rmse", "test RMSE", 3],
            ["seconds", "train s", 1],
        ],
        "summary": metrics.summarize(per_seed),
        "budget": harness.budget_result(
            per_seed, config, "loc_rmse", "mean RMSE vs teacher (grid)", False
        ),
        "per_seed": per_seed,
        "notes": [
            f"Grid: {GRID[2]} points on [{GRID[0]}, {GRID[1]}], wider than the data. "
            f"Test: {NUM_TEST} fresh draws (x, y) from the true process on {DOMAIN}.",
            *harness.budget_notes(config, args.clock),
            "Gap closed on the grid RMSE of the mean vs the teacher (0 for the teacher): "
            "(RMSE_KD − RMSE) / RMSE_KD, the share of KD's mismatch that is removed.",
            "Test NLL: students may beat the teacher (a smoother fit can be better "
            "calibrated than the NLL-trained teacher); quoted as absolute figures.",
            f"Calibrated teacher: `keras_ecl.calibrate(teacher, validation, head='normal')` "
            f"on {NUM_TRAIN} held-out points (data seed {VALIDATION_SEED}, not the test "
            "draws): one factor on the teacher's scale, fitted by NLL; KD-cal and ECL-cal "
            "are KD and ECL distilling from it (same recipes, same budgets).",
            "The first figure shows the first seed's final students.",
        ],
    }
    curves = os.path.join(args.output, f"{NAME}_frontier.png")
    report.frontier_figure(result, curves, "Toy regression: mean RMSE vs teacher against time")
    result["figures"] = [figure, curves]
    return report.finish(NAME, result, args.output)


if __name__ == "__main__":
    main()
