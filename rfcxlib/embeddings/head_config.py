"""Settings of the embedding heads (the ``birdnet`` model family), checked without TensorFlow.

:class:`HeadConfig` is one head (embedded windows, MLP, training); :class:`SoftPseudoConfig` the
rounds of the ``soft_pseudo`` method (:mod:`rfcxlib.embeddings.head_methods`). Both are frozen and
validated on creation, with errors that name the notebook parameters (``head_*``, ``soft_*``);
:func:`head_from_params` and :func:`soft_from_params` read them from notebook parameters, so that
``rfcx run`` checks a notebook's head before anything runs.

Tests: tests/test_head_methods.py
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from rfcxlib.config import check, check_choice
from rfcxlib.embeddings import birdnet
from rfcxlib.errors import ParameterError

#: how :func:`rfcxlib.embeddings.head_folds.train_head_model` trains a head (notebook 04's ``head_method``)
HEAD_METHODS = ("loss", "coteaching", "pseudo_labels", "soft_pseudo")
#: the losses a head trains with: the clip losses (``"sed"`` needs frame outputs)
HEAD_LOSSES = ("masked_bce", "naive_bce", "lsoft_unknown", "lsoft_tp")


@dataclass(frozen=True)
class HeadConfig:
    """Settings of an embedding head; validated on creation."""

    embedder: str = "birdnet_v24"
    embed_hop_s: float = birdnet.HOP_S  # embedded windows every this many seconds (train and test)
    units: int = 256  # hidden ReLU units (0: a linear head)
    dropout: float = 0.3
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    p_mixup: float = 0.5  # probability of mixup per batch (embeddings, y and mask blended)
    mixup_alpha: float = 0.4
    recording_norm: bool = False  # subtract each recording's mean embedding before standardising

    def __post_init__(self):
        check_choice("embedder", self.embedder, birdnet.EMBEDDERS)
        check(self.embed_hop_s > 0, "embed_hop_s", self.embed_hop_s, "seconds > 0")
        check(isinstance(self.units, int) and self.units >= 0, "head_units", self.units, "an integer >= 0")
        check(0 <= self.dropout < 1, "head_dropout", self.dropout, "a probability in [0, 1)")
        check(isinstance(self.epochs, int) and self.epochs >= 1, "head_epochs", self.epochs, "an integer >= 1")
        check(isinstance(self.batch_size, int) and self.batch_size >= 1, "head_batch_size", self.batch_size,
              "an integer >= 1")
        check(self.learning_rate > 0, "head_learning_rate", self.learning_rate, "a rate > 0")
        check(0 <= self.p_mixup <= 1, "head_p_mixup", self.p_mixup, "a probability in [0, 1]")
        check(self.mixup_alpha > 0, "head_mixup_alpha", self.mixup_alpha, "a value > 0")
        check(isinstance(self.recording_norm, bool), "head_recording_norm", self.recording_norm, "True or False")

    def to_dict(self) -> dict:
        return asdict(self)

    def key(self) -> dict:
        """What a fold's fingerprint records: :meth:`to_dict` without options at the value they had
        before they existed (``recording_norm=False``), so earlier folds stay reusable."""
        return {k: v for k, v in self.to_dict().items() if not (k == "recording_norm" and not v)}

    def scoring_table(self, table: birdnet.WindowTable) -> birdnet.WindowTable:
        """``table`` as the head sees it: centred per recording when ``recording_norm``."""
        return table.centred_by_recording() if self.recording_norm else table


#: notebook parameter ▶ field of :class:`HeadConfig`
HEAD_PARAMETERS = {"embed_hop_s": "embed_hop_s", "head_units": "units", "head_dropout": "dropout",
                   "head_epochs": "epochs", "head_batch_size": "batch_size",
                   "head_learning_rate": "learning_rate", "head_p_mixup": "p_mixup",
                   "head_recording_norm": "recording_norm"}


def head_from_params(params: dict) -> tuple[HeadConfig, str]:
    """``(HeadConfig, method)`` from notebook 04's parameters (``embed_hop_s``, ``head_*``,
    ``head_method``, ``loss``), checked as the notebook will check them."""
    head = HeadConfig(**{field: params[name] for name, field in HEAD_PARAMETERS.items() if name in params})
    method = params.get("head_method", "loss")
    check_choice("head_method", method, HEAD_METHODS)
    check_loss(params.get("loss", "masked_bce"))
    return head, method


def check_loss(loss: str) -> str:
    """``loss`` when a head can train with it; else :class:`rfcxlib.errors.ParameterError`."""
    if loss not in HEAD_LOSSES:
        raise ParameterError(f"loss {loss!r} for an embedding head: expected one of {HEAD_LOSSES} "
                             f"(the 'sed' loss needs frame outputs, which a clip head does not have)")
    return loss


@dataclass(frozen=True)
class SoftPseudoConfig:
    """Settings of soft pseudo-label rounds; validated on creation (errors name notebook 05's
    parameters ``soft_rounds``, ``soft_row_keep``, ``soft_weight``, ``soft_temperature``)."""

    rounds: int = 3  # heads trained after the base, each on the soft targets of the one before
    row_keep: float = 0.5  # probability that a TP/FP row stays a hard label in a round
    soft_weight: float = 1.0  # loss weight of a soft cell (a known cell weighs 1; 0: masked BCE)
    temperature: float = 1.0  # soft target sigmoid(logit / temperature); below 1 sharpens

    def __post_init__(self):
        check(isinstance(self.rounds, (int, np.integer)) and not isinstance(self.rounds, bool)
              and self.rounds >= 1, "soft_rounds", self.rounds, "an integer >= 1")
        check(0 < self.row_keep <= 1, "soft_row_keep", self.row_keep, "a probability in (0, 1]")
        check(math.isfinite(self.soft_weight) and self.soft_weight >= 0, "soft_weight", self.soft_weight,
              "a finite weight >= 0")
        check(math.isfinite(self.temperature) and self.temperature > 0, "soft_temperature", self.temperature,
              "a finite temperature > 0")

    def to_dict(self) -> dict:
        return asdict(self)


#: notebook parameter ▶ field of :class:`SoftPseudoConfig`
SOFT_PARAMETERS = {"soft_rounds": "rounds", "soft_row_keep": "row_keep", "soft_weight": "soft_weight",
                   "soft_temperature": "temperature"}


def soft_from_params(params: dict) -> SoftPseudoConfig:
    """:class:`SoftPseudoConfig` from notebook parameters (``soft_*``); defaults for the others."""
    return SoftPseudoConfig(**{field: params[name] for name, field in SOFT_PARAMETERS.items() if name in params})
