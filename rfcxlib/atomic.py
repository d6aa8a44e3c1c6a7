"""Atomic artifact writes: every file is written to a temporary file in the same folder, flushed
to disk and renamed into place, and a folder is built beside its target and swapped in, so a reader
never sees half an artifact and an interrupted write leaves the previous version intact.

Temporary files are named ``.<name>.<random>.tmp`` beside their target (a folder holding
leftovers of a killed writer can be cleaned with the glob ``.*.tmp``).

It imports the standard library only (NumPy, Matplotlib and Keras objects are written by the
helpers that take them), so the configuration can save itself without loading NumPy.

Tests: tests/test_atomic.py
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from rfcxlib.errors import DataError, ParameterError


class AtomicFile:
    """A file written piece by piece (a table appended file by file, a zip archive) into a
    temporary file beside ``path``; :meth:`commit` flushes it to disk and renames it into place,
    :meth:`discard` drops it. As a context manager it gives the open file and commits when the
    block ends without an error, else discards.

    Parameters
    ----------
    path : str or Path
        The artifact; its folder is created.
    mode : str
        ``"w"`` (text) or ``"wb"`` (bytes).
    newline : str, optional
        As :func:`open`'s, for text (``""`` for CSV writers).
    """

    def __init__(self, path, mode: str = "w", *, newline=None):
        if mode not in ("w", "wb"):
            raise ParameterError(f"parameter 'mode' = {mode!r}: expected 'w' (text) or 'wb' (bytes)")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp = Path(tmp)
        text = {} if mode == "wb" else {"encoding": "utf-8", "newline": newline}
        self.file = os.fdopen(fd, mode, **text)

    def commit(self) -> Path:
        """Flush to disk and rename into place; returns the path."""
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.chmod(self.tmp, 0o644)  # mkstemp creates 0600; artifacts are ordinary readable files
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        return self.path

    def discard(self) -> None:
        """Close and remove the temporary file; the artifact stays as it was."""
        self.file.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self.file

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def write_bytes_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    with AtomicFile(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _json_default(obj):
    """NumPy scalars and arrays, paths and tuples as JSON values."""
    np = sys.modules.get("numpy")  # an object of NumPy's exists only once NumPy is loaded
    if np is not None:
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
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
    """The JSON value of ``path``; ``default`` when it does not exist.

    Raises
    ------
    DataError
        When the file is not valid JSON (naming the file and where it stops being JSON).
    """
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column "
                        f"{exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid JSON (byte {exc.start} is not UTF-8 text)") from None


@contextlib.contextmanager
def file_lock(path):
    """Hold an exclusive ``flock`` on ``.<name>.lock`` beside ``path`` (waits for other holders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_json_atomic(path, update) -> Any:
    """Read-modify-write of a JSON file as one step: ``update(body) -> body`` runs under
    :func:`file_lock`, and the result is written atomically (temporary file and rename), so two
    writers never lose each other's sections. Returns the body written."""
    with file_lock(path):
        body = update(read_json(path, default={}) or {})
        write_json_atomic(path, body)
    return body


def save_npz_atomic(path, **arrays) -> Path:
    """``np.savez_compressed`` of ``arrays`` at ``path``, atomically."""
    import numpy as np

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes_atomic(path, buffer.getvalue())


def save_figure_atomic(fig, path, dpi: int = 110) -> Path:
    """A Matplotlib figure at ``path`` (format from its suffix, PNG by default), atomically."""
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


def replace_folder(built, target) -> Path:
    """Swap the finished folder ``built`` (on the same file system, e.g. a temporary folder beside
    ``target``) into ``target``: an older ``target`` is renamed aside first and removed after, so
    ``target`` is at every moment either the old folder or the new one. Returns ``target``."""
    built, target = Path(built), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(built, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
