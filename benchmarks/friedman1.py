"""Friedman #1 with heteroscedastic noise: Normal-head ensemble teacher -> small MLP student.

`sklearn.datasets.make_friedman1` (10 features, 5 of them used) plus noise whose
standard deviation grows with the first feature, so a good model must predict
an input-dependent scale. ECL's sampler is chosen on the validation split with
one seed; the test split scores the final models only.

Run `python -m benchmarks.friedman1` from the repository root, or with `--smoke` for a run
of seconds.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.friedman1")

import dataclasses
import os

import keras
import numpy as np

import keras_ecl
from benchmarks import cli, harness, metrics, report

NAME = "friedman1"
DATA_SEED = 11  # features, noise and split are fixed; seeds vary the training only
SPLIT = {"train": 800, "val": 400, "test": 2000}
SUPERVISED_WEIGHT = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(harness.TrainConfig):
    """`TrainConfig` plus the teacher ensemble."""

    teacher_members: int
    patience: int  # early stopping of each member, in epochs


CONFIGS = {
    "full": Config(
        teacher_epochs=1000,
        teacher_members=5,
        patience=100,
        student_epochs=200,
        batch_size=64,
        learning_rate=1e-3,
    ),
}
CONFIGS["smoke"] = CONFIGS["full"].smoke(teacher_members=2, patience=1)


def noise_scale(x):
    return 0.5 + 2.0 * x[:, 0]


def load_friedman1():
    """Standardised splits and the training target's `(mean, std)`.

    Returns `((x, y) train, (x, y) val, (x, y) test, (y_mean, y_std))`, inputs
    and targets standardised with training statistics.
    """
    from sklearn.datasets import make_friedman1

    total = sum(SPLIT.values())
    x, y = make_friedman1(n_samples=total, n_features=10, noise=0.0, random_state=DATA_SEED)
    y = y + noise_scale(x) * np.random.default_rng(DATA_SEED).normal(size=total)
    ends = np.cumsum([SPLIT["train"], SPLIT["val"]])
    parts = np.split(x, ends), np.split(y, ends)
    x_mean, x_std = parts[0][0].mean(axis=0), parts[0][0].std(axis=0)
    y_mean, y_std = parts[1][0].mean(), parts[1][0].std()
    splits = [
        (((xs - x_mean) / x_std).astype("float32"), ((ys - y_mean) / y_std).astype("float32"))
        for xs, ys in zip(*parts, strict=True)
    ]
    return (*splits, (float(y_mean), float(y_std)))


def make_mlp(widths, name, dropout=0.0):
    layers = [keras.Input((10,))]
    for width in widths:
        layers.append(keras.layers.Dense(width, activation="relu"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras_ecl.heads.HeadLayer("normal", event_size=1))
    return keras.Sequential(layers, name=name)


def make_member():
    """One member of the teacher ensemble."""
    return make_mlp([256, 256], "mlp_member", dropout=0.1)


def train_ensemble_teacher(train, validation, config, seed):
    """`teacher_members` Normal-head MLPs fitted by NLL with early stopping on
    validation NLL, as a `keras_ecl.teachers.Ensemble` (its student matches the
    moment-matched Normal of the mixture); returns `(teacher, seconds)`.

    A single NLL-trained MLP overfits 800 rows: on validation it was no
    better than the 16-unit student (RMSE 2.02-2.25 vs 2.01-2.39, NLL
    2.22-2.23 vs 2.15-2.31; L2, smaller learning rates and beta-NLL did not
    help), leaving no gap to close. The ensemble reached RMSE 1.87, NLL 2.00.
    """
    loss = keras_ecl.losses.NegativeLogLikelihood(keras_ecl.heads.Normal())
    members, seconds = [], 0.0
    for index in range(config.teacher_members):
        member, member_seconds = harness.train_teacher(
            make_member,
            1000 * seed + index,
            loss=loss,
            data=train,
            config=config,
            **teacher_fit(validation, config),
        )
        members.append(member)
        seconds += member_seconds
    return keras_ecl.teachers.Ensemble(members, name="ensemble_teacher"), seconds


def make_student():
    return make_mlp([16], "mlp_student")


def runs_for_seed(seed):
    """KD by Normal KL, ERM and ECL's default recipe on a Normal head, seeded from `seed`."""
    head = keras_ecl.heads.Normal()
    return {
        **harness.kd_and_erm(None, SUPERVISED_WEIGHT, head=head),
        "ECL": harness.ecl_options(seed=1000 + seed, head=head),
    }


