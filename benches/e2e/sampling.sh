#!/usr/bin/env bash
# sampling.sh - what tail sampling costs end to end, and the memory it takes per buffered span.
# Writes benches/results/<RUN_NAME>/:
#   table.md    throughput with and without tail sampling per protocol, and memory per
#               buffered span
#   raw/        steps.tsv (one row per step), memory.tsv (1 s samples of the memory step),
#               loadgen JSON, collector logs, commands.txt, machine.txt
#
# Load: shardtel-loadgen, open loop at fixed rates, traces split over requests and
# connections (--split-traces), every trace id new (h2load's replayed payload would send the
# same traces again and again, which a sampler must not be measured on). Payload: loadgen's
# default shape (100 spans per request in traces of 5..15 spans, 8 attributes, ~400 bytes per
# span, about 3 % error spans, 1 % VIP traces, log-normal latencies, some traces over 1 s).
#
# 1. Throughput. For each protocol, each rate of RATES, on a FRESH collector each, the configs
#    of CONFIGS:
#      plain             shardtel --config blackhole.toml            (no sampling)
#      sampling          shardtel --config raw/blackhole-sampling.toml (seed policies, decision_wait = 10s;
#                        written from blackhole-sampling.base.toml and the policies of
#                        tests/fixtures/reference-sampling.toml)
#      sampling-lz4      the same with buffer_compression = "lz4" (raw/blackhole-sampling-lz4.toml):
#                        undecided traces held compressed on their owner core
#      otelcol-plain     the OpenTelemetry Collector (tests/peers/otelcol, built once and cached)
#                        on tests/peers/otelcol/configs/bench-nop.yaml (OTLP -> nop)
#      otelcol-sampling  the same on bench-sampling.yaml: tail_sampling with the same policies
#                        (errors, latency > 1 s, user.id = vip, 10 %), decision_wait = 10s
#    A step passes at zero loss: >= 97 % of the offered rate acknowledged, no refused or
#    failed request, the collector accepted every acknowledged span and (sampling) its
#    samplers received them all (the Collector: no trace dropped before its decision). Steps last STEP_SECS (default 30 s: three decision_waits, so
#    the sampler decides at the rate it buffers). Result per protocol: the highest passing rate
#    with and without sampling, and their ratio (target: sampling keeps >= 75 %).
#    The driver: loadgen runs LOADGEN_WORKERS workers, pinned to LOADGEN_CPUS when the
#    reactors (SHARDTEL_CORES) leave CPUs free. A step is DRIVER-BOUND (pass column
#    "driver-bound", logged loudly, never counted for or against the collector) when loadgen
#    fell behind its schedule (over 0.5 % of requests due but never sent, or send lag p99 over
#    LAG_P99_MS)
#    while its in-flight window had room (Little's law: requests/s x (latency - send lag) below
#    90 % of connections x max in flight), or when loadgen used >= 90 % of its workers' CPUs.
#    A lag with a full window is the collector's (it did not answer), not the driver's.
#    Per step: collector CPU µs per accepted span (after CPU_WARMUP_SECS), loadgen's CPU, send lag, and the reason
#    of every refusal: loadgen's (gRPC status / HTTP code) and shardtel's own counters of
#    refusals (/metrics: memory limiter by reason, refused spans, failed requests, mesh send
#    timeouts, queue-full refusals, ingest log refusals), summed over cores.
#    The report puts plain and sampling side by side at each offered rate (CPU per span and
#    its increase with sampling: target <= +15 %).
# 2. Memory per buffered span. One step at MEM_RATE for MEM_SECS per config of MEM_CONFIGS:
#      (peak RSS - idle RSS) / spans buffered at the peak
#    with idle RSS read before the load, peak RSS = VmHWM, and spans buffered sampled every
#    second. shardtel: shardtel_sampler_buffered_spans (summed over cores), compared with the
#    spans' wire size (shardtel_sampler_buffered_span_bytes / buffered_spans). Target: <= 1.25x.
#    The Collector: traces not yet decided (new_trace_id_received - global_count_traces_sampled)
#    x spans per trace (accepted spans / new trace ids); its live Go heap per buffered span
#    (otelcol_process_runtime_heap_alloc_bytes) is printed next to it. It keeps a decided trace's
#    entry (not its spans) until num_traces pushes it out: that memory counts in its RSS too.
#    At steady state a sampler holds MEM_RATE x 10 s of spans.
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME      result folder name            [<UTC date>-<time>-sampling]
#   OUT           result folder                 [benches/results/RUN_NAME]
#   PROTOS        grpc and/or http              [grpc http]
#   RATES         offered spans/s per step      [100000 200000 300000 400000 500000 600000 800000 1000000]
#   STEP_SECS     seconds per throughput step   [30]
#   SPLIT         --split-traces pieces         [3]
#   GRPC_CONNS / HTTP_CONNS  loadgen --connections [16 / 64]
#   LOADGEN_WORKERS  loadgen --workers           [2, or the CPUs left to loadgen if more]
#   SHARDTEL_CORES   shardtel's engine.cores, e.g. "0,1" or "0-3" ["all"; on more than 2 CPUs:
#                    the first half of them, so that loadgen gets the rest]
#   LOADGEN_CPUS     loadgen --cpus             [the CPUs SHARDTEL_CORES leaves free; none when
#                    it takes them all (a 2-core machine): loadgen and the reactors then share
#                    both CPUs and the driver-bound check is what separates the two]
#   LAG_P99_MS       send lag p99 above which loadgen counts as behind schedule [20]
#   CPU_WARMUP_SECS  CPU per span counts from this second of a step to its end (the sampler's
#                    decision_wait: from then on it decides at the rate it buffers); steps
#                    shorter than twice that are counted whole [10]
#   SHARDTEL_ENV     extra environment of every shardtel started, e.g.
#                    "MIMALLOC_ALLOW_THP=1" (transparent huge pages back on: shardtel turns
#                    them off at start; RSS per buffered span 1.38x -> 1.56x wire in the
#                    memory step, docs/tail-sampling.md) [""]
#   MEM_RATE      spans/s of the memory step    [200000]
#   MEM_SECS      seconds of the memory step    [25]
#   MEM_PROTO     protocol of the memory step   [grpc]
#   CONFIGS       throughput configs ("" = none) [plain sampling sampling-lz4 otelcol-plain otelcol-sampling]
#   MEM_CONFIGS   memory step configs            [sampling sampling-lz4 otelcol-sampling]
#   GRPC_PORT / HTTP_PORT / METRICS_PORT / HEALTH_PORT  where the collectors listen on 127.0.0.1
#                 [4317 / 4318 / 8888 / 13133]; shardtel then runs on a copy of its config
#                 under raw/configs/ with them. Pick ports below 32768: the check that a port is free
#                 connects to it, and a connect to a free port of the ephemeral range can take
#                 it for a moment (seen: "failed to bind the metrics endpoint")
#   QUIET_WAIT    max seconds to wait before a phase while rustc runs [0]
#   SHARDTEL_BIN / LOADGEN_BIN  use these binaries instead of building them
#   OTELCOL_BIN   use this OpenTelemetry Collector instead of building tests/peers/otelcol
#                 (SHARDTEL_OTELCOL_BIN, as test.sh exports it, is used too)
#
# Every process started here is stopped by its PID (TERM, KILL after 15 s).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-$(date -u +%Y%m%d-%H%M%S)-sampling}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
PROTOS=${PROTOS:-"grpc http"}
RATES=${RATES:-"100000 200000 300000 400000 500000 600000 800000 1000000"}
STEP_SECS=${STEP_SECS:-30}
SPLIT=${SPLIT:-3}
GRPC_CONNS=${GRPC_CONNS:-16}
HTTP_CONNS=${HTTP_CONNS:-64}
MEM_RATE=${MEM_RATE:-200000}
MEM_SECS=${MEM_SECS:-25}
MEM_PROTO=${MEM_PROTO:-grpc}
CONFIGS=${CONFIGS-"plain sampling sampling-lz4 otelcol-plain otelcol-sampling"}
MEM_CONFIGS=${MEM_CONFIGS-"sampling sampling-lz4 otelcol-sampling"}
QUIET_WAIT=${QUIET_WAIT:-0}
LAG_P99_MS=${LAG_P99_MS:-20}
CPU_WARMUP_SECS=${CPU_WARMUP_SECS:-10}
NPROC=$(nproc)
# expand "0-2,5" into "0 1 2 5"
cpu_list() { local p a b out=""; for p in ${1//,/ }; do if [[ $p == *-* ]]; then a=${p%-*}; b=${p#*-}; out+=" $(seq -s ' ' "$a" "$b")"; else out+=" $p"; fi; done; echo $out; }
ALL_CPUS=$(cpu_list "$(cat /sys/fs/cgroup/cpuset.cpus.effective 2>/dev/null || echo "0-$((NPROC - 1))")")
[ -n "$ALL_CPUS" ] || ALL_CPUS=$(seq -s ' ' 0 $((NPROC - 1)))
set -- $ALL_CPUS; N_CPUS=$#; set --
if [ -z "${SHARDTEL_CORES:-}" ]; then
  if [ "$N_CPUS" -gt 2 ]; then SHARDTEL_CORES=$(echo $ALL_CPUS | cut -d' ' -f1-$((N_CPUS / 2)) | tr ' ' ,); else SHARDTEL_CORES=all; fi
fi
if [ "$SHARDTEL_CORES" = all ]; then REACTOR_CPUS=$ALL_CPUS; else REACTOR_CPUS=$(cpu_list "$SHARDTEL_CORES"); fi
if [ -z "${LOADGEN_CPUS+x}" ]; then
  LOADGEN_CPUS=""
  for c in $ALL_CPUS; do [[ " $REACTOR_CPUS " == *" $c "* ]] || LOADGEN_CPUS+="${LOADGEN_CPUS:+,}$c"; done
fi
if [ -n "$LOADGEN_CPUS" ]; then
  set -- $(cpu_list "$LOADGEN_CPUS"); LOADGEN_WORKERS=${LOADGEN_WORKERS:-$(($# > 2 ? $# : 2))}; set --
  PINNING="loadgen pinned to CPUs $LOADGEN_CPUS, shardtel reactors on $SHARDTEL_CORES"
else
  LOADGEN_WORKERS=${LOADGEN_WORKERS:-2}
  PINNING="loadgen NOT pinned: shardtel's reactors take every CPU ($SHARDTEL_CORES of $N_CPUS), so loadgen shares them; driver-bound steps are detected from its lag and CPU"
fi
GRPC_PORT=${GRPC_PORT:-4317}
HTTP_PORT=${HTTP_PORT:-4318}
METRICS_PORT=${METRICS_PORT:-8888}
HEALTH_PORT=${HEALTH_PORT:-13133}
PORTS="$GRPC_PORT $HTTP_PORT $METRICS_PORT $HEALTH_PORT"
METRICS=http://127.0.0.1:$METRICS_PORT/metrics
OTELCOL_CONFIGS=$ROOT/tests/peers/otelcol/configs
# The OpenTelemetry Collector's bench configs read their addresses from these.
export OTELCOL_GRPC_ENDPOINT=127.0.0.1:$GRPC_PORT OTELCOL_HTTP_ENDPOINT=127.0.0.1:$HTTP_PORT OTELCOL_METRICS_PORT=$METRICS_PORT
COLL_PID=""
SAMPLER_PID=""
LOADGEN_PID=""

die() { echo "sampling.sh: $*" >&2; exit 1; }
mkdir -p "$RAW"
: >"$RAW/run.log"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RAW/run.log"; }
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"
[ -x /usr/bin/time ] || die "/usr/bin/time is required (apt-get install time): it measures loadgen's CPU"

# shellcheck source=fixtures.sh
. "$HERE/fixtures.sh"
SAMPLING_CONFIG=$RAW/blackhole-sampling.toml
SAMPLING_LZ4_CONFIG=$RAW/blackhole-sampling-lz4.toml
# ported FILE: a shardtel config listening on the chosen ports: FILE itself on the default
# ports, else a copy under raw/configs/ with its quoted 127.0.0.1:<default port> addresses
# replaced and engine.cores = SHARDTEL_CORES (nothing else in it changes).
ported() {
  if [ "$PORTS" = "4317 4318 8888 13133" ] && [ "$SHARDTEL_CORES" = all ]; then echo "$1"; return; fi
  local cores='"all"'
  [ "$SHARDTEL_CORES" = all ] || cores="[$(cpu_list "$SHARDTEL_CORES" | tr ' ' ,)]"
  mkdir -p "$RAW/configs"
  sed -e "s/^cores = \"all\"/cores = $cores/" -e "s/\"127\.0\.0\.1:4317\"/\"127.0.0.1:$GRPC_PORT\"/" -e "s/\"127\.0\.0\.1:4318\"/\"127.0.0.1:$HTTP_PORT\"/" \
    -e "s/\"127\.0\.0\.1:8888\"/\"127.0.0.1:$METRICS_PORT\"/" -e "s/\"127\.0\.0\.1:13133\"/\"127.0.0.1:$HEALTH_PORT\"/" \
    "$1" >"$RAW/configs/$(basename "$1")"
  echo "$RAW/configs/$(basename "$1")"
}
config_file() {
  case $1 in
    plain) ported "$HERE/blackhole.toml" ;;
    sampling) ported "$SAMPLING_CONFIG" ;;
    sampling-lz4) ported "$SAMPLING_LZ4_CONFIG" ;;
    otelcol-plain) echo "$OTELCOL_CONFIGS/bench-nop.yaml" ;;
    otelcol-sampling) echo "$OTELCOL_CONFIGS/bench-sampling.yaml" ;;
    *) die "unknown config $1" ;;
  esac
}
kind() { case $1 in otelcol-*) echo otelcol ;; *) echo shardtel ;; esac; }
sampling_config() { case $1 in sampling | sampling-lz4 | otelcol-sampling) return 0 ;; *) return 1 ;; esac; }

