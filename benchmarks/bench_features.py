"""Features and input-pipeline benchmark: one run, one JSON file.

Measures, in seconds of audio per wall-clock second (median of ``--repeats``):

1. decoding 60 s, 48 kHz, 16-bit recordings with each path: soundfile (FLAC and WAV),
   tensorflow-io ``decode_flac`` (when its ops load), TensorFlow's core ``tf.audio.decode_wav``;
2. log-mel (2048 / 512 / 2048, power 2, 128 mels, 40-15000 Hz, log1p) of rfcxlib (``tf.signal``)
   and of librosa with the same settings (HTK filters, no normalisation, no centring), batch 1 and
   batched;
3. the training pipeline (:func:`rfcxlib.features.pipeline.train_dataset`) in samples per second at
   128 x 512 x 3 with the seed's augmentations and mixup, against what a DenseNet121 train step on
   this machine consumes (measured here unless ``--skip-model``).

Usage::

    python benchmarks/bench_features.py [--out benchmarks/results/features.json] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SR = 48000
DENSENET_REFERENCE = 4.7  # samples/s, ENVIRONMENT.md, when the model is not measured


def timed(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def make_recordings(folder: Path, n: int) -> list[Path]:
    """``n`` 60 s recordings (noise, tones and chirps) as FLAC and WAV."""
    gen = np.random.default_rng(0)
    t = np.arange(60 * SR) / SR
    paths = []
    for i in range(n):
        y = 0.05 * gen.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (500 + 300 * i) * t)
        y += 0.1 * np.sin(2 * np.pi * (1000 * t + 50 * t**2)) * (np.sin(t) > 0.5)
        for ext in ("flac", "wav"):
            path = folder / f"rec{i}.{ext}"
            sf.write(path, y.astype(np.float32), SR, subtype="PCM_16")
            paths.append(path)
    return paths


def bench_decode(paths: list[Path], repeats: int) -> dict:
    """Each decoder on each format, and reading the int16 disk cache that training uses after
    the first decode. The chosen path (soundfile) is compared with the fastest decoder of the
    same format: FLAC is what the data set holds, WAV is what ``tf.audio.decode_wav`` can read."""
    from rfcxlib.audio import decode as audio

    files = {"flac": [p for p in paths if p.suffix == ".flac"], "wav": [p for p in paths if p.suffix == ".wav"]}
    seconds = 60.0 * len(files["flac"])
    ok, reason = audio.tfio_status()
    cases = {("flac", "soundfile"): "soundfile_flac", ("wav", "soundfile"): "soundfile_wav",
             ("wav", "tf"): "tf_decode_wav"}
    if ok:
        cases[("flac", "tfio")] = "tfio_decode_flac"
    out: dict = {}
    for (fmt, backend), name in cases.items():
        wall = timed(lambda: [audio.load_audio(p, backend=backend) for p in files[fmt]], repeats)
        out[name] = round(seconds / wall, 1)
        print(f"decode {name:18s} {out[name]:9.1f} s of audio / s")
    if not ok:
        out["tfio_decode_flac"] = None
        out["tfio_unavailable"] = reason
    with tempfile.TemporaryDirectory() as tmp:
        audio.AudioCache(mode="disk", directory=tmp).preload(files["flac"], progress=False)
        wall = timed(lambda: [audio.AudioCache(mode="disk", directory=tmp).get(p)
                              for p in files["flac"]], repeats)
        out["int16_disk_cache_read"] = round(seconds / wall, 1)
        print(f"decode {'int16 cache read':18s} {out['int16_disk_cache_read']:9.1f} s of audio / s")
    out["chosen_path"] = "soundfile"
    out["flac_fastest_over_chosen"] = round(max(v for k, v in out.items() if k.endswith("flac") and v)
                                            / out["soundfile_flac"], 2)
    out["wav_fastest_over_chosen"] = round(max(out["soundfile_wav"], out["tf_decode_wav"]) / out["soundfile_wav"], 2)
    return out


def bench_log_mel(repeats: int, batch: int) -> dict:
    """rfcxlib vs librosa, same settings. The four cases run interleaved, round after round, so
    that on a shared machine both libraries see the same load; speed-ups are the median of the
    per-round ratios."""
    import librosa
    import tensorflow as tf

    from rfcxlib.features import logmel as features

    gen = np.random.default_rng(1)
    clips = (0.1 * gen.standard_normal((batch, 60 * SR))).astype(np.float32)
    kw = dict(sr=SR, n_fft=2048, hop_length=512, win_length=2048, n_mels=128, fmin=40.0, fmax=15000.0,
              power=2.0, center=False, htk=True, norm=None)
    one, many = tf.constant(clips[0]), tf.constant(clips)
    cases = {
        "rfcxlib_batch1": (lambda: features.log_mel(one, sr=SR).numpy(), 60.0),
        "librosa_batch1": (lambda: np.log1p(librosa.feature.melspectrogram(y=clips[0], **kw)), 60.0),
        f"rfcxlib_batch{batch}": (lambda: features.log_mel(many, sr=SR).numpy(), 60.0 * batch),
        f"librosa_batch{batch}": (lambda: np.log1p(librosa.feature.melspectrogram(y=clips, **kw)), 60.0 * batch),
    }
    rates: dict[str, list] = {name: [] for name in cases}
    cpu: dict[str, list] = {name: [] for name in cases}
    for fn, _ in cases.values():
        fn()  # warm-up: trace the graph, load librosa's caches
    for _ in range(repeats):
        for name, (fn, seconds) in cases.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            rates[name].append(seconds / (time.perf_counter() - t0))
            cpu[name].append(seconds / max(time.process_time() - c0, 1e-9))
    out: dict = {name: round(statistics.median(r), 1) for name, r in rates.items()}
    out["per_cpu_second"] = {name: round(statistics.median(r), 1) for name, r in cpu.items()}
    for name in cases:
        print(f"log-mel {name:17s} {out[name]:9.1f} s of audio / s "
              f"({out['per_cpu_second'][name]:.0f} per CPU second)")
    for b in (1, batch):
        ratios = [a / c for a, c in zip(rates[f"rfcxlib_batch{b}"], rates[f"librosa_batch{b}"])]
        out[f"speedup_batch{b}"] = round(statistics.median(ratios), 2)
        print(f"log-mel speed-up batch {b}: {out[f'speedup_batch{b}']:.2f}x (median of per-round ratios)")
    ref = librosa.feature.melspectrogram(y=clips[0, :10 * SR], **kw).T
    ours = features.mel_power(clips[0, :10 * SR], sr=SR).numpy()
    out["max_abs_diff_log1p"] = float(np.abs(np.log1p(ref) - np.log1p(ours)).max())
    return out


def bench_pipeline(profile: str, batches: int) -> dict:
    from rfcxlib.data import tables as data
    from rfcxlib.features import pipeline
    from rfcxlib.synth import dataset as synth
    from rfcxlib.config import RunConfig

    dataset = data.load_dataset(synth.ensure_dataset(profile, 0))
    config = RunConfig.from_params(dict(
        image_width=512, batch_size=16, crop_s=6.0, p_time_mask=0.5, p_freq_mask=0.5, p_resize_crop=0.5,
        p_noise=0.5, p_brightness=0.5, p_flip_time=0.0, p_mixup=0.5, p_wave_noise=0.5, p_gain=0.5))
    t0 = time.perf_counter()
    ds = pipeline.train_dataset(dataset, dataset.train_ids, config, seed=0,
                                samples_per_epoch=16 * (batches + 2), progress=False)
    it = iter(ds)
    next(it), next(it)  # trace and fill the prefetch buffer
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    n = 0
    for x, targets in it:
        n += int(x.shape[0])
    wall = time.perf_counter() - t0
    out = {"input_shape": list(x.shape[1:]), "batch_size": 16, "samples": n,
           "samples_per_s": round(n / wall, 1), "setup_s": round(setup, 1), "profile": profile}
    print(f"pipeline {out['samples_per_s']:.1f} samples/s at {tuple(x.shape[1:])} (setup {setup:.1f} s)")
    return out


def bench_densenet(steps: int) -> dict:
    import keras
    import tensorflow as tf

    model = keras.applications.DenseNet121(weights=None, input_shape=(128, 512, 3), classes=24,
                                           classifier_activation=None)
    optimizer = keras.optimizers.Adam(1e-3)
    x = tf.random.normal((8, 128, 512, 3))
    y = tf.cast(tf.random.uniform((8, 24)) < 0.1, tf.float32)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, model(x, training=True)))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    t0 = time.perf_counter()
    step().numpy()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step().numpy()
    rate = 8 * steps / (time.perf_counter() - t0)
    print(f"DenseNet121 train step: {rate:.2f} samples/s (first step {first:.0f} s)")
    return {"samples_per_s": round(rate, 2), "batch_size": 8, "first_step_s": round(first, 1), "measured": True}


def machine() -> dict:
    import tensorflow as tf

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "python": platform.python_version(),
            "tensorflow": tf.__version__, "platform": platform.platform(), "load_avg_1min_at_start": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "features.json"))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--recordings", type=int, default=2, help="60 s recordings to decode")
    parser.add_argument("--batch", type=int, default=8, help="clips per batched log-mel call")
    parser.add_argument("--profile", default="mini", help="synthetic data set for the pipeline")
    parser.add_argument("--batches", type=int, default=20, help="pipeline batches timed")
    parser.add_argument("--model-steps", type=int, default=4)
    parser.add_argument("--skip-model", action="store_true",
                        help=f"use {DENSENET_REFERENCE} samples/s for DenseNet121 instead of measuring")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from rfcxlib.atomic import write_json_atomic

    result = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tempfile.TemporaryDirectory() as tmp:
        result["decode"] = bench_decode(make_recordings(Path(tmp), args.recordings), args.repeats)
    result["log_mel"] = bench_log_mel(args.repeats, args.batch)
    result["pipeline"] = bench_pipeline(args.profile, args.batches)
    result["densenet121"] = ({"samples_per_s": DENSENET_REFERENCE, "measured": False} if args.skip_model
                             else bench_densenet(args.model_steps))
    ratio = result["pipeline"]["samples_per_s"] / result["densenet121"]["samples_per_s"]
    ratio_ref = result["pipeline"]["samples_per_s"] / DENSENET_REFERENCE
    result["targets"] = {
        "log_mel_speedup_batch1>=2.5": result["log_mel"]["speedup_batch1"] >= 2.5,
        f"log_mel_speedup_batch{args.batch}>=2.5": result["log_mel"][f"speedup_batch{args.batch}"] >= 2.5,
        "decode_fastest_over_chosen<=1.5": max(result["decode"]["flac_fastest_over_chosen"],
                                               result["decode"]["wav_fastest_over_chosen"]) <= 1.5,
        "pipeline_over_densenet>=10": min(ratio, ratio_ref) >= 10,
        "pipeline_over_densenet": round(ratio, 1),
        f"pipeline_over_densenet_reference_{DENSENET_REFERENCE}": round(ratio_ref, 1),
    }
    write_json_atomic(args.out, result)
    print(f"targets: {result['targets']}\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
