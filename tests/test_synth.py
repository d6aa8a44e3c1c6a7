"""The synthetic data set: exact RFCx layout, partial labels that mean what they say, sounds
where the boxes are, determinism, caching, resuming and the ``rfcx synth`` command."""
import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from rfcxlib import cli, paths
from rfcxlib.synth import dataset as synth
from rfcxlib.synth import sounds as snd
from rfcxlib.errors import ParameterError

COLUMNS = ["recording_id", "species_id", "songtype_id", "t_min", "f_min", "t_max", "f_max"]


def _csv(root, name):
    return pd.read_csv(root / name, dtype={"recording_id": str})


def test_layout_and_audio_format(tiny_data_dir):
    root = tiny_data_dir
    for name in ("train_tp.csv", "train_fp.csv", "sample_submission.csv", "test_ground_truth.csv"):
        assert (root / name).is_file(), name
    assert list(_csv(root, "train_tp.csv").columns) == COLUMNS
    assert list(_csv(root, "train_fp.csv").columns) == COLUMNS
    sub = _csv(root, "sample_submission.csv")
    assert list(sub.columns) == ["recording_id"] + [f"s{i}" for i in range(24)]
    train, test = sorted((root / "train").glob("*.flac")), sorted((root / "test").glob("*.flac"))
    assert (len(train), len(test)) == (48, 12)
    assert sorted(sub.recording_id) == sorted(p.stem for p in test)
    for path in train[:5] + test[:3]:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (48000, 1, "PCM_16", "FLAC")
        assert info.duration == pytest.approx(10.0)
    assert all(len(p.stem) == 9 for p in train + test)


def test_species_coverage_and_test_truth(tiny_data_dir):
    tp = _csv(tiny_data_dir, "train_tp.csv")
    truth = _csv(tiny_data_dir, "test_ground_truth.csv")
    assert set(tp.species_id) == set(range(24))
    assert set(truth.species_id) == set(range(24))
    per_rec = truth.groupby("recording_id").size()
    assert len(per_rec) == 12 and per_rec.between(1, 4).all()
    # the ground truth lists every species that calls in each test recording
    calls = _csv(tiny_data_dir, "synth_calls.csv")
    test_calls = calls[(calls.split == "test") & (calls.kind == "call")]
    assert set(map(tuple, test_calls[["recording_id", "species_id"]].drop_duplicates().values)) == \
        set(map(tuple, truth.values))
    # bands and box lengths are the real species' ones
    for s, g in tp.groupby("species_id"):
        assert g.f_min.iloc[0] == snd.SPECIES[s][0] and g.f_max.iloc[0] == snd.SPECIES[s][1]
        assert (g.t_max - g.t_min).median() == pytest.approx(snd.SPECIES[s][2], abs=0.01)


def test_partial_labels_and_true_negative_fp_rows(tiny_data_dir):
    calls = _csv(tiny_data_dir, "synth_calls.csv")
    tp, fp = _csv(tiny_data_dir, "train_tp.csv"), _csv(tiny_data_dir, "train_fp.csv")
    train_calls = calls[(calls.split == "train") & (calls.kind == "call")]
    # every TP row is a labelled call of its species at the same place
    labelled = train_calls[train_calls.labelled]
    assert len(labelled) == len(tp)
    merged = tp.merge(labelled, on=["recording_id", "species_id", "t_min"], how="left", indicator=True)
    assert (merged._merge == "both").all()
    # species present without any row: partial labels
    assert (~train_calls.labelled).sum() >= 20
    present = set(map(tuple, train_calls[["recording_id", "species_id"]].values))
    assert not any((r, s) in present for r, s in fp[["recording_id", "species_id"]].values)
    # each FP row sits on something that fools a detector: a call of a species with an
    # overlapping band, or a noise burst in the species' band
    events = calls[calls.split == "train"]
    for row in fp.itertuples():
        here = events[(events.recording_id == row.recording_id)
                      & (events.t_min <= row.t_min + 1e-3) & (events.t_max >= row.t_min)]
        ok = ((here.kind == "burst") & (here.species_id == row.species_id)).any() or \
            here[here.kind == "call"].species_id.isin(snd.confusers(row.species_id)).any()
        assert ok, row
    # like the real data: some recordings with TP rows only, some with FP rows only, some with both
    tp_ids, fp_ids = set(tp.recording_id), set(fp.recording_id)
    assert tp_ids - fp_ids and fp_ids - tp_ids and tp_ids & fp_ids


def _band_energy(y, sr, t0, t1, f0, f1):
    seg = y[int(t0 * sr):int(t1 * sr)]
    spec = np.abs(np.fft.rfft(seg)) ** 2
    f = np.fft.rfftfreq(seg.size, 1 / sr)
    return spec[(f >= f0) & (f <= f1)].sum() / seg.size**2


def test_calls_are_where_the_boxes_are(tiny_data_dir):
    tp = _csv(tiny_data_dir, "train_tp.csv")
    ratios = []
    for row in tp.head(40).itertuples():
        y, sr = sf.read(tiny_data_dir / "train" / f"{row.recording_id}.flac")
        inside = _band_energy(y, sr, row.t_min, row.t_max, row.f_min, row.f_max)
        whole = _band_energy(y, sr, 0, len(y) / sr, row.f_min, row.f_max)
        ratios.append(inside / whole)
    # the box holds more in-band energy per second than the recording on average
    assert np.median(ratios) > 2.0
    assert np.mean(np.array(ratios) > 1.0) >= 0.75  # some quiet calls share the band with louder ones


