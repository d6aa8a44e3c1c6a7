"""The ablation table: lines and seeds from model names, mean ± std, the change against the
baseline, what each line changes; inference-only lines rescored from saved weights."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rfcxlib.reports import ablations
from rfcxlib.data import tables as data
from rfcxlib.features import pipeline
from rfcxlib.training import train
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError


def _model(run, name, test, val, **params):
    folder = run / "models" / name
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"test_lwlrap": test, "val_lwlrap": [val]}))
    RunConfig.from_params(params).save(folder / "config.json")


def test_table_means_stds_deltas_changes_and_verdicts(tmp_path):
    for seed, (t, v) in enumerate([(0.80, 0.90), (0.82, 0.92), (0.81, 0.91)]):
        _model(tmp_path, f"baseline-s{seed}", t, v, seed=seed)
        _model(tmp_path, f"resize_crop-s{seed}", t + 0.05, v, seed=seed, p_resize_crop=0.5)
        _model(tmp_path, f"flip_freq-s{seed}", t + (0.01 if seed else -0.01), v - 0.1, seed=seed, p_flip_freq=0.5)
    _model(tmp_path, "not_an_ablation", 0.1, 0.1)
    tab = ablations.table(tmp_path)
    assert list(tab.index) == ["baseline", "flip_freq", "resize_crop"] and (tab.seeds == 3).all()
    assert tab.loc["baseline", "test_mean"] == pytest.approx(0.81)
    assert tab.loc["baseline", "test_std"] == pytest.approx(np.std([0.80, 0.82, 0.81], ddof=1))
    assert tab.loc["resize_crop", "d_test"] == pytest.approx(0.05) and tab.loc["resize_crop", "d_val"] == pytest.approx(0)
    assert tab.loc["resize_crop", "verdict"] == "helps" and tab.loc["flip_freq", "verdict"] == "no clear change"
    assert tab.loc["resize_crop", "changes"] == "p_resize_crop 0.0 -> 0.5"
    text = ablations.markdown(tab)
    assert "| resize_crop | 3 | 0.860 ± 0.010 | 0.910 ± 0.010 | +0.050 | +0.000 | helps |" in text
    assert ablations.table(tmp_path / "empty") is None


def test_rescore_scores_saved_weights_with_tta_without_training(tiny_data_dir, tmp_path, monkeypatch):
    dataset = data.load_dataset(tiny_data_dir)
    config = RunConfig.from_params(dict(backbone="small_cnn", head="attention_v1", attention="none", n_mels=32,
                                        hop_length=2048, channels=1, crop_s=4.0, hop_s=3.0, batch_size=8,
                                        epochs=1, steps_per_epoch=2, folds=3, checkpoint="last",
                                        p_resize_crop=0.5))
    base = train.train_model(dataset, config, tmp_path / "models" / "baseline-s0", progress=False)
    monkeypatch.setattr(pipeline, "train_dataset", lambda *a, **k: pytest.fail("no epoch may train"))
    tta = ablations.rescore(tmp_path, dataset, "baseline-s0", "tta-s0", tta=2)
    assert tta["test_lwlrap"] != base["test_lwlrap"]
    assert json.loads((tmp_path / "models" / "tta-s0" / "config.json").read_text())["inference"]["tta"] == 2
    assert ablations.table(tmp_path).loc["tta", "changes"] == "tta 0 -> 2"
    with pytest.raises(ParameterError, match=r"\['epochs'\] are not inference settings"):
        ablations.rescore(tmp_path, dataset, "baseline-s0", "x-s0", epochs=3)
