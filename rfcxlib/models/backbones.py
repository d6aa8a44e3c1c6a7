"""Backbones by name. Each builder maps an image tensor ``(B, H, W, C)`` to a feature map.

``weights``: ``None`` (random), ``"imagenet"`` (downloaded by Keras; needs the network) or the
path of a weights file (how Kaggle users bring ImageNet weights in as a data set). ImageNet
weights need 3 input channels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import keras
from keras import layers

from rfcxlib.errors import ParameterError, RfcxError, unknown_choice

APPLICATIONS = {
    "densenet121": keras.applications.DenseNet121,
    "densenet169": keras.applications.DenseNet169,
    "densenet201": keras.applications.DenseNet201,
    "resnet50": keras.applications.ResNet50,
    "efficientnetb0": keras.applications.EfficientNetB0,
}
BACKBONES = (*APPLICATIONS, "small_cnn")
BN_MOMENTUM = 0.9  # short CPU runs take few steps: moving statistics must settle quickly


def small_cnn(inputs, *, widths=(16, 32, 64, 128)) -> keras.Model:
    """Four conv ▶ BN ▶ ReLU ▶ max-pool stages (stride 16 overall): quick on a CPU."""
    x = inputs
    for i, filters in enumerate(widths):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"stage{i}_conv")(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"stage{i}_bn")(x)
        x = layers.ReLU(name=f"stage{i}_relu")(x)
        x = layers.MaxPool2D(2, name=f"stage{i}_pool")(x)
    return keras.Model(inputs, x, name="small_cnn")


def _weights_argument(weights: Optional[str], name: str, input_shape) -> Optional[str]:
    if weights is None or weights == "" or weights == "none":
        return None
    if weights != "imagenet":
        path = Path(weights)
        if not path.is_file():
            raise ParameterError(f"weights = {weights!r}: no such file; expected None, 'imagenet' "
                                 f"or the path of a weights file for {name}")
        return str(path)
    if input_shape[-1] != 3:
        raise ParameterError(f"weights='imagenet' with {input_shape[-1]} input channel(s): "
                             f"ImageNet weights need channels=3")
    return "imagenet"


def build_backbone(name: str, input_shape, *, weights: Optional[str] = None,
                   freeze_to: int = 0) -> keras.Model:
    """The backbone ``name`` for images of ``input_shape`` ``(H, W, C)``, without its top."""
    if name not in BACKBONES:
        raise unknown_choice("backbone", name, BACKBONES)
    inputs = keras.Input(input_shape, name="image")
    if name == "small_cnn":
        if weights not in (None, "", "none"):
            raise ParameterError(f"weights = {weights!r}: the small_cnn backbone has no pretrained "
                                 f"weights; expected None")
        model = small_cnn(inputs)
    else:
        arg = _weights_argument(weights, name, input_shape)
        try:
            model = APPLICATIONS[name](include_top=False, weights=arg, input_tensor=inputs)
        except Exception as exc:  # download or file errors surface from deep inside Keras
            where = "downloading ImageNet weights (is the network reachable?)" if arg == "imagenet" \
                else f"loading weights from {arg}"
            raise RfcxError(f"backbone {name!r}: failed while {where}: {type(exc).__name__}: "
                            f"{str(exc)[:300]}. Use weights=None, or a local weights file.") from None
    if freeze_to < 0 or freeze_to > len(model.layers):
        raise ParameterError(f"freeze_to = {freeze_to}: expected 0..{len(model.layers)} "
                             f"(the layers of {name})")
    for layer in model.layers[:freeze_to]:
        layer.trainable = False
    return model
