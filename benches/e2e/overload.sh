#!/usr/bin/env bash
# overload.sh - the memory limiter under overload: how much still gets in, how high the
# resident set goes, and how soon refusals stop once the load stops.
# Writes benches/results/<RUN_NAME>/:
#   table.md    one row per step: limit, soft limit, idle and peak RSS, requests sent /
#               accepted / refused by reason, spans acknowledged per second, and the time from
#               the end of the load to the first accepted request
#   raw/        overload.toml, per step: loadgen JSON, rss.tsv (100 ms samples of VmRSS and the
#               limiter flag), metrics after the step, the collector log; commands.txt
#
# Load: shardtel-loadgen, open loop at RATES spans/s (far above what the configuration can hold)
# for STEP_SECS, over CONNS gRPC connections. Collector: overload.toml: memory_limiter with
# LIMIT_MIB (default spike limit: 20%), tail_sampling keeping every trace for DECISION_WAIT (the
# sampler is what fills memory), a blackhole exporter, durability "none" (no disk in the way).
# Each step runs on a fresh collector. After the load, one-span OTLP/HTTP requests are sent every
# 20 ms until one is accepted.
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME       result folder name             [<UTC date>-<time>-overload]
#   OUT            result folder                  [benches/results/RUN_NAME]
#   RATES          offered spans/s per step        [500000 1000000 2000000]
#   STEP_SECS      seconds of load per step        [20]
#   CONNS          loadgen --connections (gRPC)    [16]
#   LIMIT_MIB      memory_limiter limit_mib        [1024]
#   DECISION_WAIT  tail_sampling decision_wait     [5s]
#   SHARDTEL_BIN / LOADGEN_BIN  use these binaries instead of building them
#
# Every process started here is stopped by its PID (TERM, KILL after 15 s).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-$(date -u +%Y%m%d-%H%M%S)-overload}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
RATES=${RATES:-"500000 1000000 2000000"}
STEP_SECS=${STEP_SECS:-20}
CONNS=${CONNS:-16}
LIMIT_MIB=${LIMIT_MIB:-1024}
DECISION_WAIT=${DECISION_WAIT:-5s}
METRICS=http://127.0.0.1:8888/metrics
COLL_PID=""
WATCH_PID=""

die() { echo "overload.sh: $*" >&2; exit 1; }
mkdir -p "$RAW"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RAW/run.log"; }
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

