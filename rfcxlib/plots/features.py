"""Figures for features and augmentations: the log-mel stages, the mel filterbank, parameter
comparisons, species bands, augmentation before/after grids and a mixup example.

Spectrograms are drawn frequency up, time across, with the mel axis labelled in Hz. Every
function takes ``ax=None`` or ``fig=None``, returns the axes or the figure, never shows or saves.
"""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import PowerNorm
from matplotlib.patches import Rectangle

from rfcxlib.features import logmel as features
from rfcxlib.config import FeatureConfig
from rfcxlib.layout import SAMPLE_RATE

HZ_TICKS = (100, 250, 500, 1000, 2000, 4000, 8000, 12000, 16000, 20000)
CMAP = "magma"


def _np(x) -> np.ndarray:
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def _axes(ax, figsize=(8, 3)):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def label_mel_axis(ax, config: Optional[FeatureConfig] = None, n_rows: Optional[int] = None) -> None:
    """Label the rows of a mel image in Hz (ticks at round frequencies inside the mel range)."""
    c = config or FeatureConfig()
    centers = features.mel_band_centers(c)
    n_rows = n_rows or c.n_mels
    ticks = [f for f in HZ_TICKS if centers[0] <= f <= centers[-1]]
    rows = np.interp(ticks, centers, np.arange(c.n_mels)) * (n_rows / c.n_mels)
    ax.set_yticks(rows)
    ax.set_yticklabels([f"{f / 1000:g}k" if f >= 1000 else str(f) for f in ticks])
    ax.set_ylabel("frequency (Hz, mel scale)")


def specshow(S, *, sr: int = SAMPLE_RATE, config: Optional[FeatureConfig] = None, ax=None,
             title: str = "", colorbar: bool = True, start_s: float = 0.0, cmap: str = CMAP,
             vmin=None, vmax=None):
    """Draw a log-mel spectrogram ``(frames, n_mels)`` (or an image ``(H, W[, C])``, first channel)
    with time in seconds across and the mel axis in Hz."""
    c = config or FeatureConfig()
    arr = _np(S)
    image = arr[..., 0] if arr.ndim == 3 else arr.T  # image rows = mel bins
    ax = _axes(ax)
    duration = (image.shape[1] - 1) * c.hop_length / sr + c.win_length / sr
    mesh = ax.imshow(image, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                     extent=(start_s, start_s + duration, -0.5, image.shape[0] - 0.5),
                     interpolation="nearest")
    if image.shape[0] == c.n_mels or arr.ndim == 2:
        label_mel_axis(ax, c, image.shape[0])
    else:
        ax.set_ylabel("image row")
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(mesh, ax=ax, pad=0.01)
    return ax


def _compression_title(c: FeatureConfig) -> str:
    if c.log == "pcen":
        return f"4. PCEN of mel power (time constant {c.pcen_time_s:g} s): each band over its recent level"
    return f"4. log-mel = {'log(1 + M)' if c.log == 'log1p' else 'log(M + 1e-4)'}: quiet calls become visible"


def plot_stages(y, *, sr: int, config: Optional[FeatureConfig] = None, fig=None):
    """Waveform ▶ STFT power ▶ mel power ▶ log-mel (or PCEN), one panel each, for one clip ``y`` ``(n,)``."""
    c = config or FeatureConfig()
    y = _np(y)
    P = _np(features.stft_power(y, config=c))
    M = _np(features.mel_power(y, sr=sr, config=c))
    L = _np(features.apply_log(M, config=c, sr=sr))
    fig = fig or plt.figure(figsize=(11, 10), layout="constrained")
    axes = fig.subplots(4, 1)
    t = np.arange(len(y)) / sr
    axes[0].plot(t, y, lw=0.4, color="0.2")
    axes[0].set(xlim=(0, t[-1]), xlabel="time (s)", ylabel="amplitude",
                title=f"1. waveform: {len(y)} samples at {sr} Hz")
    hz_max = sr / 2
    extent = (0, len(y) / sr, 0, hz_max / 1000)
    axes[1].imshow(P.T, origin="lower", aspect="auto", cmap=CMAP, extent=extent, interpolation="nearest")
    axes[1].set(xlabel="time (s)", ylabel="frequency (kHz, linear)",
                title=f"2. STFT power |X|² ({P.shape[1]} bins, linear colour: only the loudest "
                      "sounds show)")
    axes[2].imshow(M.T, origin="lower", aspect="auto", cmap=CMAP, interpolation="nearest",
                   extent=(0, len(y) / sr, -0.5, c.n_mels - 0.5))
    label_mel_axis(axes[2], c)
    axes[2].set(xlabel="time (s)", title=f"3. mel power: {c.n_mels} mel bands, {c.fmin:g}-{c.fmax:g} Hz "
                                         "(still linear colour)")
    specshow(L, sr=sr, config=c, ax=axes[3], colorbar=True,
             title=_compression_title(c))
    return fig


