#!/usr/bin/env bash
# receivers.sh - the zipkin (JSON v2) and jaeger (gRPC PostSpans) receivers into a blackhole:
# shardtel against the OpenTelemetry Collector's zipkin and jaeger receivers (tests/peers/otelcol,
# into its `nop` exporter), on the same pre-encoded payloads. For each receiver and peer: spans
# accepted per second (from the peer's own counters), the peer's CPU over the measured window
# (utime+stime of all its threads, 100 % = one core), and spans per CPU-second, the figure the
# issue's target is about (at least 5x the Collector's per CPU-second).
#
#   benches/e2e/receivers.sh                                                 # ~3 min
#   DURATION=5 WARMUP=2 benches/e2e/receivers.sh                             # smoke test
#
# The payloads are made once by receivers_driver.py with the OpenTelemetry Python SDK's own
# encoders (the Zipkin JSON v2 exporter's body, the Jaeger gRPC exporter's PostSpansRequest),
# SPANS spans per request, and replayed unchanged by the same script (http.client keep-alive
# connections; one grpcio channel with CONNECTIONS calls in flight). The driver runs on the same
# machine and is not counted: pin it away from the peer (DRIVER_CPUS, PEER_CPUS) on a machine
# with cores to spare. Python drives a few thousand requests/s: when both peers reach the same
# spans/s the run was driver-bound, and only spans per CPU-second compare them.
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME [receivers-<UTC date>-<time>]  OUT [benches/results/RUN_NAME]
#   RECEIVERS ["zipkin-json jaeger-grpc"]  PEERS ["shardtel otelcol"]
#   SPANS [200] (per request)  CONNECTIONS [8]  DURATION [60] (s measured)  WARMUP [10] (s)
#   PORT_BASE [27400] (shardtel zipkin +11, jaeger +50, metrics +888, health +133; the
#                      Collector zipkin +12, jaeger +51, metrics +889)
#   SHARDTEL_CORES ["all"]  SHARDTEL_BIN  use this binary instead of building it (release)
#   OTELCOL_BIN / SHARDTEL_OTELCOL_BIN  the Collector (default: tests/peers/otelcol/build.sh)
#   SHARDTEL_CLIENTS_DIR  the Python venvs (default: tests/peers/clients/setup.sh)
#   PEER_CPUS, DRIVER_CPUS  taskset CPU lists for the peer and the driver (default: unpinned)
#
# Writes OUT/table.md and OUT/raw/ (payloads, configs, logs, driver output). Every process
# started here is stopped by its PID.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-receivers-$(date -u +%Y%m%d-%H%M%S)}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
RECEIVERS=${RECEIVERS:-"zipkin-json jaeger-grpc"}
PEERS=${PEERS:-"shardtel otelcol"}
SPANS=${SPANS:-200}
CONNECTIONS=${CONNECTIONS:-8}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-10}
PORT_BASE=${PORT_BASE:-27400}
SHARDTEL_CORES=${SHARDTEL_CORES:-'"all"'}
mkdir -p "$RAW"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
die() { echo "receivers.sh: $*" >&2; exit 1; }
# pin CPUS CMD...: CMD, under taskset when CPUS is set (taskset execs CMD: a background pin's
# $! is CMD's PID).
pin() { local cpus=$1; shift; if [ -n "$cpus" ]; then exec taskset -c "$cpus" "$@"; else exec "$@"; fi; }
run() { ( pin "$@" ); }  # in the foreground

