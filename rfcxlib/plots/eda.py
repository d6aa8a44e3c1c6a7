"""Figures of the data set: rows per species, bands and box lengths, co-occurrence, and
spectrograms with their TP / FP boxes (and, on synthetic data, the calls nobody labelled or the
calls a test recording holds).

Every function takes ``ax=None`` (or ``fig=None``), returns the axes or the figure, never shows
or saves.
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from rfcxlib.features import logmel as features
from rfcxlib.features.bands import species_bands
from rfcxlib.config import FeatureConfig
from rfcxlib.layout import NUM_SPECIES, SAMPLE_RATE
from rfcxlib.plots.features import specshow

TP_COLOR = "#2ca02c"
FP_COLOR = "#d62728"
UNLABELLED_COLOR = "#00e5ff"
CALL_COLOR = "#ffd23f"
BOX_COLORS = {"tp": "#4cff4c", "fp": "#ff5c5c", "unlabelled": UNLABELLED_COLOR, "call": CALL_COLOR}
BOX_NAMES = {"tp": "TP", "fp": "FP", "unlabelled": "no row:", "call": "call"}


def _axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def rows_per_species(tp: pd.DataFrame, fp: pd.DataFrame, *, ax=None):
    """Grouped bars: TP and FP rows per species, with the number of recordings above each bar."""
    ax = _axes(ax, (11, 3.6))
    x = np.arange(NUM_SPECIES)
    for offset, df, color, name in ((-0.2, tp, TP_COLOR, "TP"), (0.2, fp, FP_COLOR, "FP")):
        rows = df.groupby("species_id").size().reindex(x, fill_value=0)
        recs = df.groupby("species_id").recording_id.nunique().reindex(x, fill_value=0)
        ax.bar(x + offset, rows, width=0.4, color=color, label=f"{name} rows ({len(df)})")
        for xi, r, n in zip(x + offset, rows, recs):
            ax.text(xi, r, str(n), ha="center", va="bottom", fontsize=6, color=color)
    ax.set_xticks(x)
    ax.set_xlabel("species id")
    ax.set_ylabel("annotation rows")
    ax.set_title("Rows per species (numbers above bars: recordings)")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never on them
    ax.margins(x=0.01, y=0.08)
    return ax


def calls_per_species(calls: pd.DataFrame, *, ax=None):
    """Synthetic data: calls of each species in the training recordings, with a TP row and
    without any (partial labels). ``calls`` is ``synth.read_calls``' table."""
    ax = _axes(ax, (11, 3.4))
    train = calls[(calls.split == "train") & (calls.kind == "call")]
    x = np.arange(NUM_SPECIES)
    lab = train[train.labelled.astype(bool)].groupby("species_id").size().reindex(x, fill_value=0)
    unl = train[~train.labelled.astype(bool)].groupby("species_id").size().reindex(x, fill_value=0)
    ax.bar(x, lab, color=TP_COLOR, label=f"with a TP row ({lab.sum()})")
    ax.bar(x, unl, bottom=lab, color="#9e9e9e", label=f"present, no row ({unl.sum()})")
    ax.set_xticks(x)
    ax.set_xlabel("species id")
    ax.set_ylabel("calls in training recordings")
    ax.set_title("Partial labels: calls with and without a row")
    ax.legend(frameon=False)
    ax.margins(x=0.01)
    return ax


def band_per_species(rows: pd.DataFrame, *, ax=None):
    """Each species' frequency band (:func:`rfcxlib.features.bands.species_bands` of ``rows``) on a
    log axis, coloured by its median box length."""
    ax = _axes(ax, (11, 3.6))
    bands = pd.DataFrame.from_dict(species_bands(rows), orient="index", columns=["lo", "hi"])
    stats = bands.assign(len=(rows.t_max - rows.t_min).groupby(rows.species_id).median())
    norm = plt.Normalize(0, max(1.0, float(stats.len.max())))
    cmap = plt.get_cmap("viridis")
    ax.bar(stats.index, stats.hi - stats.lo, bottom=stats.lo, width=0.7, color=cmap(norm(stats.len)))
    ax.set_yscale("log")
    ax.set_yticks([100, 300, 1000, 3000, 10000])
    ax.set_yticklabels(["100", "300", "1k", "3k", "10k"])
    ax.set_xticks(np.arange(NUM_SPECIES))
    ax.set_xlabel("species id")
    ax.set_ylabel("frequency (Hz)")
    ax.set_title("Frequency band per species (colour: median box length)")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    ax.figure.colorbar(sm, ax=ax, label="box length (s)", pad=0.01)
    return ax


