"""The run folder ``outputs/<run_id>/`` and the lock that gives it to one process.

Layout::

    outputs/<run_id>/
      config.json             every parameter, resolved (each notebook's, the series' plan)
      series.json             the state of ``rfcx run`` (:mod:`rfcxlib.runner.series`)
      run.lock                the process running it (:class:`RunLock`)
      notebooks/NN_name.ipynb executed notebooks
      models/<name>/          config.json, history.csv, oof.npz, test_scores.npz, metrics.json,
                              fold<k>/ checkpoints, model.keras
      figures/*.png
      metrics.json            the numbers that matter
      summary.html
      submission.csv

Every file is written atomically (:mod:`rfcxlib.atomic`); the file names are
:mod:`rfcxlib.layout`'s.

Tests: tests/test_run_dir.py
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from rfcxlib.atomic import (read_json, save_figure_atomic, update_json_atomic, write_bytes_atomic,
                            write_json_atomic)
from rfcxlib.errors import ParameterError, RunFailed
from rfcxlib.layout import CONFIG_FILE, LOCK_FILE, METRICS_FILE
from rfcxlib.paths import outputs_root


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class RunDir:
    """One run's folder. Notebooks save everything through it."""

    def __init__(self, path, create: bool = True):
        self.path = Path(path)
        if create:
            make_run_folder(self.path)

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
        return self.path / METRICS_FILE

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
        path = Path(path or self.path / CONFIG_FILE)
        resolved = config.to_dict() if hasattr(config, "to_dict") else dict(config)

        def merge(body: dict) -> dict:
            body.update(resolved)
            if extra:
                name = str(extra.get("notebook", "notebook"))
                body.setdefault("notebooks", {})[name] = {"parameters": extra, "resolved": resolved}
            return body

        update_json_atomic(path, merge)
        return path

    def metrics(self) -> dict:
        return read_json(self.metrics_path, default={})

    def update_metrics(self, section: str, values: dict) -> dict:
        """Merge ``values`` under ``section`` of ``metrics.json`` (atomic) and return all metrics."""
        def merge(metrics: dict) -> dict:
            metrics.setdefault(section, {}).update(values)
            return metrics

        return update_json_atomic(self.metrics_path, merge)


def open_run(run_dir: str = "", run_id: str = "", create: bool = True) -> RunDir:
    """Open (create) a run folder: ``run_dir`` if given, else ``outputs/<run_id or a timestamp>``;
    ``create=False`` only names it (see :func:`check_writable`)."""
    if run_dir:
        return RunDir(run_dir, create=create)
    return RunDir(outputs_root() / (run_id or new_run_id()), create=create)


def _outputs_hint(path: Path) -> str:
    if os.environ.get("RFCX_OUTPUTS"):
        return f"RFCX_OUTPUTS={os.environ['RFCX_OUTPUTS']} is used; point it at a writable folder"
    return "set RFCX_OUTPUTS to a writable folder (or --run-id for another run)"


def check_writable(path) -> Path:
    """Raise :class:`RunFailed` (naming the folder and ``RFCX_OUTPUTS``) unless the run folder
    ``path`` exists and is writable, or could be created; creates nothing."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a folder" if probe.exists() and not probe.is_dir() else "is not writable"
        raise RunFailed(f"run folder {path}: {probe} {what}; {_outputs_hint(path)}")
    return path


def make_run_folder(path) -> Path:
    """``mkdir -p`` with an :class:`RunFailed` that names the folder and ``RFCX_OUTPUTS``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunFailed(f"run folder {path}: cannot create it ({exc.strerror}); "
                        f"{_outputs_hint(path)}") from None
    return path


# ----------------------------------------------------------------------------- the run lock
def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs rfcx (a PID reused by another program does not count)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        return b"rfcx" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc (macOS): trust the PID


class RunLock:
    """``<run>/run.lock``: the run folder belongs to one process (its PID and host are in the
    file). :meth:`acquire` raises :class:`RunFailed` naming the holder when a live process holds
    it, and takes over the lock of a process that no longer exists on this host."""

    def __init__(self, run_path):
        self.path = Path(run_path) / LOCK_FILE
        self.held = False

    def holder(self) -> Optional[dict]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self, log=print) -> "RunLock":
        make_run_folder(self.path.parent)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        body = (json.dumps(me) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            self._take_over(me, body, log)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(body)
        self.held = True
        return self

    def _take_over(self, me: dict, body: bytes, log) -> None:
        held = self.holder() or {}
        pid, host = held.get("pid"), held.get("host")
        if isinstance(pid, int) and host == me["host"] and _alive(pid):
            raise RunFailed(f"run folder {self.path.parent} is in use by process {pid} on {host} "
                            f"(since {held.get('started', '?')}); wait for it to finish, stop "
                            f"it (kill {pid}), or use another --run-id")
        if isinstance(pid, int) and host and host != me["host"]:
            raise RunFailed(f"run folder {self.path.parent} is locked by process {pid} on "
                            f"{host}; if that run is over, delete {self.path} and start again")
        write_bytes_atomic(self.path, body)
        time.sleep(0.05)  # two processes taking over at once: the last rename wins
        if (self.holder() or {}).get("pid") != me["pid"]:
            now = self.holder() or {}
            raise RunFailed(f"run folder {self.path.parent} is in use by process "
                            f"{now.get('pid')} on {now.get('host')}; use another --run-id")
        log(f"run folder {self.path.parent}: took over the lock of process {pid} on "
            f"{host or '?'}, which no longer runs")

    def release(self) -> None:
        if self.held and (self.holder() or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
