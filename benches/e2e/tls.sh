#!/usr/bin/env bash
# tls.sh - OTLP -> blackhole over TLS against plaintext, in one run on one machine (issue 15's
# speed targets: TLS keeps >= 75 % of plaintext throughput at capacity with RSS flat; mTLS and
# a bearer token within 5 % of TLS alone; and the handshake rate).
#
# Modes (MODES, measured in this order, each step on a fresh shardtel on blackhole.toml's
# pipelines with the listeners below):
#   plain   no TLS
#   tls     [receivers.otlp.tls] with a server certificate (no client certificate)
#   mtls    TLS + client_ca_file (clients present a certificate) + [receivers.otlp.auth] token
# Certificates: a CA, a server certificate (localhost, 127.0.0.1) and a client certificate made
# with openssl under raw/tls/, as docs/configuration.md's worked example makes them (P-256).
#
# Steps per mode and protocol (PROTOS: grpc, http):
#   h2load  closed   gRPC -c H2_GRPC_CONNS -m H2_GRPC_STREAMS, HTTP --h1 -c H2_HTTP_CONNS, for
#                    CLOSED_SECS (h2load 1.52 presents no client certificate: skipped in mtls)
#   h2load  rate     the same connections at --rps for RATE spans/s, STEP_SECS
#   loadgen closed   LG_CONNECTIONS x LG_CONCURRENCY in flight, CLOSED_SECS
#   loadgen rate     RATE spans/s open loop over LG_CONNECTIONS, STEP_SECS
#   loadgen connect  a new connection (a TLS handshake) per request: --requests-per-connection 1,
#                    HS_CONNECTIONS connections, HS_SPANS spans per request, closed loop, HS_SECS
# The payload for h2load is gen_payload.py's (as run.sh's: 100 spans, seed 1); loadgen makes
# its own (100 spans per request by default).
#
# Recorded per step (raw/steps.tsv, table.md): spans/s exported to the blackhole (shardtel's
# self-metrics over WARMUP .. the end minus 1 s, the same for every driver), the driver's own
# acknowledged rate and failures, shardtel's CPU % (100 = one core) and CPU µs per span, RSS at
# the end, peak RSS (VmHWM) and RSS growth (max of the last quarter of 1 s samples minus max of
# the first quarter), and for `connect`: new connections per second, in total and per shardtel
# core, from loadgen (connections opened) and, over TLS, from
# shardtel_receiver_tls_handshakes_total. table.md adds tls/plain and mtls/tls ratios of the
# exported rate per driver, phase and protocol.
#
#   benches/e2e/tls.sh                                    # about 15 minutes
#   CLOSED_SECS=4 STEP_SECS=4 HS_SECS=4 WARMUP=1 benches/e2e/tls.sh   # smoke test
#   MODES="plain tls" PROTOS=grpc benches/e2e/tls.sh
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME [tls-<UTC date>-<time>]  OUT [benches/results/RUN_NAME]
#   MODES ["plain tls mtls"]  PROTOS ["grpc http"]  DRIVERS ["h2load loadgen"]
#   PHASES ["closed rate connect"] (connect: loadgen only)
#   RATE [500000] spans/s for the fixed-rate steps
#   CLOSED_SECS [15]  STEP_SECS [15]  HS_SECS [10]  WARMUP [3]
#   H2_GRPC_CONNS [16]  H2_GRPC_STREAMS [8]  H2_HTTP_CONNS [64]
#   LG_CONNECTIONS [16]  LG_CONCURRENCY [8] (gRPC; HTTP/1.1 carries 1 per connection, so
#                   HTTP uses LG_CONNECTIONS x LG_CONCURRENCY connections)
#   HS_CONNECTIONS [32]  HS_SPANS [10]
#   PORT_BASE [27000] (gRPC +317, HTTP +318, metrics +888, health +133)
#   SHARDTEL_CORES  shardtel's [engine] cores, e.g. '[1]' ["all"]
#   LOADGEN_CPUS    loadgen --cpus, e.g. 0 (unpinned when empty) []
#   SEED / PAYLOADS gen_payload.py --seed / -k [1 / 8]
#   SHARDTEL_BIN / LOADGEN_BIN  use these binaries instead of building them
#
# Writes OUT/table.md and OUT/raw/ (configs, certificates, logs, driver outputs, RSS samples).
# Every process started here is stopped by its PID.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-tls-$(date -u +%Y%m%d-%H%M%S)}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
MODES=${MODES:-"plain tls mtls"}
PROTOS=${PROTOS:-"grpc http"}
DRIVERS=${DRIVERS:-"h2load loadgen"}
PHASES=${PHASES:-"closed rate connect"}
RATE=${RATE:-500000}
CLOSED_SECS=${CLOSED_SECS:-15}
STEP_SECS=${STEP_SECS:-15}
HS_SECS=${HS_SECS:-10}
WARMUP=${WARMUP:-3}
H2_GRPC_CONNS=${H2_GRPC_CONNS:-16}
H2_GRPC_STREAMS=${H2_GRPC_STREAMS:-8}
H2_HTTP_CONNS=${H2_HTTP_CONNS:-64}
LG_CONNECTIONS=${LG_CONNECTIONS:-16}
LG_CONCURRENCY=${LG_CONCURRENCY:-8}
HS_CONNECTIONS=${HS_CONNECTIONS:-32}
HS_SPANS=${HS_SPANS:-10}
PORT_BASE=${PORT_BASE:-27000}
SHARDTEL_CORES=${SHARDTEL_CORES:-'"all"'}
LOADGEN_CPUS=${LOADGEN_CPUS:-}
SEED=${SEED:-1}
PAYLOADS=${PAYLOADS:-8}
PAYLOAD_DIR=${PAYLOAD_DIR:-/tmp/shardtel-e2e-payloads-seed$SEED-k$PAYLOADS}
GRPC=127.0.0.1:$((PORT_BASE + 317)); HTTP=127.0.0.1:$((PORT_BASE + 318))
METRICS=127.0.0.1:$((PORT_BASE + 888)); HEALTH=127.0.0.1:$((PORT_BASE + 133))
GRPC_PATH=/opentelemetry.proto.collector.trace.v1.TraceService/Export
TOKEN=bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
HZ=$(getconf CLK_TCK)
mkdir -p "$RAW"
die() { echo "tls.sh: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RAW/run.log"; }

