#!/usr/bin/env bash
# Distributed-job scaling on this machine, printed as JSON (issue: distributed job):
#   speed:  pipeline schedule, synthetic 8-layer 1024-wide model, one BLAS thread per rank,
#           wall time of -np 1 and -np 2 and their ratio (target >= 1.6 on 2 cores);
#   memory: pipeline schedule, synthetic 16-layer model, peak RSS of every rank (getrusage,
#           recorded in the manifest's "ranks") for -np 1 and -np 4 (target: each -np 4 rank
#           below 35% of -np 1).
# usage: bench/distributed_scaling.sh [speed|memory|all]   (BUILD_DIR=build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDQ=${SHARDQ_BIN:-$PWD/${BUILD_DIR:-build}/apps/shardq/shardq}
what=${1:-all}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tokens() { /usr/bin/python3 -c "import numpy as np; np.random.default_rng(0).integers(0, $1, 200000).astype('<u4').tofile('$2')"; }
now() { date +%s.%N; }

speed() {
  "$SHARDQ" synth --layers 8 --hidden 1024 --intermediate 2816 --heads 16 --kv-heads 8 --vocab 1000 --seed 1 \
    --dtype f16 --output "$work/speed" >/dev/null
  tokens 1000 "$work/speed.tok"
  local args=(quantize --model "$work/speed" --calibration "$work/speed.tok" --calibration-format tokens
              --samples 16 --seq-len 512 --bits 4 --group-size 128 --schedule pipeline --blas-threads 1 --quiet --force)
  local t0 t1 t2
  t0=$(now); mpirun --oversubscribe -np 1 "$SHARDQ" "${args[@]}" --output "$work/speed-np1" >/dev/null
  t1=$(now); mpirun --oversubscribe -np 2 "$SHARDQ" "${args[@]}" --output "$work/speed-np2" >/dev/null
  t2=$(now)
  /usr/bin/python3 - "$t0" "$t1" "$t2" "$work" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
m = json.load(open(f"{sys.argv[4]}/speed-np2/manifest.json"))
print(json.dumps({"bench": "pipeline_speedup", "model": "synth 8 layers, hidden 1024, intermediate 2816",
                  "np1_s": round(t1 - t0, 2), "np2_s": round(t2 - t1, 2), "speedup": round((t1 - t0) / (t2 - t1), 3),
                  "np2_phase_seconds": m["summary"]["phase_seconds"]}))
PY
}

memory() {
  "$SHARDQ" synth --layers 16 --hidden 1024 --intermediate 2816 --heads 16 --kv-heads 8 --vocab 1000 --seed 2 \
    --dtype f16 --output "$work/mem" >/dev/null
  tokens 1000 "$work/mem.tok"
  local args=(quantize --model "$work/mem" --calibration "$work/mem.tok" --calibration-format tokens
              --samples 8 --seq-len 256 --bits 4 --group-size 128 --schedule pipeline --blas-threads 1 --quiet --force)
  mpirun --oversubscribe -np 1 "$SHARDQ" "${args[@]}" --output "$work/mem-np1" >/dev/null
  mpirun --oversubscribe -np 4 "$SHARDQ" "${args[@]}" --output "$work/mem-np4" >/dev/null
  /usr/bin/python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
one = json.load(open(f"{w}/mem-np1/manifest.json"))["ranks"]
four = json.load(open(f"{w}/mem-np4/manifest.json"))["ranks"]
base = one[0]["peak_rss_mb"]
print(json.dumps({"bench": "pipeline_memory", "model": "synth 16 layers, hidden 1024, intermediate 2816",
                  "np1_peak_rss_mb": round(base, 1),
                  "np4_peak_rss_mb": [round(r["peak_rss_mb"], 1) for r in four],
                  "np4_max_fraction": round(max(r["peak_rss_mb"] for r in four) / base, 3)}))
PY
}

case "$what" in
  speed) speed ;;
  memory) memory ;;
  all) speed; memory ;;
  *) echo "usage: $0 [speed|memory|all]" >&2; exit 2 ;;
esac
