"""Several workers on loopback (``TF_CONFIG``, ``MultiWorkerMirroredStrategy``): the same weights
as one process on the same global batch, chief-only writes, a clear error within a bounded time
when a worker dies, and a clear error when the strategy comes too late."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from rfcxlib.data import tables as data
from rfcxlib.training import distribute, train
from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError
from rfcxlib.models import build_model

# the default small CNN, tiny; no dropout (each replica draws its own masks)
PARAMS = dict(backbone="small_cnn", head="attention_v1", attention="cbam", base_units=8, n_mels=32,
              hop_length=2048, image_width=64, channels=1, crop_s=4.0, hop_s=3.0, batch_size=8,
              epochs=2, steps_per_epoch=2, learning_rate=3e-3, dropout=0.0, folds=3, train_folds=[0],
              seed=1, checkpoint="last", p_band_filter=0.0, band_mode=False, log="log1p", time_mask=50,
              freq_mask=16)
# float32 weights after 4 Adam steps (measured: 1.4e-6 at most, on weights up to 1.4): the
# replicas' batch-norm statistics (E[x^2] - E[x]^2 over the global batch) and gradient sums round
# differently from one device's
ATOL = 1e-5

WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from rfcxlib.training import distribute, train
    strategy = distribute.init_strategy()  # first, before TensorFlow runs anything
    from rfcxlib.data import tables as data
    from rfcxlib.config import RunConfig
    from rfcxlib.models import build_model

    params, data_dir, model_dir, out = json.loads(sys.argv[1]), *sys.argv[2:5]
    built = []

    def build(config, shape):
        built.append(build_model(config, shape))
        return built[-1]

    result = train.train_model(data.load_dataset(data_dir), RunConfig.from_params(params), model_dir,
                               build_fn=build, progress=False)
    if built:  # a fold trained here (not reused)
        np.savez(out, *[np.asarray(w) for w in built[-1].weights])
    print(json.dumps({"multi_worker": isinstance(strategy, train.tf.distribute.MultiWorkerMirroredStrategy),
                      "replicas": strategy.num_replicas_in_sync, "result": result}))
""")


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _start(command, ports, index: int, tmp_path, **env):
    """A worker process; its output goes to files (a full pipe would block it, and with it every
    worker at the next collective)."""
    out, err = (open(tmp_path / f"worker{index}.{kind}", "w") for kind in ("out", "err"))
    return subprocess.Popen(command, env=_worker_env(ports, index, tmp_path, **env), stdout=out, stderr=err)


def _output(tmp_path, index: int) -> tuple[str, str]:
    return tuple((tmp_path / f"worker{index}.{kind}").read_text() for kind in ("out", "err"))


def _run_workers(command, weights: str, ports, tmp_path, *, timeout: float) -> list[tuple[str, str]]:
    """Two workers of ``command`` (worker i saves its weights to ``<weights><i>.npz``), waited for
    up to ``timeout`` s each and checked to exit 0; their ``(stdout, stderr)``."""
    workers = [_start(command + [str(tmp_path / f"{weights}{i}.npz")], ports, i, tmp_path) for i in range(2)]
    try:
        for w in workers:
            w.wait(timeout=timeout)
    finally:
        for w in workers:
            w.kill()
    done = [_output(tmp_path, i) for i in range(2)]
    for w, (_, err) in zip(workers, done):
        assert w.returncode == 0, err[-3000:]
    return done


def _worker_env(ports, index: int, tmp_path, **extra) -> dict:
    cluster = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    temp = tmp_path / f"tmp{index}"  # where the worker's temporary folders go
    temp.mkdir(exist_ok=True)
    return {**os.environ, "TF_CONFIG": json.dumps(cluster), "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(temp),
            "CUDA_VISIBLE_DEVICES": "", **extra}


def _build(built):
    def build(config, shape):
        built.append(build_model(config, shape))
        return built[-1]

    return build


