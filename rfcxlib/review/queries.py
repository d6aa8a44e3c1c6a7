"""Which unknown cells to ask about: (recording, species, window) cells of the training recordings
ranked by how much an answer would help.

A :class:`Pool` holds every window of the training recordings, the probabilities a committee of
models gives each (window, species) cell, and which cells are already known (a TP or FP row
labels them: :meth:`rfcxlib.data.tables.Dataset.window_targets`). Only unknown cells are ever
proposed. The strategies (:data:`STRATEGIES`):

- ``uncertainty``: the committee's mean probability nearest the decision boundary,
  ``1 - |2 p - 1|`` (1 at 0.5);
- ``disagreement``: the spread of the members' probabilities (their standard deviation):
  query by committee;
- ``random``: a random order, the control every other strategy is measured against.

Diversity: at most ``per_recording`` queries per recording, and never two overlapping windows of
one species in a recording, so a batch is not ten windows of one loud recording. Ties are broken by
a seeded random order: the same pool, strategy and seed give the same queries.

NumPy and pandas only (no TensorFlow): the committee's scores come from
:mod:`rfcxlib.review.committee`. Tested in ``tests/test_review.py``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from rfcxlib.features.bands import species_bands
from rfcxlib.errors import DataError, ParameterError, unknown_choice

STRATEGIES = {
    "uncertainty": "the committee's mean probability nearest 0.5",
    "disagreement": "the spread (standard deviation) of the committee members' probabilities",
    "random": "a random order (the control)",
}
#: One row per query.
QUERY_COLUMNS = ["query_id", "recording_id", "start_s", "end_s", "species_id", "f_min", "f_max",
                 "strategy", "priority", "score", "spread", "members"]


@dataclass
class Pool:
    """The cells a query may ask about.

    Attributes
    ----------
    windows : pd.DataFrame
        ``recording_id, start_s, end_s`` of every window of the training recordings.
    probs : np.ndarray [shape=(members, n, species)]
        Each committee member's probability of every cell.
    known : np.ndarray [shape=(n, species)], bool
        Cells a TP or FP row already labels: never proposed.
    """

    windows: pd.DataFrame
    probs: np.ndarray
    known: np.ndarray

    def __post_init__(self):
        self.windows = self.windows.reset_index(drop=True)
        self.probs = np.asarray(self.probs, np.float32)
        self.known = np.asarray(self.known, bool)
        if self.probs.ndim != 3 or self.probs.shape[1:] != self.known.shape or len(self.windows) != len(self.known):
            raise ParameterError(f"pool of {len(self.windows)} windows with probs {self.probs.shape} and known "
                                 f"{self.known.shape}: expected (members, n, species) and (n, species)")

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def mean(self) -> np.ndarray:
        """``(n, species)``: the committee's mean probability."""
        return self.probs.mean(axis=0)

    @property
    def spread(self) -> np.ndarray:
        """``(n, species)``: the standard deviation of the members' probabilities."""
        return self.probs.std(axis=0)


def known_cells(dataset, windows: pd.DataFrame) -> np.ndarray:
    """``(n, species)`` bool: the cells of ``windows`` that a TP or FP row of ``dataset`` labels
    (the rule of :meth:`~rfcxlib.data.tables.Dataset.window_targets`, each window cut to its
    recording's duration)."""
    out = np.zeros((len(windows), dataset.num_species), bool)
    for i, (rid, t0, t1) in enumerate(zip(windows["recording_id"], windows["start_s"], windows["end_s"])):
        end = min(float(t1), dataset.durations.get(rid, float(t1)))
        out[i] = dataset.window_targets(rid, float(t0), end)[1] > 0
    return out


def query_id(recording_id: str, species_id: int, start_s: float) -> str:
    """``<recording>:s<species>:<start_s>``, the name of a query in every file that holds it."""
    return f"{recording_id}:s{int(species_id)}:{float(start_s):.2f}"


def band_table(dataset) -> dict:
    """``{species: (f_min, f_max)}`` in Hz: each species' band (:func:`rfcxlib.features.bands.species_bands`);
    a species without rows takes the range of every row."""
    bands = species_bands(dataset.tp, dataset.fp)
    rows = pd.concat([dataset.tp, dataset.fp])
    whole = (float(rows.f_min.min()), float(rows.f_max.max())) if len(rows) else (0.0, 24000.0)
    return {s: bands.get(s, whole) for s in range(dataset.num_species)}


