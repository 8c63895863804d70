#!/usr/bin/env bash
# End-to-end GPU quantization at Llama-3-8B shapes (issue 10): a synthetic model with
# 32 layers, hidden 4096, MLP 14336, 32 heads / 8 kv heads, vocab 128256 (bf16, ~16 GB),
# 128 × 2048 calibration tokens, GPTQ 4-bit g128 act-order, sequential schedule, device cuda.
# Prints one JSON object: wall time, the job's phase times, the counted work and achieved
# TFLOP/s per phase (manifest run record), the matmul precision, the GPU and its peak memory.
# Target: ≤ 120 s on one H100.
# usage: bench/gpu_e2e.sh [WORKDIR]   env: SHARDQ_BIN, LAYERS (32), SAMPLES (128), SEQ_LEN (2048),
#        SHARDQ_CUDA_MATMUL (fp32 | tf32x3 | tf32 | bf16 | forward=..,hessian=..), SHARDQ_PYTHON (numpy),
#        DEVICE (cuda; cpu checks the script on a machine without a GPU), SYNTH_ONLY (1: make the
#        model and the calibration tokens, then stop; gpu_issue10.sh does it while other steps run)
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDQ=${SHARDQ_BIN:-$PWD/${BUILD_DIR:-build}/apps/shardq/shardq}
PY=${SHARDQ_PYTHON:-python3}
work=${1:-/tmp/shardq_e2e}
layers=${LAYERS:-32} samples=${SAMPLES:-128} seq_len=${SEQ_LEN:-2048}
mkdir -p "$work"
model="$work/llama3-8b-shapes-L$layers"
if [ ! -f "$model.complete" ]; then  # a synth cut short is made again, not used
  t0=$(date +%s)
  rm -rf "$model"
  "$SHARDQ" synth --layers "$layers" --hidden 4096 --intermediate 14336 --heads 32 --kv-heads 8 --vocab 128256 \
    --context 8192 --dtype bf16 --seed 1 --output "$model" >/dev/null
  touch "$model.complete"
  echo "synth: $(($(date +%s) - t0)) s" >&2
fi
if [ ! -f "$work/calib.tok" ]; then
  "$PY" -c "import numpy as np; np.random.default_rng(0).integers(0, 128256, 1 << 20).astype('<u4').tofile('$work/calib.part')"
  mv "$work/calib.part" "$work/calib.tok"
fi
if [ "${SYNTH_ONLY:-0}" = 1 ]; then
  echo "{\"bench\": \"gpu_e2e_synth\", \"model\": \"$model\"}"
  exit 0
fi
out="$work/out"
nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$work/gpu_mem.log" 2>/dev/null &
smi=$!
# A run that fails or is cut by a timeout still leaves its last progress records (phase,
# layers done, rate) as the last lines of this script's output.
trap 'kill "$smi" 2>/dev/null; tail -n 3 "$work/progress.jsonl" >&2; exit 124' TERM
t0=$(date +%s.%N)
"$SHARDQ" quantize --model "$model" --output "$out" --calibration "$work/calib.tok" --calibration-format tokens \
  --samples "$samples" --seq-len "$seq_len" --method gptq --bits 4 --group-size 128 --act-order \
  --schedule sequential --device "${DEVICE:-cuda}" --force --progress json 2>"$work/progress.jsonl" >/dev/null || {
  rc=$?
  kill "$smi" 2>/dev/null || true
  tail -n 20 "$work/progress.jsonl" >&2
  exit "$rc"
}
t1=$(date +%s.%N)
trap - TERM
kill "$smi" 2>/dev/null || true
"$PY" - "$out/manifest.json" "$t0" "$t1" "$work/gpu_mem.log" "$layers" "$samples" "$seq_len" "$out/journal.jsonl" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
# Hidden-state snapshots taken on the way (journal "hidden" entries): each one is a
# download and a write of all calibration hidden states, inside the wall time.
snapshots = sum(1 for l in open(sys.argv[8]) if l.strip() and "hidden" in json.loads(l))
mem = [int(l) for l in open(sys.argv[4]) if l.strip().isdigit()]
run = m["run"]
print(json.dumps({
    "bench": "gpu_e2e", "layers": int(sys.argv[5]), "calibration_tokens": int(sys.argv[6]) * int(sys.argv[7]),
    "wall_s": float(sys.argv[3]) - float(sys.argv[2]),
    "phase_s": m["summary"]["phase_seconds"],
    "phase_gflop": run.get("phase_gflop"), "phase_tflops": run.get("phase_tflops"),
    "cuda_matmul": run.get("cuda_matmul"), "device": run.get("device"),
    "avg_bits": m["summary"].get("avg_bits"), "gpu_mem_peak_mib": max(mem) if mem else None,
    "hidden_snapshots": snapshots,
    "target_s": 120}))
PY
