#!/usr/bin/env bash
# A rank that dies (SIGKILL) or fails (an error) ends the whole job within seconds with a
# clear message, and leaves no manifest that claims completion; an error in the plan (every
# rank has it) is printed once, under mpirun as without it.
set -euo pipefail
: "${SHARDQ_BIN:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$SHARDQ_BIN" synth --layers 6 --hidden 64 --intermediate 160 --heads 4 --kv-heads 2 --vocab 300 --seed 2 --output "$work/model" >/dev/null
/usr/bin/python3 -c "import numpy as np; np.random.default_rng(1).integers(0, 300, 8000).astype('<u4').tofile('$work/tokens.bin')"
run() {  # run <name> <fault> <schedule>: expects failure
  local start end rc=0
  start=$(date +%s.%N)
  SHARDQ_FAULT="$2" timeout -k 10 120 mpirun --oversubscribe -np 3 -x SHARDQ_FAULT "$SHARDQ_BIN" quantize \
    --model "$work/model" --output "$work/$1" --calibration "$work/tokens.bin" --calibration-format tokens \
    --samples 12 --seq-len 64 --group-size 32 --schedule "$3" --quiet >"$work/$1.out" 2>"$work/$1.err" || rc=$?
  end=$(date +%s.%N)
  local secs
  secs=$(/usr/bin/python3 -c "print(round($end - $start, 2))")
  echo "$1: exit $rc after ${secs}s"
  [ "$rc" -ne 0 ] || { echo "the job succeeded despite the fault"; exit 1; }
  [ "$rc" -ne 124 ] || { echo "the job hung"; cat "$work/$1.err"; exit 1; }
  /usr/bin/python3 -c "import sys; sys.exit(0 if $end - $start < 60 else 1)" || { echo "took too long"; exit 1; }
  [ ! -e "$work/$1/manifest.json" ] || { echo "a manifest claims completion"; exit 1; }
  head -c 2000 "$work/$1.err"
}
run kill_sequential "layer_quantized:1:2:kill" sequential
grep -qiE "signal 9|killed|exited on signal" "$work/kill_sequential.err" || { echo "no clear message about the dead rank"; exit 1; }
run throw_pipeline "layer_quantized:2:5:throw" pipeline
grep -q "injected fault" "$work/throw_pipeline.err" || { echo "the failing rank's error is not reported"; exit 1; }
grep -qE ":2: " "$work/throw_pipeline.err" || { echo "the message does not name host:rank"; exit 1; }
# A user error found while planning: one line from rank 0, exit 1, the user's file intact.
mkdir -p "$work/taken" && echo "notes" > "$work/taken/notes.txt"
for np in 1 3; do
  rc=0
  timeout 120 mpirun --oversubscribe -np "$np" "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/taken" \
    --calibration "$work/tokens.bin" --calibration-format tokens --samples 4 --seq-len 64 --quiet 2>"$work/plan.err" || rc=$?
  [ "$rc" = 1 ] || { echo "plan error under -np $np: exit $rc"; cat "$work/plan.err"; exit 1; }
  [ "$(grep -c '^shardq quantize: error: output: ' "$work/plan.err")" = 1 ] ||
    { echo "plan error under -np $np: not one error line"; cat "$work/plan.err"; exit 1; }
  [ "$(cat "$work/taken/notes.txt")" = notes ] || { echo "the user's file changed"; exit 1; }
  echo "plan error under -np $np: $(grep '^shardq' "$work/plan.err")"
done
echo ok
