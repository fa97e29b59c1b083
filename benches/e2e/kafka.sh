#!/usr/bin/env bash
# kafka.sh - end-to-end Kafka throughput, in one run on one machine, against the OTLP ->
# blackhole figure of the same run:
#   1. blackhole  OTLP/gRPC -> shardtel -> blackhole              (the reference)
#   2. gateway    OTLP/gRPC -> shardtel -> kafka exporter -> topic (issue 7 target: >= 70 % of 1)
#   3. otelcol    OTLP/gRPC -> the OpenTelemetry Collector -> batch -> kafka exporter -> topic
#                 (tests/peers/otelcol/configs/kafka-gateway.yaml: partition_traces_by_id,
#                 otlp_proto, lz4, acks all, 5 ms linger as shardtel's defaults; a sending queue
#                 that blocks when full, so that what it acknowledges is what it delivers)
#   4. processor  topic of 2 -> shardtel kafka receiver -> tail sampling (seed policy) -> blackhole
# Load: shardtel-loadgen, closed loop (CONNECTIONS x CONCURRENCY requests in flight, SPANS
# spans per request, gRPC, no compression) for DURATION seconds, the same for every step.
# Rates come from the collector's self-metrics, sampled after WARMUP seconds and 1 s before
# the end of the load (steady state): spans/s exported (blackhole: to the blackhole; gateways:
# acknowledged by the broker, shardtel_exporter_sent_spans_total / otelcol_exporter_sent_spans),
# and MB/s (OTLP bytes: spans/s x loadgen's bytes per span; gateways: also the Kafka message
# values produced, before compression). The processor consumes everything the gateway step
# produced, from the start of the topic, and its rate is spans / time from its first to its
# last accepted span. Per step: CPU % of the collector (shardtel: and of its librdkafka
# threads), of the broker and of loadgen (utime+stime, 100 % = one core); CPU time per span
# (µs) of the collector (all its threads) and of the broker, separately; the collector's RSS
# at the end of the window and its peak (VmHWM).
#
#   benches/e2e/kafka.sh                                  # about 2 minutes
#   COMPRESSION=zstd RUN_NAME=kafka-zstd benches/e2e/kafka.sh
#   DURATION=5 WARMUP=2 benches/e2e/kafka.sh              # smoke test
#
# Knobs (environment, defaults in brackets):
#   RUN_NAME [kafka-<UTC date>-<time>]  OUT [benches/results/RUN_NAME]
#   BROKER [127.0.0.1:9092] (a Kafka broker; when none listens on the default address, the
#                   script starts Apache Kafka with tests/peers/kafka/kafka.sh, as test.sh
#                   does, and stops it at the end)
#   PARTITIONS [8]  COMPRESSION [lz4]  DURATION [30]  WARMUP [5]
#   KAFKA_EXTRA     more [exporters.kafka] lines, e.g. 'enable_idempotence = false' or
#                   'librdkafka = { "linger.ms" = 20 }' ("\n" separates lines)   []
#   CONNECTIONS [4]  CONCURRENCY [8]  SPANS [100]
#   OFFERED_RATE    open loop at this many spans/s instead of the closed loop (loadgen --rate),
#                   e.g. 5000 for a smoke test on a shared machine []
#   PORT_BASE [26000] (gRPC +317, HTTP +318, metrics +888, health +133)
#   SHARDTEL_CORES  shardtel's [engine] cores, e.g. '[0]' ["all"]
#   LOADGEN_CPUS    loadgen --cpus, e.g. 1 (unpinned when empty) []
#   To give shardtel a core of its own in every step (the broker's share out of the way):
#   taskset -c 1 tests/peers/kafka/kafka.sh start; SHARDTEL_CORES='[0]' LOADGEN_CPUS=1 benches/e2e/kafka.sh
#   SHARDTEL_BIN / LOADGEN_BIN / TOPIC_BIN  use these binaries instead of building them
#   PROCESSOR [1]   0 skips step 4 (for quick gateway comparisons)
#   OTELCOL [1]     0 skips step 3 (the OpenTelemetry Collector's gateway)
#   OTELCOL_BIN     the Collector to run [SHARDTEL_OTELCOL_BIN, else tests/peers/otelcol/build.sh
#                   builds it (cached)]
#
# Writes OUT/table.md and OUT/raw/ (configs, logs, loadgen JSON, metric samples).
# Every process started here is stopped by its PID.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
RUN_NAME=${RUN_NAME:-kafka-$(date -u +%Y%m%d-%H%M%S)}
OUT=${OUT:-$ROOT/benches/results/$RUN_NAME}
RAW=$OUT/raw
BROKER=${BROKER:-127.0.0.1:9092}
PARTITIONS=${PARTITIONS:-8}
COMPRESSION=${COMPRESSION:-lz4}
DURATION=${DURATION:-30}
WARMUP=${WARMUP:-5}
CONNECTIONS=${CONNECTIONS:-4}
CONCURRENCY=${CONCURRENCY:-8}
SPANS=${SPANS:-100}
PORT_BASE=${PORT_BASE:-26000}
SHARDTEL_CORES=${SHARDTEL_CORES:-'"all"'}
LOADGEN_CPUS=${LOADGEN_CPUS:-}
GRPC=127.0.0.1:$((PORT_BASE + 317)); HTTP=127.0.0.1:$((PORT_BASE + 318))
METRICS=127.0.0.1:$((PORT_BASE + 888)); HEALTH=127.0.0.1:$((PORT_BASE + 133))
HZ=$(getconf CLK_TCK)
mkdir -p "$RAW"
die() { echo "kafka.sh: $*" >&2; exit 1; }
# shellcheck source=fixtures.sh
. "$HERE/fixtures.sh"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$RAW/run.log"; }