# ---- binaries (built before any measurement) ---------------------------------------------
for c in $CONFIGS $MEM_CONFIGS; do kind "$c" >/dev/null; case $c in plain | sampling | sampling-lz4 | otelcol-plain | otelcol-sampling) ;; *) die "unknown config $c" ;; esac; done
if [[ " $CONFIGS $MEM_CONFIGS " == *" plain "* || " $CONFIGS $MEM_CONFIGS " == *" sampling"* ]]; then
  if [ -z "${SHARDTEL_BIN:-}" ]; then
    (cd "$ROOT" && cargo build --release -q -p shardtel-engine) || die "cargo build --release -p shardtel-engine failed"
    SHARDTEL_BIN=$ROOT/target/release/shardtel
  fi
  write_config "$SAMPLING_CONFIG" "$HERE/blackhole-sampling.base.toml" reference_sampling_policies
  sed 's/^\[processors\.tail_sampling\]$/[processors.tail_sampling]\nbuffer_compression = "lz4"/' "$SAMPLING_CONFIG" >"$SAMPLING_LZ4_CONFIG"
  grep -q '^buffer_compression = "lz4"$' "$SAMPLING_LZ4_CONFIG" || die "could not write $SAMPLING_LZ4_CONFIG"
  for c in plain sampling sampling-lz4; do "$SHARDTEL_BIN" validate --config "$(config_file $c)" >/dev/null || die "$(config_file $c) does not validate"; done