command -v h2load >/dev/null || [[ " $DRIVERS " != *" h2load "* ]] || die "h2load (nghttp2-client) is needed, or DRIVERS=loadgen"
command -v openssl >/dev/null || die "openssl is needed for the certificates"
if [ -z "${SHARDTEL_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-engine -p shardtel-loadgen --bin shardtel --bin shardtel-loadgen) \
    || die "cargo build --release failed"
fi
SHARDTEL_BIN=${SHARDTEL_BIN:-$ROOT/target/release/shardtel}
LOADGEN_BIN=${LOADGEN_BIN:-$ROOT/target/release/shardtel-loadgen}
if [[ " $DRIVERS " == *" h2load "* ]] && [ ! -f "$PAYLOAD_DIR/manifest.json" ]; then
  python3 -c 'import opentelemetry.proto' 2>/dev/null || pip install -q opentelemetry-proto || die "pip install opentelemetry-proto failed"
  python3 "$HERE/gen_payload.py" -k "$PAYLOADS" --seed "$SEED" -o "$PAYLOAD_DIR" >/dev/null
fi
H2_SPANS=100
[ -f "$PAYLOAD_DIR/manifest.json" ] && H2_SPANS=$(sed -nE 's/.*"spans_per_request": ([0-9]+).*/\1/p' "$PAYLOAD_DIR/manifest.json")

# ---- certificates (openssl, as in docs/configuration.md's worked example) ----------------
TLS=$RAW/tls
mkdir -p "$TLS"
(
  cd "$TLS"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout ca.key -out ca.pem -days 30 -subj "/CN=shardtel bench CA"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout server.key -out server.csr -subj "/CN=localhost"
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out server.pem \
    -extfile <(printf "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout client.key -out client.csr -subj "/CN=bench-client"
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -out client.pem \
    -extfile <(printf "extendedKeyUsage=clientAuth")
) >"$RAW/openssl.log" 2>&1 || die "openssl failed; see $RAW/openssl.log"

config() {  # mode -> shardtel config on stdout
  cat <<TOML
[engine]
cores = $SHARDTEL_CORES
data_dir = "$RAW/data"
durability = "none"
[telemetry]
health = "$HEALTH"
metrics = "$METRICS"
log_level = "info"
[receivers.otlp]
grpc = "$GRPC"
http = "$HTTP"
TOML
  case $1 in
    plain) ;;
    tls) printf '[receivers.otlp.tls]\ncert_file = "%s"\nkey_file = "%s"\n' "$TLS/server.pem" "$TLS/server.key" ;;
    mtls)
      printf '[receivers.otlp.tls]\ncert_file = "%s"\nkey_file = "%s"\nclient_ca_file = "%s"\n' \
        "$TLS/server.pem" "$TLS/server.key" "$TLS/ca.pem"
      printf '[receivers.otlp.auth]\nbearer_tokens = ["%s"]\n' "$TOKEN" ;;
    *) die "unknown mode $1" ;;
  esac
  cat <<TOML
