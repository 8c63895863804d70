# Helpers for the service tests: a real `shardq serve` on a free loopback port, curl calls
# with the bearer token, JSON field reads with /usr/bin/python3, bounded waits.
# Sourced by service_tests.sh; expects $work (a temporary directory) to be set.
: "${SHARDQ_BIN:?}" "${SHARDQ_SHARED:?}" "${SHARDQ_SOURCE:?}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
PY=/usr/bin/python3
TOKEN=tok-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')

fail() { echo "FAIL: $*" >&2; [ -f "$work/serve.log" ] && tail -n 30 "$work/serve.log" >&2; exit 1; }

# start_server [extra serve flags...]: state in $work/state, data root $work/data.
start_server() {
  mkdir -p "$work/state" "$work/data"
  printf '# test token\n%s\n' "$TOKEN" > "$work/tokens"
  rm -f "$work/port"
  # Without the test's own session base the local launcher gives each job one in its
  # directory (jobs/ID/mpi), which case_submit_eval checks.
  env -u OMPI_MCA_orte_tmpdir_base "$SHARDQ_BIN" serve --listen 127.0.0.1:0 --port-file "$work/port" --state-dir "$work/state" \
    --data-root "$work/data" --token-file "$work/tokens" "$@" >>"$work/serve.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 100); do [ -s "$work/port" ] && break; sleep 0.1; done
  [ -s "$work/port" ] || fail "server did not start"
  PORT=$(cat "$work/port")
  BASE="http://127.0.0.1:$PORT"
}

# crash_after_launch SPEC [serve flags...]: a service that dies (fault point "launched",
# SIGKILL) right after launching the one job it is given, before it records the launch. Sets
# JOB_ID and checks that the record shows a launch begun and none recorded.
crash_after_launch() {
  local spec=$1 dir; shift
  SHARDQ_FAULT=launched:0:-1:kill start_server "$@"
  # The reply may be lost: the supervisor can launch and die before the 201 is written.
  api POST /v1/jobs -H 'Content-Type: application/json' --data-binary "$spec" || true
  for _ in $(seq 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$SERVER_PID" 2>/dev/null && fail "the service did not die at the fault point"
  wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
  dir=$(ls -td "$work"/state/jobs/*/ | head -n 1)
  JOB_ID=$(basename "$dir")
  "$PY" - "$dir/job.json" <<'PYEOF' || fail "record after the crash: $(cat "$dir/job.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["state"] == "running" and j["attempts"] == 1, j
assert "launch_started_at" in j["launcher_info"] and not {"pid", "slurm_job_id"} & set(j["launcher_info"]), j
PYEOF
}

stop_server() {
  if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=
}

# api METHOD PATH [curl args...]: sets $STATUS and $BODY (call it outside $(...)).
api() {
  local method=$1 path=$2; shift 2
  local out
  out=$(curl -s -S -H 'Expect:' -X "$method" -H "Authorization: Bearer $TOKEN" -w '\n%{http_code}' "$@" "$BASE$path")
  STATUS=${out##*$'\n'}
  BODY=${out%$'\n'*}
}
# apib METHOD PATH [curl args...]: prints the body (for use inside $(...)).
apib() { api "$@"; printf '%s' "$BODY"; }

# jget JSON EXPR: evaluates a python expression over the parsed JSON `j`.
jget() { "$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2"; }

# submit SPEC_JSON [query]: prints the job id.
submit() {
  local body
  api POST "/v1/jobs${2:-}" -H 'Content-Type: application/json' --data-binary "$1"; body=$BODY
  [ "$STATUS" = 201 ] || fail "submit answered $STATUS: $body"
  jget "$body" 'j["id"]'
}

job_state() { jget "$(apib GET "/v1/jobs/$1")" 'j["state"]'; }

# wait_state ID STATE SECONDS: polls every 0.2 s.
wait_state() {
  local id=$1 want=$2 n=$(( $3 * 5 )) s
  for _ in $(seq "$n"); do
    s=$(job_state "$id")
    [ "$s" = "$want" ] && return 0
    case "$s" in succeeded|failed|cancelled) [ "$s" != "$want" ] && fail "job $id ended $s, wanted $want: $(apib GET "/v1/jobs/$id")";; esac
    sleep 0.2
  done
  fail "job $id not $want after $3 s: $(apib GET "/v1/jobs/$id")"
}

# The stories260K model converted into the data root (what every test's jobs quantize).
prepare_stories() {
  mkdir -p "$work/data"
  "$SHARDQ_BIN" convert llama2c "$SHARDQ_SHARED/models/stories260K/stories260K.bin" \
    --tokenizer "$SHARDQ_SHARED/models/stories260K/tok512.bin" --output "$work/data/stories" >/dev/null 2>&1 \
    || fail "convert stories260K"
  cp "$SHARDQ_SHARED/data/tinystories/calib.txt" "$work/data/calib.txt"
}

stories_spec() {  # stories_spec OUTPUT
  printf '{"model": "%s", "output": "%s", "calibration": {"path": "%s", "samples": 16, "seq_len": 128}, "quant": {"bits": 4, "group_size": 32}}' \
    "$work/data/stories" "$1" "$work/data/calib.txt"
}

# A synthetic model large enough that quantizing it takes several seconds here.
prepare_slow() {
  mkdir -p "$work/data"
  "$SHARDQ_BIN" synth --layers ${SLOW_LAYERS:-8} --hidden ${SLOW_HIDDEN:-384} --intermediate ${SLOW_INTER:-1024} --heads 6 --kv-heads 2 \
    --vocab 512 --seed 7 --dtype f16 --output "$work/data/slow" >/dev/null || fail "synth"
  "$PY" -c "import numpy as np; np.random.default_rng(1).integers(0, 512, 40000).astype('<u4').tofile('$work/data/slow_tokens.bin')"
}

slow_spec() {  # slow_spec OUTPUT
  printf '{"model": "%s", "output": "%s", "calibration": {"path": "%s", "format": "tokens", "samples": %d, "seq_len": 256}, "quant": {"bits": 4, "group_size": 64}}' \
    "$work/data/slow" "$1" "$work/data/slow_tokens.bin" "${SLOW_SAMPLES:-32}"
}
