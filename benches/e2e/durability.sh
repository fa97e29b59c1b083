#!/usr/bin/env bash
# durability = "ack_after_sync" against "none", end to end, on this machine's disk:
#  1. peak: closed-loop loadgen (gRPC, CONNECTIONS x CONCURRENCY requests in flight) for DURATION,
#     acknowledged spans/s (target: "ack_after_sync" at most 30% below "none");
#  2. latency: open-loop loadgen at 50% of that mode's peak for DURATION, acknowledgement
#     latency p50/p99/p99.9 from the intended send time (HdrHistogram, .hgrm kept).
# Both against benches/e2e/blackhole.toml ("none") and blackhole-durable.toml (ingest log on
# disk in /tmp/shardtel-e2e-data: put /tmp on the disk you want to measure).
# Env: DURATION (20s), CONNECTIONS (8), CONCURRENCY (8), LOADGEN_CPUS (0), OUT (results dir),
# DURABLE_CONFIG (benches/e2e/blackhole-durable.toml: the "ack_after_sync" configuration).
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-8}
CONCURRENCY=${CONCURRENCY:-8}
LOADGEN_CPUS=${LOADGEN_CPUS:-0}
DURABLE_CONFIG=${DURABLE_CONFIG:-benches/e2e/blackhole-durable.toml}
OUT=${OUT:-benches/results/durability-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cargo build --release -q -p shardtel-engine -p shardtel-loadgen
LOADGEN=target/release/shardtel-loadgen
ack_rate() { python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["achieved"]["acknowledged_items_per_second"]))' "$1"; }
printf '| mode | peak acked spans/s | rate for latency | p50 ms | p99 ms | p99.9 ms | refused | failed |\n|---|---|---|---|---|---|---|---|\n' >"$OUT/table.md"
for mode in none ack_after_sync; do
  cfg=benches/e2e/blackhole.toml
  [ "$mode" = ack_after_sync ] && cfg=$DURABLE_CONFIG
  rm -rf /tmp/shardtel-e2e-data
  target/release/shardtel --config "$cfg" 2>"$OUT/$mode-shardtel.log" &
  pid=$!
  for _ in $(seq 1 100); do curl -fs http://127.0.0.1:13133/ >/dev/null && break; sleep 0.1; done
  "$LOADGEN" --cpus "$LOADGEN_CPUS" -p grpc -e http://127.0.0.1:4317 --connections "$CONNECTIONS" \
    --concurrency "$CONCURRENCY" -d "$DURATION" -q --json "$OUT/$mode-peak.json" >"$OUT/$mode-peak.txt"
  peak=$(ack_rate "$OUT/$mode-peak.json")
  half=$((peak / 2))
  "$LOADGEN" --cpus "$LOADGEN_CPUS" -p grpc -e http://127.0.0.1:4317 --connections "$CONNECTIONS" \
    --rate "$half" -d "$DURATION" -q --json "$OUT/$mode-half.json" --hgrm "$OUT/$mode-half.hgrm" \
    >"$OUT/$mode-half.txt"
  curl -fs http://127.0.0.1:8888/metrics >"$OUT/$mode-metrics.txt" || true
  kill "$pid"; wait "$pid" || true
  python3 - "$mode" "$peak" "$half" "$OUT/$mode-half.json" >>"$OUT/table.md" <<'PY'
import json, sys
mode, peak, half, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
lat = r["latency_us"]
q = lambda k: lat.get(k, 0) / 1000
req = r["requests"]
print(f"| {mode} | {peak:,} | {half:,} | {q('p50'):.2f} | {q('p99'):.2f} | {q('p999'):.2f} | {req.get('refused', 0)} | {req.get('failed', 0)} |")
PY
done
cat "$OUT/table.md"
