"""A failed step of ``rfcx run`` described in one line: where (the step, the cell), what (the
error, or the file that could not be written) and what to do about it.

Tests: tests/test_failures.py
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from rfcxlib.runner.console import strip_ansi

if TYPE_CHECKING:
    from rfcxlib.runner.plan import Step


class SeriesFailed(Exception):
    """A notebook of the series raised; carries the step, the error's description, the cause and
    the partly executed notebook kept (its path, or "")."""

    def __init__(self, step: Step, message: str, cause: Optional[BaseException] = None, kept: str = ""):
        super().__init__(message)
        self.step, self.cause, self.kept = step, cause, kept

    @property
    def interrupted(self) -> bool:
        return isinstance(self.cause, KeyboardInterrupt)

    def line(self, run_path: Path) -> str:
        """The failure in one line: the step, the cell, the error, what to do."""
        first = str(self).splitlines()[0]
        return (f"{self.step.key} ({self.step.notebook.name}): {first}; "
                f"{advice(self.cause, str(self), run_path)}")


def root_oserror(exc: BaseException) -> Optional[OSError]:
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


def advice(exc: Optional[BaseException], text: str, run_path: Path) -> str:
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


def describe(exc: BaseException) -> str:
    """The error of an executed notebook: the cell and the exception with the end of its
    traceback, a write that failed (naming the file), or an interrupt."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C) while executing"
    oserr = None if hasattr(exc, "ename") else root_oserror(exc)
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
        lines = [ln for block in tb for ln in strip_ansi(block).splitlines() if ln.strip()]
        text += "\n" + "\n".join("    " + ln for ln in lines[-8:])
    return text