def box_lengths(rows: pd.DataFrame, *, ax=None):
    """Distribution of box lengths (t_max - t_min) per species."""
    ax = _axes(ax, (11, 3.2))
    lengths = (rows.t_max - rows.t_min).groupby(rows.species_id)
    data = [lengths.get_group(s).to_numpy() if s in lengths.groups else np.array([np.nan])
            for s in range(NUM_SPECIES)]
    ax.boxplot(data, positions=np.arange(NUM_SPECIES), widths=0.6, flierprops={"markersize": 2})
    ax.set_xlabel("species id")
    ax.set_ylabel("box length (s)")
    ax.set_title("Box length per species (template detector: nearly constant)")
    return ax


def cooccurrence_matrix(pairs: pd.DataFrame, other: Optional[pd.DataFrame] = None) -> np.ndarray:
    """``(24, 24)`` counts of recordings in which two species both appear, from tables with
    ``recording_id`` and ``species_id``. With ``other``: rows are species of ``pairs``, columns
    species of ``other`` (e.g. TP species against FP species)."""
    def onehot(df):
        return pd.crosstab(df.recording_id, df.species_id).reindex(columns=range(NUM_SPECIES), fill_value=0)

    a = onehot(pairs)
    b = a if other is None else onehot(other).reindex(index=a.index, fill_value=0)
    return a.clip(upper=1).to_numpy().T @ b.clip(upper=1).to_numpy()


def cooccurrence(pairs: pd.DataFrame, other: Optional[pd.DataFrame] = None, *, title: str = "",
                 xlabel: str = "species id", ylabel: str = "species id", ax=None):
    """Heatmap of :func:`cooccurrence_matrix`; without ``other`` the diagonal is left blank."""
    ax = _axes(ax, (5.2, 4.6))
    m = cooccurrence_matrix(pairs, other).astype(float)
    if other is None:
        np.fill_diagonal(m, np.nan)
    m[m == 0] = np.nan  # empty cells white
    top = np.nanmax(m) if np.isfinite(m).any() else 1.0
    im = ax.imshow(m, cmap="viridis", origin="lower", vmin=1, vmax=max(2.0, top))
    bar = ax.figure.colorbar(im, ax=ax, label="recordings", fraction=0.046, pad=0.04)
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    ax.set_xticks(range(0, NUM_SPECIES, 2))
    ax.set_yticks(range(0, NUM_SPECIES, 2))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(False)
    ax.set_title(title or "Species in the same recording")
    return ax


def species_per_recording(pairs: pd.DataFrame, *, ax=None, title: str = ""):
    """Histogram of the number of distinct species per recording."""
    ax = _axes(ax, (4.5, 3.2))
    counts = pairs.groupby("recording_id").species_id.nunique()
    bins = np.arange(0.5, counts.max() + 1.5)
    ax.hist(counts, bins=bins, color="#555555", rwidth=0.8)
    ax.set_xticks(np.arange(1, counts.max() + 1))
    ax.set_xlabel("species per recording")
    ax.set_ylabel("recordings")
    ax.set_title(title or "Species per recording")
    return ax


def _mel_row(f_hz, config: FeatureConfig):
    centers = features.mel_band_centers(config)
    return np.interp(f_hz, centers, np.arange(config.n_mels))


def power_to_db(M, *, top_db: float = 60.0) -> np.ndarray:
    """``10 log10(M)`` clipped to ``top_db`` below its maximum: the scale to look at a mel
    spectrogram with (the models' ``log1p`` compresses quiet sounds to black)."""
    M = M.numpy() if hasattr(M, "numpy") else np.asarray(M)
    db = 10.0 * np.log10(np.maximum(M, 1e-12))
    return np.maximum(db, db.max() - top_db)


