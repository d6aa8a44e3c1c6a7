import numpy as np
import pytest
import tensorflow as tf

from rfcxlib.audio import decode as audio
from rfcxlib.data import tables as data
from rfcxlib.features import logmel as features, pipeline
from rfcxlib.config import RunConfig
from rfcxlib.errors import DataError, ParameterError

PARAMS = dict(batch_size=4, crop_s=4.0, image_width=96, n_mels=64, hop_length=512, channels=3, log="log1p",
              p_time_mask=0.5, p_freq_mask=0.5, time_mask=50, freq_mask=16, p_resize_crop=0.5, p_noise=0.5,
              p_gain=0.5, p_wave_noise=0.5, p_shift=0.5, p_mixup=0.5, p_band_filter=0.0, hop_s=3.0,
              band_mode=False)


@pytest.fixture(scope="module")
def dataset(tiny_data_dir):
    return data.load_dataset(tiny_data_dir)


@pytest.fixture(scope="module")
def config():
    return RunConfig.from_params(PARAMS)


def _epoch(ds):
    return [(x.numpy(), t.numpy()) for x, t in ds]


def test_input_shape():
    assert pipeline.input_shape(RunConfig()) == (48, 1 + (3 * 48000 - 2048) // 2048, 1)
    assert pipeline.input_shape(RunConfig.from_params(dict(image_width=512))) == (48, 512, 1)
    with pytest.raises(ParameterError, match=r"'fmax' = 15000.0.*sr / 2 \(8000.0\)"):
        pipeline.input_shape(RunConfig.from_params(dict(sr=16000)))


def test_train_batches_have_the_contract_shapes(dataset, config):
    ds = pipeline.train_dataset(dataset, dataset.labelled_ids, config, seed=0, samples_per_epoch=10,
                                progress=False)
    batches = _epoch(ds)
    assert len(batches) == 2 == int(ds.cardinality())  # 10 crops, batches of 4, remainder dropped
    for x, t in batches:
        assert x.shape == (4, *pipeline.input_shape(config)) and x.dtype == np.float32
        assert t.shape == (4, 48) and t.dtype == np.float32
        y, mask = t[:, :24], t[:, 24:]
        assert np.all(np.isfinite(x))
        assert np.all((mask >= 0) & (mask <= 1 + 1e-6)) and np.all(y <= 1 + 1e-6)
        assert np.all(mask.sum(axis=1) > 0)  # every crop is centred on a labelled row


def test_every_crop_knows_its_row_without_mixup(dataset):
    config = RunConfig.from_params({**PARAMS, "p_mixup": 0.0})
    ds = pipeline.train_dataset(dataset, dataset.labelled_ids, config, seed=3, samples_per_epoch=16,
                                progress=False)
    for _, t in _epoch(ds):
        y, mask = t[:, :24], t[:, 24:]
        assert set(np.unique(mask)) <= {0.0, 1.0} and np.all(y <= mask)
        assert np.all(mask.sum(axis=1) >= 1)


def test_fixed_seed_repeats_and_epochs_differ(dataset, config):
    def build(seed):
        return pipeline.train_dataset(dataset, dataset.labelled_ids, config, seed=seed, samples_per_epoch=8,
                                      progress=False)

    a, b = build(5), build(5)
    a1, b1 = _epoch(a), _epoch(b)
    for (xa, ta), (xb, tb) in zip(a1, b1):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ta, tb)
    a2, b2 = _epoch(a), _epoch(b)
    np.testing.assert_array_equal(a2[0][0], b2[0][0])
    assert not np.array_equal(a1[0][0], a2[0][0])
    assert not np.array_equal(_epoch(build(6))[0][0], a1[0][0])


def test_sampling_is_balanced_by_species(dataset):
    rows = pipeline.crop_rows(dataset, dataset.labelled_ids)
    weights = pipeline.species_weights(rows)
    per_species = rows.assign(w=weights).groupby("species_id").w.sum()
    np.testing.assert_allclose(per_species.to_numpy(), 1.0 / rows.species_id.nunique())
    assert set(rows.kind) == {"tp", "fp"}


def test_validation_is_fixed_and_unaugmented(dataset, config):
    ids = dataset.labelled_ids[:6]
    crops = pipeline.valid_crops(dataset, ids, config)
    batches = _epoch(pipeline.valid_dataset(dataset, ids, config, progress=False))
    again = _epoch(pipeline.valid_dataset(dataset, ids, config, progress=False))
    x = np.concatenate([b[0] for b in batches])
    t = np.concatenate([b[1] for b in batches])
    assert len(x) == len(crops) and t.shape == (len(crops), 48)
    assert len(batches) == int(pipeline.valid_dataset(dataset, ids, config, progress=False).cardinality())
    np.testing.assert_array_equal(x, np.concatenate([b[0] for b in again]))
    first = crops.iloc[0]
    y, sr = audio.load_audio(dataset.path(first.recording_id), sr=48000)
    clip = audio.crop(y, sr=sr, start_s=first.start_s, crop_s=config.audio.crop_s)
    expected = features.to_image(features.log_mel(clip, sr=sr, config=config.features), config=config.features)
    np.testing.assert_allclose(x[0], expected.numpy(), atol=1e-4)
    y0, m0 = dataset.window_targets(first.recording_id, first.start_s, first.start_s + config.audio.crop_s)
    np.testing.assert_array_equal(t[0], np.concatenate([y0, m0]))
    assert first.start_s <= first.t_min and first.start_s + config.audio.crop_s >= first.t_max - 1e-9


