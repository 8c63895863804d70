#!/usr/bin/env bash
# -np 1, 2 and 3 must give bit-identical checkpoints for both schedules (issue: distributed
# job). usage: determinism.sh stories|synth
set -euo pipefail
: "${SHARDQ_BIN:?}" "${SHARDQ_SHARED:?}" "${SHARDQ_SOURCE:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case "$1" in
  stories)
    "$SHARDQ_BIN" convert llama2c "$SHARDQ_SHARED/models/stories260K/stories260K.bin" \
      --tokenizer "$SHARDQ_SHARED/models/stories260K/tok512.bin" --output "$work/model" 2>/dev/null
    calib=(--calibration "$SHARDQ_SHARED/data/tinystories/calib.txt" --samples 24 --seq-len 128)
    ;;
  synth)
    # intermediate > 1024: gate/up span two output-error tiles, which the ranks share out.
    "$SHARDQ_BIN" synth --layers 12 --hidden 64 --intermediate 1100 --heads 4 --kv-heads 2 --vocab 300 \
      --seed 5 --dtype f16 --output "$work/model" >/dev/null
    /usr/bin/python3 -c "import numpy as np; np.random.default_rng(3).integers(0, 300, 20000).astype('<u4').tofile('$work/tokens.bin')"
    calib=(--calibration "$work/tokens.bin" --calibration-format tokens --samples 20 --seq-len 96)
    ;;
esac
for schedule in sequential pipeline; do
  for np in 1 2 3; do
    mpirun --oversubscribe -np $np "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/$schedule-$np" \
      "${calib[@]}" --bits 4 --group-size 32 --schedule $schedule --quiet >/dev/null
  done
  # One process with 3 worker threads: the thread count must not change the bits either.
  "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/$schedule-threads" "${calib[@]}" --bits 4 --group-size 32 \
    --schedule $schedule --blas-threads 3 --quiet >/dev/null
  echo "$1 $schedule: np 1 vs 1 process with 3 threads"
  /usr/bin/python3 "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/$schedule-1" "$work/$schedule-threads"
  for np in 2 3; do
    echo "$1 $schedule: np 1 vs np $np"
    /usr/bin/python3 "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/$schedule-1" "$work/$schedule-$np"
  done
  # One shard per layer plus one for embedding/norm/head, whatever the rank count; the same
  # files (bit for bit) from 1 and 3 ranks.
  layers=$(/usr/bin/python3 -c "import json; print(json.load(open('$work/$schedule-3/manifest.json'))['model']['config']['num_hidden_layers'])")
  n=$(ls "$work/$schedule-3"/shard-*.h5 | wc -l)
  [ "$n" -eq $((layers + 1)) ] || { echo "expected $((layers + 1)) shard files, found $n"; exit 1; }
  for f in "$work/$schedule-1"/shard-*.h5; do
    cmp -s "$f" "$work/$schedule-3/$(basename "$f")" || { echo "$(basename "$f") differs between 1 and 3 ranks"; exit 1; }
  done
done
# The two schedules differ (sequential calibrates on quantized outputs), as they should.
if /usr/bin/python3 "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/sequential-1" "$work/pipeline-1" >/dev/null; then
  echo "sequential and pipeline gave identical weights: the sequential schedule did not use quantized inputs"
  exit 1
fi
echo "ok"
