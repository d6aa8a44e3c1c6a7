"""Per-channel energy normalisation (PCEN) of mel power: the front-end's alternative to log
compression (``FeatureConfig.log = "pcen"``).

PCEN (Wang et al. 2017; analysed for bioacoustics by Lostanlen et al. 2019, "Per-channel energy
normalization: why and how") divides each mel band's power ``E(t, f)`` by a smoothed copy of
itself, an automatic gain control per band, then compresses the result:

- ``M[t] = (1 - s) M[t - 1] + s E[t]``, a first-order IIR smoother over time, started in its
  steady state for the first frame: ``M[0] = E[0]``, so a stationary band is flat from the first
  frame on (librosa's default starts from the steady state of a unit input instead, which at our
  scale makes the first second of every window a start-up transient; its ``zi`` scaled by the
  first frame gives ours);
- ``PCEN = (E / (eps + M) ** alpha + delta) ** r - delta ** r``.

A background that holds its power over time, such as a site's insect drone or rain in a band,
sits near ``M`` and comes out as a small constant; a call that rises above its band's recent
level comes out large. Constants as Lostanlen et al. 2019 and librosa: ``alpha = 0.98``,
``delta = 2``, ``r = 0.5``, ``eps = 1e-6``; the time constant ``T`` (seconds, ``pcen_time_s``,
default 0.4 s as librosa) becomes ``s = (sqrt(1 + 4 T²) - 1) / (2 T²)`` with ``T`` in frames
(``T * sr / hop_length``).

Scale. Our audio is float in ``[-1, 1]``: its mel power spans about 1e-6 (the 16-bit quantisation
floor of quiet bands) to 1e3, so ``eps = 1e-6`` would swamp ``M`` in quiet bands and PCEN there
would be a plain linear gain, no normalisation. As the literature does for float audio
(librosa's ``pcen(S * 2**31)``), :func:`front_end` rescales the power to that of int32 audio,
``E * (2**31) ** power``, before PCEN: ``M`` then lies far above ``eps`` in every band that is not
digital silence.

The smoother. Because ``M`` is linear in ``E``, the IIR over a window of ``n`` frames is exactly one
matrix product ``M = A @ E`` with the lower-triangular ``A[t, j] = s (1 - s) ** (t - j)`` and the
first column ``(1 - s) ** t`` (the steady start): built from ``tf.range``, so it takes any time
length inside a ``tf.function`` or Keras model, and every op has a built-in TFLite kernel
(``BATCH_MATMUL``, ``EXP``, ``SELECT_V2``, ``POW``, ``PAD``, ``RESHAPE``). The matrix costs ``n²``
per band, so inputs longer than :data:`MATRIX_FRAMES` frames, or of a length unknown when the
graph is built, go in blocks of :data:`BLOCK_FRAMES` frames, each started from the last smoothed
frame of the one before (the block ends themselves follow a smoother of the same form): still
exact, and about linear in ``n`` (blocks of 32 frames were faster than 64 or 128 from 128 frames
on, and slower than one matrix at 70).

Measured (``benchmarks/bench_pcen.py``; TF 2.16, graph mode, 2 CPU cores shared with other work,
load 3), median per call, for a 0.4 s time constant at hop 2048 (``s`` = 0.1):

=====================================  ========  ========  ==================================
input (batch, frames, mels)            matrix    tf.scan   FIR, kernel cut at 1e-6 (131 taps)
=====================================  ========  ========  ==================================
(32, 70, 48): notebook 04's batch      0.7 ms    1.3 ms    5.2 ms
(32, 278, 128): 3 s crops at hop 512   3.1 ms    5.9 ms    47 ms
(1, 5600, 128): a minute at hop 512    1.6 ms    42 ms     30 ms
=====================================  ========  ========  ==================================

all within 1e-6 (relative) of a float64 loop; the matrix is the fastest and the one kept.

Tests: tests/test_pcen.py
"""
from __future__ import annotations

import math

import tensorflow as tf

from rfcxlib.config import FeatureConfig, check
from rfcxlib.errors import ParameterError

