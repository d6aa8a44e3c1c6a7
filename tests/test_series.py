"""The series runner (``rfcx run``): real papermill, a real kernel, small notebooks in tmp dirs."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from rfcxlib.runner import console, profiles, series
from rfcxlib.reports import summary
from rfcxlib.errors import DataError, ParameterError, RunFailed

ROOT = Path(__file__).resolve().parent.parent
KERNEL = {"name": "python3", "display_name": "Python 3", "language": "python"}

PARAMS = '''data_dir: str = ""  # data folder
run_dir: str = ""  # run folder
profile: str = "mini"  # synthetic profile
data_seed: int = 0  # synthetic seed
'''
LOG = '''from pathlib import Path
Path(run_dir, "executions.log").open("a").write("{name}\\n")
'''
METRICS = '''import json
from rfcxlib.runner.run_dir import RunDir
run = RunDir(run_dir)
{body}
'''


def _notebook(path: Path, params: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = KERNEL
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"),
                nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


@pytest.fixture
def series_dir(tmp_path) -> Path:
    """A four-notebook series: 01 logs, 02 can hold or fail, 04 trains (swept), 06 ensembles."""
    folder = tmp_path / "nbs"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", PARAMS + "scale: float = 1.0  # a float\n",
              LOG.format(name="01"), "assert isinstance(scale, float), scale")
    _notebook(folder / "02_second.ipynb", PARAMS + "hold_s: float = 0.0  # wait\n"
              "fail: bool = False  # raise\n", LOG.format(name="02"),
              "import time\nPath(run_dir, 'holding').touch()\ntime.sleep(hold_s)",
              "if fail:\n    raise ValueError('the second notebook failed on purpose')")
    _notebook(folder / "04_train.ipynb", PARAMS + 'model_name: str = "m"  # model\n'
              "epochs: int = 1  # epochs\n", LOG.format(name="04"),
              METRICS.format(body="(run.model_dir(model_name) / 'weights.txt').write_text(str(epochs))"
                             "\nrun.update_metrics('models', "
                             "{model_name: {'oof_lwlrap': 0.5 + epochs / 100}})"))
    _notebook(folder / "06_ensemble.ipynb", PARAMS, LOG.format(name="06"),
              METRICS.format(body="names = [p.name for p in run.model_dirs()]\n"
                             "run.update_metrics('ensemble', {'oof_lwlrap': 0.9, 'n': len(names)})"
                             "\nrun.figures.mkdir(exist_ok=True)\n"
                             "import matplotlib; matplotlib.use('Agg')\n"
                             "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
                             "ax.plot([0, 1])\nrun.save_figure(fig, 'ensemble_curve')"))
    return folder


@pytest.fixture
def fake_data(tmp_path) -> Path:
    """A folder in the RFCx layout without recordings (tables with their headers only): the
    runner's checks pass; the notebooks here read none of it."""
    from rfcxlib.data.checks import COLUMNS, SUBMISSION_COLUMNS

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for name in ("train_tp.csv", "train_fp.csv"):
        (root / name).write_text(",".join(COLUMNS) + "\n")
    (root / "sample_submission.csv").write_text(",".join(SUBMISSION_COLUMNS) + "\n")
    return root


