"""Executing the steps of a run (:mod:`rfcxlib.runner.series` plans them): each notebook through
papermill into its run folder, ``series.json`` written atomically when a step starts and ends, the
files each step wrote recorded as its products, and a failure described in one line with what to
do about it."""
from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from rfcxlib.errors import RunFailed
from rfcxlib.runs import read_json, write_json_atomic

if TYPE_CHECKING:
    from rfcxlib.runner.series import Step

STATE_FILE = "series.json"
_SHARED = {STATE_FILE, "run.lock", "metrics.json", "config.json", "summary.html"}
PARTIAL = ".partial.ipynb"  # an executed notebook is written as .NAME.partial.ipynb, then renamed
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _say(message: str) -> None:
    print(message, flush=True)


def kernel_name() -> str:
    """The kernel ``make`` registers (``rfcx``), else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return "rfcx" if "rfcx" in specs else "python3"


class SeriesFailed(Exception):
    """A notebook of the series raised; carries the step and the error's description."""

    def __init__(self, step: Step, message: str, cause: BaseException = None, kept: str = ""):
        super().__init__(message)
        self.step, self.cause, self.kept = step, cause, kept

    @property
    def interrupted(self) -> bool:
        return isinstance(self.cause, KeyboardInterrupt)

    def line(self, run_path: Path) -> str:
        """The failure in one line: the step, the cell, the error, what to do."""
        first = str(self).splitlines()[0]
        return (f"{self.step.key} ({self.step.notebook.name}): {first}; "
                f"{_advice(self.cause, str(self), run_path)}")


