"""Pseudo-labels: confident sliding-window scores of unknown species turned into new TP rows.

:func:`pseudo_label_rows` makes the rows from any model's window scores (the CNNs' here, the
embedding heads' in :mod:`rfcxlib.embeddings.head_methods`); :func:`pseudo_label_quality` measures
their precision against the synthetic data set's call list. :func:`pseudo_label_rounds` runs the
rounds over an RFCx data set's folds: train, label, train again from scratch on the extended labels
(:func:`rfcxlib.training.train.train_model` each time, so the model folder holds the files every
model folder holds).

Tests: tests/test_noisy.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.features import pipeline
from rfcxlib.features.bands import species_bands
from rfcxlib.inference import windows as inference
from rfcxlib.layout import SAMPLE_RATE
from rfcxlib.atomic import write_text_atomic
from rfcxlib.training import distribute, losses, train


# --------------------------------------------------------------------------- rows from window scores
def _species_boxes(dataset) -> dict:
    """Per species: (songtype, f_min, f_max) typical of its rows: the band of
    :func:`rfcxlib.features.bands.species_bands`, the songtype most frequent in its TP rows (else its FP
    rows); the full band and songtype 1 for a species without rows."""
    bands, nyquist, out = species_bands(dataset.tp, dataset.fp), (dataset.sample_rate or SAMPLE_RATE) / 2, {}
    for s in range(dataset.num_species):
        rows = dataset.tp[dataset.tp.species_id == s]
        rows = rows if len(rows) else dataset.fp[dataset.fp.species_id == s]
        songtype = int(rows.songtype_id.mode().iloc[0]) if len(rows) else 1
        f_min, f_max = bands.get(s, (0.0, nyquist))
        out[s] = (songtype, float(f_min), float(f_max))
    return out


def pseudo_label_rows(dataset, windows: pd.DataFrame, scores, *, crop_s: float,
                      threshold: float = 0.9) -> pd.DataFrame:
    """New TP rows from confident window scores on species whose label is unknown there.

    Parameters
    ----------
    dataset : rfcxlib.data.tables.Dataset
    windows : pd.DataFrame
        ``recording_id, start_s`` of each scored window (``rfcxlib.features.pipeline.window_table``).
    scores : np.ndarray [shape=(n_windows, 24)]
        Sigmoid probabilities per window.
    crop_s : float
        Window length; a new row's box is the window ``[start_s, start_s + crop_s]``.
    threshold : float
        A window and species with a score above it becomes a TP row, unless the window already
        has a known label (TP or FP) for that species.

    Returns
    -------
    pd.DataFrame with the seven RFCx columns plus ``score``; the band and songtype are the
    species' typical ones (median of its TP rows).
    """
    if not 0.0 < threshold < 1.0:
        raise ParameterError(f"parameter 'threshold' = {threshold!r}: expected a probability in (0, 1)")
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2 or scores.shape != (len(windows), dataset.num_species):
        raise ParameterError(f"scores of shape {scores.shape}: expected ({len(windows)}, "
                             f"{dataset.num_species}), one row per window")
    boxes, rows = _species_boxes(dataset), []
    for i, s in zip(*np.nonzero(scores > threshold)):
        rid, start = windows.recording_id.iloc[i], float(windows.start_s.iloc[i])
        end = min(start + crop_s, dataset.durations.get(rid, start + crop_s))
        if dataset.window_targets(rid, start, end)[1][s] > 0:
            continue
        songtype, f_min, f_max = boxes[int(s)]
        rows.append((rid, int(s), songtype, start, f_min, end, f_max, float(scores[i, s])))
    return pd.DataFrame(rows, columns=["recording_id", "species_id", "songtype_id", "t_min", "f_min",
                                       "t_max", "f_max", "score"])


def pseudo_label_quality(dataset, rows: pd.DataFrame) -> Optional[dict]:
    """Precision of pseudo-label rows against the synthetic data set's call list
    (``synth_calls.csv``): a row is right when a call of its species overlaps its box.

    Returns ``{"rows", "correct", "precision", "unlabelled_calls_found"}``, or None for data
    without a call list (the real Kaggle data).
    """
    path = Path(dataset.root) / "synth_calls.csv"
    if not path.exists():
        return None
    calls = pd.read_csv(path)
    calls = calls[(calls.split == "train") & (calls.kind == "call")]
    by_key = {k: g for k, g in calls.groupby(["recording_id", "species_id"])}
    correct, found = 0, set()
    for row in rows.itertuples(index=False):
        g = by_key.get((row.recording_id, int(row.species_id)))
        if g is None:
            continue
        hit = (g.t_min < row.t_max) & (g.t_max > row.t_min)
        correct += bool(hit.any())
        found.update(g.index[hit & ~g.labelled.astype(bool)])
    n = len(rows)
    return {"rows": n, "correct": correct, "precision": correct / n if n else float("nan"),
            "unlabelled_calls_found": len(found)}


# --------------------------------------------------------------------------- rounds over the folds
def _window_scores(model, dataset, recording_ids, c: RunConfig, hop_s: float) -> tuple[pd.DataFrame, np.ndarray]:
    table = pipeline.window_table(dataset, recording_ids, c, split="train", hop_s=hop_s, progress=False)
    ds = pipeline.window_dataset(dataset, recording_ids, c, split="train", hop_s=hop_s, progress=False)
    logits = np.concatenate([np.asarray(model(x, training=False)) for x, _ in ds])
    return table, inference.sigmoid(logits)


def pseudo_label_rounds(dataset, config: RunConfig, model_dir, *, rounds: int = 1, threshold: float = 0.9,
                        hop_s: Optional[float] = None, loss: str = "naive_bce",
                        build_fn: Optional[Callable] = None, initial_dir=None,
                        progress: bool = True) -> dict:
    """Pseudo-labelling: train, label confident windows of unknown species as TP, retrain.

    Round 0 trains with ``loss`` on the given labels into ``<model_dir>/round0`` (or reuses
    ``initial_dir``, a folder :func:`rfcxlib.training.train.train_model` wrote under the same
    configuration and loss: :func:`rfcxlib.training.train.is_current`). Each round then scores
    sliding windows (``hop_s``, default ``config.inference.hop_s``) over each fold's *training*
    recordings with that fold's model, adds a TP row for every window and species above
    ``threshold`` whose label is unknown there (:func:`pseudo_label_rows`), and trains new models
    from scratch on the extended labels with the same number of steps
    (:func:`rfcxlib.training.train.train_model`; rounds before the last in ``<model_dir>/round<r>``,
    the last in ``model_dir``). Validation recordings never get pseudo-labels, and every score is
    computed against the original labels. Every fold of every round is reused, resumed or trained
    again by its fingerprint (the extended labels enter it as the fold's ``source``). With several
    workers, ``initial_dir`` must lie inside ``model_dir``'s parent comparison folder when one is
    open (:func:`rfcxlib.noisy.compare.compare_methods` passes it so), or be readable by every worker.

    The base ``loss`` matters: a pseudo-label needs a score that means something on unknown
    cells. A ``masked_bce`` model never learns those cells as absent, so where FP rows are scarce
    its unknown-cell scores run high and a 0.9 threshold labels many of them wrongly; ``naive_bce``
    (the default) gives fewer, more precise pseudo-labels there.

    Returns
    -------
    dict: the metrics of the last round, with ``pseudo_rows`` and, on synthetic data, the
    precision of the pseudo-labels per round and fold (``pseudo_precision``).
    """
    if not (isinstance(rounds, (int, np.integer)) and rounds >= 1):
        raise ParameterError(f"parameter 'pseudo_rounds' = {rounds!r}: expected an integer >= 1")
    if loss not in losses.LOSSES:
        raise unknown_choice("pseudo_loss", loss, tuple(losses.LOSSES))
    with distribute.writer_folder(model_dir, distribute.select_strategy()) as out:  # several workers: the chief's
        return _pseudo_rounds(dataset, config, out, rounds=rounds, threshold=threshold, hop_s=hop_s, loss=loss,
                              build_fn=build_fn, initial_dir=initial_dir, progress=progress)


def _pseudo_rounds(dataset, c: RunConfig, model_dir: Path, *, rounds, threshold, hop_s, loss, build_fn,
                   initial_dir, progress) -> dict:
    model_dir.mkdir(parents=True, exist_ok=True)
    hop_s = float(hop_s or c.inference.hop_s)
    previous = (Path(initial_dir) if initial_dir and train.is_current(initial_dir, dataset, c, loss=loss,
                                                                     build_fn=build_fn) else None)
    if previous is None:
        previous = model_dir / "round0"
        train.train_model(dataset, c, previous, loss=loss, build_fn=build_fn, progress=False,
                          extra={"method": loss})
    extended = {fold: dataset for fold in c.train.train_folds}
    log = []
    for r in tqdm(range(1, rounds + 1), desc="pseudo-label rounds", disable=not progress):
        for fold in c.train.train_folds:
            train_ids, _ = train.fold_split(dataset, c, fold)
            model = train.load_fold_model(previous, c, fold, build_fn=build_fn, loss=loss)
            table, scores = _window_scores(model, extended[fold], train_ids, c, hop_s)
            rows = pseudo_label_rows(extended[fold], table, scores, crop_s=c.audio.crop_s, threshold=threshold)
            if len(rows):
                extended[fold] = extended[fold].with_rows(tp=rows[list(dataset.tp.columns)])
            quality = pseudo_label_quality(dataset, rows) or {}
            log.append({"round": r, "fold": fold, "new_rows": len(rows),
                        **{f"pseudo_{k}": v for k, v in quality.items() if k != "rows"}})
        target = model_dir if r == rounds else model_dir / f"round{r}"
        extra = {"method": "pseudo_labels", "loss": loss, "round": r, "rounds": rounds,
                 "threshold": threshold, "hop_s": hop_s, "pseudo_rows": int(sum(e["new_rows"] for e in log))}
        if log and "pseudo_precision" in log[0]:
            extra["pseudo_precision"] = [None if np.isnan(e["pseudo_precision"]) else e["pseudo_precision"]
                                         for e in log]
        write_text_atomic(model_dir / "pseudo_labels.csv", pd.DataFrame(log).to_csv(index=False))
        result = train.train_model(dataset, c, target, loss=loss, build_fn=build_fn, progress=False,
                                   extra=extra, sources=extended)
        previous = target
    return result
