"""Raven Pro selection tables: runs of windows above a threshold merged into time-frequency boxes.

A selection table is a tab-separated text file with one row per selection (box), in the columns
Raven Pro writes (``Selection``, ``View``, ``Channel``, ``Begin Time (s)``, ``End Time (s)``,
``Low Freq (Hz)``, ``High Freq (Hz)``) followed by annotation columns: here ``Species`` (the name,
or ``s<id>``), ``Species ID``, ``Score`` (the highest window score inside the box) and ``Windows``
(how many windows it merges). A box's frequency range is its species' band: the median
``f_min``-``f_max`` of the species' TP rows in the training tables (:func:`box_bands`).
BirdNET-Analyzer and OpenSoundscape write the same layout; Raven
opens it with *File ▶ Open Selection Table*.

Tests: tests/test_predict.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from rfcxlib.data.checks import read_annotations
from rfcxlib.features.bands import bands_file, fill_bands, read_bands, species_bands, write_bands
from rfcxlib.synth import dataset as synth
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.atomic import write_text_atomic

RAVEN_COLUMNS = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)",
                 "High Freq (Hz)", "Species", "Species ID", "Score", "Windows"]
SUFFIX = ".selections.txt"


def merge_runs(start_s, end_s, score, *, threshold: float) -> list[tuple[float, float, float, int]]:
    """Merge runs of detected windows (``score >= threshold``) into selections.

    Parameters
    ----------
    start_s, end_s, score : array [shape=(n,)]
        One species' windows in time order.
    threshold : float

    Returns
    -------
    list of ``(begin_s, end_s, max_score, n_windows)``: each selection is a run of consecutive
    detected windows (no window below the threshold between them), each starting before or where
    the previous one ends.
    """
    start_s, end_s, score = (np.asarray(a, np.float64).reshape(-1) for a in (start_s, end_s, score))
    if not (len(start_s) == len(end_s) == len(score)):
        raise ParameterError(f"start_s, end_s and score have lengths {len(start_s)}, {len(end_s)}, "
                             f"{len(score)}: expected one value per window")
    boxes: list[list] = []
    previous_detected = False
    for t0, t1, s in zip(start_s, end_s, score):
        detected = bool(s >= threshold)
        if detected and previous_detected and t0 <= boxes[-1][1] + 1e-9:
            box = boxes[-1]
            box[1], box[2], box[3] = max(box[1], t1), max(box[2], s), box[3] + 1
        elif detected:
            boxes.append([float(t0), float(t1), float(s), 1])
        previous_detected = detected
    return [(b[0], b[1], b[2], int(b[3])) for b in boxes]


def selections(windows: pd.DataFrame, *, thresholds: Sequence[float],
               bands: Mapping[int, tuple[float, float]],
               names: Optional[Mapping[int, str]] = None) -> pd.DataFrame:
    """The selection table of one recording.

    Parameters
    ----------
    windows : pd.DataFrame
        One row per window and species: ``start_s, end_s, species, score`` (any order).
    thresholds : sequence of float [shape=(24,)]
        Per-species detection threshold (``score >= threshold``).
    bands : mapping
        ``{species: (low_hz, high_hz)}``: the box's frequency range.
    names : mapping, optional
        ``{species: name}`` for the ``Species`` column (default ``s<id>``).

    Returns
    -------
    pd.DataFrame with :data:`RAVEN_COLUMNS`, selections numbered from 1 in order of begin time.
    """
    rows = []
    for species, group in windows.groupby("species", sort=True):
        s = int(species)
        group = group.sort_values("start_s", kind="stable")
        lo, hi = bands[s]
        label = (names or {}).get(s, f"s{s}")
        for t0, t1, score, n in merge_runs(group.start_s.to_numpy(), group.end_s.to_numpy(),
                                           group.score.to_numpy(), threshold=float(thresholds[s])):
            rows.append({"Begin Time (s)": t0, "End Time (s)": t1, "Low Freq (Hz)": float(lo),
                         "High Freq (Hz)": float(hi), "Species": label, "Species ID": s,
                         "Score": score, "Windows": n})
    table = pd.DataFrame(rows, columns=RAVEN_COLUMNS[3:])
    table = table.sort_values(["Begin Time (s)", "Species ID"], kind="stable", ignore_index=True)
    table.insert(0, "Channel", 1)
    table.insert(0, "View", "Spectrogram 1")
    table.insert(0, "Selection", np.arange(1, len(table) + 1))
    return table[RAVEN_COLUMNS]


def write_selection_table(path, table: pd.DataFrame) -> Path:
    """Write ``table`` as a Raven selection table (tab-separated, header line; atomic)."""
    missing = [c for c in RAVEN_COLUMNS[:7] if c not in table.columns]
    if missing:
        raise ParameterError(f"selection table lacks the Raven columns {missing}")
    text = table.to_csv(sep="\t", index=False, float_format="%.6f", lineterminator="\n")
    return write_text_atomic(path, text)


def read_selection_table(path) -> pd.DataFrame:
    """Read a selection table back (the inverse of :func:`write_selection_table`)."""
    return pd.read_csv(path, sep="\t")


# --------------------------------------------------------------------------- bands and names
def _data_root(config: dict, data_dir) -> Optional[Path]:
    if data_dir:
        return Path(data_dir)
    data_cfg = config.get("data") or {}
    if data_cfg.get("data_dir"):
        return Path(data_cfg["data_dir"])
    try:
        root = synth.dataset_dir(data_cfg.get("profile", "mini"), int(data_cfg.get("data_seed", 0)))
    except (DataError, ParameterError):  # e.g. the field profile's background folders are gone
        return None
    return root if synth.is_complete(root) else None


def box_bands(source: Path, models: list, *, data_dir=None) -> tuple[dict, str]:
    """The frequency range of each species' boxes, ``{species: (low_hz, high_hz)}`` for all 24
    species, and where it came from: the bands (:func:`rfcxlib.features.bands.species_bands`) of
    the training tables of ``data_dir``, else those saved in ``source`` (its ``bands.json``, or the
    ``species_bands.json`` of earlier versions), else those of the data set the first model was
    trained on (then saved as ``<source>/bands.json``). Species without rows get the features'
    whole mel range."""
    fc = (models[0].config.get("features") or {})
    full = dict(fmin_hz=float(fc.get("fmin", 40.0)), fmax_hz=float(fc.get("fmax", 15000.0)))
    saved = None if data_dir else bands_file(source, legacy=True)
    if saved is not None:
        return fill_bands(read_bands(saved), **full), str(saved)
    root = _data_root(models[0].config, data_dir)
    tp_path = root / "train_tp.csv" if root else None
    if tp_path is None or not tp_path.is_file():
        if data_dir:
            raise DataError(f"{tp_path}: no train_tp.csv to take the species' bands from")
        return fill_bands({}, **full), "features mel range (no training tables found)"
    fp_path = root / "train_fp.csv"
    found = species_bands(read_annotations(tp_path), read_annotations(fp_path) if fp_path.is_file() else None)
    if not data_dir:
        try:  # kept with the run for when its data set is gone; a read-only run folder only loses that
            write_bands(source, found, source=root)
        except OSError:
            pass
    return fill_bands(found, **full), str(root)


def species_names(source: Path, models: list, *, data_dir=None) -> Optional[dict]:
    """``{species: name}`` from ``species.csv`` (``species_id,name``) of the data set, if it has one."""
    root = _data_root(models[0].config, data_dir)
    path = root / "species.csv" if root else None
    if path is None or not path.is_file():
        return None
    table = pd.read_csv(path)
    if not {"species_id", "name"} <= set(table.columns):
        raise DataError(f"{path}: expected columns species_id,name; found {list(table.columns)}")
    return {int(s): str(n) for s, n in zip(table.species_id, table.name)}
