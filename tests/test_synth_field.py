"""The ``field`` synthetic profile: calls mixed into real field recordings, the test split's from
another site, the real tables' label structure, ``sites.csv``, and a cache key that follows the
background folders. Sizes are cut down with ``settings``; tests that read the real recordings skip
when ``../shared/real-data`` is absent."""
import copy
import json
from pathlib import Path
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr

from rfcxlib import cli, config, paths
from rfcxlib.data import tables as data
from rfcxlib.runner import profiles
from rfcxlib.synth import dataset as synth
from rfcxlib.synth import backgrounds as sbg
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.synth import plan as synth_plan

SMALL = dict(n_train=40, n_test=10, duration_s=6.0)
TEST_SITES = ("rfcx", "chronister2021", "spinetail")


def _sources(real_data):
    return real_data / "backgrounds", [real_data / name for name in TEST_SITES]


@pytest.fixture(scope="module")
def field_dir(real_data, tmp_path_factory):
    train, test = _sources(real_data)
    out = tmp_path_factory.mktemp("field") / "rfcx"
    synth.generate(out, profile="field", seed=0, settings=SMALL, progress=False, workers=1,
                   backgrounds=train, test_backgrounds=test)
    return out


def _csv(root, name):
    return pd.read_csv(root / name, dtype={"recording_id": str})


def test_field_data_set_validates_and_loads(field_dir, capsys):
    assert cli.main(["validate", str(field_dir), "--no-progress"]) == 0  # sites.csv is no problem
    assert "problems: 0" in capsys.readouterr().out
    ds = data.load_dataset(field_dir)
    assert (len(ds.train_ids), len(ds.test_ids)) == (40, 10)
    assert set(ds.durations.values()) == {6.0}


def test_label_structure_is_the_real_tables_one(field_dir, real_data):
    info = json.loads((field_dir / "synth_info.json").read_text())
    tp, fp = _csv(field_dir, "train_tp.csv"), _csv(field_dir, "train_fp.csv")
    tp_ids, fp_ids = set(tp.recording_id), set(fp.recording_id)
    assert info["train_tp_fraction"] == pytest.approx(len(tp_ids) / 40)
    assert info["train_tp_fraction"] == pytest.approx(0.24, abs=0.03)  # real: 1132 of 4727
    assert len(fp_ids) / 40 >= 0.75 and tp_ids & fp_ids  # real: 3958 FP, 363 with both
    # quieter calls than mini's (mean in-band SNR 10 dB)
    calls = _csv(field_dir, "synth_calls.csv")
    assert calls[calls.kind == "call"].snr_db.mean() < 7.0
    # the share is a setting, and the label plan does not depend on the backgrounds
    resolved = sbg.resolve(*_sources(real_data))
    plan = synth.make_plan("field", 1, settings=dict(n_train=400, fp_only=0.5, duration_s=4.0),
                           backgrounds=resolved)
    with_tp = np.mean([bool(rec.tp) for _, rec in plan["train"]])
    assert with_tp == pytest.approx(0.5, abs=0.02)
    again = synth.make_plan("field", 1, settings=dict(n_train=400, fp_only=0.5, duration_s=4.0),
                            backgrounds={**resolved, "train": resolved["train"][:5]})
    assert [(r, x.tp, x.fp) for r, x in plan["train"]] == [(r, x.tp, x.fp) for r, x in again["train"]]


