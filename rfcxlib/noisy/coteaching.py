"""Co-teaching on partial labels: two networks that pick, for each other, which unknown cells to learn.

Co-teaching (Han et al., NeurIPS 2018) trains two networks side by side. In every mini-batch
each network ranks the samples by its own loss and hands the ``R(T)`` fraction with the
smallest loss to its peer, which learns from those only; ``R(T) = 1 - min(T / T_k * tau, tau)``
(:func:`keep_rate`) falls from 1 to ``1 - tau`` over the first ``T_k`` epochs (``tau`` ~ the
noise rate). Because deep networks fit clean, easy samples before they memorise noisy ones, the
small-loss samples are mostly clean, and the two networks filter different errors.

On our partial labels known cells (TP = 1, FP = 0) are always kept; the selection runs per species
over the *unknown* cells of a batch, read as 0 (:func:`select_unknown_cells`): an unknown cell with
a large loss is likely a species that calls but was not labelled, so the peer does not learn it as
absent. :func:`coteaching_objective` is that exchange as an objective of the shared step
(:func:`rfcxlib.training.steps.make_step`), trained on given batches by :func:`coteach_fit` (the
embedding heads) or over an RFCx data set's folds by :func:`train_coteaching` (the CNNs). The
paper's single-label setting, used to check the method: :mod:`rfcxlib.noisy.toy`.

Tests: tests/test_noisy.py
"""
from __future__ import annotations

from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from rfcxlib.progress import tqdm

from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.training import losses, steps, train


# --------------------------------------------------------------------------- schedule
def keep_rate(epoch: int, *, tau: float, t_k: int) -> float:
    """Co-teaching's keep rate ``R(T) = 1 - min(T / T_k * tau, tau)`` at epoch ``T`` (0-based)."""
    check_schedule(tau, t_k)
    return 1.0 - min(epoch / t_k * tau, tau)


def check_schedule(tau: float, t_k: int) -> None:
    """Raise :class:`rfcxlib.errors.ParameterError` unless ``tau`` is in [0, 1) and ``t_k`` an integer >= 1."""
    if not 0.0 <= tau < 1.0:
        raise ParameterError(f"parameter 'tau' = {tau!r}: expected a forget rate in [0, 1)")
    if not (isinstance(t_k, (int, np.integer)) and t_k >= 1):
        raise ParameterError(f"parameter 't_k' = {t_k!r}: expected an integer number of epochs >= 1")



# --------------------------------------------------------------------------- partial labels
def select_unknown_cells(cell_losses, mask, rate):
    """Co-teaching's selection on partial labels: per species, the ``rate`` fraction of a batch's
    unknown cells with the smallest loss.

    Parameters
    ----------
    cell_losses : tf.Tensor [shape=(B, S)]
        Per-cell loss with unknown labels read as 0 (:func:`rfcxlib.training.losses.bce_cells`).
    mask : tf.Tensor [shape=(B, S)]
        Known-label weight; a cell with ``mask < 1`` is (partly) unknown and a candidate.
    rate : float or scalar tensor
        Keep rate ``R(T)`` in [0, 1].

    Returns
    -------
    tf.Tensor [shape=(B, S)] float32: 1 for the selected unknown cells, 0 elsewhere (known cells
    are not selected here; the loss always keeps them through ``mask``).
    """
    candidate = tf.cast(mask, tf.float32) < 1.0
    ranked = tf.where(candidate, tf.cast(cell_losses, tf.float32), tf.fill(tf.shape(cell_losses), np.inf))
    ranks = tf.argsort(tf.argsort(ranked, axis=0, stable=True), axis=0, stable=True)
    n_candidates = tf.reduce_sum(tf.cast(candidate, tf.float32), axis=0)
    n_keep = tf.floor(tf.cast(rate, tf.float32) * n_candidates + 1e-6)
    keep = tf.logical_and(candidate, tf.cast(ranks, tf.float32) < n_keep[None, :])
    return tf.stop_gradient(tf.cast(keep, tf.float32))


def coteaching_loss(targets, logits, keep):
    """Masked BCE on the known cells plus BCE towards 0 on the ``keep`` unknown cells.

    Per example: the sum over cells divided by the number of species (as ``masked_bce``); with
    ``keep`` = 1 on every unknown cell this is naive BCE, with ``keep`` = 0 it is masked BCE.
    """
    y, mask = losses.split_targets(targets)
    known = losses.masked_bce(targets, logits)
    unknown = losses.bce_cells(targets, logits) * (1.0 - mask) * keep
    return known + tf.reduce_sum(unknown, axis=-1) / tf.cast(tf.shape(y)[-1], tf.float32)


