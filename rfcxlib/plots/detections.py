"""Figures for ``rfcx predict``: a recording's spectrogram with its detections boxed, and the
per-species window scores over time with their thresholds. Each function takes ``fig=None``,
returns the figure, never shows or saves.

Tests: tests/test_notebooks.py
"""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from rfcxlib.features import logmel as features
from rfcxlib.config import FeatureConfig
from rfcxlib.plots.features import specshow
from rfcxlib.layout import SAMPLE_RATE


def top_species(windows: pd.DataFrame, n: int = 3) -> list[int]:
    """The ``n`` species with the highest window score (``windows``: ``species, score`` rows)."""
    return [int(s) for s in windows.groupby("species").score.max().sort_values(ascending=False).index[:n]]


def detections(S, windows: pd.DataFrame, selections: pd.DataFrame, *, thresholds: Sequence[float],
               species: Optional[Sequence[int]] = None, n_species: int = 3, sr: int = SAMPLE_RATE,
               config: Optional[FeatureConfig] = None, present: Sequence[int] = (), fig=None,
               title: str = ""):
    """Spectrogram with boxes (top) and score curves (bottom) of one recording.

    Parameters
    ----------
    S : array [shape=(frames, n_mels)]
        The recording's spectrogram (e.g. ``eda.power_to_db(features.mel_power(y, sr=sr))``).
    windows : pd.DataFrame
        Its rows of ``windows.csv`` (``start_s, end_s, species, score``).
    selections : pd.DataFrame
        Its Raven selection table (``Begin Time (s)``, ``End Time (s)``, ``Low Freq (Hz)``,
        ``High Freq (Hz)``, ``Species ID``).
    thresholds : sequence of float [shape=(24,)]
    species : the species drawn (default: :func:`top_species` of ``n_species``).
    present : species known to call in the recording (marked ``*`` in the legend).
    """
    c = config or FeatureConfig()
    species = list(species) if species is not None else top_species(windows, n_species)
    fig = fig or plt.figure(figsize=(12, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    arr = np.asarray(S)
    specshow(arr, sr=sr, config=c, ax=top, colorbar=False, cmap="gray",
             vmin=float(np.percentile(arr, 50.0)), title=title)
    xlim = top.get_xlim()
    top.set_xlabel("")
    colors = dict(zip(species, plt.cm.tab10(np.arange(len(species)) % 10)))
    centers = features.mel_band_centers(c)
    boxes = selections[["Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)", "Species ID"]]
    for t0, t1, f0, f1, s in boxes.itertuples(index=False, name=None):
        if int(s) not in colors:
            continue
        s = int(s)
        y0, y1 = np.interp([f0, f1], centers, np.arange(c.n_mels))
        top.add_patch(Rectangle((t0, y0), t1 - t0, y1 - y0, fill=False, ec=colors[s], lw=2.0))
        top.text(t0, y1 + 0.5, f"s{s}", color=colors[s], fontsize=9, fontweight="bold", va="bottom",
                 clip_on=True, bbox=dict(facecolor="black", alpha=0.6, pad=1.0, edgecolor="none"))
    for s in species:
        rows = windows[windows.species == s].sort_values("start_s")
        mid = (rows.start_s + rows.end_s) / 2.0
        mark = " *" if s in set(present) else ""
        bottom.plot(mid, rows.score, "-o", ms=3, color=colors[s], label=f"s{s}{mark}")
        bottom.axhline(float(thresholds[s]), color=colors[s], ls="--", lw=1.0)
    bottom.set_xlim(*xlim)  # the spectrogram's time range (shared by both axes)
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("window score")
    bottom.set_xlabel("time (s) — window centres; dashed: thresholds")
    bottom.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False,
                  title="* present" if len(present) else None)
    return fig
