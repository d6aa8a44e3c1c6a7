"""Added labels: TP and FP rows given after the competition's tables, kept in a folder of their own.

A labels folder holds ``added_tp.csv`` and ``added_fp.csv`` (either may be absent), each with the
seven columns of ``train_tp.csv`` (``recording_id, species_id, songtype_id, t_min, f_min, t_max,
f_max``) and, after them, where each row came from (:data:`PROVENANCE_COLUMNS`: who answered,
when, and which query it answers). The original tables are never touched: training reads the
original rows plus the added ones (``load_dataset(..., extra_labels=DIR)``, ``rfcx run
--extra-labels DIR``), and ``rfcx validate DATA --extra-labels DIR`` checks the added files as it
checks the originals (:func:`rfcxlib.data.checks.check_added_labels`: the same checks, and an added
row must name a *training* recording and end within it).

Tested in ``tests/test_review.py``.

Tests: tests/test_review.py
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from rfcxlib.data.checks import ADDED_FILES, ASSUMED_DURATION_S, check_added_labels
from rfcxlib.errors import DataError
from rfcxlib.layout import ANNOTATION_COLUMNS

#: Who gave a row, when (ISO 8601), and the query it answers.
PROVENANCE_COLUMNS = ["annotator", "answered_at", "query_id"]
#: The columns of ``added_tp.csv`` and ``added_fp.csv`` as rfcx writes them.
ADDED_COLUMNS = [*ANNOTATION_COLUMNS, *PROVENANCE_COLUMNS]


def as_annotations(df: pd.DataFrame) -> pd.DataFrame:
    """The seven annotation columns of ``df`` with the types of the loaded tables."""
    out = df[ANNOTATION_COLUMNS].copy()
    out["recording_id"] = out["recording_id"].astype(str)
    for col in ("species_id", "songtype_id"):
        out[col] = out[col].astype(np.int64)
    for col in ("t_min", "f_min", "t_max", "f_max"):
        out[col] = out[col].astype(np.float64)
    return out.reset_index(drop=True)


def empty_table(columns=ADDED_COLUMNS) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})


def one_line(problems: list[str]) -> str:
    """The first problem, and how many more there are, on one line."""
    more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
    return problems[0].replace("\n", " ") + more


def read_added(folder, durations: dict) -> dict:
    """``{"tp": DataFrame, "fp": DataFrame}``: the rows of a labels folder, all of their columns.

    Parameters
    ----------
    folder : path-like
        A folder with ``added_tp.csv`` and/or ``added_fp.csv`` (an absent file: no rows).
    durations : dict
        Training recording id -> duration in seconds: the recordings an added row may name.

    Raises
    ------
    DataError
        One line naming the file and line of the first problem (and how many more there are).
    """
    problems = check_added_labels(folder, durations)
    if problems:
        raise DataError(one_line(problems))
    out = {}
    for key, name in ADDED_FILES.items():
        path = Path(folder) / name
        out[key] = pd.read_csv(path, dtype={"recording_id": str}) if path.is_file() else empty_table()
    return out


def with_extra_labels(dataset, folder):
    """``dataset`` with the rows of the labels folder ``folder`` added to its TP and FP tables
    (rows already there are not repeated).

    Raises
    ------
    DataError
        One line naming the file and line of the first problem (and how many more there are).
    """
    durations = {r: float(dataset.durations.get(r, ASSUMED_DURATION_S)) for r in dataset.train_ids}
    added = read_added(folder, durations)
    tp, fp = (pd.concat([old, as_annotations(added[key])], ignore_index=True).drop_duplicates(ignore_index=True)
              for key, old in (("tp", dataset.tp), ("fp", dataset.fp)))
    return dataclasses.replace(dataset, tp=tp, fp=fp)
