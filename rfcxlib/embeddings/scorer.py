"""The window scorer of the ``birdnet`` family, as :data:`rfcxlib.inference.scorers.SCORERS` names it
(``"rfcxlib.embeddings.scorer:build_scorer"``, resolved on first use): an embedding-head model folder
▶ a :class:`rfcxlib.inference.scorers.WindowScorer` for ``rfcx predict`` and ``rfcx export``.

Tests: tests/test_predict.py
"""
from __future__ import annotations

import numpy as np

from rfcxlib.embeddings import birdnet
from rfcxlib.embeddings.head_folds import load_heads
from rfcxlib.errors import DataError
from rfcxlib.inference.scorers import WindowScorer


def build_scorer(model_dir, config: dict, name: str) -> WindowScorer:
    """The :class:`rfcxlib.inference.scorers.WindowScorer` of an embedding-head model folder
    (``config``: its ``config.json``): raw 3 s windows at 48 kHz ▶ BirdNET V2.4 embedding
    (``embed``, shared by the heads on the same embedder; CC BY-NC-SA 4.0) ▶ every trained fold's
    head's logits ``(n, folds, 24)`` (``head``)."""
    head, heads = load_heads(model_dir, config)
    if head.recording_norm:
        raise DataError(f"{model_dir}: this head was trained with recording_norm (each recording's mean "
                        "embedding subtracted), which window-by-window scoring (rfcx predict, rfcx export) cannot "
                        "apply; train it with head_recording_norm = False to score field recordings")
    embedder = birdnet.EmbeddingModel(head.embedder)

    def embed(y: np.ndarray) -> np.ndarray:
        x = embedder.embed(np.asarray(y, np.float32))
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)  # silent padding windows

    def fold_logits(x: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(h(x, training=False), np.float32) for h in heads], axis=1)

    e = embedder.embedder
    return WindowScorer(name=name, family="birdnet", window_s=e.window_s, sr=e.sr, hop_s=head.embed_hop_s,
                        embedder=head.embedder, embed=embed, head=fold_logits)
