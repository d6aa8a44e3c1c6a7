"""The synthetic RFCx-format data set: the embedded default of the notebooks and a benchmark
with full ground truth.

:func:`generate` writes, in the exact layout of the competition::

    train_tp.csv, train_fp.csv    recording_id,species_id,songtype_id,t_min,f_min,t_max,f_max
    train/<id>.flac, test/<id>.flac    48 kHz, mono, 16-bit FLAC
    sample_submission.csv         recording_id,s0,...,s23
    test_ground_truth.csv         recording_id,species_id (every species in each test recording)

plus two files the real data lacks: ``synth_calls.csv`` (every sound placed: calls of the 24
species, labelled or not, and the confusers the simulated detector fired on) and
``synth_info.json`` (profile, seed, counts). A profile with real backgrounds (``field``:
:mod:`rfcxlib.synth.backgrounds`) also writes ``sites.csv`` (``recording_id,site``: where each
recording's background was recorded) and ``synth_backgrounds.csv`` (the stretches of real
recordings each background is made of; :func:`read_backgrounds`).

How the labels are made, as in the real tables: a training recording has a focal species whose
calls are mostly boxed as TP rows; other species may call in it without any row (partial labels);
a simulated template detector adds FP rows for species that are absent, on sounds that fool it
(a call of a species with an overlapping band, or a noise burst in the band), so an FP row is a
true negative for its whole recording. Test recordings hold 1-4 species each.

Everything is decided by ``seed``: the plan is drawn in one process, and each recording is
rendered from its own seeded generator, so the output does not depend on ``workers``.
"""
from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.fft as sfft
import soundfile as sf
from rfcxlib.progress import tqdm

from rfcxlib.synth import backgrounds as sbg
from rfcxlib.synth import sounds as snd
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import ANNOTATION_COLUMNS as COLUMNS
from rfcxlib.layout import NUM_SPECIES, SAMPLE_RATE, SPECIES_COLUMNS
from rfcxlib.atomic import AtomicFile, replace_folder, write_json_atomic, write_text_atomic
from rfcxlib.paths import cache_root
from rfcxlib.synth.plan import (PROFILES, Recording, check_profile, make_plan,  # noqa: F401  (API)
                                 prepare)

SR = SAMPLE_RATE
VERSION = 7  # bump when the output changes: cached data sets of other versions are rebuilt
FLOOR_DB = -20.0  # real backgrounds: a call's SNR is taken against at least this flat floor


_TEMPLATES: dict = {}
N_VARIANTS = 4


def _templates(seed: int) -> dict:
    if seed not in _TEMPLATES:
        _TEMPLATES.clear()
        _TEMPLATES[seed] = snd.render_templates(seed, sr=SR, n_variants=N_VARIANTS)
    return _TEMPLATES[seed]


