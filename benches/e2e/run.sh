#!/usr/bin/env bash
# run.sh - end-to-end OTLP trace-ingest benchmark: shardtel and a peer (Rotel),
# one after the other, in the same run, on the same machine, with the same load
# and the same payloads.  Writes benches/results/<RUN_NAME>/:
#   table.md    Markdown tables (summary, scaling, every step, loadgen latency)
#   plot.png    throughput and p99 latency against offered load, per protocol,
#               and throughput per core (scaling)
#   raw/        steps.tsv (one row per step), summary.txt (SUMMARY lines),
#               machine.txt, driver logs, RSS samples, loadgen JSON/.hgrm,
#               collector logs, payload manifest, criterion output
#
# Load (no code of ours in the peer's path): h2load (nghttp2-client) replaying a
# pre-encoded ExportTraceServiceRequest (gen_payload.py, 100 spans, 355 B/span)
#   gRPC : h2load -c16 -m8 --rps N  (h2c, unary TraceService/Export)
#   HTTP : h2load --h1 -c64 --rps N (POST /v1/traces, application/x-protobuf)
# at fixed offered rates (RATES, spans/s), each step on a FRESH collector process
# so an overload in one step cannot spoil the next.  Then the highest rate that
# passed is held for SUSTAIN_SECS (fresh process; if it fails, the next lower
# passing rate, at most SUSTAIN_TRIES).  A rate passes if >= 97 % of it is
# achieved, no request failed (gRPC: every reply carries the 5-byte response
# message; HTTP: 2xx), and RSS is flat (max of the last quarter of 1 s samples
# minus max of the first quarter < RSS_GROWTH_MIB).
# shardtel is additionally driven by shardtel-loadgen at the same rates, for HDR
# latency percentiles measured from the intended send time.
#
# Configurations (CONFIGS, measured in this order):
#   shardtel        benches/e2e/blackhole.toml (cores = "all"), driver unpinned
#   rotel           rotel-agent ... --exporter blackhole, driver unpinned
#   shardtel-1core  blackhole-1core.toml (cores = [1]) under taskset -c 1,
#                   driver pinned to CPU 0 (scaling report)
#   rotel-1core     rotel-agent under taskset -c 1, driver pinned to CPU 0
#   otelcol         the OpenTelemetry Collector (tests/peers/otelcol: contrib modules, built
#                   once and cached) on tests/peers/otelcol/configs/bench-nop.yaml: OTLP ->
#                   nop exporter, no processor; driver unpinned
#   otelcol-1core   the same under taskset -c 1, driver pinned to CPU 0
#   shardtel_redact raw/blackhole-redact.toml (blackhole.toml plus a redaction processor that
#                   changes no span), driver unpinned: compare with shardtel
#   shardtel_processing  blackhole-processing.toml (an idle routing and a no-op transform),
#                   driver unpinned: compare with shardtel
#   shardtel_spanmetrics blackhole-spanmetrics.toml (a spanmetrics processor), driver
#                   unpinned: compare with shardtel
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME        result folder name            [<UTC date>-<time>]
#   OUT             result folder                 [benches/results/RUN_NAME]
#   CONFIGS         see above                     [shardtel rotel otelcol shardtel-1core]
#   PROTOS          grpc and/or http              [grpc http]
#   RATES           offered spans/s per step      [100000 200000 250000 300000 400000 500000 600000 800000 1000000]
#   STEP_SECS       seconds per rate step         [10]
#   SUSTAIN_SECS    sustained attempt (0 = skip)  [60]
#   SUSTAIN_TRIES   sustained attempts per proto  [2]
#   CLOSED_SECS     one closed-loop step per proto, 0 = skip [10]
#   CLOSED_GRPC     h2load -c x -m for it         [16x8]
#   CLOSED_HTTP     h2load --h1 -c for it         [64]
#   RATE_GRPC_CONNS / RATE_GRPC_STREAMS / RATE_HTTP_CONNS  [16 / 8 / 64]
#   RSS_GROWTH_MIB  growth counted as unbounded   [64]
#   LOADGEN_CONFIGS configs also driven by shardtel-loadgen ("" = none) [shardtel]
#   LOADGEN_RATES   rates for loadgen             [100000 250000 500000 600000 800000]
#   GEN_SECS        loadgen --dry-run seconds (generation speed), 0 = skip [5]
#   CRITERION       1 = also run the criterion benches at the end [0]
#   COUNT_REQS      requests per protocol in the count check [200]
#   QUIET_WAIT      max seconds to wait before a phase while rustc runs [0]
#   PORT_WAIT       max seconds to wait for the ports below to be free [600]
#   GRPC_PORT / HTTP_PORT / METRICS_PORT / HEALTH_PORT  where every collector listens on
#                   127.0.0.1 (OTLP/gRPC, OTLP/HTTP, self-metrics, health) [4317 / 4318 / 8888 / 13133];
#                   shardtel then runs on a copy of its config under raw/configs/ with them
#   KEEP_REQLOG     1 = keep h2load per-request logs (large) [0]
#   SEED / PAYLOADS gen_payload.py --seed / -k    [1 / 8]
#   ROTEL_BIN       use this rotel-agent instead of the PyPI wheel
#   OTELCOL_BIN     use this OpenTelemetry Collector instead of building tests/peers/otelcol
#                   (SHARDTEL_OTELCOL_BIN, as test.sh exports it, is used too)
#   SHARDTEL_BIN / LOADGEN_BIN  use these binaries instead of building them
#
# Every process started here is stopped by its PID (TERM, KILL after 15 s).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-$(date -u +%Y%m%d-%H%M%S)}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
CONFIGS=${CONFIGS:-"shardtel rotel otelcol shardtel-1core"}
PROTOS=${PROTOS:-"grpc http"}
RATES=${RATES:-"100000 200000 250000 300000 400000 500000 600000 800000 1000000"}
STEP_SECS=${STEP_SECS:-10}
SUSTAIN_SECS=${SUSTAIN_SECS:-60}
SUSTAIN_TRIES=${SUSTAIN_TRIES:-2}
CLOSED_SECS=${CLOSED_SECS:-10}
CLOSED_GRPC=${CLOSED_GRPC:-16x8}
CLOSED_HTTP=${CLOSED_HTTP:-64}
RATE_GRPC_CONNS=${RATE_GRPC_CONNS:-16}
RATE_GRPC_STREAMS=${RATE_GRPC_STREAMS:-8}
RATE_HTTP_CONNS=${RATE_HTTP_CONNS:-64}
RSS_GROWTH_MIB=${RSS_GROWTH_MIB:-64}
LOADGEN_CONFIGS=${LOADGEN_CONFIGS-"shardtel"}
LOADGEN_RATES=${LOADGEN_RATES:-"100000 250000 500000 600000 800000"}
GEN_SECS=${GEN_SECS:-5}
CRITERION=${CRITERION:-0}
COUNT_REQS=${COUNT_REQS:-200}
QUIET_WAIT=${QUIET_WAIT:-0}
PORT_WAIT=${PORT_WAIT:-600}
KEEP_REQLOG=${KEEP_REQLOG:-0}
SEED=${SEED:-1}
PAYLOADS=${PAYLOADS:-8}
PEER_DIR=${PEER_DIR:-/tmp/bench-peers}
PAYLOAD_DIR=${PAYLOAD_DIR:-/tmp/shardtel-e2e-payloads-seed$SEED-k$PAYLOADS}
GRPC_PORT=${GRPC_PORT:-4317}
HTTP_PORT=${HTTP_PORT:-4318}
METRICS_PORT=${METRICS_PORT:-8888}
HEALTH_PORT=${HEALTH_PORT:-13133}
PORTS="$GRPC_PORT $HTTP_PORT $METRICS_PORT $HEALTH_PORT"
GRPC_ADDR=127.0.0.1:$GRPC_PORT
HTTP_ADDR=127.0.0.1:$HTTP_PORT
# The OpenTelemetry Collector's bench configs read their addresses from these.
export OTELCOL_GRPC_ENDPOINT=$GRPC_ADDR OTELCOL_HTTP_ENDPOINT=$HTTP_ADDR OTELCOL_METRICS_PORT=$METRICS_PORT
GRPC_PATH=/opentelemetry.proto.collector.trace.v1.TraceService/Export
COLLECTOR_CPU=1   # the 1-core configurations: collector on CPU 1, driver on CPU 0
DRIVER_CPU=0
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
COLL_PID=""
SAMPLER=""

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RAW/run.log"; }
mkdir -p "$RAW" "$PEER_DIR"
: >"$RAW/run.log"

