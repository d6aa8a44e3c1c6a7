"""The data layer: loading the synthetic and the real tables, (y, mask) targets, folds, and a
clear DataError for each kind of bad input."""
import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from rfcxlib import cli
from rfcxlib import paths
from rfcxlib.data import source, tables as data, checks as data_checks
from rfcxlib.data.tables import Dataset, load_dataset, make_folds
from rfcxlib.errors import DataError, ParameterError

SR = 48000
HEADER = "recording_id,species_id,songtype_id,t_min,f_min,t_max,f_max\n"


def _write_flac(path, seconds=10.0, sr=SR, channels=1):
    y = np.zeros((int(seconds * sr), channels), np.float32)
    y[::997] = 0.01
    sf.write(str(path), y if channels > 1 else y[:, 0], sr, subtype="PCM_16", format="FLAC")


def _folder(root, tp=None, fp=None, train=("aaa", "bbb", "ccc"), test=("ttt", "uuu")):
    """A small valid data folder: 10 s recordings, a few TP and FP rows, test ground truth."""
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    for rid in train:
        _write_flac(root / "train" / f"{rid}.flac")
    for rid in test:
        _write_flac(root / "test" / f"{rid}.flac")
    tp = tp if tp is not None else ["aaa,3,1,1.0,1031.25,1.74,2812.5", "aaa,5,1,6.0,4781.25,8.35,11250.0",
                                    "bbb,3,1,2.0,1031.25,2.74,2812.5"]
    fp = fp if fp is not None else ["aaa,4,1,1.2,2343.75,3.06,4218.75", "bbb,3,1,5.0,1031.25,5.74,2812.5",
                                    "ccc,7,1,0.5,4687.5,3.64,11437.5"]
    (root / "train_tp.csv").write_text(HEADER + "".join(r + "\n" for r in tp))
    (root / "train_fp.csv").write_text(HEADER + "".join(r + "\n" for r in fp))
    cols = ",".join(f"s{i}" for i in range(24))
    (root / "sample_submission.csv").write_text(
        f"recording_id,{cols}\n" + "".join(f"{r}," + ",".join("0" * 24) + "\n" for r in test))
    (root / "test_ground_truth.csv").write_text("recording_id,species_id\nttt,3\nttt,17\nuuu,0\n")
    return root


@pytest.fixture
def folder(tmp_path):
    return _folder(tmp_path / "d")


# ---------------------------------------------------------------- loading
def test_load_small_folder(folder):
    ds = load_dataset(folder)
    assert ds.train_ids == ["aaa", "bbb", "ccc"] and ds.test_ids == ["ttt", "uuu"]
    assert len(ds.tp) == 3 and len(ds.fp) == 3 and list(ds.tp.columns) == data.COLUMNS
    assert ds.sample_rate == SR and ds.durations["aaa"] == pytest.approx(10.0)
    assert ds.path("aaa") == folder / "train" / "aaa.flac"
    assert ds.path("ttt") == folder / "test" / "ttt.flac"
    truth = ds.test_truth()
    assert truth.shape == (2, 24) and truth.sum() == 3 and truth[0, 17] == 1 and truth[1, 0] == 1


def test_load_tiny_synthetic(tiny_data_dir):
    ds = load_dataset(tiny_data_dir)
    tp = pd.read_csv(tiny_data_dir / "train_tp.csv")
    assert len(ds.tp) == len(tp) and len(ds.train_ids) == 48 and len(ds.test_ids) == 12
    sub = pd.read_csv(tiny_data_dir / "sample_submission.csv", dtype={"recording_id": str})
    assert ds.test_ids == sub.recording_id.tolist()
    assert ds.test_truth().sum(1).min() >= 1
    assert "48 train" in repr(ds)


def test_real_tables_load_as_they_are(real_data):
    tables = real_data / "rfcx"
    if not (tables / "train_tp.csv").exists():
        pytest.skip("real tables absent")
    assert len(data.read_annotations(tables / "train_tp.csv")) == 1216
    assert len(data.read_annotations(tables / "train_fp.csv")) == 7781
    ds = load_dataset(tables, require_audio=False)
    assert (len(ds.tp), len(ds.fp)) == (1216, 7781)
    assert ds.tp.recording_id.str.len().eq(9).all()  # ids stay strings (no numeric parsing)
    y, mask = ds.recording_targets(ds.tp.recording_id.iloc[0])
    assert y.sum() >= 1 and mask.sum() >= y.sum()
    folds = make_folds(ds, 5, seed=0)
    assert len(folds) == 4727 and folds.value_counts().between(935, 956).all()
    for flac in sorted(tables.glob("*.flac"))[:2]:  # a real recording passes the full check
        problems = []
        assert data_checks._check_header(flac, 48000, True, problems) == (60 * SR, SR)
        assert problems == []


