"""How ``rfcx run`` fails: one line that says where and what to do, exit status 1, nothing
truncated under the run folder, ``series.json`` marked failed, and the same command resuming once
the cause is gone; one process per run folder; data that do not fit the settings stopped before
anything runs."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import soundfile as sf

from rfcxlib.runner import execute as execution, preflight
from rfcxlib.data.checks import check_decodable
from rfcxlib.runner.run_dir import RunLock
from rfcxlib.atomic import update_json_atomic
from rfcxlib.errors import RunFailed

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}
RFCX = [sys.executable, "-m", "rfcxlib"]
PARAMS = '''data_dir: str = ""  # data folder
run_dir: str = ""  # run folder
profile: str = "tiny"  # synthetic profile
data_seed: int = 0  # synthetic seed
'''


def _notebook(path: Path, params: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def quick_series(tmp_path) -> Path:
    """01 writes a file, 02 can hold (for the lock) or kill its own kernel, 03 writes a file."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    write = "from pathlib import Path\nPath(run_dir, '{0}.txt').write_text('{0}')"
    _notebook(folder / "01_a.ipynb", PARAMS, write.format("a"))
    _notebook(folder / "02_b.ipynb", PARAMS + "hold_s: float = 0.0  # wait\n"
              "die: bool = False  # kill the kernel\n",
              "import os, time\nfrom pathlib import Path\nPath(run_dir, 'holding').touch()\n"
              "time.sleep(hold_s)\nif die:\n    os.kill(os.getpid(), 9)")
    _notebook(folder / "03_c.ipynb", PARAMS, write.format("c"))
    (folder / "quick.yaml").write_text("description: quick\nparameters: {profile: tiny}\n")
    return folder


@pytest.fixture
def data_copy(tiny_data_dir, tmp_path) -> Path:
    """The tiny data set's tables copied, its recordings linked (a test may replace one)."""
    root = tmp_path / "data"
    for split in ("train", "test"):
        (root / split).mkdir(parents=True)
        for f in (tiny_data_dir / split).glob("*.flac"):
            (root / split / f.name).symlink_to(f)
    for f in tiny_data_dir.glob("*.csv"):
        shutil.copy(f, root / f.name)
    return root


def _env(tmp_path, **extra) -> dict:
    return {**os.environ, "RFCX_OUTPUTS": str(tmp_path / "outputs"), "TF_CPP_MIN_LOG_LEVEL": "3",
            **extra}


def _rfcx(*args, env, limit_bytes: int = 0, timeout: float = 300) -> subprocess.CompletedProcess:
    def limit():  # a full disk, as the process sees it: writes past limit_bytes fail (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([*RFCX, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit if limit_bytes else None)


def _last_line(done) -> str:
    lines = done.stderr.strip().splitlines()
    assert lines, done.stdout
    return lines[-1]


def _assert_failed_cleanly(done, run: Path, *words: str) -> str:
    """Exit 1, one error line naming the place, no traceback, series.json failed, every JSON and
    notebook under the run folder whole, summary.html written."""
    assert done.returncode == 1, done.stdout + done.stderr
    last = _last_line(done)
    assert last.startswith("rfcx run: error: "), done.stderr
    for word in words:
        assert word in last, last
    assert "Traceback" not in done.stderr + done.stdout
    state = json.loads((run / "series.json").read_text())
    assert state["status"] == "failed" and state["error"], state
    for path in list(run.rglob("*.json")) + list(run.rglob("*.ipynb")):
        json.loads(path.read_text())  # nothing truncated
    assert not list(run.rglob(f"*{execution.PARTIAL}"))
    assert "failed" in (run / "summary.html").read_text()
    assert not (run / "run.lock").exists()
    return last