@pytest.fixture
def profile_file(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text("description: test profile\nparameters:\n  profile: tiny\n"
                    "notebooks:\n  '04': {epochs: 2}\n"
                    "sweep:\n  - {model_name: a, epochs: 3}\n  - {model_name: b}\n")
    return path


# ``rfcx`` through ``rfcxlib.cli.main`` with only the ``run`` subcommand registered, so that these
# tests do not depend on the other subcommands' modules (the last test runs the full entry point).
RFCX = [sys.executable, "-c", "import sys; from rfcxlib import cli; "
        "cli.COMMANDS = {'run': cli.COMMANDS['run']}; sys.exit(cli.main(sys.argv[1:]))"]


def _rfcx(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*RFCX, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300, **kwargs)


def _env(tmp_path) -> dict:
    return {**os.environ, "RFCX_OUTPUTS": str(tmp_path / "outputs"), "TF_CPP_MIN_LOG_LEVEL": "3"}


def test_durations_read_in_seconds_then_minutes():
    assert console.format_duration(12.34) == "12.3 s"
    assert console.format_duration(433.0) == "7 min 13 s"
    assert console.strip_ansi("\x1b[0;31mValueError\x1b[0m: bad") == "ValueError: bad"


def test_parse_value_reads_yaml_scalars_like_papermill():
    assert profiles.parse_value("3") == 3 and profiles.parse_value("0.5") == 0.5
    assert profiles.parse_value("1e-3") == 0.001 and profiles.parse_value("true") is True
    assert profiles.parse_value("[0, 1]") == [0, 1] and profiles.parse_value("null") is None
    assert profiles.parse_value("densenet121") == "densenet121"
    assert profiles.parse_value("007", "str") == "007"


def test_plan_resolves_precedence_sweep_and_types(series_dir, profile_file, fake_data, tmp_path,
                                                  monkeypatch):
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path / "out"))
    s = series.prepare(profile=str(profile_file), run_id="plan", data_dir=str(fake_data),
                       folder=str(series_dir), overrides={"01.scale": "2", "data_seed": "5"})
    keys = [step.key for step in s.steps]
    assert keys == ["01_first", "02_second", "04_train[a]", "04_train[b]", "06_ensemble"]
    p = {step.key: step.parameters for step in s.steps}
    assert p["01_first"]["scale"] == 2.0 and isinstance(p["01_first"]["scale"], float)
    assert p["04_train[a]"]["epochs"] == 3 and p["04_train[b]"]["epochs"] == 2
    assert p["04_train[b]"]["model_name"] == "b" and p["02_second"]["profile"] == "tiny"
    assert all(v["data_seed"] == 5 and v["data_dir"] == str(fake_data) for v in p.values())
    assert s.steps[2].output.name == "04_train-a.ipynb"
    sweep = tmp_path / "three.yaml"
    sweep.write_text("parameters: {epochs: 7}\nmodels:\n  - {model_name: x}\n"
                     "  - {model_name: y, epochs: 9}\n  - {model_name: z}\n")
    s = series.prepare(profile=str(profile_file), run_id="plan", data_dir=str(fake_data),
                       folder=str(series_dir), sweep=str(sweep), select="04,06")
    assert [(st.key, st.parameters.get("epochs")) for st in s.steps] == [
        ("04_train[x]", 7), ("04_train[y]", 9), ("04_train[z]", 7), ("06_ensemble", None)]


def test_a_broken_state_file_is_named(series_dir, profile_file, fake_data, tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path / "out"))
    state = tmp_path / "out" / "cut" / "series.json"
    state.parent.mkdir(parents=True)
    state.write_text('{"steps": {"01_first": {"status": "comp')
    with pytest.raises(RunFailed, match=rf"^{state}: not valid JSON \(.*line 1, column .*\); move it away"):
        series.prepare(profile=str(profile_file), run_id="cut", data_dir=str(fake_data), folder=str(series_dir))


def test_unknown_names_and_profiles_give_clear_errors(series_dir, profile_file, fake_data,
                                                      tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path / "out"))
    kw = dict(profile=str(profile_file), data_dir=str(fake_data), folder=str(series_dir))
    with pytest.raises(ParameterError, match=r"unknown parameter \(-p\) 'epoch'.*'epochs'"):
        series.prepare(overrides={"epoch": "3"}, **kw)
    with pytest.raises(ParameterError, match=r"unknown parameter \(-p, notebook 01\) 'epochs'"):
        series.prepare(overrides={"01.epochs": "3"}, **kw)
    with pytest.raises(ParameterError, match=r"01_first.ipynb: parameter 'scale' = 'big': expected .* float"):
        series.prepare(overrides={"01.scale": "big"}, **kw)
    with pytest.raises(ParameterError, match=r"unknown profile .*'huge'; valid choices: .*'mini'"):
        series.prepare(profile="huge", folder=str(series_dir))
    with pytest.raises(ParameterError, match=r"-p data_dir: use --data-dir"):
        series.prepare(overrides={"data_dir": "/x"}, **kw)
    with pytest.raises(DataError, match=r"missing train_tp.csv"):
        series.prepare(profile=str(profile_file), data_dir=str(tmp_path), folder=str(series_dir))
    with pytest.raises(ParameterError, match=r"unknown notebook '05'"):
        series.prepare(select="01,05", **kw)
    bad = tmp_path / "bad_sweep.yaml"
    bad.write_text("models:\n  - {model_name: a, epohcs: 2}\n")
    with pytest.raises(ParameterError, match=r"unknown parameter \(sweep .*bad_sweep.yaml, entry 1 \(a\)\) 'epohcs'"):
        series.prepare(sweep=str(bad), **kw)


def test_project_profiles_and_sweep_files_parse():
    for name in ("tiny", "mini", "field", "full"):
        body = profiles.load_profile(name)
        assert body["parameters"]["profile"] == name
    seed = profiles.load_sweep("seed_densenet7.yaml")
    assert len(seed["models"]) == 7 and len({m["model_name"] for m in seed["models"]}) == 7
    assert profiles.load_profile("mini")["sweep"]["models"], "make run trains several models"


