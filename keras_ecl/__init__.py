"""keras_ecl: extracurricular learning for Keras 3.

Distil a teacher into a student by matching their output distributions on real
inputs and on extracurricular inputs drawn around each batch
(Pouransari et al., 2020, https://arxiv.org/abs/2007.00051).
"""

# First: it refuses a Keras backend other than TensorFlow before Keras is imported.
from keras_ecl import _keras_compat  # isort: skip

from keras_ecl import averaging, callbacks, distribute, export, heads, losses, samplers, teachers
from keras_ecl.calibration import calibrate
from keras_ecl.distiller import Distiller
from keras_ecl.export import export_student

__version__ = "0.1.0"

__all__ = [
    "Distiller",
    "averaging",
    "calibrate",
    "callbacks",
    "distribute",
    "export",
    "export_student",
    "heads",
    "losses",
    "samplers",
    "teachers",
    "__version__",
]

_keras_compat.warn_if_untested()