# ---------------------------------------------------------------- targets
def test_window_targets_tp_fp_and_unknown(folder):
    ds = load_dataset(folder)
    y, mask = ds.window_targets("aaa", 0.0, 4.0)
    assert y.dtype == mask.dtype == np.float32 and y.shape == mask.shape == (24,)
    assert y[3] == 1 and mask[3] == 1  # TP
    assert y[4] == 0 and mask[4] == 1  # FP
    assert mask.sum() == 2 and y.sum() == 1  # the rest unknown
    y, mask = ds.window_targets("aaa", 6.0, 10.0)
    assert y[5] == 1 and mask.sum() == 1
    # TP wins over FP for the same species (bbb has both for species 3)
    y, mask = ds.window_targets("bbb", 0.0, 10.0)
    assert y[3] == 1 and mask[3] == 1
    y, mask = ds.window_targets("bbb", 4.0, 10.0)  # only the FP box of species 3
    assert y[3] == 0 and mask[3] == 1
    y, mask = ds.recording_targets("bbb")
    assert y[3] == 1 and mask.sum() == 1


def test_window_overlap_rule(folder):
    ds = load_dataset(folder)
    # TP box of species 3 in aaa is [1.0, 1.74]: half of it is 0.37 s
    assert ds.window_targets("aaa", 1.36, 5.0)[1][3] == 1  # 0.38 s inside: counts
    assert ds.window_targets("aaa", 1.40, 5.0)[1][3] == 0  # 0.34 s inside: does not
    # FP box of species 7 in ccc is [0.5, 3.64] (3.14 s): 1 s inside counts, 0.9 s does not
    assert ds.window_targets("ccc", 2.64, 8.0)[1][7] == 1
    assert ds.window_targets("ccc", 2.74, 8.0)[1][7] == 0
    assert ds.window_targets("ccc", 2.74, 8.0, min_overlap_s=0.5)[1][7] == 1


def test_targets_of_unlabelled_and_unknown_recordings(folder):
    ds = load_dataset(folder)
    y, mask = ds.recording_targets("ttt")
    assert y.sum() == 0 and mask.sum() == 0
    with pytest.raises(ParameterError, match="recording_id 'nope' is not in"):
        ds.window_targets("nope", 0, 1)
    with pytest.raises(ParameterError, match="expected t0_s < t1_s"):
        ds.window_targets("aaa", 3.0, 3.0)
    with pytest.raises(ParameterError, match="split 'val'"):
        ds.path("aaa", "val")


def test_with_rows_adds_or_replaces_rows(folder):
    ds = load_dataset(folder)
    extra = pd.DataFrame([["ccc", 9, 1, 4.0, 843.75, 7.5, 5718.75], ["ttt", 3, 1, 1.0, 1031.25, 1.74, 2812.5]],
                         columns=data.COLUMNS)
    more = ds.with_rows(tp=extra)
    assert len(more.tp) == 5 and len(ds.tp) == 3  # the original is untouched
    assert more.window_targets("ccc", 4.0, 8.0)[0][9] == 1
    assert more.recording_targets("ttt")[0][3] == 1  # pseudo-labels may refer to test recordings
    only = ds.with_rows(fp=extra.iloc[:1], replace=True)
    assert len(only.fp) == 1 and len(only.tp) == 3
    with pytest.raises(DataError, match="tp rows: t_min >= t_max"):
        ds.with_rows(tp=extra.assign(t_max=0.5))
    with pytest.raises(DataError, match=r"recording\(s\) \['zzz'\] not in"):
        ds.with_rows(fp=extra.assign(recording_id="zzz"))


