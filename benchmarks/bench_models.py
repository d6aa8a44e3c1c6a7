"""Models benchmark: training and whole-recording inference speed per backbone; one JSON file.

For each backbone of :data:`rfcxlib.models.BACKBONES` (the head and attention of notebook 04's
defaults), at notebook 04's default input size:

1. ``train_samples_per_s``: Adam train steps with the masked BCE loss on random images, after
   ``--warmup`` steps (tracing); the median step time over ``--steps`` steps.
2. ``inference_audio_s_per_s``: whole 60 s, 48 kHz recordings scored as the notebooks do —
   sliding windows of ``crop_s`` every ``hop_s``, log-mel image, model, maximum over windows —
   in seconds of audio per wall-clock second (median over ``--repeats``).
3. ``first_step_s``: the first train step (graph tracing and optimisation).
4. ``band_inference_audio_s_per_s``: as 2, with the seed's per-band inference (notebook 04's
   ``band_mode``, on by default): each species scored on its own band, 24 distinct bands, one
   model call per band (:func:`rfcxlib.inference.windows.band_logits`' default);
   ``band_inference_all_bands_per_call_audio_s_per_s``: the 24 masked copies in one call.

Usage::

    python benchmarks/bench_models.py [--backbones small_cnn densenet121] [--out benchmarks/results/models.json]
"""
from __future__ import annotations

import argparse
import ast
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "04_training.ipynb"
SR = 48000
FALLBACK = dict(crop_s=6.0, hop_s=3.0, n_mels=64, hop_length=1024, image_width=256, channels=1,
                attention="parallel", head="attention_v2", base_units=64, batch_size=32)


def notebook_defaults(path: Path = NOTEBOOK) -> dict:
    """The defaults of notebook 04's ``parameters`` cell (:func:`rfcxlib.runner.profiles.declared_parameters`;
    empty when the notebook is absent)."""
    from rfcxlib.runner.profiles import declared_parameters

    if not path.exists():
        return {}
    values = {}
    for name, spec in declared_parameters(path).items():
        try:
            values[name] = ast.literal_eval(spec["default"])
        except (ValueError, SyntaxError):
            pass
    return values


def make_config(backbone: str, defaults: dict):
    from rfcxlib.config import RunConfig

    keys = ("crop_s", "hop_s", "n_mels", "hop_length", "image_width", "channels", "attention",
            "head", "base_units", "batch_size")
    params = {k: defaults.get(k, FALLBACK[k]) for k in keys}
    return RunConfig.from_params({**params, "backbone": backbone})


def train_speed(model, config, shape, *, steps: int, warmup: int) -> dict:
    import keras

    from rfcxlib.training import losses

    gen = np.random.default_rng(0)
    batch = config.train.batch_size
    x = gen.normal(size=(batch,) + tuple(shape)).astype(np.float32)
    y = (gen.random((batch, 24)) < 0.1).astype(np.float32)
    targets = losses.pack_targets(y, (gen.random((batch, 24)) < 0.3).astype(np.float32))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.masked_bce)
    t0 = time.perf_counter()
    model.train_on_batch(x, targets)
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup - 1)):
        model.train_on_batch(x, targets)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        model.train_on_batch(x, targets)
        times.append(time.perf_counter() - t0)
    return {"train_samples_per_s": batch / statistics.median(times), "first_step_s": first,
            "batch_size": batch}


