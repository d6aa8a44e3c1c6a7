"""Answering without a person: from the synthetic truth, or from a table of answers given elsewhere.

:class:`TruthOracle` answers from ``synth_calls.csv`` (every call placed in a synthetic data set,
labelled or not): a species is ``present`` in a window when one of its calls overlaps the window
as a TP row must to label it (:meth:`rfcxlib.data.tables.Dataset.window_targets`: at least half
the call or one second of it), else ``absent``. It is what the learning curve measures with and
what notebook 08 answers with under papermill on synthetic data.

:class:`TableOracle` answers from a CSV of answers (:func:`rfcxlib.review.answers.read_answers_csv`)
matched by query id, or by recording, species and window start; a query it has no answer for
stays unanswered (None).

Tested in ``tests/test_review.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from rfcxlib.data.tables import MIN_OVERLAP_FRAC, MIN_OVERLAP_S
from rfcxlib.errors import DataError, unknown_choice
from rfcxlib.review.answers import read_answers_csv
from rfcxlib.review.queries import query_id
from rfcxlib.synth import dataset as synth


#: How notebook 08 answers: a person in the widget, the synthetic truth, or a CSV of answers.
ANSWER_WITH = ("widget", "oracle", "csv")


class TruthOracle:
    """The synthetic truth as a reviewer who never errs (module docstring)."""

    def __init__(self, data_dir):
        calls = synth.read_calls(data_dir)
        if calls is None:
            raise DataError(f"{Path(data_dir) / 'synth_calls.csv'}: not found; the oracle answers from a "
                            "synthetic data set's truth: answer from a CSV of answers or in the review widget")
        calls = calls[(calls.kind == "call")]
        self._calls = {key: (g.t_min.to_numpy(float), g.t_max.to_numpy(float))
                       for key, g in calls.groupby([calls.recording_id.astype(str), calls.species_id.astype(int)])}

    def is_present(self, recording_id: str, species_id: int, start_s: float, end_s: float) -> bool:
        t_min, t_max = self._calls.get((str(recording_id), int(species_id)), (np.zeros(0), np.zeros(0)))
        overlap = np.minimum(t_max, end_s) - np.maximum(t_min, start_s)
        need = np.minimum(MIN_OVERLAP_FRAC * (t_max - t_min), MIN_OVERLAP_S)
        return bool(((overlap > 0) & (overlap >= need - 1e-9)).any())

    def answer(self, queries: pd.DataFrame) -> list:
        """``"present"`` or ``"absent"`` for every query."""
        return ["present" if self.is_present(r, s, t0, t1) else "absent" for r, s, t0, t1 in
                zip(queries.recording_id, queries.species_id, queries.start_s, queries.end_s)]


class TableOracle:
    """Answers read from a CSV (module docstring)."""

    def __init__(self, path):
        table = read_answers_csv(path)
        if "query_id" in table.columns:
            keys = table.query_id.astype(str)
        else:
            keys = [query_id(r, int(s), float(t)) for r, s, t in zip(table.recording_id, table.species_id,
                                                                     table.start_s)]
        self._answers = dict(zip(keys, table.answer))

    def __len__(self) -> int:
        return len(self._answers)

    def answer(self, queries: pd.DataFrame) -> list:
        """The answer of every query found in the table, None for the others."""
        return [self._answers.get(str(q)) for q in queries.query_id]


def answerer(answer_with: str, *, data_dir, answers_csv: str = "") -> Optional["TruthOracle | TableOracle"]:
    """What answers in notebook 08: None for ``"widget"`` (a person), :class:`TruthOracle` of
    ``data_dir`` for ``"oracle"``, :class:`TableOracle` of ``answers_csv`` for ``"csv"``."""
    if answer_with not in ANSWER_WITH:
        raise unknown_choice("answer_with", answer_with, ANSWER_WITH)
    if answer_with == "oracle":
        return TruthOracle(data_dir)
    if answer_with == "csv":
        return TableOracle(answers_csv)
    return None