# ---------------------------------------------------------------- folds
def _random_dataset(n=400, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"r{i:04d}" for i in range(n)]
    rows = []
    for rid in ids:
        for s in rng.choice(24, size=rng.integers(1, 4), replace=False):
            rows.append((rid, int(s), 1, 1.0, 100.0, 2.0, 200.0, rng.random() < 0.3))
    df = pd.DataFrame(rows, columns=data.COLUMNS + ["is_tp"])
    return Dataset(root=".", tp=df[df.is_tp][data.COLUMNS], fp=df[~df.is_tp][data.COLUMNS],
                   train_ids=ids, test_ids=[])


def test_folds_grouped_and_balanced():
    ds = _random_dataset()
    folds = make_folds(ds, 5, seed=0)
    assert folds.index.is_unique and sorted(folds.index) == ds.labelled_ids
    assert folds.name == "fold" and set(folds) == set(range(5))
    sizes = folds.value_counts()
    assert sizes.max() - sizes.min() <= 3
    for table in (ds.tp, ds.fp):
        per_fold = pd.crosstab(table.species_id, table.recording_id.map(folds))
        ideal = per_fold.sum(1).to_numpy()[:, None] / 5
        assert np.abs(per_fold.to_numpy() - ideal).max() <= 2.0
    assert make_folds(ds, 5, seed=0).equals(folds)
    assert not make_folds(ds, 5, seed=1).equals(folds)


def test_folds_grouped_by_site():
    ds = _random_dataset()
    sites = pd.Series([f"site{i % 7}" if i < 350 else "big" for i in range(400)],
                      index=[f"r{i:04d}" for i in range(400)], name="site")
    folds = make_folds(ds, 5, seed=0, groups=sites)
    per_site = pd.crosstab(sites.reindex(folds.index), folds)
    assert ((per_site > 0).sum(1) == 1).all()  # every site lies in one fold
    assert set(folds) == set(range(5))  # every fold holds a site
    sizes = folds.value_counts()
    assert sizes.max() <= 2 * 400 / 5  # 8 sites of 50 into 5 folds: no fold takes three
    assert make_folds(ds, 5, seed=0, groups=sites).equals(folds)
    assert not make_folds(ds, 5, seed=0).equals(folds)  # by recording: another split
    with pytest.raises(ParameterError, match="at least 9"):
        make_folds(ds, 9, seed=0, groups=sites)


