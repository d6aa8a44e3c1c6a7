"""Ensemble figures: single models against the ensemble, fitted weights and the guard's held-out
check, per-species gains and rescaling factors. Each function draws on ``ax`` (a new figure
when None) and returns the axes; none shows or saves."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

GOOD, BAD, PLAIN, HIGHLIGHT = "#2a9d8f", "#e76f51", "#8d99ae", "#264653"


def _axes(ax, figsize):
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_model_scores(table, *, ax=None):
    """Horizontal bars of OOF (masked) and test LWLRAP per model, the plain mean and the
    ensemble (``table`` from :func:`rfcxlib.ensemble.combine.model_table`); the best single model's test
    score is drawn as a dashed line."""
    ax = _axes(ax, (7, 0.45 * len(table) + 1.5))
    names = list(table.index)
    y = np.arange(len(names))
    has_test = bool(np.isfinite(table["test_lwlrap"]).any())
    height = 0.38 if has_test else 0.7
    colors = [HIGHLIGHT if n == "ensemble" else PLAIN if n == "mean" else GOOD for n in names]
    ax.barh(y - (height / 2 if has_test else 0), table["oof_lwlrap"], height=height,
            color=colors, alpha=0.45, label="OOF (known labels)")
    if has_test:
        ax.barh(y + height / 2, table["test_lwlrap"], height=height, color=colors,
                label="test (full labels)")
        singles = table.drop(index=[n for n in ("mean", "ensemble") if n in names])
        ax.axvline(singles["test_lwlrap"].max(), color=BAD, ls="--", lw=1,
                   label="best single, test")
        for yi, v in zip(y, table["test_lwlrap"]):
            ax.text(v, yi + height / 2, f" {v:.3f}", va="center", fontsize=8)
    for yi, v in zip(y, table["oof_lwlrap"]):
        ax.text(v, yi - (height / 2 if has_test else 0), f" {v:.3f}", va="center", fontsize=8,
                color="0.35")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    low = np.nanmin(table[["oof_lwlrap", "test_lwlrap"]].to_numpy())
    ax.set_xlim(max(0.0, low - 0.1), 1.04)
    ax.set_xlabel("LWLRAP")
    ax.set_title("single models vs ensemble")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return ax


def plot_weights(fit, *, ax=None):
    """The fitted model weights (the plain mean's 1/m as a dotted line), titled with the kind
    the guard kept."""
    ax = _axes(ax, (6, 3))
    names = list(fit.names)
    x = np.arange(len(names))
    ax.bar(x, fit.weights, color=HIGHLIGHT)
    ax.axhline(1.0 / len(names), color=PLAIN, ls=":", label="plain mean")
    for xi, w in zip(x, fit.weights):
        ax.text(xi, w, f"{w:.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=30 if len(names) > 4 else 0, ha="right" if len(names) > 4
                  else "center")
    ax.set_ylim(0, max(1.0, float(fit.weights.max()) * 1.15))
    ax.set_ylabel("weight")
    ax.set_title(f"{fit.method} ensemble, kept: {fit.choice}")
    ax.legend(fontsize=8)
    return ax


def plot_holdout(fit, *, ax=None):
    """The guard's check: held-out LWLRAP of each kind (plain mean, fitted weights, fitted
    weights + per-species rescaling), the kept one highlighted."""
    ax = _axes(ax, (5, 3))
    if not fit.holdout:
        ax.text(0.5, 0.5, "no held-out check (one kind only or guard off)", ha="center",
                va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return ax
    kinds = list(fit.holdout)
    values = [fit.holdout[k] for k in kinds]
    ax.bar(kinds, values, color=[HIGHLIGHT if k == fit.choice else PLAIN for k in kinds])
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.4f}", ha="center", va="bottom", fontsize=8)
    spread = max(max(values) - min(values), 0.01)
    ax.set_ylim(max(0.0, min(values) - 2 * spread), max(values) + 0.25 * spread)
    ax.set_ylabel("held-out LWLRAP (known labels)")
    held = f"{fit.n_splits} folds" if fit.split_by == "folds" else f"{fit.n_splits} random groups"
    ax.set_title(f"guard: each kind fitted without, scored on, one of {held}", fontsize=10)
    return ax


def plot_species_gain(gain, *, ax=None):
    """Per-species LWLRAP change, ensemble minus the best single model (``gain`` from
    :func:`rfcxlib.ensemble.combine.species_gain`); species without a positive label are marked x."""
    ax = _axes(ax, (9, 3.2))
    species = gain.index.to_numpy()
    values = gain["gain"].to_numpy(dtype=float)
    shown = np.nan_to_num(values)
    ax.bar(species, shown, color=[GOOD if v >= 0 else BAD for v in shown])
    missing = ~np.isfinite(values)
    if missing.any():
        ax.plot(species[missing], np.zeros(missing.sum()), "x", color="0.5",
                label="no positive label")
        ax.legend(fontsize=8)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(species, [f"s{s}" for s in species], fontsize=7)
    ax.set_xlabel("species")
    ax.set_ylabel("LWLRAP gain")
    split = gain["split"].iloc[0] if "split" in gain else ""
    ax.set_title(f"ensemble - best single ({gain['model'].iloc[0]}) per species, {split}")
    return ax


def plot_rescale(scale, *, ax=None):
    """Per-species score factors (log scale; 1 = unchanged)."""
    ax = _axes(ax, (9, 2.8))
    scale = np.asarray(scale, dtype=float)
    species = np.arange(scale.size)
    ax.bar(species, np.log2(scale), color=[GOOD if a >= 1 else BAD for a in scale])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(species, [f"s{s}" for s in species], fontsize=7)
    ax.set_ylabel("log2 factor")
    ax.set_title("per-species rescaling")
    if np.allclose(scale, 1.0):
        ax.text(0.5, 0.5, "no rescaling kept: every factor is 1", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    return ax
