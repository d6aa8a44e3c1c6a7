"""Noisy-label methods on an RFCx data set, and the comparison of notebook 05.

:func:`train_coteaching` and :func:`pseudo_label_rounds` train over the folds like
:func:`rfcxlib.training.train.train_model` and write the same files into their model folder (``oof.npz``,
``test_scores.npz``, ``history.csv``, ``metrics.json``, ``config.json``), so every method is scored
the same way: :func:`evaluate_model_dir` reads those files. :func:`compare_methods` runs every
method for every seed on the same folds and returns one row per (method, seed).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from rfcxlib.training import distribute, fingerprints, losses, train
from rfcxlib.inference import windows as inference
from rfcxlib.noisy import methods as noisy
from rfcxlib.features import pipeline
from rfcxlib.config import RunConfig
from rfcxlib.layout import CONFIG_FILE
from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.atomic import read_json, write_json_atomic, write_text_atomic

LOSS_METHODS = tuple(losses.LOSSES)
METHODS = LOSS_METHODS + ("coteaching", "pseudo_labels")


# --------------------------------------------------------------------------- helpers
def fold_split(dataset, config: RunConfig, fold: int) -> tuple[list, list]:
    """Training and validation recordings of ``fold`` (the folds of :func:`rfcxlib.training.train.fold_split`)."""
    return train.fold_split(dataset, config, fold)


def clip_logits(model, dataset, recording_ids: Sequence[str], config: RunConfig, *, split: str) -> np.ndarray:
    """Clip logits ``(n, 24)``: :func:`rfcxlib.inference.windows.predict_clips` (sliding windows, max or mean)."""
    return inference.predict_clips(model, dataset, recording_ids, config, split=split)


_sigmoid = inference.sigmoid


def write_scores(model_dir, dataset, config: RunConfig, oof: list[tuple], test_logits: list,
                 history: pd.DataFrame, extra: Optional[dict] = None) -> dict:
    """:func:`rfcxlib.training.train.write_scores` plus the model's ``config.json``; ``oof`` holds
    ``(fold, recording_ids, logits)`` per trained fold."""
    write_json_atomic(Path(model_dir) / CONFIG_FILE, {**config.to_dict(), "notebook": extra or {}})
    return train.write_scores(model_dir, dataset, oof, test_logits, history, extra=extra)


# --------------------------------------------------------------------------- one loss
def train_with_loss(dataset, config: RunConfig, model_dir, *, loss: Optional[str] = None,
                    build_fn: Optional[Callable] = None, progress: bool = False) -> dict:
    """Train one model per fold with a registered loss (default ``config.train.loss``) and score it:
    :func:`rfcxlib.training.train.train_model` (checkpoints, resume, the same folds, pipeline and
    learning-rate schedule as every other method). Use ``checkpoint="last"`` in ``config`` so that
    no method is tuned on validation."""
    name = loss or config.train.loss
    return train.train_model(dataset, config, model_dir, loss=name, build_fn=build_fn, progress=progress,
                             extra={"method": name})


def _default_build():
    from rfcxlib.models import build_model

    return build_model


# --------------------------------------------------------------------------- co-teaching
def train_coteaching(dataset, config: RunConfig, model_dir, *, tau: float = 0.1, t_k: Optional[int] = None,
                     build_fn: Optional[Callable] = None, progress: bool = True) -> dict:
    """Co-teach two models per fold and score model A: :func:`rfcxlib.training.train.train_model` with
    the objective :func:`rfcxlib.noisy.methods.coteaching_objective` (the same loop, folds, checkpoints,
    resume, pipeline and learning-rate schedule as every other method).

    Parameters
    ----------
    dataset : rfcxlib.data.tables.Dataset
    config : RunConfig
        Model, features, augmentation and training settings (``epochs``, ``batch_size``,
        ``learning_rate``, ``lr_schedule``, ``folds``, ``train_folds``, ``seed``, ``checkpoint``);
        the loss is co-teaching's own (masked BCE on known cells, selected unknown cells read as 0).
    model_dir : path-like
        Receives the files of :func:`rfcxlib.training.train.train_model`: ``fold<k>/`` (model A's
        ``last.weights.h5`` and ``best.weights.h5``, which :func:`rfcxlib.training.train.load_fold_model`
        loads; both networks in ``resume.npz``), ``model.keras`` (the first fold's model A) and
        the score files; the history adds ``loss_a``, ``loss_b``, ``kept_unknown`` and ``keep_rate``.
    tau, t_k : float, int
        Forget rate and the epochs over which it is reached (default: half of ``epochs``).
        Co-teaching sets ``tau`` to the noise rate: here the share of unknown cells that hold a
        call, about 9 % of the 3 s training crops of the mini synthetic data set.
    build_fn : callable ``(config, input_shape) -> keras.Model``
        Default ``rfcxlib.models.build_model``.

    Returns
    -------
    dict: the metrics written to ``metrics.json``.
    """
    t_k = t_k or max(1, config.train.epochs // 2)
    return train.train_model(dataset, config, model_dir, build_fn=build_fn, progress=progress,
                             objective=noisy.coteaching_objective(tau=tau, t_k=t_k),
                             extra={"method": "coteaching", "tau": tau, "t_k": t_k})


# --------------------------------------------------------------------------- pseudo-labels
def _window_scores(model, dataset, recording_ids, c: RunConfig, hop_s: float) -> tuple[pd.DataFrame, np.ndarray]:
    table = pipeline.window_table(dataset, recording_ids, c, split="train", hop_s=hop_s, progress=False)
    ds = pipeline.window_dataset(dataset, recording_ids, c, split="train", hop_s=hop_s, progress=False)
    logits = np.concatenate([np.asarray(model(x, training=False)) for x, _ in ds])
    return table, _sigmoid(logits)


def pseudo_label_rounds(dataset, config: RunConfig, model_dir, *, rounds: int = 1, threshold: float = 0.9,
                        hop_s: Optional[float] = None, loss: str = "naive_bce",
                        build_fn: Optional[Callable] = None, initial_dir=None,
                        progress: bool = True) -> dict:
    """Pseudo-labelling: train, label confident windows of unknown species as TP, retrain.

    Round 0 trains with ``loss`` on the given labels into ``<model_dir>/round0`` (or reuses
    ``initial_dir``, a folder :func:`train_with_loss` wrote with the same configuration and loss).
    Each round then scores sliding windows (``hop_s``, default ``config.inference.hop_s``) over each
    fold's *training* recordings with that fold's model, adds a TP row for every window and species
    above ``threshold`` whose label is unknown there (:func:`rfcxlib.noisy.methods.pseudo_label_rows`), and
    trains new models from scratch on the extended labels with the same number of steps
    (:func:`rfcxlib.training.train.train_model`; rounds before the last in ``<model_dir>/round<r>``, the last
    in ``model_dir``). Validation recordings never get pseudo-labels, and every score is computed
    against the original labels. An interrupted call resumes from the checkpoints. With several
    workers, ``initial_dir`` must lie inside ``model_dir``'s parent comparison folder when one
    is open (:func:`compare_methods` passes it so), or be readable by every worker.

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
    if loss not in LOSS_METHODS:
        raise unknown_choice("pseudo_loss", loss, LOSS_METHODS)
    with distribute.writer_folder(model_dir, train.select_strategy()) as out:  # several workers: the chief's
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
            train_ids, _ = fold_split(dataset, c, fold)
            model = train.load_fold_model(previous, c, fold, build_fn=build_fn, loss=loss)
            table, scores = _window_scores(model, extended[fold], train_ids, c, hop_s)
            rows = noisy.pseudo_label_rows(extended[fold], table, scores, crop_s=c.audio.crop_s,
                                           threshold=threshold)
            if len(rows):
                extended[fold] = extended[fold].with_rows(tp=rows[list(dataset.tp.columns)])
            quality = noisy.pseudo_label_quality(dataset, rows) or {}
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


# --------------------------------------------------------------------------- comparison
RESULT_COLUMNS = ["method", "seed", "val_lwlrap", "oof_lwlrap", "test_lwlrap", "train_s", "model_dir"]


def evaluate_model_dir(model_dir) -> dict:
    """``val_lwlrap`` (mean over folds, known labels only), ``oof_lwlrap`` and ``test_lwlrap``
    (ground truth; NaN without it) of a model folder's ``metrics.json``."""
    m = read_json(Path(model_dir) / "metrics.json")
    if m is None:
        raise DataError(f"{Path(model_dir) / 'metrics.json'} is missing: expected a trained model folder")
    val = m.get("val_lwlrap", float("nan"))
    return {"val_lwlrap": float(np.mean(val)), "oof_lwlrap": float(m.get("oof_lwlrap", float("nan"))),
            "test_lwlrap": float(m.get("test_lwlrap", float("nan")))}


def compare_methods(dataset, config: RunConfig, out_dir, *, methods: Sequence[str] = METHODS,
                    seeds: Sequence[int] = (0, 1, 2), tau: float = 0.1, t_k: Optional[int] = None,
                    pseudo_rounds: int = 1, pseudo_threshold: float = 0.9, pseudo_hop_s: Optional[float] = None,
                    pseudo_loss: str = "naive_bce", build_fn: Optional[Callable] = None, results_csv=None,
                    progress: bool = True) -> pd.DataFrame:
    """Train every method for every seed on the same folds; one result row per (method, seed).

    Each run writes its model folder ``<out_dir>/<method>-seed<k>/`` with its
    ``fingerprint.json`` (:func:`method_fingerprint`). A finished run under the same settings and
    data is not trained again (an interrupted comparison resumes); one under other settings is
    discarded and trained again. With
    ``results_csv`` the table is rewritten (atomically) after every run. ``pseudo_labels`` trains
    with ``pseudo_loss`` and starts from that method's models of the same seed when it ran before.

    Returns
    -------
    pd.DataFrame with columns ``method, seed, val_lwlrap, oof_lwlrap, test_lwlrap, train_s, model_dir``.
    """
    for m in methods:
        if m not in METHODS:
            raise unknown_choice("noisy-label method", m, METHODS)
    if pseudo_loss not in LOSS_METHODS:
        raise unknown_choice("pseudo_loss", pseudo_loss, LOSS_METHODS)
    if not seeds:
        raise ParameterError("parameter 'seeds' = []: expected at least one seed")
    build_fn = build_fn or _default_build()
    strategy = train.select_strategy()
    chief, rows = distribute.is_chief(strategy), []
    jobs = [(int(seed), m) for seed in seeds for m in methods]
    with distribute.writer_folder(out_dir, strategy) as out:  # several workers: the chief writes out_dir
        for seed, method in tqdm(jobs, desc="methods x seeds", disable=not (progress and chief)):
            c = config.replace(seed=seed)
            model_dir = out / f"{method}-seed{seed}"
            start = time.perf_counter()
            settings = dict(tau=tau, t_k=t_k) if method == "coteaching" else dict(
                rounds=pseudo_rounds, threshold=pseudo_threshold, hop_s=pseudo_hop_s,
                pseudo_loss=pseudo_loss) if method == "pseudo_labels" else {}
            if not _is_current(model_dir, method_fingerprint(method, dataset, c, build_fn, settings), say=chief):
                _run_one(method, dataset, c, model_dir, out, seed, tau=tau, t_k=t_k, rounds=pseudo_rounds,
                         threshold=pseudo_threshold, hop_s=pseudo_hop_s, pseudo_loss=pseudo_loss,
                         build_fn=build_fn, progress=False)  # one bar: this loop
            rows.append({"method": method, "seed": seed, **evaluate_model_dir(model_dir),
                         "train_s": round(time.perf_counter() - start, 1),
                         "model_dir": str(Path(out_dir) / model_dir.name)})
            if results_csv and chief:
                write_text_atomic(results_csv, pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(index=False))
    return pd.DataFrame(rows, columns=RESULT_COLUMNS)


def method_fingerprint(method: str, dataset, config: RunConfig, build_fn: Optional[Callable],
                       settings: dict) -> dict:
    """The fingerprint (:mod:`rfcxlib.training.fingerprints`) of one method's model folder: the folds'
    settings and data, the folds trained, the method and its own settings."""
    fp = fingerprints.fold_fingerprint(dataset, config, loss=method, build_fn=build_fn)
    fp["weights"].update(method=method, train_folds=list(config.train.train_folds), **settings)
    fp["weights_hash"] = fingerprints.digest(fp["weights"])
    return fp


def _is_current(model_dir: Path, current: dict, say: bool = True) -> bool:
    """True when ``model_dir`` holds a finished run under ``current``; otherwise the folder is made
    ready for a run: a folder written under other settings is discarded (an interrupted run
    under the same settings is kept, so it resumes) and ``current`` is recorded (``say``: print
    what changed)."""
    saved = fingerprints.read(model_dir)
    verdict = fingerprints.compare(saved, current) if model_dir.exists() else "new"
    if verdict == "same" and (model_dir / "metrics.json").exists():
        return True
    if verdict in ("stale", "scores") and say:
        print(f"{model_dir}: made under other settings ({fingerprints.describe_change(saved, current)}): "
              "trained again", flush=True)
    if verdict in ("stale", "scores"):
        fingerprints.discard(model_dir)
    fingerprints.write(model_dir, current)
    return False


def _run_one(method, dataset, c, model_dir, out_dir, seed, *, tau, t_k, rounds, threshold, hop_s, pseudo_loss,
             build_fn, progress):
    if method in LOSS_METHODS:
        train_with_loss(dataset, c, model_dir, loss=method, build_fn=build_fn)
    elif method == "coteaching":
        train_coteaching(dataset, c, model_dir, tau=tau, t_k=t_k, build_fn=build_fn, progress=progress)
    else:
        pseudo_label_rounds(dataset, c, model_dir, rounds=rounds, threshold=threshold, hop_s=hop_s,
                            loss=pseudo_loss, build_fn=build_fn, initial_dir=out_dir / f"{pseudo_loss}-seed{seed}",
                            progress=progress)


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
