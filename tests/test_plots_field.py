"""A data set with real backgrounds (the ``field`` profile): its stretches read back where the
rendered audio has them, the figures draw one span per stretch and one bar per site, and
notebook 01 shows them on a field-like copy of the tiny data set (and says so in one line
without them). The field-like copy gets its ``synth_backgrounds.csv`` and ``sites.csv`` from the
generator's own writer (:func:`rfcxlib.synth.backgrounds.tables`), so no real recording is needed."""
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from rfcxlib.data import tables as data  # noqa: E402
from rfcxlib.errors import DataError, ParameterError  # noqa: E402
from rfcxlib.plots import eda, field  # noqa: E402
from rfcxlib.synth import backgrounds as sbg  # noqa: E402
from rfcxlib.synth import dataset as synth  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TRAIN_SITES = {"A": "siteA", "B": "siteB"}  # site -> folder of its (imaginary) files


def _write_tables(out: Path, plan: dict) -> None:
    for name, df in sbg.tables(plan).items():
        df.to_csv(out / name, index=False)


def _background(site: str, folder: str, k: int, duration_s: float) -> dict:
    """Two stretches of two files (one reversed) for even ``k``, one stretch for odd ``k``."""
    if k % 2:
        segments = [(f"/bg/{folder}/{site}_{k}.wav", 0.5, duration_s + 0.01, False)]
    else:
        first = 0.4 * duration_s
        segments = [(f"/bg/{folder}/{site}_{k}.wav", 1.0, first, False),
                    (f"/bg/{folder}/{site}_{k + 1}.wav", 0.0, duration_s - first + sbg.XFADE_S + 0.01, True)]
    return {"site": site, "level_rms": 0.006, "segments": segments}


@pytest.fixture(scope="module")
def field_like(tiny_data_dir, tmp_path_factory) -> Path:
    """The tiny data set with the tables of real backgrounds: training recordings from sites A
    (three in four) and B, test recordings from site C."""
    out = tmp_path_factory.mktemp("field-like") / "rfcx"
    shutil.copytree(tiny_data_dir, out)
    ds = data.load_dataset(out)
    plan = {"train": [], "test": []}
    for k, rid in enumerate(ds.train_ids):
        site = "B" if k % 4 == 3 else "A"
        plan["train"].append((rid, SimpleNamespace(
            background=_background(site, TRAIN_SITES[site], k, ds.durations[rid]))))
    for k, rid in enumerate(ds.test_ids):
        plan["test"].append((rid, SimpleNamespace(background=_background("C", "C", k, ds.durations[rid]))))
    _write_tables(out, plan)
    return out


