"""A review queue for people who label in Raven Pro (or any tool that reads its selection tables).

:func:`write_queue` writes, in one folder:

- ``<recording>.selections.txt``: one Raven selection table per recording, each queried window a
  selection boxed on its species' band, with the columns of :mod:`rfcxlib.inference.raven`
  (``Species``, ``Species ID``, ``Score``) plus ``Query`` (the query's id), ``Spread`` (how much
  the committee disagreed), ``Clip`` (the clip's file) and an empty ``Answer`` column to fill in:
  ``present``, ``absent`` or ``skip`` (``y``/``n``/``?`` and the other
  :data:`rfcxlib.review.answers.ALIASES` too); an empty cell is not answered;
- ``clips/<n>_<recording>_s<species>.wav``: the window with ``clip_pad_s`` of context either side;
- ``queue.csv`` (the queries, :data:`rfcxlib.review.queries.QUERY_COLUMNS`) and ``queue.json``
  (where they came from: the run, the data folder, the labels folder the answers go to).

:func:`import_queue` reads the tables back and records their answers in the labels folder
(:class:`rfcxlib.review.answers.AnswerStore`): each answered selection becomes a TP or FP row of
its species over the selection's time and frequency range, so a box a person tightened in Raven
is kept as drawn.

Tested in ``tests/test_review.py`` (the tables are read back with crowsetta there).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from rfcxlib.errors import DataError
from rfcxlib.inference.raven import RAVEN_COLUMNS, SUFFIX, write_selection_table
from rfcxlib.review.answers import AnswerStore, parse_answer
from rfcxlib.review.clips import write_clip
from rfcxlib.review.queries import read_queries
from rfcxlib.atomic import read_json, write_json_atomic, write_text_atomic

#: The columns of a queue's selection tables.
QUEUE_COLUMNS = [*RAVEN_COLUMNS[:7], "Species", "Species ID", "Query", "Score", "Spread", "Clip", "Answer"]
MANIFEST = "queue.json"
QUERIES = "queue.csv"


def clip_name(n: int, recording_id: str, species_id: int) -> str:
    return f"clips/{n:04d}_{recording_id}_s{int(species_id)}.wav"


def write_queue(queries: pd.DataFrame, dataset, out_dir, *, labels_dir, source: str = "",
                names: Optional[dict] = None, clip_pad_s: float = 1.0) -> dict:
    """Write the review queue of ``queries`` (module docstring) into ``out_dir``.

    Parameters
    ----------
    queries : pd.DataFrame
        :func:`rfcxlib.review.queries.rank_queries`'s table (with bands).
    dataset : rfcxlib.data.tables.Dataset
        Where the recordings are.
    labels_dir : path-like
        Where :func:`import_queue` records the answers by default.
    source : the run the queries came from (kept in ``queue.json``).
    names : ``{species: name}`` for the ``Species`` column (default ``s<id>``).

    Returns
    -------
    dict: the manifest (also ``queue.json``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    queries = queries.reset_index(drop=True)
    clips = [clip_name(i + 1, r, s) for i, (r, s) in enumerate(zip(queries.recording_id, queries.species_id))]
    for clip, row in zip(clips, queries.itertuples(index=False)):
        write_clip(out / clip, dataset.path(row.recording_id, "train"), start_s=row.start_s, end_s=row.end_s,
                   pad_s=clip_pad_s)
    tables = []
    for rid, group in queries.assign(clip_file=clips).groupby("recording_id", sort=True):
        group = group.sort_values(["start_s", "species_id"], kind="stable")
        table = pd.DataFrame({
            "Selection": np.arange(1, len(group) + 1), "View": "Spectrogram 1", "Channel": 1,
            "Begin Time (s)": group.start_s.to_numpy(float), "End Time (s)": group.end_s.to_numpy(float),
            "Low Freq (Hz)": group.f_min.to_numpy(float), "High Freq (Hz)": group.f_max.to_numpy(float),
            "Species": [(names or {}).get(int(s), f"s{int(s)}") for s in group.species_id],
            "Species ID": group.species_id.to_numpy(int), "Query": group.query_id.to_numpy(str),
            "Score": group.score.to_numpy(float), "Spread": group.spread.to_numpy(float),
            "Clip": group["clip_file"].to_numpy(str), "Answer": ""}, columns=QUEUE_COLUMNS)
        write_selection_table(out / f"{rid}{SUFFIX}", table)
        tables.append(f"{rid}{SUFFIX}")
    write_text_atomic(out / QUERIES, queries.to_csv(index=False, float_format="%.6f"))
    manifest = {"source": str(source), "data_dir": str(dataset.root), "labels_dir": str(Path(labels_dir).resolve()),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "queries": len(queries),
                "strategy": sorted(set(queries.strategy)), "tables": tables, "clip_pad_s": clip_pad_s}
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


def read_manifest(queue_dir) -> dict:
    path = Path(queue_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: not found; expected a review queue written by rfcx review RUN --out DIR")
    return read_json(path)


def read_answers(queue_dir) -> pd.DataFrame:
    """Every answered selection of the queue's tables: ``query_id, recording_id, species_id, start_s,
    end_s, f_min, f_max, answer``.

    Raises
    ------
    DataError
        One line naming the table, its line and the bad value (an unknown answer, a query that is
        not in the queue, a missing column).
    """
    queue_dir = Path(queue_dir)
    queries = read_queries(queue_dir / QUERIES).set_index("query_id")
    rows = []
    for path in sorted(queue_dir.glob(f"*{SUFFIX}")):
        table = pd.read_csv(path, sep="\t", dtype={"Query": str, "Answer": str}, keep_default_na=False)
        missing = [c for c in ("Query", "Answer", *RAVEN_COLUMNS[3:7], "Species ID") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: lacks the columns {missing}; expected a table of the review queue")
        for i, row in table.iterrows():
            where = f"{path}: line {i + 2} (Selection {row.get('Selection', i + 1)})"
            answer = parse_answer(row["Answer"], where)
            if answer is None:
                continue
            if row["Query"] not in queries.index:
                raise DataError(f"{where}: query {row['Query']!r} is not in {queue_dir / QUERIES}")
            try:
                box = [float(row[c]) for c in RAVEN_COLUMNS[3:7]]
            except ValueError:
                raise DataError(f"{where}: a time or frequency that is not a number") from None
            rows.append({"query_id": row["Query"], "recording_id": queries.loc[row["Query"], "recording_id"],
                         "species_id": int(row["Species ID"]), "start_s": box[0], "end_s": box[1],
                         "f_min": box[2], "f_max": box[3], "answer": answer})
    return pd.DataFrame(rows, columns=["query_id", "recording_id", "species_id", "start_s", "end_s", "f_min",
                                       "f_max", "answer"])


def import_queue(queue_dir, dataset, *, labels_dir=None, annotator: str = "") -> dict:
    """Record the answers of a filled-in queue in ``labels_dir`` (default: the manifest's).
    Returns the store's counts and how many answers this import read."""
    labels = Path(labels_dir or read_manifest(queue_dir)["labels_dir"])
    answers = read_answers(queue_dir)
    store = AnswerStore(labels, dataset)
    counts = store.add(answers, list(answers.answer), annotator=annotator or f"raven:{Path(queue_dir).name}")
    return {**counts, "imported": len(answers), "labels_dir": str(labels)}
