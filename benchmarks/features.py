"""Feature matching (FitNets' hint) on real inputs only, or on extracurricular inputs too.

KD and ECL (the library's defaults), each alone and with a
`keras_ecl.objectives.FeatureMatching` term next to the head's KL: the student's
penultimate layer (what its classifier reads), through a learned projection, matches
the teacher's penultimate layer. KD evaluates the term on the real batch only; ECL on
its extracurricular inputs (its default `real_weight=0` runs the teacher on those
alone). Each student gets 1 and 2 units of KD's time, 3 seeds, scored on the test split,
on MNIST-1D (CNN teacher -> MLP student) and Fashion-MNIST's 10 % regime (CNN teacher ->
CNN or MLP student). The term's weight, 1 against the KL's 1, was chosen on
Fashion-MNIST's validation split (MLP student, seed 0: 0.1 and 1 tried).

Run `python -m benchmarks.features --task mnist1d` (or `fashion_mnist_10pct_mlp`,
`fashion_mnist_10pct_cnn`) from the repository root, `--smoke` for a run of seconds.
Fashion-MNIST needs `make data` first.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.features")

import dataclasses
import os
import tempfile

import keras_ecl
from benchmarks import cli, fashion_mnist, harness, mnist1d

NAME = "features"
FEATURE_WEIGHT = 1.0  # against the KL's 1; chosen on Fashion-MNIST validation
BUDGETS = (1.0, 2.0)
TASKS = ("mnist1d", "fashion_mnist_10pct_mlp", "fashion_mnist_10pct_cnn")
WITH_FEATURES = {"KD + features": "KD", "ECL + features": "ECL"}


def penultimate(model):
    """The name of the layer whose outputs `model`'s last layer reads."""
    return model.layers[-2].name


def with_features(run_name):
    """`train(trial)` of run `run_name` plus a feature term on the penultimate layers."""

    def train(trial):
        def options(student):
            options = trial.runs[run_name]
            head = keras_ecl.heads.get(options.get("head", "categorical"))
            teacher_layer, student_layer = penultimate(trial.teacher), penultimate(student)
            return {
                **options,
                "distillation_losses": [
                    keras_ecl.objectives.HeadKL(head),
                    keras_ecl.objectives.FeatureMatching(teacher_layer, student_layer),
                ],
                "distillation_loss_weights": [1.0, FEATURE_WEIGHT],
            }

        distiller = trial.distiller(options)
        return harness.Trained(distiller.student, trial.fit(distiller))

    return train


METHODS = (
    harness.KD,
    harness.Method("KD + features", with_features("KD")),
    harness.ECL,
    harness.Method("ECL + features", with_features("ECL")),
)


def task(name, smoke):
    """The `(task, config, title)` of `name` (one of `TASKS`), on its test split."""
    if name == "mnist1d":
        config = mnist1d.CONFIGS["smoke" if smoke else "full"]
        config = dataclasses.replace(config, budgets=BUDGETS)
        built = mnist1d.task(config, mnist1d.runs_for_seed, methods=METHODS)
        title = "MNIST-1D: CNN teacher -> MLP student"
    else:
        student = name.rsplit("_", 1)[1]
        config = fashion_mnist.SMOKE if smoke else fashion_mnist.CONFIGS["10pct"]
        config = dataclasses.replace(config, budgets=BUDGETS)
        cache = (
            os.path.join(tempfile.gettempdir(), "keras_ecl_smoke_teachers")
            if smoke
            else fashion_mnist.TEACHER_CACHE
        )
        built = fashion_mnist.task(
            config, fashion_mnist.runs_for_seed, "10pct", student, methods=METHODS, cache=cache
        )
        # No calibrated teacher here: the validation split is not needed.
        built = dataclasses.replace(built, validation=None)
        rows = len(built.data[0])
        title = f"Fashion-MNIST (10 %, {rows} images): CNN teacher -> {student.upper()} student"
    return built, config, f"Feature matching, real vs extracurricular inputs: {title}"


def main(argv=None):
    def add_arguments(parser):
        parser.add_argument("--task", choices=TASKS, default="mnist1d")

    args, _ = cli.parse_args(__doc__, {"smoke": None, "full": None}, argv, add_arguments)
    built, config, title = task(args.task, args.smoke)
    name = f"{NAME}_{args.task}"
    per_seed, fields = cli.run_seeds(
        args, name, config, lambda seeds: harness.run(built, seeds), cli.command_line(NAME, argv)
    )
    return harness.finish_classification(
        name=name,
        title=title,
        description=(
            f"{__doc__.split(chr(10) * 2)[1].replace(chr(10), ' ')} Models, data, KD's "
            f"settings and budget unit are those of the `{args.task.split('_10pct')[0]}` "
            "benchmark above."
        ),
        fields=fields,
        config=config,
        per_seed=per_seed,
        output=args.output,
        figure_title=title.split(": ", 1)[1],
        notes=[
            "The teacher's seconds are its training time as first measured (wall clock; "
            "Fashion-MNIST's teachers come from the benchmark's cache)."
        ],
    )


if __name__ == "__main__":
    main()
