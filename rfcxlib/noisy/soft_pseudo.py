"""Soft pseudo-label rounds on CNNs (the RFCx 2nd place's recipe), over an RFCx data set's folds.

The embedding heads' ``soft_pseudo`` (:mod:`rfcxlib.embeddings.head_methods`) for the CNNs of
:mod:`rfcxlib.training.train`: per fold,

1. a base CNN trained with ``loss`` (masked BCE by default) on crops around the TP/FP rows
   (:func:`rfcxlib.training.train.train_model`, into ``<model_dir>/round0``, or ``initial_dir``
   when it holds that model already);
2. then, for each of ``soft.rounds`` rounds, the previous round's CNN scores sliding windows of
   ``crop_s`` every ``hop_s`` over the fold's *training* recordings
   (:func:`rfcxlib.inference.windows.window_logits`, with the configuration's ``band_mode``);
   each TP/FP row of those recordings is kept with probability ``soft.row_keep`` (a seeded draw
   per fold and round); a cell a kept row labels keeps its hard target, every other cell takes
   the previous CNN's probability as a soft target (:func:`rfcxlib.noisy.soft_labels.round_targets`);
3. a new CNN, from seeds of its own (the round's), trains with masked BCE on those windows and
   targets (:mod:`rfcxlib.features.fixed_windows`, the usual augmentations), with as many steps as
   the base: the whole method costs ``1 + rounds`` trainings.

Validation recordings never get soft targets; every score is against the original labels. Rounds
before the last go to ``<model_dir>/round<r>``, the last to ``model_dir``, which then holds the
files every model folder holds (``config.json``, ``oof.npz``, ``test_scores.npz``,
``metrics.json``, ``model.keras``, ``fold<k>/``), and ``history.csv`` of every round (``round``;
``epoch`` counts on across rounds) and ``soft_rounds.csv`` (per round and fold: ``windows``,
``rows_kept``, ``soft_mean``, ``targets_s``, ``train_s``), which each round's ``fold<k>/state.json``
also keeps (``soft``). A round's folds are reused by their fingerprint
(:func:`rfcxlib.training.fingerprints.prepare` through ``train_model``): the previous round's
weights, the soft settings, the hop and ``band_mode`` make its windows' targets, so a change to
any of them (or to what trained the base) trains the round again, and an unchanged round is reused
without scoring anything.

Tests: tests/test_soft_pseudo_cnn.py
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from rfcxlib.atomic import read_json, write_json_atomic, write_text_atomic
from rfcxlib.config import RunConfig
from rfcxlib.embeddings.head_config import SoftPseudoConfig
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.features import fixed_windows, pipeline
from rfcxlib.inference import windows as inference
from rfcxlib.noisy import soft_labels
from rfcxlib.progress import tqdm
from rfcxlib.training import distribute, fingerprints, losses, train

ROUND_LOSS = "masked_bce"  # every round: BCE on [target | weight], known cells hard, the others soft
LOG_FILE = "soft_rounds.csv"


def soft_pseudo_rounds(dataset, config: RunConfig, model_dir, *, soft: Optional[SoftPseudoConfig] = None,
                       hop_s: Optional[float] = None, loss: Optional[str] = None,
                       build_fn: Optional[Callable] = None, initial_dir=None, extra: Optional[dict] = None,
                       progress: bool = True) -> dict:
    """Train a base CNN per fold and ``soft.rounds`` CNNs on soft pseudo-labels into ``model_dir``.

    Parameters
    ----------
    dataset : rfcxlib.data.tables.Dataset
    config : RunConfig
        Every CNN's settings (each round trains as the base does: epochs, steps, augmentations).
    model_dir : path-like
        The last round's model folder; earlier rounds in ``round<r>/`` inside it.
    soft : SoftPseudoConfig, optional
        Rounds, ``row_keep``, ``soft_weight``, ``temperature`` (default: its defaults, the heads').
    hop_s : float, optional
        Hop of the training windows (default ``config.inference.hop_s``).
    loss : str, optional
        The base's loss (default ``config.train.loss``), a clip loss as ``config.train.loss``
        (the windows carry no frame targets); the rounds train with masked BCE.
    build_fn : callable ``(config, input_shape) -> keras.Model``, optional
    initial_dir : path-like, optional
        A model folder that ``train_model`` wrote under the same configuration and ``loss``: the
        base, when it is current (:func:`rfcxlib.training.train.is_current`).
    extra : dict, optional
        Added to ``metrics.json`` and ``config.json``'s ``notebook`` (e.g. notebook 04's notes).

    Returns
    -------
    dict: the last round's metrics, with ``soft_rows_kept``, ``soft_mean`` and ``soft_seconds``
    per round (means over folds; seconds summed over folds).
    """
    soft = soft if soft is not None else SoftPseudoConfig()
    if not isinstance(soft, SoftPseudoConfig):
        raise ParameterError(f"parameter 'soft' = {soft!r}: expected a "
                             "rfcxlib.embeddings.head_config.SoftPseudoConfig")
    loss = loss or config.train.loss
    if loss not in losses.LOSSES or config.train.loss not in losses.LOSSES:
        raise unknown_choice("loss of soft pseudo-label rounds (clip targets only)",
                             loss if loss not in losses.LOSSES else config.train.loss, losses.LOSSES)
    hop_s = float(hop_s if hop_s is not None else config.inference.hop_s)
    if not hop_s > 0:
        raise ParameterError(f"parameter 'hop_s' = {hop_s!r}: expected seconds > 0")
    strategy = distribute.select_strategy()
    with distribute.writer_folder(model_dir, strategy) as out:  # several workers: the chief's
        return _rounds(dataset, config, out, soft=soft, hop_s=hop_s, loss=loss, build_fn=build_fn,
                       initial_dir=initial_dir, extra=extra or {}, progress=progress and distribute.is_chief(strategy))


def _rounds(dataset, c: RunConfig, out: Path, *, soft, hop_s, loss, build_fn, initial_dir, extra, progress) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    notes = {"method": "soft_pseudo", "loss": loss, "soft": soft.to_dict(), "hop_s": hop_s, **extra}
    previous = (Path(initial_dir) if initial_dir and train.is_current(initial_dir, dataset, c, loss=loss,
                                                                     build_fn=build_fn) else None)
    bar = tqdm(total=1 + soft.rounds, desc="soft pseudo-label rounds", disable=not progress, unit="round")
    if previous is None:
        previous = out / "round0"
        train.train_model(dataset, c, previous, loss=loss, build_fn=build_fn, progress=False,
                          extra={**notes, "round": 0})
    log = [_base_note(previous, fold) for fold in c.train.train_folds]
    bar.update()
    folders, previous_loss = [previous], loss
    for r in range(1, soft.rounds + 1):
        target, made = (out if r == soft.rounds else out / f"round{r}"), {}
        sources = {fold: _round_source(dataset, c, fold, previous, soft=soft, round_index=r, hop_s=hop_s,
                                       previous_loss=previous_loss, build_fn=build_fn, made=made)
                   for fold in c.train.train_folds}
        result = train.train_model(dataset, c, target, loss=ROUND_LOSS, build_fn=build_fn, progress=False,
                                   sources=sources, extra={**notes, "round": r, "rounds": soft.rounds})
        log += [_round_note(target, fold, r, made.get(fold)) for fold in c.train.train_folds]
        write_text_atomic(out / LOG_FILE, pd.DataFrame(log).to_csv(index=False))
        folders.append(target)
        previous, previous_loss = target, ROUND_LOSS
        bar.update()
        bar.set_postfix(rows_kept=f"{np.mean([e['rows_kept'] for e in log[-len(sources):]]):.2f}")
    bar.close()
    write_text_atomic(out / "history.csv", _history(folders, c).to_csv(index=False))
    result = {**result, **_summary(log)}
    write_json_atomic(out / "metrics.json", result)
    return result


def _round_source(dataset, c: RunConfig, fold: int, previous: Path, *, soft: SoftPseudoConfig, round_index: int,
                  hop_s: float, previous_loss: str, build_fn, made: dict) -> fixed_windows.WindowTargets:
    """The training windows of ``fold`` in round ``round_index``, made (and noted in ``made``)
    only when the fold trains; their fingerprint key is what makes them."""
    before = fingerprints.read(previous / f"fold{fold}") or {}
    key = {"method": "soft_pseudo", "round": round_index, "fold": fold, "previous": before.get("weights_hash"),
           "row_keep": soft.row_keep, "soft_weight": soft.soft_weight, "temperature": soft.temperature,
           "hop_s": hop_s, "band_mode": c.inference.band_mode}

    def make():
        started = time.perf_counter()
        train_ids, _ = train.fold_split(dataset, c, fold)
        model = train.load_fold_model(previous, c, fold, build_fn=build_fn, loss=previous_loss)
        table = pipeline.window_table(dataset, train_ids, c, split="train", hop_s=hop_s, progress=False)
        logits, _ = inference.window_logits(model, dataset, train_ids, c, split="train", hop_s=hop_s,
                                            band_mode=c.inference.band_mode)
        windows = table.assign(end_s=table["start_s"] + c.audio.crop_s)
        targets, info = soft_labels.round_targets(dataset, windows, train_ids, logits, soft=soft,
                                                  seed=[c.train.seed, fold, round_index])
        made[fold] = {**info, "targets_s": round(time.perf_counter() - started, 2)}
        return windows[["recording_id", "start_s"]], targets

    return fixed_windows.WindowTargets(dataset=dataset, key=key, make=make, seed=round_index)


def _train_seconds(folder: Path) -> tuple[dict, float]:
    state = read_json(folder / "state.json", default=None) or {}
    return state, round(float(sum(row.get("seconds", 0.0) for row in state.get("history", []))), 2)


def _base_note(folder: Path, fold: int) -> dict:
    _, seconds = _train_seconds(folder / f"fold{fold}")
    return {"round": 0, "fold": fold, "windows": np.nan, "rows_kept": 1.0, "soft_mean": np.nan, "targets_s": 0.0,
            "train_s": seconds}


def _round_note(folder: Path, fold: int, round_index: int, made: Optional[dict]) -> dict:
    """What round ``round_index`` did on ``fold``: ``made`` (the fold trained now) is written to
    its ``state.json`` (``soft``); a reused fold's is read back from there."""
    folder = folder / f"fold{fold}"
    state, seconds = _train_seconds(folder)
    if made is not None:
        state["soft"] = {"round": round_index, **made, "train_s": seconds}
        write_json_atomic(folder / "state.json", state)
    note = state.get("soft") or {"round": round_index, "windows": np.nan, "rows_kept": np.nan,
                                 "soft_mean": np.nan, "targets_s": np.nan, "train_s": seconds}
    return {"fold": fold, **note}


def _history(folders: list, c: RunConfig) -> pd.DataFrame:
    """Every round's ``history.csv`` in one table: ``round``, ``epoch`` counting on across rounds."""
    parts = []
    for r, folder in enumerate(folders):
        h = pd.read_csv(folder / "history.csv")
        parts.append(h.assign(round=r, epoch=h["epoch"] + r * c.train.epochs))
    return pd.concat(parts, ignore_index=True)


def _summary(log: list) -> dict:
    """Per soft round (1, 2, ...): the mean over folds of ``rows_kept`` and ``soft_mean``, and the
    seconds over folds (targets and training); ``soft_base_s``: the base's training seconds."""
    table = pd.DataFrame(log)
    rounds = table[table["round"] > 0].groupby("round")
    seconds = rounds["targets_s"].sum() + rounds["train_s"].sum()

    def listed(values):
        return [None if pd.isna(v) else round(float(v), 4) for v in values]

    return {"soft_rounds": int(table["round"].max()), "soft_rows_kept": listed(rounds["rows_kept"].mean()),
            "soft_mean": listed(rounds["soft_mean"].mean()), "soft_seconds": listed(seconds),
            "soft_base_s": round(float(table.loc[table["round"] == 0, "train_s"].sum()), 2)}
