"""Detection thresholds: one global value, or one per species fitted on out-of-fold scores for a
target precision.

Out-of-fold (OOF) clip scores come with partial labels ``(y, mask)``: for species ``s`` only the
recordings with ``mask = 1`` count (TP rows: present, FP rows: absent). A clip's score is the
maximum of its window scores, so "the clip score is above ``t``" means "some window is above
``t``": a threshold fitted on clip scores applies to window scores as they are.

For each species the fitted threshold is the lowest score ``t`` at which the known recordings with
``score >= t`` reach the target precision (the most recall at that precision). When no threshold
reaches it, the threshold is set just above the highest known-absent score (no false positive on
OOF, status ``"unreachable"``); a species with no known-present recording keeps the global
threshold (status ``"no_positives"``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from rfcxlib import NUM_SPECIES
from rfcxlib.config import check
from rfcxlib.errors import DataError
from rfcxlib.atomic import read_json, write_json_atomic

FILE_NAME = "thresholds.json"


def _species_threshold(scores: np.ndarray, truth: np.ndarray, precision: float, fallback: float) -> dict:
    n_pos, n_neg = int(truth.sum()), int((1 - truth).sum())
    base = {"n_pos": n_pos, "n_neg": n_neg}
    if n_pos == 0:
        return {**base, "threshold": float(fallback), "status": "no_positives", "precision": None,
                "recall": None}
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order]
    tp, fp = np.cumsum(t), np.cumsum(1 - t)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # a cut at s[i] keeps every score equal to it
    prec = tp / (tp + fp)
    ok = np.flatnonzero(last_of_tie & (prec >= precision))
    if ok.size:
        i = ok[-1]
        return {**base, "threshold": float(s[i]), "status": "fitted", "precision": float(prec[i]),
                "recall": float(tp[i] / n_pos)}
    top_neg = float(s[t == 0].max())
    threshold = float(min(np.nextafter(top_neg, np.inf), 1.0))
    kept = scores >= threshold
    hits = int((kept & (truth == 1)).sum())
    return {**base, "threshold": threshold, "status": "unreachable",
            "precision": float(hits / kept.sum()) if kept.any() else None, "recall": hits / n_pos}


def fit_thresholds(scores, y, mask, *, precision: float = 0.9, fallback: float = 0.5) -> list[dict]:
    """Per-species thresholds for a target ``precision``.

    Parameters
    ----------
    scores, y, mask : np.ndarray [shape=(n, 24)]
        OOF probabilities in ``[0, 1]`` and the partial labels.
    precision : float in (0, 1]
    fallback : float
        The threshold of a species with no known-present recording.

    Returns
    -------
    list of 24 dicts: ``species, threshold, status, precision, recall, n_pos, n_neg``.
    """
    check(0.0 < precision <= 1.0, "precision", precision, "a target precision in (0, 1]")
    check(0.0 <= fallback <= 1.0, "threshold", fallback, "a score threshold in [0, 1]")
    scores, y, mask = (np.asarray(a, np.float64) for a in (scores, y, mask))
    if scores.ndim != 2 or scores.shape[1] != NUM_SPECIES or y.shape != scores.shape or mask.shape != scores.shape:
        raise DataError(f"OOF scores {scores.shape}, y {y.shape}, mask {mask.shape}: expected three "
                        f"arrays of shape (n, {NUM_SPECIES})")
    out = []
    for s in range(NUM_SPECIES):
        known = mask[:, s] > 0
        row = _species_threshold(scores[known, s], (y[known, s] > 0.5).astype(np.float64), precision, fallback)
        out.append({"species": s, **row})
    return out


def save_thresholds(folder, species: list[dict], *, precision: float, fallback: float, models: list,
                    method: str) -> Path:
    """Write ``<folder>/thresholds.json`` (atomic)."""
    return write_json_atomic(Path(folder) / FILE_NAME, {
        "target_precision": precision, "fallback": fallback, "models": list(models), "method": method,
        "fitted_on": "out-of-fold clip scores (known labels only)", "species": species})


def load_thresholds(folder) -> Optional[dict]:
    """``<folder>/thresholds.json``, or None when there is none."""
    body = read_json(Path(folder) / FILE_NAME, default=None)
    if body is not None and len(body.get("species", [])) != NUM_SPECIES:
        raise DataError(f"{Path(folder) / FILE_NAME}: expected {NUM_SPECIES} species entries")
    return body


def as_array(species: list[dict]) -> np.ndarray:
    """The ``(24,)`` thresholds of :func:`fit_thresholds`' entries."""
    return np.array([row["threshold"] for row in sorted(species, key=lambda r: r["species"])], np.float64)