def test_sites_come_from_the_background_folders(field_dir, real_data):
    sites = _csv(field_dir, "sites.csv")
    assert list(sites.columns) == ["recording_id", "site"]
    ds = data.load_dataset(field_dir)
    site = sites.set_index("recording_id").site
    assert sorted(site.index) == sorted(ds.train_ids + ds.test_ids)
    expected = {sbg.site_of(p, "train", 6) for p in (real_data / "backgrounds").iterdir()}
    assert "S4A03895_00-06h" in expected and "S4A03895_18-24h" in expected and "rugr" in expected
    assert set(site[ds.train_ids]) <= expected and set(site[ds.test_ids]) <= set(TEST_SITES)
    assert ds.sites is not None and ds.sites.equals(site.reindex(ds.sites.index))
    info = json.loads((field_dir / "synth_info.json").read_text())["backgrounds"]
    assert info["train"]["sources"] == [str((real_data / "backgrounds").resolve())]
    train_files = {f["file"] for f in info["train"]["files"]}
    test_files = {f["file"] for f in info["test"]["files"] if f["recordings"]}
    assert len(test_files) >= 2 and not train_files & test_files
    assert sum(f["recordings"] for f in info["train"]["files"]) >= 40
    segments = _csv(field_dir, "synth_backgrounds.csv")
    assert set(segments.recording_id) == set(site.index)
    assert (segments.groupby("recording_id").site.nunique() == 1).all()  # one site a recording


def test_training_and_test_backgrounds_never_share_a_file(real_data, tmp_path, capsys):
    files = sorted((real_data / "backgrounds").glob("S4A*.wav"))[:2]
    a, b = tmp_path / "site_a", tmp_path / "site_b"
    a.mkdir(), b.mkdir()
    for f in files:
        shutil.copy(f, a / f.name)
    shutil.copy(files[1], b / "renamed.wav")  # the same bytes under another name
    with pytest.raises(ParameterError, match=f"share the file .*{files[1].name} .*renamed.wav"):
        sbg.resolve(a, b)
    with pytest.raises(ParameterError, match=f"share the file .*{files[0].name}"):
        synth.generate(tmp_path / "out", profile="field", backgrounds=a,
                       test_backgrounds=[a / files[0].name])
    assert not (tmp_path / "out").exists()  # checked before anything is written
    assert cli.main(["synth", "--profile", "field", "--out", str(tmp_path / "out"),
                     "--backgrounds", str(a), "--test-backgrounds", str(a)]) == 2
    assert "share the file" in capsys.readouterr().err


def test_deterministic_and_independent_of_workers(field_dir, real_data, tmp_path):
    train, test = _sources(real_data)
    out = synth.generate(tmp_path / "again", profile="field", seed=0, settings=SMALL, workers=2,
                         progress=False, backgrounds=train, test_backgrounds=test)
    for name in ("train_tp.csv", "train_fp.csv", "sites.csv", "synth_backgrounds.csv",
                 "synth_calls.csv", "test_ground_truth.csv"):
        assert (out / name).read_text() == (field_dir / name).read_text(), name
    some = sorted((field_dir / "train").glob("*.flac"))[:5] + sorted((field_dir / "test").glob("*.flac"))[:3]
    for path in some:
        a, _ = sf.read(path, dtype="int16")
        b, _ = sf.read(out / path.parent.name / path.name, dtype="int16")
        assert np.array_equal(a, b), path.name
    other = synth.make_plan("field", 1, settings=SMALL, backgrounds=sbg.resolve(train, test))
    assert [r for r, _ in other["train"]] != sorted(p.stem for p in (field_dir / "train").glob("*"))


def test_the_background_is_a_stretch_of_a_folder_recording(real_data):
    resolved = sbg.resolve(*_sources(real_data))
    plan = synth.make_plan("field", 0, settings=SMALL, backgrounds=resolved)
    for split in ("train", "test"):
        _, rec = plan[split][0]
        silent = copy.copy(rec)
        silent.events = []
        y = synth.render_recording(silent, seed=0, rec_seed=0).astype(np.float64)
        bg = rec.background
        assert np.sqrt(np.mean(y**2)) == pytest.approx(bg["level_rms"], rel=0.05)  # RMS-normalised
        path, start_s, length_s, rev = bg["segments"][0]
        x, sr = sf.read(path, dtype="float64", always_2d=True)
        x = soxr.resample(x.mean(axis=1), sr, synth.SR, quality="HQ")
        i0, m = int(round(start_s * synth.SR)), int(round(length_s * synth.SR))
        ref = x[i0:i0 + m][::-1] if rev else x[i0:i0 + m]
        n = min(y.size, m) - int(sbg.XFADE_S * synth.SR)  # before the crossfade to the next stretch
        assert np.corrcoef(y[:n], ref[:n])[0, 1] > 0.999, (split, path)


