#!/usr/bin/env bash
# The demo: quantize the default model and show what it did — size and perplexity before
# and after, and the quantized model's greedy continuation of a prompt.
#   scripts/demo.sh                 # stories260K from ../shared when present, else a synthetic model
#   METHOD=rtn BITS=3 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [ ! -x "$BUILD_DIR/apps/shardq/shardq" ]; then
  bash scripts/setup.sh
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j "$(nproc)" --target shardq
fi
SHARDQ=$PWD/$BUILD_DIR/apps/shardq/shardq
SHARED=${SHARDQ_SHARED:-$PWD/../shared}
WORK=${DEMO_DIR:-$PWD/out/demo}
METHOD=${METHOD:-gptq}; BITS=${BITS:-4}; GROUP=${GROUP:-32}
mkdir -p "$WORK"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

if [ -f "$SHARED/models/stories260K/stories260K.bin" ]; then
  echo "== model: real stories260K (llama2.c, TinyStories) from $SHARED/models/stories260K"
  "$SHARDQ" convert llama2c "$SHARED/models/stories260K/stories260K.bin" \
    --tokenizer "$SHARED/models/stories260K/tok512.bin" --output "$WORK/stories260K" --force
  MODEL=$WORK/stories260K
  CALIB=$SHARED/data/tinystories/calib.txt
  EVAL=$SHARED/data/tinystories/eval.txt
  FORMAT=text
else
  echo "== model: ../shared is not there; a synthetic 4-layer Llama from 'shardq synth' (random weights: perplexity is not meaningful)"
  rm -rf "$WORK/synth"
  "$SHARDQ" synth --layers 4 --hidden 256 --intermediate 688 --heads 8 --kv-heads 4 --vocab 512 --seed 1 --output "$WORK/synth"
  MODEL=$WORK/synth
  /usr/bin/python3 -c "import numpy as np; np.random.default_rng(0).integers(0,512,200000).astype('<u4').tofile('$WORK/tokens.bin')"
  CALIB=$WORK/tokens.bin
  EVAL=""
  FORMAT=tokens
fi

"$SHARDQ" info "$MODEL" >"$WORK/info.txt"
head -7 "$WORK/info.txt"
echo
echo "== quantize: $METHOD ${BITS}-bit, group $GROUP, 2 ranks (mpirun), sequential GPTQ order"
mpirun --oversubscribe -np 2 "$SHARDQ" quantize --model "$MODEL" --output "$WORK/quantized" \
  --calibration "$CALIB" --calibration-format "$FORMAT" --samples 64 --seq-len 256 \
  --method "$METHOD" --bits "$BITS" --group-size "$GROUP" --force
echo
"$SHARDQ" inspect "$WORK/quantized" | tail -8
if [ -n "$EVAL" ]; then
  echo
  echo "== perplexity on 200 windows of $EVAL (256 tokens each)"
  before=$("$SHARDQ" eval --model "$MODEL" --text "$EVAL" --max-windows 200 --json)
  after=$("$SHARDQ" eval --model "$WORK/quantized" --ref "$MODEL" --text "$EVAL" --max-windows 200 --json)
  /usr/bin/python3 - "$before" "$after" "$MODEL" "$WORK/quantized" <<'PY'
import json, os, sys
b, a = json.loads(sys.argv[1]), json.loads(sys.argv[2])
size = lambda d: sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(('.safetensors', '.h5')) and f != 'model.h5')
print(f"{'':10}{'size KiB':>10}{'ppl':>10}{'KL':>10}{'top-1':>8}")
print(f"{'original':10}{size(sys.argv[3])/1024:>10.1f}{b['ppl']:>10.4f}{'':>10}{'':>8}")
print(f"{'quantized':10}{size(sys.argv[4])/1024:>10.1f}{a['ppl']:>10.4f}{a['kl']:>10.5f}{a['top1']:>8.4f}")
PY
  echo
  echo "== the quantized model continues \"Once upon a time\":"
  "$SHARDQ" generate --model "$WORK/quantized" --prompt "Once upon a time" -n 64
fi
