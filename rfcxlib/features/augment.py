"""Augmentations: waveform, spectrogram-image and batch (mixup), usable inside ``tf.data`` graphs.

Each transform is a named step with a probability (``AugmentConfig.p_<name>``) and draws its
randomness from a *stateless* seed (an int64 tensor of shape ``(2,)``), so a fixed seed repeats
exactly, in eager code and inside ``tf.data.Dataset.map`` with parallel calls alike.
``AugmentConfig.augment=False`` (validation) turns every step into the identity. ``trace=True``
returns each step's output, for the augmentation notebook.

Steps, in the order they run:

- waveform ``(n,)``: ``gain`` (± ``gain_db``), ``wave_noise`` (pink or white noise at an SNR drawn
  from ``[snr_db_min, snr_db_max]``), ``shift`` (circular shift by up to ± ``shift_s``);
- image ``(H, W, C)`` (frequency × time × channels, see :mod:`rfcxlib.features.logmel`): ``resize_crop``
  (a random box of ``crop_scale_min``–1 of each side, resized back), ``flip_time``, ``flip_freq``,
  ``time_mask`` and ``freq_mask`` (SpecAugment: one band of up to ``time_mask`` frames / ``freq_mask``
  mel rows set to 0, applied per example), ``noise`` (Gaussian, ``noise_std``), ``brightness``
  (an offset in ± ``brightness``);
- batch: :func:`mixup`.

``mask_impl="tfio"`` uses ``tfio.audio.time_mask`` / ``freq_mask`` (same distribution as the
built-in masks, but drawn from TensorFlow's global random state, so not reproducible from the
seed); when tensorflow-io cannot load, the built-in masks are used.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import tensorflow as tf

from rfcxlib.audio import decode as audio
from rfcxlib.config import AugmentConfig
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.training.losses import pack_targets, split_targets
from rfcxlib.layout import SAMPLE_RATE


def as_seed(seed) -> tf.Tensor:
    """An int (or a ``(2,)`` seed) -> a stateless seed, int64 ``(2,)``."""
    seed = tf.convert_to_tensor(seed)
    if seed.shape.rank == 0:
        return tf.stack([tf.cast(seed, tf.int64), tf.constant(0x5EED, tf.int64)])
    return tf.cast(seed, tf.int64)


def _uniform(seed, minval=0.0, maxval=1.0, shape=()):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


# --------------------------------------------------------------------------- waveform steps
def gain(y, seed, config: AugmentConfig, sr: int = SAMPLE_RATE):
    """Scale by a gain drawn uniformly in ± ``gain_db`` dB."""
    g_db = _uniform(seed, -config.gain_db, config.gain_db)
    return y * tf.pow(10.0, g_db / 20.0)


NOISE_BANK_SAMPLES = 2**22  # 87 s at 48 kHz: longer than any crop


_BANKS: dict[str, tf.Tensor] = {}


def noise_bank(color: str = "pink") -> tf.Tensor:
    """A fixed ``(2 * NOISE_BANK_SAMPLES,)`` unit-RMS noise signal (the bank written twice, so any
    slice of up to ``NOISE_BANK_SAMPLES`` from any offset is contiguous noise).

    Slicing a precomputed bank at a random offset costs a copy, where drawing fresh noise costs a
    Gaussian draw and two FFTs per crop (measured: the pipeline's throughput halved).
    """
    if color not in ("pink", "white"):
        raise unknown_choice("noise colour", color, ("pink", "white"))
    if color not in _BANKS:
        with tf.init_scope():  # an eager constant, shared by every graph that captures it
            _BANKS[color] = tf.constant(_noise_bank_array(color))
    return _BANKS[color]


def _noise_bank_array(color: str) -> np.ndarray:
    gen = np.random.default_rng(20210101)
    white = gen.standard_normal(NOISE_BANK_SAMPLES)
    if color == "pink":
        spectrum = np.fft.rfft(white)
        k = np.arange(spectrum.size, dtype=np.float64)
        hz = k * float(SAMPLE_RATE) / NOISE_BANK_SAMPLES
        spectrum *= np.where(hz >= 20.0, 1.0 / np.sqrt(np.maximum(k, 1.0)), 0.0)  # power 1/f above 20 Hz
        white = np.fft.irfft(spectrum, n=NOISE_BANK_SAMPLES)
    bank = (white / np.sqrt(np.mean(white**2))).astype(np.float32)
    return np.concatenate([bank, bank])


def colored_noise(n, seed, *, color: str = "pink"):
    """``n`` samples of unit-RMS noise, ``"pink"`` (power ∝ 1/f above 20 Hz) or ``"white"``: a random slice
    (offset and sign from ``seed``) of :func:`noise_bank`; ``n <= NOISE_BANK_SAMPLES``."""
    bank = noise_bank(color)
    s_offset, s_sign = tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 2))
    start = tf.random.stateless_uniform((), seed=s_offset, minval=0, maxval=NOISE_BANK_SAMPLES,
                                        dtype=tf.int32)
    tf.debugging.assert_less_equal(n, NOISE_BANK_SAMPLES, message="noise longer than the noise bank")
    sign = tf.where(_uniform(s_sign) < 0.5, -1.0, 1.0)
    piece = bank[start:start + n]
    return sign * piece * tf.math.rsqrt(tf.reduce_mean(tf.square(piece)) + 1e-20)


def wave_noise(y, seed, config: AugmentConfig, sr: int = SAMPLE_RATE):
    """Add pink or white noise at an SNR drawn from ``[snr_db_min, snr_db_max]`` dB."""
    s_snr, s_noise = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    snr_db = _uniform(s_snr, config.snr_db_min, config.snr_db_max + 1e-6)
    signal_power = tf.reduce_mean(tf.square(y)) + 1e-10
    noise = colored_noise(tf.shape(y)[0], s_noise, color=config.wave_noise)
    return y + noise * tf.sqrt(signal_power / tf.pow(10.0, snr_db / 10.0))


def shift(y, seed, config: AugmentConfig, sr: int = SAMPLE_RATE):
    """Circular shift by up to ± ``shift_s`` seconds."""
    limit = int(config.shift_s * sr)
    k = tf.random.stateless_uniform((), seed=seed, minval=-limit, maxval=limit + 1, dtype=tf.int32)
    return tf.roll(y, k, axis=0)


# --------------------------------------------------------------------------- image steps
def _band_mask(length, width_max, seed):
    """A boolean ``(length,)`` band of ``[0, width_max)`` positions at a random start."""
    s_w, s_0 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    width_max = tf.minimum(tf.cast(width_max, tf.int32), length)
    width = tf.random.stateless_uniform((), seed=s_w, minval=0, maxval=tf.maximum(width_max, 1),
                                        dtype=tf.int32)
    start = tf.random.stateless_uniform((), seed=s_0, minval=0, maxval=tf.maximum(length - width, 1),
                                        dtype=tf.int32)
    idx = tf.range(length)
    return (idx >= start) & (idx < start + width)


def _tfio_mask(x, param, axis):
    if not audio.tfio_status()[0]:
        return None
    import tensorflow_io as tfio

    h, w, c = tf.unstack(tf.shape(x))
    if axis == "time":  # tfio wants (time, freq): time rows, everything else in columns
        flat = tf.reshape(tf.transpose(x, [1, 0, 2]), [w, h * c])
        return tf.transpose(tf.reshape(tfio.audio.time_mask(flat, param), [w, h, c]), [1, 0, 2])
    flat = tf.reshape(tf.transpose(x, [2, 1, 0]), [c * w, h])  # freq in columns
    return tf.transpose(tf.reshape(tfio.audio.freq_mask(flat, param), [c, w, h]), [2, 1, 0])


def time_mask(x, seed, config: AugmentConfig):
    """SpecAugment time mask: up to ``time_mask`` consecutive frames (columns) set to 0."""
    if config.mask_impl == "tfio":
        out = _tfio_mask(x, config.time_mask, "time")
        if out is not None:
            return out
    band = _band_mask(tf.shape(x)[1], config.time_mask, seed)
    return tf.where(band[tf.newaxis, :, tf.newaxis], tf.zeros_like(x), x)


def freq_mask(x, seed, config: AugmentConfig):
    """SpecAugment frequency mask: up to ``freq_mask`` consecutive mel rows set to 0."""
    if config.mask_impl == "tfio":
        out = _tfio_mask(x, config.freq_mask, "freq")
        if out is not None:
            return out
    band = _band_mask(tf.shape(x)[0], config.freq_mask, seed)
    return tf.where(band[:, tf.newaxis, tf.newaxis], tf.zeros_like(x), x)


def resize_crop(x, seed, config: AugmentConfig):
    """Crop a random box of ``crop_scale_min``–1 of each side and resize it back to ``(H, W)``."""
    s_scale, s_pos = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    size = _uniform(s_scale, config.crop_scale_min, 1.0, shape=(2,))
    corner = _uniform(s_pos, shape=(2,)) * (1.0 - size)
    box = tf.concat([corner, corner + size], axis=0)[tf.newaxis]
    hw = tf.shape(x)[:2]
    out = tf.image.crop_and_resize(x[tf.newaxis], box, tf.zeros([1], tf.int32), hw)[0]
    return tf.ensure_shape(out, x.shape)


def noise(x, seed, config: AugmentConfig):
    """Add Gaussian noise of standard deviation ``noise_std``."""
    return x + config.noise_std * tf.random.stateless_normal(tf.shape(x), seed=seed)


def brightness(x, seed, config: AugmentConfig):
    """Add one offset drawn uniformly in ± ``brightness``."""
    return x + _uniform(seed, -config.brightness, config.brightness)


def flip_time(x, seed, config: AugmentConfig):
    """Reverse the time axis."""
    return tf.reverse(x, axis=[1])


def flip_freq(x, seed, config: AugmentConfig):
    """Reverse the frequency axis."""
    return tf.reverse(x, axis=[0])


WAVE_STEPS = {"gain": gain, "wave_noise": wave_noise, "shift": shift}
IMAGE_STEPS = {"resize_crop": resize_crop, "flip_time": flip_time, "flip_freq": flip_freq,
               "time_mask": time_mask, "freq_mask": freq_mask, "noise": noise, "brightness": brightness}


def _run_steps(x, steps: dict, seed, config: AugmentConfig, trace: bool, extra=None):
    seed = as_seed(seed)
    outputs = [("input", x)]
    if not config.augment:
        return (x, outputs) if trace else x
    seeds = tf.random.experimental.stateless_split(seed, 2 * len(steps))
    for i, (name, fn) in enumerate(steps.items()):
        p = getattr(config, f"p_{name}")
        if p <= 0.0:
            continue
        args = (seeds[2 * i + 1], config) + ((extra,) if extra is not None else ())
        apply = _uniform(seeds[2 * i]) < p
        x = tf.cond(apply, lambda: fn(x, *args), lambda: tf.identity(x)) if p < 1.0 else fn(x, *args)
        outputs.append((name, x))
    return (x, outputs) if trace else x


def augment_waveform(y, *, seed, config: Optional[AugmentConfig] = None, sr: int = SAMPLE_RATE,
                     trace: bool = False):
    """Waveform steps on one crop ``y`` ``(n,)`` float32; ``trace=True`` also returns
    ``[(step, output), ...]`` (``"input"`` first; steps with probability 0 are left out)."""
    c = config or AugmentConfig()
    y = tf.convert_to_tensor(y, tf.float32)
    if y.shape.rank != 1:
        raise ParameterError(f"y has shape {y.shape}: expected one waveform (n,); map over a batch")
    return _run_steps(y, WAVE_STEPS, seed, c, trace, extra=sr)


def augment_image(x, *, seed, config: Optional[AugmentConfig] = None, trace: bool = False):
    """Image steps on one example ``x`` ``(H, W, C)`` float32 (SpecAugment masks reject batches);
    ``trace=True`` also returns ``[(step, output), ...]``."""
    c = config or AugmentConfig()
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape.rank != 3:
        raise ParameterError(f"x has shape {x.shape}: expected one image (H, W, C); map over a batch")
    return _run_steps(x, IMAGE_STEPS, seed, c, trace)


def apply_step(name: str, x, *, seed, config: Optional[AugmentConfig] = None, sr: int = SAMPLE_RATE):
    """Apply one step unconditionally (probability ignored): for before/after figures."""
    c = config or AugmentConfig()
    x = tf.convert_to_tensor(x, tf.float32)
    if name in WAVE_STEPS:
        return WAVE_STEPS[name](x, as_seed(seed), c, sr)
    if name in IMAGE_STEPS:
        return IMAGE_STEPS[name](x, as_seed(seed), c)
    raise unknown_choice("augmentation step", name, {**WAVE_STEPS, **IMAGE_STEPS, "mixup": None})


# --------------------------------------------------------------------------- mixup
def mix_targets(targets_a, targets_b, lam):
    """Blend packed targets ``[y | mask]`` ``(B, 2 * S)`` (or ``(B, F, 2 * S)``) with weights ``lam`` ``(B,)``.

    The blended mask is ``m = lam * m_a + (1 - lam) * m_b`` (a soft weight per cell) and the blended
    label ``y = (lam * m_a * y_a + (1 - lam) * m_b * y_b) / m`` (0 where ``m = 0``). Since BCE is
    linear in its label, masked BCE on the blend equals ``lam * loss_a + (1 - lam) * loss_b``
    exactly: a cell known in only one example counts with that example's weight, a cell unknown in
    both stays unknown.
    """
    y_a, m_a = split_targets(targets_a)
    y_b, m_b = split_targets(targets_b)
    lam = tf.cast(lam, tf.float32)  # (B,) -> (B, 1, ...): frame targets (B, F, 2 * S) blend alike
    lam = tf.reshape(lam, tf.concat([tf.shape(lam), tf.ones([tf.rank(y_a) - 1], tf.int32)], axis=0))
    w_a, w_b = lam * m_a, (1.0 - lam) * m_b
    mask = w_a + w_b
    y = tf.math.divide_no_nan(w_a * y_a + w_b * y_b, mask)
    return pack_targets(y, mask)


def mix_pair(x_a, targets_a, x_b, targets_b, lam: float):
    """Blend two examples by ``lam``: ``(lam * x_a + (1 - lam) * x_b, mix_targets(...))`` with
    targets ``(2 * S,)``; the pairwise form of :func:`mixup`, for figures and checks."""
    lam = tf.constant(float(lam), tf.float32)
    x = lam * tf.convert_to_tensor(x_a, tf.float32) + (1.0 - lam) * tf.convert_to_tensor(x_b, tf.float32)
    t = mix_targets(tf.reshape(targets_a, [1, -1]), tf.reshape(targets_b, [1, -1]), tf.reshape(lam, [1]))
    return x, t[0]


def sample_lambda(n, seed, *, alpha: float):
    """``n`` draws of λ ~ Beta(alpha, alpha) (as the ratio of two Gamma draws)."""
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 2))
    g1 = tf.random.stateless_gamma(tf.reshape(n, [1]), seed=s1, alpha=alpha)
    g2 = tf.random.stateless_gamma(tf.reshape(n, [1]), seed=s2, alpha=alpha)
    return g1 / (g1 + g2 + 1e-12)


def mixup(x, targets, *, seed, config: Optional[AugmentConfig] = None, return_lambda: bool = False):
    """Mixup within a batch: each example is blended, with probability ``p_mixup``, with another
    example of the batch (a random permutation) by λ ~ Beta(``mixup_alpha``, ``mixup_alpha``).

    Parameters
    ----------
    x : tf.Tensor [shape=(B, ...)]
    targets : tf.Tensor [shape=(B, 2 * num_species) or (B, 1 + F, 2 * num_species)]
        Packed ``[y | mask]`` (clip, or clip and frames); blended by :func:`mix_targets`.

    Returns
    -------
    x, targets (and λ ``(B,)`` with ``return_lambda``); λ = 1 for examples left unmixed.
    """
    c = config or AugmentConfig()
    x = tf.convert_to_tensor(x, tf.float32)
    targets = tf.convert_to_tensor(targets, tf.float32)
    n = tf.shape(x)[0]
    if not c.augment or c.p_mixup <= 0.0:
        return (x, targets, tf.ones([n])) if return_lambda else (x, targets)
    s_perm, s_lam, s_apply = tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 3))
    perm = tf.random.experimental.stateless_shuffle(tf.range(n), seed=s_perm)
    lam = sample_lambda(n, s_lam, alpha=c.mixup_alpha)
    lam = tf.where(_uniform(s_apply, shape=tf.reshape(n, [1])) < c.p_mixup, lam, tf.ones_like(lam))
    shape = tf.concat([[n], tf.ones([tf.rank(x) - 1], tf.int32)], axis=0)
    lam_x = tf.reshape(lam, shape)
    x_mix = lam_x * x + (1.0 - lam_x) * tf.gather(x, perm)
    t_mix = mix_targets(targets, tf.gather(targets, perm), lam)
    return (x_mix, t_mix, lam) if return_lambda else (x_mix, t_mix)


def snr_db(clean, noisy) -> float:
    """Signal-to-noise ratio (dB) of ``noisy`` against ``clean``: a check for :func:`wave_noise`."""
    clean = tf.convert_to_tensor(clean, tf.float32)
    residual = tf.convert_to_tensor(noisy, tf.float32) - clean
    ratio = tf.reduce_mean(tf.square(clean)) / (tf.reduce_mean(tf.square(residual)) + 1e-20)
    return float(10.0 * math.log10(float(ratio) + 1e-20))
