"""Figures of a data set with real backgrounds (the synthetic ``field`` profile): a recording's
spectrogram with its boxes above a bar of the background stretches it is made of, and the
recordings of each site, training sites apart from test sites.

The stretches are the rows of :func:`rfcxlib.synth.dataset.read_backgrounds` (``split,
recording_id, site, file, start_s, length_s, reversed, level_rms, at_s``). Every function takes
``ax=None`` (or ``fig=None``), returns the axes or the figure, never shows or saves.

Tests: tests/test_plots_field.py
"""
from __future__ import annotations

from pathlib import PurePosixPath
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch, Rectangle

from rfcxlib.config import FeatureConfig
from rfcxlib.errors import ParameterError
from rfcxlib.layout import SAMPLE_RATE
from rfcxlib.plots import eda

SPLIT_COLORS = {"train": "#1f77b4", "test": "#ff7f0e"}
FILE_COLORS = plt.get_cmap("tab10").colors


def recording_sites(stretches: pd.DataFrame) -> pd.DataFrame:
    """One row per recording: ``split, recording_id, site`` (in the table's order)."""
    return stretches.drop_duplicates("recording_id")[["split", "recording_id", "site"]].reset_index(drop=True)


def site_counts(stretches: pd.DataFrame) -> dict:
    """For ``metrics.json``: the number of sites and of recordings per site in each split."""
    sites = recording_sites(stretches)
    out: dict = {}
    for split in ("train", "test"):
        per_site = sites[sites.split == split].site.value_counts()
        out[f"{split}_sites"] = len(per_site)
        out[f"{split}_recordings_per_site"] = {str(k): int(v) for k, v in per_site.items()}
    return out


def sites_per_split(stretches: pd.DataFrame, *, ax=None):
    """Horizontal bars: recordings per site, the training sites above the test sites (coloured
    by split, largest first), the count at the end of each bar."""
    sites = recording_sites(stretches)
    counts = sites.groupby(["split", "site"]).size().rename("n").reset_index()
    counts["order"] = counts.split.map({"train": 0, "test": 1}).fillna(2)
    counts = counts.sort_values(["order", "n", "site"], ascending=[True, False, True]).reset_index(drop=True)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.9 + 0.32 * len(counts)), layout="constrained")
    pos = np.arange(len(counts))
    ax.barh(pos, counts.n, color=[SPLIT_COLORS.get(s, "#7f7f7f") for s in counts.split], height=0.7)
    for p, n in zip(pos, counts.n):
        ax.text(n, p, f" {n}", va="center", ha="left", fontsize=8)
    ax.set_yticks(pos)
    ax.set_yticklabels(counts.site)
    ax.invert_yaxis()  # the first row on top
    ax.set_xlabel("recordings")
    ax.margins(x=0.12)
    splits = [s for s in SPLIT_COLORS if s in set(counts.split)]
    ax.legend(handles=[Patch(color=SPLIT_COLORS[s], label=f"{s}: {int((counts.split == s).sum())} site(s), "
                             f"{int(counts.n[counts.split == s].sum())} recordings") for s in splits],
              frameon=False, loc="lower right", fontsize=8)
    ax.set_title("Where the backgrounds were recorded: recordings per site")
    return ax


def _one_recording(stretches: pd.DataFrame) -> pd.DataFrame:
    ids = stretches.recording_id.unique()
    if len(ids) != 1:
        raise ParameterError(f"stretches: rows of {len(ids)} recordings ({list(ids[:3])}); expected the "
                             "stretches of one recording")
    return stretches


def describe(stretches: pd.DataFrame) -> str:
    """One line on a recording's background: its site, stretches, files and level (dBFS RMS)."""
    s = _one_recording(stretches)
    level_db = 20 * np.log10(float(s.level_rms.iloc[0]))
    n_files = s.file.nunique()
    return (f"site {s.site.iloc[0]}: {len(s)} {'stretch' if len(s) == 1 else 'stretches'} of "
            f"{n_files} {'file' if n_files == 1 else 'files'}, {level_db:.0f} dBFS")