def render_recording(rec: Recording, *, seed: int, rec_seed: int) -> np.ndarray:
    """The audio of one planned recording, float32 in [-1, 1], shape ``(duration_s * sr,)``.

    The background is synthetic (:func:`rfcxlib.synth.sounds.background`), or real when the
    recording carries a planned one (:func:`rfcxlib.synth.backgrounds.render_background`); then
    a band that the background leaves empty (a file recorded at 22 kHz has nothing above 11 kHz)
    counts as holding a flat floor ``FLOOR_DB`` below the background's power, so that a call's
    SNR stays meaningful there.
    """
    templates = _templates(seed)
    rng = np.random.default_rng([seed, rec_seed])
    n = int(round(rec.duration_s * SR))
    if rec.background is None:
        y, floor_per_hz = snd.background(rng, n, sr=SR), 0.0
    else:
        y = sbg.render_background(rec.background, n=n, sr=SR)
        power_bg = float(np.mean(np.square(y, dtype=np.float64)))
        floor_per_hz = power_bg / (SR / 2) * 10 ** (FLOOR_DB / 10)
    power = np.abs(sfft.rfft(y.astype(np.float32))) ** 2
    cum = np.concatenate([[0.0], np.cumsum(power, dtype=np.float64)])
    freqs = sfft.rfftfreq(n, 1.0 / SR)
    for ev in rec.events:
        lo, hi = snd.SPECIES[ev["species"]][0], snd.SPECIES[ev["species"]][1]
        if ev["kind"] == "call":
            variants = templates[(ev["species"], ev["songtype"])]
            wave = variants[ev["variant"] % len(variants)]
        else:
            wave = snd.confuser_burst(np.random.default_rng(ev["seed"]), ev["species"], sr=SR)
        i_lo, i_hi = np.searchsorted(freqs, [lo, hi])
        p_band = 2.0 * (cum[i_hi] - cum[i_lo]) / n**2
        if floor_per_hz:
            p_band = max(p_band, floor_per_hz * (hi - lo))
        gain = np.sqrt(p_band * 10 ** (ev["snr_db"] / 10))
        slack = max(0, int(ev["box_s"] * SR) - wave.size)
        i0 = int(ev["t_s"] * SR) + int(np.random.default_rng(ev["seed"]).integers(0, slack + 1))
        i1 = min(n, i0 + wave.size)
        y[i0:i1] += gain * wave[: i1 - i0]
    peak = float(np.max(np.abs(y)))
    if peak > 0.95:
        y *= 0.95 / peak
    return y.astype(np.float32)


def _write_flac(path: Path, y: np.ndarray) -> None:
    with AtomicFile(path, "wb") as f:
        sf.write(f, y, SR, format="FLAC", subtype="PCM_16")


def _render_job(job) -> str:
    path, rec, seed, rec_seed = job
    _write_flac(Path(path), render_recording(rec, seed=seed, rec_seed=rec_seed))
    return path


# ---------------------------------------------------------------- tables
def _tables(plan: dict) -> dict[str, pd.DataFrame]:
    def rows(kind):
        out = [(rid,) + r for rid, rec in plan["train"] for r in getattr(rec, kind)]
        return pd.DataFrame(out, columns=COLUMNS)

    test_ids = [rid for rid, _ in plan["test"]]
    sub = pd.DataFrame(0, index=range(len(test_ids)), columns=SPECIES_COLUMNS)
    sub.insert(0, "recording_id", test_ids)
    truth = pd.DataFrame([(rid, s) for rid, rec in plan["test"] for s in sorted(rec.present)],
                         columns=["recording_id", "species_id"])
    calls = pd.DataFrame([
        dict(split=split, recording_id=rid, kind=e["kind"], species_id=e["species"],
             songtype_id=e["songtype"], t_min=round(e["t_s"], 4), t_max=round(e["t_s"] + e["box_s"], 4),
             snr_db=round(e["snr_db"], 2), labelled=e["labelled"])
        for split in ("train", "test") for rid, rec in plan[split] for e in rec.events])
    out = {"train_tp.csv": rows("tp"), "train_fp.csv": rows("fp"), "sample_submission.csv": sub,
           "test_ground_truth.csv": truth, "synth_calls.csv": calls}
    if plan["train"] and plan["train"][0][1].background is not None:
        out.update(sbg.tables(plan))
    return out


def _summary(tables: dict, plan: dict, profile: str, seed: int, spec: dict) -> dict:
    calls = tables["synth_calls.csv"]
    train_calls = calls[(calls.split == "train") & (calls.kind == "call")]
    return {
        "profile": profile, "seed": seed, "version": VERSION, "sr": SR,
        "duration_s": spec["duration_s"],
        "n_train": len(plan["train"]),
        "n_test": len(tables["sample_submission.csv"]),
        "tp_rows": len(tables["train_tp.csv"]), "fp_rows": len(tables["train_fp.csv"]),
        "train_calls": len(train_calls),
        "unlabelled_calls": int((~train_calls.labelled.astype(bool)).sum()),
        "test_species_present": len(tables["test_ground_truth.csv"]),
    }


