#!/usr/bin/env bash
# The README's commands that need no network, as a new user types them after `make run` (or
# `make install`): the venv activated, then each command as written. Runs go to a temporary
# outputs folder. The commands that train the mini profile for minutes run as --dry-run unless
# README_FULL=1; the Kaggle download, the ImageNet sweep (weights from the network) and `make lab`
# (a server) are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/rfcx ] || { echo "no .venv/bin/rfcx: run make install (or make run) first"; exit 1; }
# shellcheck disable=SC1091
source .venv/bin/activate
export TF_CPP_MIN_LOG_LEVEL=3 KERAS_HOME="$PWD/.keras"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export RFCX_OUTPUTS="$work/outputs"
full=${README_FULL:-0}
say() { printf '\n$ %s\n' "$*"; }
run() { say "$*"; "$@"; }
long() { if [ "$full" = 1 ]; then run "$@"; else run "$@" --dry-run; fi; }

run rfcx --help
long rfcx run
run rfcx run --profile tiny --run-id smoke
long rfcx run -p epochs 2 -p 04.batch_size 8
long rfcx run --notebooks 01,02
run rfcx run --dry-run
run rfcx run --profile tiny --run-id smoke          # again: every notebook skipped
data=$(python -c "from rfcxlib.synth import dataset; print(dataset.ensure_dataset('tiny', 0))")
run rfcx validate --no-progress "$data"              # the README's `rfcx validate data/rfcx`
# `rfcx run --profile full --data-dir data/rfcx --sweep configs/sweeps/seed_densenet7.yaml` needs
# the network (ImageNet weights) unless the Keras cache holds them: its dry run says so.
if ls "${KERAS_HOME}/models/"densenet*notop.h5 >/dev/null 2>&1; then
    long rfcx run --profile full --data-dir "$data" --sweep configs/sweeps/seed_densenet7.yaml
fi
run python -m rfcxlib.reports.summary "$RFCX_OUTPUTS/smoke" --links
# the README's "Field recordings": the run's ensemble exported, then run without rfcxlib
run rfcx export "$RFCX_OUTPUTS/smoke" --format tflite --out "$work/ensemble"
recording=$(find "$data/test" -name '*.flac' | sort | head -1)
say python "$work/ensemble/run_exported.py" "$recording" --detections "$work/detections.csv" "> $work/clip_scores.csv"
python "$work/ensemble/run_exported.py" "$recording" --detections "$work/detections.csv" > "$work/clip_scores.csv"
test "$(wc -l < "$work/clip_scores.csv")" = 2
# the README's "Beyond one machine": on the DirectRunner (two worker processes), then in this process
beam=(--runner DirectRunner --direct_num_workers 2 --direct_running_mode multi_processing)
run rfcx embed "$data/test" --cache-dir "$work/cache" "${beam[@]}"
run rfcx embed "$data/test" --cache-dir "$work/cache" --no-progress   # every recording already cached
run rfcx predict "$RFCX_OUTPUTS/smoke" "$data/test" --out "$work/beam-detections" "${beam[@]}"
test "$(wc -l < "$work/beam-detections/clip_scores.csv")" = "$(( $(find "$data/test" -name '*.flac' | wc -l) + 1 ))"
run rfcx kaggle bundle notebooks/04_training.ipynb --out "$work/kaggle_bundle" \
    --id your-name/rfcx-training -p epochs 20 --gpu
test -f "$work/kaggle_bundle/kernel-metadata.json"
for nb in notebooks/0*.ipynb; do
    say papermill --help-notebook "$nb"
    unknown=$(papermill --help-notebook "$nb" 2>/dev/null | grep -c "Unknown type" || true)
    if [ "$unknown" != 0 ]; then echo "$nb: $unknown parameters without a type"; exit 1; fi
done
echo; echo "README commands: all ran"
