"""``rfcx predict`` of a run with several BirdNET heads on the same embedder: time and windows embedded.

Trains (once, into ``--work``) a run of ``--heads`` embedding heads on the ``tiny`` synthetic data set,
each with another seed and the same embedder and hop, then scores ``--files`` of its test recordings:
``predict.load_predictor`` once, then ``Predictor.score_file`` on every file, ``--repeats`` times (the
median is reported; a first pass over one file warms every path up and is not timed). Every call to
BirdNET is counted (windows embedded), so runs of two rfcxlib versions on the same run folder compare
like with like (``PYTHONPATH`` picks the version).

Usage::

    python benchmarks/bench_predict.py [--work /tmp/bench-predict] [--heads 2] [--files 4] [--repeats 3]
        [--out benchmarks/results/predict.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent


def make_run(work: Path, heads: int):
    """A run folder of ``heads`` BirdNET heads (seeds 0.., 2 epochs, one fold) on ``tiny`` (generated
    into ``work``), and the data set."""
    from rfcxlib.config import RunConfig
    from rfcxlib.data import tables
    from rfcxlib.embeddings import heads as eh
    from rfcxlib.synth import dataset as synth

    run, data_dir = work / "run", work / "tiny"
    if not (data_dir / "train_tp.csv").is_file():
        synth.generate(data_dir, profile="tiny", seed=0)
    dataset = tables.load_dataset(data_dir)
    for k in range(heads):
        folder = run / "models" / f"head{k}"
        if (folder / "test_scores.npz").is_file():
            continue
        config = RunConfig.from_params(dict(profile="tiny", backbone="birdnet", seed=k, folds=3, train_folds=[0],
                                            data_dir=str(data_dir)))
        eh.train_head_model(dataset, config, eh.HeadConfig(epochs=2, embed_hop_s=1.5), folder, progress=False)
    return run, dataset


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/bench-predict", help="folder for the run (reused when there)")
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--files", type=int, default=4, help="tiny test recordings scored (10 s each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "predict.json"))
    args = p.parse_args(argv)

    import rfcxlib
    from rfcxlib.embeddings import birdnet
    from rfcxlib.inference import predict

    run, dataset = make_run(Path(args.work), args.heads)
    files = [dataset.path(r, "test") for r in dataset.test_ids[:args.files]]
    embedded = [0]
    embed = birdnet.EmbeddingModel.embed

    def counting(self, windows):
        embedded[0] += len(windows)
        return embed(self, windows)

    birdnet.EmbeddingModel.embed = counting
    started = time.perf_counter()
    predictor, _ = predict.load_predictor(run)
    load_s = time.perf_counter() - started
    predictor.score_file(files[0])  # warm-up
    seconds, windows = [], None
    for _ in range(args.repeats):
        embedded[0] = 0
        started = time.perf_counter()
        for path in files:
            predictor.score_file(path)
        seconds.append(time.perf_counter() - started)
        windows = embedded[0]
    result = {"rfcxlib": str(Path(rfcxlib.__file__).parent), "heads": args.heads, "files": len(files),
              "audio_s": 10.0 * len(files), "load_s": round(load_s, 2), "score_s_median": round(statistics.median(seconds), 3),
              "score_s": [round(s, 3) for s in seconds], "windows_embedded": windows,
              "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(), "python": platform.python_version()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
