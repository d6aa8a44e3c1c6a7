"""GPU check: DenseNet121 training speed with mixed precision and XLA on and off, and the
``tiny`` series end to end; one JSON file (``benchmarks/results/gpu_check.json``).

Two steps, run one after the other by ``benchmarks/gpu_check.sh`` (each in its own process, so
the series' kernels get a GPU that this process no longer holds):

``train``
    rfcxlib's DenseNet121 model (``models.build_model``: random weights, ``RunConfig``'s default
    head and attention) trained with Adam and the masked BCE loss on synthetic random batches,
    once per mode: ``fp32``, ``fp32+xla``, ``mixed``, ``mixed+xla`` (``mixed``: the
    ``mixed_float16`` policy; ``xla``: ``compile(jit_compile=True)``). A first ``fit`` of
    ``--warmup`` steps (tracing, compiling) is timed apart; then ``--steps`` steps give steps/s
    and samples/s. Writes the file afresh, with the machine (GPU names from ``tf.config``,
    TensorFlow's CUDA build).
``series``
    ``rfcx run --profile tiny --run-id gpu_check-<time>`` (a new run each time); its wall time
    and exit status go into the file's ``series`` section, its output into
    ``gpu_check_series.log`` beside it.

``--dry`` runs both on a CPU at toy sizes (the small CNN instead of DenseNet121, whose first
step with XLA takes minutes on a CPU; input 32×64×3, batch 2, 2 steps; the series as
``rfcx run --dry-run``, which prints its steps and executes nothing) and marks the file
``"dry": true``. Without ``--dry`` and without a GPU, ``train`` stops with exit status 3 before
measuring anything.

Usage::

    python benchmarks/bench_gpu.py train [--dry] [--modes fp32 mixed+xla] [--steps 40]
    python benchmarks/bench_gpu.py series [--dry] [--profile tiny]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from rfcxlib import NUM_SPECIES  # noqa: E402
from rfcxlib.training import losses
from rfcxlib.config import RunConfig  # noqa: E402
from rfcxlib.models import BACKBONES, build_model  # noqa: E402
from rfcxlib.paths import outputs_root  # noqa: E402
from rfcxlib.atomic import read_json, write_json_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
MODES = {"fp32": (False, False), "fp32+xla": (False, True), "mixed": (True, False),
         "mixed+xla": (True, True)}  # mode -> (mixed precision, XLA)
FULL = dict(backbone="densenet121", height=128, width=512, batch_size=32, steps=40, warmup=5)
# DenseNet121's first step takes minutes on a CPU with XLA: the dry run checks the plumbing on
# the small CNN
DRY = dict(backbone="small_cnn", height=32, width=64, batch_size=2, steps=2, warmup=1)
NO_GPU_STATUS = 3


class NoGpu(RuntimeError):
    """No GPU visible to TensorFlow in a run that is not dry."""


# ---------------------------------------------------------------------------------------------
# The machine


def nvidia_smi() -> str | None:
    """``nvidia-smi -L`` (one line per GPU the driver sees), or None without the tool."""
    if shutil.which("nvidia-smi") is None:
        return None
    done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    return (done.stdout or done.stderr).strip() or None


def machine() -> dict:
    """Platform, TensorFlow and its CUDA build, and each GPU's name from ``tf.config``."""
    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append({"name": device.name, "device_name": details.get("device_name", ""),
                     "compute_capability": details.get("compute_capability")})
    build = tf.sysconfig.get_build_info()
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "cuda_build": build.get("cuda_version"), "cudnn_build": build.get("cudnn_version"),
            "gpus": gpus, "nvidia_smi": nvidia_smi()}


def no_gpu_message(info: dict) -> str:
    seen = info.get("nvidia_smi")
    hint = (f"the driver sees {seen!r}, so TensorFlow {info['tensorflow']} lacks its CUDA "
            f"libraries (CUDA build {info['cuda_build']!r}): install tensorflow[and-cuda] of "
            "the same version into the venv" if seen else
            "nvidia-smi finds no GPU either (or is not installed)")
    return (f"no GPU visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty): "
            f"{hint}; on a machine without a GPU run the dry mode (--dry, GPU_CHECK_DRY=1)")


# ---------------------------------------------------------------------------------------------
# Training speed


