"""A notebook's opening call (rfcxlib.runner.notebook.start): parameters read from the annotations and
checked, the configuration built with the notebook's rules, the data found, config.json written."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rfcxlib import ParameterError, layout
from rfcxlib.config import RunConfig
from rfcxlib.runner import notebook, profiles
from rfcxlib.synth import sounds as synth_sounds
from rfcxlib.runner.plan import Step, discover, notebooks_dir
from rfcxlib.runner.step_configs import step_config

BASE = {"data_dir": "", "run_dir": "", "profile": "tiny", "data_seed": 0}


def namespace(**values) -> dict:
    """A notebook's globals() after a parameters cell that declares ``values`` (their types)."""
    values = {**BASE, **values}
    return {"__annotations__": {k: type(v) for k, v in values.items()}, "In": [], **values}


def test_parameters_are_the_annotated_names_checked_and_typed():
    ns = namespace(epochs=15, learning_rate=0.003, train_folds=[0])
    ns.update(learning_rate=1, train_folds=2, stray=object())  # injected by papermill; not a parameter
    ns["__annotations__"]["train_folds"] = list[int]
    params = notebook.parameters(ns, "04_training")
    assert set(params) == {*BASE, "epochs", "learning_rate", "train_folds"}
    assert params["learning_rate"] == 1.0 and isinstance(params["learning_rate"], float)
    assert params["train_folds"] == [2] and ns["train_folds"] == [2], "the namespace holds the checked values"


@pytest.mark.parametrize("change, match", [
    (dict(epochs="many"), r"notebook 04_training: parameter 'epochs' = 'many': expected a value of type int"),
    (dict(epochs=2.5), r"'epochs' = 2.5: expected a value of type int"),
    (dict(train_folds=["a"]), r"'train_folds' = \['a'\]: expected a value of type list\[int\]"),
])
def test_a_value_of_the_wrong_type_names_the_parameter(change, match):
    ns = namespace(epochs=15, train_folds=[0])
    ns["__annotations__"]["train_folds"] = list[int]
    ns.update(change)
    with pytest.raises(ParameterError, match=match):
        notebook.parameters(ns, "04_training")


def test_parameters_need_the_parameters_cell_and_its_required_names():
    with pytest.raises(ParameterError, match="no typed parameters found; run the parameters cell"):
        notebook.parameters({"epochs": 3}, "04_training")
    ns = namespace()
    del ns["__annotations__"]["run_dir"]
    with pytest.raises(ParameterError, match="the parameters cell lacks run_dir"):
        notebook.parameters(ns, "01_eda")
    ns = namespace()
    del ns["profile"]
    with pytest.raises(ParameterError, match="parameter 'profile' is declared without a value"):
        notebook.parameters(ns, "01_eda")


def test_rules_tie_fix_and_keep_own_names():
    c02 = notebook.config_of("02_spectrograms", {**BASE, "n_fft": 1024, "hop_length": 256})
    assert c02.features.win_length == 1024 == c02.features.n_fft
    c03 = notebook.config_of("03_augmentations", {**BASE, "seed": 7, "p_gain": 0.0})
    assert c03.train.seed == 0, "notebook 03's seed draws its figures, it is not the training seed"
    assert c03.augment.p_gain == 1.0 and c03.augment.p_band_filter == RunConfig().augment.p_band_filter
    assert notebook.config_of("04_training", {**BASE, "weights": ""}).model.weights is None
    with pytest.raises(ParameterError, match="unknown value for 'backbone'"):
        notebook.config_of("04_training", {**BASE, "backbone": "densenet12"})


