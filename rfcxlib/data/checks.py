"""Checks of a data folder in the RFCx layout: what ``rfcx validate`` runs.

:func:`inspect_folder` gathers every problem it finds (it never stops at the first); the
loader (:func:`rfcxlib.data.tables.load_dataset`) raises them as one :class:`DataError`, and
:func:`validate` also decodes every recording and prints a summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import soundfile as sf
from rfcxlib.progress import tqdm

from rfcxlib.audio.header import audio_info
from rfcxlib.errors import DataError
from rfcxlib.layout import ANNOTATION_COLUMNS as COLUMNS
from rfcxlib.layout import NUM_SPECIES, SAMPLE_RATE, SITES_FILE, SUBMISSION_COLUMNS
ASSUMED_DURATION_S = 60.0  # for boxes of recordings that are not on disk (tables-only loading)
_TIME_TOL_S = 0.01  # rounding slack for boxes that end at the recording's end
_MAX_LISTED = 10  # lines listed per kind of problem


def _rows_msg(name: str, lines: list, what: str, expected: str) -> str:
    shown = ", ".join(str(x) for x in lines[:_MAX_LISTED])
    more = f" and {len(lines) - _MAX_LISTED} more" if len(lines) > _MAX_LISTED else ""
    return f"{name}: {what} at line {shown}{more}; expected {expected}"


def check_annotations(df: pd.DataFrame, name: str = "table") -> list[str]:
    """Problems of an annotation table in isolation (columns, types, NaN, ranges, duplicates).

    Line numbers are those of the CSV file (header = line 1). Returns a list of messages.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        return [f"{name}: missing column(s) {missing}; expected columns {COLUMNS}"]
    problems = []
    line = df.index.to_numpy() + 2
    nan = df[COLUMNS].isna().any(axis=1).to_numpy()
    if nan.any():
        problems.append(_rows_msg(name, line[nan].tolist(), "empty or NaN value", "a value in every column"))
    numeric = {}
    for col in COLUMNS[1:]:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = (values.isna() & ~df[col].isna()).to_numpy()
        if bad.any():
            examples = df[col][bad].head(3).tolist()
            problems.append(_rows_msg(name, line[bad].tolist(), f"non-numeric {col} {examples}", "a number"))
        numeric[col] = values.to_numpy(dtype=float)
    if problems:
        return problems
    sid = numeric["species_id"]
    checks = [
        ((sid != np.round(sid)) | (sid < 0) | (sid >= NUM_SPECIES), "species_id outside 0-23",
         f"an integer species id in [0, {NUM_SPECIES - 1}]", "species_id"),
        (numeric["songtype_id"] != np.round(numeric["songtype_id"]), "non-integer songtype_id",
         "an integer", "songtype_id"),
        (numeric["t_min"] >= numeric["t_max"], "t_min >= t_max", "t_min < t_max", "t_min"),
        (numeric["f_min"] >= numeric["f_max"], "f_min >= f_max", "f_min < f_max", "f_min"),
        ((numeric["t_min"] < 0) | (numeric["f_min"] < 0), "negative time or frequency",
         "t_min >= 0 and f_min >= 0", "t_min"),
    ]
    for bad, what, expected, col in checks:
        if bad.any():
            vals = df[col][bad].head(3).tolist()
            problems.append(_rows_msg(name, line[bad].tolist(), f"{what} ({col} {vals})", expected))
    dup = df.duplicated(subset=COLUMNS, keep="first").to_numpy()
    if dup.any():
        problems.append(_rows_msg(name, line[dup].tolist(), "duplicate row", "each row once"))
    return problems


