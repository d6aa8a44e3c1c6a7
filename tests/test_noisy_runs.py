"""The noisy-label comparison on the tiny synthetic data set: every method trains, writes the
training contract's files, is scored the same way, and an interrupted comparison resumes."""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from rfcxlib.data import tables as data
from rfcxlib.noisy import compare, coteaching, pseudo_labels
from rfcxlib.training import train
from rfcxlib.config import RunConfig
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.models import load_model
from simulated_kill import killed_as_epoch_starts

CONFIG = dict(n_mels=32, hop_length=1024, crop_s=2.0, batch_size=8, epochs=1, steps_per_epoch=0, channels=1,
              folds=3, hop_s=3.0, p_band_filter=0.0, band_mode=False, log="log1p", time_mask=50, freq_mask=16,
              head="attention_v2", base_units=256, learning_rate=1e-3, checkpoint="best")


def tiny_model(config, input_shape):
    """A few-hundred-parameter CNN: these tests check the plumbing, not the scores."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(24)(x))


@pytest.fixture(scope="module")
def tiny_dataset(tiny_data_dir):
    return data.load_dataset(tiny_data_dir)


@pytest.fixture(scope="module")
def comparison(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("noisy")
    config = RunConfig.from_params(CONFIG)
    results = compare.compare_methods(tiny_dataset, config, out, seeds=[0], build_fn=tiny_model,
                                         pseudo_threshold=0.3, results_csv=out / "results.csv",
                                         progress=False)
    return out, config, results


@pytest.mark.slow
def test_every_method_writes_the_training_contract(comparison, tiny_dataset):
    out, config, results = comparison
    assert list(results["method"]) == list(compare.CNN_METHODS)
    assert results[["val_lwlrap", "test_lwlrap"]].apply(lambda s: s.between(0, 1)).all().all()
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results, check_dtype=False)
    _, valid_ids = train.fold_split(tiny_dataset, config, 0)
    y_valid, mask_valid = tiny_dataset.targets_matrix(valid_ids)
    for method in compare.CNN_METHODS:
        folder = out / f"{method}-seed0"
        for name in ("config.json", "history.csv", "metrics.json", "model.keras"):
            assert (folder / name).exists(), (method, name)
        oof = np.load(folder / "oof.npz")
        assert list(oof["recording_ids"]) == valid_ids and oof["logits"].shape == (len(valid_ids), 24)
        np.testing.assert_allclose(oof["scores"], 1 / (1 + np.exp(-oof["logits"])), rtol=1e-5)
        # scores are always against the original labels, pseudo-labels included
        np.testing.assert_array_equal(oof["y"], y_valid)
        np.testing.assert_array_equal(oof["mask"], mask_valid)
        test = np.load(folder / "test_scores.npz")
        assert list(test["recording_ids"]) == tiny_dataset.test_ids and test["scores"].shape == (12, 24)
    # pseudo-labelling starts from the naive_bce models of the same seed instead of training them again
    assert not (out / "pseudo_labels-seed0" / "round0").exists()
    pseudo = pd.read_csv(out / "pseudo_labels-seed0" / "pseudo_labels.csv")
    assert pseudo["new_rows"].sum() > 0 and pseudo["pseudo_precision"].between(0, 1).all()
    history = pd.read_csv(out / "coteaching-seed0" / "history.csv")
    assert {"keep_rate", "loss_a", "loss_b", "kept_unknown"} <= set(history.columns)


@pytest.mark.slow
def test_an_interrupted_comparison_resumes_without_training_again(comparison, tiny_dataset):
    out, config, results = comparison
    stamp = (out / "masked_bce-seed0" / "metrics.json").stat().st_mtime_ns
    again = compare.compare_methods(tiny_dataset, config, out, methods=["naive_bce", "masked_bce"],
                                       seeds=[0], build_fn=tiny_model, progress=False)
    assert (out / "masked_bce-seed0" / "metrics.json").stat().st_mtime_ns == stamp
    assert (again["train_s"] < 1.0).all()
    np.testing.assert_allclose(again["test_lwlrap"], results["test_lwlrap"][:2])


def test_rerun_reuses_unchanged_methods_and_retrains_changed_ones(tiny_dataset, tmp_path, monkeypatch):
    config = RunConfig.from_params({**CONFIG, "steps_per_epoch": 2})
    runs = []
    real = train.train_model
    monkeypatch.setattr(train, "train_model", lambda *a, **k: (runs.append(k["extra"]["method"]), real(*a, **k))[1])
    kw = dict(methods=["naive_bce", "coteaching"], seeds=[0], build_fn=tiny_model, progress=False)
    first = compare.compare_methods(tiny_dataset, config, tmp_path, **kw)
    assert runs == ["naive_bce", "coteaching"]
    compare.compare_methods(tiny_dataset, config, tmp_path, **kw)  # unchanged: nothing trains
    assert runs == ["naive_bce", "coteaching"]
    compare.compare_methods(tiny_dataset, config, tmp_path, tau=0.3, **kw)  # co-teaching's own setting
    assert runs[2:] == ["coteaching"]
    changed = compare.compare_methods(tiny_dataset, config.replace(learning_rate=1e-2), tmp_path, **kw)
    assert runs[3:] == ["naive_bce", "coteaching"], "a changed learning rate trains every method again"
    assert not np.allclose(changed["test_lwlrap"], first["test_lwlrap"])
    cfg = (tmp_path / "naive_bce-seed0" / "config.json").read_text()
    assert '"learning_rate": 0.01' in cfg


def test_coteaching_trains_through_the_shared_loop_loads_and_resumes(tiny_dataset, tmp_path, monkeypatch):
    config = RunConfig.from_params({**CONFIG, "epochs": 3, "steps_per_epoch": 2, "checkpoint": "last"})
    folds = []
    real_fit = train.fit_fold
    monkeypatch.setattr(train, "fit_fold", lambda *a, **k: (folds.append(k["objective"].name), real_fit(*a, **k))[1])
    kw = dict(tau=0.3, t_k=2, build_fn=tiny_model, progress=False)
    whole = coteaching.train_coteaching(tiny_dataset, config, tmp_path / "whole", **kw)
    assert folds == ["coteaching(tau=0.3,t_k=2)"]  # train.py's one fold loop, co-teaching's objective

    with pytest.raises(KeyboardInterrupt), killed_as_epoch_starts(3):
        coteaching.train_coteaching(tiny_dataset, config, tmp_path / "resumed", **kw)
    assert json.loads((tmp_path / "resumed" / "fold0" / "state.json").read_text())["epochs_done"] == 2
    resumed = coteaching.train_coteaching(tiny_dataset, config, tmp_path / "resumed", **kw)

    a, b = (pd.read_csv(tmp_path / name / "history.csv") for name in ("whole", "resumed"))
    np.testing.assert_allclose(b.keep_rate, [1.0, 0.85, 0.7])
    for column in ("loss", "loss_a", "loss_b", "kept_unknown", "val_lwlrap"):
        np.testing.assert_allclose(a[column], b[column], rtol=1e-5, atol=1e-7, err_msg=column)
    np.testing.assert_allclose(np.load(tmp_path / "whole" / "test_scores.npz")["logits"],
                               np.load(tmp_path / "resumed" / "test_scores.npz")["logits"], rtol=1e-4, atol=1e-4)
    assert resumed["test_lwlrap"] == pytest.approx(whole["test_lwlrap"], abs=1e-6)
    assert (resumed["method"], resumed["tau"], resumed["t_k"]) == ("coteaching", 0.3, 2)
    # model A is the fold's model: load_fold_model rebuilds it from the fold folder
    model = train.load_fold_model(tmp_path / "resumed", config, 0, build_fn=tiny_model)
    for x, y in zip(model.weights, load_model(tmp_path / "resumed" / "model.keras").weights):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with np.load(tmp_path / "resumed" / "fold0" / "resume.npz") as arrays:  # both networks resume
        assert any(k.startswith("w1_") for k in arrays.files) and any(k.startswith("o1_") for k in arrays.files)


def test_pseudo_label_rounds_reuse_their_folds_only_under_their_settings(tiny_dataset, tmp_path, monkeypatch):
    config = RunConfig.from_params({**CONFIG, "steps_per_epoch": 2, "checkpoint": "last"})
    fits = []
    real_fit = train.fit_fold
    monkeypatch.setattr(train, "fit_fold", lambda *a, **k: (fits.append(Path(a[3]).parent.name), real_fit(*a, **k))[1])
    kw = dict(rounds=1, build_fn=tiny_model, progress=False)
    first = pseudo_labels.pseudo_label_rounds(tiny_dataset, config, tmp_path / "p", threshold=0.3, **kw)
    assert fits == ["round0", "p"]
    again = pseudo_labels.pseudo_label_rounds(tiny_dataset, config, tmp_path / "p", threshold=0.3, **kw)
    assert fits == ["round0", "p"] and again == first  # the same settings: every fold reused
    rows = pd.read_csv(tmp_path / "p" / "pseudo_labels.csv")["new_rows"].sum()
    pseudo_labels.pseudo_label_rounds(tiny_dataset, config, tmp_path / "p", threshold=0.999, **kw)
    assert rows != pd.read_csv(tmp_path / "p" / "pseudo_labels.csv")["new_rows"].sum()
    assert fits[2:] == ["p"], "other pseudo-labels train the last round again, on the same base"
    pseudo_labels.pseudo_label_rounds(tiny_dataset, config.replace(learning_rate=1e-2), tmp_path / "p",
                                      threshold=0.999, **kw)
    assert fits[3:] == ["round0", "p"], "a changed learning rate trains the base and the round again"


def test_summarize_means_stds_and_baseline_gap():
    results = pd.DataFrame({"method": ["naive_bce"] * 2 + ["masked_bce"] * 2, "seed": [0, 1, 0, 1],
                            "val_lwlrap": [0.9, 0.8, 0.7, 0.7], "test_lwlrap": [0.5, 0.7, 0.8, 0.9],
                            "train_s": [1.0, 3.0, 2.0, 2.0]})
    table = compare.summarize(results)
    assert list(table.index) == ["naive_bce", "masked_bce"]
    assert table.loc["masked_bce", "test_mean"] == pytest.approx(0.85)
    assert table.loc["naive_bce", "test_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1), abs=1e-4)
    assert table.loc["masked_bce", "test_vs_naive_bce"] == pytest.approx(0.25)
    assert table.loc["naive_bce", "val_minus_test"] == pytest.approx(0.25)


def test_bad_parameters_raise(tiny_dataset, tmp_path):
    config = RunConfig.from_params(CONFIG)
    with pytest.raises(ParameterError, match=r"unknown noisy-label method 'mixmatch'.*'coteaching'"):
        compare.compare_methods(tiny_dataset, config, tmp_path, methods=["mixmatch"], build_fn=tiny_model)
    with pytest.raises(ParameterError, match=r"'seeds' = \[\]"):
        compare.compare_methods(tiny_dataset, config, tmp_path, seeds=[], build_fn=tiny_model)
    with pytest.raises(ParameterError, match=r"'pseudo_rounds' = 0"):
        pseudo_labels.pseudo_label_rounds(tiny_dataset, config, tmp_path, rounds=0, build_fn=tiny_model)
    with pytest.raises(DataError, match=r"metrics.json is missing"):
        compare.evaluate_model_dir(tmp_path)


@pytest.mark.slow
def test_notebook_05_runs_on_tiny_data(tiny_data_dir, tmp_path):
    """The notebook through papermill and a real kernel: results table, figures, metrics."""
    import json
    from pathlib import Path

    import papermill

    root = Path(__file__).resolve().parent.parent
    run_dir = tmp_path / "run"
    papermill.execute_notebook(
        str(root / "notebooks" / "05_noisy_labels.ipynb"), str(tmp_path / "05.ipynb"), kernel_name="python3",
        progress_bar=False, cwd=str(tmp_path),
        parameters=dict(data_dir=str(tiny_data_dir), run_dir=str(run_dir), methods=["naive_bce", "coteaching"],
                        seeds=[0], epochs=1, steps_per_epoch=3, check_epochs=2, crop_s=2.0, n_mels=32,
                        batch_size=8, embedding_methods=["coteaching"], embedding_seeds=[0], head_epochs=2))
    results = pd.read_csv(run_dir / "noisy_results.csv")
    assert list(results["method"]) == ["naive_bce", "coteaching"]
    assert (run_dir / "noisy" / "coteaching-seed0" / "test_scores.npz").exists()
    birdnet = pd.read_csv(run_dir / "noisy_birdnet_results.csv")
    assert list(birdnet["method"]) == ["coteaching"] and birdnet["test_lwlrap"].between(0, 1).all()
    assert not (run_dir / "models").exists(), "noisy runs stay out of models/ (gathered by 06)"
    metrics = json.loads((run_dir / "metrics.json").read_text())["noisy"]
    assert set(metrics["methods"]) == {"naive_bce", "coteaching"}
    assert set(metrics["coteach_check"]) == {"symmetric_0.5", "pairflip_0.45"}
    figures = {p.name for p in (run_dir / "figures").glob("*.png")}
    assert {"05_methods.png", "05_coteaching_check_symmetric.png"} <= figures
    config = json.loads((run_dir / "config.json").read_text())
    assert config["notebooks"]["05_noisy_labels"]["parameters"]["methods"] == ["naive_bce", "coteaching"]
    assert config["train"]["epochs"] == 1