def test_windows_cover_whole_recordings(dataset, config):
    ids = dataset.test_ids[:3]
    table = pipeline.window_table(dataset, ids, config, split="test", hop_s=1.5, progress=False)
    ds = pipeline.window_dataset(dataset, ids, config, split="test", hop_s=1.5, progress=False)
    xs, index = zip(*[(x.numpy(), i.numpy()) for x, i in ds])
    assert len(xs) == int(ds.cardinality())
    index = np.concatenate(index)
    np.testing.assert_array_equal(index, table.recording_index.to_numpy())
    assert sorted(set(index)) == [0, 1, 2]
    crop_s = config.audio.crop_s
    for i, rid in enumerate(ids):
        starts = table[table.recording_index == i].start_s.to_numpy()
        assert starts[0] == 0.0
        assert starts[-1] == pytest.approx(dataset.durations[rid] - crop_s)
    last = np.concatenate(xs)[len(table[table.recording_index == 0]) - 1]
    y, sr = audio.load_audio(dataset.path(ids[0]), sr=48000)
    expected = features.to_image(features.log_mel(y[-int(crop_s * sr):], sr=sr, config=config.features),
                                 config=config.features)
    np.testing.assert_allclose(last, expected.numpy(), atol=1e-4)


def test_disk_cache_gives_the_same_batches(dataset):
    ids = dataset.labelled_ids[:4]
    mem = RunConfig.from_params({**PARAMS, "audio_cache": "memory"})
    disk = RunConfig.from_params({**PARAMS, "audio_cache": "disk"})
    a = _epoch(pipeline.valid_dataset(dataset, ids, mem, progress=False))
    b = _epoch(pipeline.valid_dataset(dataset, ids, disk, progress=False))
    for (xa, ta), (xb, tb) in zip(a, b):
        np.testing.assert_allclose(xa, xb, atol=1e-3)
        np.testing.assert_array_equal(ta, tb)


def test_errors_name_the_problem(dataset, config):
    unlabelled = sorted(set(dataset.train_ids) - set(dataset.labelled_ids))[:2] or dataset.test_ids[:2]
    with pytest.raises(DataError, match=r"none of the 2 recordings given has a TP or FP row"):
        pipeline.train_dataset(dataset, unlabelled, config, progress=False)
    with pytest.raises(ParameterError, match="recording_ids is empty"):
        pipeline.window_dataset(dataset, [], config)
    with pytest.raises(ParameterError, match=r"samples_per_epoch=2: expected at least batch_size=4"):
        pipeline.train_dataset(dataset, dataset.labelled_ids, config, samples_per_epoch=2, progress=False)


