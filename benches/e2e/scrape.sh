#!/usr/bin/env bash
# scrape.sh - the prometheus scrape receiver at scale: TARGETS static targets x SERIES series
# each, scraped every INTERVAL into a blackhole, by shardtel and (when the Collector peer has
# the prometheus receiver) by the OpenTelemetry Collector on the same targets. Records each
# one's CPU (utime+stime of all threads, 100 % = one core) over the measured window, its RSS at
# the end, samples scraped per second (from its own counters), and CPU-seconds per million
# samples. The targets come from scrape_targets.py (one Python process, one port per target,
# a pre-generated 0.0.4 exposition).
#
#   benches/e2e/scrape.sh                                           # 1000 x 1000 at 15s, ~3 min
#   TARGETS=20 SERIES=100 INTERVAL=2s DURATION=10 WARMUP=4 benches/e2e/scrape.sh   # smoke test
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME [scrape-<UTC date>-<time>]  OUT [benches/results/RUN_NAME]
#   TARGETS [1000]  SERIES [1000]  INTERVAL [15s]  TIMEOUT [INTERVAL]  DURATION [120] (s measured)  WARMUP [20] (s)
#   TARGET_PORT [30000] (targets on TARGET_PORT .. TARGET_PORT+TARGETS-1)
#   PORT_BASE [27000] (shardtel's metrics +888, health +133)
#   SHARDTEL_CORES ["all"]   SHARDTEL_BIN  use this binary instead of building it
#   OTELCOL_BIN  a Collector with the prometheus receiver; without one (the peer build in
#                tests/peers/otelcol does not include it yet) the Collector step is skipped
#                and the table says so.
#
# Writes OUT/table.md and OUT/raw/ (configs, logs). Every process started here is stopped by
# its PID.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-scrape-$(date -u +%Y%m%d-%H%M%S)}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
TARGETS=${TARGETS:-1000}
SERIES=${SERIES:-1000}
INTERVAL=${INTERVAL:-15s}
TIMEOUT=${TIMEOUT:-$INTERVAL}
DURATION=${DURATION:-120}
WARMUP=${WARMUP:-20}
TARGET_PORT=${TARGET_PORT:-30000}
PORT_BASE=${PORT_BASE:-27000}
SHARDTEL_CORES=${SHARDTEL_CORES:-'"all"'}
METRICS=127.0.0.1:$((PORT_BASE + 888)); HEALTH=127.0.0.1:$((PORT_BASE + 133))
mkdir -p "$RAW"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
die() { echo "scrape.sh: $*" >&2; exit 1; }

