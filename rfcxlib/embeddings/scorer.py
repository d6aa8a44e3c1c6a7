"""The window scorer of the ``birdnet`` family, as :data:`rfcxlib.inference.scorers.SCORERS` names it
(``"rfcxlib.embeddings.scorer:build_scorer"``): a head model folder ▶ a
:class:`rfcxlib.inference.scorers.WindowScorer` (:func:`rfcxlib.embeddings.heads.build_window_scorer`).

Tests: tests/test_predict.py
"""
from rfcxlib.embeddings.heads import build_window_scorer as build_scorer

__all__ = ["build_scorer"]
