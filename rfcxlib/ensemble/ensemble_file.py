"""``ensemble.json``: notebook 06's fitted ensemble, written, read and checked here.

Notebook 06 writes it into the run folder (:func:`write_ensemble`); ``rfcx predict`` and
``rfcx export`` read it (:func:`read_ensemble`) and combine the models they score by
:func:`member_combination`. The file::

    {"method": "prob" | "logit" | "rank",          required (rfcxlib.ensemble.model_scores.ENSEMBLE_METHODS)
     "weights": {"<model name>": w, ...},          required: finite, >= 0, a positive sum
     "scale": [f_0, ..., f_23],                    optional: per-species factors > 0 (1: unchanged)
     "choice", "holdout_lwlrap", "split_by",       what notebook 06 reports beside them
     "n_splits", "oof_lwlrap", "table"}            (rfcxlib.ensemble.combine.EnsembleFit.to_dict); not read

Tests: tests/test_ensemble.py
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from rfcxlib import NUM_SPECIES
from rfcxlib.ensemble.model_scores import ENSEMBLE_METHODS
from rfcxlib.errors import DataError
from rfcxlib.atomic import write_json_atomic

FILE_NAME = "ensemble.json"


@dataclass(frozen=True)
class SavedEnsemble:
    """What ``ensemble.json`` says about combining models: ``scores = combine(models, weights, method)
    * scale`` (``scale`` None: every factor 1)."""

    method: str
    weights: dict
    scale: Optional[tuple] = None
    path: Optional[Path] = None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_ensemble(body, path) -> SavedEnsemble:
    """Check the body of an ``ensemble.json`` (module docstring); :class:`DataError` names ``path``
    and the key that is wrong."""
    if not isinstance(body, dict):
        raise DataError(f"{path}: expected a JSON object with 'method' and 'weights', got {type(body).__name__}")
    for key in ("method", "weights"):
        if key not in body:
            raise DataError(f"{path}: key {key!r} missing; expected the file notebook 06 writes "
                            "(method, weights, optional scale)")
    method, weights = body["method"], body["weights"]
    if method not in ENSEMBLE_METHODS:
        raise DataError(f"{path}: key 'method' = {method!r}: expected one of {sorted(ENSEMBLE_METHODS)}")
    if (not isinstance(weights, dict) or not weights
            or not all(isinstance(k, str) and _number(v) and v >= 0 for k, v in weights.items())
            or sum(weights.values()) <= 0):
        raise DataError(f"{path}: key 'weights' = {weights!r}: expected {{model name: weight}} with finite "
                        "weights >= 0 and a positive sum")
    scale = body.get("scale")
    if scale is not None:
        if (not isinstance(scale, list) or len(scale) != NUM_SPECIES
                or not all(_number(f) and f > 0 for f in scale)):
            raise DataError(f"{path}: key 'scale': expected {NUM_SPECIES} per-species factors > 0, "
                            f"got {scale!r}")
        scale = tuple(float(f) for f in scale)
    return SavedEnsemble(method=method, weights={k: float(v) for k, v in weights.items()}, scale=scale,
                         path=Path(path))


def read_ensemble(folder) -> Optional[SavedEnsemble]:
    """``<folder>/ensemble.json`` checked (:func:`parse_ensemble`), or None when there is none."""
    path = Path(folder) / FILE_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from None
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    return parse_ensemble(body, path)


def write_ensemble(run_dir, fit, table=None) -> Path:
    """Write ``<run_dir>/ensemble.json`` (atomic) from a fitted ensemble
    (:class:`rfcxlib.ensemble.combine.EnsembleFit`) and, when given, its score table
    (:func:`rfcxlib.ensemble.combine.model_table`); returns the path."""
    path = Path(run_dir) / FILE_NAME
    body = fit.to_dict()
    parse_ensemble(body, path)  # what is written can be read
    if table is not None:
        body["table"] = table.reset_index().to_dict("records")
    return write_json_atomic(path, body)


@dataclass
class MemberCombination:
    """How ``rfcx predict`` combines the models it scores: ``weights`` ``(m,)`` summing to 1, a
    ``method`` of :data:`rfcxlib.inference.member_windows.WINDOW_METHODS`, per-species factors
    ``scale`` ``(24,)`` or None, and ``notes`` saying where this departs from ``ensemble.json``."""

    weights: np.ndarray
    method: str
    scale: Optional[np.ndarray] = None
    notes: list = field(default_factory=list)


def member_combination(saved: Optional[SavedEnsemble], names: Sequence[str]) -> MemberCombination:
    """``saved``'s weights and method for the models ``names`` (renormalised when some of its models
    are left out), else the plain mean of probabilities. ``"rank"`` ranks over recordings, which one
    recording cannot do: probabilities are averaged instead."""
    names = list(names)
    mean = np.full(len(names), 1.0 / len(names))
    if saved is None:
        return MemberCombination(mean, "prob")
    w = np.array([saved.weights.get(n, 0.0) for n in names], np.float64)
    if not set(names) <= set(saved.weights) or w.sum() <= 0:
        return MemberCombination(mean, "prob", notes=[
            f"ensemble.json weighs models {sorted(saved.weights)}, scoring {names}: plain mean instead"])
    notes, method, scale = [], saved.method, None
    if set(saved.weights) != set(names):
        notes.append(f"ensemble.json's weights of {names} renormalised (its other models are left out)")
    if method == "rank":
        notes.append("ensemble.json's method 'rank' ranks over recordings: probabilities averaged instead")
        method = "prob"
    if saved.scale is not None and any(abs(f - 1.0) > 1e-9 for f in saved.scale):
        scale = np.asarray(saved.scale, np.float64)
        notes.append("per-species factors of ensemble.json multiply the clip scores, not the window scores")
    return MemberCombination(w / w.sum(), method, scale, notes)
