"""Answers to queries, as rows in the RFCx format, kept in a labels folder.

An answer is ``present``, ``absent`` or ``skip``. ``present`` becomes a TP row and ``absent`` an FP
row of the queried species over the queried window, with the species' band as its frequency range
and the species' most common song type, in the competition's seven columns followed by who
answered, when and which query (:data:`rfcxlib.data.extra_labels.ADDED_COLUMNS`), appended to
``added_tp.csv`` / ``added_fp.csv`` of the labels folder. ``skip`` writes no row; the query is
kept in ``skipped.csv`` so that it is not asked again. The original tables are never touched;
training reads them with the added rows (``load_dataset(..., extra_labels=DIR)``).

:class:`AnswerStore` rewrites its files atomically (a temporary file and a rename, under a lock)
with every answer, so an interrupted review keeps every answer given, and a reopened notebook
continues where it stopped. Answering a query again replaces the earlier answer.

Tested in ``tests/test_review.py``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from rfcxlib.data import extra_labels
from rfcxlib.data.checks import ADDED_FILES
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.atomic import file_lock, write_text_atomic

ANSWERS = ("present", "absent", "skip")
#: What a person may write for each answer (case and spaces ignored); empty: not answered.
ALIASES = {**{a: "present" for a in ("present", "p", "yes", "y", "1", "tp", "true")},
           **{a: "absent" for a in ("absent", "a", "no", "n", "0", "fp", "false")},
           **{a: "skip" for a in ("skip", "s", "?", "unsure")}}
SKIPPED_FILE = "skipped.csv"
SKIPPED_COLUMNS = ["query_id", "recording_id", "species_id", "start_s", "annotator", "answered_at"]
#: A CSV of answers (``answers_csv``): ``query_id`` or ``recording_id, species_id, start_s``, and ``answer``.
ANSWERS_CSV_KEYS = (("query_id",), ("recording_id", "species_id", "start_s"))


def parse_answer(value, where: str) -> Optional[str]:
    """``"present"``, ``"absent"``, ``"skip"``, or None for an empty value; :class:`DataError`
    naming ``where`` (a file and its line) for anything else."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in ALIASES:
        raise DataError(f"{where}: answer {value!r}; expected present, absent or skip (or empty: not answered)")
    return ALIASES[text]


def songtypes(dataset) -> dict:
    """``{species: songtype_id}``: the most common song type of each species' rows (1 without rows)."""
    rows = pd.concat([dataset.tp, dataset.fp])
    common = rows.groupby("species_id").songtype_id.agg(lambda s: int(s.value_counts().index[0])) if len(rows) else {}
    return {s: int(common.get(s, 1)) for s in range(dataset.num_species)}


def answer_rows(queries: pd.DataFrame, answers: Sequence[Optional[str]], *, songtype: dict,
                annotator: str = "", answered_at: str = "") -> dict:
    """``{"tp", "fp", "skipped"}`` tables of the answered queries (``None`` answers are left out).

    ``queries`` needs ``query_id, recording_id, species_id, start_s, end_s, f_min, f_max``
    (:data:`rfcxlib.review.queries.QUERY_COLUMNS`)."""
    if len(answers) != len(queries):
        raise ParameterError(f"{len(answers)} answers for {len(queries)} queries: expected one each")
    when = answered_at or time.strftime("%Y-%m-%dT%H:%M:%S")
    kinds = np.array([parse_answer(a, f"answer {i + 1}") or "" for i, a in enumerate(answers)], dtype=object)
    q = queries.reset_index(drop=True)
    if kinds.size and np.isnan(q.loc[kinds != "", ["f_min", "f_max"]].to_numpy(float)).any():
        raise ParameterError("queries without a band (f_min, f_max): rank them with bands=band_table(dataset)")
    rows = pd.DataFrame({
        "recording_id": q.recording_id.astype(str), "species_id": q.species_id.astype(np.int64),
        "songtype_id": [songtype.get(int(s), 1) for s in q.species_id], "t_min": q.start_s.astype(float).round(4),
        "f_min": q.f_min.astype(float).round(2), "t_max": q.end_s.astype(float).round(4),
        "f_max": q.f_max.astype(float).round(2), "annotator": annotator, "answered_at": when,
        "query_id": q.query_id.astype(str)}, columns=extra_labels.ADDED_COLUMNS)
    skipped = rows.loc[kinds == "skip", ["query_id", "recording_id", "species_id", "t_min", "annotator",
                                         "answered_at"]].rename(columns={"t_min": "start_s"})
    return {"tp": rows[kinds == "present"], "fp": rows[kinds == "absent"], "skipped": skipped}


