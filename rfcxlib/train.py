"""Training over grouped folds with checkpoints, resume and the score files of docs/ARCHITECTURE.md.

One model per fold of ``config.train.train_folds``. Each epoch draws fresh crops from a pipeline
seeded by ``(seed, fold, epoch)`` and re-seeds every dropout generator the same way, so an epoch's
result depends only on the weights and optimizer state it starts from: a run killed mid-way and
started again resumes from its last checkpoint and ends with the same weights as a run that was
never interrupted. The best epoch (validation LWLRAP on the known labels of fixed validation
crops) is kept — or the last one with ``checkpoint="last"`` (on partially labelled data the
known-label metric saturates early and is a weak guide) — and its clip scores on the held-out
recordings are the out-of-fold scores.

Files under ``model_dir``: ``config.json``, ``history.csv``, ``oof.npz``, ``test_scores.npz``,
``metrics.json``, ``model.keras`` (the best model of the first trained fold) and
``fold<k>/`` (``fingerprint.json``, ``last.weights.h5``, ``last.optimizer.npz``, ``best.weights.h5``,
``state.json``, ``scores.npz`` once the fold is complete). A fold is reused only under the same
settings and data (``fingerprint.json``, :mod:`rfcxlib.fingerprints`).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from rfcxlib import data, fingerprints, inference, losses, metrics, pipeline
from rfcxlib.config import RunConfig
from rfcxlib.errors import DataError
from rfcxlib.runs import read_json, save_keras_atomic, save_npz_atomic, write_json_atomic, write_text_atomic


# --------------------------------------------------------------------------- strategy
def select_strategy() -> tf.distribute.Strategy:
    """TPU when a TPU resolver finds one; ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is
    set; ``MirroredStrategy`` over several GPUs (or several logical CPUs); else the default."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.NotFoundError):
        pass
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    if not gpus and len(cpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in cpus])
    return tf.distribute.get_strategy()


# --------------------------------------------------------------------------- pieces
def fold_split(dataset, config: RunConfig, fold: int) -> tuple[list, list]:
    """Training and validation recordings of ``fold``. The folds depend on the data set and
    ``data_seed`` only, so every model of a sweep holds out the same recordings."""
    folds = data.make_folds(dataset, config.train.folds, seed=config.data.data_seed)
    return sorted(folds.index[folds != fold]), sorted(folds.index[folds == fold])


def _epoch_seed(config: RunConfig, fold: int, epoch: int) -> int:
    return int(np.random.SeedSequence([config.train.seed, fold, epoch + 1]).generate_state(1)[0])


def _reseed_dropout(model: keras.Model, seed: int) -> None:
    """Set every random generator inside ``model`` (dropout) to a state derived from ``seed``."""
    k = 0
    for layer in model._flatten_layers():
        for generator in getattr(layer, "_seed_generators", []):
            generator.state.assign(np.array([seed % 2**31, k], dtype=generator.state.dtype))
            k += 1


def learning_rate_schedule(config: RunConfig, total_steps: int):
    """``config.train``'s learning rate: cosine decay to 0 over ``total_steps``, or constant."""
    t = config.train
    if t.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(t.learning_rate, decay_steps=max(1, total_steps))
    return t.learning_rate


def compile_model(model: keras.Model, config: RunConfig, loss_fn, total_steps: int) -> keras.Model:
    t = config.train
    lr = learning_rate_schedule(config, total_steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss_fn, jit_compile=bool(t.xla))
    model.optimizer.build(model.trainable_variables)
    return model


def _save_checkpoint(model: keras.Model, folder: Path, name: str) -> None:
    save_keras_atomic(model, folder / f"{name}.weights.h5")
    save_npz_atomic(folder / f"{name}.optimizer.npz",
                    **{f"v{i}": v.numpy() for i, v in enumerate(model.optimizer.variables)})


