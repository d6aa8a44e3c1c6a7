"""Notebook 05's comparison: every noisy-label method, every seed, the same folds, one table.

:func:`compare_methods` trains each method for each seed into its own model folder,
``<out_dir>/<method>-seed<k>/``, which holds the files every model folder holds (``oof.npz``,
``test_scores.npz``, ``history.csv``, ``metrics.json``, ``config.json``), so every method is scored
the same way (:func:`evaluate_model_dir`) and :func:`summarize` puts the seeds together. Two model
families take part:

- CNNs (:data:`CNN_METHODS`): one loss each (:data:`LOSS_METHODS`,
  :func:`rfcxlib.training.train.train_model`), co-teaching
  (:func:`rfcxlib.noisy.coteaching.train_coteaching`), pseudo-label rounds
  (:func:`rfcxlib.noisy.pseudo_labels.pseudo_label_rounds`) and soft pseudo-label rounds
  (:func:`rfcxlib.noisy.soft_pseudo.soft_pseudo_rounds`);
- embedding heads, with ``head`` given (:data:`BIRDNET_METHODS`: the same methods on BirdNET
  embeddings, :func:`rfcxlib.embeddings.head_folds.train_head_model`).

A finished run is never trained again under the settings that made it and always under others:
a CNN method's folder records the method's fingerprint (:func:`method_fingerprint`,
:func:`rfcxlib.training.fingerprints.prepare`), a head's folds their own.

Tests: tests/test_noisy_runs.py
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib.config import RunConfig
from rfcxlib.embeddings import birdnet, head_config, head_folds
from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.noisy import coteaching, pseudo_labels, soft_pseudo
from rfcxlib.atomic import read_json, write_text_atomic
from rfcxlib.training import distribute, fingerprints, losses, train

#: methods that are one loss of :mod:`rfcxlib.training.losses`
LOSS_METHODS = tuple(losses.LOSSES)
#: the methods compared on CNNs (notebook 05's ``methods``)
CNN_METHODS = LOSS_METHODS + ("coteaching", "pseudo_labels", "soft_pseudo")
#: the methods compared on BirdNET embedding heads (notebook 05's ``embedding_methods``)
BIRDNET_METHODS = CNN_METHODS
RESULT_COLUMNS = ["method", "seed", "val_lwlrap", "oof_lwlrap", "test_lwlrap", "train_s", "model_dir"]


@dataclass(frozen=True)
class _Settings:
    """The methods' own settings, shared by every (method, seed) run of a comparison."""
    tau: float
    t_k: Optional[int]
    pseudo_rounds: int
    pseudo_threshold: float
    pseudo_hop_s: Optional[float]
    pseudo_loss: str
    build_fn: Optional[Callable]
    head: Optional[head_config.HeadConfig]
    soft: Optional[head_config.SoftPseudoConfig]
    table: Optional[birdnet.WindowTable]


