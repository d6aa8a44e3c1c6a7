"""Running inside a Kaggle kernel: the attached competition data and where a submission goes.

Standard library only: a kernel imports this before (and whatever) the wheel's dependencies are.

Tests: tests/test_kaggle.py
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from rfcxlib.errors import DataError

COMPETITION = "rfcx-species-audio-detection"
KAGGLE_INPUT = "/kaggle/input"
KAGGLE_WORKING = "/kaggle/working"


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