def _field_summary(tables: dict, plan: dict, spec: dict, resolved) -> dict:
    """What ``synth_info.json`` adds for a data set with real backgrounds or other settings."""
    n = max(1, len(plan["train"]))
    out = {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.items()},
           "train_tp_fraction": round(tables["train_tp.csv"].recording_id.nunique() / n, 4),
           "train_fp_fraction": round(tables["train_fp.csv"].recording_id.nunique() / n, 4)}
    return {**out, "backgrounds": sbg.summary(plan, resolved)} if resolved is not None else out


# ---------------------------------------------------------------- public API
def _check_resume(out: Path, profile: str, seed: int, key=None) -> None:
    info_path = out / "synth_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text())
        if (info.get("profile"), info.get("seed"), info.get("version")) != (profile, seed, VERSION):
            raise ParameterError(
                f"out_dir {str(out)!r} holds a synthetic data set of profile {info.get('profile')!r}, "
                f"seed {info.get('seed')!r}; expected an empty folder or profile {profile!r}, seed {seed}")
        if info.get("identity") != key:
            raise ParameterError(
                f"out_dir {str(out)!r} holds a synthetic data set of profile {profile!r}, seed {seed} "
                f"made with other backgrounds or settings (identity {info.get('identity')!r}, "
                f"expected {key!r}); expected an empty folder")
    elif out.exists() and any(out.iterdir()):
        raise ParameterError(f"out_dir {str(out)!r} is not empty and holds no synthetic data set; "
                             "expected an empty or new folder")


def generate(out_dir, *, profile: str = "mini", seed: int = 0, workers=None,
             progress: bool = True, backgrounds=None, test_backgrounds=None,
             settings=None) -> Path:
    """Write the synthetic data set of ``profile`` and ``seed`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path-like
        Folder to write; created if missing. A folder holding a partial run of the same profile,
        seed, settings and backgrounds is completed (existing FLAC files are kept), so an
        interrupted run resumes.
    profile : {"tiny", "mini", "field", "full"}
        ``tiny``: 48 train / 12 test recordings of 10 s (tests); ``mini``: 360 / 120 of 15 s (the
        default data set); ``field``: 360 / 120 of 20 s, calls mixed into real field recordings,
        the test split's from another site, the real data's label structure (a TP row on a quarter
        of the training recordings) and quieter calls; ``full``: 4727 / 1992 of 60 s (the
        competition's scale).
    seed : int
        Every random choice derives from it.
    workers : int, optional
        Processes rendering audio; default: the CPU count (one for ``tiny``).
    progress : bool
        Show a progress bar.
    backgrounds, test_backgrounds : path-like or sequence of path-like, optional
        ``field`` only: folders (or files) of field recordings, any rate and length, for the
        training and the test recordings; they must not share a file. Default:
        :func:`rfcxlib.synth.backgrounds.default_sources`.
    settings : dict, optional
        Settings in place of the profile's own (``n_train``, ``n_test``, ``duration_s``,
        ``fp_only``, ``snr_db`` ...: :func:`rfcxlib.synth.plan.resolve_settings`).

    Returns
    -------
    Path of ``out_dir``.
    """
    spec, resolved, key = prepare(profile, seed, settings, backgrounds, test_backgrounds)
    out = Path(out_dir)
    _check_resume(out, profile, int(seed), key)
    plan = make_plan(profile, int(seed), settings=settings, backgrounds=resolved)
    tables = _tables(plan)
    info = _summary(tables, plan, profile, int(seed), spec)
    if key is not None:
        info.update(identity=key, **_field_summary(tables, plan, spec, resolved))
    for split in ("train", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
        for leftover in (out / split).glob(".*.tmp"):  # half-written by an interrupted run
            leftover.unlink()
    write_json_atomic(out / "synth_info.json", {**info, "complete": False})
    jobs = [(str(out / split / f"{rid}.flac"), rec, int(seed), i)
            for split in ("train", "test") for i, (rid, rec) in
            enumerate(plan[split], start=0 if split == "train" else 10**6)]
    jobs = [j for j in jobs if not Path(j[0]).exists()]
    _run_jobs(jobs, int(seed), workers if workers else (1 if profile == "tiny" else os.cpu_count() or 1),
              progress, f"synth {profile}")
    for name, df in tables.items():
        write_text_atomic(out / name, df.to_csv(index=False))
    write_json_atomic(out / "synth_info.json", {**info, "complete": True})
    return out


def _run_jobs(jobs, seed: int, workers: int, progress: bool, desc: str) -> None:
    bar = tqdm(total=len(jobs), desc=desc, unit="rec", disable=not progress or not jobs)
    _templates(seed)  # rendered once here; forked workers inherit them
    if workers <= 1 or len(jobs) < 8:
        for job in jobs:
            _render_job(job)
            bar.update()
    else:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else None)
        with ctx.Pool(workers) as pool:
            for _ in pool.imap_unordered(_render_job, jobs, chunksize=4):
                bar.update()
    bar.close()


