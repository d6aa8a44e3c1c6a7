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

``rfcx predict`` (:func:`resolve_thresholds`) fits them for ``--precision`` and saves them as the run's
``thresholds.json``; without ``--precision`` or ``--threshold`` it uses that file when it was fitted
for the ensemble it scores with (the same models, method and weights).

Tests: tests/test_predict.py
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from rfcxlib import NUM_SPECIES
from rfcxlib.config import check
from rfcxlib.ensemble.combine import combine
from rfcxlib.ensemble.model_scores import stack_models
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.atomic import write_json_atomic

FILE_NAME = "thresholds.json"
DEFAULT_THRESHOLD = 0.5  # every species' threshold when nothing else is given


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
                    method: str, weights=None) -> Path:
    """Write ``<folder>/thresholds.json`` (atomic): the entries of :func:`fit_thresholds` and the
    ensemble they were fitted for (``models``, ``method``, ``weights``)."""
    body = {"target_precision": precision, "fallback": fallback, "models": list(models), "method": method}
    if weights is not None:
        body["weights"] = [round(float(w), 9) for w in weights]
    return write_json_atomic(Path(folder) / FILE_NAME, {
        **body, "fitted_on": "out-of-fold clip scores (known labels only)", "species": species})


def load_thresholds(folder) -> Optional[dict]:
    """``<folder>/thresholds.json`` checked, or None when there is none. Raises :class:`DataError`
    naming the file and the key that is wrong."""
    path = Path(folder) / FILE_NAME
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable ({exc})") from None
    if not isinstance(body, dict):
        raise DataError(f"{path}: expected a JSON object as save_thresholds writes it")
    species = body.get("species")
    if (not isinstance(species, list) or len(species) != NUM_SPECIES or not all(isinstance(r, dict) for r in species)
            or sorted(r.get("species", -1) for r in species) != list(range(NUM_SPECIES))):
        raise DataError(f"{path}: key 'species': expected {NUM_SPECIES} entries, one per species 0..{NUM_SPECIES - 1}")
    for row in species:
        t = row.get("threshold")
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0:
            raise DataError(f"{path}: key 'species' entry {row['species']}: 'threshold' = {t!r}, expected a "
                            "score in [0, 1]")
    if not isinstance(body.get("models"), list) or not isinstance(body.get("method"), str):
        raise DataError(f"{path}: keys 'models' and 'method': expected the ensemble the thresholds were "
                        "fitted for (a list of model names, a method)")
    return body


def as_array(species: list[dict]) -> np.ndarray:
    """The ``(24,)`` thresholds of :func:`fit_thresholds`' entries."""
    return np.array([row["threshold"] for row in sorted(species, key=lambda r: r["species"])], np.float64)


def _fitted_for(body: dict, names: list, method: str, weights) -> Optional[str]:
    """Why ``body`` (a ``thresholds.json``) was not fitted for this ensemble, or None when it was."""
    if list(body["models"]) != list(names) or body["method"] != method:
        return (f"fitted for models {body['models']} ({body['method']}), scoring {list(names)} ({method})")
    saved = body.get("weights")
    if saved is not None and (len(saved) != len(weights) or not np.allclose(saved, weights, atol=1e-6)):
        return f"fitted for weights {saved}, scoring with {np.round(weights, 6).tolist()}"
    return None


def resolve_thresholds(source, models: list, *, weights, method: str, threshold: Optional[float] = None,
                       precision: Optional[float] = None, out_dir=None) -> tuple[np.ndarray, dict]:
    """Per-species thresholds ``(24,)`` of ``rfcx predict`` and what they are (``origin``):

    - ``precision`` given: fitted now on the OOF scores of the ensemble (``models`` combined with
      ``weights`` and ``method``), species that cannot be fitted at ``threshold`` (default 0.5);
      saved as ``<source>/thresholds.json``, or in ``out_dir`` when ``source`` is read-only;
    - else ``threshold`` given: that value for every species;
    - else ``<source>/thresholds.json`` when it was fitted for this ensemble; otherwise 0.5 for
      every species (``note`` says why the file was not used).
    """
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise ParameterError(f"parameter 'threshold' = {threshold!r}: expected a score in [0, 1]")
    fallback = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    names = [m.name for m in models]
    if precision is not None:
        stack = stack_models(models)
        oof = combine(stack.inputs(method, "oof"), weights, method=method)
        species = fit_thresholds(oof, stack.y, stack.mask, precision=precision, fallback=fallback)
        saved = dict(precision=precision, fallback=fallback, models=stack.names, method=method, weights=weights)
        try:
            path = save_thresholds(source, species, **saved)
        except OSError:
            if out_dir is None:
                raise
            path = save_thresholds(out_dir, species, **saved)
        return as_array(species), {"kind": "per_species", "origin": "fitted", "target_precision": precision,
                                   "fallback": fallback, "path": str(path), "species": species}
    described = {"kind": "global", "origin": "threshold", "threshold": fallback}
    if threshold is not None:
        return np.full(NUM_SPECIES, fallback), described
    body = load_thresholds(source)
    why = None if body is None else _fitted_for(body, names, method, weights)
    if body is not None and why is None:
        return as_array(body["species"]), {
            "kind": "per_species", "origin": FILE_NAME, "target_precision": body.get("target_precision"),
            "fallback": body.get("fallback"), "path": str(Path(source) / FILE_NAME), "species": body["species"]}
    described["origin"] = "default"
    if why:
        described["note"] = f"{Path(source) / FILE_NAME} not used: {why}"
    return np.full(NUM_SPECIES, fallback), described