def normalise_annotations(df: pd.DataFrame) -> pd.DataFrame:
    """An annotation table with its columns (:data:`COLUMNS`, in order) and their types
    (``recording_id`` str, ids int64, times and frequencies float64) and a fresh index; rows
    checked by :func:`check_annotations` first."""
    out = df[COLUMNS].copy()
    out["recording_id"] = out["recording_id"].astype(str)
    out["species_id"] = out["species_id"].astype(np.int64)
    out["songtype_id"] = out["songtype_id"].astype(np.int64)
    for c in ("t_min", "f_min", "t_max", "f_max"):
        out[c] = out[c].astype(np.float64)
    return out.reset_index(drop=True)


def read_annotations(path) -> pd.DataFrame:
    """Read and check ``train_tp.csv`` or ``train_fp.csv``; raise :class:`DataError` on problems."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected an annotation table with columns {COLUMNS}")
    try:
        df = pd.read_csv(path, dtype={"recording_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc})") from None
    problems = check_annotations(df, str(path))
    if problems:
        raise DataError("\n".join(problems))
    return normalise_annotations(df)


def _empty_table() -> pd.DataFrame:
    return normalise_annotations(pd.DataFrame({c: pd.Series(dtype=str if c == "recording_id" else float)
                                               for c in COLUMNS}))


def _read_csv(path: Path, problems: list, required: bool):
    if not path.is_file():
        if required:
            problems.append(f"{path}: file not found")
        return None
    try:
        return pd.read_csv(path, dtype={"recording_id": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{path}: not a readable CSV table ({str(exc).splitlines()[0]})")
        return None


def _read_tables(root: Path, problems: list) -> dict:
    tables = {}
    for key, name in (("tp", "train_tp.csv"), ("fp", "train_fp.csv")):
        df = _read_csv(root / name, problems, required=True)
        found = check_annotations(df, str(root / name)) if df is not None else ["unreadable"]
        if df is not None and found:
            problems.extend(found)
        tables[key] = normalise_annotations(df) if not found else _empty_table()
        tables[key + "_ok"] = not found
    return tables


def _audio_ids(root: Path, split: str, problems: list, required: bool) -> list[str]:
    folder = root / split
    if not folder.is_dir():
        if required:
            problems.append(f"{folder}: folder not found; expected {split}/<recording_id>.flac files")
        return []
    return sorted(p.stem for p in folder.glob("*.flac"))


def _check_header(path: Path, sr: Optional[int], decode: bool, problems: list) -> Optional[tuple]:
    """``(frames, samplerate)`` of a recording, or None (a problem is recorded)."""
    try:
        info = audio_info(path, allow_empty=True)
    except DataError as exc:
        problems.append(f"{exc}; expected a FLAC recording")
        return None
    ok = True
    if info.channels != 1:
        problems.append(f"{path}: {info.channels} channels; expected mono (1 channel)")
        ok = False
    if sr is not None and info.sr != sr:
        problems.append(f"{path}: sample rate {info.sr} Hz; expected {sr} Hz "
                        "(or allow any rate with sr=None and resample)")
        ok = False
    if info.frames <= 0:
        problems.append(f"{path}: no audio frames; expected a non-empty recording")
        ok = False
    if ok and decode:
        try:
            n = len(sf.read(str(path), dtype="int16", always_2d=True)[0])
        except Exception as exc:
            problems.append(f"{path}: cannot decode ({str(exc).strip()}); the file is corrupt or truncated")
            return None
        if n != info.frames:
            problems.append(f"{path}: decoded {n} frames, header says {info.frames}; the file is truncated")
            return None
    return (info.frames, info.sr) if ok else None


def check_decodable(path, n: int = 4096) -> Optional[str]:
    """A cheap decode check: the first and the last ``n`` frames of a recording (by its
    header's length); a truncated or corrupt file fails here in milliseconds (a full decode is
    ``rfcx validate``). Returns the problem, or None."""
    try:
        with sf.SoundFile(str(path)) as f:
            frames = f.frames
            head = len(f.read(min(n, frames), dtype="int16"))
            f.seek(max(0, frames - n))
            tail = len(f.read(n, dtype="int16"))
    except Exception as exc:  # libsndfile raises several types; all mean "cannot decode"
        return f"{path}: cannot decode ({str(exc).strip()}); the file is corrupt or truncated"
    if head != min(n, frames) or tail != min(n, frames):
        return f"{path}: decoding stops before the {frames} frames its header gives; truncated"
    return None


def _check_references(name: str, df: pd.DataFrame, durations: dict, require_audio: bool) -> list[str]:
    problems = []
    line = df.index.to_numpy() + 2
    ids = df.recording_id.to_numpy()
    if require_audio:
        absent = ~np.isin(ids, list(durations))
        if absent.any():
            shown = sorted(set(ids[absent]))[:5]
            problems.append(_rows_msg(name, line[absent].tolist(), f"recording(s) {shown} absent from train/",
                                      "a recording with a file train/<recording_id>.flac"))
    dur = np.array([durations.get(r, ASSUMED_DURATION_S) for r in ids], float)
    outside = df.t_max.to_numpy() > dur + _TIME_TOL_S
    if outside.any():
        i = np.flatnonzero(outside)[0]
        problems.append(_rows_msg(name, line[outside].tolist(), f"box ending after the recording "
                                  f"(t_max {df.t_max.iloc[i]} s > {dur[i]:.3f} s)",
                                  "0 <= t_min < t_max <= the recording's duration"))
    return problems


#: A labels folder (rfcx review, ``--extra-labels``): rows added to train_tp.csv / train_fp.csv.
ADDED_FILES = {"tp": "added_tp.csv", "fp": "added_fp.csv"}


def check_added_labels(folder, durations: dict) -> list[str]:
    """Problems of a labels folder's ``added_tp.csv`` and ``added_fp.csv`` (either may be absent),
    checked as the original tables are; a row must name a training recording of ``durations``
    (recording id -> seconds) and end within it. See :mod:`rfcxlib.data.extra_labels`."""
    folder = Path(folder)
    if not folder.is_dir():
        return [f"extra labels {str(folder)!r}: folder not found; expected a folder with "
                f"{ADDED_FILES['tp']} and/or {ADDED_FILES['fp']}"]
    problems: list[str] = []
    for name in ADDED_FILES.values():
        df = _read_csv(folder / name, problems, required=False)
        found = check_annotations(df, str(folder / name)) if df is not None else []
        problems += found or ([] if df is None else _check_references(str(folder / name), df, durations, True))
    return problems


def _check_test_tables(root: Path, test_files: list, problems: list, require_audio: bool):
    sub = _read_csv(root / "sample_submission.csv", problems, required=require_audio)
    test_ids = list(test_files)
    if sub is not None:
        name = root / "sample_submission.csv"
        if list(sub.columns) != SUBMISSION_COLUMNS:
            problems.append(f"{name}: columns {list(sub.columns)[:6]}...; "
                            "expected recording_id, s0, ..., s23")
        elif sub.recording_id.isna().any() or sub.recording_id.duplicated().any():
            bad = sub.recording_id.isna() | sub.recording_id.duplicated()
            problems.append(_rows_msg(str(name), (np.flatnonzero(bad) + 2).tolist(), "empty or repeated "
                                      "recording_id", "each test recording once"))
        else:
            test_ids = sub.recording_id.astype(str).tolist()
            if require_audio:
                for rid in sorted(set(test_ids) - set(test_files))[:_MAX_LISTED]:
                    problems.append(f"{name}: recording {rid!r} has no file test/{rid}.flac")
                for rid in sorted(set(test_files) - set(test_ids))[:_MAX_LISTED]:
                    problems.append(f"{root / 'test' / rid}.flac: not listed in sample_submission.csv")
    truth = _read_csv(root / "test_ground_truth.csv", problems, required=False)
    if truth is not None:
        name = root / "test_ground_truth.csv"
        if list(truth.columns) != ["recording_id", "species_id"]:
            problems.append(f"{name}: columns {list(truth.columns)}; expected ['recording_id', 'species_id']")
            return test_ids, None
        sid = pd.to_numeric(truth.species_id, errors="coerce")
        bad = (sid.isna() | (sid < 0) | (sid >= NUM_SPECIES) | (sid != sid.round())).to_numpy()
        bad = bad | ~truth.recording_id.astype(str).isin(test_ids).to_numpy()
        if bad.any():
            problems.append(_rows_msg(str(name), (np.flatnonzero(bad) + 2).tolist(), "unknown recording or "
                                      "species", "a test recording and a species id in [0, 23]"))
            return test_ids, None
        truth = truth.assign(recording_id=truth.recording_id.astype(str), species_id=sid.astype(np.int64))
    return test_ids, truth


def check_sites(sites: Optional[pd.DataFrame], name: str, ids: set) -> tuple[Optional[pd.Series], list[str]]:
    """A sites table (``recording_id,site``: where each recording was made; folds are grouped by
    it): ``(Series recording_id -> site, problems)``. Every row must name a recording of ``ids``
    once and a non-empty site."""
    if sites is None:
        return None, []
    if list(sites.columns) != ["recording_id", "site"]:
        return None, [f"{name}: columns {list(sites.columns)[:6]}; expected ['recording_id', 'site']"]
    rid = sites.recording_id.astype(str)
    site = sites.site.astype(str).str.strip()
    bad = (sites.recording_id.isna() | sites.site.isna() | (site == "") | rid.duplicated()
           | ~rid.isin(ids)).to_numpy()
    if bad.any():
        return None, [_rows_msg(name, (np.flatnonzero(bad) + 2).tolist(), "an empty, repeated or unknown "
                                "recording_id or an empty site", "each recording of train/ or test/ once, "
                                "with the name of its site")]
    return pd.Series(site.to_numpy(), index=pd.Index(rid.to_numpy(), name="recording_id"), name="site"), []


def read_sites(path, ids) -> pd.Series:
    """The sites table at ``path`` (:func:`check_sites`) for the recordings ``ids``; a problem raises
    :class:`DataError` naming the file and rows."""
    problems: list[str] = []
    sites, found = check_sites(_read_csv(Path(path), problems, required=True), str(path), set(ids))
    if problems or found:
        raise DataError("\n".join(problems + found))
    return sites


def inspect_folder(data_dir, *, sr: Optional[int] = SAMPLE_RATE, require_audio: bool = True,
                   decode: bool = False, progress: bool = False,
                   extra_labels=None) -> tuple[dict, list[str]]:
    """Check a data folder; return ``(parts, problems)`` where ``parts`` are the
    :class:`rfcxlib.data.tables.Dataset` fields and ``problems`` a list of messages (empty: all good).

    ``decode=True`` decodes every recording (finds truncated files); otherwise only headers are read.
    ``extra_labels``: a labels folder checked too (:func:`check_added_labels`).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"data_dir {str(root)!r}: folder not found; expected a folder in the RFCx layout "
                        "(train_tp.csv, train_fp.csv, train/, test/, sample_submission.csv)")
    problems: list[str] = []
    tables = _read_tables(root, problems)
    files = {s: _audio_ids(root, s, problems, require_audio) for s in ("train", "test")}
    both = sorted(set(files["train"]) & set(files["test"]))
    if both:
        problems.append(f"{root}: recording(s) {both[:5]} in both train/ and test/; expected each in one")
    durations, rates = {}, set()
    todo = [(s, rid) for s in ("train", "test") for rid in files[s]]
    for split, rid in tqdm(todo, desc="checking audio", unit="file", disable=not progress):
        header = _check_header(root / split / f"{rid}.flac", sr, decode, problems)
        if header:
            durations[rid] = header[0] / header[1]
            rates.add(header[1])
    for key, name in (("tp", "train_tp.csv"), ("fp", "train_fp.csv")):
        if tables[key + "_ok"]:
            train_dur = {r: durations[r] for r in files["train"] if r in durations}
            if require_audio:  # a recording whose file is broken is reported once, above
                train_dur.update({r: ASSUMED_DURATION_S for r in files["train"] if r not in durations})
            problems += _check_references(str(root / name), tables[key], train_dur, require_audio)
    test_ids, truth = _check_test_tables(root, files["test"], problems, require_audio)
    if extra_labels:
        problems += check_added_labels(extra_labels, {r: durations.get(r, ASSUMED_DURATION_S) for r in files["train"]})
    sites, found = check_sites(_read_csv(root / SITES_FILE, problems, required=False), str(root / SITES_FILE),
                               set(files["train"]) | set(files["test"]))
    problems += found
    parts = dict(root=root, tp=tables["tp"], fp=tables["fp"], train_ids=files["train"], test_ids=test_ids,
                 ground_truth=truth, durations=durations, sites=sites,
                 sample_rate=rates.pop() if len(rates) == 1 else None)
    return parts, problems


