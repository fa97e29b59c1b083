#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust installed:
#   ./test.sh
# Installs what the tests need, then runs format and lint checks, every
# unit, property and end-to-end test, and builds and smoke-runs the fuzz targets.
# Env: SKIP_LINT=1 (skip fmt/clippy), SKIP_FUZZ=1 (skip the fuzz build and smoke), SKIP_STACK=1
# (skip the examples/stack check), SHARDTEL_KAFKA_OPTIONAL=1 / SHARDTEL_PROMETHEUS_OPTIONAL=1 /
# SHARDTEL_OTELCOL_OPTIONAL=1 / SHARDTEL_BACKENDS_OPTIONAL=1 / SHARDTEL_CLIENTS_OPTIONAL=1 /
# SHARDTEL_NODE_EXPORTER_OPTIONAL=1 (skip those tests without their server, binary or clients),
# SHARDTEL_KAFKA_PORT / SHARDTEL_PROMETHEUS_PORT (ports of the servers it starts), SHARDTEL_OTELCOL_BIN and
# SHARDTEL_OTELCOL_ROUTING_BIN (Collectors to use as they are), SHARDTEL_CLIENTS_DIR (test
# clients to use).
set -euo pipefail
cd "$(dirname "$0")"

# Disk: a clean run builds ~2.2 GB in target/ (tests, clippy, the package's binaries) and
# ~0.9 GB in fuzz/target/, besides the peers' caches under ~/.cache and ~/go. Incremental
# compilation would add ~2 GB that a one-off run never reuses, so it is off here.
export CARGO_INCREMENTAL=0

step() { printf '\n==> %s\n' "$*"; }

step "disk"
free_gb() { echo $(( $(df -Pk . | awk 'NR==2 {print $4}') / 1048576 )); }
echo "$(free_gb) GB free on $(df -P . | awk 'NR==2 {print $6}')"
if [ "$(free_gb)" -lt 10 ]; then
  echo "warning: a run from a clean clone needs ~3 GB for target/ and fuzz/target/, and ~6 GB for the peers' Go caches the first time"
fi

step "tools"
need=()
command -v curl >/dev/null || need+=(curl)
command -v pkg-config >/dev/null || need+=(pkg-config)
# rdkafka builds its bundled librdkafka: make, and the system OpenSSL for TLS.
command -v make >/dev/null || need+=(make)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
# The Kafka broker for the tests (below) runs on Java 17 and is resolved by Maven; its test CA
# is made with openssl.
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

# Stops what this script started in the background (the Kafka broker; Prometheus below).
kafka_started=""
cleanup() {
  if [ -n "$kafka_started" ]; then tests/peers/kafka/kafka.sh stop || true; fi
}
trap cleanup EXIT

# ---- OpenTelemetry Collector (engine/tests/integration/otelcol{,_kafka,_processing,_routing}.rs)
# Built from the contrib Go modules pinned in tests/peers/otelcol/ (go.mod, go.sum, main.go) by
# its build.sh, once per manifest, into ~/.cache/shardtel/otelcol/<hash>/ (Go's module and
# build caches are kept as well). A cold build downloads ~600 MB of modules and costs ~270
# CPU-seconds (measured on 2 cores: 4 minutes at load 5, 14 at load 20; ~1.5 GB of Go caches);
# with Go's caches warm it takes ~15 s, with the binary cached nothing. Then, the same way, the
# Collector's routing build (tests/peers/otelcol-routing, contrib v0.148.0: its README says why
# it is a second build) into ~/.cache/shardtel/otelcol-routing/<hash>/ (~75 CPU-seconds cold),
# exported as SHARDTEL_OTELCOL_ROUTING_BIN. They run in the background, one after the other,
# while the lint steps run, and the tests wait for them. They need Go (the version of go.mod's
# `go` line; build.sh says what to install when it is missing). A SHARDTEL_OTELCOL_BIN or
# SHARDTEL_OTELCOL_ROUTING_BIN set by the caller is used as it is. Without the binaries the
# Collector tests fail, unless SHARDTEL_OTELCOL_OPTIONAL=1 (they skip loudly).
otelcol_pid=""
# Each build in turn, each path into target/; a TERM stops the running build.sh (which stops
# its go command).
build_otelcols() {
  local child=""
  trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi; exit 143' TERM
  if [ -z "${SHARDTEL_OTELCOL_BIN:-}" ]; then
    tests/peers/otelcol/build.sh >target/otelcol-path &
    child=$!
    wait "$child"
  fi
  if [ -z "${SHARDTEL_OTELCOL_ROUTING_BIN:-}" ]; then
    tests/peers/otelcol-routing/build.sh >target/otelcol-routing-path &
    child=$!
    wait "$child"
  fi
}
if [ -z "${SHARDTEL_OTELCOL_BIN:-}" ] || [ -z "${SHARDTEL_OTELCOL_ROUTING_BIN:-}" ]; then
  step "opentelemetry collector builds (background)"
  mkdir -p target
  build_otelcols 2>target/otelcol-build.log &
  otelcol_pid=$!