def _box(ax, t0, t1, f0, f1, label, kind, config, ls="-"):
    y0, y1 = _mel_row(f0, config), _mel_row(f1, config)
    color = BOX_COLORS[kind]
    ax.add_patch(Rectangle((t0, y0), t1 - t0, y1 - y0, fill=False, ec=color, lw=2.0, ls=ls))
    # TP labels above the box's left corner, FP labels below it, unlabelled above its right corner
    x, y, va, ha = {"tp": (t0, y1 + 0.6, "bottom", "left"), "fp": (t0, y0 - 0.6, "top", "left"),
                    "unlabelled": (t1, y1 + 0.6, "bottom", "right"),
                    "call": (t0, y1 + 0.6, "bottom", "left")}[kind]
    if kind == "fp" and y0 < 6:  # no room below: inside the box, at its foot
        y, va = y0 + 0.6, "bottom"
    if kind != "fp" and y1 > config.n_mels - 6:  # no room above: inside the box, at its top
        y, va = y1 - 0.6, "top"
    ax.text(x, y, label, color=color, fontsize=9, fontweight="bold", va=va, ha=ha, clip_on=True,
            bbox=dict(facecolor="black", alpha=0.6, pad=1.2, edgecolor="none"))


def spectrogram_with_boxes(S, *, tp: Optional[pd.DataFrame] = None, fp: Optional[pd.DataFrame] = None,
                           unlabelled: Optional[pd.DataFrame] = None,
                           calls: Optional[pd.DataFrame] = None, sr: int = SAMPLE_RATE,
                           config: Optional[FeatureConfig] = None, start_s: float = 0.0,
                           title: str = "", ax=None, legend: bool = True, cmap: str = "gray",
                           floor_percentile: float = 50.0):
    """A spectrogram ``(frames, n_mels)`` (e.g. :func:`power_to_db` of a mel power) with its boxes.

    ``tp`` / ``fp``: rows of the recording (RFCx columns); ``unlabelled``: calls present without
    a row (``species_id, t_min, t_max, f_min, f_max``, as ``synth.unlabelled_calls`` gives),
    drawn dashed; ``calls``: the calls a recording holds, known from the synthetic truth (the
    same columns; e.g. a test recording's, ``synth.recording_calls``). A grey colour map keeps
    the coloured boxes readable; values below the ``floor_percentile`` percentile (the
    background, mostly) are drawn black. The legend names TP and FP rows whenever ``tp`` or
    ``fp`` is given, the other kinds when they draw a box.
    """
    c = config or FeatureConfig()
    ax = _axes(ax, (12, 4))
    arr = S.numpy() if hasattr(S, "numpy") else np.asarray(S)
    specshow(arr, sr=sr, config=c, ax=ax, title=title, colorbar=False, start_s=start_s, cmap=cmap,
             vmin=float(np.percentile(arr, floor_percentile)))
    for kind, df in (("tp", tp), ("fp", fp), ("unlabelled", unlabelled), ("call", calls)):
        if df is None:
            continue
        for r in df.itertuples():
            _box(ax, r.t_min, r.t_max, r.f_min, r.f_max, f"{BOX_NAMES[kind]} s{r.species_id}", kind, c,
                 ls="--" if kind == "unlabelled" else "-")
    handles = []
    if tp is not None or fp is not None:
        handles += [Line2D([], [], color=BOX_COLORS["tp"], lw=2, label="TP row:\nspecies present"),
                    Line2D([], [], color=BOX_COLORS["fp"], lw=2, label="FP row:\ndetector fired,\nspecies absent")]
    if unlabelled is not None and len(unlabelled):
        handles.append(Line2D([], [], color=UNLABELLED_COLOR, lw=2, ls="--",
                              label="call present,\nno row (unknown)"))
    if calls is not None and len(calls):
        handles.append(Line2D([], [], color=CALL_COLOR, lw=2, label="call present\n(synthetic truth)"))
    if legend and handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8,
                  frameon=False, borderaxespad=0.0)
    return ax


def pick_examples(tp: pd.DataFrame, fp: pd.DataFrame, n: int = 3, *, seed: int = 0, max_rows: int = 5) -> list[str]:
    """Up to ``n`` training recordings worth showing: first those with both TP and FP rows,
    then those with TP rows only, then FP only (random order within each group, seeded); within
    a group, recordings with at most ``max_rows`` rows come first, so the boxes stay legible."""
    rng = np.random.default_rng(seed)
    tp_ids, fp_ids = set(tp.recording_id), set(fp.recording_id)
    rows = pd.concat([tp.recording_id, fp.recording_id]).value_counts()
    out: list[str] = []
    for group in (tp_ids & fp_ids, tp_ids - fp_ids, fp_ids - tp_ids):
        shuffled = [str(r) for r in rng.permutation(sorted(group))]
        out += sorted(shuffled, key=lambda r: rows.get(r, 0) > max_rows)  # stable: keeps the shuffle
    return out[:n]