def summarise(tp: pd.DataFrame, fp: pd.DataFrame) -> pd.DataFrame:
    """Per species: TP rows, FP rows, training recordings with a TP row, median TP box length (s)."""
    out = pd.DataFrame(index=pd.RangeIndex(NUM_SPECIES, name="species_id"))
    out["tp_rows"] = tp.groupby("species_id").size().reindex(out.index, fill_value=0)
    out["fp_rows"] = fp.groupby("species_id").size().reindex(out.index, fill_value=0)
    out["tp_recordings"] = tp.groupby("species_id").recording_id.nunique().reindex(out.index, fill_value=0)
    out["box_s"] = (tp.t_max - tp.t_min).groupby(tp.species_id).median().reindex(out.index).round(2)
    return out


def validate(data_dir, *, sr: Optional[int] = SAMPLE_RATE, decode: bool = True, progress: bool = True,
             require_audio: bool = True, extra_labels=None) -> dict:
    """Full check of a data folder (and of a labels folder ``extra_labels``):
    ``{"problems": [...], "parts": {...}, "species": DataFrame}``."""
    parts, problems = inspect_folder(data_dir, sr=sr, require_audio=require_audio, decode=decode,
                                     progress=progress, extra_labels=extra_labels)
    return {"problems": problems, "parts": parts, "species": summarise(parts["tp"], parts["fp"])}