[exporters.blackhole]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["blackhole"]
TOML
}

# ---- shardtel process control (by PID) ------------------------------------------------------
PID="" SAMPLER=""
stop() {
  [ -n "$SAMPLER" ] && { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""; }
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
  fi
  [ -n "$PID" ] && { wait "$PID" 2>/dev/null || true; }
  PID=""
}
trap stop EXIT
trap 'stop; exit 130' INT TERM
start_shardtel() {  # mode tag
  config "$1" >"$RAW/$2.toml"
  "$SHARDTEL_BIN" validate --config "$RAW/$2.toml" >/dev/null || die "$2.toml does not validate"
  rm -rf "$RAW/data"
  "$SHARDTEL_BIN" --config "$RAW/$2.toml" >"$RAW/$2.shardtel.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$HEALTH/" || true)" = 200 ] && break
    kill -0 "$PID" 2>/dev/null || die "shardtel ($2) exited; log: $RAW/$2.shardtel.log"
    sleep 0.1
  done
  CORES=$(curl -s --max-time 5 "http://$METRICS/metrics" | grep -c '^shardtel_core_info{' || true)
  [ "$CORES" -gt 0 ] || CORES=1
  # 1 s RSS samples (KiB), for the growth check.
  ( while [ -r "/proc/$PID/status" ]; do
      awk '$1=="VmRSS:"{print $2}' "/proc/$PID/status" 2>/dev/null || true
      sleep 1
    done ) >"$RAW/$2.rss" &
  SAMPLER=$!
}
metric() {  # name [label filter]: sum over series
  curl -s --max-time 5 "http://$METRICS/metrics" | awk -v n="$1" -v f="${2:-}" \
    'index($0, n"{") == 1 && index($0, f) {s += $NF} END {printf "%.0f\n", s}'
}
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && sed -E 's/^.*\) //' "/proc/$1/stat" | awk '{print $12 + $13}' || echo 0; }
status_kib() { awk -v k="$1:" '$1==k{print $2}' "/proc/$PID/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }

# ---- drivers --------------------------------------------------------------------------------
# Each builds the driver's command line for mode/proto/phase/secs into CMD (an array); DRIVER_OK
# and DRIVER_TEXT are read from its output afterwards.
h2load_cmd() {  # mode proto phase secs
  local mode=$1 proto=$2 phase=$3 secs=$4 scheme=http conns per
  [ "$mode" = plain ] || scheme=https
  if [ "$proto" = grpc ]; then
    conns=$H2_GRPC_CONNS
    CMD=(h2load -t1 -c"$conns" -m"$H2_GRPC_STREAMS" -D "$secs" -d "$PAYLOAD_DIR/traces-000.grpc"
      -H 'content-type: application/grpc' -H 'te: trailers' "$scheme://$GRPC$GRPC_PATH")
  else
    conns=$H2_HTTP_CONNS
    CMD=(h2load --h1 -t1 -c"$conns" -D "$secs" -d "$PAYLOAD_DIR/traces-000.pb"
      -H 'content-type: application/x-protobuf' "$scheme://$HTTP/v1/traces")
  fi
  if [ "$phase" = rate ]; then
    per=$(( (RATE / H2_SPANS + conns - 1) / conns ))
    CMD+=(--rps "$per")
  fi
}
loadgen_cmd() {  # mode proto phase secs tag
  local mode=$1 proto=$2 phase=$3 secs=$4 tag=$5 scheme=http addr
  [ "$mode" = plain ] || scheme=https
  CMD=("$LOADGEN_BIN" --duration "${secs}s" --timeout 30s -q --json "$RAW/$tag.json")
  [ -n "$LOADGEN_CPUS" ] && CMD+=(--cpus "$LOADGEN_CPUS")
  if [ "$proto" = grpc ]; then addr=$GRPC; CMD+=(-p grpc); else addr=$HTTP; CMD+=(-p http-protobuf); fi
  # localhost: the server certificate's name (and 127.0.0.1's address).
  [ "$mode" = plain ] && CMD+=(-e "http://$addr") || CMD+=(-e "https://localhost:${addr#*:}" --ca-file "$TLS/ca.pem")
  [ "$mode" = mtls ] && CMD+=(--client-cert "$TLS/client.pem" --client-key "$TLS/client.key" --bearer-token "$TOKEN")
  case $phase in
    closed)
      if [ "$proto" = grpc ]; then CMD+=(--connections "$LG_CONNECTIONS" --concurrency "$LG_CONCURRENCY")
      else CMD+=(--connections $((LG_CONNECTIONS * LG_CONCURRENCY))); fi ;;
    rate) CMD+=(--rate "$RATE" --rate-unit items --connections "$LG_CONNECTIONS") ;;
    connect) CMD+=(--requests-per-connection 1 --connections "$HS_CONNECTIONS" --spans-per-request "$HS_SPANS") ;;
  esac
}

