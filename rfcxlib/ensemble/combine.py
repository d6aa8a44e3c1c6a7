"""Ensembling trained models' clip scores: weighted means of probabilities or logits, rank
averaging, weights and per-species rescaling fitted on out-of-fold (OOF) scores, and a held-out
guard that keeps the plain mean when fitting does not help.

Inputs are the models of a run, loaded and aligned by :mod:`rfcxlib.ensemble.model_scores`; the fitted
ensemble is saved as ``ensemble.json`` by :mod:`rfcxlib.ensemble.ensemble_file`.

Only the order of the scores inside one recording matters to LWLRAP, so weights can be fitted
on OOF scores of the partially labelled training recordings (masked LWLRAP) and applied to the
test scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from rfcxlib import NUM_SPECIES
from rfcxlib.inference import member_windows
from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.ensemble.model_scores import Stack, check_method


def _lwlrap(y_true, y_score, mask=None) -> float:
    from rfcxlib.metrics import lwlrap

    return float(lwlrap(y_true, y_score, mask=mask))


# ---------------------------------------------------------------------------------------------
# Combining


def rank_scores(scores) -> np.ndarray:
    """Rank every species column over recordings, scaled to ``[0, 1]`` (ties share the mean rank).

    ``scores`` : np.ndarray [shape=(..., n, 24)] ▶ the same shape.
    """
    from scipy.stats import rankdata

    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[-2]
    return (rankdata(scores, axis=-2, method="average") - 1.0) / max(n - 1, 1)


def normalised_weights(weights, m: int) -> np.ndarray:
    """Weights as a float array summing to 1 (``None``: equal weights)."""
    if weights is None:
        return np.full(m, 1.0 / m)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != m or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ParameterError(f"weights {np.round(w, 4).tolist()}: expected {m} finite values "
                             f">= 0 with a positive sum (one per model)")
    return w / w.sum()


def combine(stacked, weights=None, *, method: str = "prob") -> np.ndarray:
    """Combine ``m`` models' scores.

    Parameters
    ----------
    stacked : np.ndarray [shape=(m, n, 24)]
        Probabilities (``"prob"``, ``"rank"``) or logits (``"logit"``), see :meth:`Stack.inputs`.
    weights : np.ndarray [shape=(m,)], optional
        Non-negative model weights (normalised to sum 1); ``None``: the plain mean.
    method : {"prob", "logit", "rank"}

    Returns
    -------
    np.ndarray [shape=(n, 24)]: scores in ``[0, 1]``.
    """
    check_method(method)
    stacked = np.asarray(stacked, dtype=np.float64)
    if stacked.ndim != 3 or stacked.shape[-1] != NUM_SPECIES:
        raise ParameterError(f"stacked scores of shape {stacked.shape}: expected "
                             f"(models, n, {NUM_SPECIES})")
    w = normalised_weights(weights, stacked.shape[0])
    if method == "rank":
        stacked = rank_scores(stacked)
    return member_windows.mix(stacked, w, method)


# ---------------------------------------------------------------------------------------------
# Fitting


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


def fit_weights(stacked, y, mask, *, method: str = "prob", n_restarts: int = 2, seed: int = 0,
                max_evals: int = 200) -> np.ndarray:
    """Model weights that maximise the masked LWLRAP of ``combine(stacked, w, method=method)``.

    LWLRAP sees the weights only through the order of the scores inside each recording, so it
    is piecewise constant in them: its gradient is zero almost everywhere and a gradient method
    would not move. The weights are written ``w = softmax(theta)``, which keeps them on the
    simplex without constraints, and ``theta`` is searched with Nelder-Mead, which compares
    function values at finite steps (a simplex of unit steps in ``theta``, about a factor
    e between weights) and needs no gradient. A plateau can stop a simplex early, so the search
    starts from the plain mean and from ``n_restarts`` seeded random points and keeps the best;
    a tie keeps the plain mean.

    Parameters
    ----------
    stacked : np.ndarray [shape=(m, n, 24)] (logits for ``"logit"``, else probabilities)
    y, mask : np.ndarray [shape=(n, 24)] known labels (``mask = 1`` where known)

    Returns
    -------
    np.ndarray [shape=(m,)]: non-negative weights summing to 1.
    """
    from scipy.optimize import minimize

    check_method(method)
    stacked = np.asarray(stacked, dtype=np.float64)
    m = stacked.shape[0]
    if m == 1:
        return np.ones(1)
    if method == "rank":
        stacked = rank_scores(stacked)
    # a sigmoid after the logit mean is monotone: it cannot change LWLRAP, so it is skipped here

    def loss(theta):
        return -_lwlrap(y, np.tensordot(_softmax(theta), stacked, axes=1), mask)

    rng = np.random.default_rng(seed)
    best_theta = np.zeros(m)
    best = loss(best_theta)
    for x0 in [np.zeros(m)] + [rng.normal(0.0, 1.0, m) for _ in range(n_restarts)]:
        simplex = np.vstack([x0, x0 + np.eye(m)])
        res = minimize(loss, x0, method="Nelder-Mead",
                       options={"initial_simplex": simplex, "maxfev": max_evals,
                                "xatol": 1e-2, "fatol": 1e-6})
        if res.fun < best - 1e-12:
            best, best_theta = float(res.fun), res.x
    return _softmax(best_theta)


def fit_rescale(scores, y, mask, *, l2: float = 0.01, max_factor: float = 4.0) -> np.ndarray:
    """Per-species multipliers ``a`` (used as ``scores * a``) fitted on known labels.

    Multiplying a species' column moves that species up or down inside every recording — the
    class-prior post-processing that gave several RFCx teams +0.01-0.02. The 24 factors are
    fitted as ``b = log a`` by L-BFGS-B on a smooth surrogate of LWLRAP: the logistic ranking
    loss ``log(1 + exp(-(log s_pos + b_pos - log s_neg - b_neg)))`` over every (known positive,
    known negative) pair of the same recording, weighted so that each positive label counts
    once (as in label-weighted LRAP), plus ``l2 / 2 * |b|^2`` pulling the factors towards 1.
    The surrogate is convex in ``b``, so the fit is unique and fast; ``b`` stays within
    ``±log(max_factor)``.

    Parameters
    ----------
    scores : np.ndarray [shape=(n, 24)] positive scores (probabilities or ranks)
    y, mask : np.ndarray [shape=(n, 24)]

    Returns
    -------
    np.ndarray [shape=(24,)]: factors in ``[1 / max_factor, max_factor]`` (1: unchanged).
    """
    from scipy.optimize import minimize
    from scipy.special import expit

    if l2 < 0 or max_factor < 1:
        raise ParameterError(f"l2 = {l2}, max_factor = {max_factor}: expected l2 >= 0 and "
                             f"max_factor >= 1")
    pos = (np.asarray(y) * np.asarray(mask) > 0).astype(np.float64)
    neg = ((np.asarray(y) <= 0) & (np.asarray(mask) > 0)).astype(np.float64)
    pairs = pos[:, :, None] * neg[:, None, :] / np.maximum(neg.sum(1), 1.0)[:, None, None]
    rows = pairs.sum(axis=(1, 2)) > 0
    if not rows.any():
        return np.ones(NUM_SPECIES)
    pairs = pairs[rows]
    total = pairs.sum()
    log_s = np.log(np.clip(np.asarray(scores, dtype=np.float64)[rows], 1e-7, None))
    diff = log_s[:, :, None] - log_s[:, None, :]

    def objective(b):
        d = diff + b[:, None] - b[None, :]
        value = (pairs * np.logaddexp(0.0, -d)).sum() / total + 0.5 * l2 * b @ b
        g = -pairs * expit(-d) / total
        return value, g.sum(axis=(0, 2)) - g.sum(axis=(0, 1)) + l2 * b

    bound = float(np.log(max_factor))
    res = minimize(objective, np.zeros(NUM_SPECIES), jac=True, method="L-BFGS-B",
                   bounds=[(-bound, bound)] * NUM_SPECIES)
    return np.exp(res.x)


# ---------------------------------------------------------------------------------------------
# The ensemble and its held-out guard

@dataclass
class EnsembleFit:
    """A fitted ensemble: ``scores = combine(inputs, weights, method) * scale``.

    ``choice`` is the kind kept by the guard (``"mean"``, ``"weighted"`` or
    ``"weighted+rescaled"``); ``holdout`` holds each kind's LWLRAP on held-out splits (fitted on
    the other splits, pooled); ``oof_lwlrap`` is the kept ensemble's in-sample OOF LWLRAP.
    """

    names: list
    method: str
    choice: str
    weights: np.ndarray
    scale: np.ndarray
    holdout: dict
    split_by: str
    n_splits: int
    oof_lwlrap: float
    labels: str = "known"

    def predict(self, stack: Stack, split: str = "test") -> np.ndarray:
        """Ensemble scores ``(n, 24)`` of the ``"oof"`` or ``"test"`` recordings of ``stack``."""
        if list(stack.names) != list(self.names):
            raise ParameterError(f"stack has models {stack.names}, the fit was made on "
                                 f"{self.names}")
        return combine(stack.inputs(self.method, split), self.weights,
                       method=self.method) * self.scale

    def to_dict(self) -> dict:
        return {"method": self.method, "choice": self.choice,
                "weights": dict(zip(self.names, np.round(self.weights, 6).tolist())),
                "scale": np.round(self.scale, 6).tolist(), "holdout_lwlrap": self.holdout,
                "split_by": self.split_by, "n_splits": self.n_splits,
                "oof_lwlrap": self.oof_lwlrap, "labels": self.labels}


def holdout_splits(stack: Stack, *, n_splits: int = 5, seed: int = 0) -> tuple[list, str]:
    """Held-out row masks: the training folds when the OOF rows span two or more, else
    ``n_splits`` seeded random groups of recordings. Returns ``(masks, "folds" | "random")``."""
    folds = np.unique(stack.fold)
    if len(folds) >= 2:
        return [stack.fold == f for f in folds], "folds"
    if n_splits < 2:
        raise ParameterError(f"n_splits = {n_splits}: expected >= 2")
    n = len(stack.oof_ids)
    groups = np.random.default_rng(seed).permutation(n) % min(n_splits, n)
    return [groups == g for g in np.unique(groups)], "random"


def _fit_kinds(kinds, X, y, mask, method: str, seed: int, l2: float) -> dict:
    """``{kind: (weights, scale)}`` fitted on the given rows (the weight search runs once)."""
    out = {"mean": (normalised_weights(None, X.shape[0]), np.ones(NUM_SPECIES))}
    if any(k != "mean" for k in kinds):
        weights = fit_weights(X, y, mask, method=method, seed=seed)
        out["weighted"] = (weights, np.ones(NUM_SPECIES))
        if "weighted+rescaled" in kinds:
            out["weighted+rescaled"] = (weights, fit_rescale(combine(X, weights, method=method),
                                                             y, mask, l2=l2))
    return {k: out[k] for k in kinds}


#: what the weights, factors and guard are fitted on: the known cells only, or every cell with the
#: unknown ones read as absent (known-label LWLRAP reads 0.97-1.00 for every model on data labelled
#: as sparsely as RFCx, so it cannot tell them apart; the other ranks them as the truth does)
GUARD_LABELS = ("known", "all")


def fit_ensemble(stack: Stack, *, method: str = "prob", rescale: bool = True,
                 guard: bool = True, n_splits: int = 5, seed: int = 0, min_gain: float = 0.0,
                 l2: float = 0.01, labels: str = "known") -> EnsembleFit:
    """Fit model weights (and per-species factors) on OOF scores, keeping them only when they
    beat the plain mean on held-out data.

    The guard fits each kind on all splits but one, scores the held-out split, pools the
    held-out scores over splits and computes their masked LWLRAP. A fitted kind is kept only
    when it beats the simpler kinds by more than ``min_gain``; the kept kind is then refitted
    on every OOF row. ``guard=False`` keeps the most complex kind without checking.
    ``labels`` (:data:`GUARD_LABELS`): ``"known"`` fits and compares on the known cells,
    ``"all"`` on every cell with the unknown ones read as absent.
    """
    check_method(method)
    if labels not in GUARD_LABELS:
        raise unknown_choice("guard_labels", labels, GUARD_LABELS)
    y, mask = (stack.y, stack.mask) if labels == "known" else (stack.y * stack.mask, np.ones_like(stack.mask))
    X = stack.inputs(method, "oof")
    kinds = ["mean"] + (["weighted"] if X.shape[0] > 1 else [])
    kinds += ["weighted+rescaled"] if rescale else []
    holdout: dict = {}
    splits, split_by = holdout_splits(stack, n_splits=n_splits, seed=seed)
    if guard and len(kinds) > 1:
        pooled = {k: np.zeros(y.shape) for k in kinds}
        for held in splits:
            train = ~held
            if not (y[train] * mask[train]).any():
                raise DataError("a held-out split leaves no known positive label to fit on")
            fitted = _fit_kinds(kinds, X[:, train], y[train], mask[train], method,
                                seed, l2)
            for k, (w, a) in fitted.items():
                pooled[k][held] = combine(X[:, held], w, method=method) * a
        holdout = {k: _lwlrap(y, pooled[k], mask) for k in kinds}
        choice = "mean"
        for k in kinds[1:]:
            if holdout[k] > holdout[choice] + min_gain:
                choice = k
    else:
        choice = kinds[-1]
    weights, scale = _fit_kinds([choice], X, y, mask, method, seed, l2)[choice]
    oof = _lwlrap(y, combine(X, weights, method=method) * scale, mask)
    return EnsembleFit(names=list(stack.names), method=method, choice=choice, weights=weights,
                       scale=scale, holdout=holdout, split_by=split_by, n_splits=len(splits),
                       oof_lwlrap=oof, labels=labels)


def model_table(stack: Stack, truth=None, fit: Optional[EnsembleFit] = None, *, oof_truth=None):
    """One row per model (and ``mean`` / ``ensemble`` rows): OOF LWLRAP on the shared OOF
    recordings three ways and test LWLRAP when ``truth`` ``(n_test, 24)`` is given (else NaN).

    ``oof_lwlrap``: known labels only (a known positive ranked against the species known absent:
    what a user of real data sees, optimistic when most cells are unknown); ``oof_all_lwlrap``:
    known positives ranked against every other species, unknown ones read as absent (pessimistic:
    an unlabelled call ranked above a labelled one counts as an error); ``oof_truth_lwlrap``:
    against the complete truth of the training recordings ``oof_truth`` ``(n_oof, 24)``, in
    ``stack.oof_ids`` order (synthetic data only, else NaN)."""
    import pandas as pd

    rows = []
    entries = [(n, stack.oof_scores[i], stack.test_scores[i]) for i, n in enumerate(stack.names)]
    if len(stack.names) > 1:
        entries.append(("mean", combine(stack.inputs("prob", "oof"), method="prob"),
                        combine(stack.inputs("prob", "test"), method="prob")))
    if fit is not None:
        entries.append(("ensemble", fit.predict(stack, "oof"), fit.predict(stack, "test")))
    every = np.ones_like(stack.mask)
    for name, oof, test in entries:
        rows.append({"model": name, "oof_lwlrap": _lwlrap(stack.y, oof, stack.mask),
                     "oof_all_lwlrap": _lwlrap(stack.y * stack.mask, oof, every),
                     "oof_truth_lwlrap": _lwlrap(oof_truth, oof) if oof_truth is not None else np.nan,
                     "test_lwlrap": _lwlrap(truth, test) if truth is not None else np.nan})
    return pd.DataFrame(rows).set_index("model")


def species_gain(stack: Stack, fit: EnsembleFit, truth=None):
    """Per-species LWLRAP of the best single model and of the ensemble, on the test set when
    ``truth`` is given, else on OOF known labels. The best single model is the one with the
    highest overall LWLRAP on the same data. Returns a DataFrame indexed by species."""
    import pandas as pd

    from rfcxlib.metrics import per_class_lwlrap

    split, y, mask = ("test", truth, None) if truth is not None else ("oof", stack.y, stack.mask)
    singles = getattr(stack, f"{split}_scores")
    best = int(np.nanargmax([_lwlrap(y, s, mask) for s in singles]))
    single, weight = per_class_lwlrap(y, singles[best], mask)
    ens, _ = per_class_lwlrap(y, fit.predict(stack, split), mask)
    return pd.DataFrame({"best_single": single, "ensemble": ens, "gain": ens - single,
                         "weight": weight, "model": stack.names[best], "split": split},
                        index=pd.RangeIndex(NUM_SPECIES, name="species"))


def align_truth(stack: Stack, truth, truth_ids) -> Optional[np.ndarray]:
    """The test ground truth ``(n_test, 24)`` in ``stack.test_ids`` order (None when ``truth`` is
    None). Raises :class:`DataError` when the models scored other test recordings."""
    if truth is None:
        return None
    row = {str(r): i for i, r in enumerate(truth_ids)}
    missing = [r for r in stack.test_ids if r not in row]
    if missing or len(row) != len(stack.test_ids):
        raise DataError(f"the models scored {len(stack.test_ids)} test recordings, the data set "
                        f"has {len(row)} ({len(missing)} of the models' not in it, e.g. "
                        f"{missing[:2]}): pass the data_dir / profile the models were trained on")
    return np.asarray(truth, dtype=np.float64)[[row[r] for r in stack.test_ids]]


def ensemble_metrics(table, fit: EnsembleFit) -> dict:
    """The numbers ``metrics.json`` keeps for the ensemble (test figures only when known)."""
    singles = table.drop(index=[n for n in ("mean", "ensemble") if n in table.index])
    out = {"n_models": len(fit.names), "method": fit.method, "choice": fit.choice,
           "weights": dict(zip(fit.names, np.round(fit.weights, 6).tolist())),
           "guard_heldout": fit.holdout,
           "oof_lwlrap": float(table.loc["ensemble", "oof_lwlrap"]),
           "oof_all_lwlrap": float(table.loc["ensemble", "oof_all_lwlrap"]),
           "best_single_oof_lwlrap": float(singles["oof_lwlrap"].max()),
           "best_single_oof_model": str(singles["oof_lwlrap"].idxmax())}
    if np.isfinite(table["test_lwlrap"]).all():
        out.update({"test_lwlrap": float(table.loc["ensemble", "test_lwlrap"]),
                    "best_single_test_lwlrap": float(singles["test_lwlrap"].max()),
                    "best_single_test_model": str(singles["test_lwlrap"].idxmax())})
        out["gain_over_best_single"] = out["test_lwlrap"] - out["best_single_test_lwlrap"]
        if "mean" in table.index:
            out["mean_test_lwlrap"] = float(table.loc["mean", "test_lwlrap"])
    if "oof_truth_lwlrap" in table and np.isfinite(table.loc["ensemble", "oof_truth_lwlrap"]):
        out["oof_truth_lwlrap"] = float(table.loc["ensemble", "oof_truth_lwlrap"])
    return out
