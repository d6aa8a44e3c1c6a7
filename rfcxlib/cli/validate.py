"""``rfcx validate DIR``: check a data folder in the RFCx layout (:mod:`rfcxlib.data.checks`).

No TensorFlow: the checks read the tables and decode with libsndfile.

Tests: tests/test_data.py
"""
from __future__ import annotations

import argparse

from rfcxlib.layout import SAMPLE_RATE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", help="folder in the RFCx layout")
    p.add_argument("--sr", type=int, default=SAMPLE_RATE, help="expected sample rate in Hz (0: any)")
    p.add_argument("--headers-only", action="store_true", help="read FLAC headers, do not decode")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def handle(args: argparse.Namespace) -> int:
    """Prints the report; status 1 when the folder has a problem."""
    from rfcxlib.data import checks

    report = checks.validate(args.data_dir, sr=args.sr or None, decode=not args.headers_only,
                             progress=not args.no_progress)
    print(checks.format_report(report))
    return 1 if report["problems"] else 0
