import json
import os

import numpy as np
import pytest

from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.runs import RunDir, open_run, save_keras_atomic, save_npz_atomic, write_json_atomic


def test_atomic_write_leaves_no_temp_files_and_keeps_old_file_on_failure(tmp_path):
    path = write_json_atomic(tmp_path / "a.json", {"x": np.float32(1.5), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"x": 1.5, "n": 3}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"x": 1.5, "n": 3}
    assert os.listdir(tmp_path) == ["a.json"]


def test_keras_saves_are_atomic_for_models_and_weights(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    save_keras_atomic(model, tmp_path / "m.keras")
    save_keras_atomic(model, tmp_path / "best.weights.h5")
    assert sorted(os.listdir(tmp_path)) == ["best.weights.h5", "m.keras"]
    x = np.ones((1, 3), np.float32)
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(reloaded(x), model(x))
    before = (tmp_path / "m.keras").read_bytes()

    class Broken:
        def save(self, path):
            with open(path, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_keras_atomic(Broken(), tmp_path / "m.keras")
    assert (tmp_path / "m.keras").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["best.weights.h5", "m.keras"]


def test_run_dir_layout(tmp_path):
    run = open_run(str(tmp_path / "r1"))
    run.write_config(RunConfig(), extra={"notebook": "04_training"})
    body = json.loads((run.path / "config.json").read_text())
    assert body["model"]["backbone"] == "small_cnn"
    run.write_config(RunConfig().replace(epochs=2), extra={"notebook": "05_noisy_labels"})
    body = json.loads((run.path / "config.json").read_text())
    assert set(body["notebooks"]) == {"04_training", "05_noisy_labels"} and body["train"]["epochs"] == 2
    save_npz_atomic(run.model_dir("m1") / "oof.npz", scores=np.zeros((2, 24)))
    assert [p.name for p in run.model_dirs()] == ["m1"]
    run.update_metrics("m1", {"oof_lwlrap": 0.5})
    run.update_metrics("m1", {"test_lwlrap": 0.6})
    assert run.metrics() == {"m1": {"oof_lwlrap": 0.5, "test_lwlrap": 0.6}}
    with pytest.raises(ParameterError, match="model name '../x'"):
        run.model_dir("../x")


def test_open_run_defaults_under_outputs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path))
    run = open_run(run_id="abc")
    assert run.path == tmp_path / "abc" and isinstance(run, RunDir)
