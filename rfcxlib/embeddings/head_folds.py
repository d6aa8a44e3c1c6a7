"""Embedding heads over grouped folds: the ``birdnet`` model family's model folder.

:func:`train_head_model` trains one head per fold of ``config.train.train_folds`` (by a method of
:data:`rfcxlib.embeddings.head_config.HEAD_METHODS`: one loss, or a label method of
:mod:`rfcxlib.embeddings.head_methods`) on the folds the CNNs use, and writes the files CNN training
writes (``config.json``, ``history.csv``, ``oof.npz``, ``test_scores.npz``, ``metrics.json``,
``model.keras``, ``fold<k>/``), so notebook 06, ``submission.csv`` and the Kaggle bundle take it as
they take a CNN. Each fold holds ``head.keras``, ``scores.npz``, ``state.json`` (history, seconds,
the method's notes; written last: the fold is complete) and ``fingerprint.json``: everything that
made it, so that a fold is reused only under the same settings and data and trained again otherwise
(:func:`rfcxlib.training.fingerprints.prepare`). A fold written before ``fingerprint.json`` existed
kept the same key in ``state.json``; it is reused when the key matches.

With ``recording_norm`` each recording's mean embedding (over its windows) is subtracted before the
head's standardisation, in training and in every score written here; ``rfcx predict`` and
``rfcx export`` score windows in batches that do not see a whole recording, so they refuse such a
head (:func:`rfcxlib.embeddings.scorer.build_scorer`).

Embedding model: BirdNET V2.4, CC BY-NC-SA 4.0 (see :mod:`rfcxlib.embeddings.birdnet`).

Tests: tests/test_embeddings.py
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib.layout import CONFIG_FILE
from rfcxlib.config import RunConfig, check_choice
from rfcxlib.embeddings import birdnet, head_methods
from rfcxlib.embeddings.head_config import HEAD_METHODS, HeadConfig, SoftPseudoConfig, check_loss
from rfcxlib.embeddings.head_fit import fit_head, head_clip_logits, validator
from rfcxlib.embeddings.head_targets import training_windows
from rfcxlib.errors import ParameterError
from rfcxlib.atomic import read_json, save_keras_atomic, save_npz_atomic, write_json_atomic
from rfcxlib.training import fingerprints
from rfcxlib.training.train import fold_split, write_scores


def train_head_model(dataset, config: RunConfig, head: HeadConfig, model_dir, *, method: str = "loss",
                     loss: Optional[str] = None, tau: float = 0.1, t_k: Optional[int] = None,
                     threshold: float = 0.9, soft: Optional[SoftPseudoConfig] = None,
                     table: Optional[birdnet.WindowTable] = None, extra: Optional[dict] = None,
                     progress: bool = True) -> dict:
    """Train an embedding head on every fold of ``config.train.train_folds`` into ``model_dir``.

    ``method``: ``"loss"`` (``loss``, default ``config.train.loss``), ``"coteaching"`` (two heads
    exchange their small-loss unknown cells; ``tau``, ``t_k``), ``"pseudo_labels"`` (a base head
    with ``loss``, confident windows of unknown species above ``threshold`` in the fold's training
    recordings labelled TP, a new head) or ``"soft_pseudo"`` (a base head with ``loss``, then
    rounds of soft pseudo-labels: ``soft``, default :class:`SoftPseudoConfig`'s defaults); see
    :mod:`rfcxlib.embeddings.head_methods`. Seeds come from ``config.train.seed`` and the fold.
    ``table``: the embedded windows (default: embed the data set now, or read them from the
    cache), centred per recording here when ``head.recording_norm``.
    Returns the metrics written to ``metrics.json``.
    """
    check_choice("embedding-head method", method, HEAD_METHODS)
    loss = check_loss(loss or config.train.loss)
    soft = soft or SoftPseudoConfig()
    if not isinstance(soft, SoftPseudoConfig):
        raise ParameterError(f"parameter 'soft' = {soft!r}: expected a "
                             "rfcxlib.embeddings.head_config.SoftPseudoConfig")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    table = table if table is not None else birdnet.embed_dataset(dataset, embedder=head.embedder,
                                                                  hop_s=head.embed_hop_s, progress=progress)
    windows, table = len(table), head.scoring_table(table)
    info = {"method": method, "loss": loss, **({"tau": tau, "t_k": t_k} if method == "coteaching" else {}),
            **({"threshold": threshold} if method == "pseudo_labels" else {}),
            **({"soft": soft.to_dict()} if method == "soft_pseudo" else {})}
    extra = {"family": "birdnet", "embedder": head.embedder, "licence": birdnet.get_embedder(head.embedder).licence,
             **info, **(extra or {})}
    write_json_atomic(model_dir / CONFIG_FILE, {**config.to_dict(), "head": head.to_dict(), "notebook": extra})
    made_by = {"data": fingerprints.data_digest(dataset, test=True),
               "config": fingerprints.without_added(config.to_dict()),
               "head": head.key(), "info": info, "windows": windows,
               **fingerprints.folds_identity(dataset, config)}
    oof, test, history, notes = [], [], [], {}
    for fold in tqdm(config.train.train_folds, desc="folds (embedding head)", disable=not progress):
        folder = model_dir / f"fold{fold}"
        state = _train_fold(dataset, config, head, table, folder, fold, fingerprints.make({**made_by, "fold": fold}),
                            method=method, loss=loss, tau=tau, t_k=t_k, threshold=threshold, soft=soft)
        with np.load(folder / "scores.npz") as scores:
            oof.append((fold, [str(r) for r in scores["valid_ids"]], scores["oof"]))
            test.append(scores["test"])
        history += state["history"]
        notes[f"fold{fold}"] = {"train_s": state["seconds"], **state.get("note", {})}
    extra["folds"] = notes
    return write_scores(model_dir, dataset, oof, test, pd.DataFrame(history), extra=extra)


def _train_fold(dataset, config, head, table, folder: Path, fold: int, fingerprint: dict, **how) -> dict:
    """The ``state.json`` of ``fold``: read when the fold was made under ``fingerprint``, else the
    fold is trained (after a folder made otherwise is discarded) and its files written."""
    _adopt_state_key(folder, fingerprint)
    if fingerprints.prepare(folder, fingerprint) == "same" and (folder / "state.json").is_file():
        return read_json(folder / "state.json")
    started = time.perf_counter()
    train_ids, valid_ids = fold_split(dataset, config, fold)
    model, rows, note = _fit(dataset, table, train_ids, valid_ids, head, seed=config.train.seed * 100 + fold, **how)
    save_keras_atomic(model, folder / "head.keras")
    save_npz_atomic(folder / "scores.npz", valid_ids=np.array(valid_ids, dtype=str),
                    oof=head_clip_logits(model, table, valid_ids), test=head_clip_logits(model, table, dataset.test_ids))
    if not (folder.parent / "model.keras").exists():  # the model folder's model: the first fold trained
        save_keras_atomic(model, folder.parent / "model.keras")
    state = {"seconds": round(time.perf_counter() - started, 2), "note": note,
             "history": [{"fold": fold, **r} for r in rows]}
    write_json_atomic(folder / "state.json", state)  # last: the fold is complete
    return state


def _adopt_state_key(folder: Path, fingerprint: dict) -> None:
    """A fold written before ``fingerprint.json`` kept its fingerprint's hash in ``state.json``
    (``"fingerprint"``): when it is ``fingerprint``'s, record ``fingerprint`` so the fold is reused."""
    if (folder / fingerprints.FILE).exists():
        return
    key = (read_json(folder / "state.json", default=None) or {}).get("fingerprint")
    if key is not None and key == fingerprint["weights_hash"]:
        fingerprints.write(folder, fingerprint)


def _fit(dataset, table, train_ids, valid_ids, head, *, method, loss, seed, tau, t_k, threshold, soft):
    """``(head, history, note)`` of one fold trained by ``method``."""
    validate = validator(dataset, table, valid_ids, "masked_bce" if method == "coteaching" else loss)
    if method == "pseudo_labels":
        return head_methods.fit_pseudo_labels(dataset, table, train_ids, head, loss=loss, seed=seed,
                                              threshold=threshold, validate=validate)
    if method == "soft_pseudo":
        return head_methods.fit_soft_pseudo(dataset, table, train_ids, head, loss=loss, seed=seed, soft=soft,
                                            validate=validate)
    x, t = training_windows(dataset, table, train_ids)
    if method == "coteaching":
        return head_methods.fit_coteaching(x, t, head, seed=seed, tau=tau, t_k=t_k, validate=validate) + ({},)
    return fit_head(x, t, head, loss=loss, seed=seed, validate=validate) + ({},)


def load_fold_head(model_dir, fold: int) -> keras.Model:
    """The head of ``fold`` that :func:`train_head_model` wrote in ``model_dir``."""
    path = Path(model_dir) / f"fold{fold}" / "head.keras"
    if not path.is_file():
        raise ParameterError(f"{path}: no trained head for fold {fold}; expected a folder written by "
                             "rfcxlib.embeddings.head_folds.train_head_model")
    return keras.models.load_model(path)


def load_heads(model_dir, config: dict) -> tuple[HeadConfig, list]:
    """``(HeadConfig, [head, ...])``: every trained fold's head of an embedding-head model folder
    (``config``: its ``config.json``)."""
    model_dir = Path(model_dir)
    head = HeadConfig(**(config.get("head") or {}))
    folds = (config.get("train") or {}).get("train_folds") or [0]
    heads = [load_fold_head(model_dir, f) for f in folds if (model_dir / f"fold{f}" / "head.keras").is_file()]
    if not heads:
        raise ParameterError(f"{model_dir}: no fold<k>/head.keras: expected a folder written by "
                             "rfcxlib.embeddings.head_folds.train_head_model")
    return head, heads