fi
if [[ " $CONFIGS $MEM_CONFIGS " == *" otelcol-"* ]]; then
  OTELCOL_BIN=${OTELCOL_BIN:-${SHARDTEL_OTELCOL_BIN:-}}
  if [ -z "$OTELCOL_BIN" ]; then
    OTELCOL_BIN=$("$ROOT/tests/peers/otelcol/build.sh") || die "building the OpenTelemetry Collector failed"
  fi
  for c in otelcol-plain otelcol-sampling; do "$OTELCOL_BIN" validate --config "$(config_file $c)" >/dev/null || die "$(config_file $c) does not validate"; done
fi
if [ -z "${LOADGEN_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-loadgen) || die "cargo build --release -p shardtel-loadgen failed"
  LOADGEN_BIN=$ROOT/target/release/shardtel-loadgen
fi

# ---- collector control (by PID only) -------------------------------------------------------
start_collector() {  # config log
  local p
  for p in $PORTS; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use: stop what listens there first"; fi
  done
  if [ "$(kind "$1")" = otelcol ]; then
    "$OTELCOL_BIN" --config "$(config_file "$1")" >"$2" 2>&1 &
  else
    # shellcheck disable=SC2086 # SHARDTEL_ENV: words of NAME=VALUE
    env ${SHARDTEL_ENV:-} "$SHARDTEL_BIN" --config "$(config_file "$1")" >"$2" 2>&1 &
  fi
  COLL_PID=$!
  for _ in $(seq 1 200); do
    kill -0 "$COLL_PID" 2>/dev/null || { tail -5 "$2" >&2; die "$1 exited at start"; }
    if [ "$(kind "$1")" = otelcol ]; then
      # receivers start last: once they and the metrics endpoint answer, the pipeline is up
      (exec 3<>"/dev/tcp/127.0.0.1/$GRPC_PORT") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT") 2>/dev/null \
        && curl -fs -o /dev/null --max-time 1 "$METRICS" && return 0
    else
      [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$HEALTH_PORT/" || true)" = 200 ] && return 0
    fi
    sleep 0.1
  done
  die "$1 not ready within 20 s"
}
stop_collector() {
  [ -n "$COLL_PID" ] || return 0
  kill -TERM "$COLL_PID" 2>/dev/null || true
  for _ in $(seq 1 150); do kill -0 "$COLL_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$COLL_PID" 2>/dev/null && { echo "collector $COLL_PID ignored TERM for 15 s: KILL" >&2; kill -KILL "$COLL_PID" 2>/dev/null || true; }
  wait "$COLL_PID" 2>/dev/null || true
  COLL_PID=""
}
cleanup() {
  if [ -n "$SAMPLER_PID" ]; then kill "$SAMPLER_PID" 2>/dev/null || true; fi
  if [ -n "$LOADGEN_PID" ]; then
    # loadgen runs under /usr/bin/time: stop loadgen (time's child) first, then time
    for c in $(cat "/proc/$LOADGEN_PID/task/$LOADGEN_PID/children" 2>/dev/null); do kill "$c" 2>/dev/null || true; done
    kill "$LOADGEN_PID" 2>/dev/null || true
  fi
  stop_collector
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

rustc_count() { ps -eo comm= | grep -c '^rustc$' || true; }
wait_quiet() {
  local waited=0
  while [ "$(rustc_count)" -gt 0 ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    log "waiting before $1: $(rustc_count) rustc running (waited ${waited}s)"
    sleep 30; waited=$((waited + 30))
  done
  [ "$(rustc_count)" -eq 0 ] || log "WARNING: $1 starts with $(rustc_count) rustc processes running: its numbers are disturbed"
}
status_kib() { awk -v k="$1:" '$1==k{print $2}' "/proc/$COLL_PID/status" 2>/dev/null || echo 0; }
# metric NAME [LABEL-FILTER]: sum over series (the Collector's names with or without _total,
# with or without labels)
metric() {
  curl -s --max-time 5 "$METRICS" | awk -v n="$1" -v f="${2:-}" '
    (index($0, n "{") == 1 || index($0, n " ") == 1 || index($0, n "_total{") == 1 || index($0, n "_total ") == 1) \
      && (f == "" || index($0, f)) {s += $NF} END {printf "%.0f\n", s}'
}

loadgen() {  # proto rate secs json log
  local proto=$1 args=()
  if [ "$proto" = grpc ]; then args=(-p grpc -e "http://127.0.0.1:$GRPC_PORT" --connections "$GRPC_CONNS")
  else args=(-p http-protobuf -e "http://127.0.0.1:$HTTP_PORT" --connections "$HTTP_CONNS"); fi
  args+=(--rate "$2" --duration "${3}s" --split-traces "$SPLIT" --workers "$LOADGEN_WORKERS" --json "$4" -q)
  [ -z "$LOADGEN_CPUS" ] || args+=(--cpus "$LOADGEN_CPUS")
  echo "shardtel-loadgen ${args[*]}" >>"$RAW/commands.txt"
  # In the background and waited for, so that Ctrl-C stops the run at once; under
  # /usr/bin/time for loadgen's CPU seconds (user system wall) in <json>.time.
  /usr/bin/time -f "%U %S %e" -o "$4.time" "$LOADGEN_BIN" "${args[@]}" >"$5" 2>&1 &
  LOADGEN_PID=$!
  wait "$LOADGEN_PID" || true
  LOADGEN_PID=""
}

# After the load: wait until the collector's counters stop moving (shardtel publishes them once
# a second).
settle() {  # config
  local last=-1 now
  for _ in $(seq 1 30); do
    sleep 1.2
    if [ "$(kind "$1")" = otelcol ]; then
      now=$(metric otelcol_receiver_accepted_spans)-$(metric otelcol_processor_tail_sampling_new_trace_id_received)
    else
      now=$(metric shardtel_receiver_accepted_spans_total)-$(metric shardtel_sampler_spans_received_total)
    fi
    [ "$now" = "$last" ] && return 0
    last=$now
  done
}

# The step's counters: "accepted received kept early timer" (spans, except the Collector's kept
# and decisions, which it counts in traces: kept is then "N_traces").
# shardtel: accepted by the receivers; received by the samplers; kept = sent by the blackhole;
# early = decisions forced by a bound; timer = decisions at decision_wait.
# The Collector: accepted by the receiver, which counts only once the pipeline (the sampler's
# queue) took the spans, so received = accepted; kept = traces sampled; early = traces dropped
# before their decision (num_traces full); timer = traces decided. Without sampling only
# accepted is known ("-" for the rest).
step_counters() {  # config
  if [ "$1" = otelcol-plain ]; then
    echo "$(metric otelcol_receiver_accepted_spans) - - - -"
    return
  fi
  if [ "$(kind "$1")" = otelcol ]; then
    local accepted; accepted=$(metric otelcol_receiver_accepted_spans)
    echo "$accepted $accepted $(metric otelcol_processor_tail_sampling_global_count_traces_sampled 'sampled="true"')_traces" \
      "$(metric otelcol_processor_tail_sampling_sampling_trace_dropped_too_early)" \
      "$(metric otelcol_processor_tail_sampling_global_count_traces_sampled)"
    return
  fi
  local early
  early=$(( $(metric shardtel_sampler_decisions_total 'reason="max_traces"') + $(metric shardtel_sampler_decisions_total 'reason="max_buffered_bytes"') \
          + $(metric shardtel_sampler_decisions_total 'reason="max_spans_per_trace"') + $(metric shardtel_sampler_decisions_total 'reason="max_bytes_per_trace"') ))
  echo "$(metric shardtel_receiver_accepted_spans_total) $(metric shardtel_sampler_spans_received_total)" \
    "$(metric shardtel_exporter_sent_spans_total 'exporter="blackhole"') $early $(metric shardtel_sampler_decisions_total 'reason="timer"')"
}

# ---- machine ---------------------------------------------------------------------------------
{
  echo "date_utc: $(date -u +%FT%TZ)"
  echo "nproc: $(nproc)"
  echo "cpu_model: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "kernel: $(uname -srm)"
  echo "loadavg_at_start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "rustc_at_start: $(rustc_count)"
  echo "git: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' +uncommitted changes')"
  echo "shardtel: ${SHARDTEL_BIN:-not used}; loadgen: $LOADGEN_BIN"
  if [ -n "${OTELCOL_BIN:-}" ]; then echo "otelcol: $OTELCOL_BIN ($("$OTELCOL_BIN" --version 2>&1 | head -1); manifest tests/peers/otelcol/go.mod)"; fi
  echo "pinning: $PINNING; loadgen workers: $LOADGEN_WORKERS; shardtel environment: ${SHARDTEL_ENV:-none}"
  echo "knobs: LOADGEN_WORKERS=$LOADGEN_WORKERS SHARDTEL_CORES='$SHARDTEL_CORES' LOADGEN_CPUS='$LOADGEN_CPUS' LAG_P99_MS=$LAG_P99_MS PROTOS='$PROTOS' RATES='$RATES' STEP_SECS=$STEP_SECS SPLIT=$SPLIT GRPC_CONNS=$GRPC_CONNS HTTP_CONNS=$HTTP_CONNS MEM_RATE=$MEM_RATE MEM_SECS=$MEM_SECS MEM_PROTO=$MEM_PROTO CONFIGS='$CONFIGS' MEM_CONFIGS='$MEM_CONFIGS' PORTS='$PORTS'"
} >"$RAW/machine.txt"
: >"$RAW/commands.txt"
printf "config\tproto\toffered\tsecs\tacked_spans_s\tachieved_pct\trefused\tfailed\tbehind\tcoll_accepted\tsampler_received\tkept\tearly_decisions\ttimer_decisions\tpeak_rss_mib\tcollector_cpu_pct\tcpu_us_per_span\tsend_lag_p99_ms\tloadgen_cpu_pct\twindow_pct\tdriver\trefusal_reasons\tpass\trustc\n" >"$RAW/steps.tsv"
log "$PINNING; loadgen workers: $LOADGEN_WORKERS"

# The collector's own refusal counters, non-zero ones, summed over cores and other labels but
# the reason/transport ones: "name{reason=...}=N,..." ("-" when none; the Collector: its
# refused/failed counters the same way).
refusal_counters() {  # config
  curl -s --max-time 5 "$METRICS" | awk '
    /^#/ {next}
    $1 ~ /refused|failed_requests|send_timeouts|queue_full|_dropped_too_early|rejected/ && $NF + 0 > 0 {
      name = $1; keep = ""
      if (match(name, /\{.*\}/)) {
        labels = substr(name, RSTART + 1, RLENGTH - 2); name = substr(name, 1, RSTART - 1)
        n = split(labels, l, ",")
        for (i = 1; i <= n; i++) if (l[i] ~ /^(reason|signal|answered)=/) keep = keep (keep == "" ? "" : ",") l[i]
      }
      k = name (keep == "" ? "" : "{" keep "}"); s[k] += $NF
    }
    END {out = ""; for (k in s) out = out (out == "" ? "" : " ") k "=" s[k]; print (out == "" ? "-" : out)}'
}

# ---- 1. throughput with and without sampling ---------------------------------------------------
ticks() { sed -E 's/^.*\) //' "/proc/$COLL_PID/stat" | awk '{print $12 + $13}'; }
accepted_now() {  # config: spans the collector accepted so far
  if [ "$(kind "$1")" = otelcol ]; then metric otelcol_receiver_accepted_spans; else metric shardtel_receiver_accepted_spans_total; fi
}
step() {  # config proto rate secs
  local cfg=$1 proto=$2 rate=$3 secs=$4 tag="$1-$2-$3"
  start_collector "$cfg" "$RAW/$tag-collector.log"
  local t0 c0 c1 t1 warm=$CPU_WARMUP_SECS
  # CPU per span is measured after the first CPU_WARMUP_SECS of the step (by then a sampler
  # decides at the rate it buffers), from the collector's CPU time and accepted spans then and
  # at the end; a step too short for that is measured whole.
  [ "$secs" -ge $((2 * warm)) ] || warm=0
  t0=$(date +%s.%N); c0=$(ticks)
  echo "$c0 0" >"$RAW/$tag.cpu0"
  if [ "$warm" -gt 0 ]; then (sleep "$warm"; echo "$(ticks) $(accepted_now "$cfg")" >"$RAW/$tag.cpu0") & fi
  local snap=$!
  loadgen "$proto" "$rate" "$secs" "$RAW/$tag.json" "$RAW/$tag.log"
  if [ "$warm" -gt 0 ]; then wait "$snap" 2>/dev/null || true; fi
  c1=$(ticks); t1=$(date +%s.%N)
  local a1 cw aw; a1=$(accepted_now "$cfg"); read -r cw aw <"$RAW/$tag.cpu0"
  local cpu cpu_s; cpu=$(awk -v d="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.0f", 100*d/hz/(b-a)}')
  cpu_s=$(awk -v d="$((c1 - cw))" -v hz="$(getconf CLK_TCK)" 'BEGIN{printf "%.2f", d/hz}')
  local cpu_spans=$((a1 - aw))
  settle "$cfg"
  local accepted received kept early timer hwm reasons
  read -r accepted received kept early timer <<<"$(step_counters "$cfg")"
  reasons=$(refusal_counters "$cfg")
  hwm=$(( $(status_kib VmHWM) / 1024 ))
  stop_collector
  local row
  row=$(python3 - "$RAW/$tag.json" "$rate" "$accepted" "$received" "$cfg" "$early" "$cpu_s" "$LAG_P99_MS" "$LOADGEN_WORKERS" "$reasons" "$cpu_spans" <<'PY'
import json, os, sys
num = lambda v: int(v) if v.isdigit() else -1  # "-": not counted by this collector
path, rate, accepted, received, cfg = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), num(sys.argv[4]), sys.argv[5]
early, cpu_s, lag_max_ms, workers, reasons = num(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8]), int(sys.argv[9]), sys.argv[10]
try:
    r = json.load(open(path))
except Exception:
    print("0\t0\t-1\t-1\t-1\t-\t-\t-\t-\tloadgen-failed\t-\t0"); sys.exit()
q = r["requests"]; acked = r["items"]["acknowledged"]
sps = r["achieved"]["acknowledged_items_per_second"]
cpu_spans = int(sys.argv[11])  # spans accepted while cpu_s was counted
us_per_span = "%.3f" % (cpu_s * 1e6 / cpu_spans) if cpu_spans > 0 else "-"
# The driver: send lag, requests never sent, its CPU, its in-flight window.
lag_p99_ms = r["send_lag_us"]["p99"] / 1000.0
lg_cpu = "-"
try:
    u, s_, e = (float(x) for x in open(path + ".time").read().split()[-3:])
    lg_cpu = 100.0 * (u + s_) / e if e else 0.0
except Exception:
    pass
http1 = r["protocol"] != "grpc"
window = r["connections"] * (1 if http1 else 256)  # loadgen --max-in-flight default (HTTP/2)
in_flight = r["achieved"]["requests_per_second"] * max(r["latency_us"]["mean"] - r["send_lag_us"]["mean"], 0) / 1e6
window_pct = 100.0 * in_flight / window if window else 0.0
# A few requests due in the last instants of the run are "behind" in any run: only more than
# 0.5 % of them counts.
lagging = q["behind_schedule"] > max(2, 0.005 * q["sent"]) or lag_p99_ms > lag_max_ms
cpu_saturated = lg_cpu != "-" and lg_cpu >= 90.0 * workers
if cpu_saturated or (lagging and window_pct < 90.0):
    driver = "DRIVER-BOUND"
elif lagging:
    driver = "window-full"  # behind because the collector held every in-flight slot: its limit
else:
    driver = "ok"
ok = sps >= 0.97 * rate and q["refused"] == 0 and q["failed"] == 0 and accepted == acked
if cfg in ("sampling", "sampling-lz4"):
    ok = ok and received == accepted
if cfg == "otelcol-sampling":  # no trace dropped before its decision
    ok = ok and early == 0
verdict = "driver-bound" if driver == "DRIVER-BOUND" else str(int(ok))
lg = ",".join("%s=%d" % kv for kv in sorted({**r.get("refused_by_reason", {}), **r.get("failed_by_reason", {})}.items())) or "-"
print("%.0f\t%.1f\t%d\t%d\t%d\t%s\t%.1f\t%s\t%.0f\t%s\tloadgen: %s; collector: %s\t%s" % (
    sps, 100 * sps / rate, q["refused"], q["failed"], q["behind_schedule"], us_per_span, lag_p99_ms,
    "-" if lg_cpu == "-" else "%.0f" % lg_cpu, window_pct, driver, lg, reasons, verdict))
PY
)
  IFS=$'\t' read -r S_SPS S_PCT S_REF S_FAIL S_BEHIND S_US S_LAG S_LGCPU S_WIN S_DRIVER S_REASONS S_PASS <<<"$row"
  printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$cfg" "$proto" "$rate" "$secs" "$S_SPS" "$S_PCT" \
    "$S_REF" "$S_FAIL" "$S_BEHIND" "$accepted" "$received" "$kept" "$early" "$timer" "$hwm" "$cpu" "$S_US" "$S_LAG" "$S_LGCPU" "$S_WIN" "$S_DRIVER" "$S_REASONS" "$S_PASS" "$(rustc_count)" >>"$RAW/steps.tsv"
  log "$(printf '%-16s %-4s offered=%-8s acked=%8s sp/s (%5s%%) refused=%s failed=%s accepted=%s sampler=%s kept=%s early=%s timer=%s peak_rss=%sMiB cpu=%s%% %sus/span driver=%s (lag p99 %sms, behind %s, loadgen cpu %s%%, window %s%%) pass=%s' \
    "$cfg" "$proto" "$rate" "$S_SPS" "$S_PCT" "$S_REF" "$S_FAIL" "$accepted" "$received" "$kept" "$early" "$timer" "$hwm" "$cpu" "$S_US" "$S_DRIVER" "$S_LAG" "$S_BEHIND" "$S_LGCPU" "$S_WIN" "$S_PASS")"
  [ "$S_REASONS" = "loadgen: -; collector: -" ] || log "    refusals $cfg $proto $rate: $S_REASONS"
  if [ "$S_DRIVER" = DRIVER-BOUND ]; then
    log "!!!!!!!! DRIVER-BOUND: $cfg $proto at $rate spans/s: loadgen fell behind its schedule (send lag p99 ${S_LAG} ms, ${S_BEHIND} requests never sent, loadgen CPU ${S_LGCPU}% of ${LOADGEN_WORKERS} workers) with room in its window: this step measures the driver, not $cfg. More LOADGEN_WORKERS, free CPUs (LOADGEN_CPUS), or a lower rate. !!!!!!!!"
  fi
}

for proto in $PROTOS; do
  for cfg in $CONFIGS; do
    wait_quiet "$cfg $proto"
    for r in $RATES; do step "$cfg" "$proto" "$r" "$STEP_SECS"; done
  done
done

# ---- 2. memory per buffered span -------------------------------------------------------------
# One step per config of MEM_CONFIGS; 1 s samples of RSS and the spans buffered into
# raw/memory-<config>.tsv; one summary line each.
MEM_SUMMARY="memory step skipped (MEM_SECS=0 or MEM_CONFIGS empty)"
mem_sample() {  # config t -> a row of memory-<config>.tsv
  local m; m=$(curl -s --max-time 1 "$METRICS" || true)
  msum() {  # NAME: sum over its series (with or without the _total suffix)
    awk -v n="$1" '(index($0, n "{") == 1 || index($0, n " ") == 1 || index($0, n "_total{") == 1 || index($0, n "_total ") == 1) {s += $NF}
      END {printf "%.0f", s}' <<<"$m"
  }
  if [ "$(kind "$1")" = otelcol ]; then
    # t rss spans_accepted trace_ids_received traces_decided heap_alloc_bytes traces_on_memory
    printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n" "$2" "$(status_kib VmRSS)" "$(msum otelcol_receiver_accepted_spans)" \
      "$(msum otelcol_processor_tail_sampling_new_trace_id_received)" "$(msum otelcol_processor_tail_sampling_global_count_traces_sampled)" \
      "$(msum otelcol_process_runtime_heap_alloc_bytes)" "$(msum otelcol_processor_tail_sampling_sampling_traces_on_memory)"
  else
    # t rss buffered_spans buffered_span_bytes buffered_bytes
    printf "%s\t%s\t%s\t%s\t%s\n" "$2" "$(status_kib VmRSS)" "$(msum shardtel_sampler_buffered_spans)" \
      "$(msum shardtel_sampler_buffered_span_bytes)" "$(msum shardtel_sampler_buffered_bytes)"
  fi
}
if [ "$MEM_SECS" != 0 ] && [ -n "$MEM_CONFIGS" ]; then
  MEM_SUMMARY=""
  for cfg in $MEM_CONFIGS; do
    sampling_config "$cfg" || die "MEM_CONFIGS: $cfg has no tail sampling"
    wait_quiet "memory $cfg"
    start_collector "$cfg" "$RAW/memory-$cfg-collector.log"
    sleep 2
    idle_kib=$(status_kib VmRSS)
    tsv="$RAW/memory-$cfg.tsv"
    if [ "$(kind "$cfg")" = otelcol ]; then
      printf "t_s\trss_kib\tspans_accepted\ttrace_ids_received\ttraces_decided\theap_alloc_bytes\ttraces_on_memory\n" >"$tsv"
    else
      printf "t_s\trss_kib\tbuffered_spans\tbuffered_span_bytes\tbuffered_bytes\n" >"$tsv"
    fi
    (
      t=0
      while kill -0 "$COLL_PID" 2>/dev/null; do
        mem_sample "$cfg" "$t" >>"$tsv"
        sleep 1; t=$((t + 1))
      done
    ) &
    SAMPLER_PID=$!
    loadgen "$MEM_PROTO" "$MEM_RATE" "$MEM_SECS" "$RAW/memory-$cfg.json" "$RAW/memory-$cfg.log"
    hwm_kib=$(status_kib VmHWM)
    kill "$SAMPLER_PID" 2>/dev/null || true; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=""
    early=$(read -r _ _ _ e _ <<<"$(step_counters "$cfg")"; echo "$e")
    stop_collector
    line=$(python3 - "$tsv" "$idle_kib" "$hwm_kib" "$early" "$(kind "$cfg")" <<'PY'
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()[1:]]
idle, hwm, early, kind = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if kind == "otelcol":
    rows = [tuple(int(float(x or 0)) for x in r) for r in rows if len(r) == 7]
    # Spans buffered = traces not yet decided x spans per trace (both from the Collector's
    # counters at that second).
    def buffered(r):
        t, rss, spans, ids, decided, heap, on_mem = r
        return (ids - decided) * spans / ids if ids else 0
    if not rows or max(buffered(r) for r in rows) == 0:
        print("no spans were buffered"); sys.exit()
    r = max(rows, key=buffered)
    t, rss, spans, ids, decided, heap, on_mem = r
    b = buffered(r)
    print("idle_rss_mib=%.0f peak_rss_mib=%.0f spans_buffered_at_peak=%d (%d traces undecided x %.1f spans/trace) "
          "rss_bytes_per_buffered_span=%.0f live_heap_bytes_per_buffered_span=%.0f traces_held=%d "
          "dropped_before_decision=%d (at t=%ds; RSS then %.0f MiB)"
          % (idle / 1024, hwm / 1024, b, ids - decided, spans / ids, (hwm - idle) * 1024 / b, heap / b,
             on_mem, early, t, rss / 1024))
else:
    rows = [tuple(int(x or 0) for x in r) for r in rows if len(r) == 5]
    if not rows or max(r[2] for r in rows) == 0:
        print("no spans were buffered"); sys.exit()
    # The sample with the most spans buffered (the steady state's peak), and the RSS peak.
    t, rss, spans, wire, charged = max(rows, key=lambda r: r[2])
    per_span = (hwm - idle) * 1024 / spans
    wire_per_span = wire / spans
    print("idle_rss_mib=%.0f peak_rss_mib=%.0f spans_buffered_at_peak=%d wire_bytes_per_span=%.0f "
          "rss_bytes_per_buffered_span=%.0f ratio=%.2f target<=1.25 charged_bytes_per_span=%.0f "
          "early_decisions=%d (at t=%ds; RSS then %.0f MiB)"
          % (idle / 1024, hwm / 1024, spans, wire_per_span, per_span, per_span / wire_per_span,
             charged / spans, early, t, rss / 1024))
PY
)
    log "memory $cfg: $line"
    MEM_SUMMARY+="$cfg: $line"$'\n'
  done