def test_cache_key_follows_the_backgrounds(field_dir, real_data, tmp_path):
    train, test = _sources(real_data)
    assert synth.dataset_dir("mini", 0) == paths.cache_root() / "synth" / "mini-seed0"
    default = synth.dataset_dir("field", 0, backgrounds=train, test_backgrounds=test)
    assert default.name.startswith("field-seed0-")
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for f in sorted(train.glob("*.wav"))[:3]:
        shutil.copy(f, fewer / f.name)
    other = synth.dataset_dir("field", 0, backgrounds=fewer, test_backgrounds=test)
    assert other != default
    assert synth.dataset_dir("field", 0, backgrounds=train, test_backgrounds=test,
                             settings={"n_train": 10}) not in (default, other)
    with pytest.raises(ParameterError, match="made with other backgrounds or settings"):
        synth.generate(field_dir, profile="field", seed=0, settings=SMALL, backgrounds=fewer,
                       test_backgrounds=test)


def test_cli_writes_a_small_field_data_set(real_data, tmp_path, capsys):
    train, test = _sources(real_data)
    args = ["synth", "--profile", "field", "--out", str(tmp_path / "f"), "--no-progress",
            "--set", "n_train=8", "--set", "n_test=4", "--set", "duration_s=3", "--backgrounds",
            str(train)] + [a for t in test for a in ("--test-backgrounds", str(t))]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "8 train + 4 test recordings of 3 s" in printed and "test backgrounds:" in printed
    assert len(_csv(tmp_path / "f", "sites.csv")) == 12


def test_default_folders_and_their_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv(sbg.ENV_TRAIN, raising=False)
    monkeypatch.delenv(sbg.ENV_TEST, raising=False)
    beside = Path(__file__).resolve().parents[2] / "shared" / "real-data"  # tests/ -> checkout -> beside it
    assert sbg.real_data_dir() == beside  # <checkout>/../shared/real-data
    monkeypatch.setattr(sbg, "real_data_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere/backgrounds is absent; pass folders of field "
                       "recordings as 'backgrounds' and 'test_backgrounds'"):
        synth.generate(tmp_path / "out", profile="field")
    site_a, site_b = tmp_path / "a", tmp_path / "b"
    site_a.mkdir(), site_b.mkdir()
    rng = np.random.default_rng(0)
    sf.write(site_a / "REC1_x.wav", 0.01 * rng.standard_normal(16000 * 3), 16000)
    sf.write(site_b / "other.flac", 0.01 * rng.standard_normal(44100 * 2), 44100)
    monkeypatch.setenv(sbg.ENV_TRAIN, str(site_a))
    monkeypatch.setenv(sbg.ENV_TEST, str(site_b))
    resolved = sbg.resolve()
    assert [f.site for f in resolved["train"]] == ["REC1"]  # the name before the first "_"
    assert [f.site for f in resolved["test"]] == ["b"]  # the folder
    small = dict(n_train=6, n_test=3, duration_s=4.0)
    out = synth.generate(tmp_path / "out", profile="field", progress=False, settings=small)
    y, sr = sf.read(next((out / "test").glob("*.flac")))
    assert sr == 48000 and y.size == 4 * 48000
    # the cached data set: its folder carries the key, and a second call reuses it
    cached = synth.ensure_dataset("field", 0, settings=small, progress=False)
    assert cached == synth.dataset_dir("field", 0, settings=small)
    assert cached.name.startswith("field-seed0-") and synth.is_complete(cached)
    assert (cached / "sites.csv").read_text() == (out / "sites.csv").read_text()
    mtime = (cached / "sites.csv").stat().st_mtime_ns
    assert synth.ensure_dataset("field", 0, settings=small, progress=False) == cached
    assert (cached / "sites.csv").stat().st_mtime_ns == mtime


