"""LWLRAP, the competition's metric (label-weighted label-ranking average precision), in NumPy and
as a Keras metric.

For every sample ``i`` and every label ``j`` present in it, the precision of ``j`` is the share of
present labels among the labels scored at least as high as ``j`` in that sample. LWLRAP is the
mean of these precisions over all (sample, present label) pairs, so every present label weighs
the same and samples without a present label add nothing. 1 is best.

Ties: a label tied with ``j`` counts as ranked above ``j`` (the pessimistic convention of
scikit-learn's ``label_ranking_average_precision_score``; with ``sample_weight = y.sum(1)`` the two
agree exactly). Ties are rare with logits; sigmoid probabilities saturate to exactly 1.0 in float32
above a logit of about 17, so pass logits where you have them (the ranking is the same).

Partial labels: with ``mask`` (1 = label known), unknown cells are neither positives nor ranked,
so LWLRAP on training data only compares a known-present species with known-absent ones.

Because the ranking is within a sample, LWLRAP over an epoch is exactly the ratio of two running
sums (sum of precisions, number of present labels): the Keras metric keeps those two numbers.
Importing this module does not import TensorFlow; :func:`keras_lwlrap` does, when called.
"""
from __future__ import annotations

import functools

import numpy as np

from rfcxlib.errors import ParameterError

_CHUNK = 2048  # samples per block of the (n, C, C) comparison


def _check(y_true, y_score, mask):
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(y_score, dtype=np.float64)
    if y.ndim != 2 or s.shape != y.shape:
        raise ParameterError(f"y_true {y.shape} and y_score {s.shape}: expected two arrays of the "
                             "same shape (n_samples, n_classes)")
    if not np.isin(y, (0.0, 1.0)).all():
        bad = np.unique(y[~np.isin(y, (0.0, 1.0))])[:5]
        raise ParameterError(f"y_true has values {bad}: expected 0 or 1")
    if not np.isfinite(s).all():
        raise ParameterError(f"y_score has {int((~np.isfinite(s)).sum())} NaN or infinite values: "
                             "expected finite scores")
    m = np.ones_like(y) if mask is None else np.asarray(mask, dtype=np.float64)
    if m.shape != y.shape:
        raise ParameterError(f"mask {m.shape}: expected the shape of y_true {y.shape}")
    if not np.isin(m, (0.0, 1.0)).all():
        raise ParameterError("mask has values other than 0 and 1: expected 1 (known) or 0 (unknown)")
    return y * m, s, m


def _precisions(y, s, m) -> np.ndarray:
    """``(n, C)`` precision of each present (known) label, 0 elsewhere."""
    out = np.zeros_like(y)
    for a in range(0, len(y), _CHUNK):
        yb, sb, mb = y[a:a + _CHUNK], s[a:a + _CHUNK], m[a:a + _CHUNK]
        above = sb[:, None, :] >= sb[:, :, None]  # [i, j, k]: label k scored at least as high as j
        rank = np.einsum("ijk,ik->ij", above, mb)
        hits = np.einsum("ijk,ik->ij", above, yb)
        out[a:a + _CHUNK] = np.where(yb > 0, hits / np.maximum(rank, 1), 0.0)
    return out


def per_class_lwlrap(y_true, y_score, mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Per-class LWLRAP and class weights.

    Parameters
    ----------
    y_true : np.ndarray [shape=(n, C)]
        1 where the class is present, 0 where absent.
    y_score : np.ndarray [shape=(n, C)]
        Scores (logits or probabilities); higher means more likely present.
    mask : np.ndarray [shape=(n, C)], optional
        1 where the label is known, 0 where unknown (excluded from positives and from ranking).

    Returns
    -------
    scores : np.ndarray [shape=(C,)]
        Mean precision over the class's present labels; NaN for a class never present.
    weights : np.ndarray [shape=(C,)]
        The class's share of all present labels (sums to 1). ``lwlrap = nansum(scores * weights)``.
    """
    y, s, m = _check(y_true, y_score, mask)
    prec = _precisions(y, s, m)
    counts = y.sum(0)
    total = counts.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts > 0, prec.sum(0) / counts, np.nan)
    weights = counts / total if total > 0 else np.zeros_like(counts)
    return scores, weights


def lwlrap(y_true, y_score, mask=None) -> float:
    """Label-weighted label-ranking average precision (see the module docstring).

    Parameters as in :func:`per_class_lwlrap`. Returns a float in [0, 1]; NaN when no label is
    present at all.
    """
    y, s, m = _check(y_true, y_score, mask)
    total = y.sum()
    return float(_precisions(y, s, m).sum() / total) if total > 0 else float("nan")


# ---------------------------------------------------------------- Keras
@functools.lru_cache(maxsize=None)
def _metric_class():
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="rfcxlib")
    class LWLRAP(keras.metrics.Metric):
        """LWLRAP over everything seen since the last reset (a whole validation epoch).

        ``y_true`` is the packed target ``(batch, 2 * C) = [y | mask]`` (``losses.pack_targets``),
        ``y_pred`` the logits ``(batch, C)``. Unknown cells (mask 0) are ignored; ``y >= 0.5``
        counts as present (so mixed-up targets are read sensibly).
        """

        def __init__(self, name="lwlrap", dtype=None, **kwargs):
            super().__init__(name=name, dtype=dtype, **kwargs)
            self.precision_sum = self.add_variable(shape=(), initializer="zeros", name="precision_sum")
            self.positives = self.add_variable(shape=(), initializer="zeros", name="positives")

        def update_state(self, y_true, y_pred, sample_weight=None):
            y_true = ops.cast(y_true, "float32")
            n = ops.shape(y_pred)[-1]
            y, mask = y_true[:, :n], y_true[:, n:]
            y = ops.cast(y >= 0.5, "float32") * mask
            s = ops.cast(y_pred, "float32")
            above = ops.cast(s[:, None, :] >= s[:, :, None], "float32")
            rank = ops.sum(above * mask[:, None, :], axis=-1)
            hits = ops.sum(above * y[:, None, :], axis=-1)
            prec = ops.where(y > 0, hits / ops.maximum(rank, 1.0), 0.0)
            self.precision_sum.assign_add(ops.sum(prec))
            self.positives.assign_add(ops.sum(y))

        def result(self):
            return ops.divide_no_nan(self.precision_sum, self.positives)

        def reset_state(self):
            self.precision_sum.assign(0.0)
            self.positives.assign(0.0)

    return LWLRAP


def keras_lwlrap(name: str = "lwlrap"):
    """A Keras metric computing LWLRAP over a whole epoch from packed targets ``[y | mask]`` and
    logits. Use it in ``model.compile(metrics=[keras_lwlrap()])``; Keras logs ``val_lwlrap``."""
    return _metric_class()(name=name)