def test_fold_groups_from_the_folder_or_a_file(tmp_path):
    ds = _random_dataset(n=40)
    assert data.fold_groups(ds, "auto") is None and data.fold_groups(ds, "recording") is None
    path = tmp_path / "groups.csv"
    pd.DataFrame({"recording_id": ds.train_ids, "site": [f"s{i % 4}" for i in range(40)]}).to_csv(path, index=False)
    groups = data.fold_groups(ds, str(path))
    assert list(groups.index) == ds.labelled_ids and groups.nunique() == 4
    with_sites = dataclasses.replace(ds, sites=groups)
    assert data.fold_groups(with_sites, "auto").equals(groups)
    assert data.fold_groups(with_sites, "recording") is None
    with pytest.raises(ParameterError, match="fold_groups"):
        data.fold_groups(ds, str(tmp_path / "absent.csv"))
    pd.DataFrame({"recording_id": ds.train_ids[:30], "site": "a"}).to_csv(path, index=False)
    with pytest.raises(DataError, match="no site for 10 labelled"):
        data.fold_groups(ds, str(path))
    pd.DataFrame({"recording_id": ["r0000", "nope"], "site": ["a", "b"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="groups.csv: .* at line 3"):
        data.fold_groups(ds, str(path))


def test_folds_on_tiny_and_bad_n_folds(tiny_data_dir):
    ds = load_dataset(tiny_data_dir)
    folds = make_folds(ds, 4, seed=0)
    assert len(folds) == 48 and folds.value_counts().min() >= 11
    for bad in (1, 0, 49, 2.5):
        with pytest.raises(ParameterError, match="n_folds"):
            make_folds(ds, bad)


# ---------------------------------------------------------------- bad input, one test each
def _edit_csv(path, line, new):
    lines = path.read_text().splitlines()
    lines[line - 1] = new
    path.write_text("\n".join(lines) + "\n")


def test_find_data_takes_the_folder_then_kaggle_then_the_synthetic_set(tmp_path, monkeypatch):
    monkeypatch.setenv("RFCX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RFCX_KAGGLE_INPUT", str(tmp_path / "absent"))
    assert source.find_data("/some/folder") == source.Path("/some/folder")
    assert source.find_data(profile="tiny", seed=4, generate=False) == paths.cache_root() / "synth" / "tiny-seed4"
    competition = tmp_path / "input" / "rfcx-species-audio-detection"
    competition.mkdir(parents=True)
    (competition / "train_tp.csv").write_text("recording_id\n")
    monkeypatch.setenv("RFCX_KAGGLE_INPUT", str(tmp_path / "input"))
    assert source.find_data(profile="tiny", seed=4) == competition
    with pytest.raises(ParameterError, match="unknown"):
        source.find_data(profile="huge", generate=False)


def test_normalised_annotations_have_the_layout_types():
    raw = pd.DataFrame({"t_max": [2], "recording_id": [7], "species_id": [3.0], "songtype_id": [1],
                        "t_min": [1], "f_min": [100], "f_max": [900], "extra": ["x"]})
    table = data_checks.normalise_annotations(raw)
    assert list(table.columns) == data.COLUMNS and table.recording_id.tolist() == ["7"]
    assert table.species_id.dtype == np.int64 and table.t_min.dtype == np.float64


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="folder not found; expected a folder in the RFCx layout"):
        load_dataset(tmp_path / "absent")


def test_missing_table(folder):
    (folder / "train_fp.csv").unlink()
    with pytest.raises(DataError, match=r"train_fp.csv: file not found"):
        load_dataset(folder)


def test_missing_audio_folder(folder):
    shutil.rmtree(folder / "test")
    with pytest.raises(DataError, match=r"test: folder not found; expected test/<recording_id>.flac"):
        load_dataset(folder)


def test_missing_column(folder):
    (folder / "train_tp.csv").write_text("recording_id,species_id,t_min,t_max\naaa,3,1.0,2.0\n")
    with pytest.raises(DataError, match=r"train_tp.csv: missing column\(s\) \['songtype_id', 'f_min', 'f_max'\]"):
        load_dataset(folder)


def test_wrong_type(folder):
    _edit_csv(folder / "train_tp.csv", 3, "aaa,five,1,6.0,4781.25,8.35,11250.0")
    with pytest.raises(DataError, match=r"train_tp.csv: non-numeric species_id \['five'\] at line 3"):
        load_dataset(folder)


def test_nan_value(folder):
    _edit_csv(folder / "train_fp.csv", 2, "aaa,4,1,,2343.75,3.06,4218.75")
    with pytest.raises(DataError, match=r"train_fp.csv: empty or NaN value at line 2"):
        load_dataset(folder)


def test_t_min_not_below_t_max(folder):
    _edit_csv(folder / "train_tp.csv", 4, "bbb,3,1,2.74,1031.25,2.0,2812.5")
    with pytest.raises(DataError, match=r"train_tp.csv: t_min >= t_max .* at line 4; expected t_min < t_max"):
        load_dataset(folder)


def test_f_min_not_below_f_max(folder):
    _edit_csv(folder / "train_fp.csv", 3, "bbb,3,1,5.0,2812.5,5.74,2812.5")
    with pytest.raises(DataError, match=r"train_fp.csv: f_min >= f_max .* at line 3; expected f_min < f_max"):
        load_dataset(folder)


def test_time_outside_the_recording(folder):
    _edit_csv(folder / "train_tp.csv", 3, "aaa,5,1,8.0,4781.25,10.35,11250.0")
    with pytest.raises(DataError, match=r"box ending after the recording \(t_max 10.35 s > 10.000 s\) at line 3"):
        load_dataset(folder)


def test_negative_time(folder):
    _edit_csv(folder / "train_tp.csv", 2, "aaa,3,1,-1.0,1031.25,1.74,2812.5")
    with pytest.raises(DataError, match=r"negative time or frequency .* at line 2"):
        load_dataset(folder)


def test_species_outside_range(folder):
    _edit_csv(folder / "train_tp.csv", 2, "aaa,24,1,1.0,1031.25,1.74,2812.5")
    with pytest.raises(DataError, match=r"species_id outside 0-23 \(species_id \[24\]\) at line 2; expected an integer"):
        load_dataset(folder)


def test_duplicate_rows(folder):
    with open(folder / "train_fp.csv", "a") as f:
        f.write("bbb,3,1,5.0,1031.25,5.74,2812.5\n")
    with pytest.raises(DataError, match=r"train_fp.csv: duplicate row at line 5; expected each row once"):
        load_dataset(folder)


def test_recording_referenced_but_absent(folder):
    (folder / "train" / "ccc.flac").unlink()
    with pytest.raises(DataError, match=r"train_fp.csv: recording\(s\) \['ccc'\] absent from train/ at line 4"):
        load_dataset(folder)


def test_unreadable_flac(folder):
    (folder / "train" / "bbb.flac").write_bytes(b"this is not audio" * 20)
    with pytest.raises(DataError, match=r"bbb.flac: unreadable audio file .*expected a FLAC recording"):
        load_dataset(folder)


def test_truncated_flac_found_by_full_validation(tmp_path):
    root = tmp_path / "d"
    _folder(root)
    y = np.random.default_rng(0).standard_normal(10 * SR).astype(np.float32) * 0.1
    path = root / "train" / "aaa.flac"
    sf.write(str(path), y, SR, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:200_000])
    load_dataset(root)  # the header is intact: the fast loader does not decode
    report = data.validate(root, progress=False)
    assert any("aaa.flac: cannot decode" in p and "truncated" in p for p in report["problems"])


