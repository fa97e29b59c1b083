#!/usr/bin/env bash
# The storage backends shardtel's exporters are tested against, built from the Go module proxy
# (manifests in jaeger/, victoriametrics/, victorialogs/ beside this script; go-build.sh builds
# and caches each) and run as plain processes on 127.0.0.1:
#
#   Jaeger          traces: OTLP gRPC + HTTP in, query API (/api/traces, /api/v3) and UI out
#   VictoriaMetrics metrics: Prometheus remote write in (/api/v1/write), PromQL out
#   VictoriaLogs    logs: Loki push in (/insert/loki/api/v1/push), LogsQL out
#
#   backends.sh build          builds (or finds) the three binaries; prints their paths
#   backends.sh start DIR      starts the three, each keeping its data and log in DIR, and
#                              returns once each answers; writes DIR/env (export lines with
#                              the URLs, for `source`) and DIR/*.pid
#   backends.sh stop DIR       stops what `start DIR` started (SIGTERM, then SIGKILL after 10 s)
#
# Ports (env; defaults are the test suite's, kept away from the usual ports so a developer's
# own Jaeger or VictoriaMetrics does not collide; examples/stack/ uses the usual ones):
#   JAEGER_OTLP_GRPC_PORT [24317]  JAEGER_OTLP_HTTP_PORT [24318]
#   JAEGER_QUERY_PORT     [26686]  JAEGER_QUERY_GRPC_PORT [26685]
#   VICTORIAMETRICS_PORT  [28428]  VICTORIALOGS_PORT [29428]
# `start` refuses a port that something already listens on. SHARDTEL_JAEGER_BIN,
# SHARDTEL_VICTORIAMETRICS_BIN, SHARDTEL_VICTORIALOGS_BIN: binaries to use instead of building.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

JAEGER_OTLP_GRPC_PORT=${JAEGER_OTLP_GRPC_PORT:-24317}
JAEGER_OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-24318}
JAEGER_QUERY_PORT=${JAEGER_QUERY_PORT:-26686}
JAEGER_QUERY_GRPC_PORT=${JAEGER_QUERY_GRPC_PORT:-26685}
VICTORIAMETRICS_PORT=${VICTORIAMETRICS_PORT:-28428}
VICTORIALOGS_PORT=${VICTORIALOGS_PORT:-29428}

die() { echo "backends.sh: $*" >&2; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
answers() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# Paths of the three binaries, built when not given (one after the other: each go build
# already uses every core).
binaries() {
  jaeger=${SHARDTEL_JAEGER_BIN:-$("$here/go-build.sh" "$here/jaeger")}
  victoriametrics=${SHARDTEL_VICTORIAMETRICS_BIN:-$("$here/go-build.sh" "$here/victoriametrics")}
  victorialogs=${SHARDTEL_VICTORIALOGS_BIN:-$("$here/go-build.sh" "$here/victorialogs")}
}

# start_one NAME READY_URL COMMAND...: in the background, its output in DIR/NAME.log.
start_one() {
  local name=$1 ready=$2
  shift 2
  "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  readlink -f "$1" >"$dir/$name.exe"
  for _ in $(seq 1 300); do
    answers "$ready" && return 0
    kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "backends.sh: $name did not answer $ready; its log:" >&2
  tail -30 "$dir/$name.log" >&2
  return 1
}

stop_all() {
  local pid name
  for name in jaeger victoriametrics victorialogs; do
    [ -f "$dir/$name.pid" ] || continue
    pid=$(cat "$dir/$name.pid")
    rm -f "$dir/$name.pid"
    # Only that server: a pid file left by a run that was killed may name another process now.
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null | sed "s/ (deleted)$//")" = "$(cat "$dir/$name.exe" 2>/dev/null)" ] || continue
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

case "${1:-}" in
  build)
    binaries
    printf '%s\n' "$jaeger" "$victoriametrics" "$victorialogs"
    ;;
  start)
    [ $# -eq 2 ] || die "usage: backends.sh start DIR"
    mkdir -p "$2"
    dir=$(cd "$2" && pwd)
    for port in "$JAEGER_OTLP_GRPC_PORT" "$JAEGER_OTLP_HTTP_PORT" "$JAEGER_QUERY_PORT" \
      "$JAEGER_QUERY_GRPC_PORT" "$VICTORIAMETRICS_PORT" "$VICTORIALOGS_PORT"; do
      listening "$port" && die "port $port on 127.0.0.1 is taken; stop what listens there or pick other ports (see the head of $0)"
    done
    binaries
    rm -rf "$dir/victoriametrics-data" "$dir/victorialogs-data"
    trap 'stop_all' ERR
    JAEGER_OTLP_GRPC=127.0.0.1:$JAEGER_OTLP_GRPC_PORT JAEGER_OTLP_HTTP=127.0.0.1:$JAEGER_OTLP_HTTP_PORT \
      JAEGER_QUERY_HTTP=127.0.0.1:$JAEGER_QUERY_PORT JAEGER_QUERY_GRPC=127.0.0.1:$JAEGER_QUERY_GRPC_PORT \
      start_one jaeger "http://127.0.0.1:$JAEGER_QUERY_PORT/api/services" \
      "$jaeger" --config "$here/jaeger/config.yaml"
    # -search.latencyOffset=0s: a query for "now" sees samples that arrived a moment ago (the
    # default hides the last 30 s); -search.disableCache: no cached response hides new samples.
    start_one victoriametrics "http://127.0.0.1:$VICTORIAMETRICS_PORT/health" \
      "$victoriametrics" -httpListenAddr="127.0.0.1:$VICTORIAMETRICS_PORT" \
      -storageDataPath="$dir/victoriametrics-data" -retentionPeriod=1d \
      -search.latencyOffset=0s -search.disableCache -loggerLevel=WARN
    start_one victorialogs "http://127.0.0.1:$VICTORIALOGS_PORT/health" \
      "$victorialogs" -httpListenAddr="127.0.0.1:$VICTORIALOGS_PORT" \
      -storageDataPath="$dir/victorialogs-data" -retentionPeriod=1d -loggerLevel=WARN
    trap - ERR
    cat >"$dir/env" <<EOF
export SHARDTEL_JAEGER_OTLP_GRPC=http://127.0.0.1:$JAEGER_OTLP_GRPC_PORT
export SHARDTEL_JAEGER_OTLP_HTTP=http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT
export SHARDTEL_JAEGER_QUERY=http://127.0.0.1:$JAEGER_QUERY_PORT
export SHARDTEL_VICTORIAMETRICS_URL=http://127.0.0.1:$VICTORIAMETRICS_PORT
export SHARDTEL_VICTORIALOGS_URL=http://127.0.0.1:$VICTORIALOGS_PORT
EOF
    echo "jaeger $("$jaeger" version 2>/dev/null | sed -nE 's/.*"gitVersion":"([^"]+)".*/\1/p') (OTLP 127.0.0.1:$JAEGER_OTLP_GRPC_PORT/$JAEGER_OTLP_HTTP_PORT, query http://127.0.0.1:$JAEGER_QUERY_PORT), $("$victoriametrics" -version 2>/dev/null | head -1) (http://127.0.0.1:$VICTORIAMETRICS_PORT), $("$victorialogs" -version 2>/dev/null | head -1) (http://127.0.0.1:$VICTORIALOGS_PORT)"
    ;;
  stop)
    [ $# -eq 2 ] || die "usage: backends.sh stop DIR"
    [ -d "$2" ] || exit 0
    dir=$(cd "$2" && pwd)
    stop_all
    ;;
  *)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
