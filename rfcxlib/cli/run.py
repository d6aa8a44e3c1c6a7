"""``rfcx run``: the notebook series headless (:mod:`rfcxlib.runner.series`).

Tests: tests/test_series.py
"""
from __future__ import annotations

import argparse
import json
import os


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", default="mini",
                   help="tiny, mini (default), field, full, or a path to a profile YAML file")
    p.add_argument("--run-id", default="", help="folder name under outputs/ (default: a "
                   "timestamp); an existing run id resumes that run")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="override a notebook parameter (a YAML "
                   "scalar, as papermill's -p); NN.NAME sets it for notebook NN only")
    p.add_argument("--data-dir", default="", help="a data folder in the RFCx layout (default: "
                   "the synthetic data set of the profile)")
    p.add_argument("--sweep", default="", help="a sweep file: the training notebook runs once "
                   "per parameter set (e.g. configs/sweeps/seed_densenet7.yaml)")
    p.add_argument("--notebooks", default="", help="comma-separated prefixes to run, e.g. 01,04")
    p.add_argument("--notebooks-dir", default="", help="the folder of the series (default: "
                   "the project's notebooks/)")
    p.add_argument("--kernel", default="", help="Jupyter kernel (default: rfcx, else python3)")
    p.add_argument("--dry-run", action="store_true", help="print the steps and their "
                   "parameters, execute nothing")


def handle(args: argparse.Namespace) -> int:
    """Runs the series (or, with ``--dry-run``, prints its steps and checks them, writing nothing)."""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    from rfcxlib.runner import series

    plan = series.prepare(profile=args.profile, run_id=args.run_id, overrides=dict(args.parameter),
                          data_dir=args.data_dir, sweep=args.sweep, select=args.notebooks,
                          folder=args.notebooks_dir, kernel=args.kernel, generate=not args.dry_run,
                          check_weights=not args.dry_run)
    if args.dry_run:
        print_steps(plan)
        return 0
    return series.run_series(plan, debug=getattr(args, "debug", False))


def print_steps(plan) -> None:
    """``--dry-run``: each step, its parameters and the model it builds, then the checks."""
    from rfcxlib.runner import series, step_configs

    for step in plan.steps:
        print(f"{step.key} -> {step.output}\n    {json.dumps(step.parameters, default=str)}")
        if "backbone" in step.parameters or step.notebook.name.startswith("04"):
            print(f"    builds: {step_configs.describe(step_configs.step_config(step))}")
    step_configs.check_weights(plan.steps)
    series.check_before_running(plan)  # a dry run writes nothing
