#!/usr/bin/env bash
# GPU check, one command on a GPU machine, no internet needed:
#   1. DenseNet121 training speed with mixed precision and XLA on and off (steps/s, samples/s),
#   2. the tiny profile series end to end (rfcx run --profile tiny), timed,
#   3. both in benchmarks/results/gpu_check.json (GPU name, TensorFlow version, each timing, the
#      series' wall time and exit status); the series' output in gpu_check_series.log.
#
# Usage:
#   benchmarks/gpu_check.sh              on a GPU machine; exit status 3 when there is no GPU
#   benchmarks/gpu_check.sh --dry        anywhere, in about a minute: toy sizes on the CPU, the
#                                        series as `rfcx run --dry-run`; the JSON says "dry": true
#   benchmarks/gpu_check.sh --no-series  the training timings only
#
# Environment: GPU_CHECK_DRY=1 (as --dry), GPU_CHECK_STEPS (timed steps per mode, default 40),
# GPU_CHECK_MODES (default "fp32 fp32+xla mixed mixed+xla"), GPU_CHECK_SERIES_TIMEOUT_S (1800),
# GPU_CHECK_OUT (the JSON file), GPU_CHECK_VENV (.venv), PYTHON (python3, to build the venv),
# GPU_CHECK_WHEELHOUSE (a folder of wheels to build the venv from offline; default ./wheelhouse).
#
# .venv is used when it imports rfcxlib and TensorFlow; otherwise it is built offline as
# `make install` builds it: from GPU_CHECK_WHEELHOUSE with pip --no-index, or, without one, on
# top of a Python that already has TensorFlow (a GPU image's), with rfcxlib installed --no-deps.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${GPU_CHECK_DRY:-0}" in ""|0) dry="" ;; *) dry=1 ;; esac
series=1
for arg in "$@"; do
    case "$arg" in
        --dry) dry=1 ;;
        --no-series) series="" ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) echo "gpu_check: unknown argument '$arg' (expected --dry, --no-series or --help)" >&2
           exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-.venv}
WHEELHOUSE=${GPU_CHECK_WHEELHOUSE:-wheelhouse}
OUT=${GPU_CHECK_OUT:-benchmarks/results/gpu_check.json}
export TF_CPP_MIN_LOG_LEVEL=3 KERAS_HOME="$PWD/.keras" PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INDEX=1  # never the network

say() { echo "gpu_check: $*"; }
fail() { echo "gpu_check: error: $2" >&2; exit "$1"; }

venv_ready() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in ('rfcxlib', 'tensorflow', 'papermill')))" 2>/dev/null
}

kernel_spec() {  # the project's Jupyter kernel, as make install registers it
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name rfcx \
        --display-name "Python (rfcx)" >/dev/null 2>&1 || say "no ipykernel: the series uses python3"
}

tf_pin() {  # the TensorFlow version pyproject.toml pins
    sed -n 's/^ *"tensorflow==\([0-9.]*\)".*/\1/p' pyproject.toml
}

build_venv() {
    command -v "$PYTHON" >/dev/null || fail 2 "no .venv and no $PYTHON to build one"
    if ls "$WHEELHOUSE"/*.whl >/dev/null 2>&1; then
        say "building $VENV from the wheels in $WHEELHOUSE (pip --no-index)"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" \
            setuptools wheel 2>/dev/null || true
        "$VENV/bin/python" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" \
            --no-build-isolation -e '.[test,birdnet]'
        # TensorFlow's CUDA libraries (pip's tensorflow has none): the and-cuda extra, if there
        [ -n "$dry" ] || "$VENV/bin/python" -m pip install --quiet --no-index \
            --find-links "$WHEELHOUSE" "tensorflow[and-cuda]==$(tf_pin)" \
            || say "no tensorflow[and-cuda] wheels in $WHEELHOUSE: TensorFlow may not see the GPU"
    elif "$PYTHON" -c "import tensorflow, papermill" 2>/dev/null; then
        say "building $VENV on $PYTHON's own TensorFlow (--system-site-packages; rfcxlib --no-deps)"
        "$PYTHON" -m venv --system-site-packages "$VENV"
        "$VENV/bin/python" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .
    else
        fail 2 "no usable $VENV, no wheels in '$WHEELHOUSE' and no TensorFlow in $PYTHON: on a \
machine with internet (same Python version and platform) run 'pip wheel -w wheelhouse \
\".[test,birdnet]\" \"tensorflow[and-cuda]==$(tf_pin)\"', copy wheelhouse/ here, and run this again"
    fi
    kernel_spec
    venv_ready || fail 2 "$VENV was built but cannot import rfcxlib, tensorflow and papermill"
    touch "$VENV/.rfcx-installed"
}

if [ -z "$dry" ]; then  # before any set-up: a GPU at all?
    command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 \
        || fail 3 "no GPU: nvidia-smi is missing or finds no GPU; on a machine without one run \
'benchmarks/gpu_check.sh --dry' (or GPU_CHECK_DRY=1)"
fi
venv_ready || build_venv

dry_flag=${dry:+--dry}
steps_flag=${GPU_CHECK_STEPS:+--steps $GPU_CHECK_STEPS}
# shellcheck disable=SC2086  # the modes are words
"$VENV/bin/python" benchmarks/bench_gpu.py train $dry_flag $steps_flag \
    ${GPU_CHECK_MODES:+--modes $GPU_CHECK_MODES} --out "$OUT" && train=0 || train=$?
[ "$train" = 3 ] && exit 3  # no GPU visible to TensorFlow: bench_gpu.py said why
[ "$train" = 0 ] || say "training timings: exit status $train (errors are in $OUT)"

status=0
if [ -n "$series" ]; then
    "$VENV/bin/python" benchmarks/bench_gpu.py series $dry_flag \
        --timeout-s "${GPU_CHECK_SERIES_TIMEOUT_S:-1800}" --out "$OUT" || status=$?
fi
say "wrote $OUT${dry:+ (dry run)}"
[ "$train" = 0 ] && [ "$status" = 0 ] || exit 1
