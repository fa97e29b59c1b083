#!/usr/bin/env bash
# ceiling.sh - the Kafka side alone: how many spans/s this machine moves from a bare producer
# into the broker, and what that costs in CPU per span, to read the gateway's figures of
# benches/e2e/kafka.sh against.
#
# Runs shardtel-kafka-path (benches/src/bin/kafka-path.rs) with BROKER set: it builds a fixed
# workload (BATCHES export batches of up to 8192 spans, from benches/data, as the receiving and
# owner cores build them), then cuts every batch into trace messages with the exporter's code
# (shardtel_sinks::TraceMessages) and produces them with the exporter's defaults (lz4, acks
# all, idempotence) from one thread, waits for every delivery, and prints the spans/s of that
# phase. No OTLP receiving, no ingest log, no load generator: what is left is message
# building, librdkafka (enqueue, batching, lz4, protocol, delivery reports) and the broker.
# CPU: the producer process (utime+stime, minus a `none` run that only builds the workload)
# and the broker (pid listening on BROKER's port) over the run.
#
#   benches/kafka/ceiling.sh                       # BATCHES=400 (3.3M spans), 8 partitions
#   BATCHES=100 PARTITIONS=4 benches/kafka/ceiling.sh
#
# Knobs: BROKER [127.0.0.1:9092] (test.sh, or `tests/peers/kafka/kafka.sh start`, starts Apache
# Kafka there), BATCHES [400], PARTITIONS [8].
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BROKER=${BROKER:-127.0.0.1:9092}
BATCHES=${BATCHES:-400}
PARTITIONS=${PARTITIONS:-8}
die() { echo "ceiling.sh: $*" >&2; exit 1; }
(exec 3<>"/dev/tcp/${BROKER%:*}/${BROKER#*:}") 2>/dev/null || die "no Kafka broker on $BROKER (tests/peers/kafka/kafka.sh start)"
(cd "$ROOT" && cargo build --release -q -p shardtel-benches --bin shardtel-kafka-path --bin shardtel-kafka-topic) \
  || die "cargo build --release -p shardtel-benches failed"
BIN=$ROOT/target/release/shardtel-kafka-path
HZ=$(getconf CLK_TCK)
BROKER_PID=$(ss -ltnpH "( sport = :${BROKER#*:} )" 2>/dev/null | sed -nE 's/.*pid=([0-9]+).*/\1/p' | head -1)
ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }

# CPU seconds (user+sys) of a command, from bash's `times`-free way: /usr/bin/time's format.
cpu_of() {  # output-file command...
  local out=$1; shift
  /usr/bin/time -f "%U %S" -o "$out.time" "$@" >"$out" 2>&1 || die "$* failed: $(cat "$out")"
  awk '{print $1 + $2}' "$out.time"
}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

BUILD_CPU=$(cpu_of "$TMP/none" "$BIN" none "$BATCHES")
TOPIC=ceiling-spans-$(date +%s%N)
"$ROOT/target/release/shardtel-kafka-topic" create "$BROKER" "$TOPIC" "$PARTITIONS" || die "cannot create $TOPIC"
b0=$(ticks "$BROKER_PID")
RUN_CPU=$(BROKER=$BROKER TOPIC=$TOPIC cpu_of "$TMP/after" "$BIN" after "$BATCHES")
b1=$(ticks "$BROKER_PID")
cat "$TMP/after"
read -r SPANS SECS RATE < <(sed -nE 's/^delivered ([0-9]+) spans in [0-9]+ messages in ([0-9.]+) s: ([0-9]+) spans\/s$/\1 \2 \3/p' "$TMP/after")
[ -n "${RATE:-}" ] || die "no delivery line in the output"
python3 - "$SPANS" "$SECS" "$RATE" "$BUILD_CPU" "$RUN_CPU" "$b0" "$b1" "$HZ" <<'PY'
import sys
spans, secs, rate, build, run, b0, b1, hz = map(float, sys.argv[1:])
producer = max(run - build, 0.0)
broker = (b1 - b0) / hz
print(f"| bare producer -> broker | {rate:.0f} spans/s | producer CPU {producer:.2f} s ({1e6*producer/spans:.2f} µs/span: "
      f"message building + librdkafka) | broker CPU {broker:.2f} s ({1e6*broker/spans:.2f} µs/span) | "
      f"both {100*(producer+broker)/secs:.0f} % of one core over the {secs:.2f} s of producing |")
PY
