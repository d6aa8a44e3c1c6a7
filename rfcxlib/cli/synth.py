"""``rfcx synth``: write a synthetic data set (:mod:`rfcxlib.synth.dataset`).

Tests: tests/test_synth.py
"""
from __future__ import annotations

import argparse
import json
import time

from rfcxlib.errors import ParameterError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rfcxlib.synth.backgrounds import ENV_TEST, ENV_TRAIN
    from rfcxlib.synth.plan import PROFILES

    p.add_argument("--profile", default="mini", choices=sorted(PROFILES),
                   help="size of the data set (default: mini)")
    p.add_argument("--out", default="", help="output folder (default: the cache, "
                   "$RFCX_CACHE_DIR/synth/<profile>-seed<seed>)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=int, default=0, help="processes (default: all CPUs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--backgrounds", action="append", default=None, metavar="DIR",
                   help="field profile: a folder of field recordings for the training "
                   "backgrounds (repeatable; default: $%s, else ../shared/real-data/backgrounds)"
                   % ENV_TRAIN)
    p.add_argument("--test-backgrounds", action="append", default=None, metavar="DIR",
                   help="field profile: folders of another site's recordings for the test "
                   "backgrounds (repeatable; default: $%s, else the three labelled real "
                   "recordings of ../shared/real-data)" % ENV_TEST)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="a setting in place of the profile's (n_train, n_test, duration_s, "
                   "fp_only, both, p_label, max_calls, fp_extra, fp_max, snr_db)")


def parse_settings(items: list) -> dict:
    """``--set NAME=VALUE`` items as ``{name: value}``, each value read as a YAML scalar."""
    import yaml

    out = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ParameterError(f"--set {item!r}: expected NAME=VALUE")
        out[name.strip()] = yaml.safe_load(raw)
    return out


def handle(args: argparse.Namespace) -> int:
    from rfcxlib.synth import dataset

    start = time.perf_counter()
    extra = dict(backgrounds=args.backgrounds, test_backgrounds=args.test_backgrounds,
                 settings=parse_settings(args.set) or None)
    if args.out:
        out = dataset.generate(args.out, profile=args.profile, seed=args.seed,
                               workers=args.workers or None, progress=not args.no_progress, **extra)
    else:
        out = dataset.ensure_dataset(args.profile, args.seed, progress=not args.no_progress, **extra)
    print_summary(out, time.perf_counter() - start)
    return 0


def print_summary(out, seconds: float) -> None:
    """What ``rfcx synth`` wrote: size, recordings, rows and backgrounds (from ``synth_info.json``)."""
    info = json.loads((out / "synth_info.json").read_text())
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} in {seconds:.1f} s ({size / 1e6:.1f} MB)")
    print(f"  {info['n_train']} train + {info['n_test']} test recordings of {info['duration_s']:g} s; "
          f"{info['tp_rows']} TP rows, {info['fp_rows']} FP rows; {info['unlabelled_calls']} of "
          f"{info['train_calls']} training calls present but unlabelled")
    if "train_tp_fraction" in info:
        print(f"  TP rows on {info['train_tp_fraction']:.0%} and FP rows on "
              f"{info['train_fp_fraction']:.0%} of the training recordings")
    for side, bg in info.get("backgrounds", {}).items():
        used = sum(1 for f in bg["files"] if f["recordings"])
        print(f"  {side} backgrounds: {used} of {len(bg['files'])} files used, sites "
              f"{', '.join(bg['sites'])} ({', '.join(bg['sources'])})")
