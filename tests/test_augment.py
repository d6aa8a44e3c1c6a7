import numpy as np
import pytest
import tensorflow as tf

from rfcxlib.features import augment
from rfcxlib.training import losses
from rfcxlib.audio.decode import tfio_status
from rfcxlib.config import AugmentConfig
from rfcxlib.errors import ParameterError

ALL_ON = AugmentConfig(p_gain=1.0, p_wave_noise=1.0, p_shift=1.0, p_time_mask=1.0, p_freq_mask=1.0,
                       p_resize_crop=1.0, p_noise=1.0, p_brightness=1.0, p_flip_time=1.0,
                       p_flip_freq=1.0, p_mixup=1.0)


@pytest.fixture
def image(rng):
    return tf.constant(rng.standard_normal((32, 80, 3)).astype(np.float32))


@pytest.fixture
def wave(signals):
    return tf.constant(signals["chirp"].astype(np.float32))


@pytest.mark.parametrize("name", list(augment.IMAGE_STEPS))
def test_image_steps_keep_shape_and_dtype(image, name):
    out = augment.apply_step(name, image, seed=1, config=ALL_ON)
    assert out.shape == image.shape and out.dtype == tf.float32
    assert not np.array_equal(out.numpy(), image.numpy()) or name.endswith("mask")


@pytest.mark.parametrize("name", list(augment.WAVE_STEPS))
def test_wave_steps_keep_shape_and_dtype(wave, name):
    out = augment.apply_step(name, wave, seed=1, config=ALL_ON)
    assert out.shape == wave.shape and out.dtype == tf.float32
    assert not np.array_equal(out.numpy(), wave.numpy())


def test_validation_switch_changes_nothing(image, wave):
    off = AugmentConfig(**{**ALL_ON.__dict__, "augment": False})
    out, trace = augment.augment_image(image, seed=3, config=off, trace=True)
    np.testing.assert_array_equal(out.numpy(), image.numpy())
    assert [name for name, _ in trace] == ["input"]
    np.testing.assert_array_equal(augment.augment_waveform(wave, seed=3, config=off).numpy(), wave.numpy())
    targets = tf.concat([tf.eye(4, 24), tf.ones((4, 24))], axis=1)
    batch = tf.stack([image] * 4)
    x, t = augment.mixup(batch, targets, seed=0, config=off)
    np.testing.assert_array_equal(x.numpy(), batch.numpy())
    np.testing.assert_array_equal(t.numpy(), targets.numpy())


def test_fixed_seed_repeats_and_seeds_differ(image, wave):
    a = augment.augment_image(image, seed=7, config=ALL_ON).numpy()
    b = augment.augment_image(image, seed=7, config=ALL_ON).numpy()
    c = augment.augment_image(image, seed=8, config=ALL_ON).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    w1 = augment.augment_waveform(wave, seed=7, config=ALL_ON).numpy()
    np.testing.assert_array_equal(w1, augment.augment_waveform(wave, seed=7, config=ALL_ON).numpy())


def test_same_results_inside_parallel_tf_data(image):
    images = tf.stack([image, image * 2, image - 1, image * 0.5])
    ds = tf.data.Dataset.from_tensor_slices(images).enumerate()
    ds = ds.map(lambda i, x: augment.augment_image(x, seed=tf.stack([i, i]), config=ALL_ON),
                num_parallel_calls=4, deterministic=True)
    for i, out in enumerate(ds):
        eager = augment.augment_image(images[i], seed=tf.constant([i, i], tf.int64), config=ALL_ON)
        np.testing.assert_allclose(out.numpy(), eager.numpy(), atol=1e-6)


def test_trace_records_each_enabled_step(image):
    config = AugmentConfig(p_time_mask=1.0, p_freq_mask=0.0, p_noise=1.0)
    out, trace = augment.augment_image(image, seed=1, config=config, trace=True)
    assert [name for name, _ in trace] == ["input", "time_mask", "noise"]
    np.testing.assert_array_equal(trace[-1][1].numpy(), out.numpy())


def test_probability_gates_a_step(image):
    config = AugmentConfig(p_time_mask=0.0, p_freq_mask=0.0, p_flip_time=0.5)
    flipped = sum(not np.array_equal(augment.augment_image(image, seed=s, config=config).numpy(),
                                     image.numpy()) for s in range(40))
    assert 8 <= flipped <= 32


def _zero_band(flags):
    idx = np.flatnonzero(flags)
    return idx.size == 0 or np.all(np.diff(idx) == 1), idx.size


@pytest.mark.parametrize("impl", ["tf", "tfio"])
def test_masks_zero_one_contiguous_band(impl):
    if impl == "tfio" and not tfio_status()[0]:
        pytest.skip("tensorflow-io's ops do not load here")
    x = tf.ones((64, 200, 3))
    config = AugmentConfig(mask_impl=impl, time_mask=50, freq_mask=16)
    widths = []
    for s in range(20):
        tm = augment.time_mask(x, augment.as_seed(s), config).numpy()
        cols = (tm == 0).all(axis=(0, 2))
        contiguous, width = _zero_band(cols)
        assert contiguous and width < 50 and (tm[:, ~cols] == 1).all()
        fm = augment.freq_mask(x, augment.as_seed(s), config).numpy()
        rows = (fm == 0).all(axis=(1, 2))
        contiguous, fwidth = _zero_band(rows)
        assert contiguous and fwidth < 16 and (fm[~rows] == 1).all()
        widths.append(width)
    assert max(widths) > 10


