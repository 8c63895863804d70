#!/usr/bin/env bash
# One writer per output directory (common/output_lock.hpp): while a job runs, a second job on
# its output, with --force, with --resume, or under mpirun, stops before it writes anything,
# with one line naming the first job's pid; the first job finishes unharmed, equal to a run
# alone. The lock goes with its holder however it ends: --force over the finished output
# runs, and the output of a job killed by SIGKILL resumes.
set -euo pipefail
: "${SHARDQ_BIN:?}" "${SHARDQ_SOURCE:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
work=$(mktemp -d)
first=""
cleanup() {
  if [ -n "$first" ]; then kill -CONT "$first" 2>/dev/null || true; kill "$first" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
py=/usr/bin/python3
fail() { echo "FAIL: $*"; exit 1; }
# Big enough that the first job is still running when the others start (~10 s on 2 cores).
"$SHARDQ_BIN" synth --layers 8 --hidden 384 --intermediate 1024 --heads 6 --kv-heads 2 --vocab 512 --seed 7 \
  --dtype f16 --output "$work/model" >/dev/null
$py -c "import numpy as np; np.random.default_rng(1).integers(0, 512, 40000).astype('<u4').tofile('$work/tokens.bin')"
args=(--model "$work/model" --calibration "$work/tokens.bin" --calibration-format tokens --samples 16 --seq-len 256
      --bits 4 --group-size 64 --quiet)
"$SHARDQ_BIN" quantize "${args[@]}" --output "$work/ref" >/dev/null

"$SHARDQ_BIN" quantize "${args[@]}" --output "$work/out" >/dev/null 2>"$work/first.err" &
first=$!
for _ in $(seq 600); do
  grep -q '"pid":' "$work/out/.shardq-lock" 2>/dev/null && break
  kill -0 "$first" 2>/dev/null || fail "the first job ended before it took the lock: $(cat "$work/first.err")"
  sleep 0.05
done
grep -q "\"pid\":$first," "$work/out/.shardq-lock" || fail "the lock file does not name the first job: $(cat "$work/out/.shardq-lock")"
# Stopped, it holds the lock for as long as the others need; what it wrote so far stays as it is.
kill -STOP "$first"
listing() { (cd "$work/out" && find . -type f ! -name .shardq-lock -printf '%p %s\n' | sort); }
before=$(listing)

# refused WHAT COMMAND...: exit != 0, one line from shardq naming the first job (mpirun adds
# its own banner), nothing written.
refused() {
  local what=$1 rc=0
  shift
  "$@" >/dev/null 2>"$work/second.err" || rc=$?
  [ "$rc" -ne 0 ] || fail "$what: a second job on a busy output ran"
  [ "$rc" -ne 124 ] || fail "$what: the second job hung"
  [ "$(grep -c '^shardq' "$work/second.err")" -eq 1 ] || { cat "$work/second.err"; fail "$what: expected one error line"; }
  [[ $what == mpirun* ]] || [ "$(grep -c . "$work/second.err")" -eq 1 ] || { cat "$work/second.err"; fail "$what: more than one line"; }
  grep -q "being written by another shardq job (pid $first on host " "$work/second.err" ||
    { cat "$work/second.err"; fail "$what: the message does not name the first job"; }
  [ "$(listing)" = "$before" ] || fail "$what: the first job's files changed"
  echo "$what: exit $rc: $(grep '^shardq' "$work/second.err")"
}
refused "--force" "$SHARDQ_BIN" quantize "${args[@]}" --output "$work/out" --force
refused "--resume" "$SHARDQ_BIN" quantize "${args[@]}" --output "$work/out" --resume
refused "mpirun -np 2 --force" timeout -k 10 120 mpirun --oversubscribe -np 2 "$SHARDQ_BIN" quantize "${args[@]}" \
  --output "$work/out" --force
# The plan alone writes nothing, so it does not need the lock.
"$SHARDQ_BIN" quantize "${args[@]}" --output "$work/out" --force --dry-run >/dev/null 2>&1 ||
  fail "--dry-run on a busy output was refused"

kill -CONT "$first"
rc=0; wait "$first" || rc=$?
first=""
[ "$rc" -eq 0 ] || { cat "$work/first.err"; fail "the first job failed (exit $rc) after the refused ones"; }
$py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$work/out" >/dev/null ||
  fail "the first job's checkpoint differs from a run alone"
echo "first job: exit 0, checkpoint equal to a run alone"

# Released at the end: --force over the finished output runs (and needs --force).
"$SHARDQ_BIN" quantize "${args[@]}" --output "$work/out" >/dev/null 2>"$work/again.err" &&
  fail "a job over a finished output without --force ran"
grep -q "exists and is not empty" "$work/again.err" || { cat "$work/again.err"; fail "the refusal does not say why"; }
"$SHARDQ_BIN" quantize "${args[@]}" --output "$work/out" --force >/dev/null || fail "--force over a finished output"
$py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$work/out" >/dev/null || fail "--force result differs"
echo "--force over the finished output: equal to a run alone"

# Released by SIGKILL: the killed job's output resumes to the same checkpoint.
SHARDQ_FAULT="shard_write:0:3:kill" "$SHARDQ_BIN" quantize "${args[@]}" --output "$work/killed" >/dev/null 2>&1 &&
  fail "the kill did not happen"
"$SHARDQ_BIN" quantize "${args[@]}" --output "$work/killed" --resume >/dev/null || fail "resume after SIGKILL"
$py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$work/killed" >/dev/null || fail "resumed result differs"
echo "resume after SIGKILL: equal to a run alone"

# A filesystem that refuses fcntl locks (Lustre mounted noflock; here an LD_PRELOAD shim):
# the job runs with one warning naming the output, as HDF5 does with such files.
: "${SHARDQ_LOCKS_REFUSED_LIB:?}"
nolock() { ASAN_OPTIONS=verify_asan_link_order=0 LD_PRELOAD="$SHARDQ_LOCKS_REFUSED_LIB" "$@"; }
nolock "$SHARDQ_BIN" quantize "${args[@]}" --output "$work/nolock" >/dev/null 2>"$work/nolock.err" ||
  { cat "$work/nolock.err"; fail "a job on a filesystem without locks failed"; }
[ "$(grep -c "refuses fcntl locks" "$work/nolock.err")" -eq 1 ] || { cat "$work/nolock.err"; fail "expected one lock warning"; }
grep -q "output: '$work/nolock' is on a filesystem that refuses fcntl locks (Function not implemented)" "$work/nolock.err" ||
  { cat "$work/nolock.err"; fail "the warning does not name the output and the cause"; }
$py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$work/nolock" >/dev/null || fail "unlocked result differs"
echo "filesystem without locks: $(grep -o 'warn.*' "$work/nolock.err")"
echo ok