def background_bar(stretches: pd.DataFrame, *, duration_s: Optional[float] = None, ax=None):
    """A recording's background as a thin bar: one span per stretch, from where it begins in
    the recording (``at_s``) for ``length_s``, coloured by file, labelled with the file's name,
    the part of the file it was cut from and "reversed" when it plays backwards (each label
    clipped to its span). ``duration_s``: the recording's length (the x range)."""
    s = _one_recording(stretches)
    if ax is None:
        _, ax = plt.subplots(figsize=(12, 0.8), layout="constrained")
    color_of = {f: FILE_COLORS[i % len(FILE_COLORS)] for i, f in enumerate(dict.fromkeys(s.file))}
    for k, r in enumerate(s.itertuples()):
        span = Rectangle((r.at_s, 0.0), r.length_s, 1.0, facecolor=color_of[r.file], edgecolor="black",
                         lw=0.8, alpha=0.85 if k % 2 == 0 else 0.6)
        ax.add_patch(span)
        label = (f"{PurePosixPath(r.file).name}\n{r.start_s:.1f}-{r.start_s + r.length_s:.1f} s"
                 + (" reversed" if r.reversed else ""))
        text = ax.text(r.at_s + 0.1, 0.5, label, va="center", ha="left", fontsize=7)
        text.set_clip_path(span)
    end = float((s.at_s + s.length_s).max())
    ax.set_xlim(0.0, duration_s if duration_s else end)
    ax.set_ylim(0.0, 1.0)
    ax.set_yticks([])
    ax.set_ylabel("background", rotation=0, ha="right", va="center")
    ax.set_xlabel("time (s)")
    return ax


def recording_with_background(S, *, stretches: pd.DataFrame, tp: Optional[pd.DataFrame] = None,
                              fp: Optional[pd.DataFrame] = None,
                              unlabelled: Optional[pd.DataFrame] = None,
                              calls: Optional[pd.DataFrame] = None, sr: int = SAMPLE_RATE,
                              config: Optional[FeatureConfig] = None, title: str = "",
                              legend: bool = True, fig=None):
    """A recording's spectrogram ``(frames, n_mels)`` with its boxes
    (:func:`rfcxlib.plots.eda.spectrogram_with_boxes`: ``tp``, ``fp``, ``unlabelled``, ``calls``)
    above :func:`background_bar` of its ``stretches``, on one time axis; dotted lines on the
    spectrogram where a stretch begins. The title is ``title`` followed by :func:`describe`.
    ``fig``: a figure or subfigure to draw into. Returns the figure."""
    s = _one_recording(stretches)
    c = config or FeatureConfig()
    fig = fig or plt.figure(figsize=(13, 4.8), layout="constrained")
    ax_s, ax_b = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (6, 1)})
    heading = f"{title} · {describe(s)}" if title else describe(s)
    eda.spectrogram_with_boxes(S, tp=tp, fp=fp, unlabelled=unlabelled, calls=calls, sr=sr, config=c,
                               title=heading, ax=ax_s, legend=legend)
    duration_s = ax_s.get_xlim()[1]
    for at in s.at_s.iloc[1:]:
        ax_s.axvline(at, color="white", ls=":", lw=1.0, alpha=0.8)
    ax_s.set_xlabel("")
    background_bar(s, duration_s=duration_s, ax=ax_b)
    return fig


def pick_pair(stretches: pd.DataFrame, tp: pd.DataFrame, fp: pd.DataFrame, *,
              seed: int = 0) -> list[tuple[str, str]]:
    """One training and one test recording worth showing, as ``[(split, recording_id), ...]``
    (a split without recordings left out): in a seeded random order, a training recording with
    TP and FP rows first, then TP rows only, then FP rows only, then none; within that, and for
    the test recording, a background made of more than one stretch first."""
    rng = np.random.default_rng(seed)
    sites = recording_sites(stretches)
    n_stretches = stretches.groupby("recording_id").size()
    tp_ids, fp_ids = set(tp.recording_id), set(fp.recording_id)

    def rank(split, rid):
        rows = 0 if split == "test" else [3, 2, 1, 0][2 * (rid in tp_ids) + (rid in fp_ids)]
        return rows, n_stretches[rid] < 2

    out = []
    for split in ("train", "test"):
        ids = [str(r) for r in rng.permutation(sites.recording_id[sites.split == split].to_numpy())]
        if ids:
            out.append((split, min(ids, key=lambda r: rank(split, r))))  # min keeps the first of ties
    return out