class AnswerStore:
    """A labels folder: ``added_tp.csv``, ``added_fp.csv`` and ``skipped.csv``.

    Parameters
    ----------
    folder : path-like
        Created on the first answer.
    dataset : rfcxlib.data.tables.Dataset
        The data set the queries come from (the song types of the rows it writes).
    """

    def __init__(self, folder, dataset):
        self.folder = Path(folder)
        self.dataset = dataset
        self._songtype = songtypes(dataset)

    def __repr__(self) -> str:
        c = self.counts()
        return f"AnswerStore({str(self.folder)!r}: {c['present']} present, {c['absent']} absent, {c['skip']} skipped)"

    def _paths(self) -> dict:
        return {"tp": self.folder / ADDED_FILES["tp"], "fp": self.folder / ADDED_FILES["fp"],
                "skipped": self.folder / SKIPPED_FILE}

    def tables(self) -> dict:
        """``{"tp", "fp", "skipped"}``: what the folder holds now (empty tables for absent files)."""
        out = {}
        for key, path in self._paths().items():
            columns = SKIPPED_COLUMNS if key == "skipped" else extra_labels.ADDED_COLUMNS
            out[key] = (pd.read_csv(path, dtype={"recording_id": str, "query_id": str}) if path.is_file()
                        else extra_labels.empty_table(columns))
        return out

    def answered(self) -> set:
        """Query ids answered or skipped: never asked again."""
        return {str(q) for t in self.tables().values() if "query_id" in t for q in t["query_id"].dropna()}

    def counts(self) -> dict:
        t = self.tables()
        return {"present": len(t["tp"]), "absent": len(t["fp"]), "skip": len(t["skipped"])}

    def add(self, queries: pd.DataFrame, answers: Sequence[Optional[str]], *, annotator: str = "") -> dict:
        """Record ``answers`` (one per row of ``queries``; None: not answered) and rewrite the
        files atomically; an earlier answer to the same query is replaced. Returns :meth:`counts`."""
        new = answer_rows(queries, answers, songtype=self._songtype, annotator=annotator)
        ids = set(pd.concat([t["query_id"] for t in new.values()]).astype(str))
        if not ids:
            return self.counts()
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / ADDED_FILES["tp"]):
            for key, old in self.tables().items():
                kept = old[~old["query_id"].astype(str).isin(ids)] if "query_id" in old else old
                body = pd.concat([kept, new[key]], ignore_index=True) if len(kept) else new[key]
                if len(body) or self._paths()[key].is_file():
                    write_text_atomic(self._paths()[key], body.to_csv(index=False, float_format="%.4f"))
        return self.counts()

    def labelled(self, dataset=None):
        """``dataset`` (default the store's) with the added rows: what training reads."""
        dataset = dataset or self.dataset
        return extra_labels.with_extra_labels(dataset, self.folder) if self.folder.is_dir() else dataset


def read_answers_csv(path) -> pd.DataFrame:
    """A CSV of answers given elsewhere: ``answer`` and either ``query_id`` or ``recording_id,
    species_id, start_s``; returns it with ``answer`` parsed (rows with an empty answer dropped).

    Raises
    ------
    DataError
        One line naming the file, the line and the bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"answers_csv {str(path)!r}: file not found; expected a CSV with columns answer and "
                        "query_id (or recording_id, species_id, start_s)")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})") from None
    keys = next((k for k in ANSWERS_CSV_KEYS if set(k) <= set(table.columns)), None)
    if "answer" not in table.columns or keys is None:
        raise DataError(f"{path}: columns {list(table.columns)}; expected answer and query_id "
                        "(or recording_id, species_id, start_s)")
    table["answer"] = [parse_answer(v, f"{path}: line {i + 2}") for i, v in enumerate(table["answer"])]
    if keys == ANSWERS_CSV_KEYS[1]:
        for i, (s, t) in enumerate(zip(table.species_id, table.start_s)):
            try:
                float(t), int(s)
            except ValueError:
                raise DataError(f"{path}: line {i + 2}: species_id {s!r}, start_s {t!r}; expected an "
                                "integer species and a start in seconds") from None
    return table[table.answer.notna()].reset_index(drop=True)
