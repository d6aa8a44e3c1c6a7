"""Decoding benchmark: recordings at other rates than 48 kHz, decoded for training and streamed
for ``rfcx predict``; one run, one JSON file.

Writes ``--files`` recordings of 60 s (16-bit FLAC, noise and tones) at each rate of ``--rates``,
then measures, in seconds of audio per wall-clock second and per CPU second of this process (the
best of ``--repeats``; CPU seconds are the steadier figure on a shared machine):

1. ``load_audio(path, sr=48000)``: the training decoder (:mod:`rfcxlib.audio.decode`);
2. ``audio_blocks(path, sr=48000)``: the streaming reader of ``rfcx predict``
   (:mod:`rfcxlib.audio.streaming`);
3. ``load_audio(path)``: decoding alone, at the file's own rate (the floor under 1 and 2);

and the largest difference between the samples of 1 and 2 for each file.

Usage::

    python benchmarks/bench_decode.py [--out benchmarks/results/decode.json] [--files 3] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from rfcxlib.audio import decode, streaming  # noqa: E402

SR = 48000
DURATION_S = 60.0


def write_recordings(folder: Path, rate: int, n: int) -> list[Path]:
    rng = np.random.default_rng(rate)
    t = np.arange(int(DURATION_S * rate)) / rate
    paths = []
    for k in range(n):
        y = 0.05 * rng.standard_normal(t.size) + 0.3 * np.sin(2 * np.pi * (1000.0 + 500.0 * k) * t)
        paths.append(folder / f"r{rate}-{k}.flac")
        sf.write(paths[-1], y.astype(np.float32), rate, subtype="PCM_16")
    return paths


def rates_of(decode_fn, paths: list[Path], repeats: int) -> dict:
    """Seconds of audio per wall-clock second and per CPU second, each the best of ``repeats``."""
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        for p in paths:
            decode_fn(p)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    audio_s = len(paths) * DURATION_S
    return {"per_wall_s": round(audio_s / min(wall), 1), "per_cpu_s": round(audio_s / min(cpu), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/decode.json")
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rates", type=int, nargs="+", default=[44100, 32000])
    args = ap.parse_args()
    results = {"machine": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg()[0],
               "files": args.files, "duration_s": DURATION_S, "rates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for rate in args.rates:
            paths = write_recordings(Path(tmp), rate, args.files)
            train = lambda p: decode.load_audio(p, sr=SR)[0]  # noqa: E731
            stream = lambda p: np.concatenate(list(streaming.audio_blocks(p, sr=SR)))  # noqa: E731
            native = lambda p: decode.load_audio(p)[0]  # noqa: E731
            diff = max(float(np.abs(train(p) - stream(p)).max()) if len(train(p)) == len(stream(p))
                       else float("inf") for p in paths)
            results["rates"][str(rate)] = {
                "load_audio": rates_of(train, paths, args.repeats),
                "audio_blocks": rates_of(stream, paths, args.repeats),
                "decode_only": rates_of(native, paths, args.repeats),
                "max_abs_difference": diff}
            print(rate, results["rates"][str(rate)], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