def test_multi_worker_training_matches_one_process(tiny_data_dir, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    ports = _free_ports(2)
    model_dir = tmp_path / "two-workers"
    command = [sys.executable, str(script), json.dumps(PARAMS), str(tiny_data_dir), str(model_dir)]
    done = _run_workers(command, "w", ports, tmp_path, timeout=150)
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in done]
    assert [(r["multi_worker"], r["replicas"]) for r in reports] == [(True, 2)] * 2
    assert reports[0]["result"] == reports[1]["result"]  # the same metrics on every worker

    # only the chief wrote the model folder; the other worker's temporary folder is gone
    assert (model_dir / "metrics.json").exists() and (model_dir / "fold0" / "resume.npz").exists()
    assert not list((tmp_path / "tmp1").iterdir())

    built = []
    single = train.train_model(data.load_dataset(tiny_data_dir), RunConfig.from_params(PARAMS),
                               tmp_path / "one-process", build_fn=_build(built), progress=False)
    one = [np.asarray(w) for w in built[-1].weights]
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    w0, w1 = ([arrays[f"arr_{i}"] for i in range(len(arrays.files))] for arrays in (w0, w1))
    assert len(w0) == len(w1) == len(one)
    for a, b, c in zip(w0, w1, one):
        np.testing.assert_array_equal(a, b)  # the workers apply the same all-reduced gradients
        np.testing.assert_allclose(a, c, rtol=0, atol=ATOL)
    assert single["oof_lwlrap"] == pytest.approx(reports[0]["result"]["oof_lwlrap"], abs=1e-3)

    # started again: the chief's finished fold is reused on every worker (sent to the other one)
    stamp = (model_dir / "fold0" / "resume.npz").stat().st_mtime_ns
    again = _run_workers(command, "again", ports, tmp_path, timeout=120)
    assert [json.loads(out.strip().splitlines()[-1])["result"] for out, _ in again] == [reports[0]["result"]] * 2
    assert (model_dir / "fold0" / "resume.npz").stat().st_mtime_ns == stamp
    assert not (tmp_path / "again0.npz").exists() and not (tmp_path / "again1.npz").exists()


def test_multi_worker_dead_worker_stops_the_others_with_a_clear_error(tiny_data_dir, tmp_path):
    ports = _free_ports(2)
    model_dir = tmp_path / "m"
    params = {**PARAMS, "epochs": 50}
    command = [sys.executable, "-m", "rfcxlib.cli", "train", "--data-dir", str(tiny_data_dir),
               "--model-dir", str(model_dir), "--no-progress"]
    for name, value in params.items():
        command += ["-p", name, json.dumps(value)]
    timeout_s = 10
    workers = [_start(command, ports, i, tmp_path, RFCX_WORKER_TIMEOUT_S=str(timeout_s)) for i in range(2)]
    try:
        deadline = time.monotonic() + 120
        while not (model_dir / "fold0" / "state.json").exists():  # the first epoch is done
            assert time.monotonic() < deadline, "the workers did not finish an epoch in 120 s"
            assert workers[0].poll() is None, _output(tmp_path, 0)[1][-3000:]
            time.sleep(0.2)
        workers[1].send_signal(signal.SIGKILL)
        killed = time.monotonic()
        workers[0].wait(timeout=timeout_s + 50)
        waited = time.monotonic() - killed
    finally:
        for w in workers:
            w.kill()
            w.wait()
    err = _output(tmp_path, 0)[1]
    assert workers[0].returncode == 1, err[-3000:]
    line = [line for line in err.splitlines() if line.startswith("rfcx train: error:")]
    assert line and line[0].startswith("rfcx train: error: worker 0: another worker stopped or did not "
                                       f"answer within {timeout_s} s"), err[-3000:]
    assert "Start every worker again to resume" in line[0]
    assert waited < timeout_s + 30, waited
    assert json.loads((model_dir / "fold0" / "state.json").read_text())["epochs_done"] >= 1


def test_multi_worker_strategy_after_tensorflow_started_is_a_clear_error(tmp_path):
    script = tmp_path / "late.py"
    script.write_text(textwrap.dedent("""
        import tensorflow as tf
        from rfcxlib.training import distribute
        from rfcxlib.errors import ClusterError
        tf.constant(1.0) + 1.0  # TensorFlow has started
        try:
            distribute.init_strategy()
        except ClusterError as exc:
            print(exc)
    """))
    done = subprocess.run([sys.executable, str(script)], env=_worker_env(_free_ports(2), 0, tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the multi-worker strategy must be created first" in done.stdout
    assert "rfcxlib.training.distribute.init_strategy()" in done.stdout


def test_multi_worker_timeout_from_argument_or_environment(monkeypatch):
    monkeypatch.delenv(distribute.TIMEOUT_ENV, raising=False)
    assert distribute.worker_timeout_s() == distribute.DEFAULT_TIMEOUT_S == 60.0
    monkeypatch.setenv(distribute.TIMEOUT_ENV, "15")
    assert distribute.worker_timeout_s() == 15.0 and distribute.worker_timeout_s(5) == 5.0
    monkeypatch.setenv(distribute.TIMEOUT_ENV, "soon")
    with pytest.raises(ParameterError, match=r"RFCX_WORKER_TIMEOUT_S = 'soon': expected seconds > 0"):
        distribute.worker_timeout_s()
    with pytest.raises(ParameterError, match=r"timeout_s = 0: expected seconds > 0"):
        distribute.worker_timeout_s(0)