printf "mode\tproto\tdriver\tphase\tsecs\texported_spans_s\tdriver_acked_spans_s\tdriver_failures\tcpu_pct\tcpu_us_per_span\trss_mib\tpeak_rss_mib\trss_growth_mib\tconnections_s\tconnections_s_per_core\thandshakes_s_per_core\n" >"$RAW/steps.tsv"

step() {  # mode proto driver phase secs
  local mode=$1 proto=$2 driver=$3 phase=$4 secs=$5 tag="$1-$2-$3-$4"
  start_shardtel "$mode" "$tag"
  if [ "$driver" = h2load ]; then h2load_cmd "$mode" "$proto" "$phase" "$secs"; else loadgen_cmd "$mode" "$proto" "$phase" "$secs" "$tag"; fi
  echo "$tag: ${CMD[*]}" >>"$RAW/commands.txt"
  "${CMD[@]}" >"$RAW/$tag.driver.txt" 2>&1 &
  local drv=$! t0 t1 e0 e1 c0 c1 h0 h1
  sleep "$WARMUP"
  t0=$(now); e0=$(metric shardtel_exporter_sent_spans_total 'exporter="blackhole"'); c0=$(cpu_ticks "$PID")
  h0=$(metric shardtel_receiver_tls_handshakes_total)
  sleep $((secs - WARMUP - 1))
  t1=$(now); e1=$(metric shardtel_exporter_sent_spans_total 'exporter="blackhole"'); c1=$(cpu_ticks "$PID")
  h1=$(metric shardtel_receiver_tls_handshakes_total)
  wait "$drv" || log "$tag: the driver exited non-zero; see $RAW/$tag.driver.txt"
  local rss hwm grow
  rss=$(( $(status_kib VmRSS) / 1024 )); hwm=$(( $(status_kib VmHWM) / 1024 ))
  stop
  grow=$(awk '{v[NR]=$1} END{if(NR<4){print 0; exit} q=int(NR/4); a=0; b=0;
    for(i=1;i<=q;i++) if(v[i]>a)a=v[i]; for(i=NR-q+1;i<=NR;i++) if(v[i]>b)b=v[i]; printf "%d", (b-a)/1024}' "$RAW/$tag.rss")
  local acked=- failures=- conns_s=- conns_core=- hs_core=-
  if [ "$driver" = loadgen ] && [ -s "$RAW/$tag.json" ]; then
    read -r acked failures conns_s < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1])); q = r["requests"]
