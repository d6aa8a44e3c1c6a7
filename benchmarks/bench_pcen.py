"""PCEN smoother benchmark: three ways to run the IIR ``M[t] = (1 - s) M[t - 1] + s E[t]``
(``M[0] = E[0]``) in a TensorFlow graph, one JSON file.

- ``matrix``: rfcxlib's :func:`rfcxlib.features.pcen.smooth` (one lower-triangular matrix product
  up to ``MATRIX_FRAMES`` frames, else one per block of ``BLOCK_FRAMES`` frames);
- ``scan``: ``tf.scan`` over the frames;
- ``fir``: a 1-D convolution with the exponential kernel truncated where it falls below 1e-6 and
  renormalised, the input padded on the left with copies of its first frame.

For each shape: the median wall time in a ``tf.function`` after a warm-up call, and the largest
error relative to a float64 loop. Shapes: a training batch of notebook 04 (32 crops of 3 s at hop
2048: 70 frames x 48 mels), a batch of 3 s crops at hop 512 (278 frames x 128 mels) and one minute
at hop 512 (5600 frames x 128 mels).

Usage::

    python benchmarks/bench_pcen.py [--out benchmarks/results/pcen.json] [--repeats 20]
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
import tensorflow as tf  # noqa: E402

from rfcxlib.features import pcen  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHAPES = {"batch_70x48": (32, 70, 48), "batch_278x128": (32, 278, 128), "minute_5600x128": (1, 5600, 128)}
S = pcen.smoothing_coefficient(0.4, sr=48000, hop_length=2048)


def smooth_scan(E, s):
    frames = tf.transpose(E, [1, 0, 2])  # (frames, batch, mels)
    M = tf.scan(lambda m, e: (1.0 - s) * m + s * e, frames[1:], initializer=frames[0])
    return tf.transpose(tf.concat([frames[:1], M], 0), [1, 0, 2])


def smooth_fir(E, s, floor=1e-6):
    taps = int(np.ceil(np.log(floor) / np.log1p(-s)))
    kernel = (s * (1.0 - s) ** np.arange(taps)[::-1]).astype(np.float32)
    kernel /= kernel.sum()
    shape = tf.shape(E)
    x = tf.reshape(tf.transpose(E, [0, 2, 1]), [-1, shape[1], 1])  # (batch * mels, frames, 1)
    x = tf.concat([tf.repeat(x[:, :1], taps - 1, axis=1), x], axis=1)
    M = tf.nn.conv1d(x, kernel[:, None, None], stride=1, padding="VALID")
    return tf.transpose(tf.reshape(M, [shape[0], shape[2], shape[1]]), [0, 2, 1])


def reference(E, s):
    M = np.empty(E.shape, np.float64)
    M[:, 0] = E[:, 0]
    for t in range(1, E.shape[1]):
        M[:, t] = (1.0 - s) * M[:, t - 1] + s * E[:, t]
    return M


def timed(fn, x, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x).numpy()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pcen.json"))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    methods = {"matrix": lambda e: pcen.smooth(e, s=S), "scan": lambda e: smooth_scan(e, S),
               "fir": lambda e: smooth_fir(e, S)}
    results = {"s": S, "matrix_frames": pcen.MATRIX_FRAMES, "block_frames": pcen.BLOCK_FRAMES, "load_1min": os.getloadavg()[0],
               "machine": platform.processor() or platform.machine(), "tensorflow": tf.__version__, "shapes": {}}
    for name, shape in SHAPES.items():
        E = np.random.default_rng(0).gamma(1.0, 1.0, shape).astype(np.float32)
        truth = reference(E, S)
        row = {}
        for method, fn in methods.items():
            graph = tf.function(fn, autograph=False)
            x = tf.constant(E)
            error = float(np.abs(graph(x).numpy() - truth).max() / np.abs(truth).max())
            repeats = args.repeats if shape[1] < 1000 else max(3, args.repeats // 4)
            row[method] = {"ms": 1e3 * timed(graph, x, repeats), "relative_error": error}
            print(f"{name:16s} {method:7s} {row[method]['ms']:8.2f} ms  error {error:.1e}", flush=True)
        results["shapes"][name] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