def dataset_dir(profile: str = "mini", seed: int = 0, *, backgrounds=None, test_backgrounds=None,
                settings=None) -> Path:
    """Where :func:`ensure_dataset` keeps the data set of ``profile`` and ``seed``:
    ``<cache>/synth/<profile>-seed<seed>``, with ``-<key>`` after it for a data set with real
    backgrounds or other settings (the key digests the settings and the backgrounds' file names
    and sizes, so a data set made from other recordings is never taken for this one)."""
    key = prepare(profile, seed, settings, backgrounds, test_backgrounds)[2]
    return cache_root() / "synth" / (f"{profile}-seed{seed}" + (f"-{key}" if key else ""))


def _info(path) -> dict:
    info = Path(path) / "synth_info.json"
    try:
        return json.loads(info.read_text()) if info.is_file() else {}
    except json.JSONDecodeError:
        return {}


def is_complete(path) -> bool:
    """Whether ``path`` holds a finished synthetic data set of this version of the generator."""
    info = _info(path)
    return bool(info.get("complete")) and info.get("version") == VERSION


def ensure_dataset(profile: str = "mini", seed: int = 0, *, progress: bool = True,
                   backgrounds=None, test_backgrounds=None, settings=None) -> Path:
    """The synthetic data set of ``profile`` and ``seed``, generated on first use.

    It lives under ``$RFCX_CACHE_DIR/synth/<profile>-seed<seed>/`` (default cache:
    ``~/.cache/rfcx``; :func:`dataset_dir`, which adds a key for real backgrounds, whose folders
    ``backgrounds`` and ``test_backgrounds`` are given as to :func:`generate`); a copy made by
    another version of the generator is replaced. It is built
    in a ``.partial`` folder beside it (resumed if a previous attempt was interrupted) and renamed
    into place when complete; a lock keeps two processes from building it at once.

    A run that may use real data (a data folder, the competition data on Kaggle) finds its data
    through :func:`rfcxlib.data.source.find_data`.
    """
    check_profile(profile)
    extra = dict(backgrounds=backgrounds, test_backgrounds=test_backgrounds, settings=settings)
    final = dataset_dir(profile, seed, **extra)
    if is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_complete(final):
            return final
        partial = final.parent / f".{final.name}.partial"
        info = _info(partial)
        if partial.exists() and (info.get("profile"), info.get("seed"), info.get("version")) != (
                profile, seed, VERSION):
            shutil.rmtree(partial)  # left by another version of the generator: start afresh
        generate(partial, profile=profile, seed=seed, progress=progress, **extra)
        replace_folder(partial, final)
    return final


