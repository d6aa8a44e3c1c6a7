"""``rfcx train``: one model over its folds (:func:`rfcxlib.training.train.train_model`).

Tests: tests/test_train.py
"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", required=True, help="a data folder in the RFCx layout")
    p.add_argument("--model-dir", required=True, help="the model folder (with several workers: "
                   "written by the chief only)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a configuration field (a YAML scalar, as papermill's -p), e.g. -p epochs 5")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def handle(args: argparse.Namespace) -> int:
    """The strategy first (before TensorFlow runs anything: several workers need it), then every
    fold of the configuration; the chief prints the metrics as one JSON line."""
    from rfcxlib.training import distribute

    strategy = distribute.init_strategy()  # before the modules below build anything
    from rfcxlib.config import RunConfig
    from rfcxlib.data.tables import load_dataset
    from rfcxlib.runner.profiles import parse_value
    from rfcxlib.training.train import train_model

    params = {name: parse_value(value) for name, value in args.parameter}
    config = RunConfig.from_params({**params, "data_dir": args.data_dir})
    result = train_model(load_dataset(args.data_dir), config, args.model_dir,
                         progress=not args.no_progress)
    if distribute.is_chief(strategy):
        print(json.dumps(result), flush=True)
    return 0
