"""The names of the RFCx data layout (docs/ARCHITECTURE.md), defined here once and imported
everywhere else: the sample rate, the number of species and the columns of the annotation tables
and of the submission.

It imports nothing, so ``import rfcxlib`` stays cheap.
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