def compare_methods(dataset, config: RunConfig, out_dir, *, head: Optional[head_config.HeadConfig] = None,
                    methods: Optional[Sequence[str]] = None, seeds: Sequence[int] = (0, 1, 2), tau: float = 0.1,
                    t_k: Optional[int] = None, pseudo_rounds: int = 1, pseudo_threshold: float = 0.9,
                    pseudo_hop_s: Optional[float] = None, pseudo_loss: Optional[str] = None,
                    soft: Optional[head_config.SoftPseudoConfig] = None, build_fn: Optional[Callable] = None,
                    table: Optional[birdnet.WindowTable] = None, results_csv=None,
                    progress: bool = True) -> pd.DataFrame:
    """Train every method for every seed on the same folds; one result row per (method, seed).

    Parameters
    ----------
    dataset : rfcxlib.data.tables.Dataset
    config : RunConfig
        The models' settings; each run replaces ``seed``.
    out_dir : path-like
        Receives ``<method>-seed<k>/`` per run (with several workers: written by the chief).
    head : HeadConfig, optional
        None: CNNs built by ``build_fn`` (default :func:`rfcxlib.models.build_model`), methods of
        :data:`CNN_METHODS`. A :class:`rfcxlib.embeddings.head_config.HeadConfig`: embedding heads
        on ``table`` (default: the data set embedded now, or read from the cache), methods of
        :data:`BIRDNET_METHODS`.
    methods : sequence of str
        Default: every method of the family.
    tau, t_k : float, int
        Co-teaching's forget rate and the epochs over which it is reached.
    pseudo_rounds, pseudo_threshold, pseudo_hop_s : int, float, float
        Pseudo-labels: rounds and window hop (CNNs; the hop also of ``soft_pseudo``'s windows),
        score threshold (both).
    pseudo_loss : str
        The loss ``pseudo_labels`` trains with: default ``naive_bce`` on CNNs (which then start from
        the ``naive_bce`` run of the same seed), ``masked_bce`` on heads.
    soft : SoftPseudoConfig, optional
        ``soft_pseudo``'s rounds, on CNNs (which start from the ``masked_bce`` run of the same
        seed) and heads alike (default: its defaults).
    results_csv : path-like, optional
        Rewritten (atomically) after every run.

    Returns
    -------
    pd.DataFrame with columns ``method, seed, val_lwlrap, oof_lwlrap, test_lwlrap, train_s, model_dir``.
    """
    family = BIRDNET_METHODS if head is not None else CNN_METHODS
    methods = family if methods is None else tuple(methods)
    for m in methods:
        if m not in family:
            raise unknown_choice("noisy-label method", m, family)
    allowed = head_config.HEAD_LOSSES if head is not None else LOSS_METHODS
    pseudo_loss = pseudo_loss or ("masked_bce" if head is not None else "naive_bce")
    if pseudo_loss not in allowed:
        raise unknown_choice("pseudo_loss", pseudo_loss, allowed)
    if not seeds:
        raise ParameterError("parameter 'seeds' = []: expected at least one seed")
    if head is not None and table is None:
        table = birdnet.embed_dataset(dataset, embedder=head.embedder, hop_s=head.embed_hop_s, progress=progress)
    settings = _Settings(tau, t_k, pseudo_rounds, pseudo_threshold, pseudo_hop_s, pseudo_loss, build_fn, head,
                         soft, table)
    run_one = _train_head_method if head is not None else _train_cnn_method
    strategy = distribute.select_strategy()
    chief, rows = distribute.is_chief(strategy), []
    jobs = [(int(seed), m) for seed in seeds for m in methods]
    with distribute.writer_folder(out_dir, strategy) as out:  # several workers: the chief writes out_dir
        for seed, method in tqdm(jobs, desc="methods x seeds", disable=not (progress and chief)):
            model_dir, start = out / f"{method}-seed{seed}", time.perf_counter()
            run_one(method, dataset, config.replace(seed=seed), model_dir, settings, say=chief)
            rows.append({"method": method, "seed": seed, **evaluate_model_dir(model_dir),
                         "train_s": round(time.perf_counter() - start, 1),
                         "model_dir": str(Path(out_dir) / model_dir.name)})
            if results_csv and chief:
                write_text_atomic(results_csv, pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


# --------------------------------------------------------------------------- CNNs
def method_fingerprint(method: str, dataset, config: RunConfig, build_fn: Optional[Callable],
                       settings: dict) -> dict:
    """The fingerprint (:mod:`rfcxlib.training.fingerprints`) of one CNN method's model folder: the
    folds' settings and data, the folds trained, the method and its own settings."""
    fold = fingerprints.fold_fingerprint(dataset, config, loss=method, build_fn=build_fn)
    return fingerprints.make({**fold["weights"], "method": method, "train_folds": list(config.train.train_folds),
                              **settings}, fold["scores"])


def _own_settings(method: str, s: _Settings) -> dict:
    if method == "coteaching":
        return dict(tau=s.tau, t_k=s.t_k)
    if method == "pseudo_labels":
        return dict(rounds=s.pseudo_rounds, threshold=s.pseudo_threshold, hop_s=s.pseudo_hop_s,
                    pseudo_loss=s.pseudo_loss)
    if method == "soft_pseudo":
        return dict(soft=(s.soft or head_config.SoftPseudoConfig()).to_dict(), hop_s=s.pseudo_hop_s)
    return {}


def _train_cnn_method(method: str, dataset, c: RunConfig, model_dir: Path, s: _Settings, *, say: bool) -> None:
    """Train ``method`` into ``model_dir`` unless a finished run under the same fingerprint is there
    (an unfinished one resumes)."""
    current = method_fingerprint(method, dataset, c, s.build_fn, _own_settings(method, s))
    if fingerprints.prepare(model_dir, current, say=say) == "same" and (model_dir / "metrics.json").exists():
        return
    if method in LOSS_METHODS:
        train.train_model(dataset, c, model_dir, loss=method, build_fn=s.build_fn, progress=False,
                          extra={"method": method})
    elif method == "coteaching":
        coteaching.train_coteaching(dataset, c, model_dir, tau=s.tau, t_k=s.t_k, build_fn=s.build_fn, progress=False)
    elif method == "soft_pseudo":
        base = model_dir.parent / f"masked_bce-seed{c.train.seed}"  # the masked_bce run of this seed, when current
        soft_pseudo.soft_pseudo_rounds(dataset, c, model_dir, soft=s.soft, hop_s=s.pseudo_hop_s, loss="masked_bce",
                                       build_fn=s.build_fn, initial_dir=base, progress=False)
    else:
        pseudo_labels.pseudo_label_rounds(
            dataset, c, model_dir, rounds=s.pseudo_rounds, threshold=s.pseudo_threshold, hop_s=s.pseudo_hop_s,
            loss=s.pseudo_loss, build_fn=s.build_fn, initial_dir=model_dir.parent / f"{s.pseudo_loss}-seed{c.train.seed}",
            progress=False)


# --------------------------------------------------------------------------- embedding heads
def _train_head_method(method: str, dataset, c: RunConfig, model_dir: Path, s: _Settings, *, say: bool) -> None:
    """Train ``method`` on embedding heads into ``model_dir``; each fold is reused under its own
    fingerprint (:func:`rfcxlib.embeddings.head_folds.train_head_model`)."""
    how = method if method in head_config.HEAD_METHODS else "loss"
    loss = s.pseudo_loss if method == "pseudo_labels" else (method if how == "loss" else "masked_bce")
    head_folds.train_head_model(dataset, c, s.head, model_dir, method=how, loss=loss, tau=s.tau, t_k=s.t_k,
                                threshold=s.pseudo_threshold, soft=s.soft, table=s.table, progress=False)


# --------------------------------------------------------------------------- results
def evaluate_model_dir(model_dir) -> dict:
    """``val_lwlrap`` (mean over folds, known labels only), ``oof_lwlrap`` and ``test_lwlrap``
    (ground truth; NaN without it) of a model folder's ``metrics.json``."""
    m = read_json(Path(model_dir) / "metrics.json")
    if m is None:
        raise DataError(f"{Path(model_dir) / 'metrics.json'} is missing: expected a trained model folder")
    val = m.get("val_lwlrap", float("nan"))
    return {"val_lwlrap": float(np.mean(val)), "oof_lwlrap": float(m.get("oof_lwlrap", float("nan"))),
            "test_lwlrap": float(m.get("test_lwlrap", float("nan")))}


def summarize(results: pd.DataFrame, *, baseline: str = "naive_bce") -> pd.DataFrame:
    """Per method: mean and std over seeds of test and validation LWLRAP, the gap between them,
    and the test difference from ``baseline`` (when it ran)."""
    g = results.groupby("method", sort=False)
    table = pd.DataFrame({
        "seeds": g["seed"].nunique(),
        "test_mean": g["test_lwlrap"].mean(), "test_std": g["test_lwlrap"].std(ddof=1),
        "val_mean": g["val_lwlrap"].mean(), "val_std": g["val_lwlrap"].std(ddof=1),
    })
    table["val_minus_test"] = table["val_mean"] - table["test_mean"]
    if baseline in table.index:
        table[f"test_vs_{baseline}"] = table["test_mean"] - table.loc[baseline, "test_mean"]
    table["train_s_mean"] = g["train_s"].mean()
    return table.round(4)