def coteaching_objective(*, tau: float, t_k: int) -> steps.Objective:
    """Co-teaching as a training objective for :func:`rfcxlib.training.steps.make_step`: two networks,
    each learning :func:`coteaching_loss` on the unknown cells its peer picked
    (:func:`select_unknown_cells` at the keep rate :func:`keep_rate` of the epoch).

    Logs ``loss_a``, ``loss_b``, ``kept_unknown`` (the fraction of unknown cells network A learnt
    from) and ``keep_rate``. With several replicas each one selects within its share of the batch.
    """
    check_schedule(tau, t_k)

    def per_example(targets, logits, rate):
        logits_a, logits_b = logits
        _, mask = losses.split_targets(targets)
        keep_for_b = select_unknown_cells(losses.bce_cells(targets, logits_a), mask, rate)
        keep_for_a = select_unknown_cells(losses.bce_cells(targets, logits_b), mask, rate)
        kept = tf.math.divide_no_nan(tf.reduce_sum(keep_for_a * (1.0 - mask)), tf.reduce_sum(1.0 - mask))
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        return ([coteaching_loss(targets, logits_a, keep_for_a), coteaching_loss(targets, logits_b, keep_for_b)],
                {"kept_unknown": kept / replicas})

    return steps.Objective(name=f"coteaching(tau={tau:g},t_k={t_k})", per_example=per_example,
                           names=("loss_a", "loss_b"), value=lambda epoch: keep_rate(epoch, tau=tau, t_k=t_k),
                           value_name="keep_rate")


def coteach_fit(model_a: keras.Model, model_b: keras.Model, train_ds, *, epochs: int, tau: float = 0.2,
                t_k: int = 5, learning_rate=1e-3, on_epoch_end: Optional[Callable] = None,
                progress: bool = True) -> list[dict]:
    """Co-teach two multi-label models on ``train_ds`` batches ``(x, targets [y | mask])``.

    Parameters
    ----------
    model_a, model_b : keras.Model
        Two networks mapping ``x`` to logits ``(B, S)``, built alike but initialised differently.
    train_ds : iterable of ``(x, targets)``
        One iteration is one epoch (``rfcxlib.features.pipeline.train_dataset``).
    epochs : int
    tau, t_k : float, int
        The keep-rate schedule :func:`keep_rate` over the unknown cells.
    learning_rate : float or keras LearningRateSchedule
        For each model's Adam optimiser.
    on_epoch_end : callable ``(epoch, logs) -> dict``, optional
        Called after each epoch (e.g. validation); the dict it returns is merged into ``logs``.

    Returns
    -------
    list of dict, one per epoch: ``epoch``, ``keep_rate``, ``loss_a``, ``loss_b``,
    ``kept_unknown`` (fraction of unknown cells model A learnt from) and ``on_epoch_end``'s values.
    """
    objective = coteaching_objective(tau=tau, t_k=t_k)
    if epochs < 1:
        raise ParameterError(f"parameter 'epochs' = {epochs!r}: expected an integer >= 1")
    optimizers = [steps.make_optimizer(learning_rate, m) for m in (model_a, model_b)]
    step = steps.make_step([model_a, model_b], optimizers, objective)
    history = []
    for epoch in range(epochs):
        rate = objective.value(epoch)
        batches = tqdm(train_ds, desc=f"co-teaching epoch {epoch + 1}/{epochs}", leave=False, disable=not progress)
        logs = {"epoch": epoch, "keep_rate": rate, **steps.run_epoch(step, batches, rate)}
        if on_epoch_end is not None:
            logs.update(on_epoch_end(epoch, logs) or {})
        history.append(logs)
    return history


# --------------------------------------------------------------------------- over the folds
def train_coteaching(dataset, config: RunConfig, model_dir, *, tau: float = 0.1, t_k: Optional[int] = None,
                     build_fn: Optional[Callable] = None, progress: bool = True) -> dict:
    """Co-teach two models per fold and score model A: :func:`rfcxlib.training.train.train_model` with
    the objective :func:`coteaching_objective` (the same loop, folds, checkpoints,
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
                             objective=coteaching_objective(tau=tau, t_k=t_k),
                             extra={"method": "coteaching", "tau": tau, "t_k": t_k})
