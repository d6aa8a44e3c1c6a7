"""The one reader of audio file headers: rate, length and channels, without decoding.

Every part of rfcxlib that needs a recording's header reads it here: decoding
(:mod:`rfcxlib.audio.decode`), streaming for ``rfcx predict`` (:mod:`rfcxlib.audio.streaming`) and
the data checks (:mod:`rfcxlib.data.checks`). Any format libsndfile reads (FLAC, WAV, OGG, MP3, ...).
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import soundfile as sf

from rfcxlib.errors import DataError


class AudioInfo(NamedTuple):
    """An audio file's header: ``sr`` (Hz), ``frames`` (samples per channel), ``channels``."""

    sr: int
    frames: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sr


def audio_info(path, *, allow_empty: bool = False) -> AudioInfo:
    """The header of the audio file ``path``.

    Parameters
    ----------
    path : str or Path
    allow_empty : bool
        Return the header of a file with no samples instead of raising.

    Raises
    ------
    DataError
        Naming the file: it does not exist, libsndfile cannot read its header, or (unless
        ``allow_empty``) it holds no samples.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile raises several types; all mean "not a readable file"
        reason = str(exc).strip() or type(exc).__name__
        raise DataError(f"{path}: unreadable audio file ({reason})") from None
    out = AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))
    if not allow_empty and (out.frames <= 0 or out.sr <= 0):
        raise DataError(f"{path}: holds no audio samples (frames={out.frames})")
    return out
