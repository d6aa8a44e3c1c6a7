"""Losses on the partial-label targets ``(y, mask)`` (the targets of docs/ARCHITECTURE.md).

Targets travel through Keras as one tensor ``targets`` of shape ``(batch, 2 * num_species)``:
the first half is ``y`` (1 present, 0 absent), the second half ``mask`` (1 where the label is
known, 0 where it is unknown). :func:`split_targets` takes them apart; every loss here accepts
that packed form, and ``y_pred`` holds logits of shape ``(batch, num_species)``.
"""
from __future__ import annotations

import tensorflow as tf

from rfcxlib.errors import ParameterError, unknown_choice


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


LSOFT_BETA = 0.7  # the 22nd-place solution's beta


def _soft_targets(y, logits, beta: float):
    """``beta * y + (1 - beta) * sigmoid(logits)``, the prediction stopped from the gradient."""
    y_hat = tf.stop_gradient(tf.sigmoid(tf.cast(logits, tf.float32)))
    return beta * y + (1.0 - beta) * y_hat


def _check_beta(beta: float) -> float:
    if not 0.0 <= float(beta) <= 1.0:
        raise ParameterError(f"parameter 'beta' = {beta!r}: expected a weight in [0, 1]")
    return float(beta)


def make_lsoft_tp(beta: float = LSOFT_BETA):
    """Lsoft on TP examples only: the ``lsoft_tp`` loss with another ``beta``.

    Every cell of an example that carries at least one TP label gets soft bootstrapping,
    ``BCE(beta * y + (1 - beta) * sg(sigmoid(z)), z)`` with unknown labels read as 0 (the seed
    trained on TP crops only, where the other species are noisy zeros). Examples without a TP
    label (FP-only crops) add nothing. Per example: mean over species.
    """
    beta = _check_beta(beta)

    def lsoft_tp(targets, logits):
        y, mask = split_targets(targets)
        has_tp = tf.cast(tf.reduce_max(y * mask, axis=-1) > 0.5, tf.float32)
        cells = _bce_cells(_soft_targets(y, logits, beta), logits)
        return tf.reduce_mean(cells, axis=-1) * has_tp

    return lsoft_tp


def make_lsoft_unknown(beta: float = LSOFT_BETA):
    """BCE on the known cells, Lsoft on the unknown ones: the ``lsoft_unknown`` loss with another ``beta``.

    Known cells (TP = 1, FP = 0) keep plain BCE; an unknown cell's target is
    ``(1 - beta) * sg(sigmoid(z))`` (its label read as 0, softened by the model's own belief), so
    an unlabelled species that the model hears is pushed down ``beta`` times as hard as under
    naive BCE. Per example: the sum over cells divided by the number of species (as
    :func:`masked_bce`), so with every cell known this is plain mean BCE.
    """
    beta = _check_beta(beta)

    def lsoft_unknown(targets, logits):
        y, mask = split_targets(targets)
        known = _bce_cells(y, logits) * mask
        unknown = _bce_cells(_soft_targets(y * mask, logits, beta), logits) * (1.0 - mask)
        return tf.reduce_sum(known + unknown, axis=-1) / tf.cast(tf.shape(y)[-1], tf.float32)

    return lsoft_unknown


lsoft_tp = make_lsoft_tp()
lsoft_unknown = make_lsoft_unknown()


def bce_cells(targets, logits):
    """Per-cell BCE ``(batch, num_species)`` with unknown labels read as 0 (for sample selection)."""
    y, mask = split_targets(targets)
    return _bce_cells(y * mask, logits)


SED_FRAME_WEIGHT = 0.5


def make_sed_loss(frame_weight: float = SED_FRAME_WEIGHT):
    """The SED combination: masked BCE on the clip logits plus ``frame_weight`` times masked BCE
    on the frame logits, each frame labelled by the TP/FP boxes that overlap it.

    Targets ``(batch, 1 + F, 2 * S)`` and logits ``(batch, 1 + F, S)``: row 0 is the clip, rows
    1..F the frames of the SED head (``rfcxlib.features.pipeline.train_dataset(frames=F)`` and
    ``rfcxlib.models.frame_trainer`` give both). A frame cell is known only where a box of that
    species overlaps the frame: TP boxes give 1, FP boxes 0; every other frame cell adds nothing.
    Per example: the clip term as :func:`masked_bce`, the frame term its mean over frames.
    """
    if not float(frame_weight) >= 0.0:
        raise ParameterError(f"parameter 'frame_weight' = {frame_weight!r}: expected a weight >= 0")
    weight = float(frame_weight)

    def sed(targets, logits):
        targets = tf.cast(targets, tf.float32)
        clip = masked_bce(targets[:, 0], logits[:, 0])
        y, mask = split_targets(targets[:, 1:])
        cells = _bce_cells(y, logits[:, 1:]) * mask
        frames = tf.reduce_mean(tf.reduce_sum(cells, axis=-1), axis=-1) / tf.cast(tf.shape(y)[-1], tf.float32)
        return clip + weight * frames

    sed.frame_level = True  # trains on frame targets: see rfcxlib.training.train.fit_fold
    return sed


sed = make_sed_loss()

# clip-level losses: targets (batch, 2 * S), logits (batch, S)
LOSSES = {
    "naive_bce": naive_bce,
    "masked_bce": masked_bce,
    "lsoft_tp": lsoft_tp,
    "lsoft_unknown": lsoft_unknown,
}
# losses that also train the SED head's frame logits (head="sed")
FRAME_LOSSES = {"sed": sed}


def is_frame_loss(loss_fn) -> bool:
    """Whether ``loss_fn`` takes clip + frame targets (:func:`make_sed_loss`)."""
    return bool(getattr(loss_fn, "frame_level", False))


def get_loss(name: str):
    """The loss function registered under ``name`` (clip losses and ``"sed"``)."""
    known = {**LOSSES, **FRAME_LOSSES}
    if name not in known:
        raise unknown_choice("loss", name, known)
    return known[name]
