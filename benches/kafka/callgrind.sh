#!/usr/bin/env bash
# callgrind.sh - instructions executed per span on the gateway's Kafka export path, counted by
# callgrind: valid on a busy machine (instruction counts do not depend on other load), unlike
# wall time.
#
# Runs benches/src/bin/kafka-path.rs (shardtel-kafka-path) under valgrind --tool=callgrind in
# three modes on the same fixed workload (BATCHES export batches of up to 8192 spans, built
# from benches/data as the receiving and owner cores build them):
#   none    builds the workload only
#   before  the exporter's message path before the rewrite (join, scan, sort, re-frame into
#           chunks, copy to one Bytes per message, librdkafka enqueue)
#   after   the exporter's message path from a batch of bytes (shardtel_sinks::TraceMessages:
#           join, structural scan, group, write each value once into a reused buffer,
#           librdkafka enqueue): a disk queue, or a processor-tier batch
#   indexed the same from the owner cores' span indexes handed over with the batch (the
#           default memory queue of a gateway): no join, no scan
# and prints the instructions (Ir, all threads) per span of before and after, with `none`
# subtracted. librdkafka's enqueue (copy, key, queue) is counted; its broker threads'
# batching, compression and network are not (the producer has no broker).
#
# Why not the whole shardtel process: under valgrind a glommio reactor blocked in
# io_uring_enter holds valgrind's global lock, so librdkafka's threads starve and a run
# never finishes.
#
#   benches/kafka/callgrind.sh                  # BATCHES=40 (327,680 spans)
#   BATCHES=10 benches/kafka/callgrind.sh
#
# Knobs: BATCHES [40], MODES [none before after indexed], OUT [target/callgrind-kafka-<date>].
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BATCHES=${BATCHES:-40}
MODES=${MODES:-"none before after indexed"}
OUT=${OUT:-$ROOT/target/callgrind-kafka-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
die() { echo "callgrind.sh: $*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
(cd "$ROOT" && cargo build --release -q -p shardtel-benches --bin shardtel-kafka-path) \
  || die "cargo build --release -p shardtel-benches failed"
BIN=$ROOT/target/release/shardtel-kafka-path

declare -A IR
SPANS=0
for mode in $MODES; do
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$mode" \
    "$BIN" "$mode" "$BATCHES" >"$OUT/$mode.txt" 2>"$OUT/$mode.valgrind.txt" || die "$mode failed: $(tail -3 "$OUT/$mode.valgrind.txt")"
  IR[$mode]=$(sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$OUT/callgrind.$mode" | head -1)
  SPANS=$(sed -nE 's/.* spans ([0-9]+) .*/\1/p' "$OUT/$mode.txt")
  callgrind_annotate --inclusive=yes "$OUT/callgrind.$mode" >"$OUT/$mode.annotate.txt" 2>/dev/null || true
  printf '%-7s Ir %14d   %s\n' "$mode" "${IR[$mode]}" "$(cat "$OUT/$mode.txt")" | tee -a "$OUT/summary.txt"
done
if [ -n "${IR[none]:-}" ]; then
  for mode in before after indexed; do
    [ -n "${IR[$mode]:-}" ] || continue
    printf '%-7s Ir/span %d (none subtracted, %d spans)\n' "$mode" $(((IR[$mode] - IR[none]) / SPANS)) "$SPANS" | tee -a "$OUT/summary.txt"
  done
fi
echo "results in $OUT (summary.txt, *.annotate.txt)"
