"""Species frequency bands: each species' band from the annotation boxes, and the bands file.

A species' band is the median ``f_min`` and ``f_max`` of its TP rows, or of its FP rows when it
has no TP row (a template detector drew both, so a species' boxes share one band):
:func:`species_bands`, ``{species: (f_min_hz, f_max_hz)}`` for the species with rows. Its users:
frequency filtering of training crops (``p_band_filter``) and ``band_mode`` scoring (the mel rows
outside a species' band zeroed, :func:`rfcxlib.features.pipeline.masks_of_bands`), the boxes of
pseudo-labels (:mod:`rfcxlib.noisy.pseudo_labels`), the frequency range of Raven selections
(:mod:`rfcxlib.inference.raven`) and the figures of notebooks 01 and 02.

The bands file ``bands.json`` holds ``{"bands_hz": {"<species>": [f_min, f_max], ...}}`` (species
with rows), and optionally ``"source"``, the data folder they came from. Training writes it in a
model folder scored with ``band_mode`` (``rfcx predict`` and the export score with it);
``rfcx predict`` writes it in a run folder for its Raven boxes. Run folders written by earlier
versions hold ``species_bands.json`` (``{"source": ..., "bands": {...}}``) instead: :func:`bands_file`
finds it when asked for the legacy name too, and :func:`read_bands` reads both layouts.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import NUM_SPECIES
from rfcxlib.atomic import write_json_atomic

BANDS_FILE = "bands.json"
#: The bands file of run folders written by earlier versions of ``rfcx predict``: read, never written.
LEGACY_BANDS_FILE = "species_bands.json"
_KEYS = {BANDS_FILE: "bands_hz", LEGACY_BANDS_FILE: "bands"}


def species_bands(tp: pd.DataFrame, fp: Optional[pd.DataFrame] = None) -> dict[int, tuple[float, float]]:
    """The frequency band of each species with rows.

    Parameters
    ----------
    tp, fp : pd.DataFrame
        Annotation tables with ``species_id``, ``f_min`` and ``f_max`` columns (``fp`` optional).

    Returns
    -------
    dict ``{species: (f_min_hz, f_max_hz)}``, sorted by species
        The medians of the species' TP rows, else of its FP rows; species without rows are absent.
    """
    out: dict[int, tuple[float, float]] = {}
    for name, table in (("fp", fp), ("tp", tp)):  # TP rows last: they win
        if table is None or not len(table):
            continue
        missing = sorted({"species_id", "f_min", "f_max"} - set(table.columns))
        if missing:
            raise ParameterError(f"{name} table lacks the columns {missing} the species' bands come from")
        median = (table.assign(species_id=table.species_id.astype(np.int64))
                  .groupby("species_id")[["f_min", "f_max"]].median())
        out.update({int(s): (float(r.f_min), float(r.f_max)) for s, r in median.iterrows()})
    return dict(sorted(out.items()))


def fill_bands(bands: dict, *, fmin_hz: float, fmax_hz: float) -> dict[int, tuple[float, float]]:
    """``bands`` for every species ``0..23``: a species without a band gets ``(fmin_hz, fmax_hz)``."""
    return {s: tuple(bands.get(s, (float(fmin_hz), float(fmax_hz)))) for s in range(NUM_SPECIES)}


def write_bands(folder, bands: dict, *, source=None) -> Path:
    """Write ``bands`` ``{species: (f_min_hz, f_max_hz)}`` as ``<folder>/bands.json`` (atomically);
    ``source``: the data folder they came from, kept beside them."""
    body: dict = {"bands_hz": {str(int(s)): [float(lo), float(hi)] for s, (lo, hi) in sorted(bands.items())}}
    if source is not None:
        body["source"] = str(source)
    return write_json_atomic(Path(folder) / BANDS_FILE, body)


def bands_file(folder, *, legacy: bool = False) -> Optional[Path]:
    """``<folder>/bands.json`` if it exists, else (``legacy``) ``<folder>/species_bands.json`` if
    that exists, else None."""
    for name in (BANDS_FILE, LEGACY_BANDS_FILE) if legacy else (BANDS_FILE,):
        path = Path(folder) / name
        if path.is_file():
            return path
    return None


def read_bands(path) -> dict[int, tuple[float, float]]:
    """The bands ``{species: (f_min_hz, f_max_hz)}`` of a bands file (``bands.json``, or the
    ``species_bands.json`` of earlier versions); :class:`DataError` naming it when it is unreadable."""
    path = Path(path)
    key = _KEYS.get(path.name, "bands_hz")
    try:
        out = {}
        for s, (lo, hi) in json.loads(path.read_text())[key].items():
            s, lo, hi = int(s), float(lo), float(hi)
            if not (0 <= s < NUM_SPECIES and math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"species {s}: [{lo}, {hi}]")
            out[s] = (lo, hi)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__}: {exc}); expected {{\"{key}\": "
                        f"{{species: [f_min, f_max]}}}} as training and rfcx predict write it") from None
    return dict(sorted(out.items()))
