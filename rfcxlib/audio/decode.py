"""Decoding, resampling, crops around annotated calls, and a decoded-audio cache.

Decoders live in :data:`BACKENDS`. ``"soundfile"`` (libsndfile) is the default: measured about 9x
faster than tensorflow-io's ``decode_flac`` on 60 s FLAC files. ``"tfio"`` is optional — when
tensorflow-io's compiled ops cannot load (TensorFlow newer than the one it was built for) asking
for it raises :class:`DataError` with the reason, and nothing else in the package needs it.
``"tf"`` is TensorFlow's core ``tf.audio.decode_wav`` (WAV only).

Multi-channel files are **downmixed** to mono (mean of the channels). Recordings at another rate
than ``sr`` are resampled with soxr (:mod:`rfcxlib.audio.resampling`, the resampler ``rfcx predict``
streams with, so training and serving see the same samples), or rejected with :class:`DataError`
when ``resample=False``.
"""
from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile as sf

from rfcxlib.audio import resampling
from rfcxlib.audio.header import audio_info
from rfcxlib.inference import member_windows
from rfcxlib.config import AudioConfig, check
from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.atomic import write_bytes_atomic
from rfcxlib.layout import SAMPLE_RATE
from rfcxlib.paths import cache_root

INT16_SCALE = 32768.0


# --------------------------------------------------------------------------- backends
def _decode_soundfile(path: Path, start: int = 0, stop: Optional[int] = None):
    with sf.SoundFile(str(path)) as f:
        if start:
            f.seek(min(start, f.frames))
        n = (stop if stop is not None else f.frames) - start
        y = f.read(frames=max(n, 0), dtype="float32", always_2d=True)
        return y, f.samplerate


@functools.lru_cache(maxsize=1)
def tfio_status() -> tuple[bool, str]:
    """``(True, "")`` when tensorflow-io's compiled decoders work here, else ``(False, reason)``."""
    try:
        import tensorflow as tf
        import tensorflow_io as tfio

        buffer = io.BytesIO()
        sf.write(buffer, np.zeros(64, np.float32), 8000, format="FLAC", subtype="PCM_16")
        tfio.audio.decode_flac(tf.constant(buffer.getvalue()), dtype=tf.int16)
        return True, ""
    except Exception as exc:  # ImportError, NotImplementedError, undefined symbols ...
        return False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def _decode_tfio(path: Path, start: int = 0, stop: Optional[int] = None):
    ok, reason = tfio_status()
    if not ok:
        raise DataError(f"{path}: the 'tfio' backend needs tensorflow-io's compiled ops, which do not "
                        f"load here ({reason}); use audio_backend='soundfile'")
    import tensorflow as tf
    import tensorflow_io as tfio

    if path.suffix.lower() == ".wav":
        return _decode_tf(path, start, stop)
    info = audio_info(path)
    pcm = tfio.audio.decode_flac(tf.constant(path.read_bytes()), shape=None, dtype=tf.int16).numpy()
    y = pcm.reshape(-1, info.channels).astype(np.float32) / INT16_SCALE
    return y[start:stop], info.sr


def _decode_tf(path: Path, start: int = 0, stop: Optional[int] = None):
    if path.suffix.lower() != ".wav":
        raise DataError(f"{path}: the 'tf' backend (tf.audio.decode_wav) reads WAV files only")
    import tensorflow as tf

    y, rate = tf.audio.decode_wav(tf.io.read_file(str(path)))
    return y.numpy()[start:stop], int(rate.numpy())


BACKENDS = {"soundfile": _decode_soundfile, "tfio": _decode_tfio, "tf": _decode_tf}


def get_backend(name: Optional[str]):
    """The decoder registered under ``name`` (None: ``"soundfile"``)."""
    name = name or "soundfile"
    if name not in BACKENDS:
        raise unknown_choice("audio backend", name, BACKENDS)
    return BACKENDS[name]


