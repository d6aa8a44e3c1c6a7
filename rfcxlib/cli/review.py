"""``rfcx review``: a review queue for people who label elsewhere, and its import.

::

    rfcx review RUN --n 50 --out DIR      # the run's heads rank the unknown cells; DIR holds the queue
    rfcx review --import DIR              # the filled-in tables become rows of the labels folder

The queue (:mod:`rfcxlib.review.raven_queue`) is one Raven selection table per recording with the
queried windows as selections and an empty ``Answer`` column, plus a short clip of each window.
The answers go to ``<RUN>/labels/`` (``--labels`` for another folder); train with them through
``rfcx run --extra-labels <RUN>/labels``. The parser is light: the work modules (TensorFlow) are
imported when the command runs.

Tested in ``tests/test_review.py``.

Tests: tests/test_review.py
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rfcxlib.errors import DataError, ParameterError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", default="", metavar="RUN", help="a run folder whose models/ hold "
                   "embedding heads (notebook 04, backbone birdnet)")
    p.add_argument("--n", type=int, default=50, help="queries in the queue (default 50)")
    p.add_argument("--out", default="", metavar="DIR", help="folder of the review queue")
    p.add_argument("--strategy", default="uncertainty", help="uncertainty (default), disagreement or random")
    p.add_argument("--per-recording", type=int, default=1, help="at most this many queries per recording")
    p.add_argument("--seed", type=int, default=0, help="breaks ties (and orders random)")
    p.add_argument("--clip-pad-s", type=float, default=1.0, help="seconds of context in each clip, either side")
    p.add_argument("--import", dest="import_dir", default="", metavar="DIR",
                   help="read the answers of a filled-in queue into its labels folder")
    p.add_argument("--labels", default="", metavar="DIR", help="labels folder (default: RUN/labels, or "
                   "the one the queue names)")
    p.add_argument("--annotator", default="", help="who answered (kept with every row)")
    p.add_argument("--data-dir", default="", help="the data folder (default: the run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_data_dir(run: Path) -> Path:
    """The data folder a run was made on (its ``config.json``)."""
    from rfcxlib.atomic import read_json
    from rfcxlib.layout import CONFIG_FILE
    from rfcxlib.synth import dataset as synth

    config = read_json(run / CONFIG_FILE, default=None)
    if not config:
        raise DataError(f"{run / 'config.json'}: not found; expected a run folder of rfcx run or the notebooks")
    where = (config.get("series") or {}).get("data_dir") or (config.get("data") or {}).get("data_dir")
    if where:
        return Path(where)
    data = config.get("data") or {}
    root = synth.dataset_dir(data.get("profile", "mini"), int(data.get("data_seed", 0)))
    if not synth.is_complete(root):
        raise DataError(f"{root}: the run's synthetic data set is not there; pass --data-dir")
    return root


def make_queue(args) -> int:
    from rfcxlib.data.tables import load_dataset
    from rfcxlib.review import committee as review_committee
    from rfcxlib.review.answers import AnswerStore
    from rfcxlib.review.queries import band_table, rank_queries
    from rfcxlib.review.raven_queue import write_queue

    run = Path(args.run)
    if not run.is_dir():
        raise DataError(f"{run}: no such folder; expected a run folder (models/*/)")
    if not args.out:
        raise ParameterError("--out: expected the folder of the review queue")
    root = Path(args.data_dir) if args.data_dir else run_data_dir(run)
    dataset = load_dataset(root, sr=None)
    store = AnswerStore(Path(args.labels) if args.labels else run / "labels", dataset)
    committee = review_committee.from_run(run)
    table = review_committee.embed_for(dataset, committee.head, recording_ids=dataset.train_ids,
                                       progress=not args.no_progress)
    pool = committee.pool(store.labelled(), table)
    queries = rank_queries(pool, strategy=args.strategy, n=args.n, per_recording=args.per_recording,
                           seed=args.seed, exclude=store.answered(), bands=band_table(dataset))
    manifest = write_queue(queries, dataset, args.out, labels_dir=store.folder, source=str(run.resolve()),
                           clip_pad_s=args.clip_pad_s)
    for note in committee.notes:
        print(f"note: {note}")
    print(f"{len(queries)} queries ({args.strategy}, {len(committee)} heads) over {len(manifest['tables'])} "
          f"recordings in {args.out}; fill in the Answer column, then: rfcx review --import {args.out}")
    return 0


def import_answers(args) -> int:
    from rfcxlib.data.tables import load_dataset
    from rfcxlib.review.raven_queue import import_queue, read_manifest

    manifest = read_manifest(args.import_dir)
    dataset = load_dataset(args.data_dir or manifest["data_dir"], sr=None)
    counts = import_queue(args.import_dir, dataset, labels_dir=args.labels or None, annotator=args.annotator)
    print(f"{counts['imported']} answers read; {counts['labels_dir']}: {counts['present']} present, "
          f"{counts['absent']} absent, {counts['skip']} skipped in all")
    print(json.dumps({k: v for k, v in counts.items() if k != "labels_dir"}))
    return 0


def handle(args: argparse.Namespace) -> int:
    if bool(args.run) == bool(args.import_dir):
        raise ParameterError("expected a run folder (rfcx review RUN --n 50 --out DIR) or --import DIR, one of them")
    return import_answers(args) if args.import_dir else make_queue(args)
