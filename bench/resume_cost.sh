#!/usr/bin/env bash
# What a resume costs (issue: resume and fault tolerance), printed as JSON lines: a synthetic
# 12-layer 512-wide model, 32 x 256 calibration tokens, GPTQ 4-bit g128, one process. For each
# schedule, an uninterrupted run, then a run killed (SIGKILL) while layer 8's shard is being
# written and its resume — for the sequential schedule once without hidden-state snapshots
# and once with the default policy. Reports wall times (same run, same machine), the shards
# reused, and the work the resume counted as a fraction of the whole job (work_meter.hpp).
# usage: bench/resume_cost.sh   (BUILD_DIR=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDQ=${SHARDQ_BIN:-$PWD/${BUILD_DIR:-build}/apps/shardq/shardq}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$SHARDQ" synth --layers 12 --hidden 512 --intermediate 1408 --heads 8 --kv-heads 4 --vocab 2000 --seed 3 \
  --dtype f16 --output "$work/model" >/dev/null
/usr/bin/python3 -c "import numpy as np; np.random.default_rng(0).integers(0, 2000, 100000).astype('<u4').tofile('$work/tok')"
now() { date +%s.%N; }
run() {  # run SCHEDULE SNAPSHOTS LABEL
  local schedule=$1 label=$3 t0 t1 t2 t3
  local args=(quantize --model "$work/model" --calibration "$work/tok" --calibration-format tokens --samples 32
              --seq-len 256 --bits 4 --group-size 128 --schedule "$schedule" --progress json)
  export SHARDQ_HIDDEN_SNAPSHOTS=$2
  t0=$(now); "$SHARDQ" "${args[@]}" --output "$work/$label-full" 2>/dev/null >/dev/null
  t1=$(now); SHARDQ_FAULT="shard_write:0:8:kill" "$SHARDQ" "${args[@]}" --output "$work/$label" >/dev/null 2>&1 || true
  t2=$(now); "$SHARDQ" "${args[@]}" --output "$work/$label" --resume 2>"$work/$label.err" >/dev/null
  t3=$(now)
  /usr/bin/python3 - "$t0" "$t1" "$t2" "$t3" "$work/$label.err" "$label" <<'PY'
import json, sys
t0, t1, t2, t3 = map(float, sys.argv[1:5])
events = [json.loads(l) for l in open(sys.argv[5]) if l.startswith("{")]
work = next(e for e in events if e.get("event") == "work")
resume = next(e for e in events if e.get("event") == "resume")
print(json.dumps({"bench": "resume_cost", "case": sys.argv[6], "killed_at": "shard_write of layer 8 of 12",
                  "full_s": round(t1 - t0, 2), "killed_run_s": round(t2 - t1, 2), "resume_s": round(t3 - t2, 2),
                  "resume_over_full": round((t3 - t2) / (t1 - t0), 3), "shards_reused": work["shards_reused"],
                  "shards_total": work["shards_total"], "hidden_snapshot_layer": resume.get("hidden_snapshot_layer"),
                  "work_fraction": round(work["work_fraction"], 4)}))
PY
}
run sequential off sequential-no-snapshots
run sequential auto sequential-snapshots
run pipeline auto pipeline