def species_masks(height: int) -> np.ndarray:
    """``(24, height)`` masks of 24 distinct bands, a sixth of the rows each, spread over the image."""
    width, masks = max(1, height // 6), np.zeros((24, height), np.float32)
    for s in range(24):
        lo = int(round(s * (height - width) / 23))
        masks[s, lo:lo + width] = 1.0
    return masks


def inference_speed(model, config, *, recordings: int, repeats: int, masks=None,
                    per_call: int = 1) -> dict:
    """Seconds of 60 s audio scored per second: windows ▶ log-mel image ▶ model ▶ max; with
    ``masks``, each species on its band (:func:`rfcxlib.inference.windows.band_logits`)."""
    import tensorflow as tf

    from rfcxlib.audio import decode as audio
    from rfcxlib.features import logmel as features
    from rfcxlib.inference import windows as inference

    crop = int(round(config.audio.crop_s * SR))
    starts = (audio.window_starts(60.0, crop_s=config.audio.crop_s, hop_s=config.inference.hop_s)
              * SR).astype(int)
    gen = np.random.default_rng(1)
    waves = [(0.1 * gen.standard_normal(60 * SR)).astype(np.float32) for _ in range(recordings)]
    batch = config.train.batch_size

    @tf.function(reduce_retracing=True)
    def score(windows):
        x = features.to_image(features.log_mel(windows, sr=SR, config=config.features),
                              config=config.features)
        if masks is None:
            return model(x, training=False)
        return inference.band_logits(model, x, masks, per_call=per_call)

    def run():
        out = []
        for y in waves:
            windows = np.stack([y[s:s + crop] for s in starts])
            z = np.concatenate([score(windows[i:i + batch]).numpy()
                                for i in range(0, len(windows), batch)])
            out.append(z.max(axis=0))
        return out

    run()  # tracing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return {"inference_audio_s_per_s": 60.0 * recordings / statistics.median(times),
            "windows_per_recording": int(len(starts))}


def bench_backbone(name: str, defaults: dict, args) -> dict:
    import keras

    from rfcxlib.features import pipeline
    from rfcxlib.models import build_model

    config = make_config(name, defaults)
    shape = pipeline.input_shape(config)
    keras.utils.set_random_seed(0)
    model = build_model(config, shape)
    row = {"backbone": name, "input_shape": list(shape), "params": int(model.count_params()),
           "attention": config.model.attention, "head": config.model.head}
    row.update(train_speed(model, config, shape, steps=args.steps, warmup=args.warmup))
    row.update(inference_speed(model, config, recordings=args.recordings, repeats=args.repeats))
    masks = species_masks(shape[0])
    for key, per_call in (("band_inference_audio_s_per_s", 1),
                          ("band_inference_all_bands_per_call_audio_s_per_s", len(masks))):
        row[key] = inference_speed(model, config, recordings=args.recordings, repeats=args.repeats,
                                   masks=masks, per_call=per_call)["inference_audio_s_per_s"]
    return row


def parse_args(argv=None):
    from rfcxlib.models import BACKBONES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=list(BACKBONES))
    p.add_argument("--steps", type=int, default=5, help="timed train steps per backbone")
    p.add_argument("--warmup", type=int, default=2, help="untimed train steps (tracing)")
    p.add_argument("--recordings", type=int, default=2, help="60 s recordings per inference pass")
    p.add_argument("--repeats", type=int, default=3, help="inference passes (median)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "models.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    from rfcxlib.atomic import write_json_atomic

    defaults = notebook_defaults()
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "load_avg_1min": os.getloadavg()[0],
                          "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
                          "tensorflow": tf.__version__},
              "defaults_from": str(NOTEBOOK.relative_to(ROOT)) if defaults else "built-in",
              "backbones": []}
    for name in args.backbones:
        t0 = time.perf_counter()
        row = bench_backbone(name, defaults, args)
        row["bench_s"] = time.perf_counter() - t0
        result["backbones"].append(row)
        print(f"{name:15s} params {row['params']:>10,d}  train {row['train_samples_per_s']:7.1f} "
              f"samples/s  first step {row['first_step_s']:6.1f} s  inference "
              f"{row['inference_audio_s_per_s']:8.1f} s audio/s, per band "
              f"{row['band_inference_audio_s_per_s']:7.1f} (24 bands per call "
              f"{row['band_inference_all_bands_per_call_audio_s_per_s']:.1f})", flush=True)
    write_json_atomic(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