def _load_checkpoint(model: keras.Model, folder: Path, name: str) -> None:
    model.load_weights(folder / f"{name}.weights.h5")
    arrays = np.load(folder / f"{name}.optimizer.npz")
    for i, v in enumerate(model.optimizer.variables):
        v.assign(arrays[f"v{i}"])


def predict_logits(model: keras.Model, batches) -> tuple[np.ndarray, np.ndarray]:
    """Logits and targets over a ``(x, targets)`` dataset."""
    z, t = [], []
    for x, targets in batches:
        z.append(np.asarray(model(x, training=False), np.float32))
        t.append(np.asarray(targets, np.float32))
    return np.concatenate(z), np.concatenate(t)


def validation_score(model: keras.Model, batches, loss_fn) -> dict:
    """Masked LWLRAP and mean loss on validation crops."""
    z, targets = predict_logits(model, batches)
    y, mask = np.split(targets, 2, axis=1)
    loss = float(np.mean(loss_fn(tf.constant(targets), tf.constant(z))))
    return {"val_lwlrap": metrics.lwlrap(y, z, mask), "val_loss": loss}


# --------------------------------------------------------------------------- one fold
def _trainer(model: keras.Model, loss_fn) -> keras.Model:
    """The model that ``loss_fn`` trains: ``model`` itself, or its clip + frame view for the SED loss."""
    if losses.is_frame_loss(loss_fn):
        from rfcxlib.models import frame_trainer

        return frame_trainer(model)
    return model


def samples_per_epoch(dataset, train_ids, config: RunConfig) -> int:
    """Training crops per epoch: ``steps_per_epoch`` batches when set, else one per TP/FP row of
    ``train_ids`` (at least one batch)."""
    t = config.train
    if t.steps_per_epoch:
        return t.steps_per_epoch * t.batch_size
    return max(len(pipeline.crop_rows(dataset, train_ids)), t.batch_size)


