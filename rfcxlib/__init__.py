"""rfcxlib: species detection for recordings in the RFCx layout.

Importing the package is cheap: TensorFlow is imported only by the modules that need it
(features, augment, pipeline, models, train, inference, noisy).

Tests: tests/test_packaging.py
"""
import os as _os

# Quiet TensorFlow's C++ logging (CUDA probing lines would otherwise land in executed notebooks)
# and keep Keras' cache out of the user's home unless they chose a place for it.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
_os.environ.setdefault("KERAS_HOME", _os.path.join(_os.path.expanduser("~"), ".keras"))

from rfcxlib.errors import DataError, ParameterError, RfcxError  # noqa: E402
from rfcxlib.layout import NUM_SPECIES  # noqa: E402

__version__ = "0.1.0"

__all__ = ["DataError", "ParameterError", "RfcxError", "NUM_SPECIES", "__version__"]
