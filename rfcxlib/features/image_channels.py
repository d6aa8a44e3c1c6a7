"""The frequency channel (the RFCx 2nd place's): one more image channel holding each row's mel-bin
index scaled to [0, 1], so that a convolution, which sees the same weights at every row, knows
where in frequency it looks.

``FeatureConfig.freq_channel=True`` makes :func:`rfcxlib.features.logmel.to_image` append it, so every
path that builds an image gets it: training and validation crops, sliding test windows,
``rfcx predict``'s scorers and the ``rfcx export`` graph. The channel is a coordinate, not
content, so nothing that edits the content edits it:

- image augmentations (masks, flips, noise, resize-crop, ...) run on every channel; the pipeline
  then writes the channel back (:func:`restore_freq_channel`): a frequency flip moves the sounds,
  not the coordinates;
- the per-band rows of ``p_band_filter`` and ``band_mode`` zero the other rows of the content
  channels only (:func:`mask_rows`): the band's position stays readable.

Shapes: images ``(..., H, W, C)``, frequency on the vertical axis, row 0 the lowest band
(:mod:`rfcxlib.features.logmel`); with the channel, the last of the ``C = channels + 1`` channels.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import tensorflow as tf

from rfcxlib.errors import ParameterError


def freq_ramp(height: int) -> np.ndarray:
    """Row ``i`` of ``height`` rows -> ``i / (height - 1)`` (0 for one row): ``(height, 1, 1)`` float32."""
    rows = np.arange(int(height), dtype=np.float32)
    return (rows / max(int(height) - 1, 1)).reshape(-1, 1, 1)


def add_freq_channel(x, height: Optional[int] = None) -> tf.Tensor:
    """Images ``(..., H, W, C)`` -> ``(..., H, W, C + 1)``, the last channel :func:`freq_ramp`
    (constant over time); ``height`` is ``H`` where the shape does not say it. Built-in TFLite ops
    only (slice, add, concat)."""
    x = tf.convert_to_tensor(x, tf.float32)
    height = height or x.shape[-3]
    if height is None:
        raise ParameterError(f"x has shape {x.shape}: the frequency channel needs a known height H")
    ramp = tf.constant(freq_ramp(height))
    return tf.concat([x, tf.zeros_like(x[..., :1]) + ramp], axis=-1)


def restore_freq_channel(x) -> tf.Tensor:
    """Images whose last channel is the frequency channel, with that channel written again (after
    augmentations that changed every channel)."""
    x = tf.convert_to_tensor(x, tf.float32)
    return add_freq_channel(x[..., :-1])


def mask_rows(x, keep, *, freq_channel: bool = False) -> tf.Tensor:
    """Zero the image rows outside ``keep``.

    Parameters
    ----------
    x : tf.Tensor [shape=(..., H, W, C)]
    keep : tf.Tensor [shape=(..., H)]
        1 for a row kept, 0 for a row zeroed; broadcast against ``x``'s leading axes.
    freq_channel : bool
        ``x``'s last channel is the frequency channel: it is kept whole.
    """
    x = tf.convert_to_tensor(x, tf.float32)
    keep = tf.convert_to_tensor(keep, tf.float32)[..., :, None, None]  # (..., H, 1, 1)
    if not freq_channel:
        return x * keep
    content = np.ones(x.shape[-1], np.float32)
    content[-1] = 0.0  # 1: a content channel, masked; 0: the frequency channel, kept
    return x * (1.0 - (1.0 - keep) * tf.constant(content))