def test_notebook_05_declares_what_it_needs_and_resolves_as_before():
    """Notebook 05's configuration from its parameters cell alone, no rule added: the same as the
    one recorded in ``tests/data/notebook_05_config.json`` (built when rules still fixed its
    ``channels``, ``log`` and ``checkpoint``; ``log`` since changed on purpose to ``pcen``, the
    field work's front-end)."""
    path = notebooks_dir() / "05_noisy_labels.ipynb"
    declared = {k: ast.literal_eval(v["default"]) for k, v in profiles.declared_parameters(path).items()}
    assert notebook.rules_for(path.stem).fixed == {}
    recorded = json.loads((Path(__file__).parent / "data" / "notebook_05_config.json").read_text())
    assert notebook.config_of(path.stem, declared) == RunConfig.from_dict(recorded)
    assert {"channels", "log", "checkpoint", "band_mode", "p_band_filter"} <= set(declared)


def test_every_augmentation_is_the_steps_notebook_03_shows():
    from rfcxlib.features import augment

    shown = {f"p_{name}" for name in [*augment.WAVE_STEPS, *augment.IMAGE_STEPS, "mixup"]}
    assert set(notebook.EVERY_AUGMENTATION) == shown


@pytest.mark.parametrize("path", discover(notebooks_dir()), ids=lambda p: p.stem)
def test_a_dry_run_builds_what_the_notebook_builds(path):
    declared = profiles.declared_parameters(path)
    assert path.stem in notebook.RULES
    step = Step(key=path.stem, notebook=path, output=path, parameters={})
    expected = notebook.config_of(path.stem, {k: ast.literal_eval(v["default"]) for k, v in declared.items()})
    assert step_config(step) == expected


def test_start_opens_the_data_and_the_run_and_writes_config_json(tiny_data_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    ns = namespace(data_dir=str(tiny_data_dir), run_dir=str(run_dir), n_fft=1024, recording_id="")
    session = notebook.start("02_spectrograms", ns)
    assert session.root == tiny_data_dir and session.run.path == run_dir and session.strategy is None
    assert len(session.dataset.train_ids) > 0 and session.config.features.win_length == 1024
    assert f"data: {tiny_data_dir}\nrun:  {run_dir}" in capsys.readouterr().out
    session.note(model_name="m")
    body = json.loads((run_dir / "config.json").read_text())
    assert body["features"]["n_fft"] == 1024
    section = body["notebooks"]["02_spectrograms"]
    assert section["parameters"]["recording_id"] == "" and section["parameters"]["model_name"] == "m"
    assert section["resolved"]["features"]["win_length"] == 1024


def test_start_refuses_an_unknown_notebook_unless_given_its_rules(tmp_path):
    with pytest.raises(ParameterError, match=r"unknown notebook '04_trainig'; valid choices: '01_eda'"):
        notebook.start("04_trainig", namespace())
    with pytest.raises(ParameterError, match=r"parameter 'data_seed' = 'x'"):
        notebook.start("08_mine", namespace(data_seed="x"), rules=notebook.Rules())


def test_the_layout_names_agree():
    assert layout.SUBMISSION_COLUMNS == ["recording_id"] + [f"s{s}" for s in range(24)]
    assert sorted(synth_sounds.SPECIES) == list(range(layout.NUM_SPECIES))


def test_only_a_training_notebook_creates_the_strategy_first(tiny_data_dir, tmp_path):
    """06 opens without importing TensorFlow; 04 holds the strategy training will use."""
    code = ("import sys\nfrom rfcxlib.runner import notebook\n"
            f"ns = {{'__annotations__': {{k: str for k in ('data_dir', 'run_dir', 'profile')}} | {{'data_seed': int}},\n"
            f"      'data_dir': {str(tiny_data_dir)!r}, 'run_dir': {str(tmp_path / 'r6')!r}, 'profile': 'tiny', 'data_seed': 0}}\n"
            "session = notebook.start('06_ensembling', ns)\n"
            "assert session.strategy is None and 'tensorflow' not in sys.modules, sorted(sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from rfcxlib.training import distribute

    session = notebook.start("04_training", namespace(data_dir=str(tiny_data_dir), run_dir=str(tmp_path / "r4")))
    assert session.strategy is distribute.init_strategy()
