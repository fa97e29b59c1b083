#!/usr/bin/env bash
# sampler-callgrind.sh - instructions executed per span by tail sampling, counted by callgrind:
# valid on a busy machine (instruction counts do not depend on other load), unlike wall time.
#
# Runs sampler/examples/sampler_path.rs under valgrind --tool=callgrind in four modes on the
# same fixed workload (REQUESTS requests of 100 spans, every trace split in 3 pieces arriving
# a request apart, as loadgen --split-traces 3 sends them; a simulated clock of 5 ms per
# request, so decision_wait = 10s holds 2,000 requests and the timer decides as at steady state):
#   none    builds the workload only
#   scan    + the receiving core's scan of every request (what the plain path pays per span too)
#   route   + the partition by owner core on 2 cores
#   sample  + the two cores' samplers (reference policies, decision_wait = 10s), the timer
#           ticked every request, kept spans re-framed as the owner core exports them
# and prints instructions (Ir) per span of each step against the previous one, so
# "sample - route" is what the sampler itself costs per span and "scan - none" a yardstick of
# the plain path's scan.
#
#   benches/e2e/sampler-callgrind.sh                # REQUESTS=6000 (600,000 spans)
#   REQUESTS=3000 MODES="none sample" benches/e2e/sampler-callgrind.sh
#
# Knobs: REQUESTS [6000], MODES [none scan route sample], OUT [target/callgrind-sampler-<date>].
# Needs valgrind (apt-get install valgrind).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REQUESTS=${REQUESTS:-6000}
MODES=${MODES:-"none scan route sample"}
OUT=${OUT:-$ROOT/target/callgrind-sampler-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
die() { echo "sampler-callgrind.sh: $*" >&2; exit 1; }
command -v valgrind >/dev/null || die "valgrind is not installed (apt-get install valgrind)"
(cd "$ROOT" && cargo build --release -q -p shardtel-sampler --example sampler_path) \
  || die "cargo build --release -p shardtel-sampler --example sampler_path failed"
BIN=$ROOT/target/release/examples/sampler_path

declare -A IR
SPANS=0
prev=""
for mode in $MODES; do
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$mode" \
    "$BIN" "$mode" "$REQUESTS" >"$OUT/$mode.txt" 2>"$OUT/$mode.valgrind.txt" || die "$mode failed: $(tail -3 "$OUT/$mode.valgrind.txt")"
  IR[$mode]=$(sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$OUT/callgrind.$mode" | head -1)
  SPANS=$(sed -nE 's/.* spans ([0-9]+) .*/\1/p' "$OUT/$mode.txt")
  callgrind_annotate --inclusive=yes "$OUT/callgrind.$mode" >"$OUT/$mode.annotate.txt" 2>/dev/null || true
  callgrind_annotate "$OUT/callgrind.$mode" >"$OUT/$mode.self.txt" 2>/dev/null || true
  printf '%-7s Ir %14d   %s\n' "$mode" "${IR[$mode]}" "$(cat "$OUT/$mode.txt")" | tee -a "$OUT/summary.txt"
  if [ -n "$prev" ]; then
    printf '%-7s - %-7s Ir/span %d (%d spans)\n' "$mode" "$prev" $(((IR[$mode] - IR[$prev]) / SPANS)) "$SPANS" | tee -a "$OUT/summary.txt"
  fi
  prev=$mode
done
echo "results in $OUT (summary.txt, *.annotate.txt inclusive, *.self.txt exclusive)"
