"""One training step for every ``tf.distribute`` strategy, and what it minimises.

:func:`make_step` builds the step that :func:`rfcxlib.training.train.fit_fold` (every loss of
:mod:`rfcxlib.training.losses`, the SED loss included), :func:`rfcxlib.noisy.coteaching.coteach_fit`
(two networks) and :func:`rfcxlib.embeddings.head_fit.fit_head` (an embedding head) run:
``strategy.run`` of one replica's step, whose loss is its share of the global batch's mean (the
sum of its per-example losses over the global batch size), so the gradients the optimizers sum
over replicas are those one device computes on the whole batch. An :class:`Objective` says what
the networks minimise.

Tests: tests/test_train.py
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import keras
import tensorflow as tf

from rfcxlib.training import losses
from rfcxlib.errors import ParameterError


def make_optimizer(learning_rate, model: keras.Model) -> keras.optimizers.Optimizer:
    """Adam (loss-scaled under the ``mixed_float16`` policy), built for ``model``'s weights; call it
    inside the strategy's scope."""
    optimizer = keras.optimizers.Adam(learning_rate)
    if keras.mixed_precision.global_policy().name == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


@dataclass(frozen=True)
class Objective:
    """What one training step minimises: ``len(names)`` networks trained side by side on the
    same batches, one loss each.

    Attributes
    ----------
    name : str
        The loss name recorded in the fold fingerprints.
    per_example : callable ``(targets, logits, value) -> (losses, logs)``
        On one replica's share of a batch: ``logits`` holds each network's output, ``losses``
        each network's per-example loss ``(B,)``, ``logs`` further scalars (summed over
        replicas: divide by ``num_replicas_in_sync`` for a mean).
    names : tuple of str
        Each network's loss in the history; the ``loss`` column is the first one's.
    value : callable ``epoch -> float``, optional
        A scalar handed to every step of an epoch (co-teaching's keep rate), logged as ``value_name``.
    frames : bool
        Train the clip + frame view (:func:`rfcxlib.models.frame_trainer`) of each network.
    valid_loss : callable
        The loss reported on the validation crops (the first network's clip logits).
    """
    name: str
    per_example: Callable
    names: tuple = ("loss",)
    value: Optional[Callable] = None
    value_name: str = ""
    frames: bool = False
    valid_loss: Callable = losses.masked_bce


def loss_objective(name: str, loss_fn=None) -> Objective:
    """One network trained with the loss ``name`` (``loss_fn``, default the registered one)."""
    loss_fn = loss_fn or losses.get_loss(name)
    frames = losses.is_frame_loss(loss_fn)
    return Objective(name=name, per_example=lambda targets, logits, _: ([loss_fn(targets, logits[0])], {}),
                     frames=frames, valid_loss=losses.masked_bce if frames else loss_fn)


def make_step(trainers, optimizers, objective: Objective, *, strategy=None,
              global_batch: Optional[int] = None, xla: bool = False):
    """The training step ``step(x, targets, value) -> {name: scalar}`` of ``objective``.

    Each replica's loss is the sum of its per-example losses over ``global_batch`` (default: its
    share times the number of replicas), so the gradients the optimizers sum over replicas are
    those of the global batch's mean. ``x`` and ``targets`` are one batch of a dataset
    distributed by ``strategy`` (default: the current one); ``xla`` compiles each replica's step.
    """
    strategy = strategy or tf.distribute.get_strategy()

    def replica_step(x, targets, value):
        with tf.GradientTape(persistent=len(trainers) > 1) as tape:
            per_example, logs = objective.per_example(targets, [m(x, training=True) for m in trainers], value)
            totals = [tf.nn.compute_average_loss(loss, global_batch_size=global_batch) +
                      (tf.nn.scale_regularization_loss(tf.add_n(m.losses)) if m.losses else 0.0)
                      for loss, m in zip(per_example, trainers)]
            scaled = [opt.scale_loss(total) for opt, total in zip(optimizers, totals)]
        for model, opt, loss in zip(trainers, optimizers, scaled):
            opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        del tape
        return {**dict(zip(objective.names, totals)), **logs}

    replica = tf.function(replica_step, jit_compile=True) if xla else replica_step

    @tf.function
    def step(x, targets, value):
        out = strategy.run(replica, args=(x, targets, value))
        return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in out.items()}

    return step


def run_epoch(step, batches, value: float = 0.0) -> dict:
    """Every batch of ``batches`` through ``step``; the mean of each logged scalar. The scalars
    are read once the epoch is over, so no step waits for the one before it to be read back (on a
    GPU, the host keeps queueing steps)."""
    logged, value = [], tf.constant(value, tf.float32)
    for x, targets in batches:
        logged.append(step(x, targets, value))
    if not logged:
        raise ParameterError("the training data yielded no batch: expected at least one (x, targets) batch")
    return {name: sum(float(out[name]) for out in logged) / len(logged) for name in logged[0]}


def distributed(strategy, batches: tf.data.Dataset):
    """``batches`` split over the replicas; every worker draws the same global batches (the
    crops are seeded) and keeps its share."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(batches.with_options(options))
