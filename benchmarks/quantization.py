"""TFLite quantization of a shipped student: size, test accuracy and agreement with Keras.

Exports a saved student (by default the ECL student `make demo` writes,
`saved_models/mnist1d_ecl_student.keras`) as TFLite with each quantization of
`keras_ecl.export_student` and scores every file on MNIST-1D's test set next to
the Keras model: accuracy, the share of test inputs whose predicted class is
the Keras one, and the largest absolute difference of a class probability.
`"int8"` calibrates on training inputs.

Run `make demo` first, then `python -m benchmarks.quantization` from the
repository root (about a minute on 2 CPU cores); `--smoke` scores 100 test rows.
"""

if not __package__:
    raise SystemExit("Run it from the repository root: python -m benchmarks.quantization")

import argparse
import os
import tempfile

import keras
import numpy as np

import keras_ecl
from benchmarks import cli, report
from examples import mnist1d_distillation as demo

DEFAULT_STUDENT = os.path.join("saved_models", "mnist1d_ecl_student.keras")
QUANTIZATIONS = [None, "float16", "dynamic_range", "int8"]


def score(student, x_train, x_test, y_test, directory):
    """One row per quantization: KiB, accuracy, same class as Keras, max abs. error."""
    keras_probabilities = keras.ops.convert_to_numpy(
        keras.ops.softmax(student.predict(x_test, verbose=0), axis=-1)
    )
    keras_classes = np.argmax(keras_probabilities, -1)
    rows = []
    for quantization in QUANTIZATIONS:
        path = os.path.join(directory, f"student_{quantization or 'float32'}.tflite")
        keras_ecl.export_student(
            student,
            path,
            quantization=quantization,
            representative_data=x_train if quantization == "int8" else None,
        )
        probabilities = keras_ecl.export.tflite_predict(path, x_test)["probabilities"]
        classes = np.argmax(probabilities, -1)
        rows.append(
            {
                "quantization": quantization or "none (float32)",
                "kib": os.path.getsize(path) / 1024,
                "accuracy": float(np.mean(classes == y_test)),
                "same_class": float(np.mean(classes == keras_classes)),
                "max_abs_error": float(np.max(np.abs(probabilities - keras_probabilities))),
            }
        )
    return {"keras_accuracy": float(np.mean(keras_classes == y_test)), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default=DEFAULT_STUDENT, help="a saved .keras student")
    parser.add_argument("--smoke", action="store_true", help="100 test rows, in seconds")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if not os.path.exists(args.student):
        raise SystemExit(f"No student at {args.student}: run `make demo` first, or pass --student.")
    student = keras.saving.load_model(args.student)
    x_train, _, x_test, y_test = demo.load_mnist1d()
    if args.smoke:
        x_test, y_test = x_test[:100], y_test[:100]
    with tempfile.TemporaryDirectory() as directory:
        result = score(student, x_train, x_test, y_test, directory)
    print(f"Keras test accuracy {result['keras_accuracy']:.3f} ({len(x_test)} test inputs)")
    print(report.quantization_table(result))
    if args.output:
        payload = {
            "command": cli.command_line("quantization", argv),
            "student": args.student,
            **result,
        }
        report.write_json(args.output, "quantization", payload)
    return result


if __name__ == "__main__":
    main()
