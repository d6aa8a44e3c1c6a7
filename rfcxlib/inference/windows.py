"""Whole-recording prediction: sliding windows ▶ per-window logits ▶ one score per species.

Windows of ``crop_s`` every ``hop_s`` seconds (the last one ends at the recording's end), the
maximum over windows per species (``aggregate="mean"``: the mean), optional test-time
augmentation (the mean of the logits of ``1 + tta`` passes) and the seed's per-species
frequency-band scoring (species ``s`` is scored on an image whose mel rows outside its band are
zeroed; its band is :func:`rfcxlib.features.bands.species_bands` of the training rows).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from rfcxlib import NUM_SPECIES
from rfcxlib.features import image_channels, pipeline
from rfcxlib.inference import member_windows
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.layout import SPECIES_COLUMNS


BAND_CALL_VALUES = 2 ** 25  # window_logits' per-band passes: at most this many input values per call


def window_logits(model, dataset, recording_ids: Sequence[str], config: RunConfig, *, split: str,
                  hop_s: Optional[float] = None, tta_seed: Optional[int] = None,
                  band_mode: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits of every window ``(n_windows, 24)`` and the recording index of each window."""
    ds = pipeline.window_dataset(dataset, list(recording_ids), config, split=split, hop_s=hop_s,
                                 progress=False, tta_seed=tta_seed)
    if band_mode:  # compiled: 24 eager model calls per batch cost 3-7x more (mini, 2 CPU cores)
        masks, shape = pipeline.band_masks(dataset, config), pipeline.input_shape(config)
        # as many bands per call as fit in BAND_CALL_VALUES input values (mini: all 24): it traces
        # in a tenth of the time of one call per band
        per_call = max(1, min(NUM_SPECIES, BAND_CALL_VALUES // (config.train.batch_size * int(np.prod(shape)))))
        freq = config.features.freq_channel
        banded = tf.function(lambda x: band_logits(model, x, masks, per_call=per_call, freq_channel=freq),
                             input_signature=[tf.TensorSpec([None, *shape], tf.float32)])  # one trace
    parts, index = [], []
    for x, i in ds:
        z = banded(x) if band_mode else model(x, training=False)
        parts.append(np.asarray(z, np.float32))
        index.append(np.asarray(i))
    return np.concatenate(parts), np.concatenate(index)


def band_logits(model, x, masks: np.ndarray, *, per_call: int = 1, freq_channel: bool = False):
    """The seed's per-band inference: logits ``(n, 24)`` of images ``x`` ``(n, H, W, C)`` where
    species ``s``'s column comes from ``x`` with only the rows ``masks[s]`` (``(24, H)``, 0/1)
    kept. Species with the same mask share one pass; ``per_call`` passes go through ``model``
    together, as one batch. TensorFlow ops only, so it runs inside a ``tf.function`` (as
    :func:`window_logits` and an exported model run it): there, on 2 CPU cores, one pass per call
    was the fastest to run (benchmarks/bench_models.py), all passes in one call the fastest to trace.
    ``freq_channel``: ``x``'s last channel is the frequency channel, kept whole in every pass
    (:func:`rfcxlib.features.image_channels.mask_rows`)."""
    unique, inverse = np.unique(np.asarray(masks, np.float32), axis=0, return_inverse=True)
    pick = np.zeros((len(unique), NUM_SPECIES), np.float32)  # pass u gives species s's column
    pick[np.ravel(inverse), np.arange(NUM_SPECIES)] = 1.0
    x = tf.convert_to_tensor(x, tf.float32)
    image, n, out = list(x.shape[1:]), tf.shape(x)[0], 0.0  # (H, W, C) static: convolutions need them
    per_call = max(1, int(per_call))
    for lo in range(0, len(unique), per_call):
        group = tf.constant(unique[lo:lo + per_call])  # (g, H)
        copies = image_channels.mask_rows(x[None], group[:, None, :], freq_channel=freq_channel)  # (g, n, H, W, C)
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
    """Probabilities as float32 (:func:`rfcxlib.inference.member_windows.sigmoid`)."""
    return member_windows.sigmoid(z).astype(np.float32)


def scores_frame(recording_ids: Sequence[str], scores: np.ndarray) -> pd.DataFrame:
    """``recording_id, s0..s23`` table of clip scores."""
    frame = pd.DataFrame(scores, columns=SPECIES_COLUMNS)
    frame.insert(0, "recording_id", list(recording_ids))
    return frame