def task(config, validation=False):
    """The Friedman #1 `Task`, scored on the test split or on the validation split."""
    train, val, test, y_stats = load_friedman1()
    return harness.Task(
        name=NAME,
        data=train,
        teacher=lambda seed: train_ensemble_teacher(train, val, config, seed),
        make_student=make_student,
        runs=runs_for_seed,
        config=config,
        score=scorer(*(val if validation else test), y_stats),
        methods=harness.REGRESSION_METHODS + (() if validation else harness.CALIBRATED_METHODS),
        validation=val,
    )


def scorer(x, y, y_stats):
    """`score(model, teacher)`: RMSE and Gaussian NLL on `(x, y)` in the original target units."""
    y_mean, y_std = y_stats

    def score(model, teacher):
        loc, scale = harness.normal_parameters(harness.predict(model, x, head="normal"))
        loc, scale, target = loc * y_std + y_mean, scale * y_std, y * y_std + y_mean
        return {"rmse": metrics.rmse(loc, target), "nll": metrics.gaussian_nll(target, loc, scale)}

    return score


def teacher_fit(validation, config):
    stop = keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True)
    return {"validation_data": validation, "callbacks": [stop]}


def main(argv=None):
    args, config = cli.parse_args(__doc__, CONFIGS, argv)
    test_task = task(config)
    per_seed, fields = cli.run_seeds(
        args,
        NAME,
        config,
        lambda seeds: harness.run(test_task, seeds),
        cli.command_line(NAME, argv),
    )
    result = {
        "title": "Friedman #1 with heteroscedastic noise: Normal-head ensemble teacher -> MLP-16",
        "description": (
            "`make_friedman1(n_features=10, noise=0)` plus Normal noise of std 0.5 + 2·x0 "
            f"(data seed {DATA_SEED}); {SPLIT['train']} train / {SPLIT['val']} validation / "
            f"{SPLIT['test']} test rows, inputs and target standardised with training "
            "statistics, metrics in the original target units. Teacher: a deep ensemble of "
            f"{config.teacher_members} MLPs (ReLU 256-256, dropout 0.1, Normal head), "
            "each fitted by NLL with early stopping on validation NLL (patience "
            f"{config.patience}, best weights), as `keras_ecl.teachers.Ensemble(members)`: "
            "students match the moment-matched Normal of the mixture. Student: "
            f"MLP ReLU 16 with a Normal head, batch {config.batch_size}, Adam "
            f"{config.learning_rate}. KD-MSE: student mean fitted to the teacher's mean by MSE "
            "(then one constant scale, the RMS training residual). KD: Normal KL on training "
            f"inputs (`mode='kd'`, supervised weight {SUPERVISED_WEIGHT}). "
            f"{harness.ECL_DESCRIPTION}"
        ),
        **fields,
        "config": dataclasses.asdict(config),
        "columns": [["rmse", "test RMSE", 3], ["nll", "test NLL", 3], ["seconds", "train s", 1]],
        "summary": metrics.summarize(per_seed),
        "budget": harness.budget_result(per_seed, config, "nll", "test NLL", False),
        "per_seed": per_seed,
        "notes": [
            *harness.budget_notes(config, fields.get("clock", "wall")),
            "Why an ensemble teacher: a single 128-128-128 NLL-trained MLP was tried first "
            "and was no better than the student alone (seed 0 test RMSE 2.14 / NLL 2.29 vs "
            "ERM 2.06 / 2.18; seed 1 2.31 / 2.26 vs 1.92 / 2.13), so there was no gap to "
            "close; on validation, L2, lower learning rates and beta-NLL did not fix it, "
            "and a 5-member ensemble did (RMSE 1.87, NLL 2.00 on seed 0).",
            "`keras_ecl.teachers.Ensemble` replaced the hand-built moment-matched ensemble this "
            "benchmark used until 2026-12-05; same members, seeds and recipes, and the same "
            "numbers within noise (test NLL per seed 0/1/2, old → new: teacher 2.031/2.063 "
            "unchanged, KD 2.134/2.062/2.022 → 2.134/2.063/2.021, ECL 2.060/2.029/2.033 → "
            "2.055/2.028/2.029).",
            "Calibrated teacher: `keras_ecl.calibrate(teacher, validation, head='normal')` "
            "on the validation split (the one early stopping used; never the test split), "
            "one factor on the ensemble's scale fitted by NLL; KD-cal and ECL-cal are KD and "
            "ECL distilling from it (same recipes, same budgets).",
            "Gap closed on test NLL, (NLL_KD − NLL) / (NLL_KD − NLL_teacher), only where the "
            "teacher is better than KD; a student may beat its teacher.",
        ],
    }
    os.makedirs(args.output, exist_ok=True)
    figure = os.path.join(args.output, f"{NAME}.png")
    report.frontier_figure(result, figure, "Friedman #1: test NLL against training time")
    result["figures"] = [figure]
    return report.finish(NAME, result, args.output)


if __name__ == "__main__":
    main()
