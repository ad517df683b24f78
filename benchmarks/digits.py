"""Digits benchmark: small CNN teacher -> tiny MLP student on 8x8 scikit-learn digits.

Per seed, one teacher, then KD (whose time for 200 epochs is the budget unit), ERM, Keras'
own Distiller, the peers FunMatch, DKD and logit-standardised KD, and ECL with the library's
default recipe, each trained for 4 units of time and scored on the test split every 10
epochs. `--train-rows 250` gives the data-scarce variant.

Run `python -m benchmarks.digits` from the repository root, or with `--smoke` for a run of
seconds.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.digits")

import dataclasses
import math

import keras

from benchmarks import cli, harness

NAME = "digits"
SPLIT_SEED = 2024  # fixed split, independent of the training seeds
SPLIT = {"train": 1000, "val": 297, "test": 500}
TEMPERATURE = 4.0
SUPERVISED_WEIGHT = 0.1

CONFIGS = {
    "full": harness.TrainConfig(
        teacher_epochs=60, student_epochs=200, batch_size=100, learning_rate=1e-3
    ),
}
CONFIGS["smoke"] = CONFIGS["full"].smoke()


def load_digits(train_rows=SPLIT["train"]):
    """`(x_train, y_train, x_val, y_val, x_test, y_test)`: (n, 8, 8, 1) images in [0, 1].

    `train_rows` below the full training split keeps a stratified subset of
    it (same seed); validation and test splits stay the same.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    x_train, x_rest, y_train, y_rest = train_test_split(
        x, y, train_size=SPLIT["train"], stratify=y, random_state=SPLIT_SEED
    )
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, test_size=SPLIT["test"], stratify=y_rest, random_state=SPLIT_SEED
    )
    if train_rows < SPLIT["train"]:
        x_train, _, y_train, _ = train_test_split(
            x_train, y_train, train_size=train_rows, stratify=y_train, random_state=SPLIT_SEED
        )
    return x_train, y_train, x_val, y_val, x_test, y_test


def make_teacher():
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    hidden = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.MaxPooling2D()(hidden)
    hidden = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.Dense(128, activation="relu")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, keras.layers.Dense(10)(hidden), name="cnn_teacher")


def make_student():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp_student",
    )


def runs_for_seed(seed, config, train_rows):
    """KD, ERM, the peers and ECL's default recipe, seeded from `seed`."""
    steps_per_epoch = math.ceil(train_rows / config.batch_size)
    return {
        **harness.kd_and_erm(TEMPERATURE, SUPERVISED_WEIGHT),
        **harness.peer_options(seed=1000 + seed, steps_per_epoch=steps_per_epoch),
        "ECL": harness.ecl_options(seed=1000 + seed),
    }


def task(config, runs, train_rows=SPLIT["train"], validation=False, methods=None):
    """The digits `Task`, scored on the test split or on the validation split.

    Scored on the test split, teachers are calibrated on the validation split.
    """
    x, y, x_val, y_val, x_test, y_test = load_digits(train_rows)
    return harness.classification_task(
        name=NAME if train_rows == SPLIT["train"] else f"{NAME}_{train_rows}",
        train=(x, y),
        test=(x_val, y_val) if validation else (x_test, y_test),
        make_teacher=make_teacher,
        make_student=make_student,
        runs=lambda seed: runs(seed, config, len(x)),
        config=config,
        methods=methods,
        validation=None if validation else (x_val, y_val),
    )


def main(argv=None):
    def add_arguments(parser):
        parser.add_argument(
            "--train-rows",
            type=int,
            default=SPLIT["train"],
            help=f"training images, a stratified subset of the {SPLIT['train']} (data-scarce runs)",
        )
        parser.add_argument(
            "--teachers",
            action="store_true",
            help="KD and ECL from the teacher, the calibrated teacher and an ensemble of 3",
        )

    args, config = cli.parse_args(__doc__, CONFIGS, argv, add_arguments)
    if not 10 <= args.train_rows <= SPLIT["train"]:
        raise ValueError(
            f"--train-rows must be between 10 and {SPLIT['train']}. Received: {args.train_rows}"
        )
    if args.teachers:
        config = harness.teacher_choice(config)
        methods = harness.TEACHER_CHOICE_METHODS
        test_task = task(config, runs_for_seed, args.train_rows, methods=methods)
        test_task = dataclasses.replace(test_task, name=f"{test_task.name}_teachers")
    else:
        test_task = task(config, runs_for_seed, args.train_rows)
    rows = len(test_task.data[0])
    print(f"Digits: {rows} training images", flush=True)
    per_seed, fields = cli.run_seeds(
        args,
        test_task.name,
        config,
        lambda seeds: harness.run(test_task, seeds),
        cli.command_line(NAME, argv),
    )
    title = f"Digits (scikit-learn 8x8, {rows} training images): CNN teacher -> MLP-32"
    return harness.finish_classification(
        name=test_task.name,
        title=f"{title}, which teacher" if args.teachers else title,
        description=(
            "`sklearn.datasets.load_digits` scaled to [0, 1], shape (8, 8, 1); fixed "
            f"stratified split (seed {SPLIT_SEED}): {rows} train / {SPLIT['val']} "
            f"validation / {SPLIT['test']} test. Teacher: CNN 32-64-pool-64-dense 128, "
            f"{config.teacher_epochs} epochs. Student: Flatten-Dense 32-Dense 10, batch "
            f"{config.batch_size}, Adam {config.learning_rate}. KD: T = {TEMPERATURE}, "
            f"supervised weight {SUPERVISED_WEIGHT}, also in `keras.distillation.Distiller`. "
            f"{harness.PEERS_DESCRIPTION} {harness.ECL_DESCRIPTION}"
            + (f" {harness.TEACHER_CHOICE_DESCRIPTION}" if args.teachers else "")
        ),
        fields=fields,
        config=config,
        per_seed=per_seed,
        output=args.output,
        figure_title=f"Digits, {rows} images: test accuracy against time",
        notes=[
            f"The test split has {SPLIT['test']} images: one image is 0.2 accuracy points.",
            *([harness.TEACHER_CHOICE_NOTE] if args.teachers else []),
        ],
    )


if __name__ == "__main__":
    main()