def _sites_line(sites: Optional[pd.Series], train_ids) -> str:
    if sites is None:
        return f"none ({SITES_FILE} absent: folds group by recording)"
    train = sites.reindex(train_ids).dropna()
    counts = train.value_counts()
    return (f"{sites.nunique()} in {SITES_FILE}; training recordings by site: "
            + ", ".join(f"{k} {v}" for k, v in counts.head(8).items()) + (" ..." if len(counts) > 8 else ""))


def format_report(report: dict) -> str:
    parts, problems = report["parts"], report["problems"]
    dur = np.array(list(parts["durations"].values()) or [0.0])
    lines = [
        f"data folder: {parts['root']}",
        f"recordings: {len(parts['train_ids'])} train, {len(parts['test_ids'])} test; "
        f"sample rate: {parts['sample_rate'] or 'mixed/none'}; duration {dur.min():.1f}-{dur.max():.1f} s",
        f"annotations: {len(parts['tp'])} TP rows over {parts['tp'].recording_id.nunique()} recordings, "
        f"{len(parts['fp'])} FP rows over {parts['fp'].recording_id.nunique()} recordings",
        f"test ground truth: {'yes' if parts['ground_truth'] is not None else 'no'}",
        f"sites: {_sites_line(parts.get('sites'), parts['train_ids'])}",
        "", report["species"].to_string(), "",
        f"problems: {len(problems)}",
    ]
    return "\n".join(lines + [f"  - {p}" for p in problems])