def test_each_call_is_mixed_inside_its_box_at_its_snr():
    plan = synth.make_plan("tiny", seed=0)
    _, rec = next((r, x) for r, x in plan["train"] if len(x.events) >= 4)
    silent = copy.copy(rec)
    silent.events = []
    bg = synth.render_recording(silent, seed=0, rec_seed=5).astype(np.float64)
    sr = synth.SR
    for ev in rec.events:
        one = copy.copy(rec)
        one.events = [ev]
        call = synth.render_recording(one, seed=0, rec_seed=5) - bg
        lo, hi = snd.SPECIES[ev["species"]][:2]
        i0, i1 = int(ev["t_s"] * sr), int((ev["t_s"] + ev["box_s"]) * sr)
        assert np.abs(call[:i0]).max() < 1e-6 and np.abs(call[i1 + 1:]).max() < 1e-6  # nothing outside
        p_call = snd.band_power(call[i0:i1], sr=sr, f_lo=lo, f_hi=hi)
        p_bg = snd.band_power(bg, sr=sr, f_lo=lo, f_hi=hi)
        # the call fills 85-100 % of its box, and a little of its energy leaks out of the band
        assert ev["snr_db"] - 2.0 < 10 * np.log10(p_call / p_bg) < ev["snr_db"] + 0.5, ev


def test_every_species_has_a_confuser_and_shapes_differ():
    # species 0 and 22 share their bands with nobody: their detectors fire on noise bursts
    assert [s for s in snd.SPECIES if not snd.confusers(s)] == [0, 22]
    assert {snd.shape_of(s, 1) for s in snd.SPECIES} == set(snd.SHAPES)
    rng = np.random.default_rng(0)
    call = snd.render_call(rng, 21, 1, sr=48000, dur_s=1.0)
    assert call.dtype == np.float32 and call.shape == (48000,)
    assert np.mean(call**2) == pytest.approx(1.0, rel=1e-3)
    spec = np.abs(np.fft.rfft(call)) ** 2
    f = np.fft.rfftfreq(call.size, 1 / 48000)
    lo, hi = snd.SPECIES[21][:2]
    assert spec[(f >= lo) & (f <= hi)].sum() / spec.sum() > 0.9  # energy inside the band


def test_deterministic_and_independent_of_workers(tiny_data_dir, tmp_path):
    out = synth.generate(tmp_path / "again", profile="tiny", seed=0, workers=2, progress=False)
    for name in ("train_tp.csv", "train_fp.csv", "sample_submission.csv", "test_ground_truth.csv"):
        assert (out / name).read_text() == (tiny_data_dir / name).read_text()
    for path in sorted((tiny_data_dir / "train").glob("*.flac"))[:6]:
        a, _ = sf.read(path, dtype="int16")
        b, _ = sf.read(out / "train" / path.name, dtype="int16")
        assert np.array_equal(a, b)
    other = synth.make_plan("tiny", seed=1)
    assert [r for r, _ in other["train"]] != sorted(p.stem for p in (tiny_data_dir / "train").glob("*"))


def test_resume_completes_a_partial_folder(tiny_data_dir, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(tiny_data_dir, part)
    victim = sorted((part / "test").glob("*.flac"))[0]
    victim.unlink()
    (part / "train_tp.csv").unlink()
    info = json.loads((part / "synth_info.json").read_text())
    (part / "synth_info.json").write_text(json.dumps({**info, "complete": False}))
    (part / "train" / f".{victim.name}.999.tmp").write_bytes(b"half a file")
    keep = sorted((part / "train").glob("*.flac"))[0]
    mtime = keep.stat().st_mtime_ns
    synth.generate(part, profile="tiny", seed=0, progress=False)
    assert victim.exists() and (part / "train_tp.csv").exists()
    assert keep.stat().st_mtime_ns == mtime  # existing recordings are kept, not rewritten
    a, _ = sf.read(victim, dtype="int16")
    b, _ = sf.read(tiny_data_dir / "test" / victim.name, dtype="int16")
    assert np.array_equal(a, b)
    assert synth.is_complete(part)
    assert not list(part.rglob("*.tmp"))


def test_refuses_a_folder_of_another_data_set(tiny_data_dir, tmp_path):
    with pytest.raises(ParameterError, match="seed 0; expected an empty folder or profile 'tiny', seed 1"):
        synth.generate(tiny_data_dir, profile="tiny", seed=1)
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(ParameterError, match="not empty"):
        synth.generate(tmp_path, profile="tiny", seed=0)


def test_bad_parameters():
    with pytest.raises(ParameterError, match="unknown synthetic profile 'huge'.*'mini'"):
        synth.generate("/tmp/never", profile="huge")
    with pytest.raises(ParameterError, match="seed"):
        synth.generate("/tmp/never", profile="tiny", seed=-1)
    with pytest.raises(ParameterError, match="unknown synthetic profile"):
        synth.ensure_dataset("small")


def test_cli_then_ensure_dataset_uses_the_cache(capsys):
    assert cli.main(["synth", "--profile", "tiny", "--seed", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "48 train + 12 test recordings" in printed and "TP rows" in printed
    path = synth.ensure_dataset("tiny", 3)
    assert path == paths.cache_root() / "synth" / "tiny-seed3"
    assert synth.is_complete(path)
    mtime = (path / "train_tp.csv").stat().st_mtime_ns
    assert synth.ensure_dataset("tiny", 3) == path
    assert (path / "train_tp.csv").stat().st_mtime_ns == mtime
    assert not list(path.parent.glob(".*partial"))
