#!/usr/bin/env bash
# Resume and verification from the command line (issue: resume and fault tolerance):
#   - bytes flipped in a committed shard and a truncated shard: `inspect --verify` names the
#     layers and exits 1; resume redoes exactly those layers and the result equals an
#     uninterrupted run bit for bit;
#   - a changed spec, calibration file or model is refused with one line naming it, and the
#     checkpoint is left as it was;
#   - a torn last journal line (a crash during its append) is cut off and the job resumes;
#   - a full disk (an LD_PRELOAD shim fails the writes to the shard being written with ENOSPC)
#     and an unwritable output directory give one clear error, and the layers committed before
#     stay intact;
#   - --resume on a directory that is not a shardq job's output is refused;
#   - inspect and eval refuse an unfinished checkpoint with a hint to resume it.
set -euo pipefail
: "${SHARDQ_BIN:?}" "${SHARDQ_SHARED:?}" "${SHARDQ_SOURCE:?}" "${SHARDQ_DISK_FULL_LIB:?}"
work=$(mktemp -d)
chmod 755 "$work"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
py=/usr/bin/python3
fail() { echo "FAIL: $*"; exit 1; }
"$SHARDQ_BIN" convert llama2c "$SHARDQ_SHARED/models/stories260K/stories260K.bin" \
  --tokenizer "$SHARDQ_SHARED/models/stories260K/tok512.bin" --output "$work/model" 2>/dev/null
