"""Ensembling on score files made from known ground truth: noisy copies of the truth with
different noise levels (and a shared per-species miscalibration), in the layout training
writes."""
import json
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from rfcxlib import DataError, ParameterError
from rfcxlib.ensemble import combine as E, ensemble_file, model_scores as MS
from rfcxlib.metrics import lwlrap
from rfcxlib.plots import ensemble as P
from rfcxlib.runner.run_dir import RunDir
from rfcxlib.atomic import save_npz_atomic
from rfcxlib.data.submission import validate_submission, write_submission

matplotlib.use("Agg")
NOISE = (1.5, 2.5, 4.0)  # three models, best to worst


def _truth(n, rng):
    y = np.zeros((n, 24))
    for i in range(n):
        y[i, rng.choice(24, rng.integers(1, 3), replace=False)] = 1
    return y


def _partial(y, rng, n_fp=3):
    """TP labels known, plus a few known negatives per recording (FP rows); the rest unknown."""
    mask = y.copy()
    for i in range(len(y)):
        mask[i, rng.choice(np.flatnonzero(y[i] == 0), n_fp, replace=False)] = 1
    return mask


def _logits(y, rng, noise, bias):
    return np.stack([2.0 * (2 * y - 1) + sd * rng.standard_normal(y.shape) + bias
                     for sd in noise])


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def world():
    """OOF (partial labels, 5 folds) and test (full labels) logits of three models."""
    rng = np.random.default_rng(5)
    bias = rng.normal(0.0, 1.0, 24)
    y, y_test = _truth(500, rng), _truth(300, rng)
    return {"y": y, "mask": _partial(y, rng), "oof": _logits(y, rng, NOISE, bias),
            "y_test": y_test, "test": _logits(y_test, rng, NOISE, bias),
            "oof_ids": np.array([f"tr{i:04d}" for i in range(500)]),
            "test_ids": np.array([f"te{i:04d}" for i in range(300)]),
            "fold": np.arange(500) % 5}


def _stack(w, models=(0, 1, 2), fold=None):
    idx = list(models)
    return MS.Stack(names=[f"m{i}" for i in idx], oof_ids=w["oof_ids"],
                   fold=w["fold"] if fold is None else fold, y=w["y"], mask=w["mask"],
                   oof_scores=_sigmoid(w["oof"][idx]), oof_logits=w["oof"][idx],
                   test_ids=w["test_ids"], test_scores=_sigmoid(w["test"][idx]),
                   test_logits=w["test"][idx])


def _write_model(folder, w, i, *, test_order=None):
    folder.mkdir(parents=True, exist_ok=True)
    perm = np.random.default_rng(i).permutation(len(w["oof_ids"]))  # any row order is fine
    save_npz_atomic(folder / "oof.npz", recording_ids=w["oof_ids"][perm], fold=w["fold"][perm],
                    logits=w["oof"][i][perm].astype(np.float32),
                    scores=_sigmoid(w["oof"][i][perm]).astype(np.float32),
                    y=w["y"][perm].astype(np.float32), mask=w["mask"][perm].astype(np.float32))
    order = np.arange(len(w["test_ids"])) if test_order is None else test_order
    save_npz_atomic(folder / "test_scores.npz", recording_ids=w["test_ids"][order],
                    logits=w["test"][i][order].astype(np.float32),
                    scores=_sigmoid(w["test"][i][order]).astype(np.float32))
    (folder / "metrics.json").write_text(json.dumps({"oof_lwlrap": 0.5}))
    (folder / "config.json").write_text(json.dumps({"model": {"backbone": f"net{i}"}}))
    return folder


def test_combine_methods(world, rng):
    stack = _stack(world)
    p, z = stack.inputs("prob", "oof"), stack.inputs("logit", "oof")
    np.testing.assert_allclose(E.combine(p, method="prob"), p.mean(0))
    np.testing.assert_allclose(E.combine(z, [1, 1, 2], method="logit"),
                               _sigmoid((z[0] + z[1] + 2 * z[2]) / 4))
    one = E.combine(p[:1], method="rank")
    assert one.min() == 0.0 and one.max() == 1.0
    order = np.argsort(p[0][:, 5])
    assert np.all(np.diff(one[:, 5][order]) >= 0), "ranks follow the scores in each column"
    same = np.stack([p[0], p[0]])
    np.testing.assert_allclose(E.combine(same, [0.2, 0.8], method="prob"), p[0])
    with pytest.raises(ParameterError, match=r"unknown ensemble method 'median'.*'logit', "
                                             r"'prob', 'rank'"):
        E.combine(p, method="median")
    with pytest.raises(ParameterError, match=r"weights \[1.0, -1.0, 1.0\]: expected 3 finite"):
        E.combine(p, [1, -1, 1])
    with pytest.raises(ParameterError, match=r"shape \(3, 500\): expected \(models, n, 24\)"):
        E.combine(p[:, :, 0])


