"""Models: a backbone from :data:`BACKBONES`, an attention arrangement and a head; logits out.

>>> model = build_model(RunConfig(), input_shape=(64, 128, 1))   # doctest: +SKIP
"""
from __future__ import annotations

import keras
from keras import layers

from rfcxlib import NUM_SPECIES
from rfcxlib.errors import ParameterError, unknown_choice
from rfcxlib.models.attention import ARRANGEMENTS, CBAM, ChannelAttention, SpatialAttention  # noqa: F401
from rfcxlib.models.backbones import BACKBONES, build_backbone  # noqa: F401
from rfcxlib.models.heads import HEAD_BUILDERS, HEADS, AttentionPool  # noqa: F401


def build_model(config, input_shape, *, num_classes: int = NUM_SPECIES) -> keras.Model:
    """The model of ``config.model`` for images ``input_shape`` ``(H, W, C)``: logits ``(B, classes)``."""
    m = config.model
    if m.head not in HEAD_BUILDERS:
        raise unknown_choice("head", m.head, HEAD_BUILDERS)
    if m.attention not in ARRANGEMENTS:
        raise unknown_choice("attention", m.attention, ARRANGEMENTS)
    backbone = build_backbone(m.backbone, tuple(input_shape), weights=m.weights, freeze_to=m.freeze_to)
    logits = HEAD_BUILDERS[m.head](backbone.output, num_classes=num_classes, arrangement=m.attention,
                                   dropout=m.dropout, base_units=m.base_units)
    return keras.Model(backbone.input, logits, name=f"{m.backbone}_{m.attention}_{m.head}")


def frame_model(model: keras.Model) -> keras.Model:
    """For an SED model: a model giving frame logits ``(B, frames, classes)``."""
    return keras.Model(model.input, model.get_layer("frame_logits").output)


def frame_trainer(model: keras.Model) -> keras.Model:
    """For an SED model: the training view of the SED loss, ``(B, 1 + frames, classes)`` logits
    (row 0 the clip logits, then the frame logits), sharing every weight with ``model``."""
    try:
        frames = model.get_layer("frame_logits").output
    except ValueError:
        raise ParameterError(f"model {model.name!r} has no 'frame_logits' layer: the SED loss "
                             "needs the SED head (head='sed')") from None
    clip = layers.Reshape((1, model.output.shape[-1]), name="clip_row")(model.output)
    both = layers.Concatenate(axis=1, name="clip_and_frames")([clip, frames])
    return keras.Model(model.input, both, name=f"{model.name}_frames")


def load_model(path) -> keras.Model:
    """Reload a model saved with ``model.save(path)`` (``.keras``)."""
    import rfcxlib.models.attention  # noqa: F401  (registers the custom layers)

    return keras.saving.load_model(path, compile=False, safe_mode=False)