if [[ " $PEERS " == *" shardtel "* ]] && [ -z "${SHARDTEL_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-engine --bin shardtel) || die "cargo build --release failed"
fi
SHARDTEL_BIN=${SHARDTEL_BIN:-$ROOT/target/release/shardtel}
if [[ " $PEERS " == *" otelcol "* ]]; then
  OTELCOL_BIN=${OTELCOL_BIN:-${SHARDTEL_OTELCOL_BIN:-}}
  [ -n "$OTELCOL_BIN" ] || OTELCOL_BIN=$("$ROOT/tests/peers/otelcol/build.sh") || die "building the Collector failed"
fi
CLIENTS=${SHARDTEL_CLIENTS_DIR:-$("$ROOT/tests/peers/clients/setup.sh" | tail -1)}
[ -f "$CLIENTS/.done" ] || die "no test clients in $CLIENTS (tests/peers/clients/setup.sh)"
DRIVER=$HERE/receivers_driver.py
venv_of() { case $1 in zipkin-json) echo "$CLIENTS/otel/bin/python" ;; jaeger-grpc) echo "$CLIENTS/jaeger/bin/python" ;; *) die "unknown receiver $1" ;; esac; }

for r in $RECEIVERS; do
  "$(venv_of "$r")" "$DRIVER" encode "$r" "$RAW/$r.payload" "$SPANS" >>"$RAW/payloads.txt" \
    || die "encoding the $r payload failed"
done

cpu_ticks() { [ -r "/proc/$1/stat" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
hz=$(getconf CLK_TCK)
# accepted METRICS_ADDR NAME RECEIVER: the sum of NAME{receiver="RECEIVER",...} (with or
# without _total).
accepted() {
  curl -fsS "http://$1/metrics" 2>/dev/null | awk -v n="$2" -v r="receiver=\"$3\"" '
    ($1 ~ "^"n"(_total)?\\{") && index($1, r) {s += $NF} END {printf "%.0f", s}'
}

{
  echo "# receivers: $SPANS spans per request, $CONNECTIONS connections, ${DURATION}s measured ($(date -u +%FT%TZ))"
  echo
  echo "| receiver | peer | spans/s | CPU | spans per CPU-second | requests ok / sent | counted / sent spans |"
  echo "|---|---|---|---|---|---|---|"
} >"$OUT/table.md"

# measure PEER PID METRICS_ADDR COUNTER RECEIVER TARGET: warm up, then DURATION measured.
measure() {
  local peer=$1 pid=$2 addr=$3 counter=$4 receiver=$5 format=$6 target=$7
  local python; python=$(venv_of "$format")
  run "${DRIVER_CPUS:-}" "$python" "$DRIVER" send "$format" "$target" "$RAW/$format.payload" "$WARMUP" "$CONNECTIONS" \
    >"$RAW/$peer-$format-warmup.txt" 2>&1 || die "$peer $format: the driver failed: $(cat "$RAW/$peer-$format-warmup.txt")"
  local c0 a0 c1 a1
  sleep 1.5  # the peers publish their counters about once a second: the warm-up's are in
  c0=$(cpu_ticks "$pid"); a0=$(accepted "$addr" "$counter" "$receiver")
  run "${DRIVER_CPUS:-}" "$python" "$DRIVER" send "$format" "$target" "$RAW/$format.payload" "$DURATION" "$CONNECTIONS" \
    >"$RAW/$peer-$format.txt" 2>&1 || die "$peer $format: the driver failed: $(cat "$RAW/$peer-$format.txt")"
  sleep 1.5
  c1=$(cpu_ticks "$pid"); a1=$(accepted "$addr" "$counter" "$receiver")
  python3 - "$format" "$peer" "$c0" "$c1" "$a0" "$a1" "$hz" "$DURATION" "$(tail -1 "$RAW/$peer-$format.txt")" "$SPANS" >>"$OUT/table.md" <<'PY'
import sys
fmt, peer, c0, c1, a0, a1, hz, dur, driver, per_request = sys.argv[1:]
cpu_s = (int(c1) - int(c0)) / int(hz)
spans = float(a1 or 0) - float(a0 or 0)
fields = dict(kv.split("=") for kv in driver.split())
per_cpu = spans / cpu_s if cpu_s else float("nan")
print(f"| {fmt} | {peer} | {spans / float(dur):,.0f} | {100 * cpu_s / float(dur):.1f} % | "
      f"{per_cpu:,.0f} | {fields.get('ok', '?')} / {fields.get('requests', '?')} | "
      f"{spans:,.0f} / {int(fields.get('ok', 0)) * int(per_request):,} |")
PY
}

wait_ready() {  # URL
  for _ in $(seq 1 150); do curl -fs -o /dev/null --max-time 1 "$1" && return 0; sleep 0.2; done
  return 1
}

for peer in $PEERS; do
  case $peer in
    shardtel)
      zipkin=127.0.0.1:$((PORT_BASE + 11)); jaeger=127.0.0.1:$((PORT_BASE + 50))
      metrics=127.0.0.1:$((PORT_BASE + 888)); health=127.0.0.1:$((PORT_BASE + 133))
      cat >"$RAW/shardtel.toml" <<TOML
[engine]
cores = $SHARDTEL_CORES
data_dir = "$RAW/shardtel-data"
durability = "none"

[telemetry]
health = "$health"
metrics = "$metrics"

[receivers.zipkin]
endpoint = "$zipkin"

[receivers.jaeger]
grpc = "$jaeger"
thrift_http = false

[exporters.blackhole]

[pipelines.traces]
receivers = ["zipkin", "jaeger"]
exporters = ["blackhole"]
TOML
      "$SHARDTEL_BIN" validate --config "$RAW/shardtel.toml" >/dev/null || die "the shardtel config does not validate"
      pin "${PEER_CPUS:-}" "$SHARDTEL_BIN" --config "$RAW/shardtel.toml" >"$RAW/shardtel.log" 2>&1 &
      pid=$!; pids+=("$pid")
      wait_ready "http://$health/" || die "shardtel did not start: $(tail -5 "$RAW/shardtel.log")"
      counter=shardtel_receiver_accepted_spans
      ;;
    otelcol)
      zipkin=127.0.0.1:$((PORT_BASE + 12)); jaeger=127.0.0.1:$((PORT_BASE + 51))
      metrics=127.0.0.1:$((PORT_BASE + 889))
      cat >"$RAW/otelcol.yaml" <<YAML