def priorities(pool: Pool, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """``(n, species)``: how much an answer to each cell would help under ``strategy`` (higher first)."""
    if strategy not in STRATEGIES:
        raise unknown_choice("query strategy", strategy, STRATEGIES)
    if strategy == "uncertainty":
        return 1.0 - np.abs(2.0 * pool.mean - 1.0)
    if strategy == "disagreement":
        return pool.spread
    return rng.random(pool.known.shape)


def rank_queries(pool: Pool, *, strategy: str = "uncertainty", n: int = 50, per_recording: int = 1,
                 seed: int = 0, exclude: Iterable[str] = (), bands: Optional[dict] = None) -> pd.DataFrame:
    """The ``n`` best unknown cells of ``pool`` under ``strategy``, diverse (module docstring).

    Parameters
    ----------
    pool : Pool
    strategy : str
        One of :data:`STRATEGIES`.
    n : int
        Queries wanted (fewer come back when the pool runs out of cells).
    per_recording : int
        At most this many queries per recording.
    seed : int
        Breaks ties (and orders ``random``).
    exclude : query ids never proposed (answered, or skipped by a person).
    bands : ``{species: (f_min, f_max)}`` for the band columns (:func:`band_table`); default NaN.

    Returns
    -------
    pd.DataFrame with :data:`QUERY_COLUMNS`, best first.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 0):
        raise ParameterError(f"n = {n!r}: expected a number of queries >= 0")
    if not (isinstance(per_recording, (int, np.integer)) and per_recording >= 1):
        raise ParameterError(f"per_recording = {per_recording!r}: expected an integer >= 1")
    rng = np.random.default_rng([int(seed), 17])
    priority = priorities(pool, strategy, rng).astype(np.float64)
    cells = np.flatnonzero(~pool.known.reshape(-1))
    order = cells[np.lexsort((rng.random(len(cells)), -priority.reshape(-1)[cells]))]
    species_n = pool.known.shape[1]
    w = pool.windows
    rid, t0, t1 = w["recording_id"].astype(str).to_numpy(), w["start_s"].to_numpy(float), w["end_s"].to_numpy(float)
    excluded, taken, chosen = set(exclude), {}, []
    for cell in order:
        if len(chosen) >= n:
            break
        i, s = divmod(int(cell), species_n)
        mine = taken.setdefault(rid[i], [])
        if len(mine) >= per_recording or any(s == s2 and t0[i] < e2 and t0[j] < t1[i] for s2, j, e2 in mine):
            continue
        if query_id(rid[i], s, t0[i]) in excluded:
            continue
        mine.append((s, i, t1[i]))
        chosen.append((i, s))
    return _frame(pool, chosen, priority, strategy, bands)


def _frame(pool: Pool, chosen: list, priority: np.ndarray, strategy: str, bands: Optional[dict]) -> pd.DataFrame:
    idx = np.array([i for i, _ in chosen], dtype=np.int64)
    sp = np.array([s for _, s in chosen], dtype=np.int64)
    w = pool.windows.iloc[idx]
    mean, spread = pool.mean, pool.spread
    lo = [bands[s][0] if bands else np.nan for s in sp]
    hi = [bands[s][1] if bands else np.nan for s in sp]
    out = pd.DataFrame({
        "query_id": [query_id(r, s, t) for r, s, t in zip(w["recording_id"], sp, w["start_s"])],
        "recording_id": w["recording_id"].astype(str).to_numpy(), "start_s": w["start_s"].to_numpy(float),
        "end_s": w["end_s"].to_numpy(float), "species_id": sp, "f_min": np.asarray(lo, float),
        "f_max": np.asarray(hi, float), "strategy": strategy, "priority": priority[idx, sp].round(6),
        "score": mean[idx, sp].round(6), "spread": spread[idx, sp].round(6), "members": pool.probs.shape[0]},
        columns=QUERY_COLUMNS)
    return out.reset_index(drop=True)


def read_queries(path) -> pd.DataFrame:
    """A queue's ``queue.csv`` back (:data:`QUERY_COLUMNS`); :class:`DataError` names a missing column."""
    table = pd.read_csv(path, dtype={"recording_id": str, "query_id": str})
    missing = [c for c in QUERY_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: lacks the columns {missing}; expected a queue.csv written by rfcx review")
    return table