def plot_filterbank(*, sr: int = SAMPLE_RATE, config: Optional[FeatureConfig] = None, ax=None, every: int = 8,
                    band_hz=(94.0, 13688.0)):
    """The triangular mel filters on a log-frequency axis; every ``every``-th filter in colour, the
    range outside ``fmin``-``fmax`` shaded, and ``band_hz`` (the species' span) marked."""
    c = config or FeatureConfig()
    fb = features.config_filterbank(sr=sr, config=c)
    hz = np.linspace(0, sr / 2, fb.shape[1])[1:]
    ax = _axes(ax, figsize=(10, 3.5))
    for i, row in enumerate(fb):
        highlight = i % every == 0
        ax.plot(hz, row[1:], lw=1.2 if highlight else 0.5,
                color=plt.cm.viridis(i / len(fb)) if highlight else "0.75", zorder=2 if highlight else 1)
    ax.set_xscale("log")
    ax.axvspan(hz[0], c.fmin, color="0.88", zorder=0, label="outside fmin-fmax")
    ax.axvspan(c.fmax, sr / 2, color="0.88", zorder=0)
    if band_hz:
        ax.axvline(band_hz[0], color="tab:red", ls="--", lw=1)
        ax.axvline(band_hz[1], color="tab:red", ls="--", lw=1, label=f"species bands {band_hz[0]:g}-{band_hz[1]:g} Hz")
    ax.set(xlabel="frequency (Hz, log scale)", ylabel="filter weight", xlim=(hz[0], sr / 2),
           title=f"{c.n_mels} mel filters ({c.mel_scale}), fmin-fmax = {c.fmin:g}-{c.fmax:g} Hz, "
                 f"n_fft = {c.n_fft} (every {every}th in colour)")
    ax.legend(loc="upper left", fontsize=8)
    return ax