def fit_fold(dataset, config: RunConfig, fold: int, folder: Path, *, loss_fn, build_fn: Callable,
             progress: bool = True, strategy: Optional[tf.distribute.Strategy] = None,
             source=None) -> keras.Model:
    """Train (or resume) one fold in ``folder``; return the model with the weights of its best
    (or, ``checkpoint="last"``, last) epoch.

    The model is built and compiled under ``strategy`` (default: :func:`select_strategy`).
    ``source`` is the data set the training crops are drawn from (default ``dataset``; e.g. one
    with pseudo-label rows added): the folds, the number of crops per epoch and the validation
    crops always come from ``dataset``.
    """
    t = config.train
    folder.mkdir(parents=True, exist_ok=True)
    train_ids, valid_ids = fold_split(dataset, config, fold)
    shape = pipeline.input_shape(config)
    keras.utils.set_random_seed(_epoch_seed(config, fold, -1))
    samples = samples_per_epoch(dataset, train_ids, config)
    with (strategy or select_strategy()).scope():
        model = build_fn(config, shape)
        trainer = _trainer(model, loss_fn)
        compile_model(trainer, config, loss_fn, t.epochs * (samples // t.batch_size))
    # the SED loss trains clip + frame logits; validation scores the clip logits with masked BCE
    frames = trainer.output.shape[1] - 1 if trainer is not model else None
    valid_loss = loss_fn if trainer is model else losses.masked_bce
    valid = pipeline.valid_dataset(dataset, valid_ids, config, progress=False)
    state = read_json(folder / "state.json", default=None) or {
        "epochs_done": 0, "best": -1.0, "best_epoch": -1, "history": []}
    if state["epochs_done"] > 0:
        _load_checkpoint(trainer, folder, "last")
    bar = tqdm(range(state["epochs_done"], t.epochs), desc=f"fold {fold}", disable=not progress,
               initial=state["epochs_done"], total=t.epochs, unit="epoch")
    for epoch in bar:
        if t.patience and epoch - state["best_epoch"] > t.patience and state["best_epoch"] >= 0:
            break
        started = time.time()
        seed = _epoch_seed(config, fold, epoch)
        keras.utils.set_random_seed(seed)
        _reseed_dropout(model, seed)
        batches = pipeline.train_dataset(dataset if source is None else source, train_ids, config,
                                         seed=seed, samples_per_epoch=samples, frames=frames, progress=False)
        fit = trainer.fit(batches, epochs=1, verbose=0, shuffle=False)
        row = {"fold": fold, "epoch": epoch, "loss": float(fit.history["loss"][-1]),
               **validation_score(model, valid, valid_loss), "seconds": round(time.time() - started, 2)}
        state["history"].append(row)
        if row["val_lwlrap"] > state["best"]:
            state["best"], state["best_epoch"] = row["val_lwlrap"], epoch
            _save_checkpoint(trainer, folder, "best")
        _save_checkpoint(trainer, folder, "last")
        state["epochs_done"] = epoch + 1
        write_json_atomic(folder / "state.json", state)
        bar.set_postfix(loss=f"{row['loss']:.4f}", val_lwlrap=f"{row['val_lwlrap']:.3f}")
    _load_checkpoint(trainer, folder, t.checkpoint)
    return model


# --------------------------------------------------------------------------- folds + scores
def _default_build(config, shape):
    from rfcxlib.models import build_model

    return build_model(config, shape)


def train_model(dataset, config: RunConfig, model_dir, *, loss: Optional[str] = None,
                build_fn: Optional[Callable] = None, progress: bool = True,
                extra: Optional[dict] = None, sources: Optional[dict] = None) -> dict:
    """Train every fold of ``config.train.train_folds`` into ``model_dir`` (resuming what a
    previous call left) and write the score files; returns the model's metrics. ``sources`` maps
    a fold to the data set its training crops come from (see :func:`fit_fold`).

    A fold is reused only when its ``fingerprint.json`` matches the current configuration, loss,
    builder and data (:mod:`rfcxlib.fingerprints`): a fold trained otherwise is discarded and
    trained again, one whose only change is the inference settings is scored again."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    loss_name = loss or config.train.loss
    loss_fn = losses.get_loss(loss_name)
    custom_build, build_fn = build_fn, build_fn or _default_build
    write_json_atomic(model_dir / "config.json", {**config.to_dict(), "notebook": extra or {}})
    if config.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    oof, test, history = [], [], []
    for fold in config.train.train_folds:
        folder = model_dir / f"fold{fold}"
        source = (sources or {}).get(fold)
        _check_fold(folder, fingerprints.fold_fingerprint(dataset, config, loss=loss_name,
                                                          build_fn=custom_build, source=source))
        if not (folder / "scores.npz").exists():
            model = fit_fold(dataset, config, fold, folder, loss_fn=loss_fn, build_fn=build_fn,
                             progress=progress, source=source)
            _, valid_ids = fold_split(dataset, config, fold)
            save_npz_atomic(folder / "scores.npz", valid_ids=np.array(valid_ids),
                            oof=inference.predict_clips(model, dataset, valid_ids, config, split="train"),
                            test=inference.predict_clips(model, dataset, dataset.test_ids, config, split="test"))
            if fold == config.train.train_folds[0] or not (model_dir / "model.keras").exists():
                save_keras_atomic(model, model_dir / "model.keras")
        scores = np.load(folder / "scores.npz")
        oof.append((fold, [str(r) for r in scores["valid_ids"]], scores["oof"]))
        test.append(scores["test"])
        history += read_json(folder / "state.json")["history"]
    return write_scores(model_dir, dataset, oof, test, pd.DataFrame(history), extra=extra)


def _check_fold(folder: Path, current: dict) -> str:
    """Compare ``folder``'s fingerprint with ``current``; discard a stale fold, drop the scores of
    one scored otherwise; record ``current``. Returns :func:`rfcxlib.fingerprints.compare`'s verdict."""
    saved = fingerprints.read(folder)
    verdict = fingerprints.compare(saved, current) if folder.exists() else "new"
    if verdict in ("stale", "scores"):
        change = fingerprints.describe_change(saved, current)
        what = "trained again" if verdict == "stale" else "its saved weights scored again"
        print(f"{folder}: made under other settings ({change}): {what}", flush=True)
    if verdict == "stale":
        fingerprints.discard(folder)
    elif verdict == "scores":
        (folder / "scores.npz").unlink(missing_ok=True)
    fingerprints.write(folder, current)
    return verdict


def is_current(model_dir, dataset, config: RunConfig, *, loss: Optional[str] = None,
               build_fn: Optional[Callable] = None) -> bool:
    """Whether ``model_dir`` holds every fold of ``config.train.train_folds``, complete and trained
    and scored under exactly these settings (so :func:`train_model` would only reread it)."""
    model_dir = Path(model_dir)
    for fold in config.train.train_folds:
        folder = model_dir / f"fold{fold}"
        current = fingerprints.fold_fingerprint(dataset, config, loss=loss or config.train.loss,
                                                build_fn=build_fn)
        if not (folder / "scores.npz").exists() or fingerprints.compare(fingerprints.read(folder), current) != "same":
            return False
    return (model_dir / "metrics.json").exists()


def load_fold_model(model_dir, config: RunConfig, fold: int, *, build_fn: Optional[Callable] = None,
                    loss: Optional[str] = None) -> keras.Model:
    """The model of ``fold`` that :func:`train_model` trained in ``model_dir`` (the weights
    ``config.train.checkpoint`` keeps), rebuilt from ``config``; ``loss`` is the loss it was
    trained with when not ``config.train.loss``."""
    path = Path(model_dir) / f"fold{fold}" / f"{config.train.checkpoint}.weights.h5"
    if not path.is_file():
        raise DataError(f"{path}: no trained weights for fold {fold}; expected a folder written by train_model")
    model = (build_fn or _default_build)(config, pipeline.input_shape(config))
    _trainer(model, losses.get_loss(loss or config.train.loss)).load_weights(path)  # saved as trained
    return model


def write_scores(model_dir, dataset, oof: list[tuple], test_logits: list, history: pd.DataFrame,
                 extra: Optional[dict] = None) -> dict:
    """``oof.npz``, ``test_scores.npz``, ``history.csv`` and ``metrics.json`` from per-fold
    ``(fold, recording_ids, logits)`` and per-fold test logits (averaged)."""
    model_dir = Path(model_dir)
    ids = [r for _, fold_ids, _ in oof for r in fold_ids]
    logits = np.concatenate([z for _, _, z in oof]).astype(np.float32)
    y, mask = dataset.targets_matrix(ids)
    fold = np.concatenate([np.full(len(fold_ids), f) for f, fold_ids, _ in oof])
    save_npz_atomic(model_dir / "oof.npz", recording_ids=np.array(ids), fold=fold, logits=logits,
                    scores=inference.sigmoid(logits), y=y, mask=mask)
    test = np.mean(test_logits, axis=0).astype(np.float32)
    save_npz_atomic(model_dir / "test_scores.npz", recording_ids=np.array(dataset.test_ids),
                    logits=test, scores=inference.sigmoid(test))
    write_text_atomic(model_dir / "history.csv", history.to_csv(index=False))
    truth = dataset.test_truth()
    result = {"val_lwlrap": [metrics.lwlrap(y[fold == f], z, mask[fold == f]) for f, _, z in oof],
              "oof_lwlrap": metrics.lwlrap(y, logits, mask), **(extra or {})}
    if truth is not None:
        result["test_lwlrap"] = metrics.lwlrap(truth, test)
    write_json_atomic(model_dir / "metrics.json", result)
    return result
