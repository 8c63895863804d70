#!/usr/bin/env bash
# Writes a ~2.1e9-parameter synthetic Llama (f16, ~4.2 GB) with `shardq synth`, then reads
# its headers with `shardq info`, and prints one JSON object:
#   {"params", "bytes", "files", "seconds", "cpu_seconds", "mb_per_s", "peak_rss_mb_synth",
#    "peak_rss_mb_info", "info_seconds"}
# seconds is synth's wall time; cpu_seconds (user + sys) is what to compare on a shared machine.
# Peak RSS comes from /usr/bin/time -v; both must stay in the tens of MB because synth
# streams through a 4 MB buffer and info maps the shards but touches only their headers.
#   SHARDQ_BIN=build/apps/shardq/shardq scripts/bench_synth_2b.sh [WORK_DIR]
# Too slow (and too much disk) for ctest; it is the scale check behind `shardq synth`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SHARDQ_BIN:-build/apps/shardq/shardq}
WORK=$(mktemp -d "${1:-${TMPDIR:-/tmp}}/shardq-synth2b.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# 28 layers x (q 2560^2 + k,v 2x2560x512 + o 2560^2 + 3x2560x6912) + 2x32000x2560 = 2.09e9
/usr/bin/time -v -o "$WORK/synth.time" "$BIN" synth --layers 28 --hidden 2560 --intermediate 6912 --heads 20 \
  --kv-heads 4 --vocab 32000 --seed 1 --dtype f16 --max-shard-bytes 2GB --json --output "$WORK/model" > "$WORK/synth.json"
start=$(date +%s.%N)
/usr/bin/time -v -o "$WORK/info.time" "$BIN" info "$WORK/model" --json > "$WORK/info.json"
end=$(date +%s.%N)
/usr/bin/python3 - "$WORK" "$start" "$end" <<'PY'
import json, re, sys
work, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
def field(path, name):
    return float(re.search(re.escape(name) + r": ([\d.]+)", open(path).read()).group(1))
def rss_mb(path):
    return field(path, "Maximum resident set size (kbytes)") / 1024
synth = json.load(open(f"{work}/synth.json"))
info = json.load(open(f"{work}/info.json"))
assert info["params"] == synth["params"] and info["bytes"] == synth["bytes"], (info["params"], synth["params"])
print(json.dumps({"params": synth["params"], "bytes": synth["bytes"], "files": len(synth["files"]),
                  "seconds": round(synth["seconds"], 2),
                  "cpu_seconds": round(field(f"{work}/synth.time", "User time (seconds)")
                                       + field(f"{work}/synth.time", "System time (seconds)"), 2),
                  "mb_per_s": round(synth["bytes"] / 1e6 / synth["seconds"], 1),
                  "peak_rss_mb_synth": round(rss_mb(f"{work}/synth.time"), 1),
                  "peak_rss_mb_info": round(rss_mb(f"{work}/info.time"), 1),
                  "info_seconds": round(end - start, 3)}))
PY
