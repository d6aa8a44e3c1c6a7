"""Trained models as functions of raw audio windows, one builder per model family.

``rfcx predict`` scores field recordings through a :class:`WindowScorer` per model. A model
folder's ``config.json`` backbone picks its builder in :data:`SCORERS`
(``backbone -> builder(model_dir, config, name)``); a backbone of :data:`rfcxlib.models.BACKBONES`
without an entry of its own uses :func:`build_cnn_scorer`. A registry entry is the builder itself or
its name, ``"package.module:function"``, imported on first use (:func:`scorer_builder`): a family
registers itself with one line, e.g. ``SCORERS["birdnet"] = "rfcxlib.embeddings.scorer:build_scorer"``,
and nothing here imports the families. The builder returns a ``WindowScorer`` whose ``logits`` maps
``(n, round(window_s * sr))`` windows to ``(n, 24)`` logits.

Tests: tests/test_predict.py
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np

from rfcxlib.errors import DataError, ParameterError, unknown_choice
from rfcxlib.features import bands
from rfcxlib.layout import CONFIG_FILE


@dataclass
class WindowScorer:
    """One trained model as a function of raw windows.

    ``logits(y)``: ``y`` float32 ``(n, round(window_s * sr))`` at ``sr`` Hz ▶ logits ``(n, 24)``,
    or ``(n, folds, 24)``, one slice per trained fold: a clip's score is then the folds' mean of
    their maxima over windows, as the model's ``test_scores.npz`` (:mod:`rfcxlib.inference.member_windows`).

    A model on a shared embedding gives it in two stages instead: ``embed(y)`` ▶ embeddings
    ``(n, dim)`` and ``head(x)`` ▶ its logits, with ``embedder`` naming the embedding. ``logits``
    is then ``head(embed(y))``, and :class:`rfcxlib.inference.predict.Predictor` embeds each window
    once for every model with the same ``embedder`` and window length.
    """

    name: str
    family: str
    window_s: float
    sr: int
    logits: Optional[Callable[[np.ndarray], np.ndarray]] = None
    hop_s: float = 3.0  # the hop its configuration uses for whole recordings
    embedder: Optional[str] = None
    embed: Optional[Callable[[np.ndarray], np.ndarray]] = None
    head: Optional[Callable[[np.ndarray], np.ndarray]] = None

    def __post_init__(self):
        staged = (self.embedder is not None, self.embed is not None, self.head is not None)
        if any(staged) and not all(staged):
            raise ParameterError(f"window scorer {self.name!r}: embedder, embed and head go together "
                                 f"(given: embedder={staged[0]}, embed={staged[1]}, head={staged[2]})")
        if self.logits is None and self.embed is None:
            raise ParameterError(f"window scorer {self.name!r}: expected logits, or embedder, embed and head")
        if self.logits is None:
            embed, head = self.embed, self.head
            self.logits = lambda y: head(embed(y))


def load_cnn_models(model_dir, config: dict):
    """``(RunConfig, [keras.Model, ...])``: every trained fold of a CNN model folder (the weights
    ``checkpoint`` keeps), else its ``model.keras``."""
    from rfcxlib.training import train
    from rfcxlib.config import SECTIONS, RunConfig
    from rfcxlib.models import load_model

    model_dir = Path(model_dir)
    cfg = RunConfig.from_dict({k: v for k, v in config.items() if k in SECTIONS})
    nets = []
    for fold in cfg.train.train_folds:
        if (model_dir / f"fold{fold}" / f"{cfg.train.checkpoint}.weights.h5").is_file():
            nets.append(train.load_fold_model(model_dir, cfg, fold))
    if not nets and (model_dir / "model.keras").is_file():
        nets = [load_model(model_dir / "model.keras")]
    if not nets:
        raise DataError(f"{model_dir}: no trained weights (fold<k>/{cfg.train.checkpoint}.weights.h5 "
                        f"or model.keras): expected a folder written by rfcxlib.training.train.train_model")
    return cfg, nets


def band_masks(model_dir, cfg):
    """``(24, H)`` rows kept per species when ``cfg`` scores with ``band_mode``
    (:func:`rfcxlib.inference.windows.band_logits`), from the model folder's ``bands.json``; else None."""
    from rfcxlib.features import pipeline

    if not cfg.inference.band_mode:
        return None
    path = bands.bands_file(model_dir)
    if path is None:
        raise DataError(f"{Path(model_dir) / bands.BANDS_FILE}: missing; the model scores each species "
                        "on its frequency band (band_mode) and this file holds the bands: train it "
                        "again with this version, or set band_mode false in its config.json")
    return pipeline.masks_of_bands(bands.read_bands(path), cfg)


