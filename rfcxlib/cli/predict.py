"""``rfcx predict``: field recordings scored by a run or a model (:func:`rfcxlib.inference.predict.predict`).

Tests: tests/test_predict.py
"""
from __future__ import annotations

import argparse
import sys
import traceback


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN_OR_MODEL_DIR", help="a run folder (models/*/, ensembled) or one model folder")
    p.add_argument("paths", metavar="PATH", nargs="+", help="audio files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--threshold", type=float, default=None, help="detection threshold for every species "
                   "(with --precision: for species that cannot be fitted); default: the run's thresholds.json "
                   "when it was fitted for these models, else 0.5")
    p.add_argument("--precision", type=float, default=None, help="fit one threshold per species on the "
                   "out-of-fold scores for this target precision (saved as thresholds.json with the run)")
    p.add_argument("--hop-s", type=float, default=None, help="seconds between window starts, for every "
                   "model (default: each model's own inference hop, as its test scores were made)")
    p.add_argument("--batch-size", type=int, default=16, help="windows scored at a time")
    p.add_argument("--data-dir", default=None, help="RFCx-layout data folder for the species' bands "
                   "(and species.csv names); default: the data set the models were trained on")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    from rfcxlib.beam_io import add_runner_options

    add_runner_options(p)  # last: what follows --runner RUNNER goes to Beam


def handle(args: argparse.Namespace) -> int:
    """Scores the files and prints the counts and each skipped file; a run or file that cannot be
    used is status 1 (2 is a usage error)."""
    from rfcxlib.errors import DataError
    from rfcxlib.inference.predict import predict

    if getattr(args, "runner", None) is not None:  # on Apache Beam
        from functools import partial

        from rfcxlib.inference import beam

        predict = partial(beam.predict, runner=args.runner)
    try:
        report = predict(args.source, args.paths, args.out, threshold=args.threshold, precision=args.precision,
                         hop_s=args.hop_s, strict=args.strict, data_dir=args.data_dir,
                         batch_size=args.batch_size, progress=not args.no_progress)
    except DataError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"rfcx predict: error: {exc}", file=sys.stderr)
        return 1
    counts = report["counts"]
    print(f"{counts['done']} file(s) scored, {counts['skipped']} skipped; outputs in {args.out}")
    for entry in report["files"]:
        if entry["status"] == "skipped":
            print(f"  skipped: {entry['reason']}")  # the reason names the file
        elif "warning" in entry:
            print(f"  {entry['file']}: {entry['warning']}")
    return 0