# ---- tools & payloads -----------------------------------------------------------
need=()
command -v h2load >/dev/null && command -v nghttp >/dev/null || need+=(nghttp2-client)
command -v curl >/dev/null || need+=(curl)
command -v gnuplot >/dev/null || need+=(gnuplot-nox)
command -v taskset >/dev/null || need+=(util-linux)
[ -x /usr/bin/time ] || need+=(time)
command -v ss >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; }; } >/dev/null 2>&1 \
    || die "could not install ${need[*]}"
fi
if [ ! -f "$PAYLOAD_DIR/manifest.json" ]; then
  python3 -c 'import opentelemetry.proto' 2>/dev/null || pip install -q opentelemetry-proto || die "pip install opentelemetry-proto failed"
  python3 "$HERE/gen_payload.py" -k "$PAYLOADS" --seed "$SEED" -o "$PAYLOAD_DIR" >/dev/null
fi
cp "$PAYLOAD_DIR/manifest.json" "$RAW/payload-manifest.json"
SPANS=$(sed -nE 's/.*"spans_per_request": ([0-9]+).*/\1/p' "$PAYLOAD_DIR/manifest.json")
BPS=$(sed -nE 's/.*"avg_bytes_per_span": ([0-9.]+).*/\1/p' "$PAYLOAD_DIR/manifest.json")
GRPC_BODY=$PAYLOAD_DIR/traces-000.grpc
HTTP_BODY=$PAYLOAD_DIR/traces-000.pb