def _root_oserror(exc: BaseException):
    """The first ``OSError`` in an exception's chain (papermill wraps some), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


_DISK = ("No space left", "Errno 28", "File too large", "Errno 27", "Disk quota")
_DENIED = ("Permission denied", "Errno 13", "Read-only file system", "Errno 30")


def _advice(exc: BaseException, text: str, run_path: Path) -> str:
    """What to do about a failure, from its kind."""
    resume = "then run the same command to resume"
    if isinstance(exc, KeyboardInterrupt):
        return "run the same command to resume"
    if any(k in text for k in _DISK):
        return f"the disk holding {run_path} is full (or a file size limit is set): free space, {resume}"
    if any(k in text for k in _DENIED):
        return f"a file or folder cannot be written: fix its permissions (or set RFCX_OUTPUTS), {resume}"
    if type(exc).__name__ == "DeadKernelError" or "Kernel died" in text:
        return f"the kernel died (out of memory, or killed): free memory or lower batch_size, {resume}"
    if "DataError" in text or "UnicodeDecodeError" in text:
        return f"fix the data (rfcx validate DATA_DIR lists every problem), {resume}"
    return f"see the executed notebook, fix the cause, {resume}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C) while executing"
    oserr = None if hasattr(exc, "ename") else _root_oserror(exc)
    if oserr is not None:
        name = f" {oserr.filename}" if oserr.filename else ""
        return f"writing{name or ' the executed notebook'} failed: {type(oserr).__name__}: {oserr}"
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    cell = getattr(exc, "exec_count", None)
    where = f"cell [{cell}]" if cell is not None else "the execution"
    text = f"{where} raised {ename}: {evalue}"
    tb = getattr(exc, "traceback", None)
    if tb:
        lines = [ln for block in tb for ln in _ANSI.sub("", block).splitlines() if ln.strip()]
        text += "\n" + "\n".join("    " + ln for ln in lines[-8:])
    return text


class Series:
    """The resolved steps of one run and its state file ``series.json``."""

    def __init__(self, run, steps: list[Step], kernel: str, meta: dict):
        self.run, self.steps, self.kernel, self.meta = run, steps, kernel, meta
        self.state_path = run.path / STATE_FILE
        try:
            self.state = read_json(self.state_path, default={}) or {}
        except (OSError, ValueError) as exc:
            raise RunFailed(f"{self.state_path}: unreadable ({exc}); move it away to run "
                            "everything again") from None
        self.state.setdefault("steps", {})

    def _save(self) -> None:
        self.state.update({k: v for k, v in self.meta.items() if k != "steps"})
        self.state["order"] = [s.key for s in self.steps]
        write_json_atomic(self.state_path, self.state)

    def _mark(self, step: Step, **values) -> None:
        entry = self.state["steps"].setdefault(step.key, {})
        entry.update(values, notebook=step.notebook.name, output=str(step.output),
                     parameters=step.parameters)
        self._save()

    def is_done(self, step: Step, digest: str) -> bool:
        return (self._completed_same(step, digest) and step.output.exists()
                and not self.missing_products(step))

    def missing_products(self, step: Step) -> list[str]:
        """The files the step's last execution wrote (``products`` in ``series.json``) that are
        gone now, e.g. a model folder deleted to train it again."""
        entry = self.state["steps"].get(step.key, {})
        return [name for name in entry.get("products", []) if not (self.run.path / name).exists()]

    def _written_since(self, started: float) -> list[str]:
        """The files under the run folder created or changed since ``started``, relative to it;
        the run's shared bookkeeping and the executed notebooks are not a step's products."""
        root, found = self.run.path, []
        for folder, dirs, files in os.walk(root):
            here = Path(folder)
            if here == root:
                dirs[:] = [d for d in dirs if d != "notebooks"]
                files = [f for f in files if f not in _SHARED]
            for name in files:
                path = here / name
                try:
                    if path.stat().st_mtime >= started and not name.startswith("."):
                        found.append(path.relative_to(root).as_posix())
                except OSError:  # removed meanwhile
                    continue
        return sorted(found)

    def _completed_same(self, step: Step, digest: str) -> bool:
        entry = self.state["steps"].get(step.key, {})
        return entry.get("status") == "completed" and entry.get("hash") == digest

    progress_bar = True

    def execute(self, log=_say) -> list[str]:
        """Run the steps, skipping the completed prefix; returns the keys executed. Each
        notebook is executed into ``.NAME.partial.ipynb`` and renamed when it ends, so an
        executed notebook is never left half-written."""
        import papermill

        # The names were checked against each parameters cell already; papermill's own parser
        # would warn about comment lines it cannot read and call those names unknown.
        logging.getLogger("papermill").setLevel(logging.ERROR)
        # nbformat fills in the ids of cells that have none; the warning is not the user's concern
        warnings.filterwarnings("ignore", message="Cell is missing an id field")
        # A step executed again invalidates the later notebooks, which read what it wrote; the
        # other entries of the same swept notebook are its siblings, not its readers.
        executed, first_changed = [], None
        self.run.notebooks.mkdir(parents=True, exist_ok=True)
        for stale in self.run.notebooks.glob(f".*{PARTIAL}"):  # of a run that was killed
            stale.unlink(missing_ok=True)
        total = len(self.steps)
        for i, step in enumerate(self.steps, 1):
            digest = step.digest()
            forced = first_changed is not None and step.notebook.name > first_changed
            if not forced and self.is_done(step, digest):
                log(f"[{i}/{total}] {step.key}: done before with the same parameters, skipped")
                continue
            first_changed = min(first_changed or step.notebook.name, step.notebook.name)
            gone = self.missing_products(step) if self._completed_same(step, digest) else []
            if gone:
                shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
                log(f"[{i}/{total}] {step.key}: done before, but {shown} no longer exist")
            log(f"[{i}/{total}] {step.key}: running -> {step.output}")
            started = time.time()
            self._mark(step, status="running", hash=digest, started=time.strftime("%FT%T"))
            partial = step.output.with_name(f".{step.output.stem}{PARTIAL}")
            echo = ProgressEcho(log)
            try:
                papermill.execute_notebook(
                    str(step.notebook), str(partial), parameters=step.parameters,
                    kernel_name=self.kernel, progress_bar=self.progress_bar,
                    cwd=str(step.notebook.parent), stdout_file=echo, stderr_file=echo,
                    extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no transport warning
                os.replace(partial, step.output)
            except BaseException as exc:  # the cell's error, a dead kernel, a full disk, Ctrl-C
                kept = _keep_partial(partial, step.output)
                message = _describe(exc)
                try:
                    self._mark(step, status="failed", elapsed_s=round(time.time() - started, 1),
                               error=message)
                except OSError as again:
                    message += f" (and {self.state_path} could not be updated: {again.strerror})"
                raise SeriesFailed(step, message, exc, kept) from exc
            elapsed = time.time() - started
            self._mark(step, status="completed", elapsed_s=round(elapsed, 1),
                       finished=time.strftime("%FT%T"), products=self._written_since(started))
            executed.append(step.key)
            log(f"[{i}/{total}] {step.key}: completed in {_fmt(elapsed)}")
        return executed


def _keep_partial(partial: Path, output: Path) -> str:
    """After a failure: the partly executed notebook renamed into place when it is a whole
    notebook, else removed (a write cut short by a full disk). Returns the path kept, or ""."""
    if not partial.exists():
        return ""
    try:
        json.loads(partial.read_text())
        os.replace(partial, output)
        return str(output)
    except (OSError, ValueError):
        partial.unlink(missing_ok=True)
        return ""


class ProgressEcho:
    """A file-like sink for the kernel's stream output (papermill's ``stdout_file``): the
    lines that tell training progress (epochs, folds, LWLRAP) go to the console as they come.
    A progress bar redrawn in place (``fold 0:  40%|...| 6/15 [..., loss=0.05, val_lwlrap=0.81]``)
    shows once per step of its count, i.e. one line per epoch."""

    PATTERN = re.compile(r"epoch|fold|lwlrap", re.I)
    COUNT = re.compile(r"\b(\d+)/(\d+)\b")

    def __init__(self, log=_say):
        self.log, self.buffer, self.counts = log, "", {}

    def write(self, text: str) -> int:
        self.buffer += text
        while True:
            match = re.search(r"[\r\n]", self.buffer)
            if match is None:
                break
            line, self.buffer = self.buffer[:match.start()], self.buffer[match.end():]
            self._line(_ANSI.sub("", line).strip())
        return len(text)

    def _line(self, line: str) -> None:
        if not line or not self.PATTERN.search(line):
            return
        count = self.COUNT.search(line)
        if count:  # a bar: once per value of its count, never at 0
            bar = line[:count.start()].split(":")[0]
            if count.group(1) == "0" or self.counts.get(bar) == count.group(0):
                return
            self.counts[bar] = count.group(0)
        self.log(f"      {line}")

    def flush(self) -> None:
        pass


def _fmt(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