fi

# ---- report ------------------------------------------------------------------------------------
echo "loadavg_at_end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/machine.txt"
python3 - "$RAW/steps.tsv" "$MEM_SUMMARY" >"$OUT/table.md" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print("# Tail sampling end to end (benches/e2e/sampling.sh)\n")
print("Highest offered rate passing at zero loss, without and with tail sampling (the reference policies: "
      "errors, latency > 1 s, user.id = vip, 10 %; decision_wait = 10s). CPU 100 % = one core; "
      "CPU per span = collector CPU time / spans it accepted, from CPU_WARMUP_SECS into the step to its end.\n")
print("| collector | proto | without sampling | with sampling | ratio (target >= 0.75) |")
print("|---|---|---|---|---|")
def fmt(r):
    if not r:
        return "none passed"
    sps, cpu = float(r["acked_spans_s"]), float(r["collector_cpu_pct"] or 0)
    us = "%.2f" % (cpu / 100.0 * 1e6 / sps) if sps else "-"
    return "%s spans/s (offered %s, CPU %s%%, %s µs/span, peak RSS %s MiB)" % (
        r["acked_spans_s"], r["offered"], r["collector_cpu_pct"], us, r["peak_rss_mib"])
for name, plain, sampling in (("shardtel", "plain", "sampling"), ("OpenTelemetry Collector", "otelcol-plain", "otelcol-sampling")):
    for proto in sorted({r["proto"] for r in rows}):
        if not any(r["config"] in (plain, sampling) and r["proto"] == proto for r in rows):
            continue
        best = {}
        for cfg in (plain, sampling):
            ok = [r for r in rows if r["proto"] == proto and r["config"] == cfg and r["pass"] == "1"]
            best[cfg] = max(ok, key=lambda r: float(r["acked_spans_s"])) if ok else None
        ratio = "%.2f" % (float(best[sampling]["acked_spans_s"]) / float(best[plain]["acked_spans_s"])) if best[plain] and best[sampling] else "-"
        print("| %s | %s | %s | %s | %s |" % (name, proto, fmt(best[plain]), fmt(best[sampling]), ratio))
