"""``rfcx export``: a CNN, BirdNET heads or a run's ensemble for a device
(:func:`rfcxlib.inference.deploy.export_any`).

Tests: tests/test_export.py
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rfcxlib.inference.export import FORMATS

    p.add_argument("model_dir", metavar="RUN_OR_MODEL_DIR",
                   help="a model folder (outputs/<run>/models/<name>/) or a run folder (its ensemble)")
    p.add_argument("--format", required=True, choices=FORMATS, help="savedmodel or tflite")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="a CNN: the SavedModel folder or the .tflite file; BirdNET heads or a run: the "
                        "export folder (members, BirdNET's model, rfcx_export.json, run_exported.py)")


def handle(args: argparse.Namespace) -> int:
    """Exports and prints where to; a source that cannot be exported is status 1."""
    from rfcxlib.errors import DataError
    from rfcxlib.inference.deploy import export_any

    try:
        path = export_any(args.model_dir, fmt=args.format, out=args.out)
    except DataError as exc:
        if getattr(args, "debug", False):
            traceback.print_exc()
        print(f"rfcx export: error: {exc}", file=sys.stderr)
        return 1
    if Path(path, "rfcx_export.json").is_file():
        print(f"exported {args.model_dir} as {args.format}: {path} "
              f"(run it: python {Path(path) / 'run_exported.py'} RECORDING)")
        return 0
    extra = f" (metadata: {Path(path).with_suffix('.json')})" if args.format == "tflite" else ""
    print(f"exported {args.model_dir} as {args.format}: {path}{extra}")
    return 0
