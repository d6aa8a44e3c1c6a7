"""Soft pseudo-label rounds on CNNs (rfcxlib.noisy.soft_pseudo): their targets
(rfcxlib.noisy.soft_labels), the fixed training windows (rfcxlib.features.fixed_windows), the model
folder and its reuse, notebook 05's comparison, and learning on the tiny synthetic data set."""
from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from rfcxlib.config import RunConfig
from rfcxlib.data import tables as data
from rfcxlib.embeddings.head_config import SoftPseudoConfig
from rfcxlib.errors import ParameterError
from rfcxlib.features import fixed_windows, pipeline
from rfcxlib.noisy import compare, soft_labels, soft_pseudo
from rfcxlib.synth.dataset import ensure_dataset
from rfcxlib.training import fingerprints, train

S = 24
CONFIG = dict(n_mels=32, hop_length=1024, crop_s=2.0, batch_size=8, epochs=1, steps_per_epoch=2, channels=1,
              folds=3, hop_s=3.0, p_band_filter=0.0, band_mode=False, log="log1p", time_mask=50, freq_mask=16,
              head="attention_v2", base_units=256, learning_rate=1e-3, checkpoint="last")


def tiny_model(config, input_shape):
    """A few-hundred-parameter CNN: the plumbing tests check files and reuse, not scores."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(24)(x))


@pytest.fixture(scope="module")
def tiny():
    return data.load_dataset(ensure_dataset("tiny", 0))


def _windows(dataset, recording_ids, crop_s=2.0, hop_s=2.0) -> pd.DataFrame:
    rows = [(rid, t, t + crop_s) for rid in recording_ids
            for t in np.arange(0.0, dataset.durations[rid] - crop_s + 1e-6, hop_s)]
    return pd.DataFrame(rows, columns=["recording_id", "start_s", "end_s"])


# --------------------------------------------------------------------------- targets
def test_round_targets_keep_the_kept_rows_cells_hard_and_only_them(tiny):
    train_ids, _ = train.fold_split(tiny, RunConfig.from_params(CONFIG), 0)
    windows = _windows(tiny, train_ids)
    logits = np.random.default_rng(0).normal(scale=3.0, size=(len(windows), S))
    soft = SoftPseudoConfig(row_keep=0.5, soft_weight=0.5, temperature=2.0)
    targets, info = soft_labels.round_targets(tiny, windows, train_ids, logits, soft=soft, seed=[0, 0, 1])

    sampled = soft_labels.sample_rows(tiny, train_ids, keep_prob=0.5, seed=[0, 0, 1])
    known = soft_labels.window_labels(sampled, windows)
    hard = known[:, S:] == 1
    every = soft_labels.window_labels(tiny, windows)[:, S:] == 1
    dropped = every & ~hard  # labelled by a row this round dropped: soft like an unknown cell
    assert hard.any() and dropped.any() and not (hard & ~every).any()
    np.testing.assert_array_equal(targets[:, :S][hard], known[:, :S][hard])
    np.testing.assert_array_equal(targets[:, S:][hard], 1.0)
    p = 1 / (1 + np.exp(-logits / 2.0))
    np.testing.assert_allclose(targets[:, :S][~hard], p[~hard], rtol=1e-5)
    np.testing.assert_allclose(targets[:, S:][~hard], 0.5)
    assert info["windows"] == len(windows) and 0.3 < info["rows_kept"] < 0.7
    assert info["soft_mean"] == pytest.approx(p[~hard].mean(), rel=1e-4)


def test_the_row_draw_is_seeded_per_fold_and_round(tiny):
    train_ids = tiny.labelled_ids[:30]
    draw = [soft_labels.sample_rows(tiny, train_ids, keep_prob=0.5, seed=s) for s in ([0, 0, 1], [0, 0, 1],
                                                                                      [0, 0, 2], [0, 1, 1])]
    pd.testing.assert_frame_equal(draw[0].tp, draw[1].tp)
    pd.testing.assert_frame_equal(draw[0].fp, draw[1].fp)
    assert not draw[0].tp.equals(draw[2].tp) and not draw[0].tp.equals(draw[3].tp)  # another round, another fold
    mine = draw[0].tp[~draw[0].tp.recording_id.isin(train_ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, tiny.tp[~tiny.tp.recording_id.isin(train_ids)].reset_index(drop=True))


@pytest.mark.parametrize("temperature", [0.05, 1.0, 20.0])
def test_soft_targets_lie_in_0_1_and_known_cells_weigh_1(temperature):
    rng = np.random.default_rng(1)
    known = np.zeros((50, 2 * S), np.float32)
    known[:, S:] = rng.random((50, S)) < 0.2
    known[:, :S] = known[:, S:] * (rng.random((50, S)) < 0.5)
    logits = rng.choice([-1e4, -60.0, -1.0, 0.0, 2.5, 60.0, 1e4], size=(50, S))
    out = soft_labels.soft_targets(known, logits, soft_weight=0.3, temperature=temperature)
    assert np.isfinite(out).all() and out.min() >= 0.0 and out[:, :S].max() <= 1.0
    np.testing.assert_array_equal(out[:, S:], np.where(known[:, S:] == 1, 1.0, 0.3).astype(np.float32))


# --------------------------------------------------------------------------- fixed windows
def test_window_batches_carry_the_given_targets_every_window_once_a_pass(tiny):
    config = RunConfig.from_params({**CONFIG, "augment": False})
    windows = _windows(tiny, tiny.labelled_ids[:2])  # 2 recordings of 10 s: 10 windows
    targets = np.zeros((len(windows), 2 * S), np.float32)
    targets[:, 0] = np.arange(len(windows)) / 20  # the window's index, readable in the batches
    targets[:, S:] = 1.0
    batches = list(fixed_windows.window_train_dataset(tiny, windows, targets, config, seed=3, samples_per_epoch=16,
                                                      progress=False))
    assert len(batches) == 2 and batches[0][0].shape == (8, *pipeline.input_shape(config))
    seen = np.round(np.concatenate([np.asarray(t)[:, 0] for _, t in batches]) * 20).astype(int)
    assert sorted(seen[:10]) == list(range(10))  # a shuffled pass over every window, then the next
    again = list(fixed_windows.window_train_dataset(tiny, windows, targets, config, seed=3, samples_per_epoch=16,
                                                    progress=False))
    np.testing.assert_array_equal(np.asarray(again[1][0]), np.asarray(batches[1][0]))

    banded = RunConfig.from_params({**CONFIG, "p_band_filter": 1.0, "p_mixup": 0.0})
    some = np.zeros_like(targets)
    some[:, 3], some[:, S:] = 0.9, 1.0  # species 3 all but certain: its band is the one kept
    for _, t in fixed_windows.window_train_dataset(tiny, windows, some, banded, seed=0, progress=False):
        weights = np.asarray(t)[:, S:]
        np.testing.assert_array_equal(weights.sum(axis=1), 1.0)
        assert (weights[:, 3] == 1.0).mean() > 0.5
    with pytest.raises(ParameterError, match=r"10 windows and targets of shape \(9, 48\)"):
        fixed_windows.window_train_dataset(tiny, windows, targets[:9], config)


def test_cnn_method_and_soft_parameters_are_checked():
    from rfcxlib.runner import notebook

    assert soft_labels.cnn_method_from_params({}) == ("loss", SoftPseudoConfig())
    assert soft_labels.cnn_method_from_params({"cnn_method": "soft_pseudo", "soft_rounds": 2}) == (
        "soft_pseudo", SoftPseudoConfig(rounds=2))
    with pytest.raises(ParameterError, match=r"'cnn_method'.*'soft'.*'loss', 'soft_pseudo'"):
        soft_labels.cnn_method_from_params({"cnn_method": "soft"})
    with pytest.raises(ParameterError, match=r"'loss' = 'sed'.*clip loss"):
        soft_labels.cnn_method_from_params({"cnn_method": "soft_pseudo", "loss": "sed"})
    with pytest.raises(ParameterError, match=r"soft_row_keep"):
        notebook.config_of("04_training", {"profile": "tiny", "cnn_method": "soft_pseudo", "soft_row_keep": 0.0})
    cells = json.loads((Path(__file__).parent.parent / "notebooks" / "04_training.ipynb").read_text())["cells"]
    (cell,) = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    declared: dict = {}
    exec("".join(cell["source"]), declared)
    assert soft_labels.cnn_method_from_params(declared) == ("loss", SoftPseudoConfig())  # the heads' defaults


# --------------------------------------------------------------------------- model folder
def _count_folds(monkeypatch) -> list:
    """The model folder (``round<r>`` or the last round's) of every fold that trains."""
    fits, real = [], train.fit_fold
    monkeypatch.setattr(train, "fit_fold", lambda *a, **k: (fits.append(Path(a[3]).parent.name), real(*a, **k))[1])
    return fits


def test_the_model_folder_holds_the_standard_files_and_is_reused_by_its_settings(tiny, tmp_path, monkeypatch):
    config, out = RunConfig.from_params(CONFIG), tmp_path / "m"
    fits = _count_folds(monkeypatch)
    kw = dict(build_fn=tiny_model, progress=False)
    first = soft_pseudo.soft_pseudo_rounds(tiny, config, out, soft=SoftPseudoConfig(rounds=2), **kw)
    assert fits == ["round0", "round1", "m"]  # the base, then a new CNN per round
    for name in ("config.json", "history.csv", "metrics.json", "model.keras", "oof.npz", "test_scores.npz",
                 "soft_rounds.csv", "fold0/fingerprint.json", "fold0/last.weights.h5", "fold0/scores.npz"):
        assert (out / name).is_file(), name
    _, valid_ids = train.fold_split(tiny, config, 0)
    oof = np.load(out / "oof.npz")  # scored against the original labels
    assert list(oof["recording_ids"]) == valid_ids
    np.testing.assert_array_equal(oof["mask"], tiny.targets_matrix(valid_ids)[1])
    assert np.load(out / "test_scores.npz")["scores"].shape == (len(tiny.test_ids), S)
    notes = json.loads((out / "config.json").read_text())["notebook"]
    assert notes["method"] == "soft_pseudo" and notes["soft"]["rounds"] == 2 and notes["round"] == 2
    history = pd.read_csv(out / "history.csv")
    assert list(history["round"]) == [0, 1, 2] and list(history["epoch"]) == [0, 1, 2]
    log = pd.read_csv(out / "soft_rounds.csv")
    train_ids, _ = train.fold_split(tiny, config, 0)
    n_windows = len(pipeline.window_table(tiny, train_ids, config, split="train", progress=False))
    assert list(log["round"]) == [0, 1, 2] and (log["windows"][1:] == n_windows).all()  # training windows only
    assert log["soft_mean"][1:].between(0, 1).all() and log["rows_kept"][1:].between(0.2, 0.8).all()
    assert (log["train_s"] > 0).all()
    state = json.loads((out / "fold0" / "state.json").read_text())
    assert state["soft"]["round"] == 2 and state["soft"]["windows"] == n_windows
    assert len(first["soft_rows_kept"]) == len(first["soft_mean"]) == len(first["soft_seconds"]) == 2
    assert json.loads((out / "metrics.json").read_text())["soft_rows_kept"] == first["soft_rows_kept"]
    sources = [fingerprints.read(out / d / "fold0")["weights"]["source"] for d in ("round0", "round1", ".")]
    assert sources[0] == "" and len(set(sources)) == 3  # each round its own training windows

    again = soft_pseudo.soft_pseudo_rounds(tiny, config, out, soft=SoftPseudoConfig(rounds=2), **kw)
    assert fits == ["round0", "round1", "m"] and again == first  # the same settings: every fold reused
    soft_pseudo.soft_pseudo_rounds(tiny, config, out, soft=SoftPseudoConfig(rounds=2, soft_weight=0.5), **kw)
    assert fits[3:] == ["round1", "m"], "another soft setting trains the rounds again, on the same base"
    soft_pseudo.soft_pseudo_rounds(tiny, config.replace(learning_rate=1e-2), out,
                                   soft=SoftPseudoConfig(rounds=2, soft_weight=0.5), **kw)
    assert fits[5:] == ["round0", "round1", "m"], "a changed learning rate trains the base and the rounds"

    from rfcxlib.ensemble.model_scores import load_model_scores

    assert load_model_scores(out).test_scores.shape == (len(tiny.test_ids), S)  # notebook 06 reads it
    assert train.load_fold_model(out, config, 0, build_fn=tiny_model).output.shape == (None, S)


def test_bad_arguments_raise(tiny, tmp_path):
    config = RunConfig.from_params(CONFIG)
    with pytest.raises(ParameterError, match=r"clip targets only.*'sed'"):
        soft_pseudo.soft_pseudo_rounds(tiny, config, tmp_path, loss="sed", build_fn=tiny_model)
    with pytest.raises(ParameterError, match=r"'soft' = .*SoftPseudoConfig"):
        soft_pseudo.soft_pseudo_rounds(tiny, config, tmp_path, soft={"rounds": 2}, build_fn=tiny_model)
    with pytest.raises(ParameterError, match=r"'hop_s' = 0.0"):
        soft_pseudo.soft_pseudo_rounds(tiny, config, tmp_path, hop_s=0.0, build_fn=tiny_model)


def test_the_comparison_runs_soft_pseudo_on_cnns_from_the_masked_bce_run(tiny, tmp_path, monkeypatch):
    assert "soft_pseudo" in compare.CNN_METHODS
    fits = _count_folds(monkeypatch)
    kw = dict(methods=["masked_bce", "soft_pseudo"], seeds=[0], soft=SoftPseudoConfig(rounds=1),
              build_fn=tiny_model, progress=False)
    results = compare.compare_methods(tiny, RunConfig.from_params(CONFIG), tmp_path, **kw)
    assert list(results["method"]) == ["masked_bce", "soft_pseudo"] and results["test_lwlrap"].between(0, 1).all()
    assert fits == ["masked_bce-seed0", "soft_pseudo-seed0"], "the base is the masked_bce run of the seed"
    assert not (tmp_path / "soft_pseudo-seed0" / "round0").exists()
    compare.compare_methods(tiny, RunConfig.from_params(CONFIG), tmp_path, **kw)
    assert len(fits) == 2  # unchanged: nothing trains


# --------------------------------------------------------------------------- learning
@pytest.mark.slow
def test_soft_rounds_learn_beyond_a_shuffled_label_control(tiny, tmp_path):
    """The small CNN by one soft round on the tiny set (test LWLRAP against the complete ground
    truth) reaches 0.28 and beats the same method on labels whose species are shuffled across rows
    (tests/test_train.py's control) by 0.1: measured 0.36 and 0.32 against 0.17 and 0.18, seeds 0
    and 1 (the masked-BCE base alone: 0.46 and 0.44; on tiny its unknown cells sit near 0.5, and
    the round learns them back)."""
    config = RunConfig.from_params({**CONFIG, "attention": "parallel", "head": "attention_v1", "base_units": 16,
                                    "n_mels": 32, "hop_length": 2048, "crop_s": 3.0, "hop_s": 1.5,
                                    "batch_size": 16, "epochs": 6, "steps_per_epoch": 12, "folds": 4, "seed": 0,
                                    "log": "log_eps", "time_mask": 8, "freq_mask": 6, "learning_rate": 3e-3})
    gen = np.random.default_rng(0)
    shuffled = tiny.with_rows(tp=tiny.tp.assign(species_id=gen.permutation(tiny.tp.species_id.to_numpy())),
                              fp=tiny.fp.assign(species_id=gen.permutation(tiny.fp.species_id.to_numpy())),
                              replace=True)
    soft = SoftPseudoConfig(rounds=1)
    learned = soft_pseudo.soft_pseudo_rounds(tiny, config, tmp_path / "real", soft=soft, progress=False)
    control = soft_pseudo.soft_pseudo_rounds(shuffled, config, tmp_path / "shuffled", soft=soft, progress=False)
    print("soft rounds", learned["test_lwlrap"], "control", control["test_lwlrap"])
    assert learned["test_lwlrap"] >= 0.28, learned
    assert learned["test_lwlrap"] - control["test_lwlrap"] >= 0.1, (learned, control)
    from rfcxlib.inference.scorers import load_cnn_models

    cfg = json.loads((tmp_path / "real" / "config.json").read_text())
    assert len(load_cnn_models(tmp_path / "real", cfg)[1]) == 1  # what rfcx predict and export load
