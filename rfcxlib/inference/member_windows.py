"""How an ensemble scores one recording: its members' windows, a clip's scores and the window rows.

NumPy only: ``rfcx export`` copies this file beside ``run_exported.py``, so ``rfcx predict``
(:class:`rfcxlib.inference.predict.Predictor`) and an exported model on a device follow this one rule.

1. **Windows.** Each member scores windows of its own length ``window_s`` every ``hop_s`` seconds
   from 0 s, the last one ending at the recording's end, zero-padded past the end when the
   recording is shorter (:func:`window_starts`): the windows its training scored the test set on
   (a CNN: its crop and inference hop; a BirdNET head: 3 s every ``embed_hop_s``).
2. **A clip's scores.** Each member's maximum logit over its windows (a member that gives logits per
   trained fold, ``(n, folds, species)``: each fold's maximum, averaged over folds), combined with the
   ensemble's weights and method (:func:`combine`), times the per-species factors when the
   ensemble has them (:func:`clip_scores`). This is what notebook 06 computes from the members'
   ``test_scores.npz``, so a run's clip scores on its test set equal notebook 06's.
3. **Window rows** (detections, Raven tables): one row at every window centre of any member; each
   member gives the logits of its window whose centre is nearest (the earlier one on a tie; per-fold
   logits averaged over folds); the row
   spans the longest member window around that centre, cut to the recording
   (:func:`window_rows`). Combined as in 2, without the per-species factors. With members of one
   window length the rows are exactly the union of their windows.
"""
import numpy as np

WINDOW_METHODS = ("prob", "logit")  # ensemble methods that need one recording only ("rank" needs them all)


def window_starts(duration_s, window_s, hop_s):
    """Starts (s) of windows of ``window_s`` every ``hop_s`` over ``duration_s``; the last ends at
    ``duration_s`` (one window at 0 s when the recording is shorter than a window)."""
    last = max(float(duration_s) - float(window_s), 0.0)
    starts = np.arange(0.0, last + 1e-9, float(hop_s))
    if starts[-1] < last - 1e-6:
        starts = np.append(starts, last)
    return starts


def sigmoid(z):
    """``1 / (1 + exp(-z))`` in float64, ``z`` clipped to ``[-500, 500]`` so that ``exp`` stays finite
    (in float32 the clip changes nothing: the result is 0 below -104 either way)."""
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(z, np.float64), -500.0, 500.0)))


def mix(stacked, weights, method):
    """``sum_k weights[k] * stacked[k]`` over the first axis; a sigmoid after it for ``"logit"``.
    ``stacked`` holds logits for ``"logit"``, probabilities (or ranks) otherwise."""
    mixed = np.tensordot(np.asarray(weights, np.float64), np.asarray(stacked, np.float64), axes=1)
    return sigmoid(mixed) if method == "logit" else mixed


def combine(logits, weights, method):
    """Members' logits ``(members, n, species)`` ▶ combined scores ``(n, species)``: ``"logit"``
    mixes logits then applies a sigmoid, ``"prob"`` mixes probabilities."""
    if method not in WINDOW_METHODS:
        raise ValueError(f"combine method {method!r}: expected one of {WINDOW_METHODS}")
    z = np.asarray(logits, np.float64)
    return mix(z if method == "logit" else sigmoid(z), weights, method)


def _clip_logits(z):
    """A member's clip logits ``(species,)``: the maximum over windows ``(n, species)``, or per
    fold ``(n, folds, species)`` each fold's maximum, averaged."""
    top = np.asarray(z, np.float64).max(axis=0)
    return top.mean(axis=0) if top.ndim == 2 else top


def _window_logits(z):
    """Window logits ``(n, species)``; per-fold logits ``(n, folds, species)`` averaged over folds."""
    z = np.asarray(z, np.float64)
    return z.mean(axis=1) if z.ndim == 3 else z


def clip_scores(member_logits, weights, method, scale=None):
    """A recording's scores ``(species,)`` from each member's window logits ``[(n_k, species)]`` or
    per fold ``[(n_k, folds, species)]``."""
    top = np.stack([_clip_logits(z) for z in member_logits])[:, None, :]
    scores = combine(top, weights, method)[0]
    return scores if scale is None else scores * np.asarray(scale, np.float64)


def _nearest(centres, targets):
    """Index into sorted ``centres`` of the one nearest each of ``targets`` (the earlier on a tie)."""
    hi = np.clip(np.searchsorted(centres, targets), 0, len(centres) - 1)
    lo = np.clip(hi - 1, 0, len(centres) - 1)
    return np.where(np.abs(targets - centres[lo]) <= np.abs(centres[hi] - targets), lo, hi)


def window_rows(member_starts, member_window_s, member_logits, weights, method, duration_s):
    """``(start_s, end_s, scores (rows, species))``: the rows of rule 3 (module docstring).

    ``member_starts[k]`` are member ``k``'s window starts (:func:`window_starts`),
    ``member_window_s[k]`` its window length and ``member_logits[k]`` its ``(n_k, species)`` logits
    (or ``(n_k, folds, species)``).
    """
    centres = [np.round(np.asarray(s, np.float64) + w / 2.0, 6) for s, w in zip(member_starts, member_window_s)]
    rows = np.unique(np.concatenate(centres))
    picked = np.stack([_window_logits(z)[_nearest(c, rows)] for c, z in zip(centres, member_logits)])
    half = max(member_window_s) / 2.0
    start = np.maximum(rows - half, 0.0)
    end = np.minimum(rows + half, float(duration_s))
    return start, end, combine(picked, weights, method)