def test_bad_arguments(tmp_path):
    with pytest.raises(ParameterError, match="'backgrounds'/'test_backgrounds' are for a profile "
                       "with real backgrounds \\('field'\\); profile 'mini'"):
        synth.generate(tmp_path / "x", profile="mini", backgrounds=tmp_path)
    with pytest.raises(ParameterError, match="unknown synthetic data setting 'n_trian'; valid "
                       "choices: .*'n_train'"):
        synth.generate(tmp_path / "x", profile="tiny", settings={"n_trian": 3})
    with pytest.raises(ParameterError, match="setting 'fp_only' = 1.5: expected a number in"):
        synth.make_plan("tiny", 0, settings={"fp_only": 1.5})
    with pytest.raises(ParameterError, match="setting 'snr_db'"):
        synth.make_plan("tiny", 0, settings={"snr_db": 5})
    with pytest.raises(ParameterError, match="missing for one with real backgrounds"):
        synth.make_plan("field", 0)
    with pytest.raises(ParameterError, match="test_backgrounds: no folder given"):
        sbg.list_backgrounds([], side="test", param="test_backgrounds")
    with pytest.raises(ParameterError, match="backgrounds: '.*nope' does not exist"):
        sbg.list_backgrounds(tmp_path / "nope", side="train", param="backgrounds")
    (tmp_path / "notes.txt").write_text("no audio here")
    with pytest.raises(DataError, match="test_backgrounds: folder .* holds no audio files"):
        sbg.list_backgrounds(tmp_path, side="test", param="test_backgrounds")
    sf.write(tmp_path / "short.wav", np.zeros(800), 16000)
    with pytest.raises(DataError, match="short.wav: 0.05 s long; expected a recording of at least 1 s"):
        sbg.list_backgrounds(tmp_path, side="train", param="backgrounds")


def test_field_run_profile():
    body = profiles.load_profile("field")
    assert body["parameters"]["profile"] == "field"
    models = body["sweep"]["models"]  # the field recipe: a CNN and three soft pseudo-label heads
    assert [m.get("backbone", "cnn") for m in models] == ["cnn", "birdnet", "birdnet", "birdnet"]
    assert body["notebooks"]["06"]["ensemble_method"] == "logit"
    # the mini recipe it is measured against: the mini profile's sweep with heads trained by the loss
    base = profiles.load_sweep(str(profiles.configs_dir() / "sweeps" / "field_baseline.yaml"))
    assert [m.get("head_method", "") for m in base["models"]] == ["", "loss", "loss"]
    assert config.DataConfig(profile="field").profile == "field"


def test_a_recorders_day_is_split_into_sites_by_period():
    p = Path("/x/S4A03895_20190522_134500.wav")
    assert sbg.site_of(p, "train", 0) == "S4A03895"
    assert sbg.site_of(p, "train", 6) == "S4A03895_12-18h"
    assert sbg.site_of(p, "train", 24) == "S4A03895_00-24h"
    assert sbg.site_of(Path("/x/1min.wav"), "train", 6) == "1min"
    assert sbg.site_of(Path("/x/birds_10s.wav"), "train", 6) == "birds"  # not a recorder's name
    assert sbg.site_of(p, "test", 6) == "x"  # the test side: the folder
    with pytest.raises(ParameterError, match="site_hours"):
        synth_plan.resolve_settings("field", {"site_hours": 25})


def test_folds_grouped_by_site_hold_out_whole_sites(field_dir):
    ds = data.load_dataset(field_dir)
    groups = data.fold_groups(ds, "auto")
    assert groups is not None and list(groups.index) == ds.labelled_ids
    n_sites = groups.nunique()
    n = min(3, n_sites)
    folds = data.make_folds(ds, n, seed=0, groups=groups)
    assert (pd.crosstab(groups, folds) > 0).sum(1).max() == 1  # each site in one fold
    assert set(folds) == set(range(n))
    assert data.fold_groups(ds, "recording") is None