fi
stop_otelcol_build() { if [ -n "$otelcol_pid" ]; then kill "$otelcol_pid" 2>/dev/null || true; fi; }
trap 'cleanup; stop_otelcol_build' EXIT
wait_otelcol() {
  [ -n "$otelcol_pid" ] || return 0
  step "opentelemetry collector builds (waiting)"
  if wait "$otelcol_pid"; then
    if [ -z "${SHARDTEL_OTELCOL_BIN:-}" ]; then SHARDTEL_OTELCOL_BIN="$(cat target/otelcol-path)"; fi
    if [ -z "${SHARDTEL_OTELCOL_ROUTING_BIN:-}" ]; then
      SHARDTEL_OTELCOL_ROUTING_BIN="$(cat target/otelcol-routing-path)"
    fi
    export SHARDTEL_OTELCOL_BIN SHARDTEL_OTELCOL_ROUTING_BIN
    echo "$("$SHARDTEL_OTELCOL_BIN" --version) at $SHARDTEL_OTELCOL_BIN"
    echo "$("$SHARDTEL_OTELCOL_ROUTING_BIN" --version) at $SHARDTEL_OTELCOL_ROUTING_BIN"
  else
    cat target/otelcol-build.log
    [ "${SHARDTEL_OTELCOL_OPTIONAL:-}" = 1 ] || { echo "building the OpenTelemetry Collector failed"; exit 1; }
    echo "no OpenTelemetry Collector: its tests skip (SHARDTEL_OTELCOL_OPTIONAL=1)"
  fi
  otelcol_pid=""
}
# ---- end of OpenTelemetry Collector -------------------------------------------------------

# ---- Jaeger, VictoriaMetrics, VictoriaLogs (engine/tests/integration/{jaeger_backend,victoria*}.rs)
# Storage backends built from the Go modules pinned in tests/peers/{jaeger,victoriametrics,
# victorialogs}/ by tests/peers/go-build.sh, once per manifest, into ~/.cache/shardtel/<name>/
# (Go's module and build caches are kept as well). Cold, from empty Go caches (measured on 2
# cores shared with a load of 10-16): VictoriaMetrics 66 CPU-s (147 s there), VictoriaLogs
# 59 CPU-s (150 s), Jaeger 454 CPU-s (21 min there; ~4-5 min on 2 quiet cores); 1.8 GB of
# modules and 2 GB of build cache; binaries 18, 16 and 81 MiB. Warm Go caches: 3, 6 and 13 s
# (link only); binaries cached: nothing. Built in the background while the lint steps run
# (with the Collector's build, ~850 CPU-s cold in all); tests/peers/backends.sh then starts them on
# 127.0.0.1 (ports in its head) with data under target/backends/, exports their URLs, and
# they stop when this script exits. Without them the backend tests fail, unless
# SHARDTEL_BACKENDS_OPTIONAL=1 (they skip loudly). SKIP_STACK=1 skips the examples/stack check.
backends_pid=""
backends_dir="$PWD/target/backends"
step "jaeger, victoriametrics, victorialogs build (background)"
mkdir -p "$backends_dir"
# In a process group of its own (set -m), so that stopping it stops the go builds it started.
set -m
tests/peers/backends.sh build >"$backends_dir/paths" 2>"$backends_dir/build.log" &
backends_pid=$!
set +m
stop_backends() {
  if [ -n "$backends_pid" ]; then kill -TERM -- -"$backends_pid" 2>/dev/null || true; fi
  tests/peers/backends.sh stop "$backends_dir" 2>/dev/null || true
}
trap 'cleanup; stop_otelcol_build; stop_backends' EXIT
start_backends() {
  step "jaeger, victoriametrics, victorialogs"
  tests/peers/backends.sh stop "$backends_dir" # left over from a run that was killed
  if wait "$backends_pid" && tests/peers/backends.sh start "$backends_dir"; then
    # shellcheck disable=SC1091
    source "$backends_dir/env"
  else
    cat "$backends_dir/build.log"
    [ "${SHARDTEL_BACKENDS_OPTIONAL:-}" = 1 ] || { echo "building or starting the backends failed"; exit 1; }
    echo "no backends: their tests skip (SHARDTEL_BACKENDS_OPTIONAL=1)"
  fi
  backends_pid=""
}
# ---- end of Jaeger, VictoriaMetrics, VictoriaLogs -----------------------------------------

