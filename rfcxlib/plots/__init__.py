"""Every figure the notebooks show. Each function takes ``ax=None`` (or ``fig=None``), draws,
and returns the figure or axes; none shows or saves (notebooks save through ``RunDir``).

Submodules by topic: ``eda`` (data set), ``field`` (real backgrounds and sites), ``features``
(spectrograms, augmentations), ``embeddings``, ``training`` (curves, per-class scores), ``noisy``
(method comparisons), ``ensemble``.

Tests: tests/test_plots_eda.py
"""
from rfcxlib.plots import eda, embeddings, ensemble, features, field, noisy, training  # noqa: F401