def test_weight_search_matches_a_fine_grid_for_two_models(world):
    stack = _stack(world, models=(0, 2))
    X = stack.inputs("prob", "oof")
    w = E.fit_weights(X, stack.y, stack.mask, method="prob")
    fitted = lwlrap(stack.y, E.combine(X, w), stack.mask)
    grid = max(lwlrap(stack.y, E.combine(X, [a, 1 - a]), stack.mask)
               for a in np.linspace(0, 1, 201))
    assert fitted >= grid - 1e-3
    assert w[0] > w[1], "the less noisy model gets the larger weight"
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()


@pytest.mark.parametrize("method", ["prob", "logit", "rank"])
def test_fitted_ensemble_beats_the_best_single_model_on_test(world, method):
    stack = _stack(world)
    fit = E.fit_ensemble(stack, method=method)
    assert fit.choice != "mean" and set(fit.holdout) == {"mean", "weighted", "weighted+rescaled"}
    assert fit.holdout[fit.choice] > fit.holdout["mean"]
    assert fit.split_by == "folds" and fit.n_splits == 5
    table = E.model_table(stack, world["y_test"], fit)
    singles = table.loc[["m0", "m1", "m2"], "test_lwlrap"]
    assert table.loc["ensemble", "test_lwlrap"] > singles.max() + 0.02
    assert table.loc["ensemble", "test_lwlrap"] > table.loc["mean", "test_lwlrap"]
    assert table.loc["ensemble", "oof_lwlrap"] == pytest.approx(fit.oof_lwlrap)
    assert fit.weights[0] == fit.weights.max()


def test_guard_keeps_the_plain_mean_when_fitting_cannot_help(world):
    copies = _stack(world, models=(1, 1, 1))  # three identical models: weights change nothing
    fit = E.fit_ensemble(copies, method="prob", rescale=False)
    assert fit.choice == "mean"
    assert fit.holdout["weighted"] == pytest.approx(fit.holdout["mean"])
    np.testing.assert_allclose(fit.weights, 1 / 3)
    unguarded = E.fit_ensemble(copies, method="prob", rescale=False, guard=False)
    assert unguarded.choice == "weighted" and unguarded.holdout == {}


def test_rescaling_recovers_a_species_miscalibration(rng):
    y, y_test = _truth(800, rng), _truth(400, rng)
    mask = _partial(y, rng)
    damp = np.ones(24)
    damp[3], damp[10] = 0.15, 0.3  # these species' scores are far too low

    def scores(labels):
        return _sigmoid(2.5 * (2 * labels - 1) + 1.5 * rng.standard_normal(labels.shape)) * damp

    oof, test = scores(y), scores(y_test)
    a = E.fit_rescale(oof, y, mask)
    assert a[3] > 2.0 and a[10] > 1.3 and np.median(a) == pytest.approx(1.0, abs=0.1)
    assert lwlrap(y_test, test * a) > lwlrap(y_test, test) + 0.008
    np.testing.assert_allclose(E.fit_rescale(oof, y, np.zeros_like(mask)), 1.0)
    with pytest.raises(ParameterError, match=r"max_factor = 0.5: expected"):
        E.fit_rescale(oof, y, mask, max_factor=0.5)


def test_holdout_splits_use_folds_or_random_groups(world):
    masks, how = E.holdout_splits(_stack(world))
    assert how == "folds" and len(masks) == 5 and np.all(sum(m.astype(int) for m in masks) == 1)
    masks, how = E.holdout_splits(_stack(world, fold=np.zeros(500, int)), n_splits=4, seed=1)
    assert how == "random" and len(masks) == 4 and np.all(sum(m.astype(int) for m in masks) == 1)
    fit = E.fit_ensemble(_stack(world, fold=np.zeros(500, int)), n_splits=3)
    assert fit.split_by == "random" and fit.n_splits == 3


