"""Embedding heads over grouped folds: the ``birdnet`` model family's model folder.

:func:`train_head_model` trains one head per fold of ``config.train.train_folds`` (by a method of
:data:`rfcxlib.embeddings.head_config.HEAD_METHODS`: one loss, or a label method of
:mod:`rfcxlib.embeddings.head_methods`) on the folds the CNNs use, and writes the files CNN training
writes (``config.json``, ``history.csv``, ``oof.npz``, ``test_scores.npz``, ``metrics.json``,
``model.keras``, ``fold<k>/``), so notebook 06, ``submission.csv`` and the Kaggle bundle take it as
they take a CNN. Each fold holds ``head.keras``, ``scores.npz``, ``state.json`` (history, seconds,
the method's notes; written last: the fold is complete) and ``fingerprint.json``: everything that
made it, so that a fold is reused only under the same settings and data and trained again otherwise
(:func:`rfcxlib.training.fingerprints.prepare`). The folds to train run side by side in worker
processes of one thread each, as many as :func:`rfcxlib.workers.default_workers` chooses (a head's
steps keep one core busy), with the same numbers, bitwise, as in this process. A fold written
before ``fingerprint.json`` existed kept the same key in ``state.json``; it is reused when the key
matches.

With ``recording_norm`` each recording's mean embedding (over its windows) is subtracted before the
head's standardisation, in training and in every score written here; ``rfcx predict`` and
``rfcx export`` score windows in batches that do not see a whole recording, so they refuse such a
head (:func:`rfcxlib.embeddings.scorer.build_scorer`).

Embedding model: BirdNET V2.4, CC BY-NC-SA 4.0 (see :mod:`rfcxlib.embeddings.birdnet`).

Tests: tests/test_embeddings.py
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
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
from rfcxlib import workers as pool
from rfcxlib.atomic import read_json, save_keras_atomic, save_npz_atomic, write_bytes_atomic, write_json_atomic
from rfcxlib.training import fingerprints
from rfcxlib.training.train import fold_split, write_scores


#: fold-parallel worker processes only for folds of at least this many steps (about 10 s at 1.3 ms a
#: step, against some 5 s for a worker to start)
MIN_FOLD_STEPS = 8000


def train_head_model(dataset, config: RunConfig, head: HeadConfig, model_dir, *, method: str = "loss",
                     loss: Optional[str] = None, tau: float = 0.1, t_k: Optional[int] = None,
                     threshold: float = 0.9, soft: Optional[SoftPseudoConfig] = None,
                     table: Optional[birdnet.WindowTable] = None, extra: Optional[dict] = None,
                     workers: Optional[int] = None, progress: bool = True) -> dict:
    """Train an embedding head on every fold of ``config.train.train_folds`` into ``model_dir``.

    ``method``: ``"loss"`` (``loss``, default ``config.train.loss``), ``"coteaching"`` (two heads
    exchange their small-loss unknown cells; ``tau``, ``t_k``), ``"pseudo_labels"`` (a base head
    with ``loss``, confident windows of unknown species above ``threshold`` in the fold's training
    recordings labelled TP, a new head) or ``"soft_pseudo"`` (a base head with ``loss``, then
    rounds of soft pseudo-labels: ``soft``, default :class:`SoftPseudoConfig`'s defaults); see
    :mod:`rfcxlib.embeddings.head_methods`. Seeds come from ``config.train.seed`` and the fold.
    ``table``: the embedded windows (default: embed the data set now, or read them from the
    cache), centred per recording here when ``head.recording_norm``.
    ``workers``: folds trained at once, each in a worker process of one thread
    (:mod:`rfcxlib.workers`; same numbers, bitwise, as training here); default
    :func:`rfcxlib.workers.default_workers`'s choice when a fold takes :data:`MIN_FOLD_STEPS` steps
    or more, else 1 (``RFCX_WORKERS`` overrides it); 1 trains every fold in this process.
    Returns the metrics written to ``metrics.json``.
    """
    check_choice("embedding-head method", method, HEAD_METHODS)
    if workers is not None and (not isinstance(workers, int) or isinstance(workers, bool) or workers < 1):
        raise ParameterError(f"parameter 'workers' = {workers!r}: expected an integer >= 1 (folds trained at "
                             "once in worker processes; 1 trains them here) or None (the default)")
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
    how = dict(method=method, loss=loss, tau=tau, t_k=t_k, threshold=threshold, soft=soft)
    made = {fold: fingerprints.make({**made_by, "fold": fold}) for fold in config.train.train_folds}
    states = {fold: _reused_state(model_dir / f"fold{fold}", made[fold]) for fold in config.train.train_folds}
    todo = [fold for fold, state in states.items() if state is None]
    states.update(_train_folds(dataset, config, head, table, model_dir, todo, made, how, workers=workers,
                               progress=progress))
    _keep_first_head(model_dir, config.train.train_folds)
    oof, test, history, notes = [], [], [], {}
    for fold in config.train.train_folds:
        with np.load(model_dir / f"fold{fold}" / "scores.npz") as scores:
            oof.append((fold, [str(r) for r in scores["valid_ids"]], scores["oof"]))
            test.append(scores["test"])
        history += states[fold]["history"]
        notes[f"fold{fold}"] = {"train_s": states[fold]["seconds"], **states[fold].get("note", {})}
    extra["folds"] = notes
    return write_scores(model_dir, dataset, oof, test, pd.DataFrame(history), extra=extra)


def _reused_state(folder: Path, fingerprint: dict) -> Optional[dict]:
    """The ``state.json`` of a fold made under ``fingerprint``, or None: the fold must be trained
    (a folder made otherwise is discarded first)."""
    _adopt_state_key(folder, fingerprint)
    if fingerprints.prepare(folder, fingerprint) == "same" and (folder / "state.json").is_file():
        return read_json(folder / "state.json")
    return None


def _train_folds(dataset, config, head, table, model_dir: Path, folds: list, made: dict, how: dict, *,
                 workers: Optional[int], progress: bool) -> dict:
    """Train ``folds``: here, one after the other, or in worker processes of one thread each
    (:mod:`rfcxlib.workers`; a head's steps use one core, so two folds train in about the time of
    one). ``workers``: None for :func:`rfcxlib.workers.default_workers`'s choice. Returns their states."""
    n = workers if workers is not None else pool.default_workers(
        len(folds), per_call_bytes=_fold_bytes(table), worth_it=_fold_steps(table, config, head, how) >= MIN_FOLD_STEPS)
    if n == 1 or len(folds) < 2:
        return {fold: _train_fold(dataset, config, head, table, model_dir / f"fold{fold}", fold, **how)
                for fold in tqdm(folds, desc="folds (embedding head)", disable=not progress)}
    with tempfile.TemporaryDirectory(prefix=".fold-workers-", dir=model_dir) as work:
        shared = _SharedTable.write(table, Path(work) / "table.npy")
        calls = [pool.Call(_train_fold_from_file, (dataset, config, head, shared, str(model_dir / f"fold{fold}"), fold),
                           how, label=f"{model_dir.name}: fold {fold}") for fold in folds]
        states = pool.run_calls(calls, workers=n, work_dir=work, progress=progress,
                                desc=f"folds (embedding head, {n} worker processes)")
    return dict(zip(folds, states))


def _fold_steps(table, config, head, how: dict) -> int:
    """Training steps of one fold, roughly: its trainings (a base and ``soft.rounds`` rounds; two
    for pseudo-labels and co-teaching) times the epochs times the batches of its training windows."""
    method = how["method"]
    trainings = 1 + how["soft"].rounds if method == "soft_pseudo" else 2 if method in ("pseudo_labels", "coteaching") else 1
    training_windows = len(table) * (1 - 1 / max(config.train.folds, 2))
    return int(trainings * head.epochs * np.ceil(training_windows / head.batch_size))


def _fold_bytes(table) -> int:
    """What one fold's training holds, roughly: four float32 copies of the table's windows (its
    training windows, their batches, a soft round's set) and a TensorFlow runtime."""
    return 4 * len(table) * table.x.shape[1] * 4 + 700 * 2 ** 20


@dataclass(frozen=True)
class _SharedTable:
    """A window table for worker processes: the windows, and ``x`` in a ``.npy`` file they map."""

    windows: pd.DataFrame
    path: str

    @classmethod
    def write(cls, table: birdnet.WindowTable, path: Path) -> "_SharedTable":
        np.save(path, np.ascontiguousarray(table.x))
        return cls(table.windows, str(path))

    def load(self) -> birdnet.WindowTable:
        return birdnet.WindowTable(self.windows, np.load(self.path, mmap_mode="r"))


def _train_fold_from_file(dataset, config, head, shared: _SharedTable, folder: str, fold: int, **how) -> dict:
    """:func:`_train_fold` in a worker process, on the table of ``shared``."""
    return _train_fold(dataset, config, head, shared.load(), Path(folder), fold, **how)


def _train_fold(dataset, config, head, table, folder: Path, fold: int, **how) -> dict:
    """Train ``fold`` and write its files; ``state.json`` last (the fold is complete). Returns it."""
    started = time.perf_counter()
    train_ids, valid_ids = fold_split(dataset, config, fold)
    model, rows, note = _fit(dataset, table, train_ids, valid_ids, head, seed=config.train.seed * 100 + fold, **how)
    save_keras_atomic(model, folder / "head.keras")
    save_npz_atomic(folder / "scores.npz", valid_ids=np.array(valid_ids, dtype=str),
                    oof=head_clip_logits(model, table, valid_ids), test=head_clip_logits(model, table, dataset.test_ids))
    state = {"seconds": round(time.perf_counter() - started, 2), "note": note,
             "history": [{"fold": fold, **r} for r in rows]}
    write_json_atomic(folder / "state.json", state)  # last: the fold is complete
    return state


def _keep_first_head(model_dir: Path, folds) -> None:
    """``model.keras`` of the model folder: a copy of the head of the first fold in ``folds``."""
    head = (model_dir / f"fold{folds[0]}" / "head.keras").read_bytes()
    target = model_dir / "model.keras"
    if not target.is_file() or target.read_bytes() != head:
        write_bytes_atomic(target, head)


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