def test_train_dataset_feeds_keras_fit(dataset, config):
    import keras

    from rfcxlib.training.losses import masked_bce

    model = keras.Sequential([keras.Input(pipeline.input_shape(config)), keras.layers.Conv2D(4, 3, strides=4),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(24)])
    model.compile(optimizer="adam", loss=masked_bce)
    ds = pipeline.train_dataset(dataset, dataset.labelled_ids, config, seed=0, samples_per_epoch=8,
                                progress=False)
    history = model.fit(ds, epochs=2, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert isinstance(ds.element_spec[0], tf.TensorSpec)


def test_test_time_augmentation_is_seeded(dataset, config):
    ids = dataset.test_ids[:2]
    plain = np.concatenate([x.numpy() for x, _ in pipeline.window_dataset(dataset, ids, config, progress=False)])

    def tta(seed):
        ds = pipeline.window_dataset(dataset, ids, config, progress=False, tta_seed=seed)
        return np.concatenate([x.numpy() for x, _ in ds]), np.concatenate([i.numpy() for _, i in ds])

    a, index = tta(1)
    assert a.shape == plain.shape and not np.allclose(a, plain)
    np.testing.assert_array_equal(a, tta(1)[0])
    assert not np.allclose(a, tta(2)[0])
    np.testing.assert_array_equal(index, np.concatenate([i.numpy() for _, i in pipeline.window_dataset(
        dataset, ids, config, progress=False)]))


def test_other_rates_and_image_shapes(dataset):
    config = RunConfig.from_params({**PARAMS, "sr": 32000, "image_height": 48, "image_width": 80, "channels": 1,
                                    "audio_cache": "none"})
    assert pipeline.input_shape(config) == (48, 80, 1)
    ids = dataset.labelled_ids[:2]
    x, t = next(iter(pipeline.valid_dataset(dataset, ids, config, progress=False)))
    assert x.shape[1:] == (48, 80, 1) and t.shape[1:] == (48,)
    x, _ = next(iter(pipeline.train_dataset(dataset, ids, config, samples_per_epoch=4, progress=False)))
    assert x.shape == (4, 48, 80, 1) and np.all(np.isfinite(x.numpy()))


def test_frame_targets_follow_the_boxes(dataset, config):
    rid = dataset.tp.recording_id.iloc[0]
    row = dataset.tp[dataset.tp.recording_id == rid].iloc[0]
    t0 = max(0.0, row.t_min - 1.0)
    frames = dataset.frame_targets(rid, t0, t0 + 4.0, 8)  # 0.5 s frames
    inside = (np.arange(8) * 0.5 + t0 < row.t_max) & (np.arange(8) * 0.5 + 0.5 + t0 > row.t_min)
    s = int(row.species_id)
    np.testing.assert_array_equal(frames[:, 24 + s] == 1, inside)  # known exactly where the box is
    np.testing.assert_array_equal(frames[:, s] == 1, inside)  # and present there (a TP row)
    assert np.all(frames[:, :24] <= frames[:, 24:])
    # batches: the clip row equals the clip targets of the same crops
    sed_config = RunConfig.from_params({**PARAMS, "p_mixup": 0.0})
    plain = _epoch(pipeline.train_dataset(dataset, dataset.labelled_ids, sed_config, seed=5,
                                          samples_per_epoch=8, progress=False))
    framed = _epoch(pipeline.train_dataset(dataset, dataset.labelled_ids, sed_config, seed=5,
                                           samples_per_epoch=8, frames=6, progress=False))
    for (x_a, t_a), (x_b, t_b) in zip(plain, framed):
        assert t_b.shape == (4, 7, 48)
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(t_a, t_b[:, 0])
    with pytest.raises(ParameterError, match="p_flip_time"):
        pipeline.train_dataset(dataset, dataset.labelled_ids, RunConfig.from_params({**PARAMS, "p_flip_time": 0.5}),
                               frames=6, progress=False)


def test_mixup_blends_frame_targets_like_clip_targets(dataset):
    from rfcxlib.features import augment

    mix_config = RunConfig.from_params({**PARAMS, "p_mixup": 1.0})
    for x, t in pipeline.train_dataset(dataset, dataset.labelled_ids, mix_config, seed=2, samples_per_epoch=8,
                                       frames=5, progress=False):
        assert t.shape == (4, 6, 48) and np.all(np.isfinite(t.numpy()))
    gen = np.random.default_rng(0)
    a = (gen.random((2, 6, 48)) < 0.5).astype(np.float32)
    b = (gen.random((2, 6, 48)) < 0.5).astype(np.float32)
    lam = np.array([0.3, 0.8], np.float32)
    mixed = augment.mix_targets(a, b, lam).numpy()
    for f in range(6):  # each row blends as clip targets (B, 48) would
        np.testing.assert_allclose(mixed[:, f], augment.mix_targets(a[:, f], b[:, f], lam).numpy(), rtol=1e-6)



def test_band_filter_keeps_the_rows_and_label_of_the_crops_species(dataset):
    plain = dict(batch_size=4, crop_s=4.0, image_width=96, n_mels=64, p_freq_mask=0.0)
    config = RunConfig.from_params({**plain, "p_band_filter": 1.0})
    masks = pipeline.band_masks(dataset, config)
    assert masks.shape == (24, 64) and 0 < masks.sum(1).min() < 64
    for x, t in _epoch(pipeline.train_dataset(dataset, dataset.labelled_ids, config, seed=0,
                                              samples_per_epoch=8, progress=False)):
        for image, targets in zip(x, t):
            known = np.flatnonzero(targets[24:])
            assert len(known) == 1  # only the crop's own species is labelled
            outside = masks[known[0]] == 0
            assert outside.any() and np.all(image[outside] == 0) and np.any(image[~outside] != 0)
    half = RunConfig.from_params({**plain, "p_band_filter": 0.5})
    t = np.concatenate([t for _, t in _epoch(pipeline.train_dataset(
        dataset, dataset.labelled_ids, half, seed=0, samples_per_epoch=32, progress=False))])
    filtered = (t[:, 24:] > 0).sum(1) == 1
    assert 0 < filtered.mean() < 1
    with pytest.raises(ParameterError, match=r"'p_band_filter' = 1.0.*image_height=32"):
        RunConfig.from_params({**plain, "p_band_filter": 1.0, "image_height": 32})
