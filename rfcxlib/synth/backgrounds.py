"""Real field sound as the background of synthetic recordings (the ``field`` profile).

Backgrounds come from folders of recordings (any sample rate, any length, mono or not): the
training side from one set of folders, the test side from another, so that the test split
measures transfer to a site the training data never heard. Each recording's background is a
chain of stretches drawn at random from files of one site (:func:`plan_background`), each
reversed at random, its DC removed, RMS-normalised to the recording's level and joined to the
next by a short equal-power crossfade (:func:`render_background`). Files are resampled to the
data set's rate with soxr (quality HQ).

The site of a file is the part of its name before the first ``_`` on the training side (a
recorder's serial number: ``S4A03895_20190522_000000.wav`` -> ``S4A03895``) and the name of its
folder on the test side. With ``site_hours`` (the ``field`` profile: 6), a training recorder's
files named ``SERIAL_YYYYMMDD_HHMMSS`` are split by period of the day into sites of their own
(``S4A03895_00-06h``, ``S4A03895_06-12h``, ...): night insects and a dawn chorus differ as much as
two places do, and folds grouped by site (:func:`rfcxlib.data.tables.make_folds`) then have
several to hold out, where one recorder would make one site. Default folders: ``../shared/real-data/`` beside the checkout
(:func:`default_sources`), or ``$RFCX_FIELD_BACKGROUNDS`` / ``$RFCX_FIELD_TEST_BACKGROUNDS``.
Real recordings hold real, unlabelled animal sounds; the default test site's ``f97ababc1.flac``
holds calls of the real species 15 (9-14 s), which ``test_ground_truth.csv`` does not list.

Tests: tests/test_synth_field.py
"""
from __future__ import annotations

import filecmp
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd
import soundfile as sf

from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import SITES_FILE

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
ENV_TRAIN, ENV_TEST = "RFCX_FIELD_BACKGROUNDS", "RFCX_FIELD_TEST_BACKGROUNDS"
MIN_FILE_S = 1.0  # shorter files are refused
MIN_SEGMENT_S = 2.0  # a stretch is at least this long (or the whole file, if shorter)
XFADE_S = 0.05  # crossfade between two stretches
LEVEL_RMS = 0.006  # the synthetic background's level (about -44 dBFS); each recording within +-4 dB

Sources = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]


@dataclass(frozen=True)
class BackgroundFile:
    """One background recording: ``path``, ``size`` in bytes, native ``sr``, ``duration_s``, ``site``."""

    path: str
    size: int
    sr: int
    duration_s: float
    site: str


def real_data_dir() -> Path:
    """``<checkout>/../shared/real-data``: the real recordings kept beside the project."""
    return Path(__file__).resolve().parents[3] / "shared" / "real-data"  # rfcxlib/synth/ -> checkout -> beside it


def default_sources() -> tuple[list[Path], list[Path]]:
    """``(training folders, test folders)`` when none are given: ``$RFCX_FIELD_BACKGROUNDS`` and
    ``$RFCX_FIELD_TEST_BACKGROUNDS`` (paths separated by ``os.pathsep``), else the 99 unlabelled
    recordings of ``real-data/backgrounds/`` and, as the other site, the three labelled real
    recordings (``real-data/rfcx``, ``chronister2021``, ``spinetail``). A side whose default
    folders are absent raises :class:`DataError`."""
    return _default("train"), _default("test")


def _default(side: str) -> list[Path]:
    env = ENV_TRAIN if side == "train" else ENV_TEST
    if os.environ.get(env):
        return [Path(p) for p in os.environ[env].split(os.pathsep) if p]
    root = real_data_dir()
    names = ["backgrounds"] if side == "train" else ["rfcx", "chronister2021", "spinetail"]
    folders = [root / name for name in names]
    for folder in folders:
        if not folder.is_dir():
            raise DataError(f"the field profile's default background folder {folder} is absent; "
                            "pass folders of field recordings as 'backgrounds' and 'test_backgrounds' "
                            f"(rfcx synth --backgrounds DIR --test-backgrounds DIR, or ${ENV_TRAIN} "
                            f"and ${ENV_TEST})")
    return folders


def _as_paths(sources: Sources) -> list[Path]:
    if isinstance(sources, (str, os.PathLike)):
        return [Path(sources)]
    return [Path(s) for s in sources]


RECORDER_NAME = re.compile(r"^([^_]+)_(\d{8})_(\d{2})(\d{4})$")  # SERIAL_YYYYMMDD_HHMMSS


def site_of(path: Path, side: str, site_hours: int = 0) -> str:
    """The site of a background file (the module's docstring says how)."""
    if side != "train":
        return path.parent.name
    match = RECORDER_NAME.match(path.stem)
    if site_hours and match:
        start = int(match.group(3)) // site_hours * site_hours
        return f"{match.group(1)}_{start:02d}-{min(24, start + site_hours):02d}h"
    return path.stem.split("_")[0]


