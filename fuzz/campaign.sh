#!/usr/bin/env bash
# The fuzzing campaign: every target in fuzz/Cargo.toml runs until it has made
# $MAX_EXECS executions (default 10 million) or $MAX_TIME seconds have passed (default 3600),
# whichever comes first, one target at a time with one job each. It records, per target,
# executions, time, executions per second, corpus size, coverage and findings, in
# fuzz/campaign/RESULTS.md (and the full libFuzzer logs next to it).
#
#   fuzz/campaign.sh                      # every target
#   fuzz/campaign.sh json grpc            # only these
#   MAX_TIME=60 fuzz/campaign.sh          # a short run
#   SMOKE=1 fuzz/campaign.sh              # test.sh's smoke: a few seconds each, no record
#
# A finding (crash, leak, timeout, out-of-memory) leaves its input in
# fuzz/artifacts/TARGET/; reproduce it with `cargo fuzz run -s none -a TARGET FILE`, then turn
# it into a fix and a regression test next to the code. The corpus (fuzz/corpus/TARGET) is
# kept between runs and seeded from the repository's examples on the first run.
#
# Built with -s none (no sanitizer: stable Rust) and -a (debug assertions: integer overflow
# panics instead of wrapping, as in a debug build).
set -uo pipefail
cd "$(dirname "$0")"

max_execs="${MAX_EXECS:-10000000}"
max_time="${MAX_TIME:-3600}"
smoke="${SMOKE:-}"
if [ -n "$smoke" ]; then
  max_time="${SMOKE_TIME:-8}"
fi

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --quiet
cargo fuzz build -s none -a || exit 1

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list)
fi

# Seeds: the repository's own inputs, where a target reads a format people write by hand.
seed() {
  local target=$1 dir=corpus/$1
  mkdir -p "$dir"
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return
  case "$target" in
    json)
      # The signal byte ('0' traces, '1' metrics, '2' logs: 0x30 % 3 = 0, ...), then the body.
      for pair in 0:trace 1:metrics 2:logs; do
        { printf '%s' "${pair%%:*}"; cat "../protocol/tests/data/${pair#*:}.json"; } >"$dir/spec-${pair#*:}"
      done ;;
    config)
      # No variable value (a zero length), then the file.
      for f in ../config/examples/*.toml ../config/src/default.toml; do
        { printf '\0\0'; cat "$f"; } >"$dir/$(basename "$f")"
      done ;;
  esac
}

# libFuzzer options: its RSS limit (2 GiB) catches runaway memory; -timeout catches hangs.
binary() { echo "target/x86_64-unknown-linux-gnu/release/$1"; }
mkdir -p campaign artifacts
results=campaign/RESULTS.md
if [ -z "$smoke" ]; then
  {
    echo "# Fuzzing campaign $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' (with local changes)'), $(nproc) CPUs, limit $max_execs executions or ${max_time}s per target; \`cargo fuzz build -s none -a\`."
    echo
    echo "| target | executions | time (s) | exec/s | corpus | coverage | findings |"
    echo "|---|---:|---:|---:|---:|---:|---|"
  } >"$results"
fi

failed=0
for t in "${targets[@]}"; do
  seed "$t"
  mkdir -p "artifacts/$t"
  log="campaign/$t.log"
  start=$(date +%s)
  "$(binary "$t")" "corpus/$t" \
    -runs="$max_execs" -max_total_time="$max_time" -timeout=30 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
  status=$?
  secs=$(( $(date +%s) - start ))
  execs=$(grep -aEo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  rate=$(grep -aEo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  cov=$(grep -aEo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
  corpus=$(find "corpus/$t" -type f | wc -l)
  found=$(find "artifacts/$t" -type f | wc -l)
  if [ "$status" -eq 0 ] && [ "$found" -eq 0 ]; then
    findings="none"
  else
    failed=1
    findings="exit $status; $(grep -a -m1 -E 'panicked at|ERROR: libFuzzer' "$log" | cut -c1-120); inputs: artifacts/$t/"
  fi
  printf '%-16s %12s execs %6ss  %s\n' "$t" "${execs:-?}" "$secs" "$findings"
  if [ -z "$smoke" ]; then
    echo "| $t | ${execs:-?} | $secs | ${rate:-?} | $corpus | ${cov:-?} | $findings |" >>"$results"
  fi
done
[ -z "$smoke" ] && echo && echo "recorded in fuzz/$results"
exit $failed