# ---- peers ------------------------------------------------------------------------
# peer_<name>_prepare   find or build the binary
# peer_<name>_cmd ONE   argv (ONE=1: the 1-core variant); OTLP on GRPC_ADDR/HTTP_ADDR, blackhole
# peer_<name>_ready     optional: 0 once it serves (besides both ports listening)
# peer_<name>_stats     optional: "accepted=N refused=N exported=N" spans, read from the collector
# peer_<name>_debug_args / peer_<name>_count_spans LOG   optional: count check from a debug log
# ported FILE: a shardtel config listening on the chosen ports: FILE itself on the default
# ports, else a copy under raw/configs/ with its quoted 127.0.0.1:<default port> addresses
# replaced (nothing else in it changes).
ported() {
  if [ "$PORTS" = "4317 4318 8888 13133" ]; then echo "$1"; return; fi
  mkdir -p "$RAW/configs"
  sed -e "s/\"127\.0\.0\.1:4317\"/\"127.0.0.1:$GRPC_PORT\"/" -e "s/\"127\.0\.0\.1:4318\"/\"127.0.0.1:$HTTP_PORT\"/" \
    -e "s/\"127\.0\.0\.1:8888\"/\"127.0.0.1:$METRICS_PORT\"/" -e "s/\"127\.0\.0\.1:13133\"/\"127.0.0.1:$HEALTH_PORT\"/" \
    "$1" >"$RAW/configs/$(basename "$1")"
  echo "$RAW/configs/$(basename "$1")"
}
peer_shardtel_prepare() {
  if [ -z "${SHARDTEL_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p shardtel-engine) || die "cargo build --release -p shardtel-engine failed"
    SHARDTEL_BIN=$ROOT/target/release/shardtel
  fi
  "$SHARDTEL_BIN" default-config >/dev/null || die "shardtel default-config failed"
  "$SHARDTEL_BIN" validate --config "$(ported "$HERE/blackhole.toml")" >/dev/null || die "blackhole.toml does not validate"
  "$SHARDTEL_BIN" validate --config "$(ported "$HERE/blackhole-1core.toml")" >/dev/null || die "blackhole-1core.toml does not validate"
  echo "shardtel: $SHARDTEL_BIN ($("$SHARDTEL_BIN" --version 2>&1 | head -1), git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +uncommitted))"
}
peer_shardtel_cmd() {
  if [ "$1" = 1 ]; then echo "$SHARDTEL_BIN" --config "$(ported "$HERE/blackhole-1core.toml")"
  else echo "$SHARDTEL_BIN" --config "$(ported "$HERE/blackhole.toml")"; fi
}
peer_shardtel_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$HEALTH_PORT/" || true)" = 200 ]; }
peer_shardtel_stats() {  # self-metrics are published once a second: wait for the last snapshot
  sleep 1.5
  curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
    /^shardtel_receiver_accepted_spans_total\{/ {a += $NF}
    /^shardtel_receiver_refused_spans_total\{/ {r += $NF}
    /^shardtel_exporter_sent_spans_total\{exporter="blackhole"/ {e += $NF}
    END {printf "accepted=%d refused=%d exported=%d\n", a, r, e}'
}
# shardtel_redact: blackhole.toml plus the DESIGN.md redaction processor (raw/blackhole-redact.toml,
# written from blackhole-redact.base.toml and tests/fixtures/redaction.toml), whose keys no span
# of the payload has; against `shardtel`, what an attributes processor that changes nothing
# costs end to end (issue 8's target: under 5%).
peer_shardtel_redact_prepare() {
  peer_shardtel_prepare
  # shellcheck source=fixtures.sh
  . "$HERE/fixtures.sh"
  write_config "$RAW/blackhole-redact.toml" "$HERE/blackhole-redact.base.toml" redaction_processor
  "$SHARDTEL_BIN" validate --config "$(ported "$RAW/blackhole-redact.toml")" >/dev/null || die "blackhole-redact.toml does not validate"
}
peer_shardtel_redact_cmd() {
  [ "$1" = 1 ] && die "shardtel_redact has no 1-core variant"
  echo "$SHARDTEL_BIN" --config "$(ported "$RAW/blackhole-redact.toml")"
}
peer_shardtel_redact_ready() { peer_shardtel_ready; }
peer_shardtel_redact_stats() { peer_shardtel_stats; }
# shardtel_processing / shardtel_spanmetrics: blackhole.toml plus issue 20's idle routing and
# no-op transform (blackhole-processing.toml) or a spanmetrics processor
# (blackhole-spanmetrics.toml); against `shardtel` at the same rate, what they cost end to end
# (targets: under 10 % and 20 % CPU per span).
# PROCESSING_TOML picks the variant: blackhole-processing-walk.toml has conditions no request can
# skip.
PROCESSING_TOML=${PROCESSING_TOML:-blackhole-processing.toml}
peer_shardtel_processing_prepare() {
  peer_shardtel_prepare
  "$SHARDTEL_BIN" validate --config "$(ported "$HERE/$PROCESSING_TOML")" >/dev/null || die "$PROCESSING_TOML does not validate"
}
peer_shardtel_processing_cmd() {
  [ "$1" = 1 ] && die "shardtel_processing has no 1-core variant"
  echo "$SHARDTEL_BIN" --config "$(ported "$HERE/$PROCESSING_TOML")"
}
peer_shardtel_processing_ready() { peer_shardtel_ready; }
peer_shardtel_processing_stats() { peer_shardtel_stats; }
peer_shardtel_spanmetrics_prepare() {
  peer_shardtel_prepare
  "$SHARDTEL_BIN" validate --config "$(ported "$HERE/blackhole-spanmetrics.toml")" >/dev/null || die "blackhole-spanmetrics.toml does not validate"
}
peer_shardtel_spanmetrics_cmd() {
  [ "$1" = 1 ] && die "shardtel_spanmetrics has no 1-core variant"
  echo "$SHARDTEL_BIN" --config "$(ported "$HERE/blackhole-spanmetrics.toml")"
}
peer_shardtel_spanmetrics_ready() { peer_shardtel_ready; }
peer_shardtel_spanmetrics_stats() { peer_shardtel_stats; }
peer_rotel_prepare() {
  ROTEL_BIN=${ROTEL_BIN:-$PEER_DIR/rotel/rotel/rotel-agent}
  if [ ! -x "$ROTEL_BIN" ]; then
    rm -rf "$PEER_DIR/rotel-wheel" "$PEER_DIR/rotel"
    pip download -q --no-deps -d "$PEER_DIR/rotel-wheel" rotel || die "pip download rotel failed"
    python3 -m zipfile -e "$PEER_DIR"/rotel-wheel/rotel-*.whl "$PEER_DIR/rotel"
    chmod +x "$ROTEL_BIN"
  fi
  echo "rotel: $ROTEL_BIN ($("$ROTEL_BIN" --version 2>&1 | head -1); wheel $(ls "$PEER_DIR"/rotel-wheel 2>/dev/null | head -1))"
}
peer_rotel_cmd() {
  echo "$ROTEL_BIN" start --otlp-grpc-endpoint "$GRPC_ADDR" --otlp-http-endpoint "$HTTP_ADDR" \
    --exporter blackhole --pid-file "$PEER_DIR/rotel-agent.pid" --log-file "$PEER_DIR/rotel-agent.logfile"
}
peer_rotel_debug_args() { echo --debug-log traces --debug-log-verbosity basic; }
peer_rotel_count_spans() {  # "Received traces. ... spans=100" per request
  sed -E 's/\x1b\[[0-9;]*m//g' "$1" | sed -nE 's/.*Received traces\..* spans=([0-9]+).*/\1/p' | awk '{s+=$1} END{print s+0}'
}

# otelcol: the OpenTelemetry Collector built from the contrib Go modules pinned in
# tests/peers/otelcol/ (its build.sh; cached), on tests/peers/otelcol/configs/bench-nop.yaml:
# OTLP on GRPC_ADDR/HTTP_ADDR -> the nop exporter, no processor; its own metrics on
# METRICS_PORT count what it received (the OTELCOL_* variables exported above). The 1-core variant runs the same under taskset (the Go runtime sizes
# GOMAXPROCS from the CPU affinity).
OTELCOL_CONFIGS=$ROOT/tests/peers/otelcol/configs
peer_otelcol_prepare() {
  OTELCOL_BIN=${OTELCOL_BIN:-${SHARDTEL_OTELCOL_BIN:-}}
  if [ -z "$OTELCOL_BIN" ]; then
    OTELCOL_BIN=$("$ROOT/tests/peers/otelcol/build.sh") || die "building the OpenTelemetry Collector failed"
  fi
  "$OTELCOL_BIN" validate --config "$OTELCOL_CONFIGS/bench-nop.yaml" >/dev/null || die "bench-nop.yaml does not validate"
  echo "otelcol: $OTELCOL_BIN ($("$OTELCOL_BIN" --version 2>&1 | head -1); manifest tests/peers/otelcol/go.mod)"
}
peer_otelcol_cmd() { echo "$OTELCOL_BIN" --config "$OTELCOL_CONFIGS/bench-nop.yaml"; }
peer_otelcol_ready() { curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$METRICS_PORT/metrics"; }
# The nop exporter publishes no sent-spans counter: then `exported` is the receiver's accepted
# count, which the receiver only counts once the (synchronous, queue-less) pipeline returned.
peer_otelcol_stats() {  # the Collector's own metrics (with or without the _total suffix)
  sleep 0.5
  curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
    /^otelcol_receiver_accepted_spans(_total)?\{/ {a += $NF}
    /^otelcol_receiver_refused_spans(_total)?\{/ {r += $NF}
    /^otelcol_receiver_failed_spans(_total)?\{/ {r += $NF}
    /^otelcol_exporter_sent_spans(_total)?\{exporter="nop"/ {e += $NF; seen = 1}
    END {printf "accepted=%d refused=%d exported=%d\n", a, r, seen ? e : a}'
}

# ---- collector process control (by PID only) -------------------------------------
port_busy() { ss -ltnH "( sport = :$1 )" 2>/dev/null | grep -q .; }
start_collector() {  # peer one log [extra args...]
  local peer=$1 one=$2 logf=$3 pre=()
  shift 3
  [ "$one" = 1 ] && pre=(taskset -c "$COLLECTOR_CPU")
  local waited=0 p busy
  while :; do   # another process (someone else's test) may hold the ports for a while
    busy=""
    for p in $PORTS; do port_busy "$p" && busy="$busy $p"; done
    [ -z "$busy" ] && break
    [ "$waited" -ge "$PORT_WAIT" ] && die "ports$busy still in use after ${PORT_WAIT}s: $(ss -ltnpH | grep -E ":(${PORTS// /|}) " | sed -nE 's/.*users:\(\("([^"]+)",pid=([0-9]+).*/\1 pid \2/p' | sort -u | tr '\n' ' ')"
    [ $((waited % 30)) -eq 0 ] && log "ports$busy in use by another process; waiting (${waited}s)"
    sleep 2; waited=$((waited + 2))
  done
  local attempt
  for attempt in 1 2 3 4 5; do
    # shellcheck disable=SC2046
    "${pre[@]}" $("peer_${peer}_cmd" "$one") "$@" >"$logf" 2>&1 &   # taskset execs: $! is the collector
    COLL_PID=$!
    for _ in $(seq 1 200); do
      if ! kill -0 "$COLL_PID" 2>/dev/null; then
        wait "$COLL_PID" 2>/dev/null || true; COLL_PID=""
        # a listener that does not set SO_REUSEADDR cannot bind while the previous
        # collector's closed connections sit in TIME_WAIT on the port (up to 60 s)
        if grep -qi 'address already in use' "$logf" && [ "$attempt" -lt 5 ]; then
          log "$peer could not bind (address in use; $(ss -tanH state time-wait "( sport = :$GRPC_PORT or sport = :$HTTP_PORT )" | wc -l) TIME_WAIT sockets): retry in 15 s"
          sleep 15; continue 2
        fi
        tail -5 "$logf" >&2; die "$peer exited at start"
      fi
      if port_busy "$GRPC_PORT" && port_busy "$HTTP_PORT"; then
        if ! declare -F "peer_${peer}_ready" >/dev/null || "peer_${peer}_ready"; then return 0; fi
      fi
      sleep 0.1
    done
    die "$peer did not serve on $GRPC_PORT/$HTTP_PORT within 20 s"
  done
}
stop_collector() {
  [ -n "$COLL_PID" ] || return 0
  if kill -0 "$COLL_PID" 2>/dev/null; then
    kill -TERM "$COLL_PID" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$COLL_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$COLL_PID" 2>/dev/null && { echo "collector $COLL_PID ignored TERM for 15 s: KILL" >&2; kill -KILL "$COLL_PID" 2>/dev/null || true; }
  fi
  wait "$COLL_PID" 2>/dev/null || true
  COLL_PID=""
}
cleanup() {
  [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
  stop_collector
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

# ---- machine state ------------------------------------------------------------------
rustc_count() { ps -eo comm= | grep -c '^rustc$' || true; }
builds() { ps -eo comm= | grep -cE '^(rustc|cc1|cc1plus|cargo|ld|go|javac)$' || true; }
wait_quiet() {  # phase name
  local waited=0
  while [ "$(rustc_count)" -gt 0 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    log "waiting before $1: $(rustc_count) rustc running, loadavg $(cut -d' ' -f1-3 /proc/loadavg) (waited ${waited}s)"
    sleep 30; waited=$((waited + 30))
  done
  local n; n=$(rustc_count)
  [ "$n" -eq 0 ] || log "WARNING: $1 starts with $n rustc processes running: its numbers are disturbed"
}

# ---- measurement of one step ----------------------------------------------------------
proc_ticks() {  # utime+stime of the collector (all threads), clock ticks
  [ -n "$COLL_PID" ] && [ -r "/proc/$COLL_PID/stat" ] || { echo 0; return; }
  sed -E 's/^.*\) //' "/proc/$COLL_PID/stat" | awk '{print $12 + $13}'
}
sys_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }
status_kb() {
  [ -n "$COLL_PID" ] && [ -r "/proc/$COLL_PID/status" ] || { echo 0; return; }
  awk -v k="$1:" '$1==k{print $2}' "/proc/$COLL_PID/status"
}
sample_begin() {  # rss-file: 1 Hz VmRSS sampler + CPU counters
  local rssf=$1
  : >"$rssf"
  ( exec 9<> <(:)
    while [ -r "/proc/$COLL_PID/status" ]; do
      while read -r k v _; do [ "$k" = VmRSS: ] && echo "$v"; done <"/proc/$COLL_PID/status" >>"$rssf" 2>/dev/null || true
      read -r -t 1 -u 9 || true
    done ) &
  SAMPLER=$!
  M_C0=$(proc_ticks); M_S0=($(sys_ticks)); M_T0=$(date +%s.%N)
}
sample_end() {  # rss-file driver-time-file -> M_CCPU M_DCPU M_OCPU M_RSS M_HWM M_GROW M_WALL
  local rssf=$1 tfile=$2 c1 s1 t1 busy total
  t1=$(date +%s.%N); c1=$(proc_ticks); s1=($(sys_ticks))
  kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""
  M_WALL=$(awk -v a="$M_T0" -v b="$t1" 'BEGIN{print b-a}')
  M_CCPU=$(awk -v d="$((c1 - M_C0))" -v hz="$HZ" -v w="$M_WALL" 'BEGIN{printf "%.0f", 100*d/hz/w}')
  M_DCPU=0
  [ -s "$tfile" ] && M_DCPU=$(tail -1 "$tfile" | awk -v w="$M_WALL" '{printf "%.0f", 100*($1+$2)/w}')
  busy=$(( s1[0] - M_S0[0] )); total=$(( s1[1] - M_S0[1] ))
  M_OCPU=$(awk -v b="$busy" -v t="$total" -v n="$NCPU" -v c="$M_CCPU" -v d="$M_DCPU" \
    'BEGIN{o=(t>0?100*n*b/t:0)-c-d; if(o<0)o=0; printf "%.0f", o}')
  M_RSS=$(( $(status_kb VmRSS) / 1024 )); M_HWM=$(( $(status_kb VmHWM) / 1024 ))
  M_GROW=$(awk '{v[NR]=$1} END{if(NR<4){print 0; exit} q=int(NR/4); a=0; b=0;
    for(i=1;i<=q;i++) if(v[i]>a)a=v[i]; for(i=NR-q+1;i<=NR;i++) if(v[i]>b)b=v[i]; printf "%d", (b-a)/1024}' "$rssf")
}

GRPC_RESP_LEN=-1
check_requests() {  # one request per protocol must succeed (gRPC: status 0 and the response length)
  local v="$RAW/check-grpc.txt" code
  # nghttp shows every frame; curl hides the grpc-status trailer when the response
  # carries a content-length header (as shardtel's does)
  nghttp -nv -t 10 -H 'content-type: application/grpc' -H 'te: trailers' -d "$GRPC_BODY" \
    "http://$GRPC_ADDR$GRPC_PATH" >"$v" 2>&1 || die "gRPC check request failed: $(tail -2 "$v")"
  grep -qE 'recv \(stream_id=[0-9]+\) :status: 200' "$v" || die "gRPC check: HTTP status not 200: $(grep ':status' "$v")"
  grep -qE 'recv \(stream_id=[0-9]+\) grpc-status: 0' "$v" || die "gRPC check: grpc-status not 0: $(grep -E 'grpc-(status|message)' "$v" | tr '\n' ' ')"
  GRPC_RESP_LEN=$(sed -nE 's/.*recv DATA frame <length=([0-9]+), flags=0x0[01], stream_id=[1-9][0-9]*>.*/\1/p' "$v" | awk '{s+=$1} END{print s+0}')
  [ "$GRPC_RESP_LEN" -gt 0 ] || die "gRPC check: empty response body"
  code=$(curl -sS --max-time 10 -X POST -H 'content-type: application/x-protobuf' \
    --data-binary @"$HTTP_BODY" "http://$HTTP_ADDR/v1/traces" -o /dev/null -w '%{http_code}') || die "HTTP check request failed"
  [ "$code" = 200 ] || die "HTTP check: status $code"
}

latency_pcts() {  # h2load --log-file -> "p50 p99 p999 max" in ms (from each request's actual send)
  [ -s "$1" ] || { echo "- - - -"; return; }
  awk '{print $3}' "$1" | sort -n | awk '{v[NR]=$1} END{
    i50=int(NR*0.50); i99=int(NR*0.99); i999=int(NR*0.999); if(i50<1)i50=1; if(i99<1)i99=1; if(i999<1)i999=1;
    printf "%.2f %.2f %.2f %.2f\n", v[i50]/1000, v[i99]/1000, v[i999]/1000, v[NR]/1000}'
}

# h2load step: sets S_* ; mode rate (arg = offered spans/s) or closed (arg = CxM / C)
h2load_step() {  # proto mode arg secs base driver_pin
  local proto=$1 mode=$2 arg=$3 secs=$4 base=$5 pin=$6
  local logf="$base.log" tfile="$base.time" rssf="$base.rss" reqlog="$base.reqlog" pre=() args=() url target_rps=0 per=0 conns=0
  [ "$pin" = 1 ] && pre=(taskset -c "$DRIVER_CPU")
  if [ "$proto" = grpc ]; then
    url="http://$GRPC_ADDR$GRPC_PATH"
    args=(-d "$GRPC_BODY" -H 'content-type: application/grpc' -H 'te: trailers')
  else
    url="http://$HTTP_ADDR/v1/traces"
    args=(--h1 -d "$HTTP_BODY" -H 'content-type: application/x-protobuf')
  fi
  if [ "$mode" = rate ]; then
    target_rps=$(( (arg + SPANS - 1) / SPANS ))
    if [ "$proto" = grpc ]; then conns=$RATE_GRPC_CONNS; args+=(-m "$RATE_GRPC_STREAMS"); else conns=$RATE_HTTP_CONNS; fi
    per=$(( (target_rps + conns - 1) / conns ))
    args+=(-c "$conns" --rps "$per")
    S_LOAD="$arg"
    S_DESC="h2load ${conns}conn@${per}rps"
  else
    if [ "$proto" = grpc ]; then args+=(-c "${arg%x*}" -m "${arg#*x}"); else args+=(-c "$arg"); fi
    S_LOAD=closed
    S_DESC="h2load closed $arg"
  fi
  S_CMD="h2load -t1 ${args[*]} -D $secs --log-file REQLOG $url"
  sample_begin "$rssf"
  /usr/bin/time -f '%U %S' -o "$tfile" "${pre[@]}" h2load -t1 "${args[@]}" -D "$secs" --log-file "$reqlog" "$url" >"$logf" 2>&1 || true
  sample_end "$rssf" "$tfile"
  # parse: OK requests / h2load's measured duration.  gRPC: grpc-status travels in
  # trailers, which h2load does not read; an OK unary reply carries exactly
  # GRPC_RESP_LEN bytes of DATA, an error reply (trailers-only) none.
  local dur succ fail errd tmo s2 s4 s5 data okreqs
  dur=$(sed -nE 's/^finished in ([0-9.]+)(m?s),.*/\1 \2/p' "$logf" | awk '{print ($2=="ms")?$1/1000:$1}')
  read -r succ fail errd tmo < <(sed -nE 's/^requests: [0-9]+ total, [0-9]+ started, [0-9]+ done, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) errored, ([0-9]+) timeout.*/\1 \2 \3 \4/p' "$logf") || true
  read -r s2 s4 s5 < <(sed -nE 's/^status codes: ([0-9]+) 2xx, [0-9]+ 3xx, ([0-9]+) 4xx, ([0-9]+) 5xx.*/\1 \2 \3/p' "$logf") || true
  data=$(sed -nE 's/^traffic: .* \(([0-9]+)\) data.*/\1/p' "$logf")
  S_OK=1; S_ERR=none; S_REFUSED=0
  if [ -z "${dur:-}" ] || [ -z "${succ:-}" ] || [ -z "${s2:-}" ]; then
    S_OK=0; S_ERR=h2load-output-unparsed; okreqs=0; dur=1
  else
    if [ "$proto" = grpc ]; then okreqs=$(( data / GRPC_RESP_LEN )); [ "$okreqs" -gt "$s2" ] && okreqs=$s2
    else okreqs=$s2; fi
    S_REFUSED=$(( succ + fail + errd + tmo - okreqs ))   # every request that did not get an OK reply
    local e=""
    [ "$fail" -eq 0 ] || e="$e,failed=$fail"; [ "$errd" -eq 0 ] || e="$e,errored=$errd"
    [ "$tmo" -eq 0 ] || e="$e,timeout=$tmo"; [ "$s4" -eq 0 ] || e="$e,4xx=$s4"; [ "$s5" -eq 0 ] || e="$e,5xx=$s5"
    [ "$okreqs" -eq "$s2" ] || e="$e,grpc_status_not_ok=$(( s2 - okreqs ))"
    [ -z "$e" ] || { S_OK=0; S_ERR=${e#,}; }
  fi
  kill -0 "$COLL_PID" 2>/dev/null || { S_OK=0; S_ERR="${S_ERR/none/}collector-died"; }
  S_SPS=$(awk -v r="$okreqs" -v d="$dur" -v s="$SPANS" 'BEGIN{printf "%.0f", (d>0?r/d*s:0)}')
  S_ACH=100
  # against what h2load really offers (per-connection rate rounded up x connections)
  [ "$mode" = rate ] && S_ACH=$(awk -v r="$okreqs" -v d="$dur" -v t="$((per * conns))" 'BEGIN{printf "%.1f", (t>0&&d>0?100*r/d/t:0)}')
  read -r S_P50 S_P99 S_P999 S_MAX < <(latency_pcts "$reqlog")
  [ "$KEEP_REQLOG" = 1 ] || rm -f "$reqlog"
}

# shardtel-loadgen step (open loop, latency from the intended send time)
loadgen_step() {  # proto rate secs base pin
  local proto=$1 rate=$2 secs=$3 base=$4 pin=$5 pre=() args=() tfile="$base.time" rssf="$base.rss" conns
  if [ "$pin" = 1 ]; then pre=(taskset -c "$DRIVER_CPU"); args+=(--cpus "$DRIVER_CPU"); fi
  if [ "$proto" = grpc ]; then conns=$RATE_GRPC_CONNS; args+=(-p grpc -e "http://$GRPC_ADDR")
  else conns=$RATE_HTTP_CONNS; args+=(-p http-protobuf -e "http://$HTTP_ADDR"); fi
  args+=(--rate "$rate" --duration "${secs}s" --connections "$conns" --workers 1 --json "$base.json" --hgrm "$base.hgrm" -q)
  S_LOAD=$rate; S_DESC="loadgen ${conns}conn"
  S_CMD="shardtel-loadgen ${args[*]}"
  sample_begin "$rssf"
  /usr/bin/time -f '%U %S' -o "$tfile" "${pre[@]}" "$LOADGEN_BIN" "${args[@]}" >"$base.log" 2>&1 || true
  sample_end "$rssf" "$tfile"
  if [ ! -s "$base.json" ]; then
    S_OK=0; S_ERR=loadgen-failed; S_SPS=0; S_ACH=0; S_REFUSED=0; S_P50=-; S_P99=-; S_P999=-; S_MAX=-; return
  fi
  read -r S_SPS S_ACH S_REFUSED S_P50 S_P99 S_P999 S_MAX S_ERR < <(python3 - "$base.json" "$rate" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); rate = float(sys.argv[2])
q = r["requests"]; lat = r["latency_us"]
acked = r["achieved"]["acknowledged_items_per_second"]
err = []
for k in ("refused", "failed", "behind_schedule"):
    if q.get(k):
        err.append("%s=%d" % (k, q[k]))
for k, v in sorted(r.get("refused_by_reason", {}).items()) + sorted(r.get("failed_by_reason", {}).items()):
    err.append("%s:%d" % (k.replace(" ", "_"), v))
print("%.0f %.1f %d %.2f %.2f %.2f %.2f %s" % (acked, 100 * acked / rate, q["refused"] + q["failed"],
      lat["p50"] / 1000, lat["p99"] / 1000, lat["p999"] / 1000, lat["max"] / 1000, ",".join(err) or "none"))
PY
)
  # refused or failed requests fail the step; requests still due when the run ended
  # (behind_schedule) only show in the text and in the achieved rate
  S_OK=1; [ "$S_REFUSED" -eq 0 ] || S_OK=0
  kill -0 "$COLL_PID" 2>/dev/null || { S_OK=0; S_ERR=collector-died; }
}

S_COLL=""
record() {  # config cores pin proto driver phase secs
  local stats="" acc=- ref=- exp=-
  if declare -F "peer_${CUR_PEER}_stats" >/dev/null; then
    stats=$("peer_${CUR_PEER}_stats" || true)
    acc=$(sed -nE 's/.*accepted=([0-9]+).*/\1/p' <<<"$stats"); ref=$(sed -nE 's/.*refused=([0-9]+).*/\1/p' <<<"$stats")
    exp=$(sed -nE 's/.*exported=([0-9]+).*/\1/p' <<<"$stats")
  fi
  local pass=0
  if [ "$6" != closed ] && [ "$S_OK" = 1 ] && awk -v a="$S_ACH" 'BEGIN{exit !(a>=97)}' && [ "$M_GROW" -lt "$RSS_GROWTH_MIB" ]; then pass=1; fi
  S_PASS=$pass
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" \
    "$1" "$2" "$3" "$4" "$5" "$6" "$S_LOAD" "$7" "$S_SPS" "$S_ACH" "$S_OK" "$pass" "$S_REFUSED" \
    "$S_P50" "$S_P99" "$S_P999" "$S_MAX" "$M_CCPU" "$M_DCPU" "$M_OCPU" "$M_RSS" "$M_HWM" "$M_GROW" \
    "$acc" "$ref" "$exp" "$S_ERR" "$(rustc_count)" >>"$RAW/steps.tsv"
  log "$(printf '%-15s %-4s %-7s %-8s offered=%-7s achieved=%7s sp/s (%5s%%) p50=%sms p99=%sms cpu=%s%% drv=%s%% other=%s%% rss=%sMiB hwm=%sMiB grow=%sMiB coll[acc=%s ref=%s exp=%s] refused_reqs=%s ok=%s pass=%s err=%s' \
    "$1" "$4" "$5" "$6" "$S_LOAD" "$S_SPS" "$S_ACH" "$S_P50" "$S_P99" "$M_CCPU" "$M_DCPU" "$M_OCPU" "$M_RSS" "$M_HWM" "$M_GROW" "$acc" "$ref" "$exp" "$S_REFUSED" "$S_OK" "$pass" "$S_ERR")"
  echo "$1 $4 $5 $6 $S_LOAD: $S_CMD" >>"$RAW/commands.txt"
}

# A driver that stops at its deadline cuts the requests in flight: hyper logs those as
# IncompleteMessage/IncompleteBody, Go's gRPC server as "transport is closing". Not errors.
CUT_RE='IncompleteMessage|IncompleteBody|transport is closing'
scan_log() {  # collector log -> count of error/warn lines (cut in-flight requests counted apart)
  local clean
  [ -f "$1" ] || { echo 0; return; }
  clean=$(sed -E 's/\x1b\[[0-9;]*m//g' "$1")
  grep -iE 'error|warn|drop|refus|exhaust|reject|panic' <<<"$clean" | grep -vcE "$CUT_RE" || true
}
trim_log() {  # keep collector logs small enough to commit
  [ -f "$1" ] || return 0
  if [ "$(stat -c %s "$1")" -gt 200000 ]; then
    { head -c 100000 "$1"; echo; echo "... [trimmed by run.sh: $(stat -c %s "$1") bytes] ..."; tail -c 100000 "$1"; } >"$1.t" && mv "$1.t" "$1"
  fi
}

# one step on a fresh collector: config peer one proto driver phase arg secs
fresh_step() {
  local cfg=$1 peer=$2 one=$3 proto=$4 driver=$5 phase=$6 arg=$7 secs=$8
  local tag; tag="$cfg-$proto-$driver-$phase-$(tr -c 'a-z0-9' _ <<<"$arg" | sed 's/_*$//')"
  local base="$RAW/$tag"
  CUR_PEER=$peer
  start_collector "$peer" "$one" "$base-collector.log"
  if [ "$driver" = h2load ]; then h2load_step "$proto" "$([ "$phase" = closed ] && echo closed || echo rate)" "$arg" "$secs" "$base" "$one"
  else loadgen_step "$proto" "$arg" "$secs" "$base" "$one"; fi
  record "$cfg" "$([ "$one" = 1 ] && echo 1 || echo "$NCPU")" "$([ "$one" = 1 ] && echo "$DRIVER_CPU" || echo any)" "$proto" "$driver" "$phase" "$secs"
  stop_collector
  local bad; bad=$(scan_log "$base-collector.log")
  [ "$bad" -eq 0 ] || log "$tag: collector log has $bad error/warn lines, e.g.: $(sed -E 's/\x1b\[[0-9;]*m//g' "$base-collector.log" | grep -iE 'error|warn|drop|refus|exhaust|reject|panic' | grep -vE "$CUT_RE" | head -1 | cut -c1-200)"
  trim_log "$base-collector.log"
  echo "$bad" >"$base.logerrors"
}

count_check() {  # config peer one
  local cfg=$1 peer=$2 one=$3 logf="$RAW/$1-countcheck-collector.log" g h sent got stats extra=()
  declare -F "peer_${peer}_debug_args" >/dev/null && read -r -a extra <<<"$("peer_${peer}_debug_args")"
  declare -F "peer_${peer}_stats" >/dev/null || declare -F "peer_${peer}_count_spans" >/dev/null \
    || { log "$cfg: no count check defined"; return 0; }
  start_collector "$peer" "$one" "$logf" "${extra[@]}"
  check_requests
  g=$(h2load -t1 -c4 -m1 -n "$COUNT_REQS" -d "$GRPC_BODY" -H 'content-type: application/grpc' \
      -H 'te: trailers' "http://$GRPC_ADDR$GRPC_PATH" 2>&1 | grep -E '^(requests|status codes|traffic):' | tr '\n' ' ')
  h=$(h2load --h1 -t1 -c4 -n "$COUNT_REQS" -d "$PAYLOAD_DIR/traces-001.pb" -H 'content-type: application/x-protobuf' \
      "http://$HTTP_ADDR/v1/traces" 2>&1 | grep -E '^(requests|status codes):' | tr '\n' ' ')
  sent=$(( (2 * COUNT_REQS + 2) * SPANS ))
  if declare -F "peer_${peer}_stats" >/dev/null; then
    stats=$("peer_${peer}_stats"); got=$(sed -nE 's/.*accepted=([0-9]+).*/\1/p' <<<"$stats")
    stop_collector
    local exported; exported=$(sed -nE 's/.*exported=([0-9]+).*/\1/p' <<<"$stats")
    [ "$exported" = "$got" ] || got="$got (exported $exported)"
    stats="self-metrics: $stats"
  else
    sleep 1; stop_collector
    got=$("peer_${peer}_count_spans" "$logf"); stats="debug log"
  fi
  trim_log "$logf"
  log "$cfg count check: grpc [$g]"
  log "$cfg count check: http [$h]"
  log "$cfg count check: sent $sent spans ($COUNT_REQS gRPC + $COUNT_REQS HTTP requests + 1 check request per protocol), collector counted $got ($stats) -> $([ "$got" = "$sent" ] && echo OK || echo MISMATCH)"
  echo "$cfg sent=$sent counted=$got $([ "$got" = "$sent" ] && echo OK || echo MISMATCH)" >>"$RAW/countcheck.txt"
}

# ---- main --------------------------------------------------------------------------------
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "nproc: $NCPU"
  echo "cpu_model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -srm)"
  echo "free -g:"; free -g | sed 's/^/  /'
  echo "loadavg_at_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc_at_start: $(rustc_count)"
  echo "h2load: $(h2load --version 2>&1 | head -1)"
  echo "gnuplot: $(gnuplot --version 2>&1 | head -1)"
  echo "git: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' +uncommitted changes')"
  echo "payload: $SPANS spans/request, $BPS bytes/span avg, seed $SEED, $PAYLOADS files ($PAYLOAD_DIR)"
  echo "knobs: CONFIGS='$CONFIGS' PROTOS='$PROTOS' RATES='$RATES' STEP_SECS=$STEP_SECS SUSTAIN_SECS=$SUSTAIN_SECS SUSTAIN_TRIES=$SUSTAIN_TRIES CLOSED_SECS=$CLOSED_SECS CLOSED_GRPC=$CLOSED_GRPC CLOSED_HTTP=$CLOSED_HTTP RATE_GRPC_CONNS=$RATE_GRPC_CONNS RATE_GRPC_STREAMS=$RATE_GRPC_STREAMS RATE_HTTP_CONNS=$RATE_HTTP_CONNS RSS_GROWTH_MIB=$RSS_GROWTH_MIB LOADGEN_CONFIGS='$LOADGEN_CONFIGS' LOADGEN_RATES='$LOADGEN_RATES' GEN_SECS=$GEN_SECS"
} >"$RAW/machine.txt"
printf "config\tcores\tdriver_cpus\tproto\tdriver\tphase\toffered_spans_s\tsecs\tachieved_spans_s\tachieved_pct\tok\tpass\trefused_reqs\tp50_ms\tp99_ms\tp999_ms\tmax_ms\tcollector_cpu_pct\tdriver_cpu_pct\tother_cpu_pct\trss_mib\thwm_mib\trss_growth_mib\tcoll_accepted_spans\tcoll_refused_spans\tcoll_exported_spans\terr\trustc\n" >"$RAW/steps.tsv"
: >"$RAW/summary.txt"; : >"$RAW/commands.txt"; : >"$RAW/countcheck.txt"
log "run $RUN_NAME -> $OUT: $NCPU cpus, loadavg $(cut -d' ' -f1-3 /proc/loadavg), rustc $(rustc_count)"
log "payload: $SPANS spans/request, $BPS bytes/span avg"

# prepare every peer (builds happen here, before any measurement)
declare -A PREPARED=()
for cfg in $CONFIGS; do
  peer=${cfg%-1core}
  declare -F "peer_${peer}_cmd" >/dev/null || die "unknown peer in config $cfg"
  [ -n "${PREPARED[$peer]:-}" ] && continue
  "peer_${peer}_prepare" >"$RAW/prepare-$peer.txt"   # not in a pipe: it sets <PEER>_BIN here
  tee -a "$RAW/machine.txt" <"$RAW/prepare-$peer.txt"; rm -f "$RAW/prepare-$peer.txt"
  PREPARED[$peer]=1
done
if [ -n "$LOADGEN_CONFIGS" ] || [ "$GEN_SECS" != 0 ]; then
  if [ -z "${LOADGEN_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p shardtel-loadgen) || die "cargo build --release -p shardtel-loadgen failed"
    LOADGEN_BIN=$ROOT/target/release/shardtel-loadgen
  fi
  echo "loadgen: $LOADGEN_BIN ($("$LOADGEN_BIN" --version 2>&1 | head -1))" | tee -a "$RAW/machine.txt"
fi
if [ "$CRITERION" = 1 ]; then
  (cd "$ROOT" && cargo bench -q -p shardtel-benches --bench '*' --no-run) >/dev/null 2>&1 || die "cargo bench --no-run failed"
fi

for cfg in $CONFIGS; do
  peer=${cfg%-1core}; one=0; [ "$cfg" != "$peer" ] && one=1
  wait_quiet "$cfg count check"
  count_check "$cfg" "$peer" "$one"
  for proto in $PROTOS; do
    CLOSED_SPS=skipped
    # closed loop: what the collector acknowledges when pushed as hard as possible
    if [ "$CLOSED_SECS" != 0 ]; then
      wait_quiet "$cfg $proto closed"
      fresh_step "$cfg" "$peer" "$one" "$proto" h2load closed "$([ "$proto" = grpc ] && echo "$CLOSED_GRPC" || echo "$CLOSED_HTTP")" "$CLOSED_SECS"
      CLOSED_SPS=$S_SPS
    fi
    # fixed-rate sweep
    wait_quiet "$cfg $proto sweep"
    passing=()
    best_sps=0
    for r in $RATES; do
      fresh_step "$cfg" "$peer" "$one" "$proto" h2load rate "$r" "$STEP_SECS"
      [ "$S_PASS" = 1 ] && passing=("$r" "${passing[@]}")
      [ "$S_SPS" -gt "$best_sps" ] && best_sps=$S_SPS
    done
    # sustained: highest passing rate first, then lower ones
    sline="sustained_spans/s=none"
    if [ "$SUSTAIN_SECS" != 0 ] && [ ${#passing[@]} -gt 0 ]; then
      tries=0
      for r in "${passing[@]}"; do
        tries=$((tries + 1)); [ "$tries" -le "$SUSTAIN_TRIES" ] || break
        wait_quiet "$cfg $proto sustain $r"
        fresh_step "$cfg" "$peer" "$one" "$proto" h2load sustain "$r" "$SUSTAIN_SECS"
        if [ "$S_PASS" = 1 ]; then
          cores=$([ "$one" = 1 ] && echo 1 || echo "$NCPU")
          sline="sustained_spans/s=$S_SPS offered=$r per_core=$((S_SPS / cores)) collector_cpu=${M_CCPU}% rss_mib=$M_RSS peak_rss_mib=$M_HWM rss_growth_mib=$M_GROW p50_ms=$S_P50 p99_ms=$S_P99 driver_cpu=${M_DCPU}% other_cpu=${M_OCPU}% secs=$SUSTAIN_SECS"
          break
        fi
        sline="sustained_spans/s=none (last try $r offered -> $S_SPS achieved ${S_ACH}%, growth ${M_GROW}MiB, err=$S_ERR)"
      done
    elif [ "$SUSTAIN_SECS" != 0 ]; then
      sline="sustained_spans/s=none (no rate passed the sweep)"
    fi
    echo "SUMMARY $cfg $proto $sline | sweep_max_achieved=$best_sps passing=$(IFS=,; echo "${passing[*]}") closed_loop=$CLOSED_SPS" | tee -a "$RAW/summary.txt" >>"$RAW/run.log"
    tail -1 "$RAW/summary.txt"
  done
  # shardtel-loadgen at the same offered rates: HDR latency from the intended send time
  if [[ " $LOADGEN_CONFIGS " == *" $cfg "* ]]; then
    for proto in $PROTOS; do
      wait_quiet "$cfg $proto loadgen"
      for r in $LOADGEN_RATES; do
        fresh_step "$cfg" "$peer" "$one" "$proto" loadgen rate "$r" "$STEP_SECS"
      done
    done
  fi
done

# loadgen's own generation speed (no network), one worker pinned to CPU 0
if [ "$GEN_SECS" != 0 ]; then
  wait_quiet "loadgen dry run"
  for p in grpc http-protobuf; do
    "$LOADGEN_BIN" --dry-run -p "$p" --duration "${GEN_SECS}s" --cpus "$DRIVER_CPU" --json "$RAW/loadgen-dryrun-$p.json" >"$RAW/loadgen-dryrun-$p.log" 2>&1 || true
    echo "loadgen $p: shardtel-loadgen --dry-run -p $p --duration ${GEN_SECS}s --cpus $DRIVER_CPU" >>"$RAW/commands.txt"
    gen=$(python3 -c 'import json,sys; print("%.0f" % json.load(open(sys.argv[1]))["dry_run"]["items_per_second"])' "$RAW/loadgen-dryrun-$p.json" 2>/dev/null || echo "?")
    echo "SUMMARY loadgen-dryrun $p spans/s_per_core=$gen (1 worker pinned to cpu $DRIVER_CPU, ${GEN_SECS}s) target>=2000000" | tee -a "$RAW/summary.txt"
  done
fi

if [ "$CRITERION" = 1 ]; then
  wait_quiet criterion
  log "criterion: cargo bench -p shardtel-benches --bench '*' -- --warm-up-time 1 --measurement-time 3"
  (cd "$ROOT" && cargo bench -p shardtel-benches --bench '*' -- --warm-up-time 1 --measurement-time 3) >"$RAW/criterion.txt" 2>&1 || log "criterion benches failed (see raw/criterion.txt)"
fi

echo "loadavg_at_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/machine.txt"
echo "date_utc_end: $(date -u +%FT%TZ)" >>"$RAW/machine.txt"
python3 "$HERE/report.py" "$OUT" || die "report.py failed"
log "wrote $OUT/table.md and $OUT/plot.png"
echo "==== summary ($OUT)"
cat "$RAW/summary.txt"