if [ -z "${SKIP_LINT:-}" ]; then
  step "cargo fmt --check"
  cargo fmt --all --check
  step "cargo clippy"
  cargo clippy --workspace --all-targets --quiet -- -D warnings
fi

# ---- Kafka broker (engine/tests/integration/kafka*.rs) ------------------------------------
# Apache Kafka (version pinned in tests/peers/kafka/pom.xml; jars resolved from Maven Central
# once into ~/.cache/shardtel, reused offline after that), one KRaft node with a fresh log
# directory, a test CA and SASL users, on 127.0.0.1:9092 (PLAINTEXT), :9093 (SASL_PLAINTEXT),
# :9094 (SSL, client certificates), :9095 (SASL_SSL), :9096 (controller); stopped when this
# script exits. Other tests may rely on it being up on :9092 during `cargo test`.
# SHARDTEL_KAFKA_PORT=N moves the five ports to N..N+4 (the Kafka tests follow it). An already
# running broker on that port is used as it is. Without a broker the Kafka tests fail,
# unless SHARDTEL_KAFKA_OPTIONAL=1 (they skip loudly).
step "kafka broker (Apache Kafka)"
kafka_port="${SHARDTEL_KAFKA_PORT:-9092}"
broker_up() { (exec 3<>"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null; }
kafka_t0=$(date +%s)
if broker_up; then
  echo "a broker already listens on 127.0.0.1:$kafka_port; using it"
elif tests/peers/kafka/kafka.sh start; then
  kafka_started=1
  echo "kafka setup took $(( $(date +%s) - kafka_t0 )) s"
elif [ "${SHARDTEL_KAFKA_OPTIONAL:-}" = 1 ]; then
  echo "!!!!!!!! no Kafka broker: the Kafka tests will skip (SHARDTEL_KAFKA_OPTIONAL=1) !!!!!!!!"
else
  echo "the Kafka broker did not start (SHARDTEL_KAFKA_OPTIONAL=1 skips the Kafka tests)"; exit 1
fi
# ---- end of Kafka broker ------------------------------------------------------------------

# ---- Prometheus (engine/tests/integration/prometheus.rs) ----------------------------------
# Debian's prometheus package (2.42) is installed if missing, without letting its packaged
# service start (a temporary policy-rc.d; on a systemd host the unit is stopped and disabled),
# then run on 127.0.0.1:$SHARDTEL_PROMETHEUS_PORT (default 19090) with the remote-write
# receiver and native histograms, its TSDB in a temporary directory, and stopped when this
# script exits. An already running one on that port is used as it is. Without it the
# Prometheus tests fail, unless SHARDTEL_PROMETHEUS_OPTIONAL=1 (they skip loudly).
step "prometheus"
prom_port="${SHARDTEL_PROMETHEUS_PORT:-19090}"
export SHARDTEL_PROMETHEUS_URL="http://127.0.0.1:$prom_port"
prom_up() { curl -fsS "$SHARDTEL_PROMETHEUS_URL/-/ready" >/dev/null 2>&1; }
prom_pid=""
prom_dir=""
stop_prometheus() {
  if [ -n "$prom_pid" ]; then kill "$prom_pid" 2>/dev/null || true; wait "$prom_pid" 2>/dev/null || true; fi
  if [ -n "$prom_dir" ]; then rm -rf "$prom_dir"; fi
}
trap 'cleanup; stop_prometheus; stop_otelcol_build; stop_backends' EXIT
if ! command -v prometheus >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } \
    || echo "failed to install prometheus"
  if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi
if prom_up; then
  echo "a Prometheus already answers on $SHARDTEL_PROMETHEUS_URL; using it"
elif command -v prometheus >/dev/null; then
  prom_dir="$(mktemp -d)"
  printf 'global:\n  scrape_interval: 1m\n' >"$prom_dir/prometheus.yml"
  prometheus --config.file="$prom_dir/prometheus.yml" --storage.tsdb.path="$prom_dir/data" \
    --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver \
    --enable-feature=native-histograms >target/prometheus.log 2>&1 &
  prom_pid=$!
  for _ in $(seq 1 150); do prom_up && break; sleep 0.2; done
  prom_up || { echo "prometheus did not start; log:"; cat target/prometheus.log; exit 1; }
  echo "$(prometheus --version 2>/dev/null | head -1) on $SHARDTEL_PROMETHEUS_URL (pid $prom_pid)"
else
  echo "no prometheus binary: the Prometheus tests will fail unless SHARDTEL_PROMETHEUS_OPTIONAL=1"
fi
# ---- end of Prometheus --------------------------------------------------------------------

# ---- node exporter (engine/tests/integration/scrape.rs) -----------------------------------
# Debian's prometheus-node-exporter is installed if missing, its packaged service kept from
# starting (as above); the scrape tests start it themselves on a free 127.0.0.1 port. Without
# it they fail, unless SHARDTEL_NODE_EXPORTER_OPTIONAL=1 (they skip loudly).
step "node exporter"
if ! command -v prometheus-node-exporter >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy=1
  fi
  apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends prometheus-node-exporter >/dev/null; } \
    || echo "failed to install prometheus-node-exporter"
  if [ -n "$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus-node-exporter 2>/dev/null; then
    systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi
prometheus-node-exporter --version 2>&1 | head -1 || echo "no prometheus-node-exporter"
# ---- end of node exporter -----------------------------------------------------------------

# ---- Test clients (engine/tests/integration/zipkin.rs, jaeger.rs, fluentforward.rs) -------
# The OpenTelemetry Python SDK's Zipkin and Jaeger exporters and fluent-logger (PyPI and npm),
# every version pinned in tests/peers/clients/, installed by its setup.sh once per manifest
# into ~/.cache/shardtel/clients/<hash>/ (two venvs and an npm folder, ~150 MB; about a minute
# the first time, nothing after). A SHARDTEL_CLIENTS_DIR set by the caller is used as it is.
# Without them the receivers' client tests fail, unless SHARDTEL_CLIENTS_OPTIONAL=1 (they skip
# loudly).
if [ -z "${SHARDTEL_CLIENTS_DIR:-}" ]; then
  step "test clients (Python SDK exporters, fluent-logger)"
  if SHARDTEL_CLIENTS_DIR="$(tests/peers/clients/setup.sh)"; then
    export SHARDTEL_CLIENTS_DIR
    echo "clients in $SHARDTEL_CLIENTS_DIR"
  elif [ "${SHARDTEL_CLIENTS_OPTIONAL:-}" = 1 ]; then
    echo "no test clients: their tests skip (SHARDTEL_CLIENTS_OPTIONAL=1)"
  else
    echo "installing the test clients failed"; exit 1
  fi
fi
# ---- end of test clients ------------------------------------------------------------------

wait_otelcol
start_backends
step "cargo test"
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/shardtel-test.log
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || { echo "cargo test failed ($status)"; exit "$status"; }

# ---- the local stack (examples/stack): gateway -> Kafka -> processing tier -> backends -------
# A short run of the whole example with the debug binaries cargo test built, on the stack's
# own ports, against this script's Kafka broker; shardtel-loadgen --verify --sampled, every
# kept trace complete in Jaeger, shardtel's self-metrics in Prometheus.
stack_passed=0 stack_failed=0
if [ -n "${SKIP_STACK:-}" ]; then
  :
elif ! broker_up; then
  echo "!!!!!!!! no Kafka broker: the examples/stack check is skipped !!!!!!!!"
else
  step "examples/stack check"
  if SHARDTEL_BIN="$PWD/target/debug/shardtel" LOADGEN_BIN="$PWD/target/debug/shardtel-loadgen" \
    STACK_KAFKA="127.0.0.1:${SHARDTEL_KAFKA_PORT:-9092}" examples/stack/stack.sh check; then
    stack_passed=1
    # Its data (write-ahead queues, backends) is only worth keeping to look into a failure.
    rm -rf target/stack
  else
    stack_failed=1
  fi
fi

# ---- the Debian package (packaging/deb): built from the dev profile (cargo rebuilds the
# binary without the tests' fault-injection feature: one to three minutes on 2 busy cores),
# unpacked, checked, unit verified, postinst run against a scratch root.
step "debian package"
package_passed=0 package_failed=0
if packaging/deb/test.sh --profile dev; then package_passed=1; else package_failed=1; fi

if [ -z "${SKIP_FUZZ:-}" ]; then
  # Every fuzz target (fuzz/Cargo.toml) builds and runs a few seconds each (-s none: no
  # sanitizer, which stable Rust cannot build; -a: overflow checks). The long campaign:
  # fuzz/campaign.sh.
  step "fuzz targets: build and smoke"
  SMOKE=1 fuzz/campaign.sh
fi

echo
echo "disk: $(du -sh target fuzz/target 2>/dev/null | awk '{printf "%s %s  ", $2, $1}')$(free_gb) GB free"

passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' /tmp/shardtel-test.log | awk '{s+=$4} END{print s+0}')
failed=$(grep -Eo '[0-9]+ failed' /tmp/shardtel-test.log | awk '{s+=$1} END{print s+0}')
echo
echo "$((passed + stack_passed + package_passed)) passed, $((failed + stack_failed + package_failed)) failed"
[ "$stack_failed" -eq 0 ] && [ "$package_failed" -eq 0 ] || exit 1