stop_pid() {
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() { stop_pid "$WATCH_PID"; stop_pid "$COLL_PID"; }
trap cleanup EXIT

if [ -z "${SHARDTEL_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-engine) || die "building shardtel failed"
  SHARDTEL_BIN=$ROOT/target/release/shardtel
fi
if [ -z "${LOADGEN_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-loadgen) || die "building loadgen failed"
  LOADGEN_BIN=$ROOT/target/release/shardtel-loadgen
fi

cat >"$RAW/overload.toml" <<EOF
[engine]
cores = "all"
data_dir = "/tmp/shardtel-overload-bench"
durability = "none"

[telemetry]
health = "127.0.0.1:13133"
metrics = "127.0.0.1:8888"

[receivers.otlp]
grpc = "127.0.0.1:4317"
http = "127.0.0.1:4318"

[processors.memory_limiter]
check_interval = "100ms"
limit_mib = $LIMIT_MIB

[processors.tail_sampling]
decision_wait = "$DECISION_WAIT"
policies = [{ name = "all", type = "always_sample" }]

[exporters.blackhole]

[pipelines.traces]
receivers = ["otlp"]
processors = ["memory_limiter", "tail_sampling"]
exporters = ["blackhole"]
EOF
: >"$RAW/commands.txt"
printf 'rate\tlimit_mib\tsoft_mib\tidle_rss_mib\tpeak_rss_mib\tsent\taccepted\trefused_429\trefused_503\tfailed\tacked_spans_per_s\trecovery_ms\n' >"$RAW/steps.tsv"

rss_mib() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null || echo 0; }
limited() { curl -s "$METRICS" | awk '/^shardtel_memory_limiter_limited / {print $2}'; }
# A one-span OTLP/HTTP JSON request; prints the HTTP status.
probe() {
  curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
    http://127.0.0.1:4318/v1/traces -d '{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"probe","startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}]}]}]}'
}

for rate in $RATES; do
  step=$RAW/rate-$rate
  mkdir -p "$step"
  rm -rf /tmp/shardtel-overload-bench
  log "rate $rate: starting the collector"
  "$SHARDTEL_BIN" --config "$RAW/overload.toml" >"$step/collector.log" 2>&1 &
  COLL_PID=$!
  for _ in $(seq 1 300); do curl -sf http://127.0.0.1:13133/ >/dev/null && break; sleep 0.1; done
  curl -sf http://127.0.0.1:13133/ >/dev/null || die "the collector did not start: $(tail -5 "$step/collector.log")"
  sleep 1
  idle=$(rss_mib "$COLL_PID")
  ( while kill -0 "$COLL_PID" 2>/dev/null; do
      printf '%s\t%s\t%s\n' "$(date +%s.%N)" "$(rss_mib "$COLL_PID")" "$(limited)"
      sleep 0.1
    done ) >"$step/rss.tsv" &
  WATCH_PID=$!
  cmd=("$LOADGEN_BIN" -p grpc -e http://127.0.0.1:4317 --rate "$rate" --duration "${STEP_SECS}s"
       --connections "$CONNS" --timeout 10s -q --json "$step/loadgen.json")
  echo "${cmd[*]}" >>"$RAW/commands.txt"
  "${cmd[@]}" >"$step/loadgen.txt" 2>&1 || true
  start=$(date +%s%N)
  recovery=-1
  for _ in $(seq 1 1500); do
    if [ "$(probe)" = 200 ]; then recovery=$(( ($(date +%s%N) - start) / 1000000 )); break; fi
    sleep 0.02
  done
  curl -s "$METRICS" >"$step/metrics.txt"
  stop_pid "$WATCH_PID"; WATCH_PID=""
  stop_pid "$COLL_PID"; COLL_PID=""
  peak=$(awk -F'\t' 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$step/rss.tsv")
  python3 - "$step/loadgen.json" "$step/collector.log" "$rate" "$idle" "$peak" "$recovery" "$STEP_SECS" >>"$RAW/steps.tsv" <<'PY'
import json, re, sys
report = json.load(open(sys.argv[1]))
log = open(sys.argv[2]).read()
m = re.search(r"limit (\d+) MiB, soft limit (\d+) MiB", log)
limit, soft = (m.group(1), m.group(2)) if m else ("?", "?")
rate, idle, peak, recovery, secs = sys.argv[3:8]
req = report["requests"]
by = report.get("refused_by_reason", {})
r429 = by.get("http 429", 0) + sum(v for k, v in by.items() if "UNAVAILABLE" in k)
r503 = by.get("http 503", 0)
acked = report["items"]["acknowledged"] / float(secs)
print("\t".join(map(str, [rate, limit, soft, idle, peak, req["sent"], req["accepted"], r429, r503,
                          req["failed"], int(acked), recovery])))
PY
  log "rate $rate: $(tail -1 "$RAW/steps.tsv")"
done

python3 - "$RAW/steps.tsv" >"$OUT/table.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("| offered spans/s | limit / soft MiB | idle / peak RSS MiB | requests sent | accepted | refused (UNAVAILABLE) | failed | spans/s acknowledged | refusals stop after |")
print("|---|---|---|---|---|---|---|---|---|")
for r in rows:
    share = 100.0 * int(r["accepted"]) / max(1, int(r["sent"]))
    print(f"| {r['rate']} | {r['limit_mib']} / {r['soft_mib']} | {r['idle_rss_mib']} / {r['peak_rss_mib']} "
          f"| {r['sent']} | {r['accepted']} ({share:.0f}%) | {r['refused_429']} | {r['failed']} "
          f"| {r['acked_spans_per_s']} | {r['recovery_ms']} ms |")
PY
log "table: $OUT/table.md"
cat "$OUT/table.md"
