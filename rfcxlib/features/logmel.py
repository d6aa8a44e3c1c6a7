"""Log-mel features: STFT ▶ power ▶ mel ▶ log (or PCEN), frequency-band crops, shaping to the model input.

Everything runs on ``tf.signal`` so the same code works eagerly (notebooks), inside ``tf.data``
graphs (the input pipeline) and on an accelerator (the :class:`LogMel` Keras layer).

Conventions
-----------
- A spectrogram ``S`` has shape ``(..., frames, n_mels)``: time first, mel bins last, row 0 of the
  mel axis is the lowest band.
- An image has shape ``(H, W, C)`` = ``(n_mels or image_height, frames or image_width, channels)``:
  frequency on the vertical axis, time on the horizontal one (plot with ``origin="lower"``).
- Frames are not centred (no padding): ``frames = 1 + (n - win_length) // hop_length``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from rfcxlib.features import image_channels, pcen
from rfcxlib.config import FeatureConfig, check
from rfcxlib.errors import ParameterError
from rfcxlib.layout import SAMPLE_RATE

LOG_EPS = 1e-4


# --------------------------------------------------------------------------- mel scale
def hz_to_mel(frequencies, *, htk: bool = True):
    """Hz -> mel. ``htk=True``: 2595 log10(1 + f/700); else Slaney's (linear below 1 kHz)."""
    f = np.asanyarray(frequencies, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mel)


def mel_to_hz(mels, *, htk: bool = True):
    """Inverse of :func:`hz_to_mel`."""
    m = np.asanyarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    f_sp, min_log_hz, min_log_mel, logstep = 200.0 / 3, 1000.0, 15.0, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_frequencies(n_mels: int = 128, *, fmin: float = 40.0, fmax: float = 15000.0,
                    htk: bool = True) -> np.ndarray:
    """``n_mels`` frequencies (Hz) evenly spaced on the mel scale from ``fmin`` to ``fmax``.

    Returns
    -------
    np.ndarray [shape=(n_mels,)]
    """
    mels = np.linspace(hz_to_mel(fmin, htk=htk), hz_to_mel(fmax, htk=htk), n_mels)
    return mel_to_hz(mels, htk=htk)


def mel_band_centers(config: Optional[FeatureConfig] = None) -> np.ndarray:
    """Centre frequency (Hz) of each of the ``n_mels`` bands of ``config``: ``(n_mels,)``."""
    c = config or FeatureConfig()
    return mel_frequencies(c.n_mels + 2, fmin=c.fmin, fmax=c.fmax, htk=c.mel_scale == "htk")[1:-1]


@functools.lru_cache(maxsize=32)
def _filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    fft_hz = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_hz = mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax, htk=htk)
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    if norm == "slaney":
        weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


def mel_filterbank(*, sr: int, n_fft: int = 2048, n_mels: int = 128, fmin: float = 40.0,
                   fmax: float = 15000.0, htk: bool = True, norm: Optional[str] = None) -> np.ndarray:
    """Triangular mel filters over the ``1 + n_fft // 2`` STFT bins.

    The same construction as ``librosa.filters.mel`` (``htk=True, norm=None`` gives the unnormalised
    HTK filters; ``htk=False, norm="slaney"`` librosa's defaults).

    Returns
    -------
    np.ndarray [shape=(n_mels, 1 + n_fft // 2)], float32, read-only
    """
    check(sr > 0, "sr", sr, "a positive sample rate in Hz")
    check(0 <= fmin < fmax <= sr / 2, "fmax", fmax, f"fmin ({fmin}) < fmax <= sr / 2 ({sr / 2})")
    check(norm in (None, "slaney"), "norm", norm, "None or 'slaney'")
    return _filterbank(int(sr), int(n_fft), int(n_mels), float(fmin), float(fmax), bool(htk), norm)


def config_filterbank(*, sr: int, config: FeatureConfig) -> np.ndarray:
    """:func:`mel_filterbank` of ``config`` (its ``n_fft``, ``n_mels``, ``fmin``, ``fmax``; HTK filters,
    or librosa's Slaney filters and normalisation when ``mel_scale="slaney"``):
    ``(n_mels, 1 + n_fft // 2)``."""
    slaney = config.mel_scale == "slaney"
    return mel_filterbank(sr=sr, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
                          fmax=config.fmax, htk=not slaney, norm="slaney" if slaney else None)