print("%.0f %d %.1f" % (r["achieved"]["acknowledged_items_per_second"], q["refused"] + q["failed"],
      r["connections_opened"] / max(r["duration_seconds"], 1e-9)))' "$RAW/$tag.json")
    if [ "$phase" = connect ]; then conns_core=$(awk -v c="$conns_s" -v n="$CORES" 'BEGIN{printf "%.1f", c/n}'); else conns_s=-; fi
  elif [ "$driver" = h2load ]; then
    failures=$(sed -nE 's/^requests: .* ([0-9]+) failed, ([0-9]+) errored, ([0-9]+) timeout.*/\1 \2 \3/p' "$RAW/$tag.driver.txt" | awk '{print $1 + $2 + $3}')
    [ -n "$failures" ] || failures="?"
    local ok; ok=$(sed -nE 's/^status codes: ([0-9]+) 2xx.*/\1/p' "$RAW/$tag.driver.txt")
    local dur; dur=$(sed -nE 's/^finished in ([0-9.]+)s,.*/\1/p' "$RAW/$tag.driver.txt")
    [ -n "$ok" ] && [ -n "$dur" ] && acked=$(awk -v n="$ok" -v s="$H2_SPANS" -v d="$dur" 'BEGIN{printf "%.0f", n*s/d}')
  fi
  read -r rate cpu us < <(python3 -c '
import sys
t0, t1, e0, e1, c0, c1, hz = map(float, sys.argv[1:])
dt = t1 - t0; rate = (e1 - e0) / dt; cpu = (c1 - c0) / hz / dt
print(f"{rate:.0f} {100*cpu:.0f} {1e6*cpu/max(rate,1):.2f}")' "$t0" "$t1" "$e0" "$e1" "$c0" "$c1" "$HZ")
  [ "$mode" != plain ] && [ "$phase" = connect ] && hs_core=$(awk -v a="$h0" -v b="$h1" -v t0="$t0" -v t1="$t1" -v n="$CORES" 'BEGIN{printf "%.1f", (b-a)/(t1-t0)/n}')
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$mode" "$proto" "$driver" "$phase" "$secs" \
    "$rate" "$acked" "$failures" "$cpu" "$us" "$rss" "$hwm" "$grow" "$conns_s" "$conns_core" "$hs_core" >>"$RAW/steps.tsv"
  log "$(printf '%-5s %-4s %-7s %-7s exported=%s sp/s driver_acked=%s failures=%s cpu=%s%% (%s us/span) rss=%sMiB peak=%sMiB growth=%sMiB conn/s=%s per_core=%s handshakes/s/core=%s' \
    "$mode" "$proto" "$driver" "$phase" "$rate" "$acked" "$failures" "$cpu" "$us" "$rss" "$hwm" "$grow" "$conns_s" "$conns_core" "$hs_core")"
}

