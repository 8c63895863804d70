#!/usr/bin/env bash
# Resume after SIGKILL (issue: resume and fault tolerance). For one schedule and rank count:
# an uninterrupted reference run; then, for each kill point (during calibration, in the middle
# of quantizing a layer, while a shard file is being written, after a shard's commit record
# but before its rename, after a shard is published but before its journal line, after the
# last layer but before the manifest), a run killed there and a --resume run. Every resumed
# checkpoint must be bit-identical to the reference (every shard file byte for byte, every
# tensor through model.h5, the manifest up to timings), and the resumed run must redo exactly
# the shards that are neither journalled nor published with a matching commit record (those
# it adopts). Prints the work each resume did as a fraction of the whole job.
# usage: resume.sh sequential|pipeline NP
set -euo pipefail
: "${SHARDQ_BIN:?}" "${SHARDQ_SHARED:?}" "${SHARDQ_SOURCE:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
schedule=$1 np=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=/usr/bin/python3
"$SHARDQ_BIN" convert llama2c "$SHARDQ_SHARED/models/stories260K/stories260K.bin" \
  --tokenizer "$SHARDQ_SHARED/models/stories260K/tok512.bin" --output "$work/model" 2>/dev/null
args=(--model "$work/model" --calibration "$SHARDQ_SHARED/data/tinystories/calib.txt" --samples 16 --seq-len 128
      --bits 4 --group-size 32 --schedule "$schedule")

# Under a time limit: after a rank is SIGKILLed, Debian's mpirun (Open MPI 4.1, PMIx 4) can
# deadlock in PMIx_server_finalize with every rank already gone (seen once in CI: mpirun
# waiting in pmix_progress_thread_pause, its ranks zombies), so a run that is meant to die gets
# 60 s, any other 300 s (these runs take seconds).
quantize() {  # quantize NP OUTPUT [more args]: the job under mpirun, JSON progress on stderr
  local n=$1 out=$2 limit=300
  shift 2
  [[ ${SHARDQ_FAULT:-} == *:kill ]] && limit=60
  timeout -k 10 "$limit" mpirun --oversubscribe -np "$n" -x SHARDQ_FAULT -x SHARDQ_HIDDEN_SNAPSHOTS "$SHARDQ_BIN" \
    quantize "${args[@]}" --output "$out" --progress json "$@"
}

# The work event of a run's JSON progress, as "reused fraction".
work_of() { grep '"event":"work"' "$1" | $py -c 'import json,sys; e=json.loads(sys.stdin.read()); print(e["shards_reused"], e["work_fraction"])'; }

# Hidden-state snapshots (coordinator/hidden_snapshot.hpp) off for the kill matrix: with
# them, the sequential resume would not replay committed layers; they get their own case below.
export SHARDQ_FAULT= SHARDQ_HIDDEN_SNAPSHOTS=off
quantize 1 "$work/ref" >/dev/null 2>"$work/ref.err"
read -r reused fraction <<<"$(work_of "$work/ref.err")"
[ "$reused" = 0 ] || { echo "the reference run reused $reused shards"; exit 1; }
# The counted work of an uninterrupted run is the whole job, as work_meter.hpp computes it.
$py -c "import sys; sys.exit(0 if abs($fraction - 1.0) < 1e-9 else 1)" || { echo "uninterrupted work fraction $fraction != 1"; exit 1; }

# Kill points (common/fault.hpp): point:rank:index. rank -1 = whichever rank gets there.
victim=$((np > 1 ? 1 : 0))
if [ "$schedule" = sequential ]; then
  points=("calibrate:$victim:2" "quantize:$victim:2" "shard_write:-1:3" "commit_recorded:-1:2" "shard_closed:-1:1"
          "before_manifest:0:-1")
else
  points=("micro_batch:0:1" "quantize:$victim:3" "shard_write:-1:3" "commit_recorded:-1:2" "shard_closed:-1:1"
          "before_manifest:0:-1")
fi

printf '%-22s %-9s %-16s %-10s %s\n' "killed at" "exit" "shards reused" "adopted" "work on resume / whole job"
for point in "${points[@]}"; do
  out="$work/${point//[:-]/_}"
  rc=0
  SHARDQ_FAULT="$point:kill" quantize "$np" "$out" >/dev/null 2>"$out.kill.err" || rc=$?
  [ "$rc" -ne 0 ] || { echo "$point: the job did not die"; exit 1; }
  [ ! -e "$out/manifest.json" ] || { echo "$point: a manifest claims completion after the kill"; exit 1; }
  # What the journal committed before the kill, and the published shards it lacks whose
  # commit record matches the file; the resume must adopt those and redo exactly the rest.
  read -r committed adoptable <<<"$($py -c "
