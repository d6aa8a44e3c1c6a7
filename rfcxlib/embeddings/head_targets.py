"""Targets of embedded windows: a window takes the labels of the TP/FP boxes it overlaps.

The rule is the CNN windows' (``Dataset.window_targets``): ``[y | mask]`` per species, ``y`` 1 for
a TP box, ``mask`` 1 where a TP or FP box of the species overlaps the window. Every window that
overlaps a box is a training example (:func:`training_windows`); the windows every ``hop_s`` give
each box several time offsets.

Tests: tests/test_head_methods.py
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from rfcxlib.embeddings import birdnet
from rfcxlib.noisy import soft_labels


def window_targets(dataset, table: birdnet.WindowTable) -> np.ndarray:
    """``(n, 48)`` float32 ``[y | mask]`` of every window of ``table`` (the CNN windows' rule,
    :func:`rfcxlib.noisy.soft_labels.window_labels`)."""
    return soft_labels.window_labels(dataset, table.windows)


def training_windows(dataset, table: birdnet.WindowTable, recording_ids) -> tuple[np.ndarray, np.ndarray]:
    """``(x float32, targets)`` of the windows of ``recording_ids`` that overlap a TP/FP box."""
    sub = table.subset(recording_ids)
    targets = window_targets(dataset, sub)
    keep = targets[:, dataset.num_species:].sum(axis=1) > 0
    return sub.x[keep].astype(np.float32), targets[keep]


def single_label_windows(dataset, table: birdnet.WindowTable) -> tuple[np.ndarray, pd.DataFrame]:
    """Windows with exactly one known label: ``(x (n, dim) float32, labels)`` with columns
    ``recording_id, start_s, species_id, kind`` (``"tp"`` or ``"fp"``); for figures."""
    targets = window_targets(dataset, table)
    s = dataset.num_species
    y, mask = targets[:, :s], targets[:, s:]
    keep = mask.sum(axis=1) == 1
    species = mask[keep].argmax(axis=1)
    labels = table.windows.loc[keep, ["recording_id", "start_s"]].reset_index(drop=True).assign(
        species_id=species, kind=np.where(y[keep, species] > 0, "tp", "fp") if keep.any() else [])
    return table.x[keep].astype(np.float32), labels