def _tone(f_hz: float, sr: int, seconds: float) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * f_hz * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def test_stretches_begin_where_the_rendered_background_changes_file(tmp_path):
    sr = 16000
    low, high = tmp_path / "site" / "S1_low.wav", tmp_path / "site" / "S1_high.wav"
    low.parent.mkdir()
    sf.write(low, _tone(1000, sr, 4.0), sr)
    sf.write(high, _tone(3000, sr, 4.0), sr)
    segments = [(str(low), 0.2, 2.0, False), (str(high), 0.5, 1.5, True), (str(low), 1.0, 1.8, False)]
    bg = {"site": "S1", "level_rms": 0.01, "segments": segments}
    duration_s = 2.0 + 1.5 + 1.8 - 2 * sbg.XFADE_S
    y = sbg.render_background(bg, n=int(round(duration_s * sr)), sr=sr)
    _write_tables(tmp_path, {"train": [("r1", SimpleNamespace(background=bg))], "test": []})

    table = synth.read_backgrounds(tmp_path)
    assert list(table.file) == ["site/S1_low.wav", "site/S1_high.wav", "site/S1_low.wav"]
    assert list(table.reversed) == [False, True, False]
    assert table.at_s.tolist() == pytest.approx([0.0, 2.0 - sbg.XFADE_S, 3.5 - 2 * sbg.XFADE_S])
    # the 3 kHz file fills the audio from its at_s for its length_s, the 1 kHz file elsewhere
    hop = int(0.01 * sr)
    t = (np.arange(len(y) // hop) + 0.5) * hop / sr
    spectra = np.abs(np.fft.rfft(y[: len(t) * hop].reshape(len(t), hop), axis=1))
    is_high = spectra[:, 30] > spectra[:, 10]  # 3 kHz and 1 kHz bins of a 10 ms frame
    start, length = table.at_s[1], table.length_s[1]
    inside = (t > start + sbg.XFADE_S) & (t < start + length - sbg.XFADE_S)
    outside = (t < start) | (t > start + length)
    assert is_high[inside].all() and not is_high[outside].any()


def test_read_backgrounds_is_none_without_the_file_and_names_bad_rows(tiny_data_dir, tmp_path):
    assert synth.read_backgrounds(tiny_data_dir) is None
    rows = pd.DataFrame({"split": ["train"] * 2, "recording_id": ["r1"] * 2, "site": ["A"] * 2,
                         "file": ["a/x.wav", "a/y.wav"], "start_s": [0.0, -1.0], "length_s": [3.0, 2.0],
                         "reversed": [False, True], "level_rms": [0.006] * 2})
    rows.to_csv(tmp_path / "synth_backgrounds.csv", index=False)
    with pytest.raises(DataError,
                       match=r"synth_backgrounds.csv: rows \[3\] .*start_s \[-1.0\].*expected start_s >= 0"):
        synth.read_backgrounds(tmp_path)
    rows.drop(columns="level_rms").to_csv(tmp_path / "synth_backgrounds.csv", index=False)
    with pytest.raises(DataError, match=r"synth_backgrounds.csv: columns \['level_rms'\] missing"):
        synth.read_backgrounds(tmp_path)


def test_sites_per_split_draws_one_bar_per_site_training_first(field_like):
    stretches = synth.read_backgrounds(field_like)
    ds = data.load_dataset(field_like)
    counts = field.site_counts(stretches)
    n_b = len(ds.train_ids) // 4
    assert counts == {"train_sites": 2, "train_recordings_per_site": {"A": len(ds.train_ids) - n_b, "B": n_b},
                      "test_sites": 1, "test_recordings_per_site": {"C": len(ds.test_ids)}}
    ax = field.sites_per_split(stretches)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B", "C"]
    assert [p.get_width() for p in ax.patches] == [len(ds.train_ids) - n_b, n_b, len(ds.test_ids)]
    colors = [matplotlib.colors.to_hex(p.get_facecolor()) for p in ax.patches]
    assert colors == [field.SPLIT_COLORS["train"]] * 2 + [field.SPLIT_COLORS["test"]]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"train: 2 site(s), {len(ds.train_ids)} recordings",
                      f"test: 1 site(s), {len(ds.test_ids)} recordings"]
    plt.close(ax.figure)


def test_background_bar_draws_one_labelled_span_per_stretch(field_like):
    stretches = synth.read_backgrounds(field_like)
    rid = stretches.recording_id.iloc[0]  # the first training recording: two stretches
    mine = stretches[stretches.recording_id == rid]
    ax = field.background_bar(mine, duration_s=10.0)
    spans = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert [(p.get_x(), p.get_width()) for p in spans] == list(zip(mine.at_s, mine.length_s))
    assert spans[0].get_facecolor() != spans[1].get_facecolor()  # two files, two colours
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["A_0.wav\n1.0-5.0 s", "A_1.wav\n0.0-6.1 s reversed"]
    assert ax.get_xlim() == (0.0, 10.0)
    plt.close(ax.figure)
    with pytest.raises(ParameterError, match=r"rows of 2 recordings .* expected the stretches of one"):
        field.background_bar(stretches[stretches.recording_id.isin(stretches.recording_id.unique()[:2])])


def test_recording_with_background_draws_boxes_bar_and_stretch_lines(field_like):
    stretches = synth.read_backgrounds(field_like)
    ds = data.load_dataset(field_like)
    calls = synth.read_calls(field_like)
    pair = field.pick_pair(stretches, ds.tp, ds.fp, seed=0)
    assert [split for split, _ in pair] == ["train", "test"]
    (_, train_id), (_, test_id) = pair
    n_stretches = stretches.groupby("recording_id").size()
    assert train_id in set(ds.tp.recording_id) & set(ds.fp.recording_id) and n_stretches[train_id] == 2
    assert n_stretches[test_id] == 2
    S = np.random.default_rng(0).random((938, 128))

    tp, fp = ds.tp[ds.tp.recording_id == train_id], ds.fp[ds.fp.recording_id == train_id]
    unl = synth.unlabelled_calls(calls, train_id)
    fig = field.recording_with_background(S, stretches=stretches[stretches.recording_id == train_id],
                                          tp=tp, fp=fp, unlabelled=unl, title=f"train recording {train_id}")
    spec, bar = fig.axes
    boxes = [p for p in spec.patches if isinstance(p, Rectangle)]
    assert len(boxes) == len(tp) + len(fp) + len(unl)
    assert spec.get_title() == f"train recording {train_id} · site A: 2 stretches of 2 files, -44 dBFS"
    assert len(spec.get_lines()) == 1  # a dotted line where the second stretch begins
    second_at_s = stretches.at_s[stretches.recording_id == train_id].iloc[1]
    assert spec.get_lines()[0].get_xdata()[0] == pytest.approx(second_at_s)
    assert len(bar.patches) == 2 and bar.get_xlim() == spec.get_xlim()
    plt.close(fig)

    truth = synth.recording_calls(calls, test_id)
    truth_ids = ds.ground_truth.species_id[ds.ground_truth.recording_id == test_id]
    assert len(truth) and set(truth.species_id) == set(truth_ids)
    fig = field.recording_with_background(S, stretches=stretches[stretches.recording_id == test_id],
                                          calls=truth)
    spec = fig.axes[0]
    assert sorted(t.get_text() for t in spec.texts) == sorted(f"call s{s}" for s in truth.species_id)
    assert [t.get_text() for t in spec.get_legend().get_texts()] == ["call present\n(synthetic truth)"]
    assert spec.get_title().startswith("site C: 2 stretches of 2 files")
    plt.close(fig)


def test_pick_pair_leaves_out_a_split_without_recordings(field_like):
    stretches = synth.read_backgrounds(field_like)
    ds = data.load_dataset(field_like)
    only_train = stretches[stretches.split == "train"]
    assert [s for s, _ in field.pick_pair(only_train, ds.tp, ds.fp, seed=3)] == ["train"]
    picks = {field.pick_pair(stretches, ds.tp, ds.fp, seed=seed)[0][1] for seed in range(4)}
    assert len(picks) > 1  # the seed picks among the equally good recordings


def test_spectrogram_legend_names_only_what_is_drawn():
    S = np.random.default_rng(0).random((200, 128))
    ax = eda.spectrogram_with_boxes(S)
    assert ax.get_legend() is None and not ax.patches
    plt.close(ax.figure)


@pytest.mark.slow
@pytest.mark.parametrize("with_backgrounds", [False, True], ids=["tiny", "field-like"])
def test_notebook_01_shows_real_backgrounds_only_when_the_data_has_them(with_backgrounds, tiny_data_dir,
                                                                          field_like, tmp_path):
    import papermill

    notebook = ROOT / "notebooks" / "01_eda.ipynb"
    data_dir = field_like if with_backgrounds else tiny_data_dir
    out = tmp_path / "01.ipynb"
    papermill.execute_notebook(str(notebook), str(out), kernel_name="python3", progress_bar=False,
                               parameters={"data_dir": str(data_dir), "run_dir": str(tmp_path / "run"),
                                           "n_examples": 1, "n_players": 1}, cwd=str(notebook.parent))
    figures = {p.name for p in (tmp_path / "run" / "figures").glob("*.png")}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["eda"]
    printed = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                      if c.cell_type == "code" for o in c.outputs)
    message = "no synth_backgrounds.csv: not a data set with real backgrounds (field), nothing to show"
    assert "01_examples.png" in figures
    if with_backgrounds:
        assert {"01_sites.png", "01_field_examples.png"} <= figures and message not in printed
        assert metrics["train_sites"] == 2 and metrics["test_recordings_per_site"] == {"C": 12}
    else:
        assert not {"01_sites.png", "01_field_examples.png"} & figures and message in printed
        assert "train_sites" not in metrics
