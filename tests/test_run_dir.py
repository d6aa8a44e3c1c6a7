"""The run folder (rfcxlib.runner.run_dir) and where rfcx keeps things (rfcxlib.paths). The run
lock is tested with the failures of ``rfcx run`` (tests/test_failures.py)."""
import json

import numpy as np
import pytest

from rfcxlib import layout, paths
from rfcxlib.atomic import save_npz_atomic
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.runner.run_dir import RunDir, open_run


def test_run_dir_layout(tmp_path):
    run = open_run(str(tmp_path / "r1"))
    run.write_config(RunConfig(), extra={"notebook": "04_training"})
    body = json.loads((run.path / layout.CONFIG_FILE).read_text())
    assert body["model"]["backbone"] == "small_cnn"
    run.write_config(RunConfig().replace(epochs=2), extra={"notebook": "05_noisy_labels"})
    body = json.loads((run.path / "config.json").read_text())
    assert set(body["notebooks"]) == {"04_training", "05_noisy_labels"} and body["train"]["epochs"] == 2
    save_npz_atomic(run.model_dir("m1") / "oof.npz", scores=np.zeros((2, 24)))
    assert [p.name for p in run.model_dirs()] == ["m1"]
    run.update_metrics("m1", {"oof_lwlrap": 0.5})
    run.update_metrics("m1", {"test_lwlrap": 0.6})
    assert run.metrics() == {"m1": {"oof_lwlrap": 0.5, "test_lwlrap": 0.6}}
    assert run.metrics_path == run.path / "metrics.json"
    with pytest.raises(ParameterError, match="model name '../x'"):
        run.model_dir("../x")


def test_open_run_defaults_under_outputs_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path))
    run = open_run(run_id="abc")
    assert run.path == tmp_path / "abc" and isinstance(run, RunDir)


def test_paths_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path / "out"))
    assert paths.cache_root() == tmp_path / "cache" and paths.outputs_root() == tmp_path / "out"
    monkeypatch.delenv("RFCX_CACHE_DIR")
    assert paths.cache_root() == paths.Path.home() / ".cache" / "rfcx"
    assert (paths.project_root() / "notebooks").is_dir()
