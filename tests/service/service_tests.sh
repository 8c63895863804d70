#!/usr/bin/env bash
# Tests of `shardq serve` over loopback HTTP (issue 8). usage: service_tests.sh CASE
#   submit_eval   stories260K job to succeeded, progress monotone 0 → layers_total, manifest, eval
#   errors        400 (each naming the field), 401, 403 (../ and symlinks), 404, 405, 409, 413,
#                 400 for what is not HTTP, 414, 431, 503 past --max-connections, absolute-form targets
#   concurrent    200 GETs over 20 keep-alive connections answered while a job runs, and
#                 while submissions stall on the filesystem
#   restart       kill -9 of the service: running job re-attached, queued job starts,
#                 a job whose processes died meanwhile ends failed with the reason, a job
#                 launched but not recorded when the service died is found, not relaunched
#   cancel        DELETE stops a running job within 5 s and its processes are gone
#   slurm         a job through a real one-node SLURM (slurm_local.sh) to succeeded; one
#                 queued by sbatch just before the service died is found by name, not resubmitted,
#                 also when squeue fails at the restart (the job waits, running, until it answers)
#                 or when the service's sbatch is still submitting it
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/shardq-service.XXXXXX)
source "$here/lib.sh"
cleanup() {
  stop_server; [ -n "${SLURM_STOP:-}" ] && $SLURM_STOP
  if [ -n "${CLI_PID:-}" ]; then kill -CONT "$CLI_PID" 2>/dev/null; kill "$CLI_PID" 2>/dev/null; fi
  rm -rf "$work"
}
trap cleanup EXIT

case_submit_eval() {
  prepare_stories
  start_server --ranks 2
  local id body
  id=$(submit "$(stories_spec "$work/data/out")")
  # Poll: layers_done never decreases and stays within layers_total.
  local last=0 total=0 state=queued
  for _ in $(seq 600); do
    api GET "/v1/jobs/$id"; body=$BODY
    state=$(jget "$body" 'j["state"]')
    read -r done total < <(jget "$body" '"%d %d" % (j["progress"]["layers_done"], j["progress"]["layers_total"])')
    [ "$done" -ge "$last" ] || fail "progress went back from $last to $done"
    [ "$total" -eq 0 ] || [ "$done" -le "$total" ] || fail "layers_done $done > layers_total $total"
    last=$done
    case $state in succeeded) break;; failed|cancelled) fail "job ended $state: $body";; esac
    sleep 0.1
  done
  [ "$state" = succeeded ] || fail "job not done: $body"
  # Open MPI made its session tree under the job's own base (and removed it when done).
  [ -d "$work/state/jobs/$id/mpi" ] || fail "no Open MPI session base in the job directory"
  [ -z "$(ls -A "$work/state/jobs/$id/mpi")" ] || fail "Open MPI left $(ls -A "$work/state/jobs/$id/mpi") behind"
  local n_layers
  n_layers=$(jget "$(cat "$work/data/stories/config.json")" 'j["num_hidden_layers"]')
  [ "$total" -eq "$n_layers" ] && [ "$last" -eq "$n_layers" ] || fail "progress ended at $last/$total, model has $n_layers layers"
  # The progress file the service read holds 0 .. n_layers of the quantize phase in order.
  "$PY" - "$work/state/jobs/$id/progress.jsonl" "$n_layers" <<'PYEOF' || fail "progress file"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
q = [l["layers_done"] for l in lines if l.get("event") == "progress" and l["phase"] == "quantize"]
assert q == list(range(int(sys.argv[2]) + 1)), q
assert lines[-1]["event"] == "done"
PYEOF
  [ "$(jget "$body" 'j["launcher"]["kind"]')" = local ] || fail "launcher info: $body"
  [ "$(jget "$body" 'j["launcher"]["ranks"]')" = 2 ] || fail "ranks: $body"
  # The manifest over REST is the file the job wrote.
  api GET "/v1/jobs/$id/manifest"; printf '%s' "$BODY" > "$work/manifest.json"
  [ "$STATUS" = 200 ] || fail "manifest: $STATUS"
  cmp -s "$work/manifest.json" "$work/data/out/manifest.json" || fail "manifest differs from the checkpoint's"
  [ "$(jget "$(cat "$work/manifest.json")" 'j["format"]')" = shardq-manifest ] || fail "manifest format"
  api GET "/v1/jobs/$id/log?bytes=100000"; printf '%s' "$BODY" > "$work/log.txt"
  grep -q '"event":"done"' "$work/log.txt" || fail "job log lacks the done event"
  # The listing has it; the metrics count it and its layers.
  [ "$(jget "$(apib GET /v1/jobs)" '[x["state"] for x in j["jobs"] if x["id"]=="'$id'"][0]')" = succeeded ] || fail "listing"
  local metrics
  api GET /metrics; metrics=$BODY
  grep -q '^shardq_jobs{state="succeeded"} 1$' <<<"$metrics" || fail "metrics jobs: $metrics"
  grep -q "^shardq_layers_quantized $n_layers\$" <<<"$metrics" || fail "metrics layers: $metrics"
  grep -q '^shardq_http_requests_total{method="GET",route="/v1/jobs/{id}",code="200"} [1-9]' <<<"$metrics" || fail "metrics requests"
  grep -q '^shardq_http_request_duration_seconds_count{route="/v1/jobs/{id}"} [1-9]' <<<"$metrics" || fail "metrics latency"
  # And the checkpoint evaluates.
  local eval
  head -c 30000 "$SHARDQ_SHARED/data/tinystories/eval.txt" > "$work/eval.txt"
  eval=$("$SHARDQ_BIN" eval --model "$work/data/out" --ref "$work/data/stories" --text "$work/eval.txt" \
    --seq-len 128 --json) || fail "eval"
  "$PY" -c 'import json,sys,math; e=json.loads(sys.argv[1]); assert math.isfinite(e["ppl"]) and e["ppl"] > 1 and e["kl"] >= 0, e; print("eval", e)' "$eval" \
    || fail "eval output $eval"
}