def test_wrong_sample_rate(folder):
    _write_flac(folder / "train" / "bbb.flac", sr=44100)
    with pytest.raises(DataError, match=r"bbb.flac: sample rate 44100 Hz; expected 48000 Hz"):
        load_dataset(folder)
    ds = load_dataset(folder, sr=None)  # a pipeline that resamples accepts any rate
    assert ds.sample_rate is None and ds.durations["bbb"] == pytest.approx(10.0)


def test_wrong_channel_count(folder):
    _write_flac(folder / "test" / "uuu.flac", channels=2)
    with pytest.raises(DataError, match=r"uuu.flac: 2 channels; expected mono"):
        load_dataset(folder)


def test_submission_and_test_files_disagree(folder):
    _write_flac(folder / "test" / "vvv.flac")
    (folder / "test" / "ttt.flac").unlink()
    with pytest.raises(DataError, match="recording 'ttt' has no file test/ttt.flac") as err:
        load_dataset(folder)
    assert "vvv.flac: not listed in sample_submission.csv" in str(err.value)


def test_bad_ground_truth(folder):
    (folder / "test_ground_truth.csv").write_text("recording_id,species_id\nttt,30\nxxx,1\n")
    with pytest.raises(DataError, match=r"test_ground_truth.csv: unknown recording or species at line 2, 3"):
        load_dataset(folder)


def test_all_problems_reported_not_just_the_first(folder, capsys):
    _edit_csv(folder / "train_tp.csv", 2, "aaa,3,1,5.0,1031.25,1.74,2812.5")
    _write_flac(folder / "train" / "ccc.flac", sr=22050)
    (folder / "test" / "uuu.flac").write_bytes(b"junk" * 50)
    assert cli.main(["validate", str(folder), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "problems: 3" in out
    assert "t_min >= t_max" in out and "sample rate 22050 Hz" in out and "uuu.flac: unreadable" in out


def test_validate_command_on_tiny(tiny_data_dir, capsys):
    assert cli.main(["validate", str(tiny_data_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "recordings: 48 train, 12 test; sample rate: 48000" in out
    assert "problems: 0" in out and "tp_rows" in out


def test_a_bad_sites_table_is_reported_by_validate(tiny_data_dir, tmp_path, capsys):
    root = tmp_path / "d"
    shutil.copytree(tiny_data_dir, root)
    ids = load_dataset(root).train_ids
    (root / "sites.csv").write_text("recording_id,site\n" + f"{ids[0]},a\n" + "nope,b\n" + f"{ids[0]},c\n")
    assert cli.main(["validate", str(root), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "sites.csv: an empty, repeated or unknown recording_id or an empty site at line 3, 4" in out
    (root / "sites.csv").write_text("recording_id,site\n" + "".join(f"{r},s{i % 3}\n" for i, r in enumerate(ids)))
    assert cli.main(["validate", str(root), "--no-progress"]) == 0
    assert "sites: 3 in sites.csv; training recordings by site: s0 16, s1 16, s2 16" in capsys.readouterr().out
    ds = load_dataset(root)
    assert ds.sites.nunique() == 3 and data.fold_groups(ds).nunique() == 3
