"""Seconds per epoch of an embedding head's training loop: the shared step against a head's own loop.

Three loops train the same head (notebook 04's: 256 units, dropout 0.3, batch 64, masked BCE,
mixup 0.5) on the same random embeddings (BirdNET's 1024 dimensions) from the same initial
weights:

- ``own_graph_loop``: a GradientTape step written for the head, the epoch's full batches in one
  ``tf.range`` graph loop (how heads trained before they used the shared step);
- ``shared_step``: :func:`rfcxlib.training.steps.make_step` called once per batch from Python
  (:func:`rfcxlib.training.steps.run_epoch`), as the CNN folds and co-teaching run it;
- ``shared_step_graph_loop``: the same shared step, the epoch's full batches in one graph loop
  (:func:`rfcxlib.embeddings.head_fit.fit_head`).

For each number of windows (``--windows``; the ``tiny`` data set's folds train on about 200
windows, ``mini``'s on a few thousand) every loop runs one warm-up epoch (tracing), then the loops
take turns, ``--repeats`` times in a rotating order, each running the same ``--epochs`` epochs of
batches; the result is the median seconds per epoch of each loop, with the load average.

Usage::

    python benchmarks/bench_head_step.py [--windows 200 2000] [--epochs 20] [--repeats 3] [--out FILE]
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

import numpy as np  # noqa: E402

DIM = 1024


def _own_graph_loop(model, optimizer, loss_fn):
    import tensorflow as tf

    def train_step(xb, tb):
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(loss_fn(tb, model(xb, training=True)))
        grads = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return value

    @tf.function(reduce_retracing=True)
    def full_batches(xs, ts):
        total = tf.constant(0.0)
        for i in tf.range(tf.shape(xs)[0]):
            total += train_step(xs[i], ts[i])
        return total

    step = tf.function(train_step, reduce_retracing=True)

    def epoch(batches, size):
        full = [b for b in batches if len(b[0]) == size]
        total = float(full_batches(np.stack([b[0] for b in full]), np.stack([b[1] for b in full]))) if full else 0.0
        return total + sum(float(step(xb, tb)) for xb, tb in batches[len(full):])

    return epoch


def _shared_step(model, optimizer, loss_fn):
    from rfcxlib.training import steps

    step = steps.make_step([model], [optimizer], steps.loss_objective("masked_bce", loss_fn))
    return lambda batches, size: steps.run_epoch(step, batches)["loss"]


def _shared_step_graph_loop(model, optimizer, loss_fn):
    from rfcxlib.embeddings import head_fit

    run = head_fit.epoch_runner(model, optimizer, "masked_bce")
    return lambda batches, size: run(batches, size)


LOOPS = {"own_graph_loop": _own_graph_loop, "shared_step": _shared_step,
         "shared_step_graph_loop": _shared_step_graph_loop}


def measure(windows: int, epochs: int, repeats: int) -> dict:
    from rfcxlib.embeddings import head_config, head_fit
    from rfcxlib.training import losses, steps

    rng = np.random.default_rng(0)
    x = rng.normal(size=(windows, DIM)).astype(np.float32)
    targets = np.concatenate([rng.random((windows, 24)) < 0.1, rng.random((windows, 24)) < 0.3], axis=1)
    targets = targets.astype(np.float32)
    config = head_config.HeadConfig()
    runs, batches_rng = {}, np.random.default_rng(1)
    for name, make in LOOPS.items():
        model = head_fit.build_head(x, config, seed=0)
        runs[name] = make(model, steps.make_optimizer(config.learning_rate, model), losses.get_loss("masked_bce"))
        runs[name](list(head_fit.mixup_batches(x, targets, config, batches_rng)), config.batch_size)  # tracing
    times = {name: [] for name in LOOPS}
    for r in range(repeats):  # the loops take turns, in a rotating order, so a change of load hits all alike
        epoch_batches = [list(head_fit.mixup_batches(x, targets, config, batches_rng)) for _ in range(epochs)]
        order = list(LOOPS)[r % len(LOOPS):] + list(LOOPS)[:r % len(LOOPS)]
        for name in order:
            start = time.perf_counter()
            for batches in epoch_batches:
                runs[name](batches, config.batch_size)
            times[name].append((time.perf_counter() - start) / epochs)
    return {name: {"s_per_epoch": round(statistics.median(t), 5), "runs": [round(v, 5) for v in t]}
            for name, t in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="a JSON file for the results (default: print only)")
    args = p.parse_args(argv)
    result = {"machine": platform.platform(), "cpus": os.cpu_count(), "load_before": os.getloadavg(),
              "epochs": args.epochs, "repeats": args.repeats, "windows": {}}
    for n in args.windows:
        result["windows"][n] = measure(n, args.epochs, args.repeats)
        print(n, json.dumps(result["windows"][n]), flush=True)
    result["load_after"] = os.getloadavg()
    print(json.dumps({k: result[k] for k in ("load_before", "load_after")}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