{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc); cpu: $(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -1); kernel: $(uname -sr)"
  echo "loadavg_at_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "git: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo +uncommitted)"
  echo "h2load: $(h2load --version 2>&1 | head -1); openssl: $(openssl version)"
  echo "knobs: MODES='$MODES' PROTOS='$PROTOS' DRIVERS='$DRIVERS' PHASES='$PHASES' RATE=$RATE CLOSED_SECS=$CLOSED_SECS STEP_SECS=$STEP_SECS HS_SECS=$HS_SECS WARMUP=$WARMUP H2_GRPC=${H2_GRPC_CONNS}x$H2_GRPC_STREAMS H2_HTTP=$H2_HTTP_CONNS LG=${LG_CONNECTIONS}x$LG_CONCURRENCY HS=${HS_CONNECTIONS}conn/${HS_SPANS}spans SHARDTEL_CORES=$SHARDTEL_CORES LOADGEN_CPUS=$LOADGEN_CPUS"
} >"$RAW/machine.txt"
: >"$RAW/commands.txt"
log "run $RUN_NAME -> $OUT"
for mode in $MODES; do
  for proto in $PROTOS; do
    for driver in $DRIVERS; do
      for phase in $PHASES; do
        [ "$phase" = connect ] && [ "$driver" != loadgen ] && continue
        if [ "$driver" = h2load ] && [ "$mode" = mtls ]; then
          log "mtls $proto h2load $phase: skipped (h2load 1.52 presents no client certificate)"; continue
        fi
        secs=$STEP_SECS; [ "$phase" = closed ] && secs=$CLOSED_SECS; [ "$phase" = connect ] && secs=$HS_SECS
        [ "$secs" -gt $((WARMUP + 1)) ] || die "steps must last longer than WARMUP + 1 s"
        step "$mode" "$proto" "$driver" "$phase" "$secs"
      done
    done
  done
done
echo "loadavg_at_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/machine.txt"

# ---- table.md -------------------------------------------------------------------------------
python3 - "$RAW/steps.tsv" "$OUT/table.md" "$RUN_NAME" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
out = open(sys.argv[2], "w")
out.write(f"# TLS end-to-end run {sys.argv[3]}\n\n")
out.write("OTLP -> shardtel -> blackhole; spans/s exported over the steady window (shardtel's self-metrics). "
          "Targets (issue 15): tls >= 75 % of plain at capacity with RSS flat; mtls+token within 5 % of tls.\n\n")
out.write("| mode | proto | driver | phase | exported spans/s | driver acked spans/s | failures | CPU % | CPU µs/span | RSS MiB | peak MiB | growth MiB | conn/s | conn/s/core | handshakes/s/core |\n")
out.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
for r in rows:
    out.write("| " + " | ".join(r[k] for k in ("mode", "proto", "driver", "phase", "exported_spans_s", "driver_acked_spans_s",
        "driver_failures", "cpu_pct", "cpu_us_per_span", "rss_mib", "peak_rss_mib", "rss_growth_mib", "connections_s",
        "connections_s_per_core", "handshakes_s_per_core")) + " |\n")
by = {(r["mode"], r["proto"], r["driver"], r["phase"]): r for r in rows}
def metric(r):
    return float(r["connections_s"]) if r["phase"] == "connect" else float(r["exported_spans_s"])
out.write("\n| ratio | proto | driver | phase | value |\n|---|---|---|---|---|\n")
for a, b in (("tls", "plain"), ("mtls", "tls")):
    for (mode, proto, driver, phase), r in sorted(by.items()):
        if mode != a or (b, proto, driver, phase) not in by:
            continue
        base = metric(by[(b, proto, driver, phase)])
        out.write(f"| {a}/{b} | {proto} | {driver} | {phase} | {100 * metric(r) / base:.0f} % |\n" if base else "")
out.write("\nconnect rows: conn/s is loadgen's new connections per second (one request each); over TLS each is a "
          "handshake, and handshakes/s/core is shardtel_receiver_tls_handshakes_total's rate per shardtel core.\n")
PY
cat "$OUT/table.md"
