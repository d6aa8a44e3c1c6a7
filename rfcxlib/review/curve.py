"""The learning curve of the review loop: test LWLRAP of the retrained heads against the number of
answered queries, per query strategy and seed, with the time per round.

One seed of one strategy is a loop (:func:`run_loop`): a committee trained on the original labels
(:func:`rfcxlib.review.committee.train_committee`) is scored on the data set's test recordings;
then, for each next point of ``answers`` (e.g. 25, 50, 100, 200), the committee of the previous
point ranks the unknown cells of the training recordings (:func:`rfcxlib.review.queries.rank_queries`),
the oracle answers as many new queries as the point asks for, the answers join the labels as TP
and FP rows (:func:`rfcxlib.review.answers.answer_rows`), a new committee trains on them and is
scored. The committee at 0 answers is the same for every strategy of a seed, so it trains once.

:func:`summarise` gives mean ± std over seeds per (strategy, answers); :func:`verdicts` compares
each strategy with ``random`` at the same number of answers: a strategy whose mean is within one
standard deviation of random's (or below it) is reported as no better than random.

``benchmarks/bench_review.py`` runs it on a profile and writes the JSON and the figure.
Tested in ``tests/test_review.py``.
"""
from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
from rfcxlib.progress import tqdm

from rfcxlib.errors import ParameterError
from rfcxlib.review import committee as review_committee
from rfcxlib.review.answers import answer_rows, songtypes
from rfcxlib.review.queries import STRATEGIES, band_table, rank_queries

CURVE_COLUMNS = ["strategy", "seed", "answers", "present", "test_lwlrap", "round_s", "queries_s", "train_s"]


def check_answers(answers: Sequence[int]) -> list[int]:
    points = [int(a) for a in answers]
    if not points or points != sorted(set(points)) or points[0] < 0:
        raise ParameterError(f"answers = {list(answers)!r}: expected increasing numbers of answers >= 0, "
                             "e.g. [0, 25, 50, 100, 200]")
    return points


def run_loop(dataset, table, oracle, *, strategy: str, answers: Sequence[int], seed: int, head,
             members: int = 3, per_recording: int = 1, start: Optional[tuple] = None) -> list[dict]:
    """One strategy and seed of the curve (module docstring): one row per point of ``answers``.

    ``start``: ``(committee, test_lwlrap, seconds)`` at 0 answers, trained before (shared by the
    strategies of a seed)."""
    if strategy not in STRATEGIES:
        raise ParameterError(f"strategy {strategy!r}: expected one of {sorted(STRATEGIES)}")
    points = check_answers(answers)
    bands, songtype = band_table(dataset), songtypes(dataset)
    if start is None:
        began = time.perf_counter()
        model = review_committee.train_committee(dataset, table, head, members=members, seed=seed)
        start = (model, model.test_lwlrap(dataset, table), time.perf_counter() - began)
    model, score, train_s = start
    current, asked, rows = dataset, set(), []
    done = 0
    for point in points:
        queries_s = 0.0
        if point > done:
            began = time.perf_counter()
            queries = rank_queries(model.pool(current, table), strategy=strategy, n=point - done,
                                   per_recording=per_recording, seed=seed * 1000 + point, exclude=asked, bands=bands)
            new = answer_rows(queries, oracle.answer(queries), songtype=songtype, annotator="oracle")
            current = current.with_rows(tp=new["tp"].iloc[:, :7], fp=new["fp"].iloc[:, :7])
            asked |= set(queries.query_id)
            queries_s = time.perf_counter() - began
            began = time.perf_counter()
            model = review_committee.train_committee(current, table, head, members=members, seed=seed)
            score, train_s = model.test_lwlrap(current, table), time.perf_counter() - began
            done = done + len(queries)
        present = len(current.tp) - len(dataset.tp)
        rows.append({"strategy": strategy, "seed": int(seed), "answers": int(point if point <= done else done),
                     "present": int(present), "test_lwlrap": round(float(score), 6),
                     "round_s": round(queries_s + train_s, 3), "queries_s": round(queries_s, 3),
                     "train_s": round(train_s, 3)})
    return rows