broker_up() { (exec 3<>"/dev/tcp/${BROKER%:*}/${BROKER#*:}") 2>/dev/null; }
STARTED_BROKER=""
stop_broker() { if [ -n "$STARTED_BROKER" ]; then "$ROOT/tests/peers/kafka/kafka.sh" stop; fi; }
trap stop_broker EXIT
if ! broker_up; then
  [ "$BROKER" = 127.0.0.1:9092 ] || die "no Kafka broker on $BROKER"
  log "no broker on $BROKER: starting Apache Kafka (tests/peers/kafka/kafka.sh start)"
  "$ROOT/tests/peers/kafka/kafka.sh" start >>"$RAW/run.log" 2>&1 || die "the Kafka broker did not start; see $RAW/run.log"
  STARTED_BROKER=1
fi
if [ -z "${SHARDTEL_BIN:-}" ] || [ -z "${LOADGEN_BIN:-}" ] || [ -z "${TOPIC_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p shardtel-engine -p shardtel-loadgen -p shardtel-benches \
    --bin shardtel --bin shardtel-loadgen --bin shardtel-kafka-topic) || die "cargo build --release failed"
fi
SHARDTEL_BIN=${SHARDTEL_BIN:-$ROOT/target/release/shardtel}
LOADGEN_BIN=${LOADGEN_BIN:-$ROOT/target/release/shardtel-loadgen}
TOPIC_BIN=${TOPIC_BIN:-$ROOT/target/release/shardtel-kafka-topic}
BROKER_PID=$(ss -ltnpH "( sport = :${BROKER#*:} )" 2>/dev/null | sed -nE 's/.*pid=([0-9]+).*/\1/p' | head -1)

PID=""
stop() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID"
    for _ in $(seq 1 150); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=""
}
trap 'stop; stop_broker' EXIT

