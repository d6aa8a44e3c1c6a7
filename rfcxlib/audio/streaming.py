"""Reading recordings of any length block by block: mono, at the models' rate, in bounded memory.

:func:`audio_blocks` reads ``block_s`` seconds at a time with libsndfile (FLAC, WAV, OGG, MP3, ...),
mixes the channels down (their mean) and resamples each block with soxr's streaming resampler
(:func:`rfcxlib.audio.resampling.resample_stream`): its output equals resampling the whole file at
once, as training decodes it (:func:`rfcxlib.audio.decode.load_audio`), with no seams between
blocks. :func:`cut_windows` turns the stream of blocks into fixed windows at
given offsets, holding at most one window and one block.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from rfcxlib.audio import resampling
from rfcxlib.errors import DataError

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au", ".opus", ".w64")
BLOCK_S = 30.0  # seconds of file audio read at a time


def collect_files(paths: Sequence) -> list[Path]:
    """Files given, and the audio files (by suffix, recursively, sorted) of folders given."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in AUDIO_SUFFIXES)
        else:
            out.append(p)  # checked when read: a missing or unreadable file is reported
    if not out:
        raise DataError(f"no audio files in {[str(p) for p in paths]} (suffixes {', '.join(AUDIO_SUFFIXES)})")
    return out


def audio_blocks(path: Path, *, sr: int, block_s: float = BLOCK_S) -> Iterator[np.ndarray]:
    """Mono float32 blocks of ``path`` at ``sr`` Hz, read ``block_s`` seconds at a time and
    resampled with a streaming soxr resampler (the same output as resampling the whole file)."""
    import soundfile as sf

    done, native = 0, 1
    try:
        with sf.SoundFile(str(path)) as f:
            native = int(f.samplerate)
            stream = resampling.resample_stream(orig_sr=native, target_sr=sr)
            size = max(int(block_s * native), 1)
            while True:
                y = f.read(size, dtype="float32", always_2d=True)
                done += len(y)
                last = len(y) < size
                y = resampling.to_mono(y)
                if stream is not None:
                    y = stream.resample_chunk(y, last=last)
                if len(y):
                    yield y
                if last:
                    return
    except (DataError, GeneratorExit):
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot decode the audio from {done / native:.1f} s on "
                        f"({type(exc).__name__}: {exc})") from None


def cut_windows(blocks: Iterator[np.ndarray], *, starts: np.ndarray, n: int) -> Iterator[np.ndarray]:
    """Windows of ``n`` samples at sample offsets ``starts`` (sorted) from a stream of blocks,
    zero-padded past the end of the stream; holds at most one window plus one block."""
    buffer, offset, k = np.zeros(0, np.float32), 0, 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while k < len(starts) and starts[k] + n <= offset + len(buffer):
            i = starts[k] - offset
            yield buffer[i:i + n].copy()
            k += 1
        drop = min((starts[k] if k < len(starts) else offset + len(buffer)) - offset, len(buffer))
        buffer, offset = buffer[drop:], offset + drop  # samples before the next window go
    while k < len(starts):
        out = np.zeros(n, np.float32)
        piece = buffer[max(starts[k] - offset, 0):][:n]
        out[:len(piece)] = piece
        yield out
        k += 1
