"""Heads on top of a backbone feature map ``(B, H', W', C)``; every head ends in logits ``(B, 24)``.

- ``attention_v1``: backbone ▶ BN ▶ attention ▶ GAP ▶ dropout ▶ dense(24).
- ``attention_v2`` (the seed's model): backbone ▶ BN ▶ conv block 256 ▶ conv block 512 ▶ attention
  ▶ GAP ▶ dropout ▶ dense(2·base, PReLU) ▶ BN ▶ dropout ▶ dense(24).
- ``sed`` (sound event detection): the map is averaged over frequency, a per-frame layer gives
  frame logits ``(B, W', 24)`` (layer ``frame_logits``) and attention weights (softmax over time);
  the clip logits are the attention-weighted sum of frame logits.

Tests: tests/test_models.py
"""
from __future__ import annotations

import keras
from keras import layers, ops

from rfcxlib.config import HEADS  # noqa: F401  ("attention_v1", "attention_v2", "sed")
from rfcxlib.models.attention import attention
from rfcxlib.models.backbones import BN_MOMENTUM


def conv_block(x, filters: int, name: str):
    """3×3 convolution ▶ batch norm ▶ ReLU."""
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def attention_v1(x, *, num_classes: int, arrangement: str, dropout: float, base_units: int):
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = attention(x, arrangement)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, name="logits")(x)


def attention_v2(x, *, num_classes: int, arrangement: str, dropout: float, base_units: int):
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = conv_block(x, 256, "block256")
    x = conv_block(x, 512, "block512")
    x = attention(x, arrangement)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(dropout, name="dropout1")(x)
    x = layers.Dense(2 * base_units, name="dense")(x)
    x = layers.PReLU(name="prelu")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="dense_bn")(x)
    x = layers.Dropout(dropout, name="dropout2")(x)
    return layers.Dense(num_classes, name="logits")(x)


@keras.saving.register_keras_serializable(package="rfcx")
class FrequencyMean(layers.Layer):
    """``(B, H, W, C)`` -> ``(B, W, C)``: the mean over the frequency axis."""

    def call(self, x):
        return ops.mean(x, axis=1)


@keras.saving.register_keras_serializable(package="rfcx")
class AttentionPool(layers.Layer):
    """Clip logits = Σ_t softmax_t(attention) · frame logits, per class."""

    def call(self, frame_logits, attention_logits):
        weights = ops.softmax(attention_logits, axis=1)
        return ops.sum(weights * frame_logits, axis=1)


def sed(x, *, num_classes: int, arrangement: str, dropout: float, base_units: int):
    x = attention(x, arrangement)
    x = FrequencyMean(name="freq_mean")(x)  # (B, W', C)
    x = layers.Dropout(dropout, name="dropout")(x)
    x = layers.Dense(base_units, activation="relu", name="frame_dense")(x)
    frames = layers.Dense(num_classes, name="frame_logits")(x)
    att = layers.Dense(num_classes, name="frame_attention")(x)
    return AttentionPool(name="logits")(frames, att)


HEAD_BUILDERS = {"attention_v1": attention_v1, "attention_v2": attention_v2, "sed": sed}
