"""The one resampler of rfcxlib: soxr at quality ``"HQ"``, and the mono downmix.

Training decodes whole recordings (:func:`resample`, one call); ``rfcx predict`` reads them block by
block (:func:`resample_stream`, soxr's streaming resampler). Both run the same soxr filter, and a
stream fed the whole recording in any blocks gives the samples of the one call, bit for bit
(``tests/test_audio.py``): a recording at another rate than the models' is the same signal in
training and in the field. The output has ``round(n * target_sr / orig_sr)`` samples.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import soxr

from rfcxlib.errors import ParameterError

QUALITY = "HQ"  # soxr's high-quality recipe (20-bit precision)


def _check_rates(orig_sr, target_sr) -> None:
    if not (int(orig_sr) > 0 and int(target_sr) > 0):
        raise ParameterError(f"parameter 'orig_sr/target_sr' = {(orig_sr, target_sr)!r}: expected "
                             "positive rates in Hz")


def to_mono(y: np.ndarray) -> np.ndarray:
    """``y`` ``(n,)`` or ``(n, channels)`` ▶ float32 ``(n,)``, contiguous: the channels' mean."""
    y = np.asarray(y)
    y = y.mean(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
    return np.ascontiguousarray(y, dtype=np.float32)


def resample(y: np.ndarray, *, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample mono ``y`` ``(n,)`` from ``orig_sr`` to ``target_sr`` Hz: float32
    ``(round(n * target_sr / orig_sr),)`` (``y`` itself, as float32, when the rates agree)."""
    _check_rates(orig_sr, target_sr)
    y = np.ascontiguousarray(y, dtype=np.float32)
    if int(orig_sr) == int(target_sr):
        return y
    return soxr.resample(y, int(orig_sr), int(target_sr), quality=QUALITY)


def resample_stream(*, orig_sr: int, target_sr: int) -> Optional[soxr.ResampleStream]:
    """A streaming resampler of mono float32 blocks (``resample_chunk(block, last=...)``), or None
    when the rates agree; its output over a whole recording equals :func:`resample`'s."""
    _check_rates(orig_sr, target_sr)
    if int(orig_sr) == int(target_sr):
        return None
    return soxr.ResampleStream(int(orig_sr), int(target_sr), 1, dtype="float32", quality=QUALITY)
