#!/usr/bin/env bash
# CLI test of `shardq convert llama2c`: converts stories260K, shows it with `shardq info`
# (when that subcommand exists), and checks that converting into the same directory again
# fails without --force and leaves every file untouched. Needs SHARDQ_BIN and SHARDQ_SHARED.
set -euo pipefail

models="$SHARDQ_SHARED/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$SHARDQ_BIN" convert llama2c "$models/stories260K/stories260K.bin" \
  --tokenizer "$models/stories260K/tok512.bin" --output "$tmp/hf"
for f in config.json model.safetensors tokenizer.bin; do
  [[ -s "$tmp/hf/$f" ]] || fail "missing $f"
done
cmp -s "$tmp/hf/tokenizer.bin" "$models/stories260K/tok512.bin" || fail "tokenizer.bin differs from tok512.bin"

if "$SHARDQ_BIN" info --help >/dev/null 2>&1; then
  "$SHARDQ_BIN" info "$tmp/hf" >"$tmp/info.txt"
  grep -q LlamaForCausalLM "$tmp/info.txt" || fail "info does not show the architecture"
  grep -q "model.layers.4.self_attn.q_proj.weight" "$tmp/info.txt" || fail "info does not list layer 4"
else
  echo "shardq info not available; skipping that part"
fi

(cd "$tmp/hf" && sha256sum config.json model.safetensors tokenizer.bin) >"$tmp/before.sha256"
if "$SHARDQ_BIN" convert llama2c "$models/babyllama_tok105/model5000.bin" \
     --tokenizer "$models/babyllama_tok105/tok105.model" --output "$tmp/hf" 2>"$tmp/err.txt"; then
  fail "converting into a non-empty directory without --force succeeded"
fi
grep -q "not empty" "$tmp/err.txt" || fail "unexpected error: $(cat "$tmp/err.txt")"
(cd "$tmp/hf" && sha256sum -c --quiet "$tmp/before.sha256") || fail "a refused conversion changed the files"
[[ ! -e "$tmp/hf/tokenizer.model" ]] || fail "a refused conversion wrote tokenizer.model"

"$SHARDQ_BIN" convert llama2c "$models/babyllama_tok105/model5000.bin" \
  --tokenizer "$models/babyllama_tok105/tok105.model" --output "$tmp/hf" --dtype f16 --force
[[ -s "$tmp/hf/tokenizer.model" && ! -e "$tmp/hf/tokenizer.bin" ]] || fail "--force did not replace the tokenizer"
grep -q '"float16"' "$tmp/hf/config.json" || fail "--dtype f16 not recorded in config.json"

head -c 1000 "$models/stories260K/stories260K.bin" >"$tmp/truncated.bin"
if "$SHARDQ_BIN" convert llama2c "$tmp/truncated.bin" --tokenizer "$models/stories260K/tok512.bin" \
     --output "$tmp/bad" 2>"$tmp/err.txt"; then
  fail "a truncated checkpoint was converted"
fi
grep -q "truncated.bin.*truncated" "$tmp/err.txt" || fail "unexpected error: $(cat "$tmp/err.txt")"
[[ $(wc -l <"$tmp/err.txt") -eq 1 ]] || fail "error is not one line"
echo "convert llama2c CLI: ok"
