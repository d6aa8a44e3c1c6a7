import json
from pathlib import Path

import pytest

from rfcxlib.config import RunConfig
from rfcxlib.errors import ParameterError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def parameters_cell(notebook: str) -> dict:
    """The values a notebook's ``parameters`` cell declares, read from the ``.ipynb`` and run."""
    cells = json.loads((NOTEBOOKS / f"{notebook}.ipynb").read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    namespace: dict = {}
    exec("".join(cell["source"]), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


def test_defaults_are_notebook_04s_declared_defaults():
    declared = parameters_cell("04_training")
    defaults = RunConfig().flat()
    shared = sorted(set(declared) & set(defaults))
    assert len(shared) > 50, "notebook 04 declares the model it trains"
    for name in shared:
        value = declared[name]
        value = None if name == "weights" and value == "" else value
        value = tuple(value) if isinstance(value, list) else value
        assert defaults[name] == value, f"RunConfig() has {name}={defaults[name]!r}, notebook 04 {value!r}"
    assert RunConfig.from_notebook(declared) == RunConfig()


def test_defaults_round_trip_through_json(tmp_path):
    cfg = RunConfig()
    path = cfg.save(tmp_path / "config.json")
    assert RunConfig.load(path) == cfg
    assert json.loads(path.read_text())["features"]["n_mels"] == 48


def test_from_params_sorts_flat_names_into_sections():
    cfg = RunConfig.from_params({"backbone": "densenet121", "crop_s": 7, "train_folds": [0, 2],
                                 "n_mels": 64})
    assert cfg.model.backbone == "densenet121"
    assert cfg.audio.crop_s == 7.0 and isinstance(cfg.audio.crop_s, float)
    assert cfg.train.train_folds == (0, 2)
    assert cfg.features.n_mels == 64


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(ParameterError, match=r"unknown parameter 'n_mel'.*'n_mels'"):
        RunConfig.from_params({"n_mel": 64})


def test_ignored_names_are_skipped():
    cfg = RunConfig.from_params({"run_dir": "x", "epochs": 3}, ignore={"run_dir"})
    assert cfg.train.epochs == 3


@pytest.mark.parametrize("params, match", [
    ({"fmin": 20000.0}, r"'fmin' = 20000.0: expected 0 <= fmin < fmax"),
    ({"n_fft": 1000}, r"'n_fft' = 1000: expected a positive power of two"),
    ({"p_mixup": 1.5}, r"'p_mixup' = 1.5: expected a probability"),
    ({"log": "ln"}, r"unknown value for 'log'.*'log1p'"),
    ({"train_folds": [7]}, r"'train_folds' = \(7,\)"),
    ({"epochs": "three"}, r"'epochs' = 'three': expected a value of type int"),
])
def test_bad_values_name_the_parameter(params, match):
    with pytest.raises(ParameterError, match=match):
        RunConfig.from_params(params)


def test_replace_keeps_other_values():
    cfg = RunConfig().replace(epochs=2)
    assert cfg.train.epochs == 2 and cfg.features.hop_length == 2048


def test_choices_are_the_implemented_ones():
    from rfcxlib import config, models
    from rfcxlib.training import losses

    assert set(config.BACKBONES) - {"birdnet"} == set(models.BACKBONES)  # birdnet: rfcxlib.embeddings.head_folds
    assert set(config.ATTENTIONS) == set(models.ARRANGEMENTS)
    assert set(config.HEADS) == set(models.HEAD_BUILDERS)
    assert set(config.LOSSES) == set(losses.LOSSES) | set(losses.FRAME_LOSSES)


@pytest.mark.parametrize("params, match", [
    ({"backbone": "densnet121"}, r"unknown value for 'backbone': 'densnet121'.*'densenet121'"),
    ({"attention": "paralel"}, r"unknown value for 'attention': 'paralel'.*'parallel_time'"),
    ({"head": "v2"}, r"unknown value for 'head': 'v2'.*'attention_v2'"),
    ({"loss": "lsoft"}, r"unknown value for 'loss': 'lsoft'.*'lsoft_tp'"),
    ({"mask_impl": "torch"}, r"unknown value for 'mask_impl': 'torch'.*'tfio'"),
    ({"p_resize_crop": -0.2}, r"'p_resize_crop' = -0.2: expected a probability in \[0, 1\]"),
    ({"tta": -1}, r"'tta' = -1: expected an integer >= 0"),
    ({"loss": "sed"}, r"'loss' = 'sed'.*head='sed'"),
])
def test_typos_fail_at_creation(params, match):
    with pytest.raises(ParameterError, match=match):
        RunConfig.from_params(params)


def test_from_notebook_keeps_configuration_names_only():
    namespace = {"backbone": "densenet121", "weights": "", "model_name": "m", "run_dir": "/x",
                 "p_noise": 0.5, "tta": 2}
    cfg = RunConfig.from_notebook(namespace)
    assert cfg.model.backbone == "densenet121" and cfg.model.weights is None
    assert cfg.augment.p_noise == 0.5 and cfg.inference.tta == 2
    assert RunConfig.from_notebook({"weights": "imagenet"}).model.weights == "imagenet"