cp "$SHARDQ_SHARED/data/tinystories/calib.txt" "$work/calib.txt"
# q [args]: the job; MODEL, BITS, GROUP and SAMPLES in the environment change one input.
q() {
  "$SHARDQ_BIN" quantize --model "${MODEL:-$work/model}" --calibration "$work/calib.txt" --samples "${SAMPLES:-16}" \
    --seq-len 128 --bits "${BITS:-4}" --group-size "${GROUP:-32}" --schedule sequential "$@"
}
same() { $py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$1" >/dev/null || fail "$1 differs from the reference"; }
one_line() {  # one_line FILE: exactly one line on stderr
  [ "$(wc -l <"$1")" -eq 1 ] || { cat "$1"; fail "expected one error line"; }
}
verify_json() {  # verify_json DIR CONDITION: the --verify --json report r satisfies CONDITION
  "$SHARDQ_BIN" inspect --verify --json "$1" >"$work/verify.json" 2>/dev/null || true
  $py -c "import json; r = json.load(open('$work/verify.json')); assert $2, r"
}
redo_of() { grep '"event":"resume"' "$1" | $py -c 'import json,sys; print(" ".join(map(str, json.loads(sys.stdin.read())["shards_redo"])))'; }

q --output "$work/ref" --quiet >/dev/null

# --- damaged shards are found and healed ---------------------------------------------------
cp -r "$work/ref" "$work/heal"
size=$(stat -c %s "$work/heal/shard-00002.h5")
$py -c "
p = '$work/heal/shard-00002.h5'; b = bytearray(open(p, 'rb').read())
for off in ($size // 2, $size // 2 + 1, $size - 100): b[off] ^= 0xff
open(p, 'wb').write(b)"
truncate -s 1000 "$work/heal/shard-00004.h5"
rc=0; "$SHARDQ_BIN" inspect --verify "$work/heal" >"$work/verify.out" 2>"$work/verify.err" || rc=$?
[ "$rc" -eq 1 ] || fail "verify exit $rc on damaged shards"
cat "$work/verify.out"
grep -q "shard-00002.h5.*bad: sha256" "$work/verify.out" || fail "flipped bytes not reported"
grep -q "layers damaged: 2,4" "$work/verify.out" || fail "damaged layers not listed"
one_line "$work/verify.err"
verify_json "$work/heal" "r['ok'] is False and r['layers_bad'] == [2, 4]" || fail "verify --json"
q --output "$work/heal" --resume --progress json 2>"$work/heal.err" >/dev/null
[ "$(redo_of "$work/heal.err")" = "2 4" ] || fail "resume redid [$(redo_of "$work/heal.err")], expected [2 4]"
"$SHARDQ_BIN" inspect --verify "$work/heal" | tail -1
same "$work/heal"
echo "healed: layers 2 and 4 redone, identical to the uninterrupted run"

# --- a changed spec, calibration or model is refused ---------------------------------------
SHARDQ_FAULT="shard_write:0:3:kill" q --output "$work/part" --quiet 2>/dev/null && fail "the kill did not happen"
cp -r "$work/part" "$work/part.before"
# Readers refuse the unfinished checkpoint, saying what it is and how to finish it.
for cmd in "inspect $work/part" "eval --model $work/part --text $work/calib.txt"; do
  rc=0; "$SHARDQ_BIN" $cmd >/dev/null 2>"$work/unfinished.err" || rc=$?
  [ "$rc" -ne 0 ] || fail "$cmd accepted an unfinished checkpoint"
  one_line "$work/unfinished.err"
  grep -q "unfinished.*--resume" "$work/unfinished.err" || { cat "$work/unfinished.err"; fail "$cmd: no hint"; }
done
expect_refusal() {  # expect_refusal WHAT PATTERN [VAR=VALUE...]
  local what=$1 pattern=$2 rc=0
  shift 2
  env "$@" bash -c "$(declare -f q); work='$work' SHARDQ_BIN='$SHARDQ_BIN'; q --output '$work/part' --resume --quiet" \
    >"$work/refuse.out" 2>"$work/refuse.err" || rc=$?
  [ "$rc" -ne 0 ] || fail "$what: a resume with a changed input ran"
  one_line "$work/refuse.err"
  grep -q -- "$pattern" "$work/refuse.err" || { cat "$work/refuse.err"; fail "$what: the message does not name $pattern"; }
  # The lock file names the job that last took it (common/output_lock.hpp); it is not checkpoint.
  diff -r -x .shardq-lock "$work/part" "$work/part.before" >/dev/null || fail "$what: the checkpoint changed"
  echo "$what: $(cat "$work/refuse.err")"
}
expect_refusal "changed bits" "quant.bits" BITS=3
expect_refusal "changed group size" "quant.group_size" GROUP=64
expect_refusal "changed samples" "calibration.samples" SAMPLES=8
echo "Once upon a time there was a changed calibration file." >>"$work/calib.txt"
expect_refusal "changed calibration file" "calibration.path"
cp "$SHARDQ_SHARED/data/tinystories/calib.txt" "$work/calib.txt"
cp -r "$work/model" "$work/model2"
$py -c "
p = '$work/model2/model.safetensors'; b = bytearray(open(p, 'rb').read()); b[-5] ^= 0x10; open(p, 'wb').write(b)"
expect_refusal "changed model weights" "model" MODEL="$work/model2"
grep -q "model.safetensors" "$work/refuse.err" || fail "the changed model file is not named"

# --- a torn journal line is cut off -----------------------------------------------------------
printf '{"entry":{"shard":{"index":3,"fi' >>"$work/part/journal.jsonl"
q --output "$work/part" --resume --progress json 2>"$work/torn.err" >/dev/null
grep -q '"torn_journal_line":true' "$work/torn.err" || fail "the torn line was not reported"
[ "$(redo_of "$work/torn.err")" = "3 4 5" ] || fail "after the torn line: redid [$(redo_of "$work/torn.err")]"
same "$work/part"
echo "torn journal line: cut off, resumed, identical"

# --- full disk and unwritable directory leave the committed layers intact -------------------
SHARDQ_FAULT="shard_write:0:3:kill" q --output "$work/disk" --quiet 2>/dev/null && fail "the kill did not happen"
rc=0
ASAN_OPTIONS=verify_asan_link_order=0 LD_PRELOAD="$SHARDQ_DISK_FULL_LIB" q --output "$work/disk" --resume --quiet \
  >/dev/null 2>"$work/disk.err" || rc=$?
[ "$rc" -ne 0 ] || fail "a full disk went unnoticed"
one_line "$work/disk.err"
grep -q "No space left on device" "$work/disk.err" || fail "ENOSPC not reported"
grep -q "shard-00003.h5" "$work/disk.err" || fail "the file is not named"
echo "full disk: $(cut -c1-160 "$work/disk.err")..."
[ ! -e "$work/disk/manifest.json" ] || fail "a manifest after a failed write"
verify_json "$work/disk" "r['layers_missing'] == [3, 4] and r['layers_bad'] == []" ||
  fail "committed layers damaged by the failed write"
[ ! -e "$work/disk/shard-00003.h5" ] || fail "the shard that could not be written was published"

# Unwritable: as root, run as nobody (root ignores permission bits).
chmod -R a+rX "$work"
chmod a-w "$work/disk"
as_user=()
# nobody cannot create Open MPI's session directories under this test's base (ctest's, owned by root).
mkdir -m 1777 "$work/mpi-nobody"
[ "$(id -u)" -ne 0 ] ||
  as_user=(env OMPI_MCA_orte_tmpdir_base="$work/mpi-nobody" setpriv --reuid=65534 --regid=65534 --clear-groups)
rc=0; "${as_user[@]}" bash -c "$(declare -f q); work='$work' SHARDQ_BIN='$SHARDQ_BIN'; q --output '$work/disk' --resume --quiet" \
  >/dev/null 2>"$work/ro.err" || rc=$?
[ "$rc" -ne 0 ] || fail "an unwritable output directory went unnoticed"
one_line "$work/ro.err"
grep -qi "permission denied" "$work/ro.err" || fail "the cause is not named"
echo "unwritable: $(cat "$work/ro.err")"
chmod u+w "$work/disk"
verify_json "$work/disk" "r['layers_missing'] == [3, 4] and r['layers_bad'] == []" || fail "committed layers damaged"
q --output "$work/disk" --resume --quiet >/dev/null
same "$work/disk"
echo "after the disk was fixed: resumed, identical"

# --- not a shardq output ---------------------------------------------------------------------
mkdir "$work/other" && echo "notes" >"$work/other/notes.txt"
rc=0; q --output "$work/other" --resume --quiet >/dev/null 2>"$work/other.err" || rc=$?
[ "$rc" -ne 0 ] || fail "resumed into a foreign directory"
one_line "$work/other.err"
[ "$(cat "$work/other/notes.txt")" = notes ] && [ "$(ls "$work/other")" = notes.txt ] || fail "the foreign directory was touched"
echo "foreign directory: $(cat "$work/other.err")"
echo ok