if [ -z "${SHARDTEL_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-engine --bin shardtel) || die "cargo build --release failed"
fi
SHARDTEL_BIN=${SHARDTEL_BIN:-$ROOT/target/release/shardtel}

ulimit -n 65536 2>/dev/null || true
python3 "$HERE/scrape_targets.py" "$TARGET_PORT" "$TARGETS" "$SERIES" >"$RAW/targets.log" 2>&1 &
targets_pid=$!; pids+=("$targets_pid")
for _ in $(seq 1 100); do grep -q serving "$RAW/targets.log" 2>/dev/null && break; sleep 0.2; done
grep -q serving "$RAW/targets.log" || die "the targets did not start: $(cat "$RAW/targets.log")"

target_list=$(seq "$TARGET_PORT" $((TARGET_PORT + TARGETS - 1)) | sed 's/^/"127.0.0.1:/; s/$/"/' | paste -sd, -)
cpu_ticks() { [ -r "/proc/$1/stat" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hz=$(getconf CLK_TCK)
metric() { curl -fsS "http://$1/metrics" 2>/dev/null | awk -v n="$2" '$1 ~ "^"n"({|$)" {s += $2} END {printf "%.0f", s}'; }

# measure NAME PID METRICS_ADDR METRIC: CPU and samples over DURATION after WARMUP.
measure() {
  local name=$1 pid=$2 addr=$3 counter=$4
  sleep "$WARMUP"
  local c0 s0 c1 s1
  c0=$(cpu_ticks "$pid"); s0=$(metric "$addr" "$counter")
  sleep "$DURATION"
  c1=$(cpu_ticks "$pid"); s1=$(metric "$addr" "$counter")
  local rss; rss=$(rss_kib "$pid")
  python3 - "$name" "$c0" "$c1" "$s0" "$s1" "$hz" "$DURATION" "$rss" >>"$OUT/table.md" <<'PY'
import sys
name, c0, c1, s0, s1, hz, dur, rss = sys.argv[1:]
cpu_s = (int(c1) - int(c0)) / int(hz)
samples = (float(s1 or 0) - float(s0 or 0))
per_s = samples / float(dur)
print(f"| {name} | {per_s:,.0f} | {100 * cpu_s / float(dur):.1f} % | "
      f"{(cpu_s / (samples / 1e6)) if samples else float('nan'):.2f} | {int(rss) / 1024:.0f} MiB |")
PY
}

{
  echo "# scrape: $TARGETS targets x $SERIES series every $INTERVAL ($(date -u +%FT%TZ))"
  echo
  echo "| receiver | samples/s | CPU | CPU-s per 1M samples | RSS |"
  echo "|---|---|---|---|---|"
} >"$OUT/table.md"

cat >"$RAW/shardtel.toml" <<TOML
[engine]
cores = $SHARDTEL_CORES
data_dir = "$RAW/shardtel-data"
durability = "none"

[telemetry]
health = "$HEALTH"
metrics = "$METRICS"

[[receivers.prometheus.scrape_configs]]
job_name = "bench"
scrape_interval = "$INTERVAL"
scrape_timeout = "$TIMEOUT"
static_configs = [{ targets = [$target_list] }]

[exporters.blackhole]

[pipelines.metrics]
receivers = ["prometheus"]
exporters = ["blackhole"]
TOML
"$SHARDTEL_BIN" validate --config "$RAW/shardtel.toml" >/dev/null || die "the shardtel config does not validate"
"$SHARDTEL_BIN" --config "$RAW/shardtel.toml" >"$RAW/shardtel.log" 2>&1 &
st_pid=$!; pids+=("$st_pid")
for _ in $(seq 1 100); do curl -fsS "http://$HEALTH/" >/dev/null 2>&1 && break; sleep 0.1; done
measure shardtel "$st_pid" "$METRICS" shardtel_receiver_prometheus_samples_total
kill "$st_pid"; wait "$st_pid" 2>/dev/null || true

OTELCOL_BIN=${OTELCOL_BIN:-${SHARDTEL_OTELCOL_BIN:-}}
if [ -n "$OTELCOL_BIN" ] && "$OTELCOL_BIN" components 2>/dev/null | grep -q "prometheus"; then
  otel_metrics=$((PORT_BASE + 889))
  {
    echo "receivers:"
    echo "  prometheus:"
    echo "    config:"
    echo "      scrape_configs:"
    echo "        - job_name: bench"
    echo "          scrape_interval: $INTERVAL"
    echo "          scrape_timeout: $TIMEOUT"
    echo "          static_configs:"
    echo "            - targets: [${target_list//\"/\'}]"
    echo "exporters:"
    echo "  nop:"
    echo "service:"
    echo "  telemetry:"
    echo "    metrics:"
    echo "      readers:"
    echo "        - pull:"
    echo "            exporter:"
    echo "              prometheus: {host: 127.0.0.1, port: $otel_metrics}"
    echo "  pipelines:"
    echo "    metrics:"
    echo "      receivers: [prometheus]"
    echo "      exporters: [nop]"
  } >"$RAW/otelcol.yaml"
  "$OTELCOL_BIN" --config "$RAW/otelcol.yaml" >"$RAW/otelcol.log" 2>&1 &
  oc_pid=$!; pids+=("$oc_pid")
  measure otelcol "$oc_pid" "127.0.0.1:$otel_metrics" otelcol_receiver_accepted_metric_points
  kill "$oc_pid"; wait "$oc_pid" 2>/dev/null || true
else
  echo "| otelcol | not run: no Collector with the prometheus receiver (OTELCOL_BIN) | | | |" >>"$OUT/table.md"
fi
echo >>"$OUT/table.md"
echo "(the Collector counts data points accepted, shardtel samples scraped: for these counters and gauges one sample is one point)" >>"$OUT/table.md"
cat "$OUT/table.md"