def test_gather_stack_fit_and_write_a_valid_submission(world, tmp_path):
    run = RunDir(tmp_path / "run")
    for i in (0, 1):
        _write_model(run.models / f"net{i}", world, i)
    reverse = np.arange(len(world["test_ids"]))[::-1]  # another model's test rows come reversed
    other = _write_model(tmp_path / "other-run" / "models" / "net2", world, 2, test_order=reverse)
    models = MS.gather_models(run.path, extra=[other.parent.parent])
    assert [m.name for m in models] == ["net0", "net1", "other-run/net2"]
    assert models[2].config["model"]["backbone"] == "net2"
    stack = MS.stack_models(models)
    assert stack.oof_scores.shape == (3, 500, 24) and stack.test_scores.shape == (3, 300, 24)
    np.testing.assert_allclose(stack.test_logits[2], world["test"][2], rtol=1e-6)
    fit = E.fit_ensemble(stack)
    scores = fit.predict(stack, "test")
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("recording_id," + ",".join(f"s{s}" for s in range(24)) + "\n" + "".join(
        f"{r}," + ",".join("0" * 24) + "\n" for r in world["test_ids"]))
    path = write_submission(run.path / "submission.csv", scores, recording_ids=stack.test_ids,
                            sample_submission_path=sample)
    frame = validate_submission(path, sample)
    assert lwlrap(world["y_test"], frame.iloc[:, 1:].to_numpy()) == pytest.approx(
        E.model_table(stack, world["y_test"], fit).loc["ensemble", "test_lwlrap"], abs=1e-4)
    assert [m.name for m in MS.gather_models(run.path, names=["net1"])] == ["net1"]
    with pytest.raises(ParameterError, match=r"unknown model 'net9'; valid choices: 'net0'"):
        MS.gather_models(run.path, names=["net9"])
    gain = E.species_gain(stack, fit, world["y_test"])
    assert gain.shape[0] == 24 and gain["split"].iloc[0] == "test"
    assert np.nansum(gain["ensemble"] * gain["weight"]) == pytest.approx(
        lwlrap(world["y_test"], scores))
    for ax in (P.plot_model_scores(E.model_table(stack, world["y_test"], fit)),
               P.plot_model_scores(E.model_table(stack, None, fit)), P.plot_weights(fit),
               P.plot_holdout(fit), P.plot_species_gain(gain), P.plot_rescale(fit.scale)):
        assert ax.figure is not None
        matplotlib.pyplot.close(ax.figure)


def test_bad_model_folders_give_clear_errors(world, tmp_path):
    with pytest.raises(DataError, match=r"no trained models under .*empty/models'.*04_training"):
        MS.gather_models(tmp_path / "empty")
    good = _write_model(tmp_path / "run" / "models" / "a", world, 0)
    (good.parent / "b").mkdir()
    (good.parent / "b" / "oof.npz").write_bytes((good / "oof.npz").read_bytes())
    with pytest.raises(DataError, match=r"b/test_scores.npz' does not exist"):
        MS.gather_models(tmp_path / "run")
    save_npz_atomic(good.parent / "b" / "test_scores.npz", recording_ids=world["test_ids"],
                    logits=np.zeros((300, 23)), scores=np.zeros((300, 23)))
    with pytest.raises(DataError, match=r"'logits' has shape \(300, 23\), expected \(300, 24\)"):
        MS.gather_models(tmp_path / "run")
    save_npz_atomic(good.parent / "b" / "test_scores.npz", recording_ids=world["test_ids"][:10],
                    logits=np.zeros((10, 24)), scores=np.full((10, 24), np.nan))
    with pytest.raises(DataError, match=r"'scores' holds NaN"):
        MS.gather_models(tmp_path / "run")
    save_npz_atomic(good.parent / "b" / "test_scores.npz", recording_ids=world["test_ids"][:10],
                    logits=np.zeros((10, 24)), scores=np.zeros((10, 24)))
    with pytest.raises(DataError, match=r"model 'b' scored other test recordings than 'a'"):
        MS.stack_models(MS.gather_models(tmp_path / "run"))
    with pytest.raises(DataError, match=r"extra model folder '.*nowhere' does not exist"):
        MS.gather_models(tmp_path / "run", extra=[tmp_path / "nowhere"])
    flipped = dict(world, y=1 - world["y"])
    _write_model(tmp_path / "run2" / "models" / "c", flipped, 1)
    with pytest.raises(DataError, match=r"other known labels than 'a'.*different data sets"):
        MS.stack_models([MS.load_model_scores(good), MS.load_model_scores(
            tmp_path / "run2" / "models" / "c")])