# --------------------------------------------------------------------------- log-mel
def num_frames(n_samples: int, *, config: Optional[FeatureConfig] = None) -> int:
    """Number of STFT frames for ``n_samples`` samples (no centring)."""
    c = config or FeatureConfig()
    if n_samples < c.win_length:
        raise ParameterError(f"audio of {n_samples} samples is shorter than one STFT frame "
                             f"(win_length={c.win_length})")
    return 1 + (int(n_samples) - c.win_length) // c.hop_length


def _check_audio(y) -> tf.Tensor:
    y = tf.convert_to_tensor(y)
    if y.dtype != tf.float32:
        y = tf.cast(y, tf.float32)
    if y.shape.rank == 0:
        raise ParameterError("y: expected audio of shape (..., n), got a scalar")
    return y


def _check_length(y: tf.Tensor, c: FeatureConfig) -> None:
    n = y.shape[-1]
    if n is not None and n < c.win_length:
        raise ParameterError(f"y has {n} samples: expected at least win_length={c.win_length}")


def _stft(y, c: FeatureConfig, bins: Optional[tuple[int, int]] = None) -> tf.Tensor:
    spec = tf.signal.stft(y, frame_length=c.win_length, frame_step=c.hop_length,
                          fft_length=c.n_fft, window_fn=tf.signal.hann_window, pad_end=False)
    if bins is not None:
        spec = spec[..., bins[0]:bins[1]]
    if c.power == 2.0:
        return tf.math.real(spec * tf.math.conj(spec))
    return tf.math.abs(spec)


def stft_power(y, *, config: Optional[FeatureConfig] = None) -> tf.Tensor:
    """Power (``power=2``) or magnitude (``power=1``) STFT.

    Parameters
    ----------
    y : array or tf.Tensor [shape=(..., n)]
        Audio, float.

    Returns
    -------
    tf.Tensor [shape=(..., frames, 1 + n_fft // 2)], float32
    """
    c = config or FeatureConfig()
    y = _check_audio(y)
    _check_length(y, c)
    return _stft(y, c)


def apply_log(M, *, config: Optional[FeatureConfig] = None, sr: Optional[int] = None) -> tf.Tensor:
    """``log1p(M)``, ``log(M + 1e-4)`` or PCEN (:mod:`rfcxlib.features.pcen`, over time: ``M`` is
    ``(..., frames, n_mels)`` and ``sr`` the audio's rate) as ``config.log`` says."""
    c = config or FeatureConfig()
    if c.log == "pcen":
        if sr is None:
            raise ParameterError("sr: log='pcen' needs the sample rate of the audio (PCEN's frame rate "
                                 "is sr / hop_length); got None")
        return pcen.front_end(M, sr=sr, config=c)
    return tf.math.log1p(M) if c.log == "log1p" else tf.math.log(M + LOG_EPS)


@functools.lru_cache(maxsize=32)
def band_limited_filterbank(*, sr: int, config: FeatureConfig) -> tuple[tuple[int, int], np.ndarray]:
    """The STFT bin range ``(lo, hi)`` where :func:`config_filterbank`'s filters are non-zero, and
    their weights there, ``(hi - lo, n_mels)``: with fmax = 15 kHz at 48 kHz only 638 of the 1025
    bins enter the mel sum, so the log-mel (and the exported models' graph) slices the STFT to them."""
    fb = config_filterbank(sr=sr, config=config)
    used = np.flatnonzero(fb.any(axis=0))
    lo, hi = (int(used[0]), int(used[-1]) + 1) if used.size else (0, fb.shape[1])
    return (lo, hi), np.ascontiguousarray(fb[:, lo:hi].T)


def _mel_body(y, sr: int, params: tuple, log: bool):
    # ``params`` is the config as a tuple of plain values: tf.function keys its traces on it by
    # value (a config object would be keyed by identity and retrace on every new instance)
    c = FeatureConfig(*params)
    bins, weights = band_limited_filterbank(sr=sr, config=c)
    M = tf.tensordot(_stft(y, c, bins), tf.constant(weights), axes=1)
    return apply_log(M, config=c, sr=sr) if log else M


