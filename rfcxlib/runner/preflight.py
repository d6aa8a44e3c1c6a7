"""Checks of the data against the settings, run by ``rfcx run`` (and ``--dry-run``) before any
notebook executes: they cost seconds and save a training run that cannot work.

- the data folder as the notebooks will load it (tables, headers), and every recording decodable
  (its first and last frames: :func:`rfcxlib.data.checks.check_decodable`);
- crops and inference windows (``crop_s``) no longer than the shortest recording;
- fold counts possible for the labelled recordings;
- warnings for settings that train but cannot work (masks wider than the image, windows that
  skip audio).

:func:`check_series` returns ``(errors, warnings)``; each message names the notebook, the
parameter, its value and what to do.

Tests: tests/test_failures.py
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

from rfcxlib.data.checks import check_decodable, inspect_folder
from rfcxlib.runner.profiles import declared_parameters
from rfcxlib.layout import SAMPLE_RATE

_MAX_LISTED = 10


def effective_parameters(step) -> dict:
    """The values a step's notebook runs with: its parameters cell's defaults, then the
    injected parameters."""
    values = {}
    for name, spec in declared_parameters(step.notebook).items():
        try:
            values[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            pass
    values.update(step.parameters)
    return values


def check_data(root: Path) -> tuple[dict, list[str]]:
    """``(parts, problems)`` of the data folder: what loading it finds, and every recording
    whose first or last frames do not decode."""
    parts, problems = inspect_folder(root, sr=SAMPLE_RATE, require_audio=True, decode=False)
    for split in ("train", "test"):
        ids = parts["train_ids"] if split == "train" else parts["test_ids"]
        for rid in ids:
            path = Path(root) / split / f"{rid}.flac"
            if rid in parts["durations"] and path.exists():
                problem = check_decodable(path)
                if problem:
                    problems.append(problem)
    return parts, problems


def _shortest(parts: dict) -> Optional[tuple[float, str]]:
    durations = parts["durations"]
    if not durations:
        return None
    rid = min(durations, key=durations.get)
    split = "test" if rid in set(parts["test_ids"]) else "train"
    return durations[rid], f"{split}/{rid}.flac"


def check_settings(key: str, values: dict, parts: dict,
                   folds_too: bool = True) -> tuple[list[str], list[str]]:
    """Errors and warnings of one step's settings against the data ``parts`` (``folds_too``:
    also the fold counts, which need readable tables)."""
    errors, warnings = [], []
    where = f"notebook {key}"
    shortest = _shortest(parts)
    crop_s = values.get("crop_s")
    uses_crops = values.get("backbone") != "birdnet"  # BirdNET heads embed fixed 3 s windows
    if uses_crops and isinstance(crop_s, (int, float)) and shortest and crop_s > shortest[0] + 1e-6:
        errors.append(f"{where}: crop_s = {crop_s} s is longer than the shortest recording "
                      f"({shortest[0]:.2f} s, {shortest[1]}); training crops and inference "
                      f"windows must fit in every recording: use -p crop_s "
                      f"{shortest[0]:g} or less")
    labelled = len(set(parts["tp"].recording_id) | set(parts["fp"].recording_id))
    folds = values.get("folds")
    if folds_too and isinstance(folds, int) and not isinstance(folds, bool):
        if labelled < 2:
            errors.append(f"{where}: folds = {folds}, but the data has {labelled} labelled "
                          "training recording(s): folds grouped by recording need at least 2 "
                          "recordings with TP/FP rows (one to train on, one to validate on); "
                          "add labelled recordings to train_tp.csv / train_fp.csv")
        elif not 2 <= folds <= labelled:
            errors.append(f"{where}: folds = {folds}, but the data has {labelled} labelled "
                          f"training recordings: use -p folds N with 2 <= N <= {labelled}")
        else:
            bad = [f for f in values.get("train_folds") or []
                   if not isinstance(f, int) or not 0 <= f < folds]
            if bad:
                errors.append(f"{where}: train_folds {bad} outside 0..{folds - 1} "
                              f"(folds = {folds})")
    warnings += _warnings(where, values)
    return errors, warnings


def _warnings(where: str, values: dict) -> list[str]:
    out = []
    crop_s, hop_s = values.get("crop_s"), values.get("hop_s")
    if isinstance(crop_s, (int, float)) and isinstance(hop_s, (int, float)) and hop_s > crop_s:
        out.append(f"{where}: hop_s = {hop_s} > crop_s = {crop_s}: the inference windows skip "
                   "audio between them, calls there are never scored")
    n_mels, freq_mask = values.get("n_mels"), values.get("freq_mask")
    if isinstance(n_mels, int) and isinstance(freq_mask, int) and freq_mask >= n_mels:
        out.append(f"{where}: freq_mask = {freq_mask} >= n_mels = {n_mels}: SpecAugment can "
                   "mask the whole image")
    hop_length, time_mask = values.get("hop_length"), values.get("time_mask")
    if all(isinstance(v, (int, float)) for v in (crop_s, hop_length, time_mask)) and hop_length:
        frames = int(crop_s * SAMPLE_RATE / hop_length) + 1
        if time_mask >= frames:
            out.append(f"{where}: time_mask = {time_mask} >= the {frames} frames of a "
                       f"{crop_s} s crop: SpecAugment can mask the whole crop")
    for name in ("epochs", "steps_per_epoch", "batch_size"):
        value = values.get(name)
        if name != "steps_per_epoch" and isinstance(value, int) and value < 1:
            out.append(f"{where}: {name} = {value}: nothing is trained")
    return out


def check_series(steps, data_dir) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` of a planned series on its data folder (see the module's text)."""
    root = Path(data_dir)
    parts, errors = check_data(root)
    tables_ok = not errors
    if len(errors) > _MAX_LISTED:
        errors = errors[:_MAX_LISTED] + [f"... and {len(errors) - _MAX_LISTED} more problems "
                                         f"(rfcx validate {root} lists them all)"]
    warnings: list[str] = []
    for step in steps:
        e, w = check_settings(step.key, effective_parameters(step), parts, tables_ok)
        errors += e
        warnings += w
    return errors, list(dict.fromkeys(warnings))
