"""Figures of the review loop: a query's spectrogram with its window and band boxed, and the
learning curve (answers ▶ test LWLRAP, one line per query strategy). Each function takes
``ax=None``, returns the figure or axes, never shows or saves.

Tests: tests/test_review.py
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle
from scipy.signal import spectrogram

STRATEGY_COLOURS = {"uncertainty": "tab:blue", "disagreement": "tab:orange", "random": "tab:gray"}


def query_spectrogram(y: np.ndarray, *, sr: int, offset_s: float, query, ax=None, n_fft: int = 1024,
                      title: Optional[str] = None):
    """Linear-frequency spectrogram (dB) of ``y`` (audio starting at ``offset_s`` s of the recording)
    with the query's window and its species' band boxed.

    Parameters
    ----------
    y : np.ndarray [shape=(n,)]
    sr : int
    offset_s : float
        Where ``y`` starts in the recording (the time axis is the recording's).
    query : a row of :func:`rfcxlib.review.queries.rank_queries` (``start_s, end_s, f_min, f_max,
        species_id, recording_id``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    f, t, sxx = spectrogram(np.asarray(y, np.float64), fs=sr, nperseg=n_fft, noverlap=n_fft * 3 // 4)
    db = 10.0 * np.log10(np.maximum(sxx, 1e-12))
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=float(np.percentile(db, 40)),
              extent=[offset_s + t[0], offset_s + t[-1], f[0] / 1000.0, f[-1] / 1000.0])
    lo, hi = float(query.f_min), float(query.f_max)
    ax.add_patch(Rectangle((query.start_s, lo / 1000.0), query.end_s - query.start_s, (hi - lo) / 1000.0,
                           fill=False, ec="cyan", lw=2.0))
    ax.set_xlabel("time in the recording (s)")
    ax.set_ylabel("frequency (kHz)")
    ax.set_title(f"{query.recording_id}: s{int(query.species_id)}, window {query.start_s:.1f}-{query.end_s:.1f} s"
                 if title is None else title)
    return ax.figure


def learning_curve(summary: pd.DataFrame, ax=None, title: str = ""):
    """Answers ▶ test LWLRAP (mean ± std over seeds), one line per strategy.

    ``summary``: :func:`rfcxlib.review.curve.summarise`'s table. Returns the axes."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for strategy, g in summary.groupby("strategy", sort=True):
        g = g.sort_values("answers")
        colour = STRATEGY_COLOURS.get(strategy)
        ax.errorbar(g.answers, g.test_lwlrap_mean, yerr=g.test_lwlrap_std.fillna(0.0), marker="o", ms=4,
                    capsize=3, color=colour, label=strategy, ls="--" if strategy == "random" else "-")
    ax.set_xlabel("answered queries")
    ax.set_ylabel("test LWLRAP of the retrained heads")
    ax.grid(alpha=0.3)
    ax.legend(title="query strategy", fontsize=9)
    if title:
        ax.set_title(title)
    return ax
