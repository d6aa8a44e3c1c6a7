"""Background mix: another crop of the batch under each training crop at an SNR in range, seeded,
labels kept (a known absence turned unknown where the added crop holds that species), training only."""
from __future__ import annotations

import numpy as np
import pytest

from rfcxlib.data import tables as data
from rfcxlib.features import pipeline
from rfcxlib.features.background_mix import background_mix
from rfcxlib.config import AugmentConfig, RunConfig
from rfcxlib.errors import ParameterError

PLAIN = dict(batch_size=4, crop_s=3.0, n_mels=32, channels=1, p_time_mask=0.0, p_freq_mask=0.0,
             p_band_filter=0.0, p_mixup=0.0)


def _batch(rng, n=6, samples=4800):
    y = rng.standard_normal((n, samples)).astype(np.float32) * rng.uniform(0.1, 1.0, (n, 1)).astype(np.float32)
    t = np.zeros((n, 48), np.float32)
    t[0, [3, 24 + 3]] = 1.0  # crop 0: species 3 present
    t[1, 24 + 3] = 1.0  # crop 1: species 3 known absent
    return y, t


def test_mix_adds_another_crop_at_an_snr_in_range(rng):
    y, t = _batch(rng)
    config = AugmentConfig(p_background_mix=1.0, background_snr_db=(0.0, 10.0))
    mixed, targets, applied = (v.numpy() for v in background_mix(y, t, seed=3, config=config, return_applied=True))
    assert applied.all()
    added = mixed - y
    snr = 10 * np.log10(np.mean(y**2, 1) / np.mean(added**2, 1))
    assert np.all((snr > -0.01) & (snr < 10.01)), snr
    partner = [np.flatnonzero(np.abs(np.corrcoef(added[i], y)[0, 1:]) > 0.99) for i in range(len(y))]
    assert all(len(p) == 1 and p[0] != i for i, p in enumerate(partner))  # one other crop each
    again = background_mix(y, t, seed=3, config=config)[0].numpy()
    np.testing.assert_array_equal(again, mixed)
    assert not np.allclose(background_mix(y, t, seed=4, config=config)[0].numpy(), mixed)
    np.testing.assert_array_equal(targets[:, :24], t[:, :24])  # labels kept, the added TPs not added
    changed = np.argwhere(targets != t)
    if partner[1][0] == 0:  # a known absence under a call of that species becomes unknown
        assert changed.tolist() == [[1, 24 + 3]] and targets[1, 24 + 3] == 0
    else:
        assert changed.size == 0


def test_off_by_default_with_p_zero_and_without_augment(rng):
    y, t = _batch(rng)
    for config in (AugmentConfig(), AugmentConfig(p_background_mix=1.0, augment=False)):
        out_y, out_t = background_mix(y, t, seed=0, config=config)
        np.testing.assert_array_equal(out_y.numpy(), y)
        np.testing.assert_array_equal(out_t.numpy(), t)
    one = background_mix(y[:1], t[:1], seed=0, config=AugmentConfig(p_background_mix=1.0))[0].numpy()
    np.testing.assert_array_equal(one, y[:1])  # a batch of one has no other crop


def test_parameters_are_checked():
    with pytest.raises(ParameterError, match=r"'p_background_mix' = 1.5: expected a probability"):
        AugmentConfig(p_background_mix=1.5)
    with pytest.raises(ParameterError, match=r"'background_snr_db' = \(10.0, 0.0\).*low <= high"):
        AugmentConfig(background_snr_db=(10.0, 0.0))
    with pytest.raises(ParameterError, match=r"'background_snr_db' = \(1.0,\): expected two SNRs"):
        RunConfig.from_params({"background_snr_db": [1.0]})
    assert RunConfig.from_params({"background_snr_db": [0, 5]}).augment.background_snr_db == (0.0, 5.0)


def test_pipeline_mixes_training_crops_only(tiny_data_dir):
    dataset = data.load_dataset(tiny_data_dir)
    ids = dataset.labelled_ids

    def epoch(params, builder="train"):
        config = RunConfig.from_params({**PLAIN, **params})
        if builder == "valid":
            ds = pipeline.valid_dataset(dataset, ids[:6], config, progress=False)
        else:
            ds = pipeline.train_dataset(dataset, ids, config, seed=0, samples_per_epoch=8, progress=False)
        return [(x.numpy(), t.numpy()) for x, t in ds]

    off, on, zero = epoch({}), epoch({"p_background_mix": 1.0}), epoch({"p_background_mix": 0.0})
    again = epoch({"p_background_mix": 1.0})
    for (x0, t0), (x1, t1), (xz, tz), (xa, ta) in zip(off, on, zero, again):
        np.testing.assert_array_equal(xz, x0)
        np.testing.assert_array_equal(xa, x1)  # seeded
        assert np.abs(x1 - x0).max(axis=(1, 2, 3)).min() > 1e-3  # every crop changed
        np.testing.assert_array_equal(t1[:, :24], t0[:, :24])
        m1, m0 = t1[:, 24:], t0[:, 24:]
        assert np.all(m1 <= m0) and np.all(t0[:, :24][m1 != m0] == 0)  # only known absences turn unknown
    for (x0, t0), (x1, t1) in zip(epoch({}, "valid"), epoch({"p_background_mix": 1.0}, "valid")):
        np.testing.assert_array_equal(x1, x0)
        np.testing.assert_array_equal(t1, t0)