def list_backgrounds(sources: Sources, *, side: str, param: str, site_hours: int = 0) -> list[BackgroundFile]:
    """The audio files of ``sources`` (folders, read without recursion, and files), sorted.

    Parameters
    ----------
    sources : path-like or sequence of path-like
        Folders of recordings, or recordings.
    side : {"train", "test"}
        Decides the site of a file (see the module's docstring).
    site_hours : int
        Training side: a recorder's files split into sites by period of the day (0: one site).
    param : str
        The parameter's name, for error messages.

    Raises
    ------
    ParameterError
        A path that does not exist.
    DataError
        A folder without audio files, an unreadable file, a file shorter than ``MIN_FILE_S``.
    """
    files = []
    for src in _as_paths(sources):
        if src.is_dir():
            found = sorted(p for p in src.iterdir()
                           if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise DataError(f"{param}: folder {src} holds no audio files; expected recordings "
                                f"({', '.join(AUDIO_SUFFIXES)})")
            files += found
        elif src.is_file():
            files.append(src)
        else:
            raise ParameterError(f"{param}: {str(src)!r} does not exist; expected a folder of "
                                 "field recordings")
    if not files:
        raise ParameterError(f"{param}: no folder given; expected at least one folder of field "
                             "recordings")
    out = []
    for path in files:
        try:
            info = sf.info(str(path))
        except Exception as exc:  # libsndfile raises several types; all mean "not readable"
            raise DataError(f"{param}: {path}: unreadable audio file ({str(exc).strip()})") from None
        if info.frames < MIN_FILE_S * info.samplerate:
            raise DataError(f"{param}: {path}: {info.frames / info.samplerate:.2f} s long; expected "
                            f"a recording of at least {MIN_FILE_S:g} s")
        out.append(BackgroundFile(str(path.resolve()), path.stat().st_size, int(info.samplerate),
                                  info.frames / info.samplerate, site_of(path, side, site_hours)))
    return out


def check_disjoint(train: list[BackgroundFile], test: list[BackgroundFile]) -> None:
    """Raise :class:`ParameterError` naming the first file that is both a training and a test
    background (the same path, or two files with the same bytes)."""
    for a in train:
        for b in test:
            if a.path == b.path or (a.size == b.size and filecmp.cmp(a.path, b.path, shallow=False)):
                same = a.path if a.path == b.path else f"{a.path} (the same as {b.path})"
                raise ParameterError(
                    f"backgrounds and test_backgrounds share the file {same}; expected training "
                    "and test backgrounds from different recordings (the test measures transfer "
                    "to a site the training data never heard)")


def resolve(backgrounds: Optional[Sources] = None,
            test_backgrounds: Optional[Sources] = None, *, site_hours: int = 0) -> dict:
    """Both sides' files, checked: ``{"sources": {"train": [...], "test": [...]}, "train": [...],
    "test": [...]}`` (a side not given: :func:`default_sources`; ``site_hours``: see
    :func:`site_of`)."""
    backgrounds = _default("train") if backgrounds is None else backgrounds
    test_backgrounds = _default("test") if test_backgrounds is None else test_backgrounds
    train = list_backgrounds(backgrounds, side="train", param="backgrounds", site_hours=site_hours)
    test = list_backgrounds(test_backgrounds, side="test", param="test_backgrounds")
    check_disjoint(train, test)
    return {"sources": {"train": [str(p.resolve()) for p in _as_paths(backgrounds)],
                        "test": [str(p.resolve()) for p in _as_paths(test_backgrounds)]},
            "train": train, "test": test}


def identity(resolved: dict) -> dict:
    """What makes a data set's backgrounds what they are: each side's files (folder name, file
    name, size), for the data set's cache key."""
    return {side: [[Path(f.path).parent.name, Path(f.path).name, f.size] for f in resolved[side]]
            for side in ("train", "test")}


# ---------------------------------------------------------------- plan and audio
def plan_background(rng: np.random.Generator, files: list[BackgroundFile], *, duration_s: float) -> dict:
    """The background of one recording: a file drawn at random decides the site; stretches of
    that site's files (at least ``MIN_SEGMENT_S`` or the whole file, at most the file, drawn at
    random) follow each other until ``duration_s`` is covered.

    Returns ``{"site", "level_rms", "segments": [(path, start_s, length_s, reversed), ...]}``.
    """
    first = files[int(rng.integers(len(files)))]
    mates = [f for f in files if f.site == first.site]
    segments, covered_s = [], 0.0
    while covered_s < duration_s:
        f = first if not segments else mates[int(rng.integers(len(mates)))]
        overlap_s = XFADE_S if segments else 0.0
        need_s = duration_s - covered_s + overlap_s + 0.01
        length_s = min(need_s, f.duration_s * rng.uniform(0.5, 1.0))
        length_s = max(length_s, min(need_s, f.duration_s, MIN_SEGMENT_S))
        start_s = float(rng.uniform(0.0, f.duration_s - length_s))
        segments.append((f.path, start_s, float(length_s), bool(rng.random() < 0.5)))
        covered_s += length_s - overlap_s
    level = LEVEL_RMS * 10 ** (rng.uniform(-4.0, 4.0) / 20)
    return {"site": first.site, "level_rms": float(level), "segments": segments}


@lru_cache(maxsize=8)
def load_resampled(path: str, sr: int) -> np.ndarray:
    """A whole recording, mono (the channels' mean), float32, resampled to ``sr`` with soxr (HQ).
    Shape ``(n,)``. The last few are kept in memory (one process renders many recordings)."""
    import soxr

    try:
        y, native = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types; all mean "cannot decode"
        raise DataError(f"background {path}: cannot decode ({str(exc).strip()})") from None
    y = y.mean(axis=1)
    if native != sr:
        y = soxr.resample(y, native, sr, quality="HQ")
    y = np.ascontiguousarray(y, dtype=np.float32)
    y.setflags(write=False)
    return y


def render_background(background: dict, *, n: int, sr: int) -> np.ndarray:
    """The audio of a planned background (:func:`plan_background`), float32, shape ``(n,)``, at
    RMS ``background["level_rms"]`` (each stretch normalised; crossfades keep the level)."""
    n_xf = int(round(XFADE_S * sr))
    ramp = np.sin(0.5 * np.pi * (np.arange(n_xf) + 0.5) / n_xf).astype(np.float32)
    level = background["level_rms"]
    out = np.zeros(n + n_xf, np.float32)
    pos, last = 0, len(background["segments"]) - 1
    for k, (path, start_s, length_s, rev) in enumerate(background["segments"]):
        x = load_resampled(path, sr)
        i0 = int(round(start_s * sr))
        seg = np.array(x[i0:i0 + int(round(length_s * sr))], np.float64)
        seg = seg[::-1] if rev else seg
        seg -= seg.mean()
        rms = np.sqrt(np.mean(seg**2))
        seg = seg * (level / rms) if rms > 1e-9 else seg
        if k > 0:  # every stretch is longer than the crossfade (plan_background)
            seg[:n_xf] *= ramp
        if k < last:
            seg[-n_xf:] *= ramp[::-1]
        m = min(seg.size, out.size - pos)
        out[pos:pos + m] += seg[:m].astype(np.float32)
        pos += seg.size - n_xf
    return out[:n]


# ---------------------------------------------------------------- records of a data set
def _short(path: str) -> str:
    return f"{Path(path).parent.name}/{Path(path).name}"


def tables(plan: dict) -> dict[str, pd.DataFrame]:
    """``sites.csv`` (``recording_id, site``) and ``synth_backgrounds.csv`` (every stretch:
    ``split, recording_id, site, file`` (folder/name), ``start_s, length_s, reversed,
    level_rms``) of a plan whose recordings carry a background."""
    sites, rows = [], []
    for split in ("train", "test"):
        for rid, rec in plan[split]:
            bg = rec.background
            sites.append((rid, bg["site"]))
            rows += [(split, rid, bg["site"], _short(p), round(t, 4), round(d, 4), rev,
                      round(bg["level_rms"], 6)) for p, t, d, rev in bg["segments"]]
    return {SITES_FILE: pd.DataFrame(sites, columns=["recording_id", "site"]),
            "synth_backgrounds.csv": pd.DataFrame(rows, columns=[
                "split", "recording_id", "site", "file", "start_s", "length_s", "reversed",
                "level_rms"])}


def summary(plan: dict, resolved: dict) -> dict:
    """For ``synth_info.json``: each side's folders, its files with their site and how many
    recordings use them, and the sites."""
    out = {}
    for split, side in (("train", "train"), ("test", "test")):
        uses: dict[str, int] = {}
        for _, rec in plan[split]:
            for path in {p for p, *_ in rec.background["segments"]}:
                uses[path] = uses.get(path, 0) + 1
        out[side] = {"sources": resolved["sources"][side],
                     "files": [{"file": f.path, "site": f.site, "size": f.size, "sr": f.sr,
                                "duration_s": round(f.duration_s, 3), "recordings": uses.get(f.path, 0)}
                               for f in resolved[side]],
                     "sites": sorted({f.site for f in resolved[side]})}
    return out