def plot_variants(spectrograms: dict, *, sr: int = SAMPLE_RATE, configs: Optional[dict] = None, fig=None,
                  ncols: int = 2):
    """Spectrograms side by side: ``{title: S}`` with each one's ``FeatureConfig`` in ``configs``."""
    n = len(spectrograms)
    nrows = int(np.ceil(n / ncols))
    fig = fig or plt.figure(figsize=(6 * ncols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for ax, (title, S) in zip(axes, spectrograms.items()):
        specshow(S, sr=sr, config=(configs or {}).get(title), ax=ax, title=title)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_species_bands(S, bands, *, sr: int = SAMPLE_RATE, config: Optional[FeatureConfig] = None, ax=None):
    """A log-mel spectrogram with each species' band marked: ``bands`` ``{species: (f_min_hz,
    f_max_hz)}`` (:func:`rfcxlib.features.bands.species_bands`)."""
    c = config or FeatureConfig()
    ax = specshow(S, sr=sr, config=c, ax=ax or _axes(None, figsize=(11, 5)), colorbar=False,
                  title="species frequency bands on the mel axis (from the annotation boxes)")
    centers = features.mel_band_centers(c)
    x_end = ax.get_xlim()[1]
    for k, (species, (f_min_hz, f_max_hz)) in enumerate(sorted(bands.items())):
        lo, hi = np.interp([f_min_hz, f_max_hz], centers, np.arange(c.n_mels))
        x = x_end * (0.02 + 0.96 * k / max(len(bands), 1))
        ax.plot([x, x], [lo, hi], color=plt.cm.tab20(k % 20), lw=3, solid_capstyle="butt")
        ax.text(x, hi + 1, f"s{species}", color="white", fontsize=7, ha="center", va="bottom")
    return ax


def plot_band_crops(crops: dict, *, sr: int = SAMPLE_RATE, config: Optional[FeatureConfig] = None, fig=None,
                    ncols: int = 4):
    """Band crops ``{title: (S_band, (fmin_hz, fmax_hz))}``: each species' rows cut out."""
    n = len(crops)
    nrows = int(np.ceil(n / ncols))
    fig = fig or plt.figure(figsize=(3.2 * ncols, 2.4 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    c = config or FeatureConfig()
    for ax, (title, (S, (lo, hi))) in zip(axes, crops.items()):
        arr = _np(S)
        ax.imshow(arr.T, origin="lower", aspect="auto", cmap=CMAP, interpolation="nearest",
                  extent=(0, (arr.shape[0] - 1) * c.hop_length / sr, -0.5, arr.shape[1] - 0.5))
        ax.set_title(f"{title}: {lo:.0f}-{hi:.0f} Hz ({arr.shape[1]} rows)", fontsize=9)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("mel rows of the band", fontsize=8)
        ax.set_yticks([])
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def _changed_box(before: np.ndarray, after: np.ndarray):
    """``(x0, x1, y0, y1)`` around the pixels that changed, when they are a minority; else None."""
    if before.shape != after.shape:
        return None
    changed = np.abs(after - before) > 1e-6
    if not changed.any() or changed.mean() > 0.6:
        return None
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    return cols[0] - 0.5, cols[-1] + 0.5, rows[0] - 0.5, rows[-1] + 0.5


def plot_trace(trace: Sequence, *, fig=None, ncols: int = 2, titles: Optional[dict] = None,
               gamma: float = 0.5, outline_changes: bool = True, compare_to: str = "first"):
    """Images ``[(step, image (H, W, C)), ...]`` in a grid with the colour scale of the first.

    Colours use a power norm (``gamma`` < 1 lifts the quiet background so noise and masks show);
    with ``outline_changes`` a dashed box marks a region that differs from the first image
    (``compare_to="first"``) or from the panel before (``"previous"``) when the change covers a
    minority of it (the SpecAugment masks).
    """
    n = len(trace)
    nrows = int(np.ceil(n / ncols))
    fig = fig or plt.figure(figsize=(6 * ncols, 2.6 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    first = _np(trace[0][1])[..., 0]
    vmin, vmax = np.percentile(first, 0.5), np.percentile(first, 99.8)
    previous = first
    for ax, (name, image) in zip(axes, trace):
        arr = _np(image)[..., 0]
        norm = PowerNorm(gamma, vmin=vmin, vmax=vmax, clip=True)
        ax.imshow(arr, origin="lower", aspect="auto", cmap=CMAP, norm=norm, interpolation="nearest")
        reference = previous if compare_to == "previous" else first
        box = _changed_box(reference, arr) if outline_changes and ax is not axes[0] else None
        previous = arr
        if box is not None:
            x0, x1, y0, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.2, ls="--"))
        ax.set_title((titles or {}).get(name, name), fontsize=10)
        ax.set_xlabel("time (frames)", fontsize=8)
        ax.set_ylabel("mel bin", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig


def plot_waveforms(trace: Sequence, *, sr: int = SAMPLE_RATE, fig=None):
    """Waveforms ``[(step, y (n,)), ...]`` stacked, shared amplitude axis."""
    n = len(trace)
    fig = fig or plt.figure(figsize=(11, 1.6 * n + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, sharey=True))
    for ax, (name, y) in zip(axes, trace):
        arr = _np(y)
        ax.plot(np.arange(len(arr)) / sr, arr, lw=0.3, color="0.15")
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_ylabel("amplitude", fontsize=8)
    axes[-1].set_xlabel("time (s)")
    return fig


def plot_mixup(x_a, x_b, x_mix, targets_a, targets_b, targets_mix, lam: float, *, fig=None,
               species: Optional[Sequence[int]] = None):
    """A mixup example: the two inputs and their blend (top), and the packed targets ``[y | mask]``
    of each, as bars per species (bottom): label ``y`` (orange) beside its mask weight (blue)."""
    fig = fig or plt.figure(figsize=(13, 6.5), layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=[1.2, 1])
    images = [(x_a, f"A (weight λ = {lam:.2f})"), (x_b, f"B (weight 1 - λ = {1 - lam:.2f})"),
              (x_mix, "mix = λ·A + (1 - λ)·B")]
    first = _np(x_a)[..., 0]
    vmin, vmax = np.percentile(first, 0.5), np.percentile(first, 99.8)
    for k, (img, title) in enumerate(images):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(_np(img)[..., 0], origin="lower", aspect="auto", cmap=CMAP,
                  norm=PowerNorm(0.5, vmin=vmin, vmax=vmax, clip=True))
        ax.set(title=title, xlabel="time (frames)", ylabel="mel bin")
    for k, (t, title) in enumerate([(targets_a, "targets A"), (targets_b, "targets B"),
                                    (targets_mix, "blended targets")]):
        t = _np(t)
        y, mask = np.split(t, 2)
        ids = np.arange(len(y)) if species is None else np.asarray(species)
        ax = fig.add_subplot(grid[1, k])
        pos = np.arange(len(ids))
        ax.bar(pos - 0.2, y[ids], width=0.4, color="tab:orange", label="y (label)")
        ax.bar(pos + 0.2, mask[ids], width=0.4, color="tab:blue", alpha=0.6,
               label="mask (weight of the known label; 0 = unknown)")
        ax.set_xticks(np.arange(len(ids)))
        ax.set_xticklabels([f"s{i}" for i in ids], fontsize=7, rotation=90)
        ax.set(ylim=(0, 1.05), title=title, ylabel="value")
        if k == 1:
            ax.legend(fontsize=8, loc="upper left")
    return fig
