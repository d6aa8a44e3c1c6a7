"""Background mix: another training crop of the batch added under each crop's waveform, so a
model learns to find its calls over soundscapes other than their own (recordings from a new site).

With probability ``AugmentConfig.p_background_mix`` per crop, the batch's waveforms rolled by a
random ``k`` in ``[1, B)`` (crop ``i`` gets crop ``(i + k) mod B``, another crop of another row)
are added at an SNR drawn uniformly from ``background_snr_db`` ``[low, high]`` dB (the crop's
power over the added crop's). It runs on the raw waveforms, before the waveform augmentations and
the log-mel (:func:`rfcxlib.features.pipeline.train_dataset`), on training batches only: validation crops
and test windows never see it. Every draw comes from a stateless seed, so a seed repeats it.

Labels. The crop's own ``[y | mask]`` stays, and the added crop's known positives are *not*
added: at 0-10 dB below the crop, and often in another band, those calls are a background to
ignore, not a target the loss should insist on (its weak calls may also be masked by the crop's
own sound). One cell changes: where the crop says a species is absent (known 0) and the added crop
says it is present (known 1), the cell becomes unknown (mask 0), since a call of that species was
just mixed in and "absent" may no longer be true. Every other cell, and every unmixed crop, keeps
its target exactly.
"""
from __future__ import annotations

from typing import Optional

import tensorflow as tf

from rfcxlib.features.augment import as_seed
from rfcxlib.config import AugmentConfig
from rfcxlib.errors import ParameterError
from rfcxlib.training.losses import pack_targets, split_targets


def _clip_rows(targets):
    """The clip targets ``(B, 1, 2S)`` of frame targets ``(B, 1 + F, 2S)``; clip targets as they are."""
    return targets[:, :1] if targets.shape.rank == 3 else targets


def _unknown_conflicts(targets, background, apply):
    """Targets with the cells known 0 in ``targets`` and known 1 in ``background`` (clip rows)
    set unknown, for the examples where ``apply`` ``(B,)`` is true."""
    y, mask = split_targets(targets)
    y_bg, m_bg = split_targets(_clip_rows(background))
    conflict = mask * (1.0 - y) * m_bg * y_bg
    on = tf.reshape(tf.cast(apply, tf.float32), tf.concat([[-1], tf.ones([tf.rank(y) - 1], tf.int32)], 0))
    return pack_targets(y, mask * (1.0 - conflict * on))


def background_mix(y, targets, *, seed, config: Optional[AugmentConfig] = None, return_applied: bool = False):
    """Add another crop of the batch to each crop with probability ``p_background_mix``.

    Parameters
    ----------
    y : tf.Tensor [shape=(B, n)]
        The batch's waveforms, float32.
    targets : tf.Tensor [shape=(B, 2 * S) or (B, 1 + F, 2 * S)]
        Packed ``[y | mask]`` (clip, or clip and frames).
    seed : int or tf.Tensor [shape=(2,)]
        Stateless seed: the roll ``k``, which crops are mixed and their SNRs.

    Returns
    -------
    y, targets (and the applied flags ``(B,)`` with ``return_applied``). A batch of one, or
    ``augment=False`` / ``p_background_mix=0``, is returned unchanged.
    """
    c = config or AugmentConfig()
    y = tf.convert_to_tensor(y, tf.float32)
    targets = tf.convert_to_tensor(targets, tf.float32)
    if y.shape.rank != 2:
        raise ParameterError(f"y has shape {y.shape}: expected a batch of waveforms (B, n)")
    n = tf.shape(y)[0]
    if not c.augment or c.p_background_mix <= 0.0:
        return (y, targets, tf.zeros([n], tf.bool)) if return_applied else (y, targets)
    s_roll, s_apply, s_snr = tf.unstack(tf.random.experimental.stateless_split(as_seed(seed), 3))
    k = tf.random.stateless_uniform((), seed=s_roll, minval=1, maxval=tf.maximum(n, 2), dtype=tf.int32)
    background = tf.roll(y, k, axis=0)
    apply = (tf.random.stateless_uniform([n], seed=s_apply) < c.p_background_mix) & (n > 1)
    low, high = c.background_snr_db
    snr_db = tf.random.stateless_uniform([n], seed=s_snr, minval=low, maxval=high + 1e-6)
    power = tf.reduce_mean(tf.square(y), axis=-1) + 1e-10
    power_bg = tf.reduce_mean(tf.square(background), axis=-1) + 1e-10
    scale = tf.sqrt(power / (power_bg * tf.pow(10.0, snr_db / 10.0)))
    y_mix = y + tf.where(apply, scale, 0.0)[:, None] * background
    t_mix = _unknown_conflicts(targets, tf.roll(targets, k, axis=0), apply)
    return (y_mix, t_mix, apply) if return_applied else (y_mix, t_mix)