import hashlib, json, os
lines = open('$out/journal.jsonl').read().split('\n')
journalled = {json.loads(l)['entry']['shard']['index'] for l in lines[1:] if l and 'shard' in json.loads(l)['entry']}
def published(i):
    shard, record = '$out/shard-%05d.h5' % i, '$out/shard-%05d.h5.commit.json' % i
    if i in journalled or not (os.path.exists(shard) and os.path.exists(record)): return False
    return json.load(open(record))['shard']['sha256'] == hashlib.sha256(open(shard, 'rb').read()).hexdigest()
print(','.join(map(str, sorted(journalled))) or '-', ','.join(str(i) for i in range(6) if published(i)) or '-')")"
  "$SHARDQ_BIN" inspect --verify "$out" >/dev/null 2>&1 && { echo "$point: verify accepts an unfinished checkpoint"; exit 1; }
  # Killed right after a publication, the shard the journal lacks must be adoptable.
  [[ $point != shard_closed* || $adoptable != - ]] || { echo "$point: no published shard to adopt"; exit 1; }
  [[ $point != commit_recorded* || ! -e "$out/shard-00002.h5" ]] || { echo "$point: shard 2 published before the kill"; exit 1; }

  quantize "$np" "$out" --resume >/dev/null 2>"$out.resume.err" || { echo "$point: resume failed"; cat "$out.resume.err"; exit 1; }
  read -r redo adopted <<<"$(grep '"event":"resume"' "$out.resume.err" | $py -c '
import json, sys
e = json.loads(sys.stdin.read())
print(",".join(map(str, e["shards_redo"])) or "-", ",".join(map(str, e["shards_adopted"])) or "-")')"
  expect=$($py -c "
skip = set('$committed,$adoptable'.split(','))
print(','.join(str(i) for i in range(6) if str(i) not in skip) or '-')")
  [ "$redo" = "$expect" ] || { echo "$point: resume redid shards [$redo], expected [$expect] (journal [$committed], adoptable [$adoptable])"; exit 1; }
  [ "$adopted" = "$adoptable" ] || { echo "$point: resume adopted [$adopted], expected [$adoptable]"; exit 1; }
  read -r reused fraction <<<"$(work_of "$out.resume.err")"
  printf '%-22s %-9s %-16s %-10s %.3f\n' "$point" "$rc" "$reused/6" "$adopted" "$fraction"

  "$SHARDQ_BIN" inspect --verify "$out" >/dev/null
  ! ls "$out" | grep -q 'commit.json$' || { echo "$point: the finished job left commit records"; ls "$out"; exit 1; }
  for f in "$work/ref"/shard-*.h5; do
    cmp -s "$f" "$out/$(basename "$f")" || { echo "$point: $(basename "$f") differs from the uninterrupted run"; exit 1; }
  done
  $py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$out" >/dev/null ||
    { $py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$out"; exit 1; }
done

if [ "$schedule" = sequential ]; then
  # With a snapshot after every layer, a resume starts at the first missing layer instead of
  # replaying the committed ones: same bits, less work. The finished job removes them.
  out="$work/snapshots"
  SHARDQ_HIDDEN_SNAPSHOTS=every SHARDQ_FAULT="shard_write:-1:3:kill" quantize "$np" "$out" >/dev/null 2>&1 && exit 1
  ls "$out/hidden" | grep -q '^L00003-mb' || { echo "no snapshot entering layer 3"; ls "$out/hidden"; exit 1; }
  ! ls "$out/hidden" | grep -q '^L00002-mb' || { echo "the older snapshot was not removed"; exit 1; }
  SHARDQ_HIDDEN_SNAPSHOTS=every quantize "$np" "$out" --resume >/dev/null 2>"$out.err" || { cat "$out.err"; exit 1; }
  grep -q '"hidden_snapshot_layer":3' "$out.err" || { echo "the resume did not start from the snapshot"; exit 1; }
  read -r reused with_snapshot <<<"$(work_of "$out.err")"
  read -r _ without <<<"$(work_of "$work/shard_write__1_3.resume.err")"
  echo "killed at shard_write:-1:3: work on resume $with_snapshot with hidden-state snapshots, $without without"
  $py -c "import sys; sys.exit(0 if $with_snapshot < $without else 1)" || { echo "snapshots did not save work"; exit 1; }
  [ ! -e "$out/hidden" ] || { echo "the finished job left its snapshots"; exit 1; }
  $py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$out"
fi

# A job killed with NP ranks resumes with another rank count: the shards do not depend on it.
other=$((np > 1 ? 1 : 3))
out="$work/other_np"
SHARDQ_FAULT="shard_write:-1:3:kill" quantize "$np" "$out" >/dev/null 2>&1 || true
quantize "$other" "$out" --resume >/dev/null 2>"$out.err" || { cat "$out.err"; exit 1; }
$py "$SHARDQ_SOURCE/tests/python/compare_checkpoints.py" "$work/ref" "$out"
echo "killed with $np ranks, resumed with $other: identical"
echo ok
