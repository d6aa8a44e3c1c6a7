"""Trained models' clip scores: loading a model folder's score files, gathering the models of
a run, and aligning several models by recording (:class:`Stack`), ready for :mod:`rfcxlib.ensemble.combine`.

Inputs are the files training writes under ``<run>/models/<name>/`` (docs/ARCHITECTURE.md):
``oof.npz`` (``recording_ids, fold, logits, scores, y, mask``), ``test_scores.npz``
(``recording_ids, logits, scores``), ``metrics.json`` and ``config.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from rfcxlib import NUM_SPECIES
from rfcxlib.errors import DataError, unknown_choice

ENSEMBLE_METHODS = {  # how notebook 06 may combine models' clip scores
    "prob": "weighted mean of sigmoid probabilities",
    "logit": "weighted mean of logits, then a sigmoid",
    "rank": "weighted mean of per-species ranks (each column ranked over recordings, in [0, 1])",
}
OOF_KEYS = ("recording_ids", "fold", "logits", "scores", "y", "mask")
TEST_KEYS = ("recording_ids", "logits", "scores")


def check_method(method: str) -> None:
    if method not in ENSEMBLE_METHODS:
        raise unknown_choice("ensemble method", method, ENSEMBLE_METHODS)


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class ModelScores:
    """One trained model's OOF and test scores (arrays ``(n, 24)``)."""

    name: str
    path: Optional[Path]
    oof_ids: np.ndarray
    fold: np.ndarray
    oof_logits: np.ndarray
    oof_scores: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    test_ids: np.ndarray
    test_logits: np.ndarray
    test_scores: np.ndarray
    metrics: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)


def _load_npz(path: Path, keys: Sequence[str]) -> dict:
    if not path.is_file():
        raise DataError(f"{str(path)!r} does not exist: expected the scores training writes "
                        f"(run notebooks/04_training.ipynb for this model)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in keys if k not in npz.files]
            if missing:
                raise DataError(f"{str(path)!r} lacks {missing}; it has {sorted(npz.files)}")
            out = {k: npz[k] for k in keys}
    except (OSError, ValueError) as exc:
        hint = (" (save recording_ids as a str array, e.g. np.asarray(ids, dtype=str))"
                if "allow_pickle" in str(exc) else "")
        raise DataError(f"{str(path)!r} is not a readable .npz file: {exc}{hint}") from None
    n = len(out["recording_ids"])
    for k in keys:
        if k in ("logits", "scores", "y", "mask") and out[k].shape != (n, NUM_SPECIES):
            raise DataError(f"{str(path)!r}: {k!r} has shape {out[k].shape}, expected "
                            f"({n}, {NUM_SPECIES}) to match its {n} recording_ids")
        if k in ("logits", "scores") and not np.isfinite(out[k]).all():
            raise DataError(f"{str(path)!r}: {k!r} holds NaN or infinite values")
    out["recording_ids"] = out["recording_ids"].astype(str)
    return out


def load_model_scores(model_dir, name: Optional[str] = None) -> ModelScores:
    """Read one model folder (``oof.npz``, ``test_scores.npz``, optional JSON files)."""
    model_dir = Path(model_dir)
    oof = _load_npz(model_dir / "oof.npz", OOF_KEYS)
    test = _load_npz(model_dir / "test_scores.npz", TEST_KEYS)
    extra = {}
    for key in ("metrics", "config"):
        path = model_dir / f"{key}.json"
        extra[key] = json.loads(path.read_text()) if path.is_file() else {}
    return ModelScores(
        name=name or model_dir.name, path=model_dir, oof_ids=oof["recording_ids"],
        fold=oof["fold"].astype(np.int64), oof_logits=oof["logits"].astype(np.float64),
        oof_scores=oof["scores"].astype(np.float64), y=oof["y"].astype(np.float64),
        mask=oof["mask"].astype(np.float64), test_ids=test["recording_ids"],
        test_logits=test["logits"].astype(np.float64),
        test_scores=test["scores"].astype(np.float64), **extra)


def _model_dirs(folder: Path) -> list[Path]:
    if (folder / "oof.npz").is_file():
        return [folder]
    models = folder / "models"
    if models.is_dir():
        return sorted(p for p in models.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / "oof.npz").is_file())
    return []


