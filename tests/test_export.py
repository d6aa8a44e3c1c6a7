"""``rfcx export``: SavedModel and TFLite models that take raw 48 kHz windows and return the 24
sigmoid scores of the Keras model (log-mel front-end inside the graph), with their metadata; the
TFLite model runs in a fresh process with ``tf.lite.Interpreter`` alone.

Tolerances (absolute, on scores in [0, 1]): SavedModel 1e-5, TFLite 1e-4; both measured at
about 6e-8 on the tiny model.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from rfcxlib import NUM_SPECIES, cli
from rfcxlib.data import tables as data
from rfcxlib.inference import deploy, export, windows as inference
from rfcxlib.features import logmel as features, pipeline
from rfcxlib.training import train
from rfcxlib.config import RunConfig
from rfcxlib.errors import DataError, ParameterError

# native image width (no resize) and three channels: the front-end's other branches than predict's tests
TINY = dict(backbone="small_cnn", head="attention_v1", attention="cbam", base_units=8, n_mels=32,
            hop_length=1024, image_width=0, channels=3, crop_s=3.0, hop_s=3.0, batch_size=8,
            epochs=1, steps_per_epoch=2, learning_rate=3e-3, folds=3, train_folds=[0, 1], seed=2,
            p_band_filter=0.0, band_mode=False, log="log1p", time_mask=50, freq_mask=16, checkpoint="best")
SAVEDMODEL_ATOL = 1e-5
TFLITE_ATOL = 1e-4


@pytest.fixture(scope="module")
def model_dir(tiny_data_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export-run") / "models" / "m"
    train.train_model(data.load_dataset(tiny_data_dir), RunConfig.from_params(TINY), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def windows(tiny_data_dir):
    """Four 3 s windows: two of a synthetic recording, noise and silence."""
    dataset = data.load_dataset(tiny_data_dir)
    y, _ = sf.read(dataset.path(dataset.test_ids[0], "test"), dtype="float32")
    n = 3 * 48000
    noise = 0.1 * np.random.default_rng(0).standard_normal(n)
    return np.stack([y[:n], y[n:2 * n], noise, np.zeros(n)]).astype(np.float32)


@pytest.fixture(scope="module")
def expected(model_dir, windows):
    """The Keras models' scores: rfcxlib's log-mel image, every fold's logits averaged, a sigmoid."""
    config = RunConfig.from_params(TINY)
    x = features.to_image(features.log_mel(windows, sr=48000, config=config.features), config=config.features)
    logits = [np.asarray(train.load_fold_model(model_dir, config, f)(x, training=False)) for f in (0, 1)]
    return 1.0 / (1.0 + np.exp(-np.mean(logits, axis=0)))


def test_savedmodel_round_trip_and_metadata(model_dir, windows, expected, tmp_path, capsys):
    out = tmp_path / "exported" / "savedmodel"
    assert cli.main(["export", str(model_dir), "--format", "savedmodel", "--out", str(out)]) == 0
    assert "savedmodel" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(out))
    scores = loaded.signatures["serving_default"](audio=tf.constant(windows))["scores"].numpy()
    assert scores.shape == (4, NUM_SPECIES)
    print(f"SavedModel max |difference| {np.abs(scores - expected).max():.2e}")
    np.testing.assert_allclose(scores, expected, atol=SAVEDMODEL_ATOL)
    meta = json.loads(loaded.signatures["metadata"]()["json"].numpy().decode())
    assert meta == json.loads((out / export.METADATA_FILE).read_text())
    assert meta["input"]["shape"] == [None, 3 * 48000] and meta["input"]["sample_rate_hz"] == 48000
    assert meta["input"]["window_s"] == 3.0 and meta["species"] == [f"s{k}" for k in range(NUM_SPECIES)]
    assert meta["folds"] == 2 and meta["features"]["hop_length"] == 1024
    assert cli.main(["export", str(model_dir), "--format", "savedmodel", "--out", str(out)]) == 0  # replaced
    assert sorted(p.name for p in out.parent.iterdir()) == ["savedmodel"]  # no temporary left behind


