"""Co-teaching and pseudo-labelling: the schedule, the controlled noisy-label check, the
multi-label selection and loop, pseudo-label rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from rfcxlib.training import losses
from rfcxlib.noisy import coteaching, pseudo_labels, toy
from rfcxlib.errors import ParameterError


def test_keep_rate_schedule():
    rates = [coteaching.keep_rate(t, tau=0.4, t_k=10) for t in (0, 5, 10, 50)]
    np.testing.assert_allclose(rates, [1.0, 0.8, 0.6, 0.6])
    with pytest.raises(ParameterError, match=r"'tau' = 1.2.*\[0, 1\)"):
        coteaching.keep_rate(0, tau=1.2, t_k=10)
    with pytest.raises(ParameterError, match=r"'t_k' = 0"):
        coteaching.keep_rate(0, tau=0.2, t_k=0)


@pytest.mark.parametrize("kind", ["symmetric", "pairflip"])
def test_inject_label_noise(kind):
    clean = np.repeat(np.arange(10), 100)
    noisy_labels = toy.inject_label_noise(clean, num_classes=10, noise_rate=0.45, kind=kind, seed=3)
    flipped = noisy_labels != clean
    assert flipped.sum() == 450
    if kind == "pairflip":
        np.testing.assert_array_equal(noisy_labels[flipped], (clean[flipped] + 1) % 10)
    else:
        assert len(np.unique((noisy_labels[flipped] - clean[flipped]) % 10)) == 9
    np.testing.assert_array_equal(
        noisy_labels, toy.inject_label_noise(clean, num_classes=10, noise_rate=0.45, kind=kind, seed=3))
    with pytest.raises(ParameterError, match=r"unknown noise kind 'uniform'.*'pairflip'"):
        toy.inject_label_noise(clean, num_classes=10, noise_rate=0.2, kind="uniform")
    with pytest.raises(ParameterError, match=r"'noise_rate' = 1.0"):
        toy.inject_label_noise(clean, num_classes=10, noise_rate=1.0)


@pytest.mark.parametrize("kind,rate,margin", [("symmetric", 0.5, 0.15), ("pairflip", 0.45, 0.10)])
def test_coteaching_beats_standard_training_under_label_noise(kind, rate, margin):
    """Han et al.'s setting in small: standard training memorises the noisy labels and its clean
    test accuracy falls; co-teaching's selected samples are mostly clean and it keeps its accuracy."""
    task = toy.make_noisy_task(noise_rate=rate, kind=kind, seed=0)
    standard = toy.train_single_label(task, method="standard", epochs=40, seed=0)
    coteach = toy.train_single_label(task, method="coteaching", epochs=40, tau=rate, seed=0)
    print(f"{kind} {rate:.0%}: standard {standard['final_test_accuracy']:.3f}, "
          f"co-teaching {coteach['final_test_accuracy']:.3f}")
    assert coteach["final_test_accuracy"] > standard["final_test_accuracy"] + margin
    # after the schedule settles, the samples co-teaching keeps are much cleaner than the data
    assert np.mean(coteach["label_precision"][-10:]) > (1 - rate) + 0.15
    assert standard["label_precision"][-1] == pytest.approx(1 - rate)


def test_single_label_training_is_deterministic():
    task = toy.make_noisy_task(n_train=512, n_test=256, noise_rate=0.3, seed=1)
    a = toy.train_single_label(task, method="coteaching", epochs=3, tau=0.3, t_k=2, seed=5)
    b = toy.train_single_label(task, method="coteaching", epochs=3, tau=0.3, t_k=2, seed=5)
    assert a["test_accuracy"] == b["test_accuracy"]
    with pytest.raises(ParameterError, match=r"unknown single-label method 'mentornet'"):
        toy.train_single_label(task, method="mentornet", epochs=1)


