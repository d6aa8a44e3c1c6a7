"""Review and label: the model proposes, a person (or the synthetic truth) answers, the heads retrain.

- :mod:`~rfcxlib.review.queries`: which unknown (recording, species, window) cells to ask about;
- :mod:`~rfcxlib.review.committee`: the embedding heads that score the windows (a run's, or trained now);
- :mod:`~rfcxlib.review.answers`: answers as TP/FP rows in a labels folder (``added_tp.csv``, ``added_fp.csv``);
- :mod:`~rfcxlib.review.oracle`: answering without a person (the synthetic truth, a CSV of answers);
- :mod:`~rfcxlib.review.clips`: the sound of a query;
- :mod:`~rfcxlib.review.raven_queue`: a review queue of Raven selection tables, and its import;
- :mod:`~rfcxlib.review.widget`: the review in JupyterLab (notebook 08);
- :mod:`~rfcxlib.review.curve`: the learning curve (answers ▶ test LWLRAP per strategy);
- :mod:`rfcxlib.cli.review`: ``rfcx review``.
"""
