"""CLI start-up benchmark: wall time and peak memory of ``rfcx --help`` and ``rfcx validate`` on a data
folder, each in a fresh process (median of several runs), and whether TensorFlow was imported; one JSON
file per label, so a change to the package's structure can be compared before and after.

Usage::

    python benchmarks/bench_cli.py --data ~/.cache/rfcx/synth/mini-seed0 [--repeat 5] [--label after]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# runs the CLI in this process and says afterwards whether TensorFlow was loaded
PROBE = ("import sys\nfrom rfcxlib.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
         "print('TF_LOADED' if 'tensorflow' in sys.modules else 'TF_ABSENT', file=sys.stderr)")


def measure(args: list[str]) -> dict:
    """One fresh process: wall seconds, peak RSS (MB) and whether TensorFlow was imported."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=ROOT)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if "TF_" not in done.stderr:
        raise SystemExit(f"rfcx {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    # RUSAGE_CHILDREN keeps the largest child so far: a smaller process reads as the old peak, so
    # each command runs first in its own interpreter below (see main)
    return {"seconds": seconds, "peak_rss_mb": max(peak, before) / 1024,
            "tensorflow_imported": "TF_LOADED" in done.stderr}


def run_isolated(args: list[str], repeat: int) -> dict:
    """``repeat`` measurements, each from a fresh parent, so peak RSS is the command's own."""
    rows = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--one", json.dumps(args)], capture_output=True,
                             text=True, cwd=ROOT, check=True)
        rows.append(json.loads(out.stdout))
    return {"command": "rfcx " + " ".join(args),
            "seconds_median": statistics.median(r["seconds"] for r in rows),
            "seconds_min": min(r["seconds"] for r in rows),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rows),
            "tensorflow_imported": any(r["tensorflow_imported"] for r in rows), "repeat": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache/rfcx/synth/mini-seed0")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(json.loads(args.one))))
        return
    if not args.data.is_dir():
        raise SystemExit(f"--data {args.data} is not a folder: generate it with rfcx synth --profile mini")
    result = {"label": args.label, "machine": platform.processor() or platform.machine(),
              "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
              "commands": [run_isolated(["--help"], args.repeat),
                           run_isolated(["validate", str(args.data), "--headers-only", "--no-progress"],
                                        args.repeat),
                           run_isolated(["validate", str(args.data), "--no-progress"], max(1, args.repeat // 2))]}
    out = args.out or ROOT / "benchmarks" / "results" / f"cli-{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for c in result["commands"]:
        print(f"{c['command'][:60]:60s} {c['seconds_median']:6.2f} s  {c['peak_rss_mb']:6.0f} MB  "
              f"TF {'yes' if c['tensorflow_imported'] else 'no'}")
    print(f"written {out}")


if __name__ == "__main__":
    main()
