#!/usr/bin/env bash
# The gateway -> Kafka -> processing tier -> storage architecture on one machine, with no
# containers: Apache Kafka, a shardtel gateway, a shardtel processing tier (tail sampling with
# the reference policy), Jaeger, VictoriaMetrics, VictoriaLogs and Prometheus scraping both
# shardtels' self-metrics, driven by shardtel-loadgen.
#
#   examples/stack/stack.sh            up, then load for 60 s, then print where to look
#                                      (everything keeps running until `stack.sh down`)
#   examples/stack/stack.sh up         start everything; print where to look
#   examples/stack/stack.sh load [D]   traces, metrics and logs into the gateway for D [60s]
#   examples/stack/stack.sh status     what runs
#   examples/stack/stack.sh down       stop everything this script started
#   examples/stack/stack.sh check      up, a short verified load, checks, down (what CI runs):
#                                      shardtel-loadgen --verify --sampled on the kept traces,
#                                      every kept trace complete in Jaeger, shardtel's
#                                      self-metrics in Prometheus, metrics in VictoriaMetrics
#                                      and logs in VictoriaLogs
#
# Fixed ports on 127.0.0.1 (`up` refuses to start when one is taken):
#   4317, 4318   gateway OTLP gRPC, HTTP       13133, 8888  gateway health, self-metrics
#   13134, 8889  processor health, self-metrics
#   16686        Jaeger UI and query API       14317, 14318 Jaeger OTLP gRPC, HTTP; 16685 query gRPC
#   8428         VictoriaMetrics (vmui, PromQL, remote write)
#   9428         VictoriaLogs (vmui, LogsQL, Loki push)
#   9090         Prometheus
#   9092-9096    Kafka (tests/peers/kafka/kafka.sh start; SHARDTEL_KAFKA_PORT moves them), unless
#                STACK_KAFKA names a broker
#
# Env:
#   STACK_DIR     where logs, data and pid files go [<repo>/target/stack]; wiped by `up`
#   STACK_KAFKA   host:port of a running Kafka broker to use instead of starting one
#   SHARDTEL_BIN, LOADGEN_BIN   binaries to run [built with cargo build --release]
#   STACK_RATE    spans per second of `load` [2000]
# Needs: Rust (for the shardtel binaries), Go (for Jaeger and the Victoria* servers, built once
# by tests/peers/go-build.sh and cached in ~/.cache/shardtel), Java 17 and Maven (Kafka, by
# tests/peers/kafka/kafka.sh), Debian's prometheus, curl and python3 (the checks).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export STACK_DIR=${STACK_DIR:-$root/target/stack}
run=$STACK_DIR/run
rate=${STACK_RATE:-2000}

# Ports of the backends (tests/peers/backends.sh reads these).
export JAEGER_OTLP_GRPC_PORT=14317 JAEGER_OTLP_HTTP_PORT=14318 JAEGER_QUERY_PORT=16686
export JAEGER_QUERY_GRPC_PORT=16685 VICTORIAMETRICS_PORT=8428 VICTORIALOGS_PORT=9428
stack_ports=(4317 4318 13133 8888 13134 8889 14317 14318 16686 16685 8428 9428 9090)
kafka_port=${SHARDTEL_KAFKA_PORT:-9092}
kafka_ports=("$kafka_port" $((kafka_port + 1)) $((kafka_port + 2)) $((kafka_port + 3)) $((kafka_port + 4)))