def build(*, backbone: str, height: int, width: int, mixed: bool, xla: bool):
    """rfcxlib's model of ``backbone`` (random weights) compiled for one mode."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    config = RunConfig.from_params({"backbone": backbone, "weights": ""})
    model = build_model(config, (height, width, 3))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses.masked_bce, jit_compile=xla)
    return model


def batches(*, batch_size: int, height: int, width: int):
    """A repeating ``tf.data`` set of 4 synthetic random batches: images and packed targets."""
    gen = np.random.default_rng(0)
    n = 4 * batch_size
    x = gen.normal(size=(n, height, width, 3)).astype(np.float32)
    y = (gen.random((n, NUM_SPECIES)) < 0.1).astype(np.float32)
    targets = losses.pack_targets(y, (gen.random((n, NUM_SPECIES)) < 0.3).astype(np.float32))
    data = tf.data.Dataset.from_tensor_slices((x, targets)).batch(batch_size).cache().repeat()
    return data.prefetch(tf.data.AUTOTUNE)


def time_mode(mode: str, *, backbone: str, height: int, width: int, batch_size: int,
              steps: int, warmup: int) -> dict:
    """One mode's first ``fit`` (``warmup`` steps, compiling included) and ``steps`` timed steps."""
    mixed, xla = MODES[mode]
    row = {"mode": mode, "backbone": backbone, "mixed_precision": mixed, "xla": xla,
           "batch_size": batch_size, "input_shape": [height, width, 3], "steps": steps,
           "warmup_steps": warmup}
    try:
        model = build(backbone=backbone, height=height, width=width, mixed=mixed, xla=xla)
        data = batches(batch_size=batch_size, height=height, width=width)
        t0 = time.perf_counter()
        model.fit(data, steps_per_epoch=warmup, epochs=1, shuffle=False, verbose=0)
        row["first_fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        history = model.fit(data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        seconds = time.perf_counter() - t0
    except Exception as exc:  # one mode failing (an op XLA cannot compile) leaves the others
        row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:500]}"
        return row
    finally:
        keras.mixed_precision.set_global_policy("float32")
    loss = float(history.history["loss"][-1])
    row.update(model=model.name, params=int(model.count_params()), seconds=seconds,
               steps_per_s=steps / seconds, samples_per_s=steps * batch_size / seconds,
               final_loss=loss, finite_loss=bool(np.isfinite(loss)))
    return row


def run_train(args) -> int:
    sizes = {**(DRY if args.dry else FULL),
             **{k: v for k, v in vars(args).items() if k in FULL and v is not None}}
    info = machine()
    if not info["gpus"] and not args.dry:
        raise NoGpu(no_gpu_message(info))
    for device in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(device, True)
    body = {"dry": bool(args.dry), "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": info, "settings": sizes, "training": []}
    for mode in args.modes:
        row = time_mode(mode, **sizes)
        body["training"].append(row)
        write_json_atomic(args.out, body)  # what was measured survives a later failure
        print(f"{mode:10s} " + (f"error: {row['error']}" if "error" in row else
                                f"{row['steps_per_s']:7.2f} steps/s {row['samples_per_s']:8.1f} "
                                f"samples/s  first fit {row['first_fit_s']:6.1f} s"), flush=True)
    print(f"wrote {args.out}")
    return 1 if any("error" in row for row in body["training"]) else 0


# ---------------------------------------------------------------------------------------------
# The series


def run_logged(cmd: list, log: Path, *, timeout_s: float) -> int | None:
    """Run ``cmd`` in its own process group, output to ``log``; its exit status, or None when
    it ran past ``timeout_s`` (the whole group, notebook kernels included, is then stopped)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT,
                                start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            if proc.poll() is None:  # timed out, or this process interrupted
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait()


def run_series(args) -> int:
    """``rfcx run`` of the profile (``--dry-run`` when dry), timed; the ``series`` section."""
    run_id = args.run_id or time.strftime(f"gpu_check{'_dry' if args.dry else ''}-%Y%m%d-%H%M%S")
    cmd = [sys.executable, "-m", "rfcxlib", "run", "--profile", args.profile, "--run-id", run_id]
    cmd += ["--dry-run"] if args.dry else []
    log = Path(args.out).with_name(f"{Path(args.out).stem}_series.log")
    t0 = time.perf_counter()
    status = run_logged(cmd, log, timeout_s=args.timeout_s)
    wall_s = time.perf_counter() - t0
    record = {"dry": bool(args.dry), "profile": args.profile, "run_id": run_id,
              "run_dir": str(outputs_root() / run_id), "command": " ".join(["rfcx", *cmd[3:]]),
              "wall_s": wall_s,
              "exit_status": status, "timed_out": status is None, "timeout_s": args.timeout_s,
              "log": str(log)}
    body = read_json(args.out, default={}) or {}  # the train step's file, when it ran
    write_json_atomic(args.out, {**body, "dry": body.get("dry", bool(args.dry)), "series": record})
    print(f"series {args.profile}: exit status {status} in {wall_s:.1f} s (log: {log})")
    return 0 if status == 0 else 1


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True)
    train = sub.add_parser("train", help="DenseNet121 train steps per mode")
    train.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    train.add_argument("--backbone", choices=list(BACKBONES),
                       help="default densenet121; dry small_cnn")
    train.add_argument("--height", type=int, help="image height (default 128; dry 32)")
    train.add_argument("--width", type=int, help="image width (default 512; dry 64)")
    train.add_argument("--batch-size", type=int, help="default 32; dry 2")
    train.add_argument("--steps", type=int, help="timed steps per mode (default 40; dry 2)")
    train.add_argument("--warmup", type=int, help="steps of the first fit (default 5; dry 1)")
    series = sub.add_parser("series", help="rfcx run of a profile, timed")
    series.add_argument("--profile", default="tiny")
    series.add_argument("--run-id", default="", help="default gpu_check-<date>-<time>")
    series.add_argument("--timeout-s", type=float, default=1800.0)
    for step in (train, series):
        step.add_argument("--dry", action="store_true",
                          default=os.environ.get("GPU_CHECK_DRY", "") not in ("", "0"),
                          help="toy sizes on any machine (also GPU_CHECK_DRY=1)")
        step.add_argument("--out", default=str(OUT))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run_train(args) if args.step == "train" else run_series(args)
    except NoGpu as exc:
        print(f"bench_gpu: error: {exc}", file=sys.stderr)
        return NO_GPU_STATUS


if __name__ == "__main__":
    sys.exit(main())
