"""Training over grouped folds with checkpoints, resume and the score files of docs/ARCHITECTURE.md.

One model per fold of ``config.train.train_folds``, trained by one loop (:func:`fit_fold`) and
one distributed step (:func:`rfcxlib.training.steps.make_step`) on every ``tf.distribute`` strategy
(default, ``MirroredStrategy``, ``MultiWorkerMirroredStrategy``, ``TPUStrategy``:
:mod:`rfcxlib.training.distribute`). An :class:`rfcxlib.training.steps.Objective` says what the
step minimises: one of the losses of :mod:`rfcxlib.training.losses` (the SED loss through the
clip + frame view of the model), or co-teaching's two networks
(:func:`rfcxlib.noisy.coteaching.coteaching_objective`). Each
replica's loss is its share of the global batch's mean and batch-norm statistics are synchronised
across replicas, so any number of replicas takes the steps one device takes on the same global
batch (up to rounding; dropout masks differ).

Each epoch draws fresh crops from a pipeline seeded by ``(seed, fold, epoch)`` and re-seeds every
dropout generator the same way, so an epoch's result depends only on the weights and optimizer
state it starts from: a run killed mid-way and started again resumes from its last checkpoint and
ends with the same weights as a run that was never interrupted. The best epoch (validation LWLRAP
on the known labels of fixed validation crops) is kept — or the last one with
``checkpoint="last"`` (on partially labelled data the known-label metric saturates early and is a
weak guide) — and its clip scores on the held-out recordings are the out-of-fold scores.

Files under ``model_dir``: ``config.json``, ``history.csv``, ``oof.npz``, ``test_scores.npz``,
``metrics.json``, ``model.keras`` (the kept model of the first trained fold) and ``fold<k>/``
(``fingerprint.json``, ``last.weights.h5``, ``best.weights.h5``, ``resume.npz`` — every network's
weights and optimizer state and the fold's progress, in one file written atomically —,
``state.json``, ``scores.npz`` once the fold is complete). A fold is reused only under the same
settings and data (``fingerprint.json``, :mod:`rfcxlib.training.fingerprints`). With several workers only
the chief writes here (:func:`rfcxlib.training.distribute.writer_folder`).
"""
from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from rfcxlib.progress import tqdm

from rfcxlib import metrics
from rfcxlib.data import tables as data
from rfcxlib.training import distribute, fingerprints, losses, steps
from rfcxlib.inference import windows as inference
from rfcxlib.features import bands, fixed_windows, pipeline
from rfcxlib.config import RunConfig
from rfcxlib.atomic import read_json, save_keras_atomic, save_npz_atomic, write_json_atomic, write_text_atomic
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.layout import CONFIG_FILE


# --------------------------------------------------------------------------- pieces
def fold_split(dataset, config: RunConfig, fold: int) -> tuple[list, list]:
    """Training and validation recordings of ``fold``. The folds depend on the data set,
    ``data_seed`` and ``fold_groups`` only (grouped by site when the data has ``sites.csv``), so
    every model of a sweep holds out the same recordings."""
    folds = data.make_folds(dataset, config.train.folds, seed=config.data.data_seed,
                            groups=data.fold_groups(dataset, config.data.fold_groups))
    return sorted(folds.index[folds != fold]), sorted(folds.index[folds == fold])


