#!/usr/bin/env bash
# CLI tests of `shardq info` and `shardq synth` (registered by info_synth_tests.cmake).
#   info_synth.sh CASE      with SHARDQ_BIN set (ctest sets it)
# Cases:
#   info_corrupt        every kind of broken model: exit != 0, nothing on stdout, one line on stderr
#   info_table          info / info --json on a synth model, totals checked by an independent
#                       header parse in python
#   synth_deterministic same seed -> identical files; other shard size -> identical tensor bytes
#   synth_bad_args      invalid shapes and a non-empty output: one-line errors
set -euo pipefail
BIN=${SHARDQ_BIN:?SHARDQ_BIN not set}
PY=/usr/bin/python3
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shardq-cli-info.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

synth_small() {  # synth_small DIR [extra flags]
  local dir=$1; shift
  "$BIN" synth --layers 2 --hidden 64 --intermediate 172 --heads 4 --kv-heads 2 --vocab 256 --seed 3 \
    --output "$dir" "$@" > /dev/null
}

# expect_one_line_error NAME CMD...: exit != 0, empty stdout, exactly one stderr line.
expect_one_line_error() {
  local name=$1; shift
  set +e
  "$@" > "$WORK/out" 2> "$WORK/err"
  local rc=$?
  set -e
  [ "$rc" -ne 0 ] || fail "$name: exit status 0"
  [ ! -s "$WORK/out" ] || fail "$name: stdout not empty: $(head -c 300 "$WORK/out")"
  local lines
  lines=$(wc -l < "$WORK/err")
  [ "$lines" -eq 1 ] || fail "$name: $lines lines on stderr: $(cat "$WORK/err")"
  echo "ok $name: $(cat "$WORK/err")"
}

case_info_corrupt() {
  synth_small "$WORK/good" --max-shard-bytes 60000
  local shard
  shard=$(ls "$WORK/good" | grep -m1 'safetensors$')
  mk() { rm -rf "$WORK/bad"; cp -r "$WORK/good" "$WORK/bad"; }

  mk; head -c 5 "$WORK/good/$shard" > "$WORK/bad/$shard"
  expect_one_line_error truncated_to_5_bytes "$BIN" info "$WORK/bad"
  grep -q "$shard" "$WORK/err" || fail "truncated: message does not name $shard"

  mk; head -c 200 "$WORK/good/$shard" > "$WORK/bad/$shard"
  expect_one_line_error header_past_end "$BIN" info "$WORK/bad" --json

  mk; $PY -c "import struct,sys; h=b'{\"w\": [1,2'; open(sys.argv[1],'wb').write(struct.pack('<Q',len(h))+h)" "$WORK/bad/$shard"
  expect_one_line_error header_not_json "$BIN" info "$WORK/bad"
  grep -q "not valid JSON" "$WORK/err" || fail "header_not_json: wrong message"

  mk; rm "$WORK/bad/$shard"
  expect_one_line_error missing_shard "$BIN" info "$WORK/bad"
  grep -q "does not exist" "$WORK/err" || fail "missing_shard: wrong message"

  mk; $PY -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c['hidden_size']; json.dump(c,open(p,'w'))" "$WORK/bad/config.json"
  expect_one_line_error config_missing_key "$BIN" info "$WORK/bad"
  grep -q "missing key 'hidden_size'" "$WORK/err" || fail "config_missing_key: wrong message"

  mk; $PY -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); c['rope_scaling']={'type':'yarn'}; json.dump(c,open(p,'w'))" "$WORK/bad/config.json"
  expect_one_line_error config_rope_scaling "$BIN" info "$WORK/bad"

  expect_one_line_error no_such_dir "$BIN" info "$WORK/nowhere"
}

