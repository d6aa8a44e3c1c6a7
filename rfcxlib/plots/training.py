"""Training figures: learning curves per fold and per-species average precision.

Tests: tests/test_notebooks.py
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rfcxlib.errors import ParameterError


def training_curves(history: pd.DataFrame, *, fig=None):
    """Training loss, validation loss and validation LWLRAP per epoch, one line per fold.

    Parameters
    ----------
    history : DataFrame
        ``history.csv`` of a model: columns ``fold, epoch, loss, val_loss, val_lwlrap``.
    fig : Figure, optional
        Figure to draw in (three axes are added); a new one when ``None``.

    Returns
    -------
    Figure
    """
    missing = {"fold", "epoch", "loss", "val_loss", "val_lwlrap"} - set(history.columns)
    if missing:
        raise ParameterError(f"history: missing column(s) {sorted(missing)}; expected the "
                             f"columns of a model's history.csv")
    fig = fig or plt.figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    for fold, rows in history.groupby("fold"):
        axes[0].plot(rows.epoch + 1, rows.loss, marker=".", label=f"fold {fold}")
        axes[1].plot(rows.epoch + 1, rows.val_loss, marker=".", label=f"fold {fold}")
        axes[2].plot(rows.epoch + 1, rows.val_lwlrap, marker=".", label=f"fold {fold}")
        best = rows.loc[rows.val_lwlrap.idxmax()]
        axes[2].scatter([best.epoch + 1], [best.val_lwlrap], s=80, facecolors="none", edgecolors="k")
    for ax, title in zip(axes, ("training loss", "validation loss", "validation LWLRAP (known labels)")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=8, title="○ best epoch", title_fontsize=8)
    fig.tight_layout()
    return fig


def species_ap(ap: np.ndarray, *, weights: Optional[np.ndarray] = None, ax=None,
               title: str = "per-species average precision"):
    """Bars of per-species AP (``metrics.per_class_lwlrap``), with the number of positives.

    Parameters
    ----------
    ap : ndarray, shape (24,)
        Per-species score; NaN for a species without positives (drawn as an empty slot).
    weights : ndarray, shape (24,), optional
        Positives per species, written above the bars.
    ax : Axes, optional

    Returns
    -------
    Axes
    """
    ap = np.asarray(ap, np.float64)
    if ap.ndim != 1:
        raise ParameterError(f"ap: expected a 1-D array of per-species scores, got shape {ap.shape}")
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.2))
    k = np.arange(len(ap))
    ax.bar(k, np.nan_to_num(ap), color=plt.cm.viridis(np.nan_to_num(ap)))
    if weights is not None:
        for i, n in enumerate(np.asarray(weights)):
            ax.text(i, min(np.nan_to_num(ap[i]) + 0.02, 1.02), f"{int(n)}", ha="center", fontsize=7)
    mean = np.nanmean(ap) if np.isfinite(ap).any() else float("nan")
    ax.axhline(mean, color="k", ls="--", lw=1, label=f"mean {mean:.3f}")
    ax.set(xticks=k, xlabel="species_id", ylabel="AP", ylim=(0, 1.08), title=title)
    ax.legend(loc="lower right", fontsize=8)
    return ax