def test_run_resume_after_kill_skips_finished_notebooks(series_dir, profile_file, fake_data,
                                                        tmp_path):
    env = _env(tmp_path)
    args = ["run", "--profile", profile_file, "--data-dir", fake_data, "--notebooks-dir",
            series_dir, "--run-id", "r1", "--kernel", "python3"]
    run = tmp_path / "outputs" / "r1"
    proc = subprocess.Popen([*RFCX, *map(str, args), "-p",
                             "02.hold_s", "120"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (run / "holding").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (run / "holding").exists(), "the series did not reach notebook 02"
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, in the middle of 02
    proc.wait(timeout=30)
    state = json.loads((run / "series.json").read_text())
    assert state["steps"]["01_first"]["status"] == "completed"
    assert state["steps"]["02_second"]["status"] == "running"

    done = _rfcx(*args, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "01_first: done before with the same parameters, skipped" in done.stdout
    assert (run / "executions.log").read_text().split() == ["01", "02", "02", "04", "04", "06"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["models"] == {"a": {"oof_lwlrap": 0.53}, "b": {"oof_lwlrap": 0.52}}
    assert "best model out-of-fold LWLRAP (masked): 0.5300 (model a)" in done.stdout
    assert "ensemble out-of-fold LWLRAP (masked): 0.9000" in done.stdout
    config = json.loads((run / "config.json").read_text())["series"]
    assert [s["key"] for s in config["steps"]][2:4] == ["04_train[a]", "04_train[b]"]
    page = (run / "summary.html").read_text()
    assert "completed" in page and "src='data:image/png;base64,iVBOR" in page and "0.5300" in page
    linked = summary.write_summary(run, embed=False, name="linked.html").read_text()
    assert "src='figures/ensemble_curve.png'" in linked
    assert not (run / "run.lock").exists(), "the lock goes with the process that held it"

    again = _rfcx(*args, env=env)  # everything done: nothing re-executes
    assert again.returncode == 0 and again.stdout.count("skipped") == 5
    changed = _rfcx(*args, "-p", "04.epochs", "4", env=env)  # from 04 on, again
    assert changed.returncode == 0
    assert (run / "executions.log").read_text().split()[6:] == ["04", "04", "06"]

    shutil.rmtree(run / "models" / "a")  # deleted to train it again: a runs, b does not, 06 does
    redo = _rfcx(*args, "-p", "04.epochs", "4", env=env)
    assert redo.returncode == 0, redo.stdout + redo.stderr
    assert "04_train[a]: done before, but models/a/weights.txt no longer exist" in redo.stdout
    assert "04_train[b]: done before with the same parameters, skipped" in redo.stdout
    assert (run / "executions.log").read_text().split()[9:] == ["04", "06"]
    assert (run / "models" / "a" / "weights.txt").read_text() == "4"
    products = json.loads((run / "series.json").read_text())["steps"]["04_train[a]"]["products"]
    assert products == ["executions.log", "models/a/weights.txt"]  # what it wrote or changed


def test_failure_reports_cell_error_and_notebook_path(series_dir, profile_file, fake_data,
                                                      tmp_path):
    env = _env(tmp_path)
    done = _rfcx("run", "--profile", profile_file, "--data-dir", fake_data, "--notebooks-dir",
                 series_dir, "--run-id", "bad", "--kernel", "python3", "-p", "fail", "true",
                 env=env)
    run = tmp_path / "outputs" / "bad"
    assert done.returncode == 1
    assert "ValueError: the second notebook failed on purpose" in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("rfcx run: error: 02_second (02_second.ipynb): cell [")
    assert "the second notebook failed on purpose; see the executed notebook" in last
    assert "Traceback" not in done.stderr
    assert json.loads((run / "series.json").read_text())["status"] == "failed"
    assert f"the partly executed notebook: {run / 'notebooks' / '02_second.ipynb'}" in done.stdout
    assert (run / "notebooks" / "02_second.ipynb").exists()
    assert not (run / "notebooks" / "04_train-a.ipynb").exists()
    page = (run / "summary.html").read_text()
    assert "failed" in page and "failed on purpose" in page


def test_cli_errors_exit_2_with_message(tmp_path, series_dir):
    done = subprocess.run([sys.executable, "-m", "rfcxlib", "run", "--profile", "nope",
                           "--notebooks-dir", str(series_dir)], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown profile" in done.stderr and "'tiny'" in done.stderr


def test_data_dir_without_ground_truth(tiny_data_dir, tmp_path, series_dir, profile_file):
    data = tmp_path / "kaggle_like"
    shutil.copytree(tiny_data_dir, data)
    (data / "test_ground_truth.csv").unlink()
    done = _rfcx("run", "--profile", profile_file, "--data-dir", data, "--notebooks-dir",
                 series_dir, "--run-id", "nogt", "--notebooks", "01,04,06", "--kernel",
                 "python3", env=_env(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "has no test_ground_truth.csv" in done.stdout
    assert "best model out-of-fold LWLRAP (masked)" in done.stdout
    page = (tmp_path / "outputs" / "nogt" / "summary.html").read_text()
    assert "no: validation scores are reported" in page and "train recordings" in page


def test_headline_prefers_test_scores_and_averages_folds():
    metrics = {"models": {"a": {"test_lwlrap": 0.7, "oof_lwlrap": 0.9},
                          "b": {"test_lwlrap": 0.8, "val_lwlrap": [0.5, 0.7]}},
               "ensemble": {"test_lwlrap": 0.85}}
    assert summary.headline(metrics) == [("best model test LWLRAP", "0.8000 (model b)"),
                                         ("ensemble test LWLRAP", "0.8500")]
    assert summary.headline({"models": {"a": {"val_lwlrap": {"0": 0.4, "1": 0.6}}}}) == [
        ("best model validation LWLRAP (masked)", "0.5000 (model a)")]


def test_declared_parameters_reads_types_defaults_and_quoted_comments(tmp_path):
    path = _notebook(tmp_path / "01_x.ipynb", 'data_dir = ""  # str: "" = synthetic\n'
                     "epochs: int = 3  # how many\nlr = 1e-3\nfolds = [0, 1]\nweights = None\n")
    declared = profiles.declared_parameters(path)
    assert {k: v["inferred_type_name"] for k, v in declared.items()} == {
        "data_dir": "str", "epochs": "int", "lr": "float", "folds": "list", "weights": "None"}
    assert declared["data_dir"]["help"] == 'str: "" = synthetic'
    assert declared["epochs"]["default"] == "3"
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].metadata["tags"] = []
    nbformat.write(nb, path)
    with pytest.raises(DataError, match=r"01_x.ipynb: expected exactly one cell tagged"):
        profiles.declared_parameters(path)


@pytest.mark.parametrize("entry, message", [
    ("backbone: densnet121", r"unknown value for 'backbone': 'densnet121'; valid choices: .*'densenet121'"),
    ("loss: lsoft", r"unknown value for 'loss': 'lsoft'; valid choices: .*'lsoft_tp'"),
    ("attention: paralel", r"unknown value for 'attention': 'paralel'; valid choices: .*'parallel_time'"),
    ("p_resize_crp: 0.5", r"unknown parameter \(sweep .*typos.yaml, entry 2 \(typo\)\) 'p_resize_crp'; "
                          r"valid choices: .*'p_resize_crop'"),
    ("p_noise: -0.1", r"'p_noise' = -0.1: expected a probability in \[0, 1\]"),
])
def test_dry_run_stops_at_a_typo_in_any_sweep_entry(tmp_path, entry, message):
    """The project's notebooks and the tiny profile: every sweep entry's RunConfig is built
    before anything runs, and the error names the entry and the valid choices."""
    import re

    sweep = tmp_path / "typos.yaml"
    sweep.write_text(f"models:\n  - {{model_name: fine}}\n  - {{model_name: typo, {entry}}}\n")
    done = _rfcx("run", "--profile", "tiny", "--dry-run", "--sweep", sweep, env=_env(tmp_path))
    assert done.returncode != 0, done.stdout
    assert "typo" in done.stderr and re.search(message, done.stderr), done.stderr
    assert "04_training[fine]" not in done.stdout  # nothing was planned, let alone run
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_dry_run_shows_the_seed_models_and_says_when_imagenet_cannot_be_had(tmp_path):
    env = {**_env(tmp_path), "KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}
    seed = ("--profile", "tiny", "--dry-run", "--notebooks", "04", "--sweep", "seed_densenet7.yaml")
    done = _rfcx("run", *seed, env=env)
    assert done.returncode == 1, done.stderr
    assert "ImageNet weights for densenet121" in done.stderr and "d121_c6" in done.stderr
    assert all(way in done.stderr for way in ("local weights file", "KERAS_HOME", '-p weights ""'))
    assert "parallel_time attention + attention_v2, loss lsoft_tp" in done.stdout
    assert "SpecAugment time 50 (p 0.5) / freq 16 (p 0.5)" in done.stdout and "resize_crop 0.5" in done.stdout
    cached = tmp_path / "keras" / "models"
    cached.mkdir(parents=True)
    for name in ("densenet121", "densenet169", "densenet201"):
        (cached / f"{name}_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(b"")
    assert _rfcx("run", *seed, env=env).returncode == 0  # a warm cache: the run may start
    offline = _rfcx("run", *seed, "-p", "weights", "", env={**env, "KERAS_HOME": str(tmp_path / "cold")})
    assert offline.returncode == 0, offline.stderr