# --------------------------------------------------------------------------- decoding
def load_audio(path, *, sr: Optional[int] = None, resample: bool = True, backend: Optional[str] = None,
               offset_s: float = 0.0, duration_s: Optional[float] = None) -> tuple[np.ndarray, int]:
    """Decode an audio file to mono float32.

    Parameters
    ----------
    path : str or Path
        A FLAC or WAV file (any format libsndfile reads with the default backend).
    sr : int, optional
        Target rate in Hz; None keeps the file's rate.
    resample : bool
        Resample files at another rate to ``sr``; False raises :class:`DataError` instead.
    backend : {"soundfile", "tfio", "tf"}, optional
        Decoder (None: ``"soundfile"``).
    offset_s, duration_s : float
        Read only this part of the file (seconds at the file's own rate).

    Returns
    -------
    y : np.ndarray [shape=(n,)], float32 in [-1, 1]
    sr : int
    """
    path = Path(path)
    decode = get_backend(backend)
    check(offset_s >= 0, "offset_s", offset_s, "seconds >= 0")
    native = audio_info(path).sr
    start = int(round(offset_s * native))
    stop = start + int(round(duration_s * native)) if duration_s is not None else None
    try:
        y, file_sr = decode(path, start, stop)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot decode the audio ({type(exc).__name__}: {exc})") from exc
    y = resampling.to_mono(y)
    if y.size == 0 and duration_s != 0:
        raise DataError(f"{path}: the file holds no audio samples")
    if sr is not None and int(file_sr) != int(sr):
        if not resample:
            raise DataError(f"{path}: sample rate {file_sr} Hz, expected {sr} Hz (resample=False)")
        y = resampling.resample(y, orig_sr=int(file_sr), target_sr=int(sr))
        file_sr = sr
    return y, int(file_sr)


# --------------------------------------------------------------------------- crops
def crop(y: np.ndarray, *, sr: int, start_s: float, crop_s: float) -> np.ndarray:
    """``crop_s`` seconds of ``y`` from ``start_s`` (zero-padded past the end): ``(round(crop_s*sr),)``."""
    n = int(round(crop_s * sr))
    start = max(int(round(start_s * sr)), 0)
    out = np.zeros(n, np.float32)
    piece = y[start:start + n]
    out[:len(piece)] = piece
    return out


def crop_start(t_min: float, t_max: float, *, crop_s: float, duration_s: float,
               rng: Optional[np.random.Generator] = None) -> float:
    """Start (s) of a ``crop_s`` window holding the box ``[t_min, t_max]``.

    With ``rng`` the box lands at a uniformly random offset inside the crop (a box longer than
    the crop: a random window inside the box); without, the crop is centred on the box. The start
    is clamped to ``[0, duration_s - crop_s]``.
    """
    if t_max < t_min:
        raise ParameterError(f"box t_min={t_min} > t_max={t_max}: expected t_min <= t_max")
    length = t_max - t_min
    lo, hi = (t_max - crop_s, t_min) if length <= crop_s else (t_min, t_max - crop_s)
    start = (lo + hi) / 2.0 if rng is None else rng.uniform(lo, hi)
    return float(min(max(start, 0.0), max(duration_s - crop_s, 0.0)))


def load_crop(path, *, t_min: float, t_max: float, crop_s: float, sr: int = SAMPLE_RATE,
              rng: Optional[np.random.Generator] = None) -> tuple[np.ndarray, float]:
    """Decode ``crop_s`` seconds around the box ``[t_min, t_max]`` of a recording (centred, or at a
    random offset with ``rng``): returns ``(y (round(crop_s * sr),), start_s)``."""
    y, sr = load_audio(path, sr=sr)
    start = crop_start(t_min, t_max, crop_s=crop_s, duration_s=len(y) / sr, rng=rng)
    return crop(y, sr=sr, start_s=start, crop_s=crop_s), start


def window_starts(duration_s: float, *, crop_s: float, hop_s: float) -> np.ndarray:
    """Starts (s) of sliding windows over a recording; the last window ends at ``duration_s``."""
    check(hop_s > 0, "hop_s", hop_s, "seconds > 0")
    return member_windows.window_starts(duration_s, crop_s, hop_s)


# --------------------------------------------------------------------------- cache
def to_pcm16(y: np.ndarray) -> np.ndarray:
    """float audio in [-1, 1] -> int16 PCM (lossless for audio decoded from 16-bit files)."""
    return np.clip(np.round(np.asarray(y) * INT16_SCALE), -32768, 32767).astype(np.int16)


def _compact(y: np.ndarray) -> np.ndarray:
    """``y`` as int16 PCM when that holds it exactly (16-bit recordings at their own rate), else
    ``y`` as float32 (resampled or 24-bit recordings): half the memory where it costs nothing."""
    y = np.asarray(y, np.float32)
    pcm = to_pcm16(y)
    return pcm if np.array_equal(pcm.astype(np.float32) / np.float32(INT16_SCALE), y) else y


def _scale(stored: np.ndarray) -> np.float32:
    return np.float32(INT16_SCALE if stored.dtype == np.int16 else 1.0)


