"""The names of the RFCx data layout (docs/ARCHITECTURE.md), defined here once and imported
everywhere else: the sample rate, the number of species and the columns of the annotation tables
and of the submission; and the file names of the run and model folders rfcx writes.

It imports nothing, so ``import rfcxlib`` stays cheap.

Tests: tests/test_notebook.py
"""
from __future__ import annotations

#: Hz: the rate of the RFCx recordings, of the synthetic data sets and of the models' input.
SAMPLE_RATE = 48000
NUM_SPECIES = 24
#: ``train_tp.csv`` and ``train_fp.csv``, in this order.
ANNOTATION_COLUMNS = ["recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"]
#: One score column per species: ``s0`` ... ``s23``.
SPECIES_COLUMNS = [f"s{s}" for s in range(NUM_SPECIES)]
#: ``sample_submission.csv`` and ``submission.csv``.
SUBMISSION_COLUMNS = ["recording_id", *SPECIES_COLUMNS]
#: An optional table of a data folder, ``recording_id,site``: where each recording was made (the
#: synthetic ``field`` profile writes it; for other data the user gives one). Folds group by it.
SITES_FILE = "sites.csv"

# The file names of the folders rfcx writes.
#: A model folder's resolved configuration (a ``RunConfig`` as a dict); a run folder's
#: ``config.json`` merges every notebook's parameters and the series' plan.
CONFIG_FILE = "config.json"
#: The numbers that matter, in a model folder and in a run folder.
METRICS_FILE = "metrics.json"
#: A model folder (``<run>/models/<name>/``): the epochs' losses and validation LWLRAP, the
#: out-of-fold and test logits, the Keras model of the first fold trained.
HISTORY_FILE = "history.csv"
OOF_FILE = "oof.npz"
TEST_SCORES_FILE = "test_scores.npz"
MODEL_FILE = "model.keras"
#: A run folder (``outputs/<run_id>/``): the state of ``rfcx run`` (resume), the lock of the process
#: that runs it, the page that shows it.
SERIES_FILE = "series.json"
LOCK_FILE = "run.lock"
SUMMARY_FILE = "summary.html"
