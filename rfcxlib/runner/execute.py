"""Executing one step of a run (:mod:`rfcxlib.runner.plan`): its notebook through papermill into
``.NAME.partial.ipynb``, renamed into place when it ends, the training progress echoed to the
console as it comes; a failure raised as :class:`~rfcxlib.runner.failures.SeriesFailed` with the
partly executed notebook kept when it is whole. :class:`rfcxlib.runner.series.Series` runs the
steps in order and keeps ``series.json``.

Tests: tests/test_failures.py
"""
from __future__ import annotations

import json
import logging
import os
import re
import warnings
from pathlib import Path

from rfcxlib.runner.console import say, strip_ansi
from rfcxlib.runner.failures import SeriesFailed, describe
from rfcxlib.runner.plan import Step

PARTIAL = ".partial.ipynb"  # an executed notebook is written as .NAME.partial.ipynb, then renamed


def kernel_name() -> str:
    """The kernel ``make`` registers (``rfcx``), else ``python3``."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    return "rfcx" if "rfcx" in specs else "python3"


def clear_partials(folder: Path) -> None:
    """Remove the partly executed notebooks a killed run left in ``folder``."""
    for stale in Path(folder).glob(f".*{PARTIAL}"):
        stale.unlink(missing_ok=True)


def execute_step(step: Step, *, kernel: str, log=say, progress_bar: bool = True) -> None:
    """Execute ``step``'s notebook into ``step.output``, never leaving it half-written.

    Raises
    ------
    SeriesFailed
        Whatever stopped the notebook (a cell's error, a dead kernel, a full disk, Ctrl-C), described
        in one line (:func:`rfcxlib.runner.failures.describe`); its ``kept`` is the partly
        executed notebook renamed into place, or "".
    """
    import papermill

    # The names were checked against each parameters cell already; papermill's own parser
    # would warn about comment lines it cannot read and call those names unknown.
    logging.getLogger("papermill").setLevel(logging.ERROR)
    # nbformat fills in the ids of cells that have none; the warning is not the user's concern
    warnings.filterwarnings("ignore", message="Cell is missing an id field")
    partial = step.output.with_name(f".{step.output.stem}{PARTIAL}")
    echo = ProgressEcho(log)
    os.environ["RFCX_TEXT_PROGRESS"] = "1"  # the kernel's bars as text lines the echo can read (rfcxlib.progress)
    try:
        papermill.execute_notebook(
            str(step.notebook), str(partial), parameters=step.parameters,
            kernel_name=kernel, progress_bar=progress_bar,
            cwd=str(step.notebook.parent), stdout_file=echo, stderr_file=echo,
            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # no transport warning
        os.replace(partial, step.output)
    except BaseException as exc:  # the cell's error, a dead kernel, a full disk, Ctrl-C
        raise SeriesFailed(step, describe(exc), exc, _keep_partial(partial, step.output)) from exc


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

    def __init__(self, log=say):
        self.log, self.buffer, self.counts = log, "", {}

    def write(self, text: str) -> int:
        self.buffer += text
        while True:
            match = re.search(r"[\r\n]", self.buffer)
            if match is None:
                break
            line, self.buffer = self.buffer[:match.start()], self.buffer[match.end():]
            self._line(strip_ansi(line).strip())
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
