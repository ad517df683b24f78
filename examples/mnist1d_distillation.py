"""
Title: Extracurricular learning on MNIST-1D: CNN teacher, MLP student
Description: ERM, knowledge distillation and extracurricular learning side by
side on the same student, offline on a CPU in minutes.

MNIST-1D (Greydanus, 2020) is generated offline: 4000 training and 1000 test
signals of length 40 in 10 classes. A small CNN is a strong teacher there (its
translation bias fits the data); an MLP student lacks that bias, so what the
teacher knows *between* the training points is exactly what extracurricular
samples carry.

Run `python examples/mnist1d_distillation.py` (the `make demo` job), or with `--smoke` for
a run of a few seconds.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import keras_ecl  # noqa: E402

"""
## Configuration

Small named dicts: the full run and a smoke variant that runs in seconds.
"""

CONFIGS = {
    "full": {"teacher_epochs": 60, "student_epochs": 200, "batch_size": 100},
    "smoke": {"teacher_epochs": 2, "student_epochs": 2, "batch_size": 100},
}
TEMPERATURE = 4.0
SUPERVISED_WEIGHT = 0.1


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--smoke", action="store_true", help="tiny run for CI")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="saved_models")
    parser.add_argument("--retrain-teacher", action="store_true", help="ignore the cached teacher")
    return parser.parse_args()


"""
## Data

`mnist1d.data.make_dataset` builds the data set from its templates locally; no
download happens.
"""


def load_mnist1d(seed=0):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42  # the data set's canonical seed, independent of training seeds
    data = make_dataset(args)
    return (
        data["x"].astype("float32"),
        data["y"].astype("int32"),
        data["x_test"].astype("float32"),
        data["y_test"].astype("int32"),
    )


"""
## Models

The teacher is a 1-D CNN; the student a two-layer MLP with about a quarter of
the teacher's compute and no translation bias. Both output logits.
"""


def make_teacher():
    inputs = keras.Input((40,))
    hidden = keras.layers.Reshape((40, 1))(inputs)
    for _ in range(3):
        hidden = keras.layers.Conv1D(32, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.Conv1D(32, 3, strides=2, padding="same", activation="relu")(hidden)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs, name="cnn_teacher")


def make_student():
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ],
        name="mlp_student",
    )


class EpochProgbar(keras.callbacks.Callback):
    """One progress bar over all epochs (a bar per epoch is too much output)."""

    def __init__(self, epochs, title):
        super().__init__()
        self.epochs = epochs
        self.title = title

    def on_train_begin(self, logs=None):
        print(self.title)
        self.bar = keras.utils.Progbar(self.epochs, unit_name="epoch")

    def on_epoch_end(self, epoch, logs=None):
        shown = ("loss", "accuracy", "val_accuracy")
        self.bar.update(epoch + 1, [(k, v) for k, v in (logs or {}).items() if k in shown])

    def on_train_end(self, logs=None):
        print()


def train_teacher(x, y, x_val, y_val, config, path, retrain):
    if os.path.exists(path) and not retrain:
        print(f"Loading the cached teacher from {path}")
        return keras.saving.load_model(path)
    teacher = make_teacher()
    teacher.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras_ecl.losses.NegativeLogLikelihood(),
        metrics=["accuracy"],
    )
    epochs = config["teacher_epochs"]
    teacher.fit(
        x,
        y,
        batch_size=config["batch_size"],
        epochs=epochs,
        validation_data=(x_val, y_val),
        verbose=0,
        callbacks=[EpochProgbar(epochs, "Teacher (CNN)")],
    )
    teacher.save(path)
    return teacher


"""
## ERM, KD and ECL

The same `Distiller` class with one argument changed. ECL draws two
extracurricular inputs per real input at each step, from a mixture of mixup
and a Gaussian kernel density estimate around the batch.
"""


def student_runs():
    head = keras_ecl.heads.Categorical(temperature=TEMPERATURE)
    samplers = keras_ecl.samplers
    return {
        "ERM": dict(mode="erm"),
        "KD": dict(mode="kd", head=head, supervised_weight=SUPERVISED_WEIGHT),
        "ECL": dict(
            mode="ecl",
            head=head,
            supervised_weight=SUPERVISED_WEIGHT,
            sampler=samplers.OneOf(
                [samplers.MixUp(alpha=1.0, seed=1), samplers.GaussianNoise(scale=0.5, seed=2)]
            ),
            samples_per_example=4,
        ),
    }


def train_student(name, options, teacher, data, config, seed):
    x, y, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    distiller = keras_ecl.Distiller(make_student(), teacher, **options)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    epochs = config["student_epochs"]
    start = time.time()
    history = distiller.fit(
        x,
        y,
        batch_size=config["batch_size"],
        epochs=epochs,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=[EpochProgbar(epochs, f"Student ({name})")],
    )
    seconds = time.time() - start
    accuracy = distiller.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    return distiller, history.history, accuracy, seconds


def gap_closed(accuracy, kd_accuracy, teacher_accuracy):
    """Share of the teacher-KD accuracy gap that `accuracy` closes."""
    return (accuracy - kd_accuracy) / (teacher_accuracy - kd_accuracy)


def main():
    args = parse_args()
    config = CONFIGS["smoke" if args.smoke else "full"]
    os.makedirs(args.output_dir, exist_ok=True)
    data = load_mnist1d()
    x, y, x_test, y_test = data
    print(f"MNIST-1D: {len(x)} training and {len(x_test)} test signals of length {x.shape[1]}")

    teacher_name = "mnist1d_teacher_smoke.keras" if args.smoke else "mnist1d_teacher.keras"
    teacher = train_teacher(
        x,
        y,
        x_test,
        y_test,
        config,
        os.path.join(args.output_dir, teacher_name),
        args.retrain_teacher,
    )
    teacher.compile(metrics=["accuracy"])
    teacher_accuracy = teacher.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]

    results = {}
    for name, options in student_runs().items():
        results[name] = train_student(name, options, teacher, data, config, args.seed)

    kd_accuracy = results["KD"][2]
    print(f"\nTest accuracy (seed {args.seed}, {config['student_epochs']} student epochs)")
    print(f"{'model':<10}{'accuracy':>10}{'gap closed vs KD':>18}{'train s':>10}")
    print(f"{'teacher':<10}{teacher_accuracy:>10.3f}{'':>18}{'':>10}")
    for name, (_, _, accuracy, seconds) in results.items():
        gap = ""
        if name == "ECL" and teacher_accuracy > kd_accuracy:
            gap = f"{gap_closed(accuracy, kd_accuracy, teacher_accuracy):.1%}"
        print(f"{name:<10}{accuracy:>10.3f}{gap:>18}{seconds:>10.1f}")

    student_path = os.path.join(args.output_dir, "mnist1d_ecl_student.keras")
    results["ECL"][0].student.save(student_path)
    print(f"\nSaved the ECL student to {student_path}")


if __name__ == "__main__":
    main()