receivers:
  zipkin:
    endpoint: $zipkin
  jaeger:
    protocols:
      grpc:
        endpoint: $jaeger
exporters:
  nop:
service:
  telemetry:
    metrics:
      readers:
        - pull:
            exporter:
              prometheus: {host: 127.0.0.1, port: $((PORT_BASE + 889))}
  pipelines:
    traces:
      receivers: [zipkin, jaeger]
      exporters: [nop]
YAML
      pin "${PEER_CPUS:-}" "$OTELCOL_BIN" --config "$RAW/otelcol.yaml" >"$RAW/otelcol.log" 2>&1 &
      pid=$!; pids+=("$pid")
      wait_ready "http://$metrics/metrics" || die "the Collector did not start: $(tail -5 "$RAW/otelcol.log")"
      counter=otelcol_receiver_accepted_spans
      ;;
    *) die "unknown peer $peer (shardtel, otelcol)" ;;
  esac
  for r in $RECEIVERS; do
    case $r in
      zipkin-json) measure "$peer" "$pid" "$metrics" "$counter" zipkin "$r" "http://$zipkin/api/v2/spans" ;;
      jaeger-grpc) measure "$peer" "$pid" "$metrics" "$counter" jaeger "$r" "$jaeger" ;;
    esac
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
{
  echo
  echo "Payloads: $(paste -sd';' "$RAW/payloads.txt"). spans/s and spans per CPU-second count what each peer's"
  echo "own counter accepted (shardtel_receiver_accepted_spans_total, otelcol_receiver_accepted_spans);"
  echo "CPU is the peer's alone (the driver is not counted)."
} >>"$OUT/table.md"
cat "$OUT/table.md"
