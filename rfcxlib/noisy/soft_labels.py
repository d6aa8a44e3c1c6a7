"""Soft pseudo-label rounds, the model-free part: row draws, window labels, soft targets (NumPy).

The 2nd place's recipe (RFCX_FACTS.md) trains, after a base model, ``rounds`` new models on every
window of a fold's training recordings. Before a round each TP and FP row of those recordings is
kept with probability ``row_keep`` (:func:`sample_rows`, a fresh seeded draw per round, against
confirmation bias); a cell that a kept row labels keeps its hard target (TP 1, FP 0, weight 1),
every other cell takes the previous model's probability as a soft target (:func:`soft_targets`).
:func:`round_targets` puts the three together for any model's window logits: the embedding heads'
(:mod:`rfcxlib.embeddings.head_methods`) and the CNNs' (:mod:`rfcxlib.noisy.soft_pseudo`) use it
alike. The settings are :class:`rfcxlib.embeddings.head_config.SoftPseudoConfig`.

Notebook 04 trains a CNN with its loss (``cnn_method="loss"``) or by these rounds
(``"soft_pseudo"``): :data:`CNN_TRAINING` and :func:`cnn_method_from_params`, checked here without
TensorFlow so that ``rfcx run`` refuses a bad value before anything runs.

Tests: tests/test_soft_pseudo_cnn.py
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import pandas as pd

from rfcxlib.config import check, check_choice
from rfcxlib.embeddings.head_config import SoftPseudoConfig, soft_from_params
from rfcxlib.errors import ParameterError
from rfcxlib.inference.member_windows import sigmoid

#: how notebook 04 trains a CNN (its ``cnn_method``): with its ``loss``, or by soft pseudo-label rounds
CNN_TRAINING = ("loss", "soft_pseudo")


def cnn_method_from_params(params: dict) -> tuple[str, SoftPseudoConfig]:
    """``(cnn_method, SoftPseudoConfig)`` from notebook 04's parameters (``cnn_method``,
    ``soft_*``), checked as the notebook will check them."""
    method = params.get("cnn_method", "loss")
    check_choice("cnn_method", method, CNN_TRAINING)
    check(not (method == "soft_pseudo" and params.get("loss") == "sed"), "loss", "sed",
          "a clip loss with cnn_method='soft_pseudo' (its training windows carry no frame targets)")
    return method, soft_from_params(params)


def sample_rows(dataset, recording_ids: Sequence[str], *, keep_prob: float, seed):
    """A copy of ``dataset`` in which each TP and FP row of ``recording_ids`` is kept with
    probability ``keep_prob`` (one draw per row from ``np.random.default_rng(seed)``); the rows of
    every other recording are all kept."""
    check(0 < keep_prob <= 1, "soft_row_keep", keep_prob, "a probability in (0, 1]")
    rng, ids, tables = np.random.default_rng(seed), set(recording_ids), []
    for rows in (dataset.tp, dataset.fp):
        keep = rng.random(len(rows)) < keep_prob
        tables.append(rows[keep | ~rows["recording_id"].isin(ids).to_numpy()].reset_index(drop=True))
    return dataclasses.replace(dataset, tp=tables[0], fp=tables[1])


def window_labels(dataset, windows: pd.DataFrame) -> np.ndarray:
    """``(n, 2 * S)`` float32 ``[y | mask]`` of each window (``recording_id, start_s, end_s``), by
    :meth:`rfcxlib.data.tables.Dataset.window_targets`, each window cut at its recording's end."""
    s = dataset.num_species
    out = np.zeros((len(windows), 2 * s), np.float32)
    for i, (rid, t0, t1) in enumerate(zip(windows["recording_id"], windows["start_s"], windows["end_s"])):
        y, mask = dataset.window_targets(rid, float(t0), min(float(t1), dataset.durations.get(rid, float(t1))))
        out[i, :s], out[i, s:] = y, mask
    return out


def soft_targets(known: np.ndarray, logits: np.ndarray, *, soft_weight: float = 1.0,
                 temperature: float = 1.0) -> np.ndarray:
    """Packed ``[target | weight]`` for BCE with soft targets.

    Parameters
    ----------
    known : np.ndarray [shape=(n, 2 * S)]
        ``[y | mask]`` of the hard labels (:func:`window_labels`).
    logits : np.ndarray [shape=(n, S)]
        The previous model's logits of the same windows.
    soft_weight, temperature : float
        See :class:`rfcxlib.embeddings.head_config.SoftPseudoConfig`.

    Returns
    -------
    np.ndarray [shape=(n, 2 * S)], float32: where ``mask = 1`` the target is ``y`` with weight 1;
    elsewhere ``sigmoid(logits / temperature)`` with weight ``soft_weight``.
    """
    known, logits = np.asarray(known, np.float32), np.asarray(logits)
    s = known.shape[-1] // 2
    if known.ndim != 2 or logits.shape != (len(known), s):
        raise ParameterError(f"known {known.shape} and logits {logits.shape}: expected (n, 2 * S) and (n, S)")
    y, mask = known[:, :s], known[:, s:]
    p = sigmoid(np.asarray(logits, np.float64) / temperature)
    return np.concatenate([mask * y + (1 - mask) * p, mask + (1 - mask) * soft_weight], axis=1).astype(np.float32)


def round_targets(dataset, windows: pd.DataFrame, train_ids: Sequence[str], logits: np.ndarray, *,
                  soft: SoftPseudoConfig, seed) -> tuple[np.ndarray, dict]:
    """The targets of one soft round over ``windows`` (of ``train_ids``; columns ``recording_id,
    start_s, end_s``): the hard labels of the rows the round keeps (:func:`sample_rows` with
    ``seed``), the soft targets of ``logits`` ``(n, S)`` everywhere else (:func:`soft_targets`).

    Returns
    -------
    (np.ndarray [shape=(n, 2 * S)], dict): ``[target | weight]`` and ``{"windows", "rows_kept"
    (the fraction of the recordings' rows kept), "soft_mean" (the mean target of the cells without
    a kept label; NaN when there are none)}``.
    """
    sampled = sample_rows(dataset, train_ids, keep_prob=soft.row_keep, seed=seed)
    known = window_labels(sampled, windows)
    targets = soft_targets(known, logits, soft_weight=soft.soft_weight, temperature=soft.temperature)
    ids, s = set(train_ids), dataset.num_species
    ours = [int(t.recording_id.isin(ids).sum()) for t in (dataset.tp, dataset.fp, sampled.tp, sampled.fp)]
    unknown = known[:, s:] == 0
    return targets, {"windows": len(windows), "rows_kept": (ours[2] + ours[3]) / max(1, ours[0] + ours[1]),
                     "soft_mean": float(targets[:, :s][unknown].mean()) if unknown.any() else float("nan")}
