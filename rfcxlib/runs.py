"""The run directory ``outputs/<run_id>/`` and atomic artifact writes.

Layout (DESIGN.md)::

    outputs/<run_id>/
      config.json             every parameter, resolved
      notebooks/NN_name.ipynb executed notebooks
      models/<name>/          checkpoints, history.csv, oof.npz, test_scores.npz, config.json
      figures/*.png
      metrics.json            the numbers that matter
      submission.csv

Every artifact is written to a temporary file in the same folder and renamed into place, so a
reader never sees half a file and an interrupted run leaves the previous version intact.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rfcxlib.errors import ParameterError


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; artifacts are ordinary readable files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json_atomic(path, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def save_npz_atomic(path, **arrays) -> Path:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def save_figure_atomic(fig, path, dpi: int = 110) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return write_bytes_atomic(path, buffer.getvalue())


def save_keras_atomic(model, path) -> Path:
    """Save a Keras model (``.keras``) or, for a ``.weights.h5`` path, its weights, through a
    temporary file in the same folder and a rename; the temporary name keeps the suffix Keras
    checks."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    try:
        (model.save_weights if path.name.endswith(".weights.h5") else model.save)(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return path


def project_root() -> Optional[Path]:
    """The checkout holding ``rfcxlib`` (None when the package is installed elsewhere)."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() and (here / "notebooks").exists() else None


def outputs_root() -> Path:
    """``$RFCX_OUTPUTS``, else ``outputs/`` of the checkout, else ``./outputs``."""
    if os.environ.get("RFCX_OUTPUTS"):
        return Path(os.environ["RFCX_OUTPUTS"])
    root = project_root()
    return (root / "outputs") if root else Path.cwd() / "outputs"


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class RunDir:
    """One run's folder. Notebooks save everything through it."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def figures(self) -> Path:
        return self.path / "figures"

    @property
    def models(self) -> Path:
        return self.path / "models"

    @property
    def notebooks(self) -> Path:
        return self.path / "notebooks"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    def model_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ParameterError(f"model name {name!r}: expected a plain folder name")
        path = self.models / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def model_dirs(self) -> list[Path]:
        """Folders of the models trained in this run, sorted by name."""
        if not self.models.exists():
            return []
        return sorted(p for p in self.models.iterdir() if p.is_dir() and not p.name.startswith("."))

    def save_figure(self, fig, name: str, dpi: int = 110) -> Path:
        """Save ``fig`` as ``figures/<name>.png`` (atomic) and return the path."""
        name = name if name.endswith(".png") else f"{name}.png"
        return save_figure_atomic(fig, self.figures / name, dpi=dpi)

    def write_json(self, name: str, obj: Any) -> Path:
        return write_json_atomic(self.path / name, obj)

    def write_config(self, config, extra: Optional[dict] = None, path=None) -> Path:
        """Write the resolved configuration (a ``RunConfig`` or a dict) into ``config.json``.

        The file is merged, not replaced: the resolved sections are the latest writer's, and each
        notebook's own parameters (``extra``, keyed by its ``"notebook"`` entry) are kept under
        ``"notebooks"``, beside anything else already there (the series runner's ``"series"``).
        """
        path = Path(path or self.path / "config.json")
        resolved = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        body = read_json(path, default={}) or {}
        body.update(resolved)
        if extra:
            name = str(extra.get("notebook", "notebook"))
            body.setdefault("notebooks", {})[name] = {"parameters": extra, "resolved": resolved}
        return write_json_atomic(path, body)

    def metrics(self) -> dict:
        return read_json(self.metrics_path, default={})

    def update_metrics(self, section: str, values: dict) -> dict:
        """Merge ``values`` under ``section`` of ``metrics.json`` (atomic) and return all metrics."""
        metrics = self.metrics()
        metrics.setdefault(section, {}).update(values)
        write_json_atomic(self.metrics_path, metrics)
        return metrics


def open_run(run_dir: str = "", run_id: str = "") -> RunDir:
    """Open (create) a run folder: ``run_dir`` if given, else ``outputs/<run_id or a timestamp>``."""
    if run_dir:
        return RunDir(run_dir)
    return RunDir(outputs_root() / (run_id or new_run_id()))