metric() {  # name [label filter]: sum over series (name or name_total, as the Collector writes it)
  curl -s --max-time 5 "http://$METRICS/metrics" | awk -v n="$1" -v f="${2:-}" \
    '(index($0, n"{") == 1 || index($0, n"_total{") == 1) && index($0, f) {s += $NF} END {printf "%.0f\n", s}'
}
rss_mib() {  # pid field (VmRSS, VmHWM)
  awk -v f="$2:" '$1 == f {printf "%.0f\n", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo 0
}
cpu_ticks() { [ -n "$1" ] && [ -r "/proc/$1/stat" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
# CPU ticks of pid $1's threads whose name matches the regex $2 (librdkafka: rdk:*, and
# rdkafka's producer poll thread).
thread_ticks() {
  [ -n "$1" ] && [ -d "/proc/$1/task" ] || { echo 0; return; }
  cat /proc/"$1"/task/*/stat 2>/dev/null | awk -v re="$2" '{
    s = $0; sub(/^[0-9]+ \(/, "", s); comm = substr(s, 1, index(s, ") ") - 1)
    sub(/^.*\) /, "", s); split(s, f, " ")
    if (comm ~ re) t += f[12] + f[13]
  } END {print t + 0}'
}
RDK_THREADS='^(rdk:|producer poll)'

now() { date +%s.%N; }

start_shardtel() {  # name toml
  "$SHARDTEL_BIN" validate --config "$2" >/dev/null || die "$2 does not validate"
  "$SHARDTEL_BIN" --config "$2" >"$RAW/$1.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$HEALTH/" || true)" = 200 ] && return 0
    kill -0 "$PID" 2>/dev/null || die "shardtel ($1) exited; log: $RAW/$1.log"
    sleep 0.1
  done
  die "shardtel ($1) not healthy after 30 s"
}

config_head() {
  cat <<TOML
[engine]
cores = $SHARDTEL_CORES
data_dir = "$RAW/data"
[telemetry]
health = "$HEALTH"
metrics = "$METRICS"
log_level = "info"
TOML
}

# Bytes per span of loadgen's requests (same flags, no network).
"$LOADGEN_BIN" --dry-run --duration 1s --spans-per-request "$SPANS" --json "$RAW/dry-run.json" -q >/dev/null 2>&1 || die "loadgen --dry-run failed"
BYTES_PER_SPAN=$(python3 -c 'import json,sys; w=json.load(open(sys.argv[1]))["dry_run"]["workers"]; print(sum(x["bytes"] for x in w)/sum(x["items"] for x in w))' "$RAW/dry-run.json")

# Runs the load against the running collector (PID); samples `exported` (a metric and a label
# filter) and the Kafka value bytes (`values`, a metric; none when empty) after WARMUP and at the
# end. Sets RATE (spans/s), CPU, US_PER_SPAN, BROKER_CPU, BROKER_US, VALUE_MBPS, RDK_CPU, LG_CPU,
# RSS and HWM (MiB).
load_step() {  # name exported-metric exported-filter [values-metric]
  local name=$1 m=$2 f=$3 vm=${4:-} t0 t1 e0 e1 c0 c1 b0 b1 v0=0 v1=0 r0 r1 l0 l1
  local loop=(--concurrency "$CONCURRENCY")
  [ -z "${OFFERED_RATE:-}" ] || loop=(--rate "$OFFERED_RATE")
  "$LOADGEN_BIN" -e "http://$GRPC" --spans-per-request "$SPANS" --connections "$CONNECTIONS" \
    ${LOADGEN_CPUS:+--cpus "$LOADGEN_CPUS"} \
    "${loop[@]}" --duration "${DURATION}s" --timeout 30s -q \
    --json "$RAW/$name.loadgen.json" >"$RAW/$name.loadgen.txt" 2>&1 &
  local lg=$!
  sleep "$WARMUP"
  t0=$(now); e0=$(metric "$m" "$f"); c0=$(cpu_ticks "$PID"); b0=$(cpu_ticks "$BROKER_PID")
  [ -z "$vm" ] || v0=$(metric "$vm")
  r0=$(thread_ticks "$PID" "$RDK_THREADS"); l0=$(cpu_ticks "$lg")
  sleep $((DURATION - WARMUP - 1))  # ends 1 s before the load does (loadgen still running)
  t1=$(now); e1=$(metric "$m" "$f"); c1=$(cpu_ticks "$PID"); b1=$(cpu_ticks "$BROKER_PID")
  [ -z "$vm" ] || v1=$(metric "$vm")
  r1=$(thread_ticks "$PID" "$RDK_THREADS"); l1=$(cpu_ticks "$lg")
  RSS=$(rss_mib "$PID" VmRSS); HWM=$(rss_mib "$PID" VmHWM)
  wait "$lg" || log "$name: loadgen exited non-zero (refusals under overload are expected); see $RAW/$name.loadgen.txt"
  read -r RATE CPU BROKER_CPU VALUE_MBPS RDK_CPU LG_CPU US_PER_SPAN BROKER_US < <(python3 -c '
import sys
t0,t1,e0,e1,c0,c1,b0,b1,v0,v1,r0,r1,l0,l1,hz = map(float, sys.argv[1:])
dt = t1 - t0
rate = (e1 - e0) / dt
cpu = (c1 - c0) / hz / dt
broker = (b1 - b0) / hz / dt
print(f"{rate:.0f} {100*cpu:.0f} {100*broker:.0f} {(v1-v0)/dt/1e6:.1f} {100*(r1-r0)/hz/dt:.0f} {100*(l1-l0)/hz/dt:.0f} {1e6*cpu/max(rate,1):.2f} {1e6*broker/max(rate,1):.2f}")' \
    "$t0" "$t1" "$e0" "$e1" "$c0" "$c1" "$b0" "$b1" "$v0" "$v1" "$r0" "$r1" "$l0" "$l1" "$HZ")
  echo "$name rate=$RATE cpu=$CPU rdk_cpu=$RDK_CPU broker_cpu=$BROKER_CPU loadgen_cpu=$LG_CPU us_per_span=$US_PER_SPAN broker_us_per_span=$BROKER_US rss_mib=$RSS hwm_mib=$HWM value_mbps=$VALUE_MBPS window=${t0}..${t1}" >>"$RAW/samples.txt"
}

mbps() { python3 -c 'import sys; print(f"{float(sys.argv[1])*float(sys.argv[2])/1e6:.1f}")' "$1" "$BYTES_PER_SPAN"; }
{
  echo "# Kafka end-to-end run $RUN_NAME"
  echo
  echo "- machine: $(nproc) CPUs, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr), $(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
  echo "- shardtel: git $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet || echo +uncommitted); broker $BROKER (pid ${BROKER_PID:-?}: $(ps -o comm= -p "${BROKER_PID:-1}" 2>/dev/null || true))"
  if [ -n "${OFFERED_RATE:-}" ]; then
    echo "- load: shardtel-loadgen open loop at $OFFERED_RATE spans/s, gRPC, $CONNECTIONS connections, $SPANS spans/request, $(printf '%.0f' "$BYTES_PER_SPAN") bytes/span; rates over ${WARMUP}..$((DURATION - 1)) s"
  else
    echo "- load: shardtel-loadgen closed loop, gRPC, $CONNECTIONS connections x $CONCURRENCY in flight, $SPANS spans/request, $(printf '%.0f' "$BYTES_PER_SPAN") bytes/span; rates over ${WARMUP}..$((DURATION - 1)) s"
  fi
  echo "- kafka exporter: $PARTITIONS partitions, compression $COMPRESSION, otherwise defaults${KAFKA_EXTRA:+ plus: $KAFKA_EXTRA}"
  [ "${OTELCOL:-1}" = 0 ] || echo "- the OpenTelemetry Collector: tests/peers/otelcol (contrib v0.165.0), tests/peers/otelcol/configs/kafka-gateway.yaml, $PARTITIONS partitions"
  echo "- CPU µs/span: the collector's (all threads) and the broker's, each per span exported in the window (processor: per span consumed)"
  echo
  echo "| step | spans/s | MB/s (OTLP) | Kafka values MB/s | vs blackhole | collector CPU % (librdkafka threads) | collector CPU µs/span | broker CPU % | broker CPU µs/span | collector RSS MiB (peak) | loadgen CPU % |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
} >"$OUT/table.md"

# ---- 1. blackhole ----------------------------------------------------------------------------
{ config_head; cat <<TOML
[receivers.otlp]
grpc = "$GRPC"
http = "$HTTP"
[exporters.blackhole]
[pipelines.traces]
receivers = ["otlp"]
exporters = ["blackhole"]
TOML
} >"$RAW/blackhole.toml"
log "1/4 OTLP -> blackhole"
start_shardtel blackhole "$RAW/blackhole.toml"
load_step blackhole shardtel_exporter_sent_spans_total 'exporter="blackhole"'
stop
BH=$RATE
echo "| shardtel: OTLP -> blackhole | $BH | $(mbps "$BH") | - | 100 % | $CPU | $US_PER_SPAN | $BROKER_CPU | - | $RSS ($HWM) | $LG_CPU |" >>"$OUT/table.md"
log "blackhole: $BH spans/s, shardtel CPU $CPU %"

# ---- 2. gateway -------------------------------------------------------------------------------
TOPIC=bench-spans-$(date +%s%N)
"$TOPIC_BIN" create "$BROKER" "$TOPIC" "$PARTITIONS" || die "cannot create topic $TOPIC on $BROKER"
{ config_head; cat <<TOML
[receivers.otlp]
grpc = "$GRPC"
http = "$HTTP"
[exporters.kafka]
brokers = ["$BROKER"]
traces_topic = "$TOPIC"
compression = "$COMPRESSION"
$(printf '%b' "${KAFKA_EXTRA:-}")
[pipelines.traces]
receivers = ["otlp"]
exporters = ["kafka"]
TOML
} >"$RAW/gateway.toml"
log "2/4 OTLP -> kafka (topic $TOPIC)"
start_shardtel gateway "$RAW/gateway.toml"
load_step gateway shardtel_exporter_sent_spans_total 'exporter="kafka"' shardtel_exporter_kafka_produced_bytes_total
GW=$RATE GW_CPU=$CPU GW_BROKER=$BROKER_CPU GW_VALUES=$VALUE_MBPS GW_RDK=$RDK_CPU GW_LG=$LG_CPU GW_US=$US_PER_SPAN
# Let the queue drain, then count what the topic holds.
for _ in $(seq 1 120); do
  [ "$(metric shardtel_exporter_queue_size_bytes)" = 0 ] && break
  sleep 1
done
PRODUCED=$(metric shardtel_exporter_sent_spans_total 'exporter="kafka"')
stop
RATIO=$(python3 -c 'import sys; print(f"{100*float(sys.argv[1])/max(float(sys.argv[2]),1):.0f}")' "$GW" "$BH")
echo "| shardtel: OTLP -> kafka (gateway) | $GW | $(mbps "$GW") | $GW_VALUES | $RATIO % | $GW_CPU ($GW_RDK) | $GW_US | $GW_BROKER | $BROKER_US | $RSS ($HWM) | $GW_LG |" >>"$OUT/table.md"
log "gateway: $GW spans/s ($RATIO % of blackhole), $PRODUCED spans in the topic"

# ---- 3. the OpenTelemetry Collector's gateway ----------------------------------------------
# The same load into the Collector on the same ports; its kafka exporter writes to a topic of
# its own with the same partitions, in the same broker.
if [ "${OTELCOL:-1}" != 0 ]; then
  OTELCOL_BIN=${OTELCOL_BIN:-${SHARDTEL_OTELCOL_BIN:-}}
  if [ -z "$OTELCOL_BIN" ]; then
    OTELCOL_BIN=$("$ROOT/tests/peers/otelcol/build.sh") || die "building the OpenTelemetry Collector failed"
  fi
  OC_TOPIC=bench-otelcol-spans-$(date +%s%N)
  "$TOPIC_BIN" create "$BROKER" "$OC_TOPIC" "$PARTITIONS" || die "cannot create topic $OC_TOPIC on $BROKER"
  export OTELCOL_GRPC_ENDPOINT=$GRPC OTELCOL_HTTP_ENDPOINT=$HTTP OTELCOL_METRICS_PORT=${METRICS#*:}
  export KAFKA_BROKER=$BROKER KAFKA_TRACES_TOPIC=$OC_TOPIC
  OC_CONFIG=$ROOT/tests/peers/otelcol/configs/kafka-gateway.yaml
  "$OTELCOL_BIN" validate --config "$OC_CONFIG" >/dev/null 2>"$RAW/otelcol.validate.txt" || die "$OC_CONFIG does not validate; see $RAW/otelcol.validate.txt"
  log "3/4 OTLP -> the OpenTelemetry Collector -> kafka (topic $OC_TOPIC; $("$OTELCOL_BIN" --version 2>&1 | head -1))"
  "$OTELCOL_BIN" --config "$OC_CONFIG" >"$RAW/otelcol.log" 2>&1 &
  PID=$!
  for i in $(seq 1 300); do
    curl -fs -o /dev/null --max-time 1 "http://$METRICS/metrics" && (exec 3<>"/dev/tcp/${GRPC%:*}/${GRPC#*:}") 2>/dev/null && break
    kill -0 "$PID" 2>/dev/null || die "the Collector exited; log: $RAW/otelcol.log"
    [ "$i" -lt 300 ] || die "the Collector did not listen within 30 s; log: $RAW/otelcol.log"
    sleep 0.1
  done
  load_step otelcol otelcol_exporter_sent_spans 'exporter="kafka"' otelcol_kafka_exporter_bytes_uncompressed
  OC=$RATE
  # Let its queue drain, then what it sent, and what it refused or failed.
  for _ in $(seq 1 120); do
    [ "$(metric otelcol_exporter_queue_size 'exporter="kafka"')" = 0 ] && break
    sleep 1
  done
  OC_SENT=$(metric otelcol_exporter_sent_spans 'exporter="kafka"')
  OC_FAILED=$(( $(metric otelcol_exporter_send_failed_spans 'exporter="kafka"') + $(metric otelcol_exporter_enqueue_failed_spans 'exporter="kafka"') ))
  OC_REFUSED=$(( $(metric otelcol_receiver_refused_spans) + $(metric otelcol_receiver_failed_spans) ))
  stop
  OC_RATIO=$(python3 -c 'import sys; print(f"{100*float(sys.argv[1])/max(float(sys.argv[2]),1):.0f}")' "$OC" "$BH")
  echo "| OpenTelemetry Collector: OTLP -> batch -> kafka (gateway) | $OC | $(mbps "$OC") | $VALUE_MBPS | $OC_RATIO % | $CPU | $US_PER_SPAN | $BROKER_CPU | $BROKER_US | $RSS ($HWM) | $LG_CPU |" >>"$OUT/table.md"
  log "otelcol gateway: $OC spans/s ($OC_RATIO % of shardtel's blackhole), $OC_SENT spans sent, $OC_FAILED failed, $OC_REFUSED refused"
  OC_NOTE="The Collector's gateway: $OC_SENT spans sent to Kafka, $OC_FAILED failed or dropped by its exporter, $OC_REFUSED refused by its receiver (its sending queue blocks when full, holding the clients back, instead of dropping)."
fi

# ---- 3. processor -----------------------------------------------------------------------------
if [ "${PROCESSOR:-1}" = 0 ]; then
  {
    echo
    [ -z "${OC_NOTE:-}" ] || echo "$OC_NOTE"
    echo "Gateway: issue 7's target is >= 70 % of the blackhole rate. (Processor step skipped: PROCESSOR=0.)"
  } >>"$OUT/table.md"
  cat "$OUT/table.md"
  exit 0
fi
{ config_head; cat <<TOML
[receivers.kafka]
brokers = ["$BROKER"]
traces_topics = ["$TOPIC"]
group_id = "bench-$TOPIC"
initial_offset = "earliest"
session_timeout = "6s"
heartbeat_interval = "1s"
[processors.tail_sampling]
decision_wait = "2s"
[exporters.blackhole]
[pipelines.traces]
receivers = ["kafka"]
processors = ["tail_sampling"]
exporters = ["blackhole"]
TOML
reference_sampling_policies
} >"$RAW/processor.toml"
log "4/4 kafka -> tail sampling -> blackhole ($PRODUCED spans)"
start_shardtel processor "$RAW/processor.toml"
c0=$(cpu_ticks "$PID"); b0=$(cpu_ticks "$BROKER_PID")
first="" last="" consumed=0
for _ in $(seq 1 6000); do
  consumed=$(metric shardtel_receiver_accepted_spans_total 'transport="kafka"')
  if [ "$consumed" -gt 0 ] && [ -z "$first" ]; then first=$(now); fi
  if [ "$consumed" -ge "$PRODUCED" ]; then last=$(now); break; fi
  sleep 0.1
done
c1=$(cpu_ticks "$PID"); b1=$(cpu_ticks "$BROKER_PID")
PR_RSS=$(rss_mib "$PID" VmRSS); PR_HWM=$(rss_mib "$PID" VmHWM)
stop
[ -n "$last" ] || die "processor consumed $consumed of $PRODUCED spans in 10 minutes"
read -r PR PR_CPU PR_BROKER PR_BROKER_US < <(python3 -c '
import sys
first,last,n,c0,c1,b0,b1,hz = map(float, sys.argv[1:])
dt = max(last - first, 1e-3)
print(f"{n/dt:.0f} {100*(c1-c0)/hz/dt:.0f} {100*(b1-b0)/hz/dt:.0f} {1e6*(b1-b0)/hz/max(n,1):.2f}")' "$first" "$last" "$consumed" "$c0" "$c1" "$b0" "$b1" "$HZ")
echo "| shardtel: kafka -> sampling -> blackhole (processor) | $PR | $(mbps "$PR") | - | $(python3 -c 'import sys; print(f"{100*float(sys.argv[1])/max(float(sys.argv[2]),1):.0f}")' "$PR" "$BH") % | $PR_CPU | $(python3 -c 'import sys; print(f"{1e4*float(sys.argv[2])/max(float(sys.argv[1]),1):.2f}")' "$PR" "$PR_CPU") | $PR_BROKER | $PR_BROKER_US | $PR_RSS ($PR_HWM) | - |" >>"$OUT/table.md"
log "processor: $PR spans/s"
{
  echo
  [ -z "${OC_NOTE:-}" ] || echo "$OC_NOTE"
  echo "Processor: $consumed spans consumed from the start of the topic; rate over the first to the last accepted span (metrics polled every 0.1 s; CPU % over the same window, including the group join)."
  echo "Gateway: issue 7's target is >= 70 % of the blackhole rate."
} >>"$OUT/table.md"
cat "$OUT/table.md"
