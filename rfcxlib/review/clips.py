"""The sound of a query: its window of the recording, with some context either side, as samples
(for the review widget's spectrogram and player) or as a WAV file (for a Raven review queue).

Tested in ``tests/test_review.py``.

Tests: tests/test_review.py
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from rfcxlib.audio.decode import audio_info, load_audio
from rfcxlib.atomic import write_bytes_atomic


def window_audio(path, *, start_s: float, end_s: float, pad_s: float = 1.0) -> tuple[np.ndarray, int, float]:
    """``(y, sr, offset_s)``: mono float32 samples of ``[start_s - pad_s, end_s + pad_s]`` cut to the
    recording, at its own rate; ``offset_s`` is where they start in the recording."""
    sr, frames, _ = audio_info(path)
    offset = max(float(start_s) - pad_s, 0.0)
    end = min(float(end_s) + pad_s, frames / sr)
    y, sr = load_audio(path, offset_s=offset, duration_s=max(end - offset, 1.0 / sr))
    return y, sr, offset


def wav_bytes(y: np.ndarray, sr: int) -> bytes:
    """``y`` as a 16-bit WAV file in memory."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.asarray(y, np.float32), -1.0, 1.0), int(sr), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_clip(path, source, *, start_s: float, end_s: float, pad_s: float = 1.0) -> Path:
    """The window of ``source`` with ``pad_s`` of context, written as a 16-bit WAV (atomic)."""
    y, sr, _ = window_audio(source, start_s=start_s, end_s=end_s, pad_s=pad_s)
    return write_bytes_atomic(path, wav_bytes(y, sr))