case_errors() {
  prepare_stories
  start_server --max-body-bytes 4096 --read-timeout 2 --max-connections 8
  local body spec
  spec=$(stories_spec "$work/data/out")
  # 400: each names the field.
  expect_error() {  # expect_error STATUS FIELD BODY [query]
    api POST "/v1/jobs${4:-}" -H 'Content-Type: application/json' --data-binary "$3"; body=$BODY
    [ "$STATUS" = "$1" ] || fail "wanted $1 for $3, got $STATUS: $body"
    [ "$(jget "$body" 'j["error"]["field"]')" = "$2" ] || fail "wanted field $2, got $body"
    [ -n "$(jget "$body" 'j["error"]["code"]')" ] && [ -n "$(jget "$body" 'j["error"]["message"]')" ] || fail "error shape $body"
  }
  expect_error 400 body '{"model": '
  expect_error 400 colour "$("$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); j["colour"]=1; print(json.dumps(j))' "$spec")"
  expect_error 400 quant.group "$("$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); j["quant"]["group"]=1; print(json.dumps(j))' "$spec")"
  expect_error 400 quant.bits "$("$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); j["quant"]["bits"]=5; print(json.dumps(j))' "$spec")"
  expect_error 400 calibration.samples "$("$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); j["calibration"]["samples"]=-3; print(json.dumps(j))' "$spec")"
  expect_error 400 model "$("$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); j["model"]=sys.argv[2]; print(json.dumps(j))' "$spec" "$work/data/nothing")"
  # Integers past the field's type are refused, not wrapped (2^32 + 4 is not bits 4).
  expect_error 400 quant.bits "$("$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); j["quant"]["bits"]=2**32+4; print(json.dumps(j))' "$spec")"
  # Nesting no spec has is refused at the parse (printing or copying it recursed once per level).
  expect_error 400 body "{\"model\": $(printf '[%.0s' {1..2000})$(printf ']%.0s' {1..2000})}"
  grep -q 'nested deeper than' <<<"$body" || fail "deep nesting: $body"
  # 403: outside the data roots, by absolute path, ../ and symlinks (dir and file).
  mkdir -p "$work/outside" && cp -r "$work/data/stories" "$work/outside/model"
  ln -s "$work/outside" "$work/data/link"
  ln -s "$work/outside/model/config.json" "$work/data/calib_link.txt"
  with() { "$PY" -c 'import json,sys; j=json.loads(sys.argv[1]); exec(sys.argv[2]); print(json.dumps(j))' "$spec" "$1"; }
  expect_error 403 model "$(with "j['model']='$work/outside/model'")"
  expect_error 403 model "$(with "j['model']='$work/data/../outside/model'")"
  expect_error 403 model "$(with "j['model']='../outside/model'")"
  expect_error 403 model "$(with "j['model']='$work/data/link/model'")"
  expect_error 403 output "$(with "j['output']='$work/data/link/out'")"
  expect_error 403 output "$(with "j['output']='/tmp/elsewhere'")"
  expect_error 403 calibration.path "$(with "j['calibration']['path']='$work/data/calib_link.txt'")"
  # What the job itself would refuse is refused at submit, not accepted and failed when it
  # runs: GPTQ without calibration text, a budget the bit options cannot reach, a model whose
  # config or weights are broken.
  expect_error 400 calibration.path "$(with "del j['calibration']['path']")"
  expect_error 400 precision.target_bpw "$(with "j['precision']={'policy':'lim','target_bpw':1.0,'bit_options':[3,4]}")"
  cp -r "$work/data/stories" "$work/data/no_config_key"
  "$PY" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c["hidden_size"]; json.dump(c, open(p, "w"))' \
    "$work/data/no_config_key/config.json"
  expect_error 400 model "$(with "j['model']='$work/data/no_config_key'")"
  grep -q "missing key 'hidden_size'" <<<"$body" && [ "$(jget "$body" 'j["error"]["code"]')" = invalid_model ] || fail "config: $body"
  cp -r "$work/data/stories" "$work/data/cut_weights"
  truncate -s 4000 "$work/data/cut_weights/model.safetensors"
  expect_error 400 model "$(with "j['model']='$work/data/cut_weights'")"
  grep -q "model.safetensors" <<<"$body" || fail "truncated weights: $body"
  # A FIFO in the weights' place is refused, not opened (which would wait for a writer forever).
  cp -r "$work/data/stories" "$work/data/fifo_weights"
  rm "$work/data/fifo_weights/model.safetensors" && mkfifo "$work/data/fifo_weights/model.safetensors"
  expect_error 400 model "$(with "j['model']='$work/data/fifo_weights'")"
  grep -q "model.safetensors' is not a regular file" <<<"$body" || fail "FIFO weights: $body"
  # Relative paths are taken inside the first data root and accepted.
  api POST /v1/jobs --data-binary "$(with "j['model']='stories'; j['output']='rel_out'; j['calibration']['path']='calib.txt'")"; body=$BODY
  [ "$STATUS" = 201 ] || fail "relative paths: $STATUS $body"
  local rel_id; rel_id=$(jget "$body" 'j["id"]')
  # 409: a second active job on the same output; once done, a non-empty output needs ?force=true.
  expect_error 409 output "$(with "j['output']='rel_out'")"
  # ... also when spelled with a trailing slash, and for an output inside it or holding it.
  expect_error 409 output "$(with "j['output']='rel_out/'")"
  expect_error 409 output "$(with "j['output']='rel_out/sub'")"
  # ... and, even with ?force=true, an output that a job this service did not launch is
  # writing (a user's own shardq quantize, stopped here while it holds the output's lock).
  prepare_slow
  "$SHARDQ_BIN" quantize --model "$work/data/slow" --output "$work/data/cli_out" --calibration "$work/data/slow_tokens.bin" \
    --calibration-format tokens --samples 16 --seq-len 256 --group-size 64 --quiet >/dev/null 2>&1 &
  CLI_PID=$!
  for _ in $(seq 600); do grep -q '"pid":' "$work/data/cli_out/.shardq-lock" 2>/dev/null && break; sleep 0.05; done
  kill -STOP "$CLI_PID"
  expect_error 409 output "$(with "j['output']='cli_out'")" '?force=true'
  grep -q "being written by another shardq job (pid $CLI_PID on host " <<<"$body" || fail "foreign writer: $body"
  kill -CONT "$CLI_PID"
  wait "$CLI_PID" || fail "the CLI job failed after the refused submit"
  CLI_PID=
  wait_state "$rel_id" succeeded 120
  expect_error 400 output "$(with "j['output']='rel_out'")"
  api POST '/v1/jobs?force=true' --data-binary "$(with "j['output']='rel_out'")"; body=$BODY
  [ "$STATUS" = 201 ] || fail "force: $STATUS $body"
  local force_id; force_id=$(jget "$body" 'j["id"]')
  [ "$(jget "$(apib GET "/v1/jobs/$force_id")" 'j["force"]')" = True ] || fail "force flag"
  # Until it succeeds, the manifest in its output is the earlier job's: not served as its own.
  api GET "/v1/jobs/$force_id/manifest"; body=$BODY
  [ "$STATUS" = 404 ] && [ "$(jget "$body" 'j["error"]["code"]')" = not_ready ] || fail "unfinished job's manifest: $STATUS $body"
  # The bearer scheme is case-insensitive (RFC 7235).
  STATUS=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: bearer $TOKEN" "$BASE/v1/jobs")
  [ "$STATUS" = 200 ] || fail "lower-case bearer answered $STATUS"
  # 401: no token, a wrong token, a wrong scheme, a prefix of the right token.
  for auth in "" "Authorization: Bearer wrong" "Authorization: Basic $TOKEN" "Authorization: Bearer ${TOKEN:0:6}"; do
    STATUS=$(curl -s -o "$work/r" -w '%{http_code}' ${auth:+-H "$auth"} "$BASE/v1/jobs")
    [ "$STATUS" = 401 ] || fail "auth '$auth' answered $STATUS"
    [ "$(jget "$(cat "$work/r")" 'j["error"]["code"]')" = unauthorized ] || fail "401 body"
  done
  STATUS=$(curl -s -o /dev/null -w '%{http_code}' "$BASE/healthz")
  [ "$STATUS" = 200 ] || fail "healthz without a token: $STATUS"
  # 404 unknown ids and routes, 405 wrong methods.
  api GET /v1/jobs/0123456789abcdef; [ "$STATUS" = 404 ] || fail "unknown id $STATUS"
  api GET /v1/jobs/..%2F..%2Fetc; [ "$STATUS" = 404 ] || fail "odd id $STATUS"
  api DELETE /v1/jobs/0123456789abcdef; [ "$STATUS" = 404 ] || fail "delete unknown id $STATUS"
  api GET /v1/nothing; [ "$STATUS" = 404 ] || fail "unknown route $STATUS"
  api PUT /v1/jobs; [ "$STATUS" = 405 ] || fail "PUT /v1/jobs $STATUS"
  api POST "/v1/jobs/$rel_id/manifest"; [ "$STATUS" = 405 ] || fail "POST manifest $STATUS"
  api POST "/v1/jobs/$rel_id/resume"; [ "$STATUS" = 409 ] || fail "resume of a succeeded job $STATUS"
  # 413: a body over --max-body-bytes, and the server still answers afterwards.
  head -c 10000 /dev/zero | tr '\0' ' ' > "$work/big"
  api POST /v1/jobs --data-binary @"$work/big"
  [ "$STATUS" = 413 ] || fail "oversized body answered $STATUS"
  api GET /v1/jobs; [ "$STATUS" = 200 ] || fail "after 413: $STATUS"
  # A client that sends half a request is dropped after the read timeout (2 s here).
  "$PY" - "$PORT" <<'PYEOF' || fail "slow client"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(20)
