"""The data-set figures draw what they claim: one box per row, bars that add up to the rows,
co-occurrence counts, and a figure for every notebook-01 panel on the tiny data set."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from rfcxlib.data import tables as data  # noqa: E402
from rfcxlib.synth import dataset as synth
from rfcxlib.plots import eda  # noqa: E402


def _pairs(rows):
    return pd.DataFrame(rows, columns=["recording_id", "species_id"])


def test_cooccurrence_matrix_counts_recordings():
    pairs = _pairs([("a", 1), ("a", 2), ("a", 2), ("b", 1), ("b", 2), ("c", 3)])
    m = eda.cooccurrence_matrix(pairs)
    assert m.shape == (24, 24) and m[1, 2] == m[2, 1] == 2 and m[3, 3] == 1 and m[1, 3] == 0
    cross = eda.cooccurrence_matrix(pairs, _pairs([("a", 5), ("c", 5), ("z", 7)]))
    assert cross[1, 5] == 1 and cross[3, 5] == 1 and cross[:, 7].sum() == 0


def test_rows_per_species_bars_add_up(tiny_data_dir):
    ds = data.load_dataset(tiny_data_dir)
    ax = eda.rows_per_species(ds.tp, ds.fp)
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == len(ds.tp) + len(ds.fp) and len(heights) == 48
    plt.close(ax.figure)


def test_spectrogram_draws_one_box_per_row(tiny_data_dir):
    ds = data.load_dataset(tiny_data_dir)
    calls = synth.read_calls(tiny_data_dir)
    rid = eda.pick_examples(ds.tp, ds.fp, 1, seed=0)[0]
    tp, fp = ds.tp[ds.tp.recording_id == rid], ds.fp[ds.fp.recording_id == rid]
    unl = synth.unlabelled_calls(calls, rid)
    assert len(tp) and len(fp)  # the first example has both kinds of rows
    S = np.random.default_rng(0).random((900, 128))
    ax = eda.spectrogram_with_boxes(S, tp=tp, fp=fp, unlabelled=unl)
    boxes = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(boxes) == len(tp) + len(fp) + len(unl)
    labels = [t.get_text() for t in ax.texts]
    assert all(f"TP s{s}" in labels for s in tp.species_id)
    assert all(f"FP s{s}" in labels for s in fp.species_id)
    assert [t.get_text() for t in ax.get_legend().get_texts()][0].startswith("TP row")
    plt.close(ax.figure)


def test_power_to_db_and_other_panels(tiny_data_dir):
    db = eda.power_to_db(np.array([1e-20, 1e-3, 1.0]), top_db=60)
    assert np.allclose(db, [-60, -30, 0])
    ds = data.load_dataset(tiny_data_dir)
    calls = synth.read_calls(tiny_data_dir)
    for draw in (lambda ax: eda.band_per_species(ds.tp, ax=ax), lambda ax: eda.box_lengths(ds.tp, ax=ax),
                 lambda ax: eda.cooccurrence(ds.ground_truth, ax=ax),
                 lambda ax: eda.calls_per_species(calls, ax=ax),
                 lambda ax: eda.species_per_recording(ds.ground_truth, ax=ax)):
        fig, ax = plt.subplots()
        assert draw(ax) is ax and ax.get_title()
        plt.close(fig)
    ax = eda.calls_per_species(calls)
    train_calls = calls[(calls.split == "train") & (calls.kind == "call")]
    assert sum(p.get_height() for p in ax.patches) == len(train_calls)
    plt.close(ax.figure)
