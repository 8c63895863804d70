#!/usr/bin/env bash
# comm 'nccl' with more ranks on a node than it has GPUs: NCCL would refuse the clique
# ("Duplicate GPU detected", ncclInvalidUsage) after every rank set up its engine, so the job
# refuses first, with one error line naming the field (coordinator/quantize_job.cpp). Runs as
# many ranks as the node has GPUs plus one; skips (77) without a GPU.
set -euo pipefail
: "${SHARDQ_BIN:?}" "${SHARDQ_SHARED:?}"
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ "$gpus" -gt 0 ] || { echo "no CUDA device: skipped"; exit 77; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
S=$SHARDQ_SHARED
"$SHARDQ_BIN" convert llama2c "$S/models/stories260K/stories260K.bin" --tokenizer "$S/models/stories260K/tok512.bin" \
  --output "$work/model" 2>/dev/null
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rc=0
timeout 120 mpirun -np $((gpus + 1)) --oversubscribe "$SHARDQ_BIN" quantize --model "$work/model" --output "$work/out" \
  --calibration "$S/data/tinystories/calib.txt" --samples 8 --seq-len 64 --device cuda --comm nccl --quiet \
  >/dev/null 2>"$work/err" || rc=$?
cat "$work/err"
[ "$rc" -ne 0 ] || { echo "FAIL: the job ran with more ranks than GPUs on comm nccl"; exit 1; }
[ "$rc" -ne 124 ] || { echo "FAIL: the job hung"; exit 1; }
grep -q "comm.*'nccl' needs one GPU per rank" "$work/err" || { echo "FAIL: no error line naming comm"; exit 1; }
[ ! -f "$work/out/manifest.json" ] || { echo "FAIL: a manifest was written"; exit 1; }
echo "ok: refused with exit $rc"
