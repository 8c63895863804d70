#!/usr/bin/env bash
# CLI tests of the precision policies (issue 7): every policy on stories260K and on a small
# synthetic model gives a checkpoint whose manifest checks out (precision_check.py) and that
# `shardq eval` loads; the allocation and weights are the same under mpirun -np 1 and 2;
# bad targets fail with one line naming the field. usage: precision_tests.sh CASE
set -euo pipefail
: "${SHARDQ_BIN:?}" "${SHARDQ_SHARED:?}" "${SHARDQ_SOURCE:?}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
check="/usr/bin/python3 $SHARDQ_SOURCE/tests/cli/precision_check.py"

stories() {
  "$SHARDQ_BIN" convert llama2c "$SHARDQ_SHARED/models/stories260K/stories260K.bin" \
    --tokenizer "$SHARDQ_SHARED/models/stories260K/tok512.bin" --output "$work/model" >/dev/null 2>&1
  calib=(--calibration "$SHARDQ_SHARED/data/tinystories/calib.txt" --samples 8 --seq-len 128 --group-size 32)
}
synth() {
  "$SHARDQ_BIN" synth --layers 6 --hidden 64 --intermediate 96 --heads 4 --kv-heads 2 --vocab 200 \
    --seed 7 --dtype f16 --output "$work/model" >/dev/null
  /usr/bin/python3 -c "import numpy as np; np.random.default_rng(1).integers(0, 200, 8000).astype('<u4').tofile('$work/tokens.bin')"
  calib=(--calibration "$work/tokens.bin" --calibration-format tokens --samples 8 --seq-len 64 --group-size 32)
}
# run_policy NAME POLICY TARGET OPTIONS [extra flags...]
run_policy() {
  local name=$1 policy=$2 target=$3 options=$4
  shift 4
  "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/$name" "${calib[@]}" --policy "$policy" \
    --target-bpw "$target" --bit-options "$options" --quiet "$@" >/dev/null
  $check "$work/$name" "$policy" "$target" "$options"
  "$SHARDQ_BIN" inspect "$work/$name" --json >/dev/null
}
loads() {
  local text=$1
  shift
  for ckpt in "$@"; do
    "$SHARDQ_BIN" eval --model "$work/$ckpt" --text "$text" --seq-len 64 --max-windows 2 --json |
      /usr/bin/python3 -c "import json,math,sys; r=json.load(sys.stdin); assert math.isfinite(r['ppl']) and r['ppl'] > 1, r"
  done
}

case "$1" in
  policies_stories)
    stories
    for policy in lim zd random sensitivity; do run_policy $policy $policy 3.0 2,4; done
    run_policy sens-multi sensitivity 3.5 2,3,4,8 --schedule pipeline
    run_policy lim-multi lim 3.5 2,3,4,8 --schedule pipeline
    loads "$SHARDQ_SHARED/data/tinystories/eval.txt" lim zd random sensitivity sens-multi
    ;;
  policies_synth)
    synth
    for policy in lim zd random sensitivity; do run_policy $policy $policy 3.5 2,4; done
    # An override stays as written and counts toward the budget.
    printf '{"precision": {"overrides": {"model.layers.0.*": {"bits": 8}}}}' >"$work/override.json"
    run_policy sens-override sensitivity 3.5 2,4,8 --config "$work/override.json"
    /usr/bin/python3 - "$work/sens-override" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "/manifest.json"))
bad = [x["name"] for x in m["modules"] if x["layer"] == 0 and x["bits"] != 8]
assert not bad, bad
PY
    ;;
  determinism)
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
    stories
    for np in 1 2; do
      mpirun --oversubscribe -np $np "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/sens-$np" \
        "${calib[@]}" --policy sensitivity --target-bpw 3.0 --bit-options 2,4 --quiet >/dev/null
    done
    /usr/bin/python3 "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/sens-1" "$work/sens-2"
    /usr/bin/python3 - "$work/sens-1" "$work/sens-2" <<'PY'
import json, sys
a, b = (json.load(open(d + "/manifest.json")) for d in sys.argv[1:])
strip = lambda m: ([{k: v for k, v in l.items() if k != "shard"} for l in m["layers"]],
                   [(x["name"], x["bits"]) for x in m["modules"]])
assert strip(a) == strip(b), "scores or bits differ between -np 1 and -np 2"
print("np 1 and np 2: same scores and bits")
PY
    ;;
  errors)
    stories
    expect_fail() {
      local field=$1
      shift
      if "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/bad" --quiet "$@" 2>"$work/err"; then
        echo "expected failure naming $field"; exit 1
      fi
      grep -q "$field" "$work/err" || { echo "error does not name $field:"; cat "$work/err"; exit 1; }
      [ "$(wc -l <"$work/err")" -eq 1 ] || { echo "expected one line:"; cat "$work/err"; exit 1; }
    }
    expect_fail precision.target_bpw "${calib[@]}" --policy lim --target-bpw 1.5 --bit-options 2,4
    expect_fail calibration.path --policy zd --target-bpw 3 --bit-options 2,4
    expect_fail quant.method --calibration "$SHARDQ_SHARED/data/tinystories/calib.txt" --policy sensitivity \
      --target-bpw 3 --bit-options 2,4 --method nf4
    echo ok
    ;;
  *) echo "unknown case $1"; exit 2 ;;
esac
