"""The notebook series: its shape (committed clean, one typed parameters cell) and one slow test
that runs every notebook 01..08 in order through papermill on tiny data into one run folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from rfcxlib.runner import profiles, series

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01", "02", "03", "04", "05", "06", "07", "08"]


def test_the_series_is_complete():
    assert [p.name[:2] for p in NOTEBOOKS] == EXPECTED, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean_with_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"] == {"name": "rfcx", "display_name": "Python (rfcx)",
                                         "language": "python"}, "JupyterLab opens the project's kernel"
    assert nb.cells[0].cell_type == "markdown", "a header: purpose, inputs, outputs"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "committed without outputs"
    declared = profiles.declared_parameters(path)
    for name in ("data_dir", "run_dir", "profile", "data_seed"):
        assert name in declared, f"{path.name} declares {name}"
    assert declared["data_dir"]["default"] in ('""', "''")
    assert declared["run_dir"]["default"] in ('""', "''")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_parameter_is_typed_and_the_notebook_opens_with_one_call(path):
    """``papermill --help-notebook`` lists a type and a help text for every parameter; the cell
    after the parameters opens the notebook (data, configuration, run folder) in one call."""
    import papermill

    inferred = papermill.inspect_notebook(str(path))
    declared = profiles.declared_parameters(path)
    assert list(inferred) == list(declared)
    for name, spec in inferred.items():
        assert spec["inferred_type_name"] == declared[name]["inferred_type_name"] != "None", name
        assert spec["inferred_type_name"] != "list", f"{name}: declare the items' type (list[int])"
        assert spec["help"], f"{name}: a comment says what it is"
    nb = nbformat.read(path, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    assert f'session = notebook.start("{path.stem}", globals())' in nb.cells[at + 1].source
    calls = sum(c.source.count("notebook.start(") for c in nb.cells if c.cell_type == "code")
    assert calls == 1 and not any("write_config(" in c.source for c in nb.cells)


@pytest.mark.parametrize("profile", ["tiny", "mini", "field", "full"])
def test_profiles_name_only_parameters_the_notebooks_declare(profile, tmp_path, monkeypatch):
    """Every profile resolves against the real notebooks (an unknown name would raise)."""
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path))
    data = tmp_path / "data"
    for name in ("train", "test"):
        (data / name).mkdir(parents=True)
    for name in ("train_tp.csv", "train_fp.csv", "sample_submission.csv"):
        (data / name).write_text("recording_id\n")
    # the names and values only: the full profile's ImageNet weights are checked in test_series.py
    planned = series.prepare(profile=profile, data_dir=str(data), run_id="plan", kernel="python3",
                             check_weights=False)
    prefixes = [s.notebook.name[:2] for s in planned.steps]
    assert sorted(set(prefixes)) == EXPECTED and prefixes.count("04") >= 2, prefixes


@pytest.mark.slow
def test_every_notebook_runs_in_order_on_tiny_data(tmp_path):
    env = {**os.environ, "RFCX_OUTPUTS": str(tmp_path / "outputs"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "rfcxlib", "run", "--profile", "tiny",
                           "--run-id", "series"], env=env, capture_output=True, text=True,
                          timeout=1800)
    run = tmp_path / "outputs" / "series"
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    state = json.loads((run / "series.json").read_text())
    assert [k[:2] for k in state["order"]][:1] == ["01"]
    assert all(s["status"] == "completed" for s in state["steps"].values())
    for key in state["order"]:
        executed = nbformat.read(state["steps"][key]["output"], as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs
                  if o.output_type == "error"]
        assert not errors, f"{key}: {errors}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["models"]) >= 2
    assert all(0.0 <= m["test_lwlrap"] <= 1.0 for m in metrics["models"].values())
    assert 0.0 <= metrics["ensemble"]["test_lwlrap"] <= 1.0
    assert "ensemble test LWLRAP" in done.stdout
    submission = pd.read_csv(run / "submission.csv")
    assert list(submission.columns) == ["recording_id"] + [f"s{i}" for i in range(24)]
    assert (run / "summary.html").exists() and list((run / "figures").glob("*.png"))
    assert json.loads((run / "predictions" / "report.json").read_text())["counts"]["done"] == 1  # 07
    assert json.loads((run / "config.json").read_text())["series"]["steps"]