# Inside tf.data and Keras graphs the plain graph is used. Called eagerly (one clip, a batch of
# clips), the XLA-compiled graph fuses framing, windowing and the power/mel steps around the FFT:
# about 25 % less wall time per 60 s clip on 2 CPU cores, one compilation (~0.1 s) per input shape.
_mel_graph = tf.function(_mel_body, reduce_retracing=True, autograph=False)
_mel_graph_xla = tf.function(_mel_body, reduce_retracing=True, autograph=False, jit_compile=True)
_XLA = {"usable": os.environ.get("RFCX_FEATURES_XLA", "1") != "0", "started": False}


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the C++ lines XLA writes to stderr when it starts in a process ("XLA service ...
    initialized"), which ``TF_CPP_MIN_LOG_LEVEL`` does not reach in TensorFlow 2.16; only while
    it starts, and only when that variable asks for quiet (>= 1)."""
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    if _XLA["started"] or not (level.isdigit() and int(level) >= 1):
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        _XLA["started"] = True


def _run_mel(y, sr: int, c: FeatureConfig, log: bool) -> tf.Tensor:
    params = dataclasses.astuple(c)
    if _XLA["usable"] and tf.executing_eagerly():
        try:
            with _quiet_native_stderr():
                return _mel_graph_xla(y, int(sr), params, log)
        except (tf.errors.UnimplementedError, tf.errors.InternalError, tf.errors.InvalidArgumentError):
            _XLA["usable"] = False  # no XLA for this device: the plain graph gives the same numbers
    return _mel_graph(y, int(sr), params, log)


def mel_power(y, *, sr: int, config: Optional[FeatureConfig] = None) -> tf.Tensor:
    """Mel spectrogram before the log: ``(..., frames, n_mels)`` float32."""
    c = config or FeatureConfig()
    y = _check_audio(y)
    _check_length(y, c)
    mel_filterbank(sr=sr, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)  # validates
    return _run_mel(y, sr, c, False)


def log_mel(y, *, sr: int, config: Optional[FeatureConfig] = None) -> tf.Tensor:
    """The log-mel spectrogram of ``y``.

    Parameters
    ----------
    y : array or tf.Tensor [shape=(..., n)]
        Audio at ``sr`` Hz (any leading batch axes).
    sr : int
        Sample rate in Hz; ``config.fmax`` must not exceed ``sr / 2``.
    config : FeatureConfig, optional
        STFT, mel and log settings (defaults: 2048 / 512 / 2048, power 2, 128 mels, 40-15000 Hz, log1p).

    Returns
    -------
    tf.Tensor [shape=(..., frames, n_mels)], float32, ``frames = 1 + (n - win_length) // hop_length``

    Notes
    -----
    Runs as one compiled graph (retraced only for a new configuration or input rank; called
    eagerly, XLA-compiled once per input shape unless ``RFCX_FEATURES_XLA=0``), and skips
    the FFT bins outside every mel filter; the result equals librosa's mel spectrogram with the
    same settings (``htk=True, norm=None, center=False``) to float32 precision.
    """
    c = config or FeatureConfig()
    y = _check_audio(y)
    _check_length(y, c)
    mel_filterbank(sr=sr, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)  # validates
    return _run_mel(y, sr, c, True)


# --------------------------------------------------------------------------- band crops
def band_bins(*, fmin_hz: float, fmax_hz: float, config: Optional[FeatureConfig] = None) -> tuple[int, int]:
    """Mel rows ``[lo, hi)`` whose centre frequency lies in ``[fmin_hz, fmax_hz]`` (at least one)."""
    c = config or FeatureConfig()
    check(0 <= fmin_hz < fmax_hz, "fmin_hz", fmin_hz, f"0 <= fmin_hz < fmax_hz ({fmax_hz})")
    centers = mel_band_centers(c)
    lo = int(np.searchsorted(centers, fmin_hz, side="left"))
    hi = int(np.searchsorted(centers, fmax_hz, side="right"))
    lo = min(lo, c.n_mels - 1)
    return lo, max(hi, lo + 1)


def band_crop(S, *, fmin_hz: float, fmax_hz: float, sr: int, config: Optional[FeatureConfig] = None,
              mode: str = "slice") -> tf.Tensor:
    """Cut a frequency band out of a spectrogram (the seed's per-species frequency filtering).

    Parameters
    ----------
    S : tf.Tensor [shape=(..., frames, n_mels)]
    fmin_hz, fmax_hz : float
        The band, e.g. a species' ``f_min`` / ``f_max``.
    sr : int
        Sample rate of the audio ``S`` came from (checks the band lies below Nyquist).
    mode : {"slice", "mask"}
        ``"slice"`` keeps only the band's rows: ``(..., frames, k)``; ``"mask"`` keeps the shape and
        sets the rows outside the band to the spectrogram's minimum.
    """
    c = config or FeatureConfig()
    check(fmax_hz <= sr / 2, "fmax_hz", fmax_hz, f"<= sr / 2 ({sr / 2})")
    check(mode in ("slice", "mask"), "mode", mode, "'slice' or 'mask'")
    S = tf.convert_to_tensor(S, tf.float32)
    if S.shape[-1] is not None and S.shape[-1] != c.n_mels:
        raise ParameterError(f"S has {S.shape[-1]} mel bins on its last axis: expected n_mels={c.n_mels}")
    lo, hi = band_bins(fmin_hz=fmin_hz, fmax_hz=fmax_hz, config=c)
    if mode == "slice":
        return S[..., lo:hi]
    keep = np.zeros(c.n_mels, np.float32)
    keep[lo:hi] = 1.0
    floor = tf.reduce_min(S, axis=[-2, -1], keepdims=True)  # per spectrogram
    return S * keep + floor * (1.0 - keep)


# --------------------------------------------------------------------------- image shaping
def normalize(image, *, method: str = "standardize") -> tf.Tensor:
    """Per-image scaling over all but the leading batch axes of a ``(..., H, W)`` tensor."""
    x = tf.convert_to_tensor(image, tf.float32)
    if method == "none":
        return x
    axes = [-2, -1]
    if method == "standardize":
        mean, var = tf.nn.moments(x, axes=axes, keepdims=True)
        return (x - mean) / tf.sqrt(var + 1e-6)
    if method == "minmax":
        lo = tf.reduce_min(x, axis=axes, keepdims=True)
        hi = tf.reduce_max(x, axis=axes, keepdims=True)
        return (x - lo) / tf.maximum(hi - lo, 1e-6)
    raise ParameterError(f"normalize method {method!r}: expected 'standardize', 'minmax' or 'none'")


def to_image(S, *, config: Optional[FeatureConfig] = None) -> tf.Tensor:
    """A spectrogram ``(..., frames, n_mels)`` -> model input ``(..., H, W, C)`` float32.

    Transposes to frequency-by-time, scales per image (``config.normalize``), resizes to
    ``(image_height, image_width)`` where they are non-zero (bilinear), repeats the single
    channel ``config.channels`` times and, with ``config.freq_channel``, appends the frequency
    channel (:mod:`rfcxlib.features.image_channels`: row index / (H - 1), constant over time).
    """
    c = config or FeatureConfig()
    S = tf.convert_to_tensor(S, tf.float32)
    if S.shape.rank is not None and S.shape.rank < 2:
        raise ParameterError(f"S has shape {S.shape}: expected (..., frames, n_mels)")
    x = normalize(tf.linalg.matrix_transpose(S), method=c.normalize)  # (..., n_mels, frames)
    x = tf.expand_dims(x, -1)  # (a new-axis slice has no built-in TFLite kernel)
    if c.image_height or c.image_width:
        h = c.image_height or S.shape[-1]
        w = c.image_width or S.shape[-2]
        x = tf.image.resize(x, (h, w), method="bilinear")
    if c.channels > 1:
        x = tf.repeat(x, c.channels, axis=-1)
    if c.freq_channel:
        x = image_channels.add_freq_channel(x, c.image_height or c.n_mels)
    return x


def image_shape(n_samples: int, *, config: Optional[FeatureConfig] = None) -> tuple[int, int, int]:
    """``(H, W, C)`` of :func:`to_image` for audio of ``n_samples`` samples."""
    c = config or FeatureConfig()
    return (c.image_height or c.n_mels, c.image_width or num_frames(n_samples, config=c),
            c.channels + int(c.freq_channel))


# --------------------------------------------------------------------------- Keras layer
class LogMel(keras.layers.Layer):
    """Raw audio ``(batch, n)`` -> log-mel ``(batch, frames, n_mels)``, or the model image
    ``(batch, H, W, C)`` with ``image=True``: the features computed on the accelerator."""

    def __init__(self, sr: int = SAMPLE_RATE, config: Optional[dict] = None, image: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.sr = int(sr)
        self.feature_config = FeatureConfig(**(config or {}))
        self.image = bool(image)
        c = self.feature_config
        mel_filterbank(sr=self.sr, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)  # fmax <= sr / 2

    def call(self, inputs):
        S = log_mel(inputs, sr=self.sr, config=self.feature_config)
        return to_image(S, config=self.feature_config) if self.image else S

    def get_config(self):
        base = super().get_config()
        return {**base, "sr": self.sr, "config": dataclasses.asdict(self.feature_config), "image": self.image}