# --------------------------------------------------------------------------- multi-label mode
def test_select_unknown_cells_per_species():
    # 5 examples x 2 species; species 0: examples 0, 1 known, 3 unknown cells;
    # species 1: every cell unknown
    cell_losses = tf.constant([[9.0, 0.5], [0.1, 0.4], [0.3, 0.3], [2.0, 0.2], [1.0, 0.1]])
    mask = tf.constant([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    keep = coteaching.select_unknown_cells(cell_losses, mask, 0.7).numpy()
    # species 0: floor(0.7 * 3) = 2 smallest unknown (rows 2, 4); species 1: floor(3.5) = 3 (rows 2, 3, 4)
    np.testing.assert_array_equal(keep, [[0, 0], [0, 0], [1, 1], [0, 1], [1, 1]])
    np.testing.assert_array_equal(coteaching.select_unknown_cells(cell_losses, mask, 1.0).numpy(), 1 - mask.numpy())
    np.testing.assert_array_equal(coteaching.select_unknown_cells(cell_losses, mask, 0.0).numpy(), 0)


def test_coteaching_loss_spans_masked_to_naive_bce(rng):
    y = (rng.random((6, 24)) > 0.8).astype(np.float32)
    mask = np.maximum(y, (rng.random((6, 24)) > 0.6).astype(np.float32))
    targets = losses.pack_targets(y, mask)
    logits = rng.normal(size=(6, 24)).astype(np.float32)
    np.testing.assert_allclose(coteaching.coteaching_loss(targets, logits, np.ones_like(y)).numpy(),
                               losses.naive_bce(targets, logits).numpy(), rtol=1e-5)
    np.testing.assert_allclose(coteaching.coteaching_loss(targets, logits, np.zeros_like(y)).numpy(),
                               losses.masked_bce(targets, logits).numpy(), rtol=1e-5)


def _partial_label_batches(rng, n_batches=6, batch=32, n_features=16, species=24):
    w = rng.normal(size=(n_features, species)).astype(np.float32)
    batches = []
    for _ in range(n_batches):
        x = rng.normal(size=(batch, n_features)).astype(np.float32)
        present = (x @ w > 2.0).astype(np.float32)
        mask = (rng.random((batch, species)) < 0.3).astype(np.float32)
        batches.append((x, losses.pack_targets(present * mask, mask)))
    return batches


def test_coteach_fit_trains_two_models(rng):
    batches = _partial_label_batches(rng)

    def model():
        return tf.keras.Sequential([tf.keras.Input((16,)), tf.keras.layers.Dense(24)])

    tf.keras.utils.set_random_seed(0)
    a, b = model(), model()
    assert not np.allclose(a.get_weights()[0], b.get_weights()[0])
    seen = []
    history = coteaching.coteach_fit(a, b, batches, epochs=4, tau=0.5, t_k=2, learning_rate=0.05,
                                on_epoch_end=lambda epoch, logs: seen.append(epoch) or {"extra": epoch * 2},
                                progress=False)
    assert seen == [0, 1, 2, 3] and [h["extra"] for h in history] == [0, 2, 4, 6]
    np.testing.assert_allclose([h["keep_rate"] for h in history], [1.0, 0.75, 0.5, 0.5])
    # the fraction of unknown cells learnt from follows the keep rate (floor per species and batch)
    for h in history:
        assert h["keep_rate"] - 0.1 <= h["kept_unknown"] <= h["keep_rate"]
    assert history[-1]["loss_a"] < history[0]["loss_a"] and history[-1]["loss_b"] < history[0]["loss_b"]
    with pytest.raises(ParameterError, match="'epochs' = 0"):
        coteaching.coteach_fit(a, b, batches, epochs=0)
    with pytest.raises(ParameterError, match="yielded no batch"):
        coteaching.coteach_fit(a, b, [], epochs=1, progress=False)


# --------------------------------------------------------------------------- pseudo-labels
@pytest.fixture(scope="module")
def tiny_dataset(tiny_data_dir):
    from rfcxlib.data import tables as data

    return data.load_dataset(tiny_data_dir)


def test_pseudo_label_rows_skip_known_cells_and_use_species_bands(tiny_dataset):
    ds = tiny_dataset
    tp = ds.tp.iloc[0]
    rid, s = tp.recording_id, int(tp.species_id)
    other = next(r for r in ds.train_ids if r not in set(ds.tp.recording_id[ds.tp.species_id == s])
                 and r not in set(ds.fp.recording_id[ds.fp.species_id == s]))
    windows = pd.DataFrame({"recording_id": [rid, other, other], "start_s": [max(0.0, tp.t_min - 1.0), 0.0, 3.0]})
    scores = np.zeros((3, 24), np.float32)
    scores[:, s] = [0.99, 0.95, 0.5]  # known TP window, unknown and confident, unknown but unsure
    rows = pseudo_labels.pseudo_label_rows(ds, windows, scores, crop_s=4.0, threshold=0.9)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row.recording_id, row.species_id, row.t_min, row.t_max) == (other, s, 0.0, 4.0)
    band = ds.tp[ds.tp.species_id == s]
    assert row.f_min == pytest.approx(band.f_min.median()) and row.f_max == pytest.approx(band.f_max.median())
    extended = ds.with_rows(tp=rows[list(ds.tp.columns)])
    y, mask = extended.window_targets(other, 0.0, 4.0)
    assert y[s] == 1 and mask[s] == 1 and len(extended.tp) == len(ds.tp) + 1
    quality = pseudo_labels.pseudo_label_quality(ds, rows)
    assert quality["rows"] == 1 and quality["correct"] in (0, 1)


def test_pseudo_label_quality_counts_calls_from_the_synthetic_list(tiny_dataset):
    ds = tiny_dataset
    calls = pd.read_csv(ds.root / "synth_calls.csv")
    hidden = calls[(calls.split == "train") & (calls.kind == "call") & ~calls.labelled].iloc[0]
    right = pd.DataFrame([{"recording_id": hidden.recording_id, "species_id": hidden.species_id,
                           "songtype_id": 1, "t_min": hidden.t_min, "f_min": 0.0, "t_max": hidden.t_max,
                           "f_max": 1000.0}])
    wrong = right.assign(species_id=(hidden.species_id + 1) % 24, t_min=0.0, t_max=0.01)
    quality = pseudo_labels.pseudo_label_quality(ds, pd.concat([right, wrong], ignore_index=True))
    assert quality["rows"] == 2 and quality["correct"] == 1 and quality["precision"] == 0.5
    assert quality["unlabelled_calls_found"] >= 1


def test_pseudo_label_rows_reject_bad_input(tiny_dataset):
    windows = pd.DataFrame({"recording_id": tiny_dataset.train_ids[:2], "start_s": [0.0, 0.0]})
    with pytest.raises(ParameterError, match=r"'threshold' = 1.5"):
        pseudo_labels.pseudo_label_rows(tiny_dataset, windows, np.zeros((2, 24)), crop_s=4.0, threshold=1.5)
    with pytest.raises(ParameterError, match=r"scores of shape \(3, 24\): expected \(2, 24\)"):
        pseudo_labels.pseudo_label_rows(tiny_dataset, windows, np.zeros((3, 24)), crop_s=4.0)


# --------------------------------------------------------------------------- figures
def test_noisy_plots_draw_and_check_their_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rfcxlib.plots import noisy as noisy_plots

    results = pd.DataFrame({"method": ["naive_bce"] * 3 + ["masked_bce"] * 3, "seed": [0, 1, 2] * 2,
                            "val_lwlrap": [0.9, 0.92, 0.91, 0.85, 0.86, 0.84],
                            "test_lwlrap": [0.6, 0.62, 0.61, 0.75, 0.74, 0.76]})
    ax = noisy_plots.method_comparison(results)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["naive_bce", "masked_bce"]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(sorted(heights), sorted([0.91, 0.85, 0.61, 0.75]), atol=1e-9)
    assert "3 seed" in ax.get_title()
    ax2 = noisy_plots.validation_vs_test(results)
    assert ax2.get_xlabel().startswith("validation")
    history = {"test_accuracy": [0.5, 0.6], "label_precision": [0.5, 0.7]}
    fig = noisy_plots.coteaching_check({"standard": history, "coteaching": history}, noise="50% symmetric")
    assert len(fig.axes) == 2 and "50% symmetric" in fig._suptitle.get_text()
    plt.close("all")
    with pytest.raises(ParameterError, match=r"missing columns \['test_lwlrap'\]"):
        noisy_plots.method_comparison(results.drop(columns="test_lwlrap"))
    with pytest.raises(ParameterError, match="histories is empty"):
        noisy_plots.coteaching_check({})
