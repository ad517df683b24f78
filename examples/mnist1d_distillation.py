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
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_ecl  # noqa: E402

"""
## Configuration

Small named dicts: the full run and a smoke variant that runs in seconds.
"""

CONFIGS = {
    "full": {"teacher_epochs": 60, "student_epochs": 200, "batch_size": 100, "train_rows": None},
    # A quarter of the training signals and one epoch each: the whole path, scored.
    "smoke": {"teacher_epochs": 1, "student_epochs": 1, "batch_size": 100, "train_rows": 1000},
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

The teacher is a 1-D CNN with 128 channels (about 150k parameters and 5M
multiply-adds per signal); the student a two-layer MLP of width 256 (about 80k
parameters and 80k multiply-adds: some 60 times cheaper to run) without the
CNN's translation bias. Both output logits.
"""


def make_teacher():
    inputs = keras.Input((40,))
    hidden = keras.layers.Reshape((40, 1))(inputs)
    for _ in range(3):
        hidden = keras.layers.Conv1D(128, 3, padding="same", activation="relu")(hidden)
    hidden = keras.layers.Conv1D(128, 3, strides=2, padding="same", activation="relu")(hidden)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs, name="cnn_teacher")


def make_student():
    return keras.Sequential(
        [
            keras.Input((40,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(256, activation="relu"),
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

    shown = ("loss", "accuracy", "val_accuracy")

    def on_train_begin(self, logs=None):
        print(self.title)
        # Show each epoch's values as they are (not averaged over epochs); off a
        # terminal, print only the final line.
        self.bar = keras.utils.Progbar(
            self.epochs,
            verbose=1 if sys.stdout.isatty() else 2,
            stateful_metrics=self.shown,
            unit_name="epoch",
        )

    def on_epoch_end(self, epoch, logs=None):
        values = [(k, v) for k, v in (logs or {}).items() if k in self.shown]
        self.bar.update(epoch + 1, values)


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

The same `Distiller` class with one argument changed. KD is Hinton's (T = 4,
supervised weight 0.1). ECL is `keras_ecl.Distiller`'s default recipe, chosen on
validation splits: one extracurricular input per real input at each step, from a
mixture of mixup and CutMix (a segment of another signal), kept as the best of
four draws by the student's uncertainty, the teacher matched on those synthetic
inputs, the labels at weight 0.5 on the real ones, and four student updates per
teacher pass: the CNN teacher costs some 60 times more
than the MLP student, so its outputs serve several updates.
"""


def student_runs():
    head = keras_ecl.heads.Categorical(temperature=TEMPERATURE)
    return {
        "ERM": dict(mode="erm"),
        "KD": dict(mode="kd", head=head, supervised_weight=SUPERVISED_WEIGHT),
        "ECL": dict(mode="ecl", sampler=keras_ecl.samplers.default_sampler(seed=1)),
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


def plot_results(results, teacher_accuracy, path):
    """Test accuracy bars and validation-accuracy curves, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["teacher", *results]
    accuracies = [teacher_accuracy] + [r[2] for r in results.values()]
    figure, (bars, curves) = plt.subplots(1, 2, figsize=(11, 4))
    bars.bar(names, accuracies, color=["0.5", "C0", "C1", "C2"])
    for i, accuracy in enumerate(accuracies):
        bars.text(i, accuracy + 0.01, f"{accuracy:.3f}", ha="center")
    bars.set_ylim(0, 1.05)
    bars.set_ylabel("test accuracy")
    bars.set_title("MNIST-1D: CNN teacher -> MLP student")
    for name, (_, history, _, _) in results.items():
        curves.plot(history["val_accuracy"], label=name)
    curves.axhline(teacher_accuracy, color="0.5", linestyle="--", label="teacher")
    curves.set_xlabel("epoch")
    curves.set_ylabel("test accuracy")
    curves.set_title("Learning curves")
    curves.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


"""
## Ship the student

Only the student is exported, with the head applied: the SavedModel and the
TFLite file return class probabilities. The TFLite student is scored on the
test set next to the Keras one.
"""


def ship_student(distiller, data, output_dir):
    _, _, x_test, y_test = data
    keras_path = os.path.join(output_dir, "mnist1d_ecl_student.keras")
    distiller.student.save(keras_path)
    saved_model_path = keras_ecl.export_student(
        distiller, os.path.join(output_dir, "mnist1d_ecl_student")
    )
    tflite_path = keras_ecl.export_student(
        distiller, os.path.join(output_dir, "mnist1d_ecl_student.tflite"), format="tflite"
    )
    keras_accuracy = float(
        np.mean(np.argmax(distiller.student.predict(x_test, verbose=0), -1) == y_test)
    )
    probabilities = keras_ecl.export.tflite_predict(tflite_path, x_test)["probabilities"]
    tflite_accuracy = float(np.mean(np.argmax(probabilities, -1) == y_test))
    size_kib = os.path.getsize(tflite_path) / 1024
    print("\nECL student exported:")
    print(f"  {'Keras':<11}{keras_path:<46} test accuracy {keras_accuracy:.3f}")
    print(f"  {'SavedModel':<11}{saved_model_path + '/':<46} serving_default -> probabilities")
    print(
        f"  {'TFLite':<11}{tflite_path:<46} test accuracy {tflite_accuracy:.3f} "
        f"({size_kib:.0f} KiB)"
    )
    return keras_accuracy, tflite_accuracy


def main():
    args = parse_args()
    config = CONFIGS["smoke" if args.smoke else "full"]
    os.makedirs(args.output_dir, exist_ok=True)
    x, y, x_test, y_test = load_mnist1d()
    x, y = x[: config["train_rows"]], y[: config["train_rows"]]
    data = x, y, x_test, y_test
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
    print(
        f"Teacher: {teacher.count_params():,} parameters; student: "
        f"{make_student().count_params():,} parameters"
    )
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

    plot_path = os.path.join(args.output_dir, "mnist1d_demo.png")
    plot_results(results, teacher_accuracy, plot_path)
    print(f"\nSaved the plot to {plot_path}")
    # What ECL's sampler drew around four training signals, and the teacher's verdict on each.
    gallery = keras_ecl.callbacks.SampleGallery(
        x[:4], args.output_dir, anchors=4, samples=2, kind="signals"
    )
    gallery.set_model(results["ECL"][0])
    print(f"Saved the sampler's gallery to {gallery.write(config['student_epochs'])}")

    ship_student(results["ECL"][0], data, args.output_dir)


if __name__ == "__main__":
    main()