TFLITE_ONLY = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    model, inputs, outputs = sys.argv[1:4]
    interpreter = tf.lite.Interpreter(model_path=model)
    runner = interpreter.get_signature_runner("serving_default")
    scores = runner(audio=np.load(inputs))["scores"]
    np.save(outputs, scores)
    print(json.dumps({"signatures": interpreter.get_signature_list(),
                      "rfcxlib_imported": any(m.startswith("rfcxlib") for m in sys.modules)}))
""")


def test_tflite_runs_in_a_fresh_process_with_the_interpreter_alone(model_dir, windows, expected, tmp_path):
    out = tmp_path / "device" / "model.tflite"
    assert export.export_model(model_dir, fmt="tflite", out=out) == out
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["format"] == "tflite" and sidecar["input"]["shape"] == [None, 3 * 48000]
    assert sidecar["species"] == [f"s{k}" for k in range(NUM_SPECIES)] and sidecar["signature"] == "serving_default"
    assert sidecar["select_tf_ops"] is False  # built-in TFLite kernels only
    script, inputs, outputs = tmp_path / "run_tflite.py", tmp_path / "x.npy", tmp_path / "scores.npy"
    script.write_text(TFLITE_ONLY)
    np.save(inputs, windows)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, str(script), str(out), str(inputs), str(outputs)], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rfcxlib_imported"] is False
    assert report["signatures"] == {"serving_default": {"inputs": ["audio"], "outputs": ["scores"]}}
    print(f"TFLite max |difference| {np.abs(np.load(outputs) - expected).max():.2e}")
    np.testing.assert_allclose(np.load(outputs), expected, atol=TFLITE_ATOL)


def test_band_mode_is_inside_the_exported_graph(tiny_data_dir, windows, tmp_path):
    """A model that scores each species on its band (band_mode) exports with the bands inside:
    the TFLite model gives the Keras model's per-band scores, with built-in kernels only."""
    dataset, config = data.load_dataset(tiny_data_dir), RunConfig.from_params({**TINY, "train_folds": [0], "band_mode": True})
    folder = tmp_path / "models" / "banded"
    train.train_model(dataset, config, folder, progress=False)
    x = features.to_image(features.log_mel(windows, sr=48000, config=config.features), config=config.features)
    net = train.load_fold_model(folder, config, 0)
    banded = inference.sigmoid(inference.band_logits(net, x, pipeline.band_masks(dataset, config)))
    whole = inference.sigmoid(net(x, training=False))
    out = export.export_model(folder, fmt="tflite", out=tmp_path / "banded.tflite")
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["band_mode"] is True and sidecar["select_tf_ops"] is False
    runner = tf.lite.Interpreter(model_path=str(out)).get_signature_runner("serving_default")
    scores = runner(audio=windows)["scores"]
    np.testing.assert_allclose(scores, banded, atol=TFLITE_ATOL)
    assert np.abs(scores - whole).max() > 1e-3


def test_export_errors_are_clear(model_dir, tmp_path, capsys):
    with pytest.raises(ParameterError, match="unknown export format 'onnx'.*'savedmodel', 'tflite'"):
        export.export_model(model_dir, fmt="onnx", out=tmp_path / "m.onnx")
    assert cli.main(["export", str(tmp_path / "none"), "--format", "tflite", "--out", str(tmp_path / "m.tflite")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none: no such folder" in err
    (tmp_path / "emb").mkdir()
    (tmp_path / "emb" / "config.json").write_text(json.dumps({"model": {"backbone": "birdnet"}}))
    with pytest.raises(ParameterError, match="this export is a folder"):  # BirdNET heads: rfcxlib.inference.deploy
        deploy.export_any(tmp_path / "emb", fmt="tflite", out=tmp_path / "m.tflite")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: not a model folder"):
        deploy.export_any(tmp_path / "empty", fmt="savedmodel", out=tmp_path / "sm")