def learning_curve(dataset, table, oracle, *, strategies: Sequence[str] = tuple(STRATEGIES),
                   answers: Sequence[int] = (0, 25, 50, 100, 200), seeds: Sequence[int] = (0, 1, 2), head,
                   members: int = 3, per_recording: int = 1, progress: bool = True,
                   on_row: Optional[Callable[[pd.DataFrame], None]] = None) -> pd.DataFrame:
    """Every strategy and seed of the curve: one row per (strategy, seed, answers) in
    :data:`CURVE_COLUMNS`. ``on_row(frame)`` is called after each loop with the rows so far."""
    points = check_answers(answers)
    for s in strategies:
        if s not in STRATEGIES:
            raise ParameterError(f"strategy {s!r}: expected one of {sorted(STRATEGIES)}")
    if not seeds:
        raise ParameterError("seeds = []: expected at least one seed")
    rows: list[dict] = []
    jobs = [(int(seed), s) for seed in seeds for s in strategies]
    starts: dict = {}
    for seed, strategy in tqdm(jobs, desc="review loop (strategy x seed)", disable=not progress):
        if seed not in starts:
            began = time.perf_counter()
            model = review_committee.train_committee(dataset, table, head, members=members, seed=seed)
            starts[seed] = (model, model.test_lwlrap(dataset, table), time.perf_counter() - began)
        rows += run_loop(dataset, table, oracle, strategy=strategy, answers=points, seed=seed, head=head,
                         members=members, per_recording=per_recording, start=starts[seed])
        if on_row:
            on_row(pd.DataFrame(rows, columns=CURVE_COLUMNS))
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def summarise(curve: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per (strategy, answers): ``test_lwlrap_mean, test_lwlrap_std,
    present_mean, round_s_mean, seeds``."""
    g = curve.groupby(["strategy", "answers"], sort=True)
    out = pd.DataFrame({"test_lwlrap_mean": g.test_lwlrap.mean(), "test_lwlrap_std": g.test_lwlrap.std(ddof=0),
                        "present_mean": g.present.mean(), "round_s_mean": g.round_s.mean(),
                        "seeds": g.seed.nunique()})
    return out.reset_index()


def verdicts(summary: pd.DataFrame, baseline: str = "random") -> pd.DataFrame:
    """Each strategy against ``baseline`` at every number of answers > 0: the difference of the means
    and ``better`` (the difference exceeds both strategies' std; None with fewer than two seeds)."""
    base = summary[summary.strategy == baseline].set_index("answers")
    rows = []
    for r in summary[(summary.strategy != baseline) & (summary.answers > 0)].itertuples(index=False):
        if r.answers not in base.index:
            continue
        b = base.loc[r.answers]
        diff = r.test_lwlrap_mean - b.test_lwlrap_mean
        rows.append({"strategy": r.strategy, "answers": int(r.answers), "minus_random": round(float(diff), 4),
                     "better": bool(diff > max(r.test_lwlrap_std, b.test_lwlrap_std)) if r.seeds >= 2 else None})
    return pd.DataFrame(rows, columns=["strategy", "answers", "minus_random", "better"])


def headline(summary: pd.DataFrame, at: int = 100) -> dict:
    """The README's table: at ``at`` answers, the best strategy against random, and none (0 answers)."""
    def cell(strategy, answers):
        r = summary[(summary.strategy == strategy) & (summary.answers == answers)]
        return None if r.empty else (round(float(r.test_lwlrap_mean.iloc[0]), 4),
                                     round(float(r.test_lwlrap_std.iloc[0]), 4))

    there = summary[(summary.answers == at) & (summary.strategy != "random")]
    best = str(there.sort_values("test_lwlrap_mean").strategy.iloc[-1]) if len(there) else None
    none = summary[summary.answers == 0]
    return {"answers": at, "best_strategy": best, "best": cell(best, at) if best else None,
            "random": cell("random", at),
            "none": (round(float(none.test_lwlrap_mean.mean()), 4), round(float(none.test_lwlrap_std.mean()), 4))
            if len(none) else None}


def round_seconds(curve: pd.DataFrame) -> float:
    """Mean seconds of a round that answered queries (ranking, answering, retraining)."""
    rounds = curve[curve.answers > 0]
    return float(np.mean(rounds.round_s)) if len(rounds) else float("nan")