say() { echo "stack: $*" >&2; }
die() { say "$*"; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
wait_for() { # URL NAME PIDFILE
  for _ in $(seq 1 300); do
    answers "$1" && return 0
    kill -0 "$(cat "$3")" 2>/dev/null || break
    sleep 0.1
  done
  say "$2 did not come up ($1); the end of its log:"
  tail -30 "$run/$2.log" >&2
  return 1
}

binaries() {
  if [ -z "${SHARDTEL_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
    say "building shardtel and shardtel-loadgen (cargo build --release)"
    (cd "$root" && cargo build --release --quiet -p shardtel-engine -p shardtel-loadgen)
  fi
  SHARDTEL_BIN=${SHARDTEL_BIN:-$root/target/release/shardtel}
  LOADGEN_BIN=${LOADGEN_BIN:-$root/target/release/shardtel-loadgen}
  command -v prometheus >/dev/null || die "no prometheus: apt-get install prometheus (Debian's; see test.sh for installing it without starting its service)"
  command -v python3 >/dev/null || die "no python3 (the checks use it): apt-get install python3"
  say "building (or finding) Jaeger, VictoriaMetrics, VictoriaLogs"
  "$root/tests/peers/backends.sh" build >/dev/null
}

# start NAME HEALTH_URL COMMAND...: in the background, its log in $run/NAME.log.
start() {
  local name=$1 url=$2
  shift 2
  "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
  readlink -f "$(command -v "$1")" >"$run/$name.exe"
  wait_for "$url" "$name" "$run/$name.pid"
}

stop_pid() { # NAME: SIGTERM, up to 30 s, then SIGKILL
  local pid
  [ -f "$run/$1.pid" ] || return 0
  pid=$(cat "$run/$1.pid")
  rm -f "$run/$1.pid"
  # Only that process: after a reboot the pid may name another one.
  [ "$(readlink "/proc/$pid/exe" 2>/dev/null | sed "s/ (deleted)$//")" = "$(cat "$run/$1.exe" 2>/dev/null)" ] || return 0
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}

down() {
  [ -d "$run" ] || return 0
  stop_pid gateway
  stop_pid processor
  stop_pid prometheus
  "$root/tests/peers/backends.sh" stop "$STACK_DIR/backends" || true
  if [ -f "$run/kafka.started" ]; then
    SHARDTEL_KAFKA_DIR=$STACK_DIR/kafka "$root/tests/peers/kafka/kafka.sh" stop || true
    rm -f "$run/kafka.started"
  fi
}

up() {
  local taken=() port
  [ -z "$(ls "$run"/*.pid 2>/dev/null)" ] || die "already up (pid files in $run); run 'stack.sh down' first"
  for port in "${stack_ports[@]}"; do listening "$port" && taken+=("$port"); done
  if [ -z "${STACK_KAFKA:-}" ]; then
    for port in "${kafka_ports[@]}"; do listening "$port" && taken+=("$port"); done
  fi
  [ ${#taken[@]} -eq 0 ] || die "ports taken on 127.0.0.1: ${taken[*]} (stop what listens there; a running Kafka can be used with STACK_KAFKA=127.0.0.1:9092)"
  # STACK_DIR is wiped: only when it is new, empty, or made by this script before.
  if [ -d "$STACK_DIR" ] && [ -n "$(ls -A "$STACK_DIR")" ] && [ ! -f "$STACK_DIR/.shardtel-stack" ]; then
    die "STACK_DIR=$STACK_DIR is not empty and was not made by stack.sh; name another one"
  fi
  binaries
  rm -rf "$STACK_DIR"
  mkdir -p "$run" "$STACK_DIR/kept"
  touch "$STACK_DIR/.shardtel-stack"
  trap 'say "start-up failed; stopping what started"; down' ERR

  if [ -n "${STACK_KAFKA:-}" ]; then
    listening "${STACK_KAFKA##*:}" || die "no broker answers at STACK_KAFKA=$STACK_KAFKA"
    say "using the Kafka broker at $STACK_KAFKA"
  else
    say "starting Apache Kafka (tests/peers/kafka/kafka.sh start)"
    SHARDTEL_KAFKA_DIR=$STACK_DIR/kafka "$root/tests/peers/kafka/kafka.sh" start >"$run/kafka-start.log" 2>&1 \
      || { cat "$run/kafka-start.log" >&2; false; }
    touch "$run/kafka.started"
    export STACK_KAFKA=127.0.0.1:$kafka_port
  fi

  say "starting Jaeger, VictoriaMetrics, VictoriaLogs"
  "$root/tests/peers/backends.sh" start "$STACK_DIR/backends" >&2
  say "starting Prometheus"
  start prometheus http://127.0.0.1:9090/-/ready \
    prometheus --config.file="$here/prometheus.yml" --storage.tsdb.path="$STACK_DIR/prometheus" \
    --web.listen-address=127.0.0.1:9090
  say "starting the processing tier and the gateway"
  start processor http://127.0.0.1:13134/ "$SHARDTEL_BIN" --config "$here/processor.toml"
  start gateway http://127.0.0.1:13133/ "$SHARDTEL_BIN" --config "$here/gateway.toml"
  trap - ERR
  where
}

where() {
  cat <<EOF

The stack is up (logs and data in $STACK_DIR):
  send OTLP to      grpc://127.0.0.1:4317, http://127.0.0.1:4318   (the gateway)
  traces            http://127.0.0.1:16686/api/traces?service=checkout&limit=20
                    (Jaeger's query API; its UI needs JAEGER_UI_ASSETS, see examples/stack/README.md)
  metrics           http://127.0.0.1:8428/vmui                     (VictoriaMetrics; PromQL at /api/v1/query)
  logs              http://127.0.0.1:9428/select/vmui              (VictoriaLogs; LogsQL at /select/logsql/query)
  shardtel itself   http://127.0.0.1:9090/graph?g0.expr=rate(shardtel_receiver_accepted_spans_total[1m])
                    (Prometheus scraping the gateway's :8888 and the processor's :8889)
  kept traces       $STACK_DIR/kept/traces.core*.jsonl
  stop it all       $0 down
EOF
}

# load DURATION [EXTRA LOADGEN ARGS FOR TRACES...]: traces at $rate spans/s, metrics and logs
# at a tenth of that, all into the gateway; fails when a loadgen run fails.
load() {
  local duration=$1 status=0
  shift
  [ -n "${LOADGEN_BIN:-}" ] || binaries
  say "loading the gateway for $duration: $rate spans/s, $((rate / 10)) points/s, $((rate / 10)) records/s"
  "$LOADGEN_BIN" -p http-protobuf -s metrics --rate "$((rate / 10))" -d "$duration" -q \
    >"$run/loadgen-metrics.log" 2>&1 &
  local metrics_pid=$!
  "$LOADGEN_BIN" -p grpc -s logs --rate "$((rate / 10))" -d "$duration" -q \
    >"$run/loadgen-logs.log" 2>&1 &
  local logs_pid=$!
  "$LOADGEN_BIN" -p grpc -e http://127.0.0.1:4317 --rate "$rate" -d "$duration" \
    --split-traces --vip-share 0.01 "$@" || status=$?
  wait "$metrics_pid" || { say "metrics load failed:"; cat "$run/loadgen-metrics.log" >&2; status=1; }
  wait "$logs_pid" || { say "logs load failed:"; cat "$run/loadgen-logs.log" >&2; status=1; }
  return "$status"
}

check() {
  export STACK_DECISION_WAIT=5s
  trap down EXIT
  up
  local status=0
  load 10s --verify --sampled --verify-file "$STACK_DIR/kept/traces*.jsonl*" \
    --verify-wait 90s --verify-settle 3s || { say "shardtel-loadgen --verify --sampled failed"; status=1; }
  python3 "$here/check.py" "$STACK_DIR/kept" || status=1
  if [ "$status" -ne 0 ]; then
    say "check failed; the ends of the logs:"
    for log in "$run"/gateway.log "$run"/processor.log; do echo "== $log" >&2; tail -20 "$log" >&2; done
  fi
  return "$status"
}

case "${1:-}" in
  "") up; load 60s; where ;;
  up) up ;;
  load) load "${2:-60s}" ;;
  down) down ;;
  status)
    for f in "$run"/*.pid "$STACK_DIR"/backends/*.pid; do
      [ -f "$f" ] || continue
      if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f" .pid) running ($(cat "$f"))"; else echo "$(basename "$f" .pid) gone"; fi
    done
    ;;
  check) check ;;
  *) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
