"""Figures for the noisy- and partial-label methods (notebook 05)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rfcxlib.errors import ParameterError

VAL_COLOR = "#8c8c8c"
TEST_COLOR = "#1f77b4"


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ParameterError(f"{what}: missing columns {missing}; expected {list(columns)}")


def method_comparison(results: pd.DataFrame, *, ax=None, order: Optional[Sequence[str]] = None,
                      baseline: Optional[str] = "naive_bce"):
    """Test LWLRAP (against the ground truth) beside validation LWLRAP (known labels only), per method.

    Parameters
    ----------
    results : pd.DataFrame
        One row per method and seed, with columns ``method``, ``seed``, ``val_lwlrap``, ``test_lwlrap``.
    order : sequence of str, optional
        Methods from left to right (default: as they first appear).
    baseline : str, optional
        A method whose mean test LWLRAP is drawn as a dashed line, when present.

    Returns
    -------
    matplotlib.axes.Axes
        Bars are means over seeds, error bars one standard deviation, dots the single seeds.
    """
    _check_columns(results, ("method", "seed", "val_lwlrap", "test_lwlrap"), "method_comparison results")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 1.3 * results["method"].nunique() + 2), 4.2))
    methods = list(order) if order is not None else list(dict.fromkeys(results["method"]))
    x = np.arange(len(methods))
    width = 0.38
    for offset, column, color, label in ((-width / 2, "val_lwlrap", VAL_COLOR, "validation (known labels)"),
                                         (width / 2, "test_lwlrap", TEST_COLOR, "test (ground truth)")):
        groups = [results.loc[results["method"] == m, column].dropna().to_numpy(float) for m in methods]
        means = [g.mean() if g.size else np.nan for g in groups]
        stds = [g.std(ddof=1) if g.size > 1 else 0.0 for g in groups]
        ax.bar(x + offset, means, width, yerr=stds, color=color, alpha=0.85, capsize=3, label=label)
        for i, g in enumerate(groups):
            ax.scatter(np.full(g.size, x[i] + offset), g, s=10, color="black", zorder=3)
            if g.size:  # the mean, written above the error bar and the dots
                top = max(means[i] + stds[i], g.max())
                ax.annotate(f"{means[i]:.3f}", (x[i] + offset, top), xytext=(0, 4),
                            textcoords="offset points", ha="center", va="bottom", fontsize=8)
    if baseline in methods:
        base = results.loc[results["method"] == baseline, "test_lwlrap"].mean()
        ax.axhline(base, color=TEST_COLOR, ls="--", lw=1, label=f"{baseline} test mean")
    values = results[["val_lwlrap", "test_lwlrap"]].to_numpy(float)
    low = np.nanmin(values) if np.isfinite(values).any() else 0.0
    high = np.nanmax(values) if np.isfinite(values).any() else 1.0
    ax.set_ylim(max(0.0, low - 0.08), min(1.1, high + 0.12))  # room for the labels and the legend
    ax.set_yticks([t for t in ax.get_yticks() if t <= 1.0 + 1e-9])
    ax.set_xticks(x, methods, rotation=20, ha="right")
    ax.set_ylabel("LWLRAP")
    n_seeds = results.groupby("method")["seed"].nunique()
    ax.set_title(f"Noisy-label methods: mean ± std over {n_seeds.min()}–{n_seeds.max()} seeds"
                 if n_seeds.min() != n_seeds.max() else
                 f"Noisy-label methods: mean ± std over {n_seeds.min()} seed(s)")
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return ax


def coteaching_check(histories: dict, *, fig=None, noise: str = ""):
    """Clean test accuracy and selected-label precision per epoch, one line per method.

    Parameters
    ----------
    histories : dict
        ``{method: history}`` with the histories of :func:`rfcxlib.noisy.toy.train_single_label`.
    noise : str
        Describes the injected noise in the title (e.g. ``"50% symmetric"``).

    Returns
    -------
    matplotlib.figure.Figure with two axes.
    """
    if not histories:
        raise ParameterError("coteaching_check: histories is empty; expected {method: history}")
    fig = fig or plt.figure(figsize=(10, 3.6))
    ax_acc, ax_prec = fig.subplots(1, 2)
    for method, h in histories.items():
        epochs = np.arange(1, len(h["test_accuracy"]) + 1)
        ax_acc.plot(epochs, h["test_accuracy"], label=f"{method} (final {h['test_accuracy'][-1]:.3f})")
        ax_prec.plot(epochs, h["label_precision"], label=method)
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (clean labels)", title="Clean test accuracy")
    ax_prec.set(xlabel="epoch", ylabel="fraction of selected labels that are right",
                title="Label precision of the samples learnt from")
    for ax in (ax_acc, ax_prec):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if noise:
        fig.suptitle(f"Co-teaching vs standard training under {noise} label noise")
    fig.tight_layout()
    return fig


def validation_vs_test(results: pd.DataFrame, *, ax=None):
    """Validation LWLRAP (known labels) against test LWLRAP (ground truth), one dot per run.

    Points far from the diagonal show where local validation misjudges a method.
    """
    _check_columns(results, ("method", "val_lwlrap", "test_lwlrap"), "validation_vs_test results")
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.2))
    for method, group in results.groupby("method", sort=False):
        ax.scatter(group["val_lwlrap"], group["test_lwlrap"], label=method, s=28)
    values = results[["val_lwlrap", "test_lwlrap"]].to_numpy(float)
    lo, hi = np.nanmin(values) - 0.02, min(1.0, np.nanmax(values) + 0.02)
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls=":", label="y = x")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="validation LWLRAP (known labels)",
           ylabel="test LWLRAP (ground truth)", title="Local validation vs truth")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return ax
