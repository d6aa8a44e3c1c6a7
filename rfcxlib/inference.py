"""Whole-recording prediction: sliding windows ▶ per-window logits ▶ one score per species.

Windows of ``crop_s`` every ``hop_s`` seconds (the last one ends at the recording's end), the
maximum over windows per species (``aggregate="mean"``: the mean), optional test-time
augmentation (the mean of the logits of ``1 + tta`` passes) and the seed's per-species
frequency-band scoring (species ``s`` is scored on an image whose mel rows outside its band are
zeroed; its band is the median TP box band of the training rows).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from rfcxlib import NUM_SPECIES, pipeline
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.layout import SPECIES_COLUMNS


species_bands = pipeline.species_bands  # {species: (f_min, f_max)}, the median TP band


def window_logits(model, dataset, recording_ids: Sequence[str], config: RunConfig, *, split: str,
                  hop_s: Optional[float] = None, tta_seed: Optional[int] = None,
                  band_mode: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every window ``(n_windows, 24)`` and the recording index of each window."""
    ds = pipeline.window_dataset(dataset, list(recording_ids), config, split=split, hop_s=hop_s,
                                 progress=False, tta_seed=tta_seed)
    masks = pipeline.band_masks(dataset, config) if band_mode else None
    parts, index = [], []
    for x, i in ds:
        z = model(x, training=False) if masks is None else band_logits(model, x, masks)
        parts.append(np.asarray(z, np.float32))
        index.append(np.asarray(i))
    return np.concatenate(parts), np.concatenate(index)


BAND_BATCH_VALUES = 2 ** 25  # at most this many input values per call of band_logits (128 MB)


def band_logits(model, x, masks: np.ndarray, *, per_call: Optional[int] = None):
    """The seed's per-band inference: logits ``(n, 24)`` of images ``x`` ``(n, H, W, C)`` where
    species ``s``'s column comes from ``x`` with only the rows ``masks[s]`` (``(24, H)``, 0/1)
    kept. Species with the same mask share one pass, and the masked copies go through ``model``
    ``per_call`` masks at a time, as one batch (default: as many as fit in
    :data:`BAND_BATCH_VALUES`; 8 when ``n`` is not known). TensorFlow ops only, so it also runs
    inside a ``tf.function`` (an exported model)."""
    import tensorflow as tf

    unique, inverse = np.unique(np.asarray(masks, np.float32), axis=0, return_inverse=True)
    pick = np.zeros((len(unique), NUM_SPECIES), np.float32)  # pass u gives species s's column
    pick[np.ravel(inverse), np.arange(NUM_SPECIES)] = 1.0
    x = tf.convert_to_tensor(x, tf.float32)
    image, n, out = list(x.shape[1:]), tf.shape(x)[0], 0.0  # (H, W, C) static: convolutions need them
    if per_call is None:
        per_call = 8 if x.shape[0] is None else BAND_BATCH_VALUES // max(1, int(np.prod(x.shape)))
    per_call = max(1, int(per_call))
    for lo in range(0, len(unique), per_call):
        group = tf.constant(unique[lo:lo + per_call])  # (g, H)
        copies = x[None] * group[:, None, :, None, None]  # (g, n, H, W, C)
        z = model(tf.reshape(copies, [-1, *image]), training=False)
        z = tf.reshape(z, [len(unique[lo:lo + per_call]), n, NUM_SPECIES])
        out += tf.reduce_sum(z * tf.constant(pick[lo:lo + per_call])[:, None, :], axis=0)
    return out


def aggregate_windows(logits: np.ndarray, index: np.ndarray, n: int, how: str = "max") -> np.ndarray:
    """Per-recording ``(n, 24)`` from per-window logits: max (default) or mean over windows."""
    if how == "mean":
        sums = np.zeros((n, logits.shape[1]), np.float32)
        np.add.at(sums, index, logits)
        return sums / np.maximum(np.bincount(index, minlength=n), 1)[:, None]
    if how != "max":
        raise ParameterError(f"aggregate = {how!r}: expected 'max' or 'mean'")
    out = np.full((n, logits.shape[1]), -np.inf, np.float32)
    np.maximum.at(out, index, logits)
    return out


def predict_clips(model, dataset, recording_ids: Sequence[str], config: RunConfig, *,
                  split: str) -> np.ndarray:
    """Clip logits ``(len(recording_ids), 24)`` following ``config.inference``."""
    inf = config.inference
    passes = [None] + list(range(1, inf.tta + 1))
    results = []
    for tta_seed in passes:
        z, index = window_logits(model, dataset, recording_ids, config, split=split,
                                 tta_seed=tta_seed, band_mode=inf.band_mode)
        results.append(aggregate_windows(z, index, len(recording_ids), inf.aggregate))
    return np.mean(results, axis=0).astype(np.float32)


def sigmoid(z) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(z, np.float64)))).astype(np.float32)


def scores_frame(recording_ids: Sequence[str], scores: np.ndarray) -> pd.DataFrame:
    """``recording_id, s0..s23`` table of clip scores."""
    frame = pd.DataFrame(scores, columns=SPECIES_COLUMNS)
    frame.insert(0, "recording_id", list(recording_ids))
    return frame