def _epoch_seed(config: RunConfig, fold: int, epoch: int, salt: int = 0) -> int:
    """The seed of ``epoch`` of ``fold`` (``-1``: the initial weights); ``salt`` (a soft round's
    :class:`rfcxlib.features.fixed_windows.WindowTargets` ``seed``) makes another model's."""
    entropy = [config.train.seed, fold, epoch + 1] + ([int(salt)] if salt else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _reseed_dropout(models, seed: int) -> None:
    """Set every random generator inside ``models`` (dropout) to a state derived from ``seed``.

    A Keras generator draws its state and then adds 1 to the second word, so generator ``k``
    starts at ``[seed, k * 2**20]``: no two generators draw the same seed within an epoch of
    fewer than 2**20 steps, and two networks trained side by side drop different units. The
    first generator's stream is ``[seed, 0], [seed, 1], ...``."""
    k = 0
    for model in models if isinstance(models, (list, tuple)) else [models]:
        for layer in model._flatten_layers():
            for generator in getattr(layer, "_seed_generators", []):
                generator.state.assign(np.array([seed % 2**31, k << 20], dtype=generator.state.dtype))
                k += 1


def _seed_epoch(models, seed: int) -> None:
    """Seed an epoch: Python's and NumPy's generators, and every dropout generator of ``models``
    (:func:`_reseed_dropout`). TensorFlow's global seed is set once, before the networks are
    built: ``tf.random.set_seed`` empties TensorFlow's kernel caches, which cost every epoch
    seconds of re-instantiating the step and the input pipeline, and nothing in an epoch draws
    from it (the crops and augmentations are seeded per example)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    _reseed_dropout(models, seed)


def _sync_batch_norm(models, on: bool) -> None:
    """Batch statistics over the global batch (every replica's share) instead of each replica's."""
    for model in models:
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.synchronized = on


def learning_rate_schedule(config: RunConfig, total_steps: int):
    """``config.train``'s learning rate: cosine decay to 0 over ``total_steps``, or constant."""
    t = config.train
    if t.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(t.learning_rate, decay_steps=max(1, total_steps))
    return t.learning_rate


# --------------------------------------------------------------------------- checkpoints
class _Learner(NamedTuple):
    models: list  # the networks; the first is the fold's model
    trainers: list  # what the objective trains: each model or its clip + frame view
    optimizers: list


def _build_learner(config, shape, build_fn, objective: steps.Objective, total_steps: int) -> _Learner:
    models = [build_fn(config, shape) for _ in objective.names]
    trainers = [_frame_view(m) for m in models] if objective.frames else models
    lr = learning_rate_schedule(config, total_steps)
    return _Learner(models, trainers, [steps.make_optimizer(lr, m) for m in trainers])


def _save_resume(learner: _Learner, folder: Path, state: dict) -> None:
    arrays = {"state": np.array(json.dumps(state))}
    for m, (trainer, opt) in enumerate(zip(learner.trainers, learner.optimizers)):
        arrays.update({f"w{m}_{i}": np.asarray(v.numpy()) for i, v in enumerate(trainer.weights)})
        arrays.update({f"o{m}_{i}": np.asarray(v.numpy()) for i, v in enumerate(opt.variables)})
    save_npz_atomic(folder / "resume.npz", **arrays)


def _load_resume(learner: _Learner, folder: Path) -> Optional[dict]:
    """Restore ``resume.npz`` into ``learner``; its state (None: nothing to resume)."""
    if not (folder / "resume.npz").is_file():
        return None
    with np.load(folder / "resume.npz") as arrays:
        for m, (trainer, opt) in enumerate(zip(learner.trainers, learner.optimizers)):
            for i, v in enumerate(trainer.weights):
                v.assign(arrays[f"w{m}_{i}"])
            for i, v in enumerate(opt.variables):
                v.assign(arrays[f"o{m}_{i}"])
        return json.loads(str(arrays["state"]))


def _record_epoch(learner: _Learner, folder: Path, state: dict, row: dict) -> None:
    """Add ``row`` (one epoch) to ``state``; write the first network's weights (``best`` when the
    epoch is the best so far, ``last``), then ``resume.npz``, then ``state.json``."""
    state["history"].append(row)
    if row["val_lwlrap"] > state["best"]:
        state["best"], state["best_epoch"] = row["val_lwlrap"], row["epoch"]
        save_keras_atomic(learner.trainers[0], folder / "best.weights.h5")
    save_keras_atomic(learner.trainers[0], folder / "last.weights.h5")
    state["epochs_done"] = row["epoch"] + 1
    _save_resume(learner, folder, state)  # the one file resume reads: weights, optimizers, state
    write_json_atomic(folder / "state.json", state)


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
def _frame_view(model: keras.Model) -> keras.Model:
    from rfcxlib.models import frame_trainer

    return frame_trainer(model)


def _trainer(model: keras.Model, loss_fn) -> keras.Model:
    """The model that ``loss_fn`` trains: ``model`` itself, or its clip + frame view for the SED loss."""
    return _frame_view(model) if losses.is_frame_loss(loss_fn) else model


def samples_per_epoch(dataset, train_ids, config: RunConfig) -> int:
    """Training crops per epoch: ``steps_per_epoch`` batches when set, else one per TP/FP row of
    ``train_ids`` (at least one batch)."""
    t = config.train
    if t.steps_per_epoch:
        return t.steps_per_epoch * t.batch_size
    return max(len(pipeline.crop_rows(dataset, train_ids)), t.batch_size)


def fit_fold(dataset, config: RunConfig, fold: int, folder: Path, *, loss_fn=None, build_fn: Callable,
             progress: bool = True, strategy: Optional[tf.distribute.Strategy] = None,
             source=None, objective: Optional[steps.Objective] = None) -> keras.Model:
    """Train (or resume) one fold in ``folder``; return the (first) model with the weights of its
    best (or, ``checkpoint="last"``, last) epoch.

    The networks and their optimizers are built under ``strategy`` (default:
    :func:`rfcxlib.training.distribute.select_strategy`); ``objective`` (default: the loss
    ``loss_fn``) says what they learn.
    ``source`` is the data set the training crops are drawn from (default ``dataset``; e.g. one
    with pseudo-label rows added), or fixed windows with targets of their own
    (:class:`rfcxlib.features.fixed_windows.WindowTargets`, soft pseudo-label rounds): the folds,
    the number of examples per epoch and the validation crops always come from ``dataset``.
    ``folder`` is where this process writes: with several workers, :func:`train_model` gives the
    chief the model folder and the others a copy of it.
    """
    t, folder = config.train, Path(folder)
    strategy = strategy or distribute.select_strategy()
    objective = objective or steps.loss_objective(getattr(loss_fn, "__name__", "loss"), loss_fn)
    folder.mkdir(parents=True, exist_ok=True)
    train_ids, valid_ids = fold_split(dataset, config, fold)
    salt = source.seed if isinstance(source, fixed_windows.WindowTargets) else 0
    keras.utils.set_random_seed(_epoch_seed(config, fold, -1, salt))
    samples = samples_per_epoch(dataset, train_ids, config)
    with strategy.scope():
        learner = _build_learner(config, pipeline.input_shape(config), build_fn, objective,
                                 t.epochs * (samples // t.batch_size))
    step = steps.make_step(learner.trainers, learner.optimizers, objective, strategy=strategy,
                     global_batch=t.batch_size, xla=bool(t.xla))
    frames = learner.trainers[0].output.shape[1] - 1 if objective.frames else None
    valid = pipeline.valid_dataset(dataset, valid_ids, config, progress=False)
    draw = _epoch_batches(dataset, train_ids, config, source=source, samples=samples, frames=frames)
    state = _load_resume(learner, folder) or {"epochs_done": 0, "best": -1.0, "best_epoch": -1, "history": []}
    _sync_batch_norm(learner.models, strategy.num_replicas_in_sync > 1)
    bar = tqdm(range(state["epochs_done"], t.epochs), desc=f"fold {fold}", disable=not progress,
               initial=state["epochs_done"], total=t.epochs, unit="epoch")
    for epoch in bar:
        if t.patience and epoch - state["best_epoch"] > t.patience and state["best_epoch"] >= 0:
            break
        started, seed = time.time(), _epoch_seed(config, fold, epoch, salt)
        _seed_epoch(learner.models, seed)
        batches = draw(seed)
        value = float(objective.value(epoch)) if objective.value else 0.0
        with distribute.collective_errors(strategy):
            logs = steps.run_epoch(step, steps.distributed(strategy, batches), value)
        row = {"fold": fold, "epoch": epoch, "loss": logs[objective.names[0]],
               **{k: v for k, v in logs.items() if k != "loss"},
               **({objective.value_name: value} if objective.value_name else {}),
               **validation_score(learner.models[0], valid, objective.valid_loss),
               "seconds": round(time.time() - started, 2)}
        _record_epoch(learner, folder, state, row)
        bar.set_postfix(loss=f"{row['loss']:.4f}", val_lwlrap=f"{row['val_lwlrap']:.3f}")
    _sync_batch_norm(learner.models, False)
    learner.trainers[0].load_weights(folder / f"{t.checkpoint}.weights.h5")
    return learner.models[0]


def _epoch_batches(dataset, train_ids, config: RunConfig, *, source, samples: int, frames: Optional[int]):
    """``seed -> one epoch's training batches``: crops around the rows of ``source`` (default
    ``dataset``), or the fixed windows of a :class:`rfcxlib.features.fixed_windows.WindowTargets`
    (made once, here)."""
    if not isinstance(source, fixed_windows.WindowTargets):
        return lambda seed: pipeline.train_dataset(dataset if source is None else source, train_ids, config,
                                                   seed=seed, samples_per_epoch=samples, frames=frames,
                                                   progress=False)
    if frames:
        raise ParameterError("fixed training windows (soft pseudo-label rounds) carry clip targets only: "
                             "expected a clip loss, not the frame loss 'sed'")
    windows, targets = source.make()
    return lambda seed: fixed_windows.window_train_dataset(source.dataset, windows, targets, config, seed=seed,
                                                          samples_per_epoch=samples, progress=False)


# --------------------------------------------------------------------------- folds + scores
def _default_build(config, shape):
    from rfcxlib.models import build_model

    return build_model(config, shape)


def train_model(dataset, config: RunConfig, model_dir, *, loss: Optional[str] = None,
                build_fn: Optional[Callable] = None, progress: bool = True,
                extra: Optional[dict] = None, sources: Optional[dict] = None,
                objective: Optional[steps.Objective] = None) -> dict:
    """Train every fold of ``config.train.train_folds`` into ``model_dir`` (resuming what a
    previous call left) and write the score files; returns the model's metrics. ``sources`` maps
    a fold to the data set its training crops come from (see :func:`fit_fold`); ``objective``
    (default: the loss ``loss``, else ``config.train.loss``) says what each fold learns.

    A fold is reused only when its ``fingerprint.json`` matches the current configuration, loss,
    builder and data (:mod:`rfcxlib.training.fingerprints`): a fold trained otherwise is discarded and
    trained again, one whose only change is the inference settings is scored again. With several
    workers every worker makes this call; only the chief writes ``model_dir``, the others a
    temporary copy of it (:func:`rfcxlib.training.distribute.writer_folder`), and all return the same
    metrics."""
    strategy = distribute.select_strategy()
    objective = objective or steps.loss_objective(loss or config.train.loss)
    custom_build, build_fn = build_fn, build_fn or _default_build
    chief = distribute.is_chief(strategy)
    if config.train.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    with distribute.writer_folder(model_dir, strategy) as out:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out / CONFIG_FILE, {**config.to_dict(), "notebook": extra or {}})
        if config.inference.band_mode:  # the bands it scores with, for rfcx predict and export
            bands.write_bands(out, bands.species_bands(dataset.tp, dataset.fp))
        oof, test, history = [], [], []
        for fold in config.train.train_folds:
            folder, source = out / f"fold{fold}", (sources or {}).get(fold)
            fingerprints.prepare(folder, fingerprints.fold_fingerprint(dataset, config, loss=objective.name,
                                                                       build_fn=custom_build, source=source),
                                 rescore=["scores.npz"], say=chief)
            if not (folder / "scores.npz").exists():
                model = fit_fold(dataset, config, fold, folder, build_fn=build_fn, progress=progress and chief,
                                 strategy=strategy, source=source, objective=objective)
                _, valid_ids = fold_split(dataset, config, fold)
                save_npz_atomic(folder / "scores.npz", valid_ids=np.array(valid_ids),
                                oof=inference.predict_clips(model, dataset, valid_ids, config, split="train"),
                                test=inference.predict_clips(model, dataset, dataset.test_ids, config, split="test"))
                if fold == config.train.train_folds[0] or not (out / "model.keras").exists():
                    save_keras_atomic(model, out / "model.keras")
            scores = np.load(folder / "scores.npz")
            oof.append((fold, [str(r) for r in scores["valid_ids"]], scores["oof"]))
            test.append(scores["test"])
            history += read_json(folder / "state.json")["history"]
        return write_scores(out, dataset, oof, test, pd.DataFrame(history), extra=extra)


def is_current(model_dir, dataset, config: RunConfig, *, loss: Optional[str] = None,
               build_fn: Optional[Callable] = None) -> bool:
    """Whether ``model_dir`` holds every fold of ``config.train.train_folds``, complete and trained
    and scored under exactly these settings (so :func:`train_model` would only reread it)."""
    model_dir = Path(model_dir)
    for fold in config.train.train_folds:
        folder = model_dir / f"fold{fold}"
        current = fingerprints.fold_fingerprint(dataset, config, loss=loss or config.train.loss,
                                                build_fn=build_fn)
        if not (folder / "scores.npz").exists() or fingerprints.verdict(folder, current) != "same":
            return False
    return (model_dir / "metrics.json").exists()


def load_fold_model(model_dir, config: RunConfig, fold: int, *, build_fn: Optional[Callable] = None,
                    loss: Optional[str] = None) -> keras.Model:
    """The model of ``fold`` that :func:`train_model` trained in ``model_dir`` (the weights
    ``config.train.checkpoint`` keeps; co-teaching's first network), rebuilt from ``config``;
    ``loss`` is the loss it was trained with when not ``config.train.loss``."""
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
