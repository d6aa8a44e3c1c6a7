"""CBAM attention (channel + spatial) in the three arrangements the notebooks compare.

Images are ``(batch, H, W, C)`` with ``H`` the mel (frequency) axis and ``W`` the time axis.

- ``cbam``: the paper's sequential order, ``x = ca(x) * x; x = sa(x) * x``.
- ``time``: channel attention, then spatial attention taken along the time axis only: the
  channel-pooled map is also averaged over frequency, a 1-D convolution (kernel 7) scores each
  time step, and the weights ``(batch, 1, W, 1)`` multiply every frequency row.
- ``parallel``: both attentions computed from the same input, ``out = ca(x) * x; out = sa(x) * out``.
- ``parallel_time`` (the seed's final block, 0.858 -> 0.891 private LWLRAP): both tweaks at once,
  the time-axis spatial attention of ``time`` computed in parallel with channel attention,
  ``out = ca(x) * x; out = sa_time(x) * out``.
"""
from __future__ import annotations

import keras
from keras import layers, ops

from rfcxlib.config import ATTENTIONS
from rfcxlib.errors import unknown_choice

ARRANGEMENTS = ATTENTIONS  # "cbam", "time", "parallel", "parallel_time", "none"
PARALLEL = ("parallel", "parallel_time")
TIME_AXIS = ("time", "parallel_time")


@keras.saving.register_keras_serializable(package="rfcx")
class ChannelAttention(layers.Layer):
    """Shared MLP over average- and max-pooled channel descriptors: weights ``(batch, 1, 1, C)``."""

    def __init__(self, reduction: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.reduction = reduction

    def build(self, input_shape):
        channels = int(input_shape[-1])
        hidden = max(1, channels // self.reduction)
        self.hidden = layers.Dense(hidden, activation="relu", name="mlp_hidden")
        self.out = layers.Dense(channels, name="mlp_out")
        self.hidden.build((None, channels))
        self.out.build((None, hidden))

    def call(self, x):
        avg = self.out(self.hidden(ops.mean(x, axis=(1, 2))))
        mx = self.out(self.hidden(ops.max(x, axis=(1, 2))))
        return ops.sigmoid(avg + mx)[:, None, None, :]

    def get_config(self):
        return {**super().get_config(), "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="rfcx")
class SpatialAttention(layers.Layer):
    """A ``kernel_size`` convolution over the channel-pooled (mean, max) maps.

    ``axis="2d"``: weights ``(batch, H, W, 1)``; ``axis="time"``: the pooled maps are averaged over
    frequency first and a 1-D convolution gives weights ``(batch, 1, W, 1)``.
    """

    def __init__(self, kernel_size: int = 7, axis: str = "2d", **kwargs):
        super().__init__(**kwargs)
        if axis not in ("2d", "time"):
            raise unknown_choice("spatial attention axis", axis, ("2d", "time"))
        self.kernel_size, self.axis = kernel_size, axis

    def build(self, input_shape):
        if self.axis == "2d":
            self.conv = layers.Conv2D(1, self.kernel_size, padding="same", name="conv")
            self.conv.build((None, None, None, 2))
        else:
            self.conv = layers.Conv1D(1, self.kernel_size, padding="same", name="conv")
            self.conv.build((None, None, 2))

    def call(self, x):
        pooled = ops.concatenate([ops.mean(x, axis=-1, keepdims=True),
                                  ops.max(x, axis=-1, keepdims=True)], axis=-1)  # (B, H, W, 2)
        if self.axis == "2d":
            return ops.sigmoid(self.conv(pooled))
        per_time = ops.mean(pooled, axis=1)  # (B, W, 2)
        return ops.sigmoid(self.conv(per_time))[:, None, :, :]

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size, "axis": self.axis}


@keras.saving.register_keras_serializable(package="rfcx")
class CBAM(layers.Layer):
    """Channel and spatial attention in one of :data:`ARRANGEMENTS`."""

    def __init__(self, arrangement: str = "cbam", reduction: int = 8, kernel_size: int = 7, **kwargs):
        super().__init__(**kwargs)
        if arrangement not in ARRANGEMENTS or arrangement == "none":
            raise unknown_choice("attention arrangement", arrangement,
                                 [a for a in ARRANGEMENTS if a != "none"])
        self.arrangement, self.reduction, self.kernel_size = arrangement, reduction, kernel_size
        self.ca = ChannelAttention(reduction, name="channel")
        self.sa = SpatialAttention(kernel_size, axis="time" if arrangement in TIME_AXIS else "2d",
                                   name="spatial")

    def build(self, input_shape):
        self.ca.build(input_shape)
        self.sa.build(input_shape)

    def call(self, x):
        if self.arrangement in PARALLEL:
            return self.sa(x) * (self.ca(x) * x)
        out = self.ca(x) * x
        return self.sa(out) * out

    def get_config(self):
        return {**super().get_config(), "arrangement": self.arrangement,
                "reduction": self.reduction, "kernel_size": self.kernel_size}


def attention(x, arrangement: str, name: str = "cbam"):
    """Apply the chosen arrangement to a feature map (``"none"`` returns it unchanged)."""
    if arrangement == "none":
        return x
    if arrangement not in ARRANGEMENTS:
        raise unknown_choice("attention", arrangement, ARRANGEMENTS)
    return CBAM(arrangement, name=name)(x)
