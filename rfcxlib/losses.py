"""Losses on the partial-label targets of DESIGN.md.

Targets travel through Keras as one tensor ``targets`` of shape ``(batch, 2 * num_species)``:
the first half is ``y`` (1 present, 0 absent), the second half ``mask`` (1 where the label is
known, 0 where it is unknown). :func:`split_targets` takes them apart; every loss here accepts
that packed form, and ``y_pred`` holds logits of shape ``(batch, num_species)``.
"""
from __future__ import annotations

import tensorflow as tf

from rfcxlib.errors import unknown_choice


def pack_targets(y, mask):
    """``(y, mask)`` -> one ``(batch, 2 * num_species)`` float32 tensor."""
    return tf.concat([tf.cast(y, tf.float32), tf.cast(mask, tf.float32)], axis=-1)


def split_targets(targets):
    """One packed target tensor -> ``(y, mask)``."""
    targets = tf.cast(targets, tf.float32)
    y, mask = tf.split(targets, 2, axis=-1)
    return y, mask


def _bce_cells(y, logits):
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=tf.cast(logits, tf.float32))


def naive_bce(targets, logits):
    """BCE that treats every unknown label as absent (the seed's choice; kept as a baseline)."""
    y, _ = split_targets(targets)
    return tf.reduce_mean(_bce_cells(y, logits), axis=-1)


def masked_bce(targets, logits):
    """BCE over the known cells only (TP = 1, FP = 0); unknown cells add nothing.

    Per example: the sum over known cells divided by the number of species, so that with every
    cell known this is exactly plain mean BCE.
    """
    y, mask = split_targets(targets)
    return tf.reduce_sum(_bce_cells(y, logits) * mask, axis=-1) / tf.cast(tf.shape(y)[-1], tf.float32)


LOSSES = {
    "naive_bce": naive_bce,
    "masked_bce": masked_bce,
}


def get_loss(name: str):
    """The loss function registered under ``name``."""
    if name not in LOSSES:
        raise unknown_choice("loss", name, LOSSES)
    return LOSSES[name]