def test_wave_noise_hits_the_snr(wave):
    for color in ("pink", "white"):
        config = AugmentConfig(snr_db_min=12.0, snr_db_max=12.0, wave_noise=color)
        noisy = augment.wave_noise(wave, augment.as_seed(4), config)
        assert augment.snr_db(wave, noisy) == pytest.approx(12.0, abs=0.05)


def test_pink_noise_has_more_low_than_high_energy():
    noise = augment.colored_noise(48000, augment.as_seed(1), color="pink").numpy()
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(48000, 1 / 48000)
    low = power[(freqs > 100) & (freqs < 200)].mean()
    high = power[(freqs > 10000) & (freqs < 10100)].mean()
    assert 30 < low / high < 200  # 1/f: ~67x between 150 Hz and 10 kHz


def test_gain_and_shift_ranges(wave):
    config = AugmentConfig(gain_db=6.0, shift_s=0.5)
    for s in range(10):
        ratio = float(tf.reduce_max(tf.abs(augment.gain(wave, augment.as_seed(s), config)))) / float(
            tf.reduce_max(tf.abs(wave)))
        assert 10 ** (-6 / 20) - 1e-6 <= ratio <= 10 ** (6 / 20) + 1e-6
        shifted = augment.shift(wave, augment.as_seed(s), config, 48000).numpy()
        n = len(shifted)
        corr = np.fft.irfft(np.fft.rfft(shifted) * np.conj(np.fft.rfft(wave.numpy())), n=n)
        k = int(corr.argmax())
        k = k - n if k > n // 2 else k
        assert abs(k) <= 24000
        np.testing.assert_array_equal(np.roll(wave.numpy(), k), shifted)


def test_mixup_blends_images_and_targets_consistently(rng):
    n, s = 6, 24
    x = tf.constant(rng.standard_normal((n, 8, 10, 3)).astype(np.float32))
    y = (rng.random((n, s)) < 0.2).astype(np.float32)
    mask = (rng.random((n, s)) < 0.3).astype(np.float32)
    y *= mask
    targets = losses.pack_targets(y, mask)
    config = AugmentConfig(p_mixup=1.0, mixup_alpha=0.4)
    xm, tm, lam = augment.mixup(x, targets, seed=11, config=config, return_lambda=True)
    lam = lam.numpy()
    perm = tf.random.experimental.stateless_shuffle(
        tf.range(n), seed=tf.random.experimental.stateless_split(augment.as_seed(11), 3)[0]).numpy()
    expected = lam[:, None, None, None] * x.numpy() + (1 - lam[:, None, None, None]) * x.numpy()[perm]
    np.testing.assert_allclose(xm.numpy(), expected, atol=1e-5)
    ym, mm = (t.numpy() for t in losses.split_targets(tm))
    np.testing.assert_allclose(mm, lam[:, None] * mask + (1 - lam[:, None]) * mask[perm], atol=1e-6)
    both_unknown = (mask == 0) & (mask[perm] == 0)
    assert (mm[both_unknown] == 0).all() and (ym[both_unknown] == 0).all()
    assert ((ym >= 0) & (ym <= 1 + 1e-6)).all()
    logits = tf.constant(rng.standard_normal((n, s)).astype(np.float32))
    mixed_loss = losses.masked_bce(tm, logits).numpy()
    loss_a = losses.masked_bce(targets, logits).numpy()
    loss_b = losses.masked_bce(tf.gather(targets, perm), logits).numpy()
    np.testing.assert_allclose(mixed_loss, lam * loss_a + (1 - lam) * loss_b, rtol=1e-5, atol=1e-6)


def test_mixup_lambda_follows_beta():
    lam = augment.sample_lambda(20000, 3, alpha=0.4).numpy()
    assert lam.min() >= 0 and lam.max() <= 1
    assert lam.mean() == pytest.approx(0.5, abs=0.02)
    assert lam.var() == pytest.approx(0.25 / (2 * 0.4 + 1), abs=0.01)  # Beta(a, a) variance


def test_mixup_probability_zero_leaves_the_batch(rng):
    x = tf.constant(rng.standard_normal((4, 5, 5, 1)).astype(np.float32))
    targets = tf.ones((4, 48))
    out, t = augment.mixup(x, targets, seed=0, config=AugmentConfig(p_mixup=0.0))
    np.testing.assert_array_equal(out.numpy(), x.numpy())


def test_errors_are_clear(image, wave):
    with pytest.raises(ParameterError, match=r"shape \(2, 32, 80, 3\).*one image"):
        augment.augment_image(tf.stack([image, image]), seed=0)
    with pytest.raises(ParameterError, match=r"one waveform"):
        augment.augment_waveform(tf.stack([wave, wave]), seed=0)
    with pytest.raises(ParameterError, match=r"unknown augmentation step 'blur'.*'time_mask'"):
        augment.apply_step("blur", image, seed=0)
    with pytest.raises(ParameterError, match=r"'p_noise' = 1.5"):
        AugmentConfig(p_noise=1.5)
    with pytest.raises(ParameterError, match=r"'mask_impl'"):
        AugmentConfig(mask_impl="torch")


def test_tfio_masks_fall_back_when_its_ops_cannot_load(monkeypatch):
    from rfcxlib.audio import decode as audio

    monkeypatch.setattr(audio, "tfio_status", lambda: (False, "NotImplementedError: undefined symbol"))
    x = tf.ones((32, 120, 3))
    config = AugmentConfig(mask_impl="tfio", time_mask=40)
    out = augment.time_mask(x, augment.as_seed(2), config)
    np.testing.assert_array_equal(out.numpy(), augment.time_mask(x, augment.as_seed(2),
                                                                 AugmentConfig(time_mask=40)).numpy())