print("\nCPU per span at the same offered rate (collector CPU seconds / spans accepted, after the warm-up; the "
      "driver's state of the steps; targets: sampling <= +15 % over plain, lz4 <= +15 % over sampling):\n")
print("| proto | offered | plain µs/span | sampling µs/span | sampling vs plain | lz4 µs/span | lz4 vs sampling | plain driver | sampling driver | lz4 driver | sampling refusals | lz4 refusals |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
by = {(r["config"], r["proto"], r["offered"]): r for r in rows}
for proto in sorted({r["proto"] for r in rows}):
    for off in sorted({r["offered"] for r in rows if r["proto"] == proto}, key=float):
        p, q, z = (by.get((c, proto, off)) for c in ("plain", "sampling", "sampling-lz4"))
        if not p and not q and not z:
            continue
        us = lambda r: r["cpu_us_per_span"] if r else "-"
        def vs(a, b):
            try:
                return "%+.0f %%" % (100.0 * (float(a["cpu_us_per_span"]) / float(b["cpu_us_per_span"]) - 1))
            except Exception:
                return "-"
        col = lambda r, k: r[k] if r else "-"
        print("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (proto, off, us(p), us(q), vs(q, p), us(z), vs(z, q),
              col(p, "driver"), col(q, "driver"), col(z, "driver"), col(q, "refusal_reasons"), col(z, "refusal_reasons")))
print("\nMemory per buffered span (MEM_RATE spans/s for MEM_SECS; the Collector's kept and decision "
      "counts below are traces, shardtel's spans):\n")
for line in sys.argv[2].strip().splitlines():
    print("- " + line)
print()
print("Every step:\n")
cols = ["config", "proto", "offered", "acked_spans_s", "achieved_pct", "refused", "failed", "coll_accepted",
        "sampler_received", "kept", "early_decisions", "timer_decisions", "peak_rss_mib", "collector_cpu_pct", "cpu_us_per_span",
        "send_lag_p99_ms", "loadgen_cpu_pct", "window_pct", "driver", "refusal_reasons", "pass", "rustc"]
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for r in rows:
    print("| " + " | ".join(r[c] for c in cols) + " |")
PY
log "wrote $OUT/table.md"
cat "$OUT/table.md"
