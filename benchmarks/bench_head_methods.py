"""Label methods on BirdNET embedding heads: test and validation LWLRAP over seeds, and time.

On a synthetic data set (``rfcxlib.synth.dataset.ensure_dataset(profile, data_seed)``, generated once and
cached) and notebook 05's folds, every seed trains, through
``rfcxlib.noisy.compare.compare_methods`` (with a ``HeadConfig``):

=============================  ==============================================================
``masked_bce``                 one head, masked BCE (TP = 1, FP = 0, unknown cells ignored)
``pseudo_labels``              pseudo-labels (``--pseudo-threshold``) on a masked-BCE base head
``soft_pseudo``                soft pseudo-label rounds (``--soft-rounds``, rows kept with p 0.5)
``masked_bce+recording_norm``  masked BCE on embeddings centred per recording
=============================  ==============================================================

and reports per method the test LWLRAP (the synthetic test set's complete truth) and the
out-of-fold LWLRAP on the known labels (what a competitor could measure), mean ± std over seeds,
and the seconds per seed. Model folders go under ``outputs/bench_head_methods-<profile>/``
(a fold trained before under the same settings is reused: delete the folder for clean timings);
the JSON under ``benchmarks/results/``. BirdNET's model files: CC BY-NC-SA 4.0.

Usage::

    python benchmarks/bench_head_methods.py --profile mini [--seeds 0 1 2]   # heavy: a quiet machine
    python benchmarks/bench_head_methods.py --profile tiny --seeds 0         # a check, about a minute
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILES = ("tiny", "mini", "field")
METHODS = ("masked_bce", "pseudo_labels", "soft_pseudo", "masked_bce+recording_norm")


def run(args) -> dict:
    from rfcxlib.data import tables as data
    from rfcxlib.embeddings import birdnet as embeddings
    from rfcxlib.embeddings.head_config import HeadConfig, SoftPseudoConfig
    from rfcxlib.noisy import compare
    from rfcxlib.runner import profiles
    from rfcxlib.synth import dataset as synth
    from rfcxlib.config import RunConfig
    from rfcxlib.paths import outputs_root

    hop_s = args.embed_hop_s or float(profiles.load_profile(args.profile)["parameters"].get("embed_hop_s", 1.0))
    dataset = data.load_dataset(synth.ensure_dataset(args.profile, args.data_seed))
    config = RunConfig.from_params(dict(profile=args.profile, data_seed=args.data_seed, backbone="birdnet",
                                        folds=args.folds, train_folds=args.train_folds, checkpoint="last"))
    head = HeadConfig(embed_hop_s=hop_s, epochs=args.head_epochs)
    soft = SoftPseudoConfig(rounds=args.soft_rounds)
    work = Path(args.work_dir) if args.work_dir else outputs_root() / f"bench_head_methods-{args.profile}"
    started = time.perf_counter()
    table = embeddings.embed_dataset(dataset, embedder=head.embedder, hop_s=hop_s, progress=True)
    embed_s = time.perf_counter() - started
    common = dict(seeds=args.seeds, pseudo_threshold=args.pseudo_threshold, soft=soft, table=table)
    results = compare.compare_methods(dataset, config, work / "plain", head=head,
                                      methods=["masked_bce", "pseudo_labels", "soft_pseudo"], **common)
    normed = compare.compare_methods(dataset, config, work / "recording_norm", head=HeadConfig(
        embed_hop_s=hop_s, epochs=args.head_epochs, recording_norm=True), methods=["masked_bce"], **common)
    results = pd.concat([results, normed.assign(method="masked_bce+recording_norm")], ignore_index=True)
    return {"profile": args.profile, "data_seed": args.data_seed, "seeds": list(args.seeds),
            "settings": {"folds": args.folds, "train_folds": list(args.train_folds), "embed_hop_s": hop_s,
                         "head": head.to_dict(), "pseudo_threshold": args.pseudo_threshold,
                         "pseudo_loss": "masked_bce", "soft": soft.to_dict()},
            "data": repr(dataset), "windows": len(table), "embed_s": round(embed_s, 1),
            "runs": [{k: _none(v) if isinstance(v, float) else v for k, v in r.items()}
                     for r in results.drop(columns="model_dir").to_dict(orient="records")],
            "summary": summarize(results), "model_dirs": str(work)}


def _none(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def summarize(results: pd.DataFrame) -> list[dict]:
    """Per method (in :data:`METHODS` order): test and OOF LWLRAP mean and std over seeds, seconds."""
    rows = []
    for method in METHODS:
        g = results[results.method == method]
        rows.append({"method": method, "seeds": len(g),
                     "test_mean": _none(g.test_lwlrap.mean()), "test_std": _none(g.test_lwlrap.std(ddof=1)),
                     "oof_mean": _none(g.oof_lwlrap.mean()), "oof_std": _none(g.oof_lwlrap.std(ddof=1)),
                     "seconds_mean": _none(g.train_s.mean())})
    return rows


def markdown(summary: list[dict]) -> str:
    """The summary as a markdown table (``mean ± std``; the mean alone for one seed)."""
    def pm(mean, std):
        if mean is None:
            return "n/a"
        return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"

    lines = ["| method | test LWLRAP | validation (OOF, known labels) | seconds per seed |", "|---|---|---|---|"]
    for r in summary:
        seconds = "n/a" if r["seconds_mean"] is None else f"{r['seconds_mean']:.1f}"
        lines.append(f"| `{r['method']}` | {pm(r['test_mean'], r['test_std'])} | {pm(r['oof_mean'], r['oof_std'])} "
                     f"| {seconds} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=PROFILES, default="mini", help="synthetic data set (default mini)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data set")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    p.add_argument("--folds", type=int, default=5, help="folds grouped by recording (notebook 05: 5)")
    p.add_argument("--train-folds", type=int, nargs="+", default=[0], help="folds trained (notebook 05: 0)")
    p.add_argument("--head-epochs", type=int, default=60, help="epochs of each head (notebook 05: 60)")
    p.add_argument("--embed-hop-s", type=float, default=None, help="embedded windows every this many seconds "
                   "(default: the profile's embed_hop_s, else 1.0)")
    p.add_argument("--pseudo-threshold", type=float, default=0.9, help="pseudo_labels' threshold")
    p.add_argument("--soft-rounds", type=int, default=3, help="soft_pseudo's rounds")
    p.add_argument("--work-dir", default=None, help="model folders (default outputs/bench_head_methods-PROFILE)")
    p.add_argument("--out", default=None, help="JSON (default benchmarks/results/head_methods_PROFILE.json)")
    args = p.parse_args(argv)

    started = time.perf_counter()
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_1min_start": os.getloadavg()[0]}, **run(args)}
    result["machine"]["load_1min_end"] = os.getloadavg()[0]
    result["wall_s"] = round(time.perf_counter() - started, 1)
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"head_methods_{args.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
    print(f"\n{args.profile} (data seed {args.data_seed}), seeds {args.seeds}, folds {args.train_folds} of "
          f"{args.folds}, {result['windows']} windows; {result['wall_s']:.0f} s in all\n")
    print(markdown(result["summary"]))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