def model_logits(nets, masks=None, *, per_fold: bool = False, freq_channel: bool = False):
    """Images ``(n, H, W, C)`` ▶ the mean logits of ``nets`` ``(n, 24)`` (``per_fold``: each net's,
    ``(n, folds, 24)``), each species on its own band when ``masks`` are given (:func:`band_masks`;
    ``freq_channel``: the images' last channel, the frequency channel, is never masked)."""
    import tensorflow as tf

    from rfcxlib.inference import windows as inference

    def run(x):
        if masks is None:
            z = [net(x, training=False) for net in nets]
        else:
            z = [inference.band_logits(net, x, masks, freq_channel=freq_channel) for net in nets]
        return tf.stack(z, axis=1) if per_fold else tf.add_n(z) / float(len(nets))

    return run


def cnn_graph(cfg, nets, masks=None, *, per_fold: bool = False):
    """Raw windows ``(n, samples)`` ▶ mean logits of ``nets`` ``(n, 24)`` (``per_fold``:
    ``(n, folds, 24)``) on the log-mel image of ``cfg`` (:mod:`rfcxlib.features.logmel`), as one function
    of TensorFlow ops; with ``masks``, each species scored on its band (``band_mode``)."""
    import tensorflow as tf

    from rfcxlib.features import logmel as features

    sr, fc = cfg.audio.sr, cfg.features
    logits = model_logits(nets, masks, per_fold=per_fold, freq_channel=fc.freq_channel)

    def run(y):
        frames = features.num_frames(int(y.shape[-1]), config=fc)
        S = tf.ensure_shape(features.log_mel(y, sr=sr, config=fc), [None, frames, fc.n_mels])
        return logits(features.to_image(S, config=fc))

    return run


def build_cnn_scorer(model_dir: Path, config: dict, name: str) -> WindowScorer:
    """A CNN of :mod:`rfcxlib.models`: the logits of every trained fold ``(n, folds, 24)`` (their
    maxima averaged make ``test_scores``), on the log-mel image of its configuration."""
    import tensorflow as tf

    cfg, nets = load_cnn_models(model_dir, config)
    n = int(round(cfg.audio.crop_s * cfg.audio.sr))
    run = tf.function(cnn_graph(cfg, nets, band_masks(model_dir, cfg), per_fold=True),
                      input_signature=[tf.TensorSpec([None, n], tf.float32)])
    return WindowScorer(name=name, family="cnn", window_s=cfg.audio.crop_s, sr=cfg.audio.sr,
                        hop_s=cfg.inference.hop_s,
                        logits=lambda y: np.asarray(run(tf.constant(y, tf.float32)), np.float32))


Builder = Callable[[Path, dict, str], WindowScorer]
SCORERS: dict[str, Union[Builder, str]] = {"birdnet": "rfcxlib.embeddings.scorer:build_scorer"}


def _backbone(config: dict):
    return (config.get("model") or {}).get("backbone") or config.get("backbone")


def scorer_builder(backbone: str) -> Builder:
    """The builder :data:`SCORERS` registers for ``backbone``, importing it when given by name."""
    entry = SCORERS[backbone]
    if not isinstance(entry, str):
        return entry
    module, _, attribute = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as exc:
        raise ParameterError(f"SCORERS[{backbone!r}] = {entry!r}: cannot import it ({exc}); expected "
                             "'package.module:function' naming a window-scorer builder") from None


def has_scorer(config: dict) -> bool:
    """Whether a model folder's configuration names a family :func:`build_scorer` can build."""
    from rfcxlib.models import BACKBONES

    return _backbone(config) in SCORERS or _backbone(config) in BACKBONES


def build_scorer(model_dir: Path, config: dict, name: str) -> WindowScorer:
    """The :class:`WindowScorer` of a model folder, chosen by its configuration's backbone."""
    backbone = _backbone(config)
    if backbone in SCORERS:
        return scorer_builder(backbone)(model_dir, config, name)
    from rfcxlib.models import BACKBONES

    if backbone in BACKBONES:
        return build_cnn_scorer(model_dir, config, name)
    raise unknown_choice(f"backbone in {model_dir / CONFIG_FILE}: no window scorer for",
                         backbone, sorted(set(SCORERS) | set(BACKBONES)))