def read_calls(data_dir) -> "pd.DataFrame | None":
    """Every sound placed in a synthetic data set (``synth_calls.csv``) with its species' band
    (``f_min``, ``f_max``); None for a folder without that file (real data).

    Columns: ``split, recording_id, kind ("call" or "burst"), species_id, songtype_id, t_min,
    t_max, snr_db, labelled, f_min, f_max``.
    """
    path = Path(data_dir) / "synth_calls.csv"
    if not path.is_file():
        return None
    calls = pd.read_csv(path, dtype={"recording_id": str})
    calls["f_min"] = calls.species_id.map(lambda s: snd.SPECIES[s][0])
    calls["f_max"] = calls.species_id.map(lambda s: snd.SPECIES[s][1])
    return calls


def unlabelled_calls(calls: pd.DataFrame, recording_id: str) -> pd.DataFrame:
    """Calls of a training recording that no TP row covers (species present, label unknown)."""
    sel = (calls.recording_id == recording_id) & (calls.kind == "call") & ~calls.labelled.astype(bool)
    return calls[sel]


def recording_calls(calls: pd.DataFrame, recording_id: str) -> pd.DataFrame:
    """Every call of a recording, labelled or not (a test recording's: its ground truth, in time)."""
    return calls[(calls.recording_id == recording_id) & (calls.kind == "call")]


def clip_truth(data_dir, recording_ids) -> "np.ndarray | None":
    """``(n, 24)`` float32: 1 for every species that calls in each of ``recording_ids`` (training
    or test), from ``synth_calls.csv``; None for a folder without it (real data). On training
    recordings this is the complete truth the TP/FP rows only sample: out-of-fold scores measured
    against it show what validation on known labels cannot (notebook 06)."""
    path = Path(data_dir) / "synth_calls.csv"
    if not path.is_file():
        return None
    calls = pd.read_csv(path, dtype={"recording_id": str})
    calls = calls[calls.kind == "call"]
    index = {str(r): i for i, r in enumerate(recording_ids)}
    rows = calls.recording_id.map(index)
    out = np.zeros((len(index), NUM_SPECIES), np.float32)
    keep = rows.notna().to_numpy()
    out[rows[keep].to_numpy(int), calls.species_id.to_numpy(int)[keep]] = 1.0
    return out


BACKGROUND_COLUMNS = ["split", "recording_id", "site", "file", "start_s", "length_s", "reversed", "level_rms"]


def read_backgrounds(data_dir) -> "pd.DataFrame | None":
    """The stretches of real recordings each background is made of (``synth_backgrounds.csv`` of
    a data set with real backgrounds, the ``field`` profile), in the order they follow each
    other; None for a folder without that file (other profiles, real data).

    Columns: ``split, recording_id, site, file`` (folder/name), ``start_s, length_s`` (the part
    of the file), ``reversed, level_rms``, and ``at_s``: where the stretch begins in the
    recording (each overlaps the one before by the crossfade ``backgrounds.XFADE_S``).

    Raises
    ------
    DataError
        A column missing, or a row whose ``start_s`` is negative or ``length_s`` not above the
        crossfade (the file and rows named).
    """
    path = Path(data_dir) / "synth_backgrounds.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"recording_id": str, "site": str, "file": str})
    missing = [c for c in BACKGROUND_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} missing; expected {BACKGROUND_COLUMNS}")
    start = pd.to_numeric(table.start_s, errors="coerce")
    length = pd.to_numeric(table.length_s, errors="coerce")
    bad = ~((start >= 0) & (length > sbg.XFADE_S))
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 2).tolist()
        raise DataError(f"{path}: rows {rows[:10]} (line numbers): start_s "
                        f"{table.start_s[bad].tolist()[:3]}, length_s {table.length_s[bad].tolist()[:3]}; "
                        f"expected start_s >= 0 and length_s > {sbg.XFADE_S} s (the crossfade)")
    table = table.assign(start_s=start, length_s=length, reversed=table.reversed.astype(str) == "True")
    ends = table.groupby("recording_id", sort=False).length_s.cumsum()
    k = table.groupby("recording_id", sort=False).cumcount()
    return table.assign(at_s=(ends - table.length_s - k * sbg.XFADE_S).round(4))
