"""``tf.data`` builders: training crops, validation crops and sliding test windows.

Every builder yields float32 images ``(B, H, W, C)`` with ``(H, W, C) = input_shape(config)``:

- :func:`train_dataset` -> ``(x, targets)``: crops of ``crop_s`` around TP and FP rows (the row's
  box at a random offset inside the crop), drawn with equal weight per species, targets
  ``[y | mask]`` ``(B, 48)`` from ``dataset.window_targets``, waveform and image augmentation,
  frequency filtering (``p_band_filter``: the image rows outside the row's species band zeroed,
  only that species' label kept), background mix (``p_background_mix``: another crop of the batch
  added to the waveform, :mod:`rfcxlib.features.background_mix`), batching (``drop_remainder``), mixup, prefetch. One iteration is one epoch; each new iteration
  draws new crops, and the whole sequence is fixed by ``seed``.
- :func:`valid_dataset` -> ``(x, targets)``: one crop centred on each row, no augmentation.
- :func:`window_dataset` -> ``(x, recording_index)``: sliding windows over whole recordings (the last
  one aligned to the recording's end); ``recording_index`` indexes ``recording_ids``.

Audio is decoded once into an :class:`rfcxlib.audio.decode.AudioCache` shared by the builders of a process
(memory for small data sets, int16 files under ``$RFCX_CACHE_DIR`` for large ones); epochs then
only slice arrays, and the features run in parallel ``map`` calls.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from rfcxlib import NUM_SPECIES
from rfcxlib.audio import decode as audio
from rfcxlib.audio.header import audio_info
from rfcxlib.features import augment, background_mix, logmel as features, image_channels
from rfcxlib.features.bands import species_bands
from rfcxlib.config import AugmentConfig, RunConfig
from rfcxlib.errors import DataError, ParameterError

_CACHES: dict[tuple, audio.AudioCache] = {}


def input_shape(config: Optional[RunConfig] = None) -> tuple[int, int, int]:
    """``(H, W, C)`` of the images the builders yield for ``config``."""
    c = config or RunConfig()
    features.mel_filterbank(sr=c.audio.sr, n_fft=c.features.n_fft, n_mels=c.features.n_mels,
                            fmin=c.features.fmin, fmax=c.features.fmax)  # fmax <= sr / 2
    return features.image_shape(crop_samples(c), config=c.features)


def crop_samples(config: RunConfig) -> int:
    return int(round(config.audio.crop_s * config.audio.sr))


def audio_cache(dataset, recording_ids: Sequence[str], config: RunConfig, *, split: Optional[str] = None,
                progress: bool = True) -> audio.AudioCache:
    """The process-wide decoded-audio cache for ``config.audio``, with ``recording_ids`` loaded
    (``split`` None: each recording's own folder)."""
    a = config.audio
    paths = [dataset.path(rid, split) for rid in recording_ids]
    mode = a.audio_cache
    if mode == "auto":
        mode = audio.AudioCache.from_config(a, paths=paths).mode
    key = (mode, a.sr, a.resample, a.audio_backend)
    if key not in _CACHES:
        _CACHES[key] = audio.AudioCache(sr=a.sr, resample=a.resample, mode=mode, backend=a.audio_backend)
    return _CACHES[key].preload(paths, progress=progress)


def crop_rows(dataset, recording_ids: Sequence[str]) -> pd.DataFrame:
    """The TP and FP rows of ``recording_ids``: ``recording_id, species_id, t_min, t_max, kind``."""
    ids = set(recording_ids)
    parts = []
    for kind, table in (("tp", dataset.tp), ("fp", dataset.fp)):
        part = table.loc[table["recording_id"].isin(ids), ["recording_id", "species_id", "t_min", "t_max"]]
        parts.append(part.assign(kind=kind))
    rows = pd.concat(parts, ignore_index=True)
    if rows.empty:
        raise DataError(f"none of the {len(ids)} recordings given has a TP or FP row to crop around")
    return rows


def species_weights(rows: pd.DataFrame) -> np.ndarray:
    """Sampling probability per row so that every species present is drawn equally often."""
    counts = rows["species_id"].map(rows["species_id"].value_counts()).to_numpy(float)
    w = 1.0 / counts
    return w / w.sum()


def band_masks(dataset, config: RunConfig) -> np.ndarray:
    """``(24, H)`` 0/1 image rows to keep per species: the mel bands of its band
    (:func:`rfcxlib.features.bands.species_bands`, :func:`rfcxlib.features.logmel.band_bins`; all
    rows for a species without rows). The seed's frequency filtering: training crops
    (``p_band_filter``) and ``band_mode`` inference zero the other rows."""
    return masks_of_bands(species_bands(dataset.tp, dataset.fp), config)


def masks_of_bands(bands: dict, config: RunConfig) -> np.ndarray:
    """:func:`band_masks` of the bands ``{species: (f_min, f_max)}`` in Hz (e.g. a model folder's
    ``bands.json``, :func:`rfcxlib.features.bands.read_bands`)."""
    fc = config.features
    if fc.image_height not in (0, fc.n_mels):
        raise ParameterError("frequency bands (band_mode, p_band_filter) need images with one row per "
                             f"mel band (image_height 0 or n_mels), got image_height={fc.image_height}")
    masks = np.ones((NUM_SPECIES, fc.n_mels), np.float32)
    for s, (lo_hz, hi_hz) in bands.items():
        lo, hi = features.band_bins(fmin_hz=float(lo_hz), fmax_hz=float(hi_hz), config=fc)
        masks[int(s)] = 0.0
        masks[int(s), lo:hi] = 1.0
    return masks


# --------------------------------------------------------------------------- per-example maps
def _features_fn(config: RunConfig, *, train: bool, augment_config: Optional[AugmentConfig] = None):
    sr, fc = config.audio.sr, config.features
    ac = augment_config or (config.augment if train else AugmentConfig(augment=False))
    wave_on = ac.augment and any(getattr(ac, f"p_{k}") > 0 for k in augment.WAVE_STEPS)
    image_on = ac.augment and any(getattr(ac, f"p_{k}") > 0 for k in augment.IMAGE_STEPS)
    shape = input_shape(config)

    def fn(wave, seed):
        s_wave, s_image = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        if wave_on:
            wave = augment.augment_waveform(wave, seed=s_wave, config=ac, sr=sr)
        x = features.to_image(features.log_mel(wave, sr=sr, config=fc), config=fc)
        if image_on:
            x = augment.augment_image(x, seed=s_image, config=ac)
            if fc.freq_channel:  # a coordinate, not content: written back after the augmentations
                x = image_channels.restore_freq_channel(x)
        return tf.ensure_shape(x, shape)

    return fn


def _targets(dataset, rid: str, t0: float, t1: float) -> np.ndarray:
    y, mask = dataset.window_targets(rid, t0, t1)
    return np.concatenate([np.asarray(y, np.float32), np.asarray(mask, np.float32)])


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


# --------------------------------------------------------------------------- builders
def band_filter(targets: np.ndarray, keep: np.ndarray, species: int):
    """Frequency filtering of one crop (or window): the rows ``keep`` of its species' band, and
    only that species' label known (the others' calls may lie outside the band)."""
    known = np.zeros(NUM_SPECIES, np.float32)
    known[species] = 1.0
    targets = targets.copy()
    targets[..., NUM_SPECIES:] *= known
    return targets, keep


def _train_crops(dataset, rows: pd.DataFrame, cache: audio.AudioCache, *, crop_s: float, n: int, seed: int,
                 frames: Optional[int] = None, band: Optional[tuple[np.ndarray, float]] = None):
    """A generator function: each call is one epoch of ``n`` crops ``(wave, targets, seed (2,))``
    drawn with :func:`species_weights`, the box at a random offset; epoch ``e`` uses the
    generator ``default_rng([seed, e])``. With ``frames``, targets are ``(1 + frames, 48)``:
    the clip's, then each frame's (``dataset.frame_targets``). With ``band = (masks, p)``
    (:func:`band_masks`, ``p_band_filter``), each crop also yields the image rows to keep
    ``(H,)``: with probability ``p`` its row's species band (:func:`band_filter`), else all."""
    probs = species_weights(rows)
    table = list(rows[["recording_id", "t_min", "t_max", "species_id"]].itertuples(index=False, name=None))
    paths = {rid: dataset.path(rid) for rid in set(rows["recording_id"])}
    epochs = [0]

    def generate():
        rng = np.random.default_rng([seed, epochs[0]])
        epochs[0] += 1
        for i in rng.choice(len(table), size=n, p=probs):
            rid, t_min, t_max, species = table[i]
            start = audio.crop_start(t_min, t_max, crop_s=crop_s,
                                     duration_s=cache.duration_s(paths[rid]), rng=rng)
            wave = cache.crop(paths[rid], start_s=start, crop_s=crop_s)
            targets = _targets(dataset, rid, start, start + crop_s)
            if frames:
                targets = np.concatenate([targets[None], dataset.frame_targets(rid, start, start + crop_s, frames)])
            if band is None:
                yield wave, targets, rng.integers(0, 2**62, size=2)
                continue
            masks, p = band
            if rng.random() < p:
                targets, keep = band_filter(targets, masks[int(species)], int(species))
            else:
                keep = np.ones(masks.shape[1], np.float32)
            yield wave, targets, keep, rng.integers(0, 2**62, size=2)

    return generate


def _mix_backgrounds(ds: tf.data.Dataset, ac: AugmentConfig, batch: int) -> tf.data.Dataset:
    """Background mix (``p_background_mix``, :mod:`rfcxlib.features.background_mix`) on the raw crops
    ``(wave, targets, [keep,] seed)``: batched as training batches them, mixed, unbatched again;
    the batch's seed is its first crop's, folded apart. Off: ``ds`` itself."""
    if not ac.augment or ac.p_background_mix <= 0.0:
        return ds

    def mix(wave, targets, *rest):
        seed = tf.random.experimental.stateless_fold_in(rest[-1][0], 2)
        wave, targets = background_mix.background_mix(wave, targets, seed=seed, config=ac)
        return (wave, targets, *rest)

    return ds.batch(batch, drop_remainder=True).map(mix, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def train_dataset(dataset, recording_ids: Sequence[str], config: Optional[RunConfig] = None, *,
                  seed: int = 0, samples_per_epoch: Optional[int] = None, frames: Optional[int] = None,
                  progress: bool = True) -> tf.data.Dataset:
    """Training batches ``(x (B, H, W, C), targets (B, 48))`` of augmented crops around TP/FP rows.

    Parameters
    ----------
    dataset : rfcxlib.data.tables.Dataset
    recording_ids : sequence of str
        Training recordings (e.g. the folds not held out); only those with rows are used.
    config : RunConfig
        ``audio`` (sr, crop_s, cache), ``features``, ``augment`` and ``train.batch_size``.
    seed : int
        Fixes the crops, their order and every augmentation of every epoch.
    samples_per_epoch : int, optional
        Crops per epoch (default: the number of rows, at least one batch).
    frames : int, optional
        For the SED loss: targets become ``(B, 1 + frames, 48)``, the clip's and those of
        ``frames`` equal slices of the crop (the SED head's output frames). The frame targets
        follow the crop; waveform time shifts and resize-crops (off by default) move the sound by
        a fraction of a second against them, and a time flip would reverse it, so ``p_flip_time``
        must be 0.
    """
    c = config or RunConfig()
    rows = crop_rows(dataset, recording_ids)
    cache = audio_cache(dataset, sorted(set(rows["recording_id"])), c, split=None, progress=progress)
    n = epoch_size(samples_per_epoch, len(rows), c)
    if frames is not None and not (isinstance(frames, (int, np.integer)) and frames >= 1):
        raise ParameterError(f"parameter 'frames' = {frames!r}: expected an integer >= 1 (the SED head's frames)")
    if frames and c.augment.augment and c.augment.p_flip_time > 0:
        raise ParameterError(f"p_flip_time = {c.augment.p_flip_time}: expected 0 with frame targets "
                             "(a time flip reverses the sound but not its frame labels)")
    target_shape = (2 * NUM_SPECIES,) if not frames else (1 + int(frames), 2 * NUM_SPECIES)
    ac = c.augment
    p_band = ac.p_band_filter if ac.augment else 0.0
    band = (band_masks(dataset, c), p_band) if p_band > 0 else None
    generate = _train_crops(dataset, rows, cache, crop_s=c.audio.crop_s, n=n, seed=seed, frames=frames,
                            band=band)
    return training_batches(generate, c, n=n, target_shape=target_shape, band_rows=band and band[0].shape[1])


def training_batches(generate, c: RunConfig, *, n: int, target_shape: tuple, band_rows: Optional[int]):
    """Training batches of the ``n`` examples ``(wave, targets, [keep (H,),] seed (2,))`` that
    ``generate`` (a generator function: one call, one epoch) yields, ``keep`` being the image rows
    a frequency-filtered example keeps (with ``band_rows``): background mix, image (waveform and
    image augmentations), rows outside the band zeroed, batches (``drop_remainder``), mixup, prefetch.
    :func:`train_dataset` and :func:`rfcxlib.features.fixed_windows.window_train_dataset` share it."""
    batch, ac = c.train.batch_size, c.augment
    signature = (tf.TensorSpec((crop_samples(c),), tf.float32),
                 tf.TensorSpec(target_shape, tf.float32), tf.TensorSpec((2,), tf.int64))
    if band_rows:  # the rows to keep (H,) ride along: image rows outside the band are zeroed
        signature = signature[:2] + (tf.TensorSpec((band_rows,), tf.float32),) + signature[2:]
    to_image = _features_fn(c, train=True)

    def mix(x, t, seeds):  # the batch's mixup seed: its first example's, folded apart
        return augment.mixup(x, t, seed=tf.random.experimental.stateless_fold_in(seeds[0], 1), config=ac)

    ds = _mix_backgrounds(tf.data.Dataset.from_generator(generate, output_signature=signature), ac, batch)
    if not band_rows:
        ds = ds.map(lambda w, t, s: (to_image(w, s), t, s), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        freq = c.features.freq_channel
        ds = ds.map(lambda w, t, keep, s: (image_channels.mask_rows(to_image(w, s), keep, freq_channel=freq), t, s),
                    num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=True)
    ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n // batch))  # Keras then knows the epoch
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def epoch_size(samples_per_epoch: Optional[int], examples: int, c: RunConfig) -> int:
    """Examples per epoch: ``samples_per_epoch``, else ``examples`` (at least one batch)."""
    batch = c.train.batch_size
    n = int(samples_per_epoch or max(examples, batch))
    if n < batch:
        raise ParameterError(f"samples_per_epoch={n}: expected at least batch_size={batch}")
    return n


def valid_crops(dataset, recording_ids: Sequence[str], config: Optional[RunConfig] = None) -> pd.DataFrame:
    """The fixed validation crops: one per TP/FP row, centred on its box (``start_s`` column)."""
    c = config or RunConfig()
    rows = crop_rows(dataset, recording_ids).sort_values(["recording_id", "t_min", "species_id"],
                                                        kind="stable", ignore_index=True)
    durations = dict(getattr(dataset, "durations", None) or {})
    for rid in set(rows["recording_id"]) - set(durations):
        durations[rid] = audio_info(dataset.path(rid)).duration_s
    starts = [audio.crop_start(t0, t1, crop_s=c.audio.crop_s, duration_s=durations[rid])
              for rid, t0, t1 in rows[["recording_id", "t_min", "t_max"]].itertuples(index=False, name=None)]
    return rows.assign(start_s=starts)


def valid_dataset(dataset, recording_ids: Sequence[str], config: Optional[RunConfig] = None, *,
                  progress: bool = True) -> tf.data.Dataset:
    """Validation batches ``(x, targets)``: one crop centred on each TP/FP row, no augmentation,
    in a fixed order (:func:`valid_crops`)."""
    c = config or RunConfig()
    rows = valid_crops(dataset, recording_ids, c)
    cache = audio_cache(dataset, sorted(set(rows["recording_id"])), c, split=None, progress=progress)
    crop_s = c.audio.crop_s
    table = list(rows[["recording_id", "start_s"]].itertuples(index=False, name=None))

    def generate():
        for rid, start in table:
            wave = cache.crop(dataset.path(rid), start_s=start, crop_s=crop_s)
            yield wave, _targets(dataset, rid, start, start + crop_s)

    signature = (tf.TensorSpec((crop_samples(c),), tf.float32), tf.TensorSpec((2 * NUM_SPECIES,), tf.float32))
    to_image = _features_fn(c, train=False)
    zero = tf.zeros([2], tf.int64)
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(lambda w, t: (to_image(w, zero), t), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(c.train.batch_size).apply(
        tf.data.experimental.assert_cardinality(-(-len(table) // c.train.batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def window_table(dataset, recording_ids: Sequence[str], config: Optional[RunConfig] = None, *,
                 split: str = "test", hop_s: Optional[float] = None, progress: bool = True) -> pd.DataFrame:
    """Every sliding window: ``recording_index, recording_id, start_s`` in the order yielded."""
    c = config or RunConfig()
    hop_s = float(hop_s if hop_s is not None else c.inference.hop_s)
    cache = audio_cache(dataset, list(recording_ids), c, split=split, progress=progress)
    parts = []
    for i, rid in enumerate(recording_ids):
        starts = audio.window_starts(cache.duration_s(dataset.path(rid, split)), crop_s=c.audio.crop_s,
                                     hop_s=hop_s)
        parts.append(pd.DataFrame({"recording_index": i, "recording_id": rid, "start_s": starts}))
    return pd.concat(parts, ignore_index=True)


def window_dataset(dataset, recording_ids: Sequence[str], config: Optional[RunConfig] = None, *,
                   split: str = "test", hop_s: Optional[float] = None, progress: bool = True,
                   tta_seed: Optional[int] = None) -> tf.data.Dataset:
    """Batches ``(x (B, H, W, C), recording_index (B,) int32)`` of sliding windows of ``crop_s``
    every ``hop_s`` seconds (default ``config.inference.hop_s``) over whole recordings, the last
    window ending at the recording's end; recordings shorter than ``crop_s`` are zero-padded.

    ``tta_seed`` (test-time augmentation): when given, each window goes through the waveform and
    image augmentations of ``config.augment`` (mixup excluded), seeded by ``(tta_seed, window)``;
    one pass per seed, in the same window order.
    """
    c = config or RunConfig()
    if len(recording_ids) == 0:
        raise ParameterError("recording_ids is empty: expected at least one recording")
    table = window_table(dataset, recording_ids, c, split=split, hop_s=hop_s, progress=progress)
    cache = audio_cache(dataset, list(recording_ids), c, split=split, progress=False)
    rows = list(table[["recording_index", "recording_id", "start_s"]].itertuples(index=False, name=None))
    crop_s = c.audio.crop_s

    def generate():
        for k, (index, rid, start) in enumerate(rows):
            yield cache.crop(dataset.path(rid, split), start_s=start, crop_s=crop_s), index, k

    signature = (tf.TensorSpec((crop_samples(c),), tf.float32), tf.TensorSpec((), tf.int32),
                 tf.TensorSpec((), tf.int64))
    tta = None if tta_seed is None else dataclasses.replace(c.augment, augment=True, p_mixup=0.0)
    to_image = _features_fn(c, train=False, augment_config=tta)
    base = tf.constant(0 if tta_seed is None else int(tta_seed), tf.int64)
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    ds = ds.map(lambda w, i, k: (to_image(w, tf.stack([base, k])), i), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(c.train.batch_size).apply(
        tf.data.experimental.assert_cardinality(-(-len(rows) // c.train.batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
