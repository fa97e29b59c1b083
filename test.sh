#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust installed:
#   ./test.sh
# Installs what the tests need, then runs format and lint checks, every
# unit, property and end-to-end test, and builds the fuzz targets.
# Env: SKIP_LINT=1 (skip fmt/clippy), SKIP_FUZZ=1 (skip the fuzz build).
set -euo pipefail
cd "$(dirname "$0")"

step() { printf '\n==> %s\n' "$*"; }

step "tools"
need=()
command -v curl >/dev/null || need+=(curl)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

if [ -z "${SKIP_LINT:-}" ]; then
  step "cargo fmt --check"
  cargo fmt --all --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

step "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/shardtel-test.log
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "cargo test failed ($status)"; exit "$status"; }

if [ -z "${SKIP_FUZZ:-}" ]; then
  step "fuzz targets build"
  command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --quiet
  (cd protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --dev)
fi

passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' /tmp/shardtel-test.log | awk '{s+=$4} END{print s+0}')
failed=$(grep -Eo '[0-9]+ failed' /tmp/shardtel-test.log | awk '{s+=$1} END{print s+0}')
echo
echo "${passed} passed, ${failed} failed"