s.sendall(b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n")
assert s.recv(100) == b"", "the server answered a half request"
PYEOF
  api GET /healthz; [ "$STATUS" = 200 ] || fail "after a slow client: $STATUS"
  # A body is read only for a request that may send one: without the token the answer is 401
  # before any body byte; with it, a client waiting on "Expect: 100-continue" is told to go on.
  "$PY" - "$PORT" "$TOKEN" <<'PYEOF' || fail "body before auth / 100-continue"
import socket, sys
port, token = int(sys.argv[1]), sys.argv[2]
def ask(headers):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + headers + "\r\n").encode())
    return s, s.recv(4096)
s, first = ask("Content-Length: 3000\r\n")
assert first.startswith(b"HTTP/1.1 401"), first[:60]
body = b'{"model": 5}'
s, first = ask(f"Authorization: Bearer {token}\r\nExpect: 100-continue\r\nContent-Length: {len(body)}\r\n")
assert first.startswith(b"HTTP/1.1 100"), first[:60]
s.sendall(body)
reply = s.recv(4096)
assert reply.startswith(b"HTTP/1.1 400") and b'"field":"model"' in reply, reply[:300]
PYEOF
  # Methods HTTP does not define are counted as "other", not as new metric series.
  "$PY" - "$PORT" <<'PYEOF' || fail "invented method"
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"M123 /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert s.recv(100).startswith(b"HTTP/1.1 405"), "M123 was not refused"
PYEOF
  # What is not HTTP/1.1 gets one answer, 400 (414 for a request line, 431 for a header over
  # 16 KiB), then the close;
  # past --max-connections a client gets 503, and once connections close it is served again.
  "$PY" - "$PORT" <<'PYEOF' || fail "garbage, header limit or connection cap"
