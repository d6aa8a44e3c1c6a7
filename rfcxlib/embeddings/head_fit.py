"""An embedding head: the model, its training on the shared step, its logits.

A head is a small MLP (standardisation fitted on the training windows, ``units`` ReLU units,
dropout, 24 logits: :func:`build_head`) trained on embedded windows (:mod:`rfcxlib.embeddings.birdnet`)
with the ``(y, mask)`` targets (:mod:`rfcxlib.embeddings.head_targets`) and losses of the CNNs, by
the training step they share (:func:`rfcxlib.training.steps.make_step`): :func:`fit_head` runs an
epoch's full batches in one graph loop around that step (:func:`epoch_runner`), so no Python runs
between two steps of a batch-64 head whose steps take a millisecond each. Mixup blends embeddings
and targets per batch (:func:`mixup_batches`). A clip's logits are the maximum over its windows
(:func:`head_clip_logits`).

Its timing against a head's own loop: benchmarks/bench_head_step.py.

Tests: tests/test_embeddings.py
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from rfcxlib import NUM_SPECIES, metrics
from rfcxlib.embeddings import birdnet
from rfcxlib.embeddings.head_config import HeadConfig, check_loss
from rfcxlib.embeddings.head_targets import training_windows
from rfcxlib.inference import windows as inference
from rfcxlib.training import losses, steps

LOGITS_BATCH = 4096  # windows per call when scoring a table


def build_head(x_train: np.ndarray, config: HeadConfig, seed: int) -> keras.Model:
    """Standardisation (fitted on ``x_train``) ▶ Dense(units, ReLU) ▶ dropout ▶ Dense(24) logits."""
    keras.utils.set_random_seed(seed)
    dim = x_train.shape[1]
    mean, var = x_train.mean(axis=0), x_train.var(axis=0)
    inputs = keras.Input((dim,), name="embedding")
    h = keras.layers.Normalization(mean=mean, variance=np.maximum(var, 1e-6), name="standardise")(inputs)
    if config.units:
        h = keras.layers.Dense(config.units, activation="relu", name="hidden")(h)
        h = keras.layers.Dropout(config.dropout, seed=seed, name="dropout")(h)
    outputs = keras.layers.Dense(NUM_SPECIES, name="logits")(h)
    return keras.Model(inputs, outputs, name="embedding_head")


def mixup_batches(x, t, config: HeadConfig, rng: np.random.Generator):
    """One epoch of shuffled batches ``(x, t)``, each mixed (inputs and targets) with ``p_mixup``."""
    order = rng.permutation(len(x))
    for i in range(0, len(x), config.batch_size):
        idx = order[i:i + config.batch_size]
        xb, tb = x[idx], t[idx]
        if config.p_mixup and rng.random() < config.p_mixup:
            lam = np.float32(rng.beta(config.mixup_alpha, config.mixup_alpha))
            perm = rng.permutation(len(idx))
            xb, tb = lam * xb + (1 - lam) * xb[perm], lam * tb + (1 - lam) * tb[perm]
        yield xb, tb


def epoch_runner(model: keras.Model, optimizer, loss: str):
    """``run(batches, batch_size) -> mean loss``: one epoch of ``model`` on a list of ``(x, targets)``
    batches, every batch one step of :func:`rfcxlib.training.steps.make_step` with the loss ``loss``.

    The full batches (``batch_size`` rows; they come first, as :func:`mixup_batches` yields them)
    run in one ``tf.range`` loop inside one graph, the last, smaller batch on its own."""
    objective = steps.loss_objective(loss, losses.get_loss(check_loss(loss)))
    step = steps.make_step([model], [optimizer], objective)
    value = tf.constant(0.0)

    @tf.function(reduce_retracing=True)
    def full_batches(xs, ts):
        total = tf.constant(0.0)
        for i in tf.range(tf.shape(xs)[0]):
            total += step(xs[i], ts[i], value)["loss"]
        return total

    def run(batches: list, batch_size: int) -> float:
        full = [b for b in batches if len(b[0]) == batch_size]
        total = float(full_batches(np.stack([b[0] for b in full]), np.stack([b[1] for b in full]))) if full else 0.0
        total += sum(float(step(xb, tb, value)["loss"]) for xb, tb in batches[len(full):])
        return total / len(batches)

    return run


def fit_head(x, targets, config: HeadConfig, *, loss: str = "masked_bce", seed: int = 0,
             validate=None) -> tuple[keras.Model, list]:
    """Train one head; returns it and its per-epoch history (``loss``, and ``validate(model)``'s
    values when given).

    Parameters
    ----------
    x : np.ndarray [shape=(n, dim)], float32
        Embedded windows.
    targets : np.ndarray [shape=(n, 48)]
        ``[y | mask]`` (:mod:`rfcxlib.embeddings.head_targets`), or soft ``[target | weight]``.
    loss : str
        One of :data:`rfcxlib.embeddings.head_config.HEAD_LOSSES`.
    seed : int
        Initial weights, dropout, shuffling and mixup.
    """
    model = build_head(x, config, seed)
    run = epoch_runner(model, steps.make_optimizer(config.learning_rate, model), loss)
    rng, history = np.random.default_rng([seed, 7]), []
    for epoch in range(config.epochs):
        mean_loss = run(list(mixup_batches(x, targets, config, rng)), config.batch_size)
        history.append({"epoch": epoch, "loss": mean_loss, **(validate(model) if validate else {})})
    return model, history


def validator(dataset, table: birdnet.WindowTable, recording_ids, loss: str = "masked_bce"):
    """``fn(model) -> {"val_loss", "val_lwlrap"}`` on the windows of ``recording_ids`` that overlap
    a box: the loss and the LWLRAP on their known labels (what CNN training reports per epoch)."""
    x, t = training_windows(dataset, table, recording_ids)
    loss_fn = losses.get_loss(check_loss(loss))
    y, mask = np.split(t, 2, axis=1)

    def fn(model):
        if not len(x):
            return {"val_loss": float("nan"), "val_lwlrap": float("nan")}
        z = model(x, training=False)
        return {"val_loss": float(np.mean(loss_fn(tf.constant(t), z))),
                "val_lwlrap": metrics.lwlrap(y, np.asarray(z), mask)}

    return fn


def head_logits(model: keras.Model, table: birdnet.WindowTable) -> np.ndarray:
    """``(len(table), 24)`` float32: the head's logits of every window of ``table``."""
    if not len(table):
        return np.zeros((0, NUM_SPECIES), np.float32)
    x = table.x.astype(np.float32)
    return np.concatenate([np.asarray(model(x[i:i + LOGITS_BATCH], training=False), np.float32)
                           for i in range(0, len(x), LOGITS_BATCH)])


def head_clip_logits(model: keras.Model, table: birdnet.WindowTable, recording_ids) -> np.ndarray:
    """``(len(recording_ids), 24)``: the maximum of :func:`head_logits` over each recording's windows."""
    sub = table.subset(recording_ids)
    row = {r: i for i, r in enumerate(recording_ids)}
    index = sub.windows["recording_id"].map(row).to_numpy()
    return inference.aggregate_windows(head_logits(model, sub), index, len(recording_ids), how="max")