PCEN_ALPHA = 0.98  # gain normalisation exponent
PCEN_DELTA = 2.0  # bias before the root compression
PCEN_R = 0.5  # root compression exponent
PCEN_EPS = 1e-6  # floor of the smoothed power
AUDIO_SCALE = 2.0 ** 31  # float audio in [-1, 1] to int32 units, applied to magnitude
MATRIX_FRAMES = 96  # inputs of up to this many frames (known when the graph is built): one matrix
BLOCK_FRAMES = 32  # other inputs: blocks of this many frames


def smoothing_coefficient(time_s: float, *, sr: int, hop_length: int) -> float:
    """The IIR smoother's ``s`` in ``(0, 1]`` for a time constant of ``time_s`` seconds at a frame
    rate of ``sr / hop_length``: ``(sqrt(1 + 4 T²) - 1) / (2 T²)`` with ``T = time_s * sr / hop_length``
    frames (Lostanlen et al. 2019, librosa); about ``1 / T`` for ``T`` of a few frames or more."""
    check(sr > 0, "sr", sr, "a positive sample rate in Hz")
    check(hop_length > 0, "hop_length", hop_length, "a positive number of samples")
    check(0 < time_s < math.inf, "time_s", time_s, "a time constant in seconds > 0")
    frames = time_s * sr / hop_length
    return 2.0 / (1.0 + math.sqrt(1.0 + 4.0 * frames ** 2))  # the same, without cancellation at small T


def _decay(n, log_q: float, dtype) -> tuple[tf.Tensor, tf.Tensor]:
    """``(P, c)`` for ``n`` steps of a decay ``q = exp(log_q)``: ``P[t, j] = q ** (t - j)`` on and below
    the diagonal, 0 above, ``(n, n)``; ``c[t] = q ** (t + 1)``, ``(n, 1)``."""
    t = tf.expand_dims(tf.cast(tf.range(n), dtype), -1)  # (n, 1); no new-axis slices: TFLite has no kernel
    lag = t - tf.transpose(t)
    P = tf.exp(tf.maximum(lag, 0.0) * log_q)  # never overflowing above the diagonal
    return tf.where(lag >= 0, P, tf.zeros_like(P)), tf.exp((t + 1.0) * log_q)


def _smooth_blocks(x, s: float, log_q: float) -> tf.Tensor:
    """:func:`smooth` of ``x`` ``(batch, frames, mels)`` in blocks of ``L`` = :data:`BLOCK_FRAMES`
    frames (the last one zero-padded: the smoother is causal). Each block is smoothed from a zero
    state (``Z``); the block ends then follow ``m[k] = q**L m[k - 1] + Z[k][-1]``, ``m[-1] = E[0]``,
    one more smoother of the same form over the blocks, and each block adds
    ``q ** (t + 1) m[k - 1]``: ``L`` per frame and ``(frames / L)²`` in all, for any ``frames``."""
    L = BLOCK_FRAMES
    shape = tf.shape(x)
    n_blocks = (shape[1] + L - 1) // L
    blocks = tf.pad(x, [[0, 0], [0, n_blocks * L - shape[1]], [0, 0]])
    blocks = tf.reshape(blocks, tf.stack([shape[0], n_blocks, L, shape[2]]))
    P, c = _decay(L, log_q, x.dtype)
    Z = tf.linalg.matmul(s * P, blocks)  # (batch, blocks, L, mels)
    P_blocks, c_blocks = _decay(n_blocks, L * log_q, x.dtype)
    first = x[:, :1, :]
    ends = tf.linalg.matmul(P_blocks, Z[:, :, -1, :]) + c_blocks * first  # m[k]: (batch, blocks, mels)
    before = tf.concat([first, ends[:, :-1, :]], axis=1)  # m[k - 1]
    M = Z + c * tf.expand_dims(before, 2)
    return tf.reshape(M, tf.stack([shape[0], n_blocks * L, shape[2]]))[:, :shape[1], :]