# --------------------------------------------------------------------------- ensemble.json
def test_ensemble_json_round_trips_and_old_files_still_read(world, tmp_path):
    stack = _stack(world)
    fit = E.fit_ensemble(stack, method="logit")
    table = E.model_table(stack, world["y_test"], fit)
    path = ensemble_file.write_ensemble(tmp_path, fit, table)
    body = json.loads(path.read_text())
    assert path.name == "ensemble.json" and len(body["table"]) == 5 and body["choice"] == fit.choice
    saved = ensemble_file.read_ensemble(tmp_path)
    assert saved.method == "logit" and list(saved.weights) == ["m0", "m1", "m2"]
    np.testing.assert_allclose(list(saved.weights.values()), fit.weights, atol=1e-6)
    np.testing.assert_allclose(saved.scale, fit.scale, atol=1e-6)
    assert ensemble_file.read_ensemble(tmp_path / "nowhere") is None
    legacy = ensemble_file.read_ensemble(Path(__file__).parent / "data" / "legacy_run")
    assert (legacy.method, legacy.weights, legacy.scale) == ("logit", {"cnn": 0.4, "head": 0.6}, None)


@pytest.mark.parametrize("body, message", [
    ([1, 2], r"ensemble.json: expected a JSON object"),
    ({"weights": {"a": 1.0}}, r"ensemble.json: key 'method' missing"),
    ({"method": "median", "weights": {"a": 1.0}}, r"ensemble.json: key 'method' = 'median': expected one of"),
    ({"method": "prob", "weights": {"a": -1.0}}, r"ensemble.json: key 'weights' = \{'a': -1.0\}: expected"),
    ({"method": "prob", "weights": {"a": 0.0}}, r"key 'weights'.*a positive sum"),
    ({"method": "prob", "weights": {"a": 1.0}, "scale": [1.0] * 23}, r"ensemble.json: key 'scale': expected 24"),
])
def test_a_bad_ensemble_json_names_the_file_and_the_key(tmp_path, body, message):
    (tmp_path / "ensemble.json").write_text(json.dumps(body))
    with pytest.raises(DataError, match=message):
        ensemble_file.read_ensemble(tmp_path)


def test_an_unreadable_ensemble_json_names_the_file(tmp_path):
    (tmp_path / "ensemble.json").write_text("{not json")
    with pytest.raises(DataError, match=r"ensemble.json: not valid JSON"):
        ensemble_file.read_ensemble(tmp_path)


def test_member_combination_follows_ensemble_json_where_it_can():
    saved = ensemble_file.SavedEnsemble("rank", {"a": 0.6, "b": 0.2, "c": 0.2}, scale=tuple([2.0] + [1.0] * 23))
    both = ensemble_file.member_combination(saved, ["a", "b"])
    np.testing.assert_allclose(both.weights, [0.75, 0.25])
    assert both.method == "prob" and both.scale[0] == 2.0
    assert any("renormalised" in n for n in both.notes) and any("'rank'" in n for n in both.notes)
    stranger = ensemble_file.member_combination(saved, ["a", "z"])
    np.testing.assert_allclose(stranger.weights, [0.5, 0.5])
    assert stranger.method == "prob" and stranger.scale is None and "plain mean" in stranger.notes[0]
    none = ensemble_file.member_combination(None, ["a", "b", "c", "d"])
    assert none.method == "prob" and none.notes == [] and none.weights.tolist() == [0.25] * 4


def _fake_training(dataset, run, noise=NOISE, seed=0):
    """Score files for the tiny data set as training writes them: noisy copies of the truth."""
    from rfcxlib.data.tables import make_folds

    rng = np.random.default_rng(seed)
    folds = make_folds(dataset, n_folds=3, seed=0)
    ids = np.asarray(folds.index, dtype=str)
    y, mask = dataset.targets_matrix(ids)
    truth = dataset.test_truth()
    bias = rng.normal(0.0, 1.0, 24)
    for i, sd in enumerate(noise):
        oof = _logits(y, rng, [sd], bias)[0]
        test = _logits(truth, rng, [sd], bias)[0]
        folder = run.model_dir(f"tinynet{i}")
        save_npz_atomic(folder / "oof.npz", recording_ids=ids, fold=folds.to_numpy(),
                        logits=oof, scores=_sigmoid(oof), y=y, mask=mask)
        save_npz_atomic(folder / "test_scores.npz", recording_ids=np.asarray(dataset.test_ids, dtype=str),
                        logits=test, scores=_sigmoid(test))