def test_unwritable_outputs_folder_one_line_even_in_a_dry_run(tmp_path, quick_series, data_copy):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    env = _env(tmp_path, RFCX_OUTPUTS=str(blocker / "outputs"))
    for extra in (["--dry-run"], []):
        done = _rfcx("run", "--notebooks-dir", quick_series, "--profile", quick_series / "quick.yaml", "--data-dir", data_copy,
                     "--kernel", "python3", "--run-id", "r", *extra, env=env)
        assert done.returncode == 1, done.stderr
        last = _last_line(done)
        assert last.startswith("rfcx run: error: run folder ") and "RFCX_OUTPUTS" in last, last
        assert "Traceback" not in done.stderr
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        done = _rfcx("run", "--notebooks-dir", quick_series, "--profile", quick_series / "quick.yaml", "--data-dir", data_copy,
                     "--dry-run", env=_env(tmp_path, RFCX_OUTPUTS=str(locked)))
        assert done.returncode == 1 and "not writable" in _last_line(done)
        assert not any(locked.iterdir())


def test_dry_run_and_a_failed_prepare_leave_no_run_folder(tmp_path, quick_series, data_copy):
    env = _env(tmp_path)
    done = _rfcx("run", "--notebooks-dir", quick_series, "--profile", quick_series / "quick.yaml", "--data-dir", data_copy, "--dry-run",
                 "--run-id", "dry", env=env)
    assert done.returncode == 0, done.stderr
    assert "checks: the data and the settings fit" in done.stdout
    done = _rfcx("run", "--notebooks-dir", quick_series, "--profile", quick_series / "quick.yaml", "--data-dir", data_copy, "-p",
                 "hold_s", "soon", "--run-id", "bad", env=env)
    assert done.returncode == 2 and "expected a value of type float" in done.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_non_utf8_csv_fails_before_running_then_resumes(tmp_path, quick_series, data_copy):
    env = _env(tmp_path)
    tp = data_copy / "train_tp.csv"
    good = tp.read_text()
    tp.write_bytes(good.encode("utf-16"))
    args = ["run", "--notebooks-dir", quick_series, "--profile", quick_series / "quick.yaml", "--data-dir", data_copy, "--kernel",
            "python3", "--run-id", "enc"]
    run = tmp_path / "outputs" / "enc"
    done = _rfcx(*args, env=env)
    last = _assert_failed_cleanly(done, run, "checks before running", str(tp),
                                  "not a readable CSV table", "fix them and run the same command")
    assert not (run / "a.txt").exists(), "nothing ran"
    assert "train_tp.csv rows" in (run / "summary.html").read_text()
    tp.write_text(good)
    done = _rfcx(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads((run / "series.json").read_text())["status"] == "completed"
    print(last)


def test_dead_kernel_is_one_line_and_the_run_resumes(tmp_path, quick_series, data_copy):
    env = _env(tmp_path)
    args = ["run", "--notebooks-dir", quick_series, "--profile", quick_series / "quick.yaml", "--data-dir", data_copy, "--kernel",
            "python3", "--run-id", "dead"]
    run = tmp_path / "outputs" / "dead"
    done = _rfcx(*args, "-p", "die", "true", env=env)
    last = _assert_failed_cleanly(done, run, "02_b (02_b.ipynb)", "the kernel died",
                                  "run the same command to resume")
    done = _rfcx(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "01_a: done before with the same parameters, skipped" in done.stdout
    assert (run / "c.txt").exists()
    print(last)


def test_a_second_run_on_the_same_id_stops_and_a_stale_lock_is_taken_over(
        tmp_path, quick_series, data_copy):
    env = _env(tmp_path)
    args = [*RFCX, "run", "--notebooks-dir", str(quick_series), "--profile", str(quick_series / "quick.yaml"), "--data-dir", str(data_copy),
            "--kernel", "python3", "--run-id", "two"]
    run = tmp_path / "outputs" / "two"
    first = subprocess.Popen([*args, "-p", "hold_s", "120"], env=env, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (run / "holding").exists() and time.time() < deadline:
            time.sleep(0.2)
        assert (run / "holding").exists(), "the first run did not reach notebook 02"
        started = time.time()
        second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert time.time() - started < 15
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"is in use by process {first.pid}" in _last_line(second)
        assert json.loads((run / "series.json").read_text())["steps"]["02_b"]["status"] == "running"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    third = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"took over the lock of process {first.pid}" in third.stdout
    assert (run / "c.txt").exists() and not (run / "run.lock").exists()


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.unlink()  # a link to the shared data set: replace it with a cut copy
    path.write_bytes(data[: len(data) // 2])


def test_dry_run_rejects_long_crops_and_a_truncated_test_recording(tmp_path, data_copy):
    env = _env(tmp_path)
    base = ["run", "--profile", "tiny", "--data-dir", data_copy, "--dry-run", "--run-id", "d"]
    done = _rfcx(*base, "-p", "crop_s", "12", env=env)
    last = _last_line(done)
    assert done.returncode == 1 and "crop_s = 12.0 s is longer than the shortest recording" in last
    assert "use -p crop_s 10 or less" in last and "Traceback" not in done.stderr
    victim = sorted((data_copy / "test").glob("*.flac"))[3]
    _truncate(victim)
    done = _rfcx(*base, env=env)
    last = _last_line(done)
    assert done.returncode == 1 and str(victim) in last and "truncated" in last, last
    assert not (tmp_path / "outputs").exists()


def test_cheap_decode_check_finds_a_truncated_file(signal_files, tmp_path):
    assert check_decodable(signal_files["tone"]) is None
    cut = tmp_path / "cut.flac"
    shutil.copy(signal_files["chirp"], cut)
    cut.write_bytes(cut.read_bytes()[:3000])
    assert sf.info(str(cut)).frames > 0  # the header still promises the whole recording
    assert "truncated" in check_decodable(cut)


def _parts(n_labelled: int, duration_s: float = 10.0) -> dict:
    import pandas as pd
    from rfcxlib.data.checks import COLUMNS

    ids = [f"r{i}" for i in range(max(n_labelled, 1))]
    tp = pd.DataFrame([[r, 0, 1, 1.0, 100.0, 2.0, 900.0] for r in ids[:n_labelled]],
                      columns=COLUMNS)
    return {"tp": tp, "fp": tp.iloc[:0], "train_ids": ids, "test_ids": [],
            "durations": {r: duration_s for r in ids}}


def test_fold_counts_and_warnings_for_settings_that_cannot_work():
    errors, _ = preflight.check_settings("04_training", {"folds": 5}, _parts(1))
    assert len(errors) == 1 and "1 labelled training recording(s)" in errors[0]
    assert "need at least 2" in errors[0] and "[2, 1]" not in errors[0]
    errors, _ = preflight.check_settings("04_training", {"folds": 5}, _parts(3))
    assert "use -p folds N with 2 <= N <= 3" in errors[0]
    errors, _ = preflight.check_settings("04_training", {"folds": 3, "train_folds": [0, 3]},
                                         _parts(3))
    assert "train_folds [3] outside 0..2" in errors[0]
    errors, warnings = preflight.check_settings(
        "04_training", {"folds": 2, "crop_s": 3.0, "hop_s": 4.0, "n_mels": 32, "freq_mask": 40,
                        "hop_length": 2048, "time_mask": 200, "epochs": 0}, _parts(4))
    assert errors == []
    assert any("skip audio" in w for w in warnings) and any("freq_mask" in w for w in warnings)
    assert any("time_mask" in w for w in warnings) and any("epochs = 0" in w for w in warnings)


def test_lock_and_locked_updates(tmp_path):
    lock = RunLock(tmp_path / "run").acquire(log=lambda m: None)
    with pytest.raises(RunFailed, match=rf"in use by process {os.getpid()}"):
        RunLock(tmp_path / "run").acquire(log=lambda m: None)
    lock.release()
    assert not (tmp_path / "run" / "run.lock").exists()
    (tmp_path / "run" / "run.lock").write_text(json.dumps({"pid": 2 ** 22 + 12345,
                                                           "host": os.uname().nodename}))
    said = []
    RunLock(tmp_path / "run").acquire(log=said.append).release()
    assert "took over the lock of process" in said[0]
    path = tmp_path / "m.json"
    update_json_atomic(path, lambda b: {**b, "a": 1})
    assert update_json_atomic(path, lambda b: {**b, "b": 2}) == {"a": 1, "b": 2}


def test_full_disk_during_notebook_01_then_during_training_then_resume(tmp_path, tiny_data_dir):
    """Writes limited with RLIMIT_FSIZE: first below what notebook 01 writes, then below the
    training checkpoint only; each failure is one line, and the last run completes what is left."""
    env = _env(tmp_path)
    sweep = tmp_path / "one.yaml"
    sweep.write_text("models:\n  - {model_name: one}\n")
    args = ["run", "--profile", "tiny", "--data-dir", tiny_data_dir, "--notebooks", "01,04",
            "--sweep", sweep, "--kernel", "python3", "--run-id", "full"]
    run = tmp_path / "outputs" / "full"
    done = _rfcx(*args, env=env, limit_bytes=100_000)  # notebook 01's figures are larger
    first = _assert_failed_cleanly(done, run, "01_eda (01_eda.ipynb)", "is full",
                                   "run the same command to resume")
    done = _rfcx(*args, env=env, limit_bytes=1_000_000)  # 01 fits, a 1.3 MB checkpoint does not
    second = _assert_failed_cleanly(done, run, "04_training[one] (04_training.ipynb)", "is full")
    assert "[1/2] 01_eda: completed" in done.stdout
    done = _rfcx(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "01_eda: done before with the same parameters, skipped" in done.stdout
    assert "fold 0" in done.stdout, "training progress reaches the console"
    assert json.loads((run / "series.json").read_text())["status"] == "completed"
    print(first, second, sep="\n")


def test_ctrl_c_marks_the_run_failed_and_releases_the_lock(tmp_path, quick_series, data_copy):
    env = _env(tmp_path)
    args = [*RFCX, "run", "--notebooks-dir", str(quick_series), "--profile",
            str(quick_series / "quick.yaml"), "--data-dir", str(data_copy), "--kernel", "python3",
            "--run-id", "int"]
    run = tmp_path / "outputs" / "int"
    # Ctrl-C reaches a run started in a terminal's foreground; a suite started as a background
    # job of a script inherits SIGINT ignored, so the runner gets the default disposition back
    proc = subprocess.Popen([*args, "-p", "hold_s", "120"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (run / "holding").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C, as the runner sees it
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    last = err.strip().splitlines()[-1]
    assert last == ("rfcx run: error: 02_b (02_b.ipynb): interrupted (Ctrl-C) while executing; "
                    "run the same command to resume"), last
    state = json.loads((run / "series.json").read_text())
    assert state["status"] == "failed" and state["steps"]["02_b"]["status"] == "failed"
    assert not (run / "run.lock").exists()


def test_progress_echo_gives_one_line_per_epoch():
    said = []
    echo = execution.ProgressEcho(said.append)
    for epoch in range(3):
        for _ in range(2):  # tqdm redraws the same count more than once
            echo.write(f"\rfold 0:  {epoch * 33}%|##  | {epoch}/3 [00:0{epoch}<00:02, loss=0.{epoch}]")
    echo.write("\rfold 0: 100%|####| 3/3 [00:03<00:00, loss=0.3, val_lwlrap=0.9]\n")
    echo.write("a table row the notebook printed\nEpoch 4 done\n")
    assert [s.strip()[:12] for s in said] == ["fold 0:  33%", "fold 0:  66%", "fold 0: 100%",
                                              "Epoch 4 done"]


def test_crop_check_spares_embedding_heads_and_names_the_shortest_recording():
    errors, _ = preflight.check_settings("04_training[b]", {"crop_s": 12.0, "backbone": "birdnet"},
                                         _parts(2))
    assert errors == []
    errors, _ = preflight.check_settings("04_training[c]", {"crop_s": 12.0}, _parts(2, 9.5))
    assert errors == ["notebook 04_training[c]: crop_s = 12.0 s is longer than the shortest "
                      "recording (9.50 s, train/r0.flac); training crops and inference windows "
                      "must fit in every recording: use -p crop_s 9.5 or less"]