def smooth(E, *, s: float) -> tf.Tensor:
    """The IIR smoother ``M[t] = (1 - s) M[t - 1] + s E[t]``, ``M[0] = E[0]``, along the frames axis.

    Parameters
    ----------
    E : tf.Tensor [shape=(..., frames, n_mels)]
        Non-negative power, float32 (any leading batch axes; ``frames``, even the rank, may be
        unknown in a graph).
    s : float
        Smoothing coefficient in ``(0, 1]`` (:func:`smoothing_coefficient`).

    Returns
    -------
    tf.Tensor [shape=(..., frames, n_mels)], same dtype

    Notes
    -----
    Up to :data:`MATRIX_FRAMES` frames known when the graph is built: one matrix product;
    otherwise blocks of :data:`BLOCK_FRAMES` frames (:func:`_smooth_blocks`).
    """
    check(0 < s <= 1, "s", s, "a smoothing coefficient in (0, 1]")
    E = tf.convert_to_tensor(E)
    log_q = math.log1p(-s) if s < 1.0 else -1e4  # s = 1: q ** 0 = 1, q ** k = 0 (no 0 * inf)
    shape = tf.shape(E)
    x = tf.reshape(E, tf.stack([-1, shape[-2], shape[-1]]))  # (batch, frames, mels)
    n = E.shape[-2] if E.shape.rank is not None else None
    if n is not None and n <= MATRIX_FRAMES:
        P, c = _decay(n, log_q, E.dtype)
        M = tf.linalg.matmul(s * P, x) + c * x[:, :1, :]  # the steady start: m[-1] = E[0]
    else:
        M = _smooth_blocks(x, s, log_q)
    M = tf.reshape(M, shape)
    M.set_shape(E.shape)
    return M


def pcen(E, *, sr: int, hop_length: int, time_s: float, alpha: float = PCEN_ALPHA,
         delta: float = PCEN_DELTA, r: float = PCEN_R, eps: float = PCEN_EPS) -> tf.Tensor:
    """Per-channel energy normalisation of a power spectrogram, frames on the second-last axis.

    Parameters
    ----------
    E : array or tf.Tensor [shape=(..., frames, n_mels)]
        Non-negative (mel) power, already at the scale PCEN expects (:func:`front_end` scales ours).
    sr, hop_length : int
        Sample rate (Hz) and hop (samples) of the frames: the frame rate is ``sr / hop_length``.
    time_s : float > 0
        Time constant of the smoother, seconds.
    alpha : float in [0, 1]
        Gain normalisation exponent (1: full division by the smoothed power).
    delta : float >= 0
        Bias added before the root compression.
    r : float in (0, 1]
        Root compression exponent.
    eps : float > 0
        Floor added to the smoothed power.

    Returns
    -------
    tf.Tensor [shape=(..., frames, n_mels)], float32, ``>= 0`` for ``E >= 0``
    """
    check(0 <= alpha <= 1, "alpha", alpha, "a gain exponent in [0, 1]")
    check(0 <= delta < math.inf, "delta", delta, "a bias >= 0")
    check(0 < r <= 1, "r", r, "a root exponent in (0, 1]")
    check(0 < eps < math.inf, "eps", eps, "a floor > 0")
    s = smoothing_coefficient(time_s, sr=sr, hop_length=hop_length)
    E = tf.convert_to_tensor(E, tf.float32)
    if E.shape.rank is not None and E.shape.rank < 2:
        raise ParameterError(f"parameter 'E' has shape {tuple(E.shape)}: expected (..., frames, n_mels)")
    M = smooth(E, s=s)
    gain = tf.pow(M + eps, -alpha)
    return tf.pow(E * gain + delta, r) - delta ** r


def front_end(M, *, sr: int, config: FeatureConfig) -> tf.Tensor:
    """PCEN of the front-end's mel power ``M`` ``(..., frames, n_mels)`` of float audio: rescaled to
    int32 audio units (``AUDIO_SCALE ** config.power``), smoothed over ``config.pcen_time_s``."""
    scale = AUDIO_SCALE ** config.power
    return pcen(M * scale, sr=sr, hop_length=config.hop_length, time_s=config.pcen_time_s)