@pytest.mark.slow
def test_notebook_06_runs_on_tiny_data(tiny_data_dir, tmp_path):
    import papermill

    from rfcxlib.data.tables import load_dataset

    run = RunDir(tmp_path / "run")
    empty = RunDir(tmp_path / "empty")
    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "06_ensembling.ipynb"
    with pytest.raises(papermill.PapermillExecutionError, match=r"no trained models under"):
        papermill.execute_notebook(str(notebook), str(tmp_path / "failed.ipynb"), kernel_name="python3",
                                   parameters={"data_dir": str(tiny_data_dir),
                                               "run_dir": str(empty.path)}, progress_bar=False)
    dataset = load_dataset(tiny_data_dir)
    _fake_training(dataset, run)
    papermill.execute_notebook(str(notebook), str(tmp_path / "06.ipynb"), kernel_name="python3",
                               parameters={"data_dir": str(tiny_data_dir),
                                           "run_dir": str(run.path)}, progress_bar=False)
    frame = validate_submission(run.path / "submission.csv",
                                tiny_data_dir / "sample_submission.csv")
    assert len(frame) == len(dataset.test_ids)
    values = run.metrics()["ensemble"]
    assert values["n_models"] == 3
    assert values["test_lwlrap"] == pytest.approx(
        lwlrap(dataset.test_truth(), frame.iloc[:, 1:].to_numpy()), abs=1e-4)
    if values["choice"] == "mean":  # tiny data: 12 test recordings, the guard may keep the mean
        assert values["test_lwlrap"] == pytest.approx(values["mean_test_lwlrap"])
    assert values["best_single_test_lwlrap"] == pytest.approx(max(
        lwlrap(dataset.test_truth(), MS.load_model_scores(p).test_scores) for p in run.model_dirs()))
    for name in ("06_scores", "06_weights", "06_species"):
        assert (run.figures / f"{name}.png").stat().st_size > 5000
    saved = json.loads((run.path / "ensemble.json").read_text())
    assert saved["choice"] == values["choice"] and len(saved["table"]) == 5


def test_model_table_reads_oof_three_ways(world):
    """Known labels only (optimistic) >= the complete truth >= unknown read as absent (pessimistic),
    when only some present species are labelled."""
    rng = np.random.default_rng(1)
    w = dict(world)
    y = np.zeros_like(w["y"])  # the complete truth: the labelled species plus unlabelled ones
    for i in range(len(y)):
        y[i, rng.choice(24, 4, replace=False)] = 1
    labelled = y * (rng.random(y.shape) < 0.4)
    labelled[np.arange(len(y)), y.argmax(1)] = 1  # every recording keeps one known positive
    w["y"], w["mask"] = labelled, np.maximum(labelled, _partial(y, rng) * (1 - y))
    w["oof"] = _logits(y, rng, NOISE, 0.0)
    table = E.model_table(_stack(w), oof_truth=y)
    assert list(table.columns) == ["oof_lwlrap", "oof_all_lwlrap", "oof_truth_lwlrap", "test_lwlrap"]
    for name in ("m0", "m1", "m2"):
        row = table.loc[name]
        assert row.oof_lwlrap > row.oof_truth_lwlrap > row.oof_all_lwlrap
        assert row.oof_truth_lwlrap == pytest.approx(lwlrap(y, _sigmoid(w["oof"][int(name[1])])))
    assert table.oof_truth_lwlrap.is_monotonic_decreasing or table.loc["m0"].oof_truth_lwlrap > table.loc["m2"].oof_truth_lwlrap
    assert np.isnan(E.model_table(_stack(w)).oof_truth_lwlrap).all()


def test_clip_truth_of_a_synthetic_data_set(tiny_data_dir):

    from rfcxlib.data.tables import load_dataset
    from rfcxlib.synth import dataset as synth

    ds = load_dataset(tiny_data_dir)
    truth = synth.clip_truth(tiny_data_dir, ds.test_ids)
    assert np.array_equal(truth, ds.test_truth())  # on the test split: test_ground_truth.csv
    train = synth.clip_truth(tiny_data_dir, ds.train_ids)
    tp = ds.tp.assign(row=ds.tp.recording_id.map({r: i for i, r in enumerate(ds.train_ids)}))
    assert train[tp.row.to_numpy(), tp.species_id.to_numpy()].all()  # every TP row's species calls there
    assert train.sum() > len(set(zip(tp.recording_id, tp.species_id)))  # and more, unlabelled
    assert synth.clip_truth(tiny_data_dir / "train", ds.train_ids) is None  # no synth_calls.csv


def test_guard_on_every_cell_reads_unknown_ones_as_absent(world):
    stack = _stack(world)
    known = E.fit_ensemble(stack, method="logit", labels="known")
    every = E.fit_ensemble(stack, method="logit", labels="all")
    assert known.labels == "known" and every.labels == "all" and every.to_dict()["labels"] == "all"
    pooled = stack.y * stack.mask
    assert every.oof_lwlrap == pytest.approx(lwlrap(pooled, every.predict(stack, "oof")))
    assert every.oof_lwlrap < known.oof_lwlrap  # unknown positives count against it
    with pytest.raises(ParameterError, match="guard_labels"):
        E.fit_ensemble(stack, labels="truth")
