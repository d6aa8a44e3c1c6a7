"""Training batches of fixed windows with targets of their own: soft pseudo-label rounds.

:func:`rfcxlib.features.pipeline.train_dataset` draws crops around TP/FP rows and labels them by
the rows; a soft pseudo-label round (:mod:`rfcxlib.noisy.soft_pseudo`) trains instead on every
window of a fold's training recordings, each with a target vector and weights of its own
(:mod:`rfcxlib.noisy.soft_labels`). :func:`window_train_dataset` makes those batches with the
pipeline's decoded-audio cache, image and augmentations (waveform and image steps, frequency
filtering, background mix, mixup: :func:`rfcxlib.features.pipeline.training_batches`);
:class:`WindowTargets` is such a training set as a fold's source in
:func:`rfcxlib.training.train.train_model`.

Tests: tests/test_soft_pseudo_cnn.py
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import tensorflow as tf

from rfcxlib import NUM_SPECIES
from rfcxlib.audio import decode as audio
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.features import pipeline


@dataclasses.dataclass(frozen=True)
class WindowTargets:
    """Training windows at fixed places with targets of their own (soft pseudo-label rounds,
    :mod:`rfcxlib.noisy.soft_pseudo`): a fold's source in place of a data set
    (:func:`rfcxlib.training.train.train_model`'s ``sources``; :func:`window_train_dataset`).

    Attributes
    ----------
    dataset : rfcxlib.data.tables.Dataset
        Where the windows' audio and the species' bands come from.
    key : dict
        What decides the windows and their targets: it enters the fold's fingerprint in their place
        (:func:`rfcxlib.training.fingerprints.source_digest`), so nothing is scored to decide a reuse.
    make : callable ``() -> (pd.DataFrame, np.ndarray)``
        The windows (``recording_id, start_s``) and their targets ``(n, 48)``; called when the fold trains.
    seed : int
        Mixed into the seeds of the fold's initial weights and epochs (e.g. the round), so that
        the model trained on these windows is a new one; 0: the configuration's seeds alone.
    """
    dataset: Any
    key: dict
    make: Callable[[], tuple]
    seed: int = 0


def _window_examples(dataset, windows: pd.DataFrame, targets: np.ndarray, cache: audio.AudioCache, *,
                     crop_s: float, n: int, seed: int, band: Optional[tuple[np.ndarray, float]] = None):
    """A generator function: each call is one epoch of ``n`` examples ``(wave, targets, [keep,]
    seed (2,))``, the windows in shuffled passes (epoch ``e``: ``default_rng([seed, e])``). With
    ``band = (masks, p)``, an example keeps with probability ``p`` only the band and the target of
    one species, drawn in proportion to its targets (uniformly when they are all 0)."""
    paths = {rid: dataset.path(rid) for rid in set(windows["recording_id"])}
    table = list(zip(windows["recording_id"], windows["start_s"].astype(float)))
    epochs = [0]

    def generate():
        rng = np.random.default_rng([seed, epochs[0]])
        epochs[0] += 1
        for i in np.concatenate([rng.permutation(len(table)) for _ in range(-(-n // len(table)))])[:n]:
            (rid, start), t = table[i], targets[i]
            wave = cache.crop(paths[rid], start_s=start, crop_s=crop_s)
            if band is None:
                yield wave, t, rng.integers(0, 2**62, size=2)
                continue
            masks, p = band
            if rng.random() < p:
                w = t[:NUM_SPECIES].astype(np.float64)
                species = int(rng.choice(NUM_SPECIES, p=w / w.sum() if w.sum() > 0 else None))
                t, keep = pipeline.band_filter(t, masks[species], species)
            else:
                keep = np.ones(masks.shape[1], np.float32)
            yield wave, t, keep, rng.integers(0, 2**62, size=2)

    return generate


def window_train_dataset(dataset, windows: pd.DataFrame, targets, config: Optional[RunConfig] = None, *,
                         seed: int = 0, samples_per_epoch: Optional[int] = None,
                         progress: bool = True) -> tf.data.Dataset:
    """Training batches ``(x (B, H, W, C), targets (B, 48))`` of fixed windows with given targets,
    augmented as :func:`rfcxlib.features.pipeline.train_dataset`'s crops (waveform and image
    steps, background mix, mixup; frequency filtering as :func:`_window_examples` says).

    Parameters
    ----------
    windows : pd.DataFrame
        ``recording_id, start_s`` of each window (training recordings); each is ``crop_s`` long.
    targets : np.ndarray [shape=(n, 48)]
        Packed targets per window, e.g. ``[soft target | weight]`` (:mod:`rfcxlib.noisy.soft_labels`).
    samples_per_epoch : int, optional
        Examples per epoch (default: every window once, at least one batch).
    """
    c = config or RunConfig()
    targets = np.asarray(targets, np.float32)
    if len(windows) == 0 or targets.shape != (len(windows), 2 * NUM_SPECIES):
        raise ParameterError(f"{len(windows)} windows and targets of shape {targets.shape}: expected at least "
                             f"one window and one target row (2 * {NUM_SPECIES},) per window")
    cache = pipeline.audio_cache(dataset, sorted(set(windows["recording_id"])), c, split=None,
                                 progress=progress)
    n = pipeline.epoch_size(samples_per_epoch, len(windows), c)
    p_band = c.augment.p_band_filter if c.augment.augment else 0.0
    band = (pipeline.band_masks(dataset, c), p_band) if p_band > 0 else None
    generate = _window_examples(dataset, windows, targets, cache, crop_s=c.audio.crop_s, n=n, seed=seed,
                                band=band)
    return pipeline.training_batches(generate, c, n=n, target_shape=(2 * NUM_SPECIES,),
                                     band_rows=band and band[0].shape[1])
