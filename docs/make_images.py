"""Regenerate the pictures under docs/images/ (run from the project root):

    .venv/bin/python docs/make_images.py

``synthetic_train_example.png``: a training recording of the ``mini`` synthetic data set (seed 0)
as a log-mel spectrogram with its TP boxes, its FP boxes and the calls present without a row. The
recording is chosen to show all three: a labelled call, an FP box on a confusable call of another
species, and a call nobody labelled.
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from rfcxlib.audio import decode as audio  # noqa: E402
from rfcxlib.data import tables as data
from rfcxlib.features import logmel as features
from rfcxlib.synth import dataset as synth
from rfcxlib.config import FeatureConfig  # noqa: E402
from rfcxlib.plots import eda  # noqa: E402
from rfcxlib.atomic import save_figure_atomic  # noqa: E402

OUT = Path(__file__).resolve().parent / "images"


def showcase_score(rid: str, ds: data.Dataset, calls: pd.DataFrame) -> float:
    """How well a recording shows TP, FP-on-a-confuser and unlabelled calls (higher is better;
    0: not all three): the weakest of the three SNRs, long TP boxes and few sounds preferred."""
    here = calls[(calls.recording_id == rid) & (calls.split == "train")]
    tp, fp = ds.tp[ds.tp.recording_id == rid], ds.fp[ds.fp.recording_id == rid]
    if tp.empty or fp.empty:
        return 0.0
    labelled = here[here.labelled.astype(bool)]
    on_call = [here[(here.kind == "call") & (abs(here.t_min - r.t_min) < 1e-3)
                    & (here.species_id != r.species_id)].snr_db.max() for r in fp.itertuples()]
    others = here[(here.kind == "call") & ~here.labelled.astype(bool) & ~here.species_id.isin(tp.species_id)]
    for r in fp.itertuples():  # an unlabelled call away from the FP boxes reads best
        others = others[(others.t_max < r.t_min) | (others.t_min > r.t_max)]
    parts = [labelled.snr_db.max(), max(on_call, default=float("nan")), others.snr_db.max()]
    if any(pd.isna(p) for p in parts):
        return 0.0
    return min(parts) + 2.0 * float((tp.t_max - tp.t_min).max()) - 1.0 * len(here)


def main() -> Path:
    root = synth.ensure_dataset("mini", 0)
    ds = data.load_dataset(root)
    calls = synth.read_calls(root)
    best = max(ds.labelled_ids, key=lambda r: showcase_score(r, ds, calls))
    config = FeatureConfig()
    y, sr = audio.load_audio(ds.path(best, "train"), sr=48000)
    S = eda.power_to_db(features.mel_power(y, sr=sr, config=config))
    tp, fp = ds.tp[ds.tp.recording_id == best], ds.fp[ds.fp.recording_id == best]
    fig, ax = plt.subplots(figsize=(13, 4.6), layout="constrained")
    eda.spectrogram_with_boxes(
        S, tp=tp, fp=fp, unlabelled=synth.unlabelled_calls(calls, best), sr=sr, config=config, ax=ax,
        title=f"Synthetic training recording {best} (log-mel, dB)")
    return save_figure_atomic(fig, OUT / "synthetic_train_example.png", dpi=100)


if __name__ == "__main__":
    print(main())
