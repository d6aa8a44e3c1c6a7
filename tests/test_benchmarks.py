"""The GPU check (benchmarks/bench_gpu.py, benchmarks/gpu_check.sh): its dry mode runs on a CPU
and writes the JSON it promises; without a GPU the real mode stops with a clear message."""
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _env(tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_DRY"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "RFCX_OUTPUTS": str(tmp_path / "outputs"),
            **extra}


def _bench(args, tmp_path, **env):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True,
                          cwd=ROOT, env=_env(tmp_path, **env), timeout=600)


@pytest.mark.slow
def test_dry_mode_writes_the_timings_and_the_series_status(tmp_path):
    out = tmp_path / "gpu_check.json"
    train = _bench(["train", "--dry", "--modes", "fp32", "--steps", "1", "--warmup", "1",
                    "--batch-size", "1", "--height", "32", "--width", "32", "--out", str(out)],
                   tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    series = _bench(["series", "--out", str(out), "--run-id", "gpu_check_test"], tmp_path,
                    GPU_CHECK_DRY="1")
    assert series.returncode == 0, series.stderr[-3000:]
    body = json.loads(out.read_text())
    assert body["dry"] is True
    assert body["machine"]["tensorflow"] == importlib.metadata.version("tensorflow")
    assert isinstance(body["machine"]["gpus"], list)
    (row,) = body["training"]
    assert row["mode"] == "fp32" and row["backbone"] == "small_cnn"
    assert row["mixed_precision"] is False and row["xla"] is False
    assert row["input_shape"] == [32, 32, 3] and row["batch_size"] == 1 and row["steps"] == 1
    assert row["steps_per_s"] > 0 and row["samples_per_s"] == pytest.approx(row["steps_per_s"])
    assert row["finite_loss"] and row["first_fit_s"] > 0
    run = body["series"]
    assert run["exit_status"] == 0 and run["timed_out"] is False and run["wall_s"] > 0
    assert run["command"] == "rfcx run --profile tiny --run-id gpu_check_test --dry-run"
    assert "06_ensembling" in Path(run["log"]).read_text()
    assert not (tmp_path / "outputs" / "gpu_check_test").exists(), "a dry run writes no run"


@pytest.mark.slow
def test_without_a_gpu_the_real_mode_stops_with_a_clear_message(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _bench(["train", "--out", str(out)], tmp_path, CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 3, done.stderr[-3000:]
    assert "no GPU visible to TensorFlow" in done.stderr and "--dry" in done.stderr
    assert not out.exists()
    done = _bench(["train", "--dry", "--backbone", "nope", "--out", str(out)], tmp_path)
    assert done.returncode == 2
    assert "argument --backbone: invalid choice: 'nope' (choose from 'densenet121'" in done.stderr


def test_the_script_checks_its_arguments_and_the_gpu_first(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True,
                          env=_env(tmp_path))
    assert done.returncode == 2 and "unknown argument '--bogus'" in done.stderr
    helped = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "GPU_CHECK_DRY=1" in helped.stdout
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the real mode would run")
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True,
                          env=_env(tmp_path, GPU_CHECK_OUT=str(tmp_path / "g.json")))
    assert done.returncode == 3 and "no GPU" in done.stderr and "--dry" in done.stderr
    assert not (tmp_path / "g.json").exists()


def test_the_models_benchmark_builds_notebook_04s_default_model():
    """bench_models.py reads notebook 04's typed parameters cell, not its built-in fallback."""
    import importlib.util

    from rfcxlib.runner import profiles

    spec = importlib.util.spec_from_file_location("bench_models", ROOT / "benchmarks" / "bench_models.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    declared = profiles.declared_parameters(bench.NOTEBOOK)
    defaults = bench.notebook_defaults()
    assert set(defaults) == set(declared)
    config = bench.make_config("small_cnn", defaults)
    assert config.model.head == declared["head"]["default"].strip('"') != bench.FALLBACK["head"]
    assert config.features.n_mels == int(declared["n_mels"]["default"])
    assert config.audio.crop_s == float(declared["crop_s"]["default"])
