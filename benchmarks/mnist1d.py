"""MNIST-1D benchmark: CNN teacher -> MLP student, every method against training time.

The models and data are the demo's (`examples/mnist1d_distillation.py`). Per seed, one
teacher, then KD (whose time for 200 epochs is the budget unit), ERM, Keras' own
`keras.distillation.Distiller`, the peers FunMatch, DKD and logit-standardised KD, and ECL
with the library's default recipe, each trained for 4 units of time and scored on the test
split every 10 epochs.

Run `python -m benchmarks.mnist1d` from the repository root (about 30 minutes per seed on a
2-core CPU), or with `--smoke` for a run of seconds.
"""

if not __package__:  # as a file, benchmarks/ on sys.path shadows the `mnist1d` package
    raise SystemExit("Run it from the repository root: python -m benchmarks.mnist1d")

import math

import numpy as np

from benchmarks import cli, harness
from examples import mnist1d_distillation as demo

NAME = "mnist1d"
CONFIGS = {
    "full": harness.TrainConfig(
        teacher_epochs=60, student_epochs=200, batch_size=100, learning_rate=1e-3
    ),
}
CONFIGS["smoke"] = CONFIGS["full"].smoke(train_rows=300, test_rows=200)
VALIDATION_ROWS = 800  # held out of the 4000 training signals for recipe choices
VALIDATION_SEED = 123


def runs_for_seed(seed, config, train_rows):
    """KD as the demo runs it, ERM, the peers and ECL's default recipe, seeded from `seed`."""
    steps_per_epoch = math.ceil(train_rows / config.batch_size)
    return {
        **harness.kd_and_erm(demo.TEMPERATURE, demo.SUPERVISED_WEIGHT),
        **harness.peer_options(seed=1000 + seed, steps_per_epoch=steps_per_epoch),
        "ECL": harness.ecl_options(seed=1000 + seed),
    }


def load(config, validation=False):
    """`(train, test)` pairs; with `validation`, `(train minus 800, those 800)` instead."""
    x, y, x_test, y_test = demo.load_mnist1d()
    if validation:
        order = np.random.default_rng(VALIDATION_SEED).permutation(len(x))
        held, kept = order[:VALIDATION_ROWS], order[VALIDATION_ROWS:]
        x, y, x_test, y_test = x[kept], y[kept], x[held], y[held]
    rows, test_rows = config.train_rows, config.test_rows
    return (x[:rows], y[:rows]), (x_test[:test_rows], y_test[:test_rows])


def task(config, runs, validation=False, methods=harness.CLASSIFICATION_METHODS, teachers=False):
    """The MNIST-1D `Task`: scored on the test split, or on the held-out validation rows.

    With `teachers` (`--teachers`): the teacher-choice methods, trained on the
    3200 signals left once the 800 validation rows (which calibrated teachers
    are fitted on) are held out, scored on the test split.
    """
    train, test = load(config, validation)
    held_out = None
    if teachers:
        (train, held_out), (_, test) = load(config, validation=True), load(config)
        methods = harness.TEACHER_CHOICE_METHODS
    return harness.classification_task(
        name=f"{NAME}_teachers" if teachers else NAME,
        train=train,
        test=test,
        make_teacher=demo.make_teacher,
        make_student=demo.make_student,
        runs=lambda seed: runs(seed, config, len(train[0])),
        config=config,
        methods=methods,
        validation=held_out,
    )


def main(argv=None):
    def add_arguments(parser):
        parser.add_argument(
            "--teachers",
            action="store_true",
            help="KD and ECL from the teacher, the calibrated teacher and an ensemble of 3",
        )

    args, config = cli.parse_args(__doc__, CONFIGS, argv, add_arguments)
    if args.teachers:
        config = harness.teacher_choice(config)
    test_task = task(config, runs_for_seed, teachers=args.teachers)
    print(f"MNIST-1D: {len(test_task.data[0])} training signals", flush=True)
    per_seed, fields = cli.run_seeds(
        args,
        test_task.name,
        config,
        lambda seeds: harness.run(test_task, seeds),
        cli.command_line(NAME, argv),
    )
    return harness.finish_classification(
        name=test_task.name,
        title="MNIST-1D: CNN teacher -> MLP student"
        + (", which teacher (3200 training signals)" if args.teachers else ""),
        description=(
            "MNIST-1D (`mnist1d`, generated offline: 4000 training / 1000 test signals of "
            "length 40, 10 classes). Teacher: the demo's 1-D CNN (128 channels), trained "
            f"{config.teacher_epochs} epochs per seed. Students: the demo's MLP 256-256, batch "
            f"{config.batch_size}, Adam {config.learning_rate}. KD: T = {demo.TEMPERATURE}, "
            f"supervised weight {demo.SUPERVISED_WEIGHT} (the demo's), in "
            "`keras_ecl.Distiller(mode='kd')` and in `keras.distillation.Distiller`. "
            f"{harness.PEERS_DESCRIPTION} {harness.ECL_DESCRIPTION}"
            + (
                f" Here the 800 validation rows are held out of training (3200 signals "
                f"remain). {harness.TEACHER_CHOICE_DESCRIPTION}"
                if args.teachers
                else ""
            )
        ),
        fields=fields,
        config=config,
        per_seed=per_seed,
        output=args.output,
        figure_title="MNIST-1D: test accuracy against training time",
        notes=[harness.TEACHER_CHOICE_NOTE] if args.teachers else [],
    )


if __name__ == "__main__":
    main()
