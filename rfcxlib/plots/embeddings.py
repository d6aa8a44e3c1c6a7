"""Figures of pretrained embeddings (notebook 02).

Tests: tests/test_notebooks.py
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from rfcxlib.errors import ParameterError


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first two principal components of standardised ``x`` ``(n, d)``: ``(points (n, 2),
    explained variance ratio (2,))``."""
    x = np.asarray(x, np.float64)
    if x.ndim != 2 or len(x) < 3:
        raise ParameterError(f"embeddings of shape {x.shape}: expected (n >= 3, d)")
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    return z @ vt[:2].T, (s[:2] ** 2) / np.sum(s ** 2)


def discriminant_2d(x: np.ndarray, species: np.ndarray, fit: np.ndarray, *, n_pcs: int = 40) -> np.ndarray:
    """A 2-D linear discriminant projection of ``x`` ``(n, d)``: fitted (after ``n_pcs`` principal
    components, with shrinkage) on the rows where ``fit`` is True, applied to every row."""
    x = np.asarray(x, np.float64)
    mean, std = x[fit].mean(0), np.maximum(x[fit].std(0), 1e-6)
    z = (x - mean) / std
    _, _, vt = np.linalg.svd(z[fit], full_matrices=False)
    z = z @ vt[:n_pcs].T
    zf, sf = z[fit], np.asarray(species)[fit]
    centre = zf.mean(0)
    within = np.zeros((z.shape[1],) * 2)
    between = np.zeros_like(within)
    for s in np.unique(sf):
        g = zf[sf == s]
        within += (g - g.mean(0)).T @ (g - g.mean(0))
        between += len(g) * np.outer(g.mean(0) - centre, g.mean(0) - centre)
    within = within / len(zf) + 0.1 * np.eye(len(within))
    values, vectors = np.linalg.eig(np.linalg.solve(within, between / len(zf)))
    order = np.argsort(-values.real)[:2]
    return z @ vectors[:, order].real


def embedding_pca(x: np.ndarray, labels: pd.DataFrame, *, top: int = 8, ax=None, title: str = "",
                  points: np.ndarray = None, axis_labels=None, species=None):
    """Training windows in the plane of their embeddings' first two principal components, coloured
    by species; TP windows as filled dots, FP windows (a detector fired, the species is absent) as
    crosses.

    Parameters
    ----------
    x : np.ndarray [shape=(n, d)]
        One embedding per window.
    labels : pd.DataFrame
        ``species_id`` and ``kind`` (``"tp"`` or ``"fp"``) per window, row for row with ``x``.
    top : int
        Species drawn: the ``top`` with the most TP windows (the others in grey), unless
        ``species`` lists them.
    points, axis_labels : optional
        2-D coordinates to draw instead of the principal components, and their axis names.
    """
    if len(labels) != len(x) or not {"species_id", "kind"} <= set(labels.columns):
        raise ParameterError(f"labels: expected {len(x)} rows with columns species_id and kind, "
                             f"got {len(labels)} rows with {list(labels.columns)}")
    if points is None:
        points, ratio = pca_2d(x)
        axis_labels = (f"PC 1 ({ratio[0]:.0%} of variance)", f"PC 2 ({ratio[1]:.0%} of variance)")
    ax = ax or plt.figure(figsize=(8.5, 6), layout="constrained").gca()
    keep = list(species) if species is not None else list(
        labels["species_id"][labels["kind"] == "tp"].value_counts().index[:top])
    colours = plt.get_cmap("tab10")
    other = ~labels["species_id"].isin(keep).to_numpy()
    ax.scatter(points[other, 0], points[other, 1], s=6, c="#cccccc", label="other species", zorder=1)
    for i, s in enumerate(keep):
        for kind, marker in (("tp", "o"), ("fp", "x")):
            sel = ((labels["species_id"] == s) & (labels["kind"] == kind)).to_numpy()
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], s=14 if kind == "tp" else 18, marker=marker,
                           color=colours(i % 10), alpha=0.85 if kind == "tp" else 0.6, zorder=2,
                           label=f"s{s} {kind.upper()}")
    ax.set(xlabel=axis_labels[0], ylabel=axis_labels[1],
           title=title or "training windows by their embedding: dots TP, crosses FP")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(alpha=0.3)
    return ax


def embedding_views(x: np.ndarray, labels: pd.DataFrame, *, top: int = 8, seed: int = 0):
    """Two views of the same windows: the principal-component plane (unsupervised) and a linear
    discriminant plane fitted on the TP windows of half the recordings and drawn for the other half
    (held out, so the separation shown is not the fit's own). Returns the figure."""
    fig, axes = plt.subplots(1, 2, figsize=(15, 6), layout="constrained")
    species = list(labels["species_id"][labels["kind"] == "tp"].value_counts().index[:top])
    embedding_pca(x, labels, species=species, ax=axes[0], title="principal components (no labels used)")
    rng = np.random.default_rng(seed)
    ids = labels["recording_id"].unique()
    fit_ids = set(rng.permutation(ids)[: len(ids) // 2])
    fit = labels["recording_id"].isin(fit_ids).to_numpy() & (labels["kind"] == "tp").to_numpy()
    shown = ~labels["recording_id"].isin(fit_ids).to_numpy()
    if fit.sum() >= 3 and len(np.unique(labels["species_id"][fit])) >= 3 and shown.sum() >= 3:
        proj = discriminant_2d(x, labels["species_id"].to_numpy(), fit)
        embedding_pca(x[shown], labels[shown].reset_index(drop=True), species=species, ax=axes[1],
                      points=proj[shown], axis_labels=("discriminant 1", "discriminant 2"),
                      title="linear discriminants of TP species, held-out recordings")
    else:
        axes[1].set_axis_off()
        axes[1].text(0.5, 0.5, "too few labelled windows for a held-out view", ha="center")
    return fig
