"""Training: strategy selection, the distributed step's MirroredStrategy equivalence, score files,
resume after a crash (on one device and on two logical CPUs)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from rfcxlib.data import tables as data
from rfcxlib.features import pipeline
from rfcxlib.training import distribute, train
from rfcxlib.config import RunConfig
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.models import build_model, load_model
from simulated_kill import killed_as_epoch_starts

TINY = dict(backbone="small_cnn", head="attention_v1", attention="cbam", base_units=8, n_mels=32,
            hop_length=2048, image_width=64, channels=1, crop_s=4.0, hop_s=3.0, batch_size=8,
            epochs=3, steps_per_epoch=0, learning_rate=3e-3, folds=3, train_folds=[0], seed=1,
            p_band_filter=0.0, band_mode=False, log="log1p", time_mask=50, freq_mask=16, checkpoint="best")


@pytest.fixture(scope="module")
def tiny(tiny_data_dir):
    return data.load_dataset(tiny_data_dir)


def test_select_strategy_default_on_one_cpu(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    strategy = distribute.select_strategy()
    assert strategy.num_replicas_in_sync == 1
    assert not isinstance(strategy, tf.distribute.MirroredStrategy)


MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    import keras
    from rfcxlib.training import distribute, losses, steps

    def fit(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            inputs = keras.Input((8, 8, 1))
            x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
            x = keras.layers.GlobalAveragePooling2D()(x)
            model = keras.Model(inputs, keras.layers.Dense(24)(x))
            optimizer = keras.optimizers.SGD(0.1)
            optimizer.build(model.trainable_variables)
        step = steps.make_step([model], [optimizer], steps.loss_objective("masked_bce"), strategy=strategy,
                               global_batch=8)
        gen = np.random.default_rng(0)
        x = gen.normal(size=(32, 8, 8, 1)).astype("float32")
        y = (gen.random((32, 24)) < 0.3).astype("float32")
        t = losses.pack_targets(y, (gen.random((32, 24)) < 0.7).astype("float32"))
        ds = tf.data.Dataset.from_tensor_slices((x, t)).batch(8)
        for _ in range(3):
            steps.run_epoch(step, steps.distributed(strategy, ds))
        return [w.numpy() for w in model.weights]

    strategy = distribute.select_strategy()
    single = fit(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = fit(strategy)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored))
    change = max(float(np.abs(a).max()) for a in single)
    print(json.dumps({"strategy": type(strategy).__name__, "replicas": strategy.num_replicas_in_sync,
                      "diff": diff, "scale": change}))
""")


def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_CONFIG", None)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["strategy"] == "MirroredStrategy" and out["replicas"] == 2
    assert out["diff"] < 1e-4, out


def test_train_model_writes_contract_files(tiny, tmp_path):
    config = RunConfig.from_params({**TINY, "epochs": 2, "checkpoint": "last"})
    result = train.train_model(tiny, config, tmp_path / "m", progress=False)
    saved = load_model(tmp_path / "m" / "model.keras")
    last = build_model(config, pipeline.input_shape(config))
    last.load_weights(tmp_path / "m" / "fold0" / "last.weights.h5")
    for a, b in zip(saved.weights, last.weights):  # checkpoint="last" keeps the last epoch
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    files = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "history.csv", "oof.npz", "test_scores.npz", "metrics.json",
            "model.keras"} <= files
    _, valid_ids = train.fold_split(tiny, config, 0)
    oof = np.load(tmp_path / "m" / "oof.npz")
    assert list(oof["recording_ids"]) == list(valid_ids)
    assert oof["logits"].shape == (len(valid_ids), 24) and oof["y"].shape == oof["mask"].shape
    assert np.allclose(oof["scores"], 1 / (1 + np.exp(-oof["logits"])), atol=1e-6)
    test = np.load(tmp_path / "m" / "test_scores.npz")
    assert list(test["recording_ids"]) == list(tiny.test_ids)
    assert np.isfinite(test["logits"]).all() and test["logits"].shape == (len(tiny.test_ids), 24)
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert set(metrics) >= {"val_lwlrap", "oof_lwlrap", "test_lwlrap"}
    assert 0.0 <= metrics["test_lwlrap"] <= 1.0 and metrics == json.loads(json.dumps(result))
    history = pd.read_csv(tmp_path / "m" / "history.csv")
    assert list(history.epoch) == [0, 1] and {"loss", "val_loss", "val_lwlrap"} <= set(history.columns)