def gather_models(run_dir, *, extra: Sequence = (), names: Sequence[str] = ()) -> list[ModelScores]:
    """Load every trained model of ``run_dir`` (``<run_dir>/models/*/``) and of ``extra`` (run
    folders or model folders). Models of other runs are named ``<run>/<model>``.

    Parameters
    ----------
    names : keep only these models (by name); empty keeps all.

    Raises
    ------
    DataError
        When no trained model is found, naming the folders searched.
    """
    run_dir = Path(run_dir)
    found: list[tuple[str, Path]] = [(p.name, p) for p in _model_dirs(run_dir)]
    for folder in map(Path, extra):
        if not folder.is_dir():
            raise DataError(f"extra model folder {str(folder)!r} does not exist")
        dirs = _model_dirs(folder)
        if not dirs:
            raise DataError(f"{str(folder)!r} holds no trained model (no oof.npz in it or in "
                            f"its models/*/ folders)")
        for p in dirs:
            found.append((p.name if p == folder else f"{folder.name}/{p.name}", p))
    if not found:
        raise DataError(f"no trained models under {str(run_dir / 'models')!r}: train some with "
                        f"notebooks/04_training.ipynb (-p run_dir {run_dir}) or pass extra_run_dirs")
    if names:
        available = [n for n, _ in found]
        for n in names:
            if n not in available:
                raise unknown_choice("model", n, available)
        found = [(n, p) for n, p in found if n in names]
    seen = set()
    for n, _ in found:
        if n in seen:
            raise DataError(f"two model folders are both named {n!r}")
        seen.add(n)
    return [load_model_scores(p, name=n) for n, p in found]


# ---------------------------------------------------------------------------------------------
# Aligning


@dataclass
class Stack:
    """Scores of ``m`` models aligned by recording: OOF ``(m, n, 24)``, test ``(m, n_test, 24)``."""

    names: list
    oof_ids: np.ndarray
    fold: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    oof_scores: np.ndarray
    oof_logits: np.ndarray
    test_ids: np.ndarray
    test_scores: np.ndarray
    test_logits: np.ndarray

    def inputs(self, method: str, split: str) -> np.ndarray:
        """The array ``method`` combines: logits for ``"logit"``, probabilities otherwise."""
        check_method(method)
        if split not in ("oof", "test"):
            raise unknown_choice("split", split, ("oof", "test"))
        return getattr(self, f"{split}_{'logits' if method == 'logit' else 'scores'}")


def stack_models(models: Sequence[ModelScores]) -> Stack:
    """Align models' scores by recording id.

    OOF rows are the recordings every model scored out of fold (in the first model's order);
    test rows must be the same recordings for every model (first model's order).

    Raises
    ------
    DataError
        When the models share no OOF recording, disagree on the known labels of a recording, or
        scored different test recordings.
    """
    if not models:
        raise DataError("no models to ensemble")
    first = models[0]
    common = set(first.oof_ids)
    for m in models[1:]:
        common &= set(m.oof_ids)
    keep = np.array([r in common for r in first.oof_ids])
    if not keep.any():
        raise DataError(f"models {[m.name for m in models]} share no out-of-fold recording: "
                        f"train them on the same data set and folds")
    oof_ids = first.oof_ids[keep]
    test_set = set(first.test_ids)
    oof_s, oof_l, test_s, test_l = [], [], [], []
    for m in models:
        row = {r: i for i, r in enumerate(m.oof_ids)}
        idx = np.array([row[r] for r in oof_ids])
        labelled = (m.y[idx] * m.mask[idx], m.mask[idx])
        if not (np.array_equal(labelled[0], first.y[keep] * first.mask[keep])
                and np.array_equal(labelled[1], first.mask[keep])):
            raise DataError(f"model {m.name!r} has other known labels than {first.name!r} for the "
                            f"same recordings: were they trained on different data sets?")
        if set(m.test_ids) != test_set or len(m.test_ids) != len(first.test_ids):
            raise DataError(f"model {m.name!r} scored other test recordings than {first.name!r} "
                            f"({len(m.test_ids)} vs {len(first.test_ids)})")
        trow = {r: i for i, r in enumerate(m.test_ids)}
        tidx = np.array([trow[r] for r in first.test_ids], dtype=np.int64)
        oof_s.append(m.oof_scores[idx])
        oof_l.append(m.oof_logits[idx])
        test_s.append(m.test_scores[tidx])
        test_l.append(m.test_logits[tidx])
    return Stack(names=[m.name for m in models], oof_ids=oof_ids, fold=first.fold[keep],
                 y=first.y[keep], mask=first.mask[keep], oof_scores=np.stack(oof_s),
                 oof_logits=np.stack(oof_l), test_ids=first.test_ids,
                 test_scores=np.stack(test_s), test_logits=np.stack(test_l))