import socket, sys, time
port = int(sys.argv[1])
def ask(data):
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(10)
    s.sendall(data)
    reply = b""
    while chunk := s.recv(4096):
        reply += chunk
    return reply
reply = ask(b"HELLO THERE\r\n\r\n")
assert reply.startswith(b"HTTP/1.1 400") and b'"code":"bad_request"' in reply, reply[:300]
reply = ask(b"GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert reply.startswith(b"HTTP/1.1 200"), "absolute-form target: " + repr(reply[:300])
reply = ask(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n")
assert reply.startswith(b"HTTP/1.1 431"), reply[:300]
reply = ask(b"GET /healthz?" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
assert reply.startswith(b"HTTP/1.1 414") and b'"code":"uri_too_long"' in reply, reply[:300]
idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
time.sleep(0.5)
reply = ask(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
assert reply.startswith(b"HTTP/1.1 503") and b"too_many_connections" in reply, reply[:300]
for s in idle:
    s.close()
for _ in range(50):
    time.sleep(0.1)
    if ask(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200"):
        break
else:
    raise AssertionError("still refused after the idle connections closed")
PYEOF
  api GET /metrics
  grep -q 'method="M123"' <<<"$BODY" && fail "an invented method became a label"
  grep -q '^shardq_http_requests_total{method="other",route="/healthz",code="405"} 1$' <<<"$BODY" || fail "metrics: $BODY"
  wait_state "$force_id" succeeded 120
  api GET "/v1/jobs/$force_id/manifest"; [ "$STATUS" = 200 ] || fail "manifest of the forced job: $STATUS"
  # The manifest is read only as a regular file in the output, never through a symlink.
  mv "$work/data/rel_out/manifest.json" "$work/manifest.saved"
  ln -s /etc/hostname "$work/data/rel_out/manifest.json"
  api GET "/v1/jobs/$force_id/manifest"; body=$BODY
  [ "$STATUS" = 404 ] || fail "manifest through a symlink: $STATUS $body"
}

case_concurrent() {
  prepare_slow
  start_server
  local id
  id=$(submit "$(slow_spec "$work/data/out")")
  wait_state "$id" running 30
  "$PY" - "$PORT" "$TOKEN" "$id" <<'PYEOF' || fail "concurrent GETs"
import http.client, json, sys, threading
port, token, job = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ok, errors, lock = [0], [], threading.Lock()
def client(k):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for i in range(10):
        path = ["/v1/jobs/" + job, "/v1/jobs", "/healthz", "/metrics"][(k + i) % 4]
        c.request("GET", path, headers={"Authorization": "Bearer " + token})
        r = c.getresponse()
        body = r.read()
        with lock:
            if r.status == 200: ok[0] += 1
            else: errors.append((path, r.status, body[:200]))
    c.close()
threads = [threading.Thread(target=client, args=(k,)) for k in range(20)]
for t in threads: t.start()
for t in threads: t.join()
assert not errors and ok[0] == 200, (ok[0], errors[:5])
print("200 of 200 answered over 20 connections")
PYEOF
  [ "$(job_state "$id")" = running ] || fail "the job was supposed to be still running during the GETs"
  api DELETE "/v1/jobs/$id"
  wait_state "$id" cancelled 10
  # Submissions stalled on the filesystem (each spec check sleeps 10 s: fault "stall") as
  # many as the server has I/O threads, and more: the other routes are answered meanwhile.
  stop_server
  SHARDQ_FAULT=check_plan:0:-1:stall start_server --threads 2
  local pids=() k
  for k in 1 2 3; do
    curl -s -o "$work/stalled$k.json" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
      --data-binary "$(slow_spec "$work/data/stalled$k")" "$BASE/v1/jobs" > "$work/stalled$k.status" &
    pids+=($!)
  done
  sleep 1  # the three requests are read and their checks started or queued
  for path in /healthz /v1/jobs "/v1/jobs/$id" /metrics; do
    api GET "$path"; [ "$STATUS" = 200 ] || fail "GET $path while submissions stall: $STATUS"
  done
  for k in 0 1 2; do kill -0 "${pids[$k]}" 2>/dev/null || fail "submission $((k + 1)) ended before the GETs were answered"; done
  echo "4 GETs answered while 3 submissions stalled"
  for k in 0 1 2; do wait "${pids[$k]}"; done
  for k in 1 2 3; do
    [ "$(cat "$work/stalled$k.status")" = 201 ] || fail "stalled submission $k: $(cat "$work/stalled$k.status") $(cat "$work/stalled$k.json")"
  done
  for k in 1 2 3; do api DELETE "/v1/jobs/$(jget "$(cat "$work/stalled$k.json")" 'j["id"]')"; done
}

case_restart() {
  prepare_stories
  local SLOW_SAMPLES=16
  prepare_slow
  start_server --max-running 1
  local a b c body pid pgid
  a=$(submit "$(slow_spec "$work/data/out_a")")
  b=$(submit "$(stories_spec "$work/data/out_b")")
  wait_state "$a" running 30
  [ "$(job_state "$b")" = queued ] || fail "b should wait for a (max-running 1)"
  sleep 1
  api GET "/v1/jobs/$a"; body=$BODY
  pid=$(jget "$body" 'j["launcher"]["pid"]')
  kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
  kill -0 "$pid" 2>/dev/null || fail "the job died with the service"
  start_server --max-running 1
  api GET "/v1/jobs/$a"; body=$BODY
  [ "$(jget "$body" 'j["state"]')" = running ] || fail "after restart a is $body"
  [ "$(jget "$body" 'j["launcher"]["pid"]')" = "$pid" ] || fail "a was not re-attached to pid $pid"
  [ "$(job_state "$b")" = queued ] || fail "b lost its place"
  wait_state "$a" succeeded 180      # adopted: its wrapper's exit status and manifest decide
  wait_state "$b" succeeded 120      # the queued job starts once a is done
  [ -f "$work/data/out_b/manifest.json" ] || fail "b wrote no manifest"
  # A job whose processes die while the service is down ends failed, with the reason.
  c=$(submit "$(slow_spec "$work/data/out_c")")
  wait_state "$c" running 30
  sleep 1
  pgid=$(jget "$(apib GET "/v1/jobs/$c")" 'j["launcher"]["pgid"]')
  kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
  kill -9 -- "-$pgid"
  # Open MPI's ranks may leave the group, and outlive mpirun for a while: until they are gone
  # rank 0 holds the output lock, and the resume below would rightly answer 409.
  pkill -9 -f "$work/state/jobs/$c/spec.json" || true
  for _ in $(seq 100); do pgrep -g "$pgid" >/dev/null || pgrep -f "$work/state/jobs/$c/spec.json" >/dev/null || break; sleep 0.1; done
  start_server --max-running 1
  wait_state "$c" failed 30
  api GET "/v1/jobs/$c"; body=$BODY
  grep -q "gone\|status" <<<"$(jget "$body" 'j["error"]')" || fail "no reason given: $body"
  echo "c failed with: $(jget "$body" 'j["error"]')"
  # It resumes: queued again with "resume": true, then runs to the end, continuing the
  # journal the killed run started (its committed layers are not redone).
  local had_journal=no
  [ -f "$work/data/out_c/journal.jsonl" ] && had_journal=yes
  # Checked as a submission: without its calibration file it cannot resume (409, the field named).
  mv "$work/data/slow_tokens.bin" "$work/data/slow_tokens.away"
  api POST "/v1/jobs/$c/resume"; body=$BODY
  [ "$STATUS" = 409 ] && [ "$(jget "$body" 'j["error"]["code"]')" = cannot_resume ] &&
    [ "$(jget "$body" 'j["error"]["field"]')" = calibration.path ] || fail "resume without its calibration file: $STATUS $body"
  [ "$(job_state "$c")" = failed ] || fail "a refused resume changed the job"
  echo "resume refused: $(jget "$body" 'j["error"]["message"]')"
  mv "$work/data/slow_tokens.away" "$work/data/slow_tokens.bin"
  api POST "/v1/jobs/$c/resume"; body=$BODY; [ "$STATUS" = 202 ] || fail "resume $STATUS $body"
  [ "$(jget "$(apib GET "/v1/jobs/$c")" 'j["spec"]["resume"]')" = True ] || fail "resume flag not in the spec"
  grep -q '"resume": true' "$work/state/jobs/$c/spec.json" || fail "spec.json not rewritten"
  wait_state "$c" succeeded 180
  api GET "/v1/jobs/$c/manifest"; body=$BODY
  if [ "$had_journal" = yes ]; then
    [ "$(jget "$body" 'j["run"]["resumed"]')" = True ] || fail "the resumed job did not continue its journal"
  fi
  echo "c resumed (journal before: $had_journal): $(jget "$body" 'j["run"]["shards_reused"]') of" \
    "$(jget "$body" 'j["run"]["shards_total"]') shards reused, work fraction $(jget "$body" 'j["run"]["work_fraction"]')"
  # A job killed over an output that holds an earlier job's manifest (force) ends failed: it
  # left no exit status, and that manifest is not its own.
  local d; d=$(submit "$(slow_spec "$work/data/out_b")" '?force=true')
  for _ in $(seq 300); do
    pgid=$(jget "$(apib GET "/v1/jobs/$d")" 'j["launcher"].get("pgid", "")')
    [ -n "$pgid" ] && break; sleep 0.1
  done
  [ -n "$pgid" ] || fail "d never started"
  kill -9 -- "-$pgid"
  wait_state "$d" failed 30
  api GET "/v1/jobs/$d/manifest"; [ "$STATUS" = 404 ] || fail "the killed job's manifest answered $STATUS"

  # The service dies after launching a job and before recording it: restarted, it finds the
  # job's process group and re-attaches instead of starting a second writer on its output.
  stop_server
  crash_after_launch "$(slow_spec "$work/data/out_e")" --max-running 1
  local e=$JOB_ID leader
  leader=$(pgrep -f -o "jobs/$e/spec.json") || fail "the job died with the service"
  start_server --max-running 1
  api GET "/v1/jobs/$e"; body=$BODY
  [ "$(jget "$body" 'j["launcher"].get("pgid")')" = "$(ps -o pgid= -p "$leader" | tr -d ' ')" ] || fail "not re-attached: $body"
  grep -q "\"event\":\"job_launch_found\",\"id\":\"$e\"" "$work/serve.log" || fail "no job_launch_found event"
  wait_state "$e" succeeded 180
  [ "$(jget "$(apib GET "/v1/jobs/$e")" 'j["attempts"]')" = 1 ] || fail "launched twice"
  # ... and when the job has already ended by the restart, its exit status decides; it is not
  # run again (which would find its own output non-empty and fail).
  stop_server
  crash_after_launch "$(stories_spec "$work/data/out_f")" --max-running 1
  local f=$JOB_ID
  for _ in $(seq 600); do [ -s "$work/state/jobs/$f/exit_code" ] && break; sleep 0.1; done
  [ "$(cat "$work/state/jobs/$f/exit_code")" = 0 ] || fail "the unrecorded job did not end with status 0"
  start_server --max-running 1
  wait_state "$f" succeeded 30
  [ "$(jget "$(apib GET "/v1/jobs/$f")" 'j["attempts"]')" = 1 ] || fail "a finished job was launched again"
}

case_cancel() {
  local SLOW_SAMPLES=48
  prepare_slow
  start_server --ranks 2
  local id body pgid t0 t1
  id=$(submit "$(slow_spec "$work/data/out")")
  wait_state "$id" running 30
  # Wait until the ranks run (the plan event is in).
  for _ in $(seq 100); do [ -n "$(jget "$(apib GET "/v1/jobs/$id")" 'j["phase"]')" ] && break; sleep 0.1; done
  api GET "/v1/jobs/$id"; body=$BODY
  pgid=$(jget "$body" 'j["launcher"]["pgid"]')
  pgrep -f "$work/state/jobs/$id/spec.json" >/dev/null || fail "no job processes found before the cancel"
  t0=$(date +%s.%N)
  api DELETE "/v1/jobs/$id"; body=$BODY; [ "$STATUS" = 202 ] || fail "DELETE answered $STATUS $body"
  wait_state "$id" cancelled 5
  t1=$(date +%s.%N)
  echo "cancelled in $(echo "$t1 - $t0" | bc 2>/dev/null || echo "?") s"
  pgrep -g "$pgid" >/dev/null && fail "process group $pgid still has processes: $(pgrep -g "$pgid" -a)"
  pgrep -f "$work/state/jobs/$id/spec.json" >/dev/null && fail "job processes left: $(pgrep -af "$work/state/jobs/$id/spec.json")"
  [ -f "$work/data/out/manifest.json" ] && fail "a cancelled job wrote a manifest"
  api DELETE "/v1/jobs/$id"; [ "$STATUS" = 409 ] || fail "second DELETE answered $STATUS"
  # A queued job is cancelled at once.
  local q1 q2
  q1=$(submit "$(slow_spec "$work/data/out1")")
  q2=$(submit "$(slow_spec "$work/data/out2")")
  api DELETE "/v1/jobs/$q2"; body=$BODY; [ "$STATUS" = 200 ] || fail "DELETE of a queued job: $STATUS"
  [ "$(jget "$body" 'j["state"]')" = cancelled ] || fail "queued job not cancelled: $body"
  api DELETE "/v1/jobs/$q1"
  wait_state "$q1" cancelled 10
  # Its output, never written, now holds a user's files: resume is refused and they stay.
  mkdir -p "$work/data/out2"; echo "mine" > "$work/data/out2/notes.txt"
  api POST "/v1/jobs/$q2/resume"; body=$BODY
  [ "$STATUS" = 409 ] && [ "$(jget "$body" 'j["error"]["field"]')" = resume ] || fail "resume into a foreign directory: $STATUS $body"
  [ "$(cat "$work/data/out2/notes.txt")" = mine ] && [ "$(ls -A "$work/data/out2")" = notes.txt ] || fail "the user's files changed"
  [ "$(job_state "$q2")" = cancelled ] || fail "a refused resume changed the job"
}

case_slurm() {
  source "$here/slurm_local.sh"
  slurm_start "$work/slurm" || { echo "SLURM could not start here; see the output above"; exit 1; }
  SLURM_STOP=slurm_stop
  prepare_stories
  start_server --launcher slurm --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2 \
    --slurm-var TIME_LIMIT=00:10:00
  local id body
  id=$(submit "$(stories_spec "$work/data/out")")
  # kill -9 of the service once the job is in SLURM: the restarted service re-attaches by job id.
  for _ in $(seq 100); do [ "$(jget "$(apib GET "/v1/jobs/$id")" 'j["launcher"].get("slurm_job_id", "")')" != "" ] && break; sleep 0.1; done
  local slurm_id; slurm_id=$(jget "$(apib GET "/v1/jobs/$id")" 'j["launcher"]["slurm_job_id"]')
  kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
  start_server --launcher slurm --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2
  wait_state "$id" succeeded 180
  api GET "/v1/jobs/$id"; body=$BODY
  [ "$(jget "$body" 'j["launcher"]["slurm_job_id"]')" = "$slurm_id" ] || fail "submitted twice"
  echo "slurm job: $(jget "$body" 'j["launcher"]')"
  [ "$(jget "$body" 'j["launcher"]["kind"]')" = slurm ] || fail "launcher $body"
  grep -q "^#SBATCH --ntasks=2$" "$work/state/jobs/$id/job.sbatch" || fail "rendered script"
  grep -Eq '\{\{[A-Z0-9_]+\}\}' "$work/state/jobs/$id/job.sbatch" && fail "unrendered variables left"
  [ "$(jget "$body" 'j["progress"]["layers_done"]')" = "$(jget "$body" 'j["progress"]["layers_total"]')" ] || fail "progress $body"
  api GET "/v1/jobs/$id/manifest"; [ "$STATUS" = 200 ] || fail "manifest $STATUS"
  # The service dies between sbatch and recording the SLURM job id: restarted, it finds the
  # job in the queue by its name and follows it; it does not submit it again.
  stop_server
  local SLOW_SAMPLES=16
  prepare_slow
  crash_after_launch "$(slow_spec "$work/data/out2")" --launcher slurm \
    --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2 --slurm-var TIME_LIMIT=00:10:00
  id=$JOB_ID
  slurm_id=$(squeue -h --name "shardq-$id" -o %i)
  [ -n "$slurm_id" ] || fail "sbatch had not queued the job"
  start_server --launcher slurm --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2
  wait_state "$id" succeeded 180
  api GET "/v1/jobs/$id"; body=$BODY
  [ "$(jget "$body" 'j["launcher"]["slurm_job_id"]')" = "$slurm_id" ] && [ "$(jget "$body" 'j["attempts"]')" = 1 ] \
    || fail "not the queued SLURM job $slurm_id: $body"
  [ "$(scontrol show job -o | grep -c "JobName=shardq-$id ")" = 1 ] || fail "submitted twice: $(scontrol show job -o)"
  # The same crash, and the restarted service cannot reach the controller (its squeue fails):
  # the job stays running with the lookup error shown, is neither failed nor resubmitted,
  # and is found once squeue answers again.
  stop_server
  SLOW_SAMPLES=32
  crash_after_launch "$(slow_spec "$work/data/out3")" --launcher slurm \
    --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2 --slurm-var TIME_LIMIT=00:10:00
  id=$JOB_ID
  slurm_id=$(squeue -h --name "shardq-$id" -o %i)
  [ -n "$slurm_id" ] || fail "sbatch had not queued the job"
  mkdir -p "$work/bin"
  printf '#!/bin/sh\n[ -e "%s" ] && { echo "squeue: error: Unable to contact slurm controller (connect failure)" >&2; exit 1; }\nexec %s "$@"\n' \
    "$work/controller_down" "$(command -v squeue)" > "$work/bin/squeue"
  chmod +x "$work/bin/squeue"
  touch "$work/controller_down"
  PATH="$work/bin:$PATH" start_server --launcher slurm --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2
  local seen=""
  for _ in $(seq 50); do
    api GET "/v1/jobs/$id"; body=$BODY
    [ "$(jget "$body" 'j["state"]')" = running ] || fail "with squeue failing the job left running: $body"
    seen=$(jget "$body" 'j["launcher"].get("lookup_error", "")')
    [ -n "$seen" ] && break
    sleep 0.1
  done
  [[ $seen == *"Unable to contact slurm controller"* ]] || fail "the lookup error is not shown: $body"
  sleep 2  # several supervisor passes with squeue still failing
  api GET "/v1/jobs/$id"; body=$BODY
  [ "$(jget "$body" 'j["state"]')" = running ] && [ "$(jget "$body" 'j["attempts"]')" = 1 ] ||
    fail "with squeue failing: $body"
  [ "$(grep -c "\"job_launch_unresolved\".*\"$id\"" "$work/serve.log")" = 1 ] || fail "expected one job_launch_unresolved line"
  squeue -h -j "$slurm_id" -o %T | grep -q . || fail "SLURM job $slurm_id ended before the controller came back"
  echo "controller down: running, lookup_error: $seen"
  rm "$work/controller_down"
  wait_state "$id" succeeded 180
  api GET "/v1/jobs/$id"; body=$BODY
  [ "$(jget "$body" 'j["launcher"]["slurm_job_id"]')" = "$slurm_id" ] && [ "$(jget "$body" 'j["attempts"]')" = 1 ] \
    || fail "not the queued SLURM job $slurm_id: $body"
  [ "$(jget "$body" '"lookup_error" in j["launcher"]')" = False ] || fail "the lookup error stayed: $body"
  [ "$(scontrol show job -o | grep -c "JobName=shardq-$id ")" = 1 ] || fail "submitted twice: $(scontrol show job -o)"
  # The service dies while its sbatch still waits on the controller (an sbatch that holds
  # until a file goes): the restarted service finds nothing queued yet, and waits for that
  # sbatch instead of submitting again.
  stop_server
  printf '#!/bin/sh\nwhile [ -e "%s" ]; do sleep 0.1; done\nexec %s "$@"\n' "$work/sbatch_hold" "$(command -v sbatch)" \
    > "$work/bin/sbatch"
  chmod +x "$work/bin/sbatch"
  touch "$work/sbatch_hold"
  PATH="$work/bin:$PATH" start_server --launcher slurm --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" \
    --ranks 2 --slurm-var TIME_LIMIT=00:10:00
  id=$(submit "$(slow_spec "$work/data/out4")")
  local held=""
  for _ in $(seq 100); do held=$(pgrep -f -- "--job-name=shardq-$id") && break; sleep 0.1; done
  [ -n "$held" ] || fail "the held sbatch did not start"
  kill -9 "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
  start_server --launcher slurm --slurm-template "$SHARDQ_SOURCE/slurm/single_node.sbatch" --ranks 2
  sleep 2  # several supervisor passes with the sbatch still held
  api GET "/v1/jobs/$id"; body=$BODY
  [ "$(jget "$body" 'j["state"]')" = running ] && [ "$(jget "$body" 'j["attempts"]')" = 1 ] ||
    fail "with its sbatch still running: $body"
  seen=$(jget "$body" 'j["launcher"].get("lookup_error", "")')
  [[ $seen == *"sbatch that submits it"*"is still running"* ]] || fail "the lookup error does not name the sbatch: $body"
  [ -z "$(squeue -h --name "shardq-$id" -o %i)" ] || fail "the held sbatch queued the job"
  echo "sbatch still running: $seen"
  rm "$work/sbatch_hold"
  wait_state "$id" succeeded 180
  [ "$(scontrol show job -o | grep -c "JobName=shardq-$id ")" = 1 ] || fail "submitted twice: $(scontrol show job -o)"
  api GET "/v1/jobs/$id"; body=$BODY
  echo "found after the sbatch ended: $(jget "$body" 'j["launcher"]')"
}

"case_$1"
echo "ok"