def test_sources_change_the_training_crops_not_the_folds(tiny, tmp_path):
    config = RunConfig.from_params({**TINY, "epochs": 1, "steps_per_epoch": 2, "checkpoint": "last"})
    train_ids, valid_ids = train.fold_split(tiny, config, 0)
    extra = tiny.tp[tiny.tp.recording_id.isin(train_ids)].head(8).assign(species_id=lambda d: (d.species_id + 1) % 24)
    plain = train.train_model(tiny, config, tmp_path / "plain", progress=False)
    pseudo = train.train_model(tiny, config, tmp_path / "pseudo", progress=False,
                               sources={0: tiny.with_rows(tp=extra)})
    oof_plain, oof_pseudo = np.load(tmp_path / "plain" / "oof.npz"), np.load(tmp_path / "pseudo" / "oof.npz")
    assert list(oof_pseudo["recording_ids"]) == list(valid_ids)  # same folds, scored on the original labels
    np.testing.assert_array_equal(oof_pseudo["y"], oof_plain["y"])
    assert not np.allclose(oof_pseudo["logits"], oof_plain["logits"])  # other crops, other weights
    assert plain["val_lwlrap"] != pseudo["val_lwlrap"] or plain["test_lwlrap"] != pseudo["test_lwlrap"]
    reloaded = train.load_fold_model(tmp_path / "pseudo", config, 0)
    for a, b in zip(reloaded.weights, load_model(tmp_path / "pseudo" / "model.keras").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(DataError, match=r"fold1.*no trained weights"):
        train.load_fold_model(tmp_path / "pseudo", config, 1)


def test_sed_loss_trains_frame_logits_and_scores_clips(tiny, tmp_path):
    config = RunConfig.from_params({**TINY, "head": "sed", "loss": "sed", "epochs": 2, "steps_per_epoch": 2,
                                    "checkpoint": "last"})
    result = train.train_model(tiny, config, tmp_path / "m", progress=False)
    assert 0.0 <= result["test_lwlrap"] <= 1.0
    history = pd.read_csv(tmp_path / "m" / "history.csv")
    assert np.isfinite(history[["loss", "val_loss"]].to_numpy()).all()
    model = train.load_fold_model(tmp_path / "m", config, 0)  # weights saved through the frame view
    assert model.output.shape[-1] == 24
    for a, b in zip(model.weights, load_model(tmp_path / "m" / "model.keras").weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ParameterError, match=r"'frame_logits'.*head='sed'"):
        train.train_model(tiny, config.replace(head="attention_v1"), tmp_path / "bad", progress=False)


def test_dropout_reseed_gives_every_generator_its_own_stream():
    """Two networks with two dropout layers each, reseeded as an epoch starts: no generator draws
    a seed another one draws within the epoch (before, generator k's step t was k + 1's step
    t - 1, so co-teaching's second network repeated the first one's masks a step later)."""
    import keras

    def net():
        x = keras.Input((16,))
        h = keras.layers.Dropout(0.5)(keras.layers.Dense(16)(x))
        return keras.Model(x, keras.layers.Dropout(0.5)(keras.layers.Dense(16)(h)))

    a, b = net(), net()
    train._reseed_dropout([a, b], 1234)
    generators = [g for m in (a, b) for layer in m._flatten_layers() for g in getattr(layer, "_seed_generators", [])]
    assert len(generators) == 4
    drawn = [tuple(np.asarray(g.next()).tolist()) for _ in range(50) for g in generators]
    assert len(set(drawn)) == len(drawn)
    train._reseed_dropout([a, b], 1234)
    ones = np.ones((4, 16), np.float32)
    masks = [np.asarray(layer(ones, training=True)) != 0 for m in (a, b) for layer in m.layers
             if isinstance(layer, keras.layers.Dropout)]
    assert not np.array_equal(masks[0], masks[2])  # the two networks drop different units
    train._reseed_dropout([a, b], 1234)  # the same seed: the same masks again
    again = [np.asarray(layer(ones, training=True)) != 0 for m in (a, b) for layer in m.layers
             if isinstance(layer, keras.layers.Dropout)]
    assert all(np.array_equal(x, y) for x, y in zip(masks, again))


def test_bad_checkpoint_choice():
    with pytest.raises(ParameterError, match="checkpoint.*'best'"):
        RunConfig.from_params({**TINY, "checkpoint": "middle"})


def test_unknown_loss_lists_choices(tiny, tmp_path):
    with pytest.raises(ParameterError, match="masked_bce"):
        train.train_model(tiny, RunConfig.from_params(TINY), tmp_path / "m", loss="hinge", progress=False)


def interrupted_and_whole(data_dir, out_dir) -> dict:
    """Train ``TINY`` (3 epochs of 3 steps) into ``out_dir/whole``, then into ``out_dir/resumed``
    killed as its third epoch starts and started again; this process's strategy and both metrics."""
    tiny, config, out_dir = data.load_dataset(data_dir), RunConfig.from_params({**TINY, "steps_per_epoch": 3}), Path(out_dir)
    strategy = distribute.select_strategy()
    whole = train.train_model(tiny, config, out_dir / "whole", progress=False)
    try:
        with killed_as_epoch_starts(3):
            train.train_model(tiny, config, out_dir / "resumed", progress=False)
        raise AssertionError("the simulated kill did not stop training")
    except KeyboardInterrupt:
        pass
    killed_at = json.loads((out_dir / "resumed" / "fold0" / "state.json").read_text())["epochs_done"]
    resumed = train.train_model(tiny, config, out_dir / "resumed", progress=False)
    return {"replicas": strategy.num_replicas_in_sync, "mirrored": isinstance(strategy, tf.distribute.MirroredStrategy),
            "killed_at": killed_at, "whole": whole, "resumed": resumed}


RESUME_ON_TWO_CPUS = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    sys.path.insert(0, sys.argv[1])
    import test_train
    print(json.dumps(test_train.interrupted_and_whole(sys.argv[2], sys.argv[3])))
""")


@pytest.mark.parametrize("cpus", [1, 2], ids=["default", "mirrored_2_cpus"])
def test_resume_after_interruption_reproduces_run(tiny_data_dir, tmp_path, cpus):
    if cpus == 1:
        out = interrupted_and_whole(tiny_data_dir, tmp_path)
    else:  # logical CPUs exist only when configured before TensorFlow starts: a new process
        script = tmp_path / "resume.py"
        script.write_text(RESUME_ON_TWO_CPUS)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("TF_CONFIG", None)
        done = subprocess.run([sys.executable, str(script), str(Path(__file__).parent), str(tiny_data_dir),
                               str(tmp_path)], capture_output=True, text=True, env=env, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["replicas"], out["mirrored"]) == ((1, False) if cpus == 1 else (2, True))
    assert out["killed_at"] == 2
    whole, resumed = out["whole"], out["resumed"]
    a = pd.read_csv(tmp_path / "whole" / "history.csv")
    b = pd.read_csv(tmp_path / "resumed" / "history.csv")
    assert list(b.epoch) == [0, 1, 2]
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    np.testing.assert_allclose(a.val_lwlrap, b.val_lwlrap, atol=1e-6)
    za = np.load(tmp_path / "whole" / "test_scores.npz")["logits"]
    zb = np.load(tmp_path / "resumed" / "test_scores.npz")["logits"]
    np.testing.assert_allclose(za, zb, rtol=1e-4, atol=1e-4)
    assert resumed["val_lwlrap"] == pytest.approx(whole["val_lwlrap"], abs=1e-6)
    assert resumed["test_lwlrap"] == pytest.approx(whole["test_lwlrap"], abs=1e-6)


def _count_epochs(monkeypatch):
    """Count the training epochs started (each draws one training pipeline)."""
    real, calls = pipeline.train_dataset, {"n": 0}

    def counted(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "train_dataset", counted)
    return calls


def test_rerun_skips_unchanged_and_retrains_changed_folds(tiny, tmp_path, monkeypatch, capsys):
    config = RunConfig.from_params({**TINY, "epochs": 1, "steps_per_epoch": 2, "checkpoint": "last"})
    calls = _count_epochs(monkeypatch)
    first = train.train_model(tiny, config, tmp_path / "m", progress=False)
    assert calls["n"] == 1 and (tmp_path / "m" / "fold0" / "fingerprint.json").exists()
    again = train.train_model(tiny, config, tmp_path / "m", progress=False)  # unchanged: reused
    assert calls["n"] == 1 and again == first
    assert train.is_current(tmp_path / "m", tiny, config)
    changed = config.replace(learning_rate=1e-4)
    assert not train.is_current(tmp_path / "m", tiny, changed)
    retrained = train.train_model(tiny, changed, tmp_path / "m", progress=False)
    assert calls["n"] == 2, "a changed learning rate must train the fold again"
    assert "learning_rate 0.003 -> 0.0001" in capsys.readouterr().out
    assert retrained["test_lwlrap"] != first["test_lwlrap"] or retrained["val_lwlrap"] != first["val_lwlrap"]
    assert not list((tmp_path / "m").glob(".stale-*"))  # the stale fold is gone
    train.train_model(tiny, changed.replace(seed=2), tmp_path / "m", progress=False)
    assert calls["n"] == 3, "a changed seed must train the fold again"


def test_inference_change_rescores_saved_weights(tiny, tmp_path, monkeypatch):
    config = RunConfig.from_params({**TINY, "epochs": 1, "steps_per_epoch": 2, "checkpoint": "last"})
    calls = _count_epochs(monkeypatch)
    train.train_model(tiny, config, tmp_path / "m", progress=False)
    weights = (tmp_path / "m" / "fold0" / "last.weights.h5").read_bytes()
    before = np.load(tmp_path / "m" / "test_scores.npz")["logits"]
    train.train_model(tiny, config.replace(aggregate="mean"), tmp_path / "m", progress=False)
    assert calls["n"] == 1  # no epoch trained: the same weights, scored again
    assert (tmp_path / "m" / "fold0" / "last.weights.h5").read_bytes() == weights
    after = np.load(tmp_path / "m" / "test_scores.npz")["logits"]
    assert not np.allclose(before, after)  # mean over windows, not max


def test_fold_without_fingerprint_or_other_data_is_retrained(tiny, tmp_path, monkeypatch):
    config = RunConfig.from_params({**TINY, "epochs": 1, "steps_per_epoch": 2, "checkpoint": "last"})
    calls = _count_epochs(monkeypatch)
    train.train_model(tiny, config, tmp_path / "m", progress=False)
    (tmp_path / "m" / "fold0" / "fingerprint.json").unlink()  # a folder from before fingerprints
    train.train_model(tiny, config, tmp_path / "m", progress=False)
    assert calls["n"] == 2
    fewer = tiny.with_rows(tp=tiny.tp.iloc[: len(tiny.tp) // 2], replace=True)
    train.train_model(fewer, config, tmp_path / "m", progress=False)
    assert calls["n"] == 3, "other annotations must train the fold again"


@pytest.mark.slow
def test_training_learns_beyond_a_shuffled_label_control(tiny, tmp_path):
    """On the tiny synthetic set the small CNN reaches a test LWLRAP (complete ground truth,
    recordings never trained on) of 0.35 or more and beats the same training on labels whose
    species are shuffled across rows by 0.15 or more (measured: 0.44-0.47 against 0.17, seeds 0-1)."""
    config = RunConfig.from_params({**TINY, "attention": "parallel", "base_units": 16, "crop_s": 3.0,
                                    "hop_s": 1.5, "batch_size": 16, "epochs": 6, "steps_per_epoch": 12,
                                    "folds": 4, "seed": 0, "checkpoint": "last", "image_width": 0,
                                    "log": "log_eps", "time_mask": 8, "freq_mask": 6})
    gen = np.random.default_rng(0)
    shuffled = tiny.with_rows(tp=tiny.tp.assign(species_id=gen.permutation(tiny.tp.species_id.to_numpy())),
                              fp=tiny.fp.assign(species_id=gen.permutation(tiny.fp.species_id.to_numpy())),
                              replace=True)
    learned = train.train_model(tiny, config, tmp_path / "real", progress=False)["test_lwlrap"]
    control = train.train_model(shuffled, config, tmp_path / "shuffled", progress=False)["test_lwlrap"]
    assert learned >= 0.35, learned
    assert learned - control >= 0.15, (learned, control)