case_info_table() {
  synth_small "$WORK/m" --max-shard-bytes 60000
  "$BIN" info "$WORK/m" > "$WORK/info.txt"
  grep -q "LlamaForCausalLM" "$WORK/info.txt" || fail "architecture missing"
  grep -q "model.layers.1.mlp.down_proj.weight  *F16  *\[64, 172\]" "$WORK/info.txt" || fail "table row missing"
  "$BIN" info "$WORK/m" --json > "$WORK/info.json"
  $PY - "$WORK/m" "$WORK/info.json" <<'PY'
import json, struct, sys, os
model, info = sys.argv[1], json.load(open(sys.argv[2]))
sizes = {"F16": 2, "BF16": 2, "F32": 4}
params = nbytes = 0
tensors = {}
for f in sorted(os.listdir(model)):
    if not f.endswith(".safetensors"):
        continue
    raw = open(os.path.join(model, f), "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    for name, e in json.loads(raw[8:8 + n]).items():
        if name == "__metadata__":
            continue
        numel = 1
        for d in e["shape"]:
            numel *= d
        params += numel
        nbytes += numel * sizes[e["dtype"]]
        tensors[name] = (e["dtype"], e["shape"], f)
assert info["params"] == params == 2 * (64*64*2 + 32*64*2 + 3*64*172 + 2*64) + 2*256*64 + 64, (info["params"], params)
assert info["bytes"] == nbytes
assert info["architecture"] == "LlamaForCausalLM"
assert info["config"]["num_key_value_heads"] == 2
got = {t["name"]: (t["dtype"], t["shape"], t["file"]) for t in info["tensors"]}
assert got == tensors, "tensor table differs from the headers"
print("ok info_table:", params, "params in", len(set(v[2] for v in tensors.values())), "files")
PY
}

case_synth_deterministic() {
  synth_small "$WORK/a" --max-shard-bytes 60000
  synth_small "$WORK/b" --max-shard-bytes 60000
  synth_small "$WORK/c"
  diff -r "$WORK/a" "$WORK/b" > /dev/null || fail "same seed, different bytes"
  $PY - "$WORK/a" "$WORK/c" <<'PY'
import json, struct, sys, os
def tensors(model):
    out = {}
    for f in os.listdir(model):
        if f.endswith(".safetensors"):
            raw = open(os.path.join(model, f), "rb").read()
            n = struct.unpack("<Q", raw[:8])[0]
            for name, e in json.loads(raw[8:8 + n]).items():
                if name != "__metadata__":
                    b, end = e["data_offsets"]
                    out[name] = raw[8 + n + b: 8 + n + end]
    return out
a, c = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a.keys() == c.keys() and all(a[k] == c[k] for k in a), "sharding changed tensor bytes"
print("ok synth_deterministic:", len(a), "tensors identical across shardings")
PY
}

case_synth_bad_args() {
  expect_one_line_error kv_heads_not_dividing "$BIN" synth --layers 1 --hidden 64 --intermediate 128 --heads 4 \
    --kv-heads 3 --vocab 64 --output "$WORK/x"
  grep -q "kv-heads" "$WORK/err" || fail "kv-heads not named"
  synth_small "$WORK/m"
  expect_one_line_error output_not_empty "$BIN" synth --layers 1 --hidden 64 --intermediate 128 --heads 4 \
    --kv-heads 2 --vocab 64 --output "$WORK/m"
  # A model larger than the disk is refused from its config, before anything is allocated or
  # written (these shapes ended in bad_alloc or the OOM killer), under a 4 GB address space.
  for shape in "--layers 1000000 --hidden 65536 --intermediate 65536" "--layers 1 --hidden 2000000000 --intermediate 64"; do
    # shellcheck disable=SC2086
    (ulimit -v 4000000; expect_one_line_error too_large "$BIN" synth $shape --heads 4 --kv-heads 2 --vocab 300 \
      --output "$WORK/huge")
    grep -q "GB free" "$WORK/err" || fail "too large: $(cat "$WORK/err")"
    [ ! -e "$WORK/huge" ] || fail "a refused synth created its output directory"
  done
}

"case_${1:?case name}"
