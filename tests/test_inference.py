"""Sliding-window inference: aggregation, whole-recording scores, TTA and per-species bands."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from rfcxlib import NUM_SPECIES
from rfcxlib.data import tables as data
from rfcxlib.inference import windows as inference
from rfcxlib.features import pipeline
from rfcxlib.features.bands import species_bands
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError

PARAMS = dict(n_mels=32, hop_length=2048, image_width=0, channels=1, crop_s=4.0, hop_s=2.0,
              batch_size=8, p_time_mask=0.5, p_freq_mask=0.5, p_band_filter=0.0, band_mode=False)


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return data.load_dataset(tiny_data_dir)


def _row_model(config, seed=0):
    """Logits = row means of the image (mel bands) through a fixed dense layer: ``(B, 24)``."""
    h, w, c = pipeline.input_shape(config)
    inputs = keras.Input((h, w, c))
    rows = keras.layers.Lambda(lambda x: keras.ops.mean(x, axis=(2, 3)))(inputs)  # (B, H)
    dense = keras.layers.Dense(NUM_SPECIES)
    model = keras.Model(inputs, dense(rows))
    gen = np.random.default_rng(seed)
    dense.set_weights([gen.normal(size=(h, NUM_SPECIES)).astype(np.float32),
                       gen.normal(size=NUM_SPECIES).astype(np.float32)])
    return model, dense


def test_aggregate_windows_by_hand():
    z = np.array([[1.0, -2.0], [3.0, -5.0], [0.0, 4.0]], np.float32)
    index = np.array([0, 0, 1])
    np.testing.assert_array_equal(inference.aggregate_windows(z, index, 2), [[3.0, -2.0], [0.0, 4.0]])
    np.testing.assert_allclose(inference.aggregate_windows(z, index, 2, "mean"), [[2.0, -3.5], [0.0, 4.0]])
    with pytest.raises(ParameterError, match="aggregate = 'median'.*'max' or 'mean'"):
        inference.aggregate_windows(z, index, 2, "median")


def test_predict_clips_max_and_mean_over_windows(tiny):
    config = RunConfig.from_params(PARAMS)
    model, _ = _row_model(config)
    ids = tiny.test_ids[:4]
    z, index = inference.window_logits(model, tiny, ids, config, split="test")
    table = pipeline.window_table(tiny, ids, config, split="test", progress=False)
    assert len(z) == len(table) and list(index) == list(table.recording_index)
    assert np.bincount(index).min() >= 2  # 10 s recordings, 4 s windows every 2 s
    clips = inference.predict_clips(model, tiny, ids, config, split="test")
    assert clips.shape == (4, NUM_SPECIES) and clips.dtype == np.float32
    for k in range(4):
        np.testing.assert_allclose(clips[k], z[index == k].max(axis=0), rtol=1e-6)
    mean_cfg = RunConfig.from_params({**PARAMS, "aggregate": "mean"})
    means = inference.predict_clips(model, tiny, ids, mean_cfg, split="test")
    np.testing.assert_allclose(means[1], z[index == 1].mean(axis=0), rtol=1e-5, atol=1e-6)
    assert (clips >= means - 1e-6).all() and not np.allclose(clips, means)


def test_tta_is_the_mean_of_seeded_passes(tiny):
    config = RunConfig.from_params({**PARAMS, "tta": 2})
    model, _ = _row_model(config)
    ids = tiny.test_ids[:3]
    got = inference.predict_clips(model, tiny, ids, config, split="test")
    passes = []
    for seed in (None, 1, 2):
        z, index = inference.window_logits(model, tiny, ids, config, split="test", tta_seed=seed)
        passes.append(inference.aggregate_windows(z, index, len(ids)))
    np.testing.assert_allclose(got, np.mean(passes, axis=0), rtol=1e-5, atol=1e-5)
    assert not np.allclose(passes[0], passes[1])  # augmentation changed the windows
    np.testing.assert_allclose(inference.predict_clips(model, tiny, ids, config, split="test"), got,
                               rtol=1e-6)  # seeded: repeatable


def test_band_mode_scores_each_species_on_its_band(tiny):
    config = RunConfig.from_params({**PARAMS, "band_mode": True})
    model, dense = _row_model(config)
    ids = tiny.test_ids[:2]
    got = inference.predict_clips(model, tiny, ids, config, split="test")
    masks = pipeline.band_masks(tiny, config)
    bands = species_bands(tiny.tp, tiny.fp)
    assert set(bands) and all(masks[s].sum() < masks.shape[1] for s in bands)
    assert all(masks[s].all() for s in range(NUM_SPECIES) if s not in bands)
    w, b = dense.get_weights()
    expected = np.full((2, NUM_SPECIES), -np.inf)
    for x, index in pipeline.window_dataset(tiny, ids, config, split="test", progress=False):
        rows = np.asarray(x).mean(axis=(2, 3))  # (B, H)
        z = (rows[:, :, None] * masks.T[None] * w[None]).sum(1) + b
        for k, zi in zip(np.asarray(index), z):
            expected[k] = np.maximum(expected[k], zi)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_band_logits_share_a_pass_per_distinct_mask_and_batch_them(tiny):
    config = RunConfig.from_params({**PARAMS, "band_mode": True})
    model, _ = _row_model(config, seed=3)
    h = pipeline.input_shape(config)[0]
    gen = np.random.default_rng(5)
    distinct = (gen.random((6, h)) < 0.4).astype(np.float32)
    masks = distinct[gen.integers(0, 6, NUM_SPECIES)]  # 24 species, at most 6 different masks
    masks[:6] = distinct  # every one of the 6 used
    x = gen.normal(size=(5, *pipeline.input_shape(config))).astype(np.float32)
    loop = np.stack([np.asarray(model(x * masks[s][None, :, None, None]))[:, s] for s in range(NUM_SPECIES)], 1)
    calls = []

    def counted(batch, training=False):
        calls.append(int(batch.shape[0]))
        return model(batch, training=training)

    for per_call, sizes in ((1, [5] * 6), (4, [20, 10]), (8, [30])):
        calls.clear()
        got = np.asarray(inference.band_logits(counted, x, masks, per_call=per_call))
        np.testing.assert_allclose(got, loop, rtol=1e-5, atol=1e-5)
        assert calls == sizes, (per_call, calls)


def test_band_mode_needs_one_row_per_mel_band(tiny):
    with pytest.raises(ParameterError, match="band_mode.*image_height=16"):
        RunConfig.from_params({**PARAMS, "band_mode": True, "image_height": 16})
    resized = RunConfig.from_params({**PARAMS, "image_height": 16})
    with pytest.raises(ParameterError, match="band_mode.*image_height"):
        pipeline.band_masks(tiny, resized)


def test_scores_frame_and_sigmoid():
    frame = inference.scores_frame(["a", "b"], np.zeros((2, NUM_SPECIES)))
    assert list(frame.columns[:3]) == ["recording_id", "s0", "s1"] and len(frame) == 2
    np.testing.assert_allclose(inference.sigmoid([0.0, 100.0, -100.0]), [0.5, 1.0, 0.0], atol=1e-6)