class AudioCache:
    """Decoded recordings, each decoded once, stored losslessly: as int16 PCM where that holds the
    samples exactly (half the memory of float32: the 16-bit recordings of the RFCx layout), else as
    float32 (recordings resampled to ``sr``), so a crop holds the samples ``load_audio`` and
    ``rfcx predict``'s streaming reader give.

    Modes: ``"memory"`` keeps the arrays in RAM (the ``mini`` data set: 0.5 GB); ``"disk"`` writes
    ``.npy`` files under ``$RFCX_CACHE_DIR/audio/`` and memory-maps them (the full data set: 4727
    recordings are 27 GB), keyed by path, size, modification time, rate, backend and (for
    recordings at another rate) the resampler, so a changed file is decoded again; ``"none"``
    decodes only the requested range on every call.
    """

    MODES = ("memory", "disk", "none")

    def __init__(self, *, sr: int = SAMPLE_RATE, resample: bool = True, mode: str = "memory",
                 backend: Optional[str] = None, directory=None):
        if mode not in self.MODES:
            raise unknown_choice("audio cache mode", mode, self.MODES)
        get_backend(backend)
        self.sr, self.resample, self.mode, self.backend = int(sr), resample, mode, backend
        self.directory = Path(directory) if directory else cache_root() / "audio" / f"sr{self.sr}"
        self._arrays: dict[str, np.ndarray] = {}

    @classmethod
    def from_config(cls, config: AudioConfig, *, paths=()) -> "AudioCache":
        """A cache for ``config``; ``audio_cache="auto"`` keeps up to 2 GB in memory, else disk."""
        mode = config.audio_cache
        if mode == "auto":
            infos = [audio_info(p) for p in paths]
            total = sum(i.duration_s * config.sr * (2 if i.sr == config.sr else 4) for i in infos)
            mode = "memory" if total < 2 * 1024**3 else "disk"
        return cls(sr=config.sr, resample=config.resample, mode=mode, backend=config.audio_backend)

    def _disk_path(self, path: Path) -> Path:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.sr}|{self.backend}"
        if audio_info(path).sr != self.sr:
            key += f"|soxr-{resampling.QUALITY}"
        return self.directory / f"{hashlib.sha1(key.encode()).hexdigest()[:20]}.npy"

    def _decode(self, path: Path) -> np.ndarray:
        return load_audio(path, sr=self.sr, resample=self.resample, backend=self.backend)[0]

    def stored(self, path) -> np.ndarray:
        """The stored recording at ``sr``: ``(n,)`` int16 PCM or float32 (:func:`_compact`; a
        memory map in ``"disk"`` mode)."""
        path = Path(path)
        key = str(path)
        if key in self._arrays:
            return self._arrays[key]
        if self.mode == "none":
            return _compact(self._decode(path))
        if self.mode == "memory":
            self._arrays[key] = _compact(self._decode(path))
            return self._arrays[key]
        target = self._disk_path(path)
        if not target.exists():
            buffer = io.BytesIO()
            np.save(buffer, _compact(self._decode(path)))
            write_bytes_atomic(target, buffer.getvalue())
        self._arrays[key] = np.load(target, mmap_mode="r")
        return self._arrays[key]

    def get(self, path) -> np.ndarray:
        """The whole recording at ``sr``: float32 ``(n,)``."""
        if self.mode == "none":
            return self._decode(Path(path))
        stored = self.stored(path)
        return stored.astype(np.float32) / _scale(stored)

    def crop(self, path, *, start_s: float, crop_s: float) -> np.ndarray:
        """``crop_s`` seconds from ``start_s`` as float32 ``(round(crop_s * sr),)``, zero-padded."""
        if self.mode == "none":
            if audio_info(path).sr == self.sr:
                y, _ = load_audio(path, backend=self.backend, offset_s=max(start_s, 0.0), duration_s=crop_s)
                return crop(y, sr=self.sr, start_s=0.0, crop_s=crop_s)
            return crop(self._decode(Path(path)), sr=self.sr, start_s=start_s, crop_s=crop_s)
        stored = self.stored(path)
        return crop(stored, sr=self.sr, start_s=start_s, crop_s=crop_s) / _scale(stored)

    def duration_s(self, path) -> float:
        """Length of the recording in seconds (at ``sr``)."""
        if self.mode == "none":
            return audio_info(path).duration_s
        return len(self.stored(path)) / self.sr

    def preload(self, paths, *, progress: bool = True) -> "AudioCache":
        """Decode every path now (with a progress bar) so training epochs only slice arrays."""
        if self.mode == "none":
            return self
        from rfcxlib.progress import tqdm

        for p in tqdm(list(paths), desc=f"decoding audio ({self.mode} cache)", disable=not progress,
                      leave=False):
            self.stored(p)
        return self

    def __len__(self) -> int:
        return len(self._arrays)
