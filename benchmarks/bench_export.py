"""Export benchmark: the size of each export of a run and the speed of the exported models with a
TFLite interpreter alone, against ``rfcx predict`` on the same files; one JSON file.

For a run folder (default: the newest under ``outputs/``), ``rfcx export --format tflite`` of every
model folder and of the whole run (its ensemble). Each export is timed through its own
``run_exported.py`` (loaded from the export folder, NumPy + soundfile + a TFLite interpreter) with
1 and 2 interpreter threads, and ``rfcx predict`` of the same source on the same recordings (its
models as TensorFlow graphs, BirdNET through rfcxlib's embedding model). A first recording warms
every path up and is not timed.

Reported per export: file sizes (members, BirdNET's model, total), seconds of audio per second,
and windows per second (every window a member scores, summed over the members).

Usage::

    python benchmarks/bench_export.py [--run outputs/<run>] [--files 20] [--out benchmarks/results/export.json]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def newest_run() -> Path:
    runs = sorted((p for p in (ROOT / "outputs").glob("*/") if (p / "models").is_dir()),
                  key=lambda p: p.stat().st_mtime)
    if not runs:
        raise SystemExit("no run under outputs/ with models/: make run first, or give --run")
    return runs[-1]


def sizes(folder: Path) -> dict:
    files = {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    members = sum(v for k, v in files.items() if k.startswith("members/"))
    birdnet = sum(v for k, v in files.items() if k.startswith("birdnet/"))
    return {"members_mb": members / 1e6, "birdnet_mb": birdnet / 1e6, "total_mb": sum(files.values()) / 1e6,
            "files": files}


def load_runner(folder: Path):
    spec = importlib.util.spec_from_file_location(f"runner_{folder.name}", folder / "run_exported.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def member_windows(meta: dict, duration_s: float, runner) -> int:
    return sum(len(runner.member_windows.window_starts(duration_s, m["window_s"], m["hop_s"]))
               for m in meta["members"])


def time_exported(folder: Path, files: list, threads: int) -> dict:
    runner = load_runner(folder)
    model = runner.Exported(folder, threads=threads)
    runner.score_file(model, files[0])  # warm-up
    audio_s = windows = 0
    started = time.perf_counter()
    for path in files[1:]:
        runner.score_file(model, path)
        duration = sf.info(str(path)).duration
        audio_s += duration
        windows += member_windows(model.meta, duration, runner)
    seconds = time.perf_counter() - started
    return {"threads": threads, "seconds": seconds, "audio_s_per_s": audio_s / seconds,
            "windows_per_s": windows / seconds}


def time_predict(source: Path, files: list, meta: dict, runner, work: Path) -> dict:
    from rfcxlib.inference import predict

    predict.predict(source, files[:1], work / "warm", progress=False)
    started = time.perf_counter()
    predict.predict(source, files[1:], work / "timed", progress=False)
    seconds = time.perf_counter() - started
    durations = [sf.info(str(p)).duration for p in files[1:]]
    windows = sum(member_windows(meta, d, runner) for d in durations)
    return {"threads": "TensorFlow's default", "seconds": seconds, "audio_s_per_s": sum(durations) / seconds,
            "windows_per_s": windows / seconds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, default=None, help="run folder (default: the newest under outputs/)")
    p.add_argument("--files", type=int, default=20, help="test recordings to score (the first is a warm-up)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "export.json")
    args = p.parse_args(argv)
    from rfcxlib.data import tables as data
    from rfcxlib.inference import deploy
    from rfcxlib.atomic import read_json, write_json_atomic

    run = args.run or newest_run()
    config = read_json(run / "config.json", default={}) or {}
    data_dir = config.get("data_dir") or (config.get("data") or {}).get("data_dir")
    if not data_dir:
        raise SystemExit(f"{run}/config.json names no data_dir: cannot find its test recordings")
    dataset = data.load_dataset(data_dir)
    files = [dataset.path(r, "test") for r in dataset.test_ids[:max(args.files, 2)]]
    sources = {m.name: m for m in sorted((run / "models").iterdir()) if (m / "config.json").is_file()}
    sources["ensemble"] = run
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
              "run": str(run), "files": len(files) - 1, "audio_s": sum(sf.info(str(f)).duration for f in files[1:]),
              "exports": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, source in sources.items():
            folder = deploy.export_bundle(source, fmt="tflite", out=Path(tmp) / name)
            meta = json.loads((folder / deploy.METADATA_FILE).read_text())
            runner = load_runner(folder)
            entry = {"members": [m["name"] for m in meta["members"]], **sizes(folder),
                     "exported": [time_exported(folder, files, t) for t in (1, 2)],
                     "rfcx_predict": time_predict(source, files, meta, runner, Path(tmp) / f"pred-{name}")}
            result["exports"][name] = entry
            print(f"{name}: {entry['total_mb']:.1f} MB; " + "; ".join(
                f"{t['threads']} thread(s) {t['audio_s_per_s']:.1f} s/s" for t in entry["exported"])
                + f"; rfcx predict {entry['rfcx_predict']['audio_s_per_s']:.1f} s/s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(table(result))
    return result


def table(result: dict) -> str:
    lines = ["| export | members MB | BirdNET MB | total MB | 1 thread: s audio/s (windows/s) | "
             "2 threads | rfcx predict |", "|---|---|---|---|---|---|---|"]
    for name, e in result["exports"].items():
        one, two = e["exported"]
        pr = e["rfcx_predict"]
        lines.append(f"| {name} | {e['members_mb']:.2f} | {e['birdnet_mb']:.1f} | {e['total_mb']:.1f} | "
                     f"{one['audio_s_per_s']:.1f} ({one['windows_per_s']:.1f}) | {two['audio_s_per_s']:.1f} "
                     f"({two['windows_per_s']:.1f}) | {pr['audio_s_per_s']:.1f} ({pr['windows_per_s']:.1f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
