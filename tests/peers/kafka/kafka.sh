#!/usr/bin/env bash
# kafka.sh - the Apache Kafka broker shardtel's tests and Kafka benchmarks run against.
#
# Apache Kafka (version pinned in pom.xml beside this script) from Maven Central, run with
# `java` in KRaft mode as one combined broker + controller node. No Kafka distribution or its
# shell scripts are needed: the jars are resolved by Maven once and kept in a cache directory.
#
#   kafka.sh fetch    resolve the jars (Maven Central, first run only; later runs do not touch
#                     the network: a stamp in the cache names the pom they came from)
#   kafka.sh start    the shared test broker, in the background, with a fresh log directory,
#                     a test CA and users; returns once every listener accepts connections
#   kafka.sh stop     stops it (SIGTERM; SIGKILL after 60 s)
#   kafka.sh status   says whether it runs
#   kafka.sh run DIR PORT CONTROLLER_PORT
#                     a PLAINTEXT-only broker in the foreground (the script execs java, so
#                     the caller's child is the JVM itself: SIGKILL kills the broker), keeping
#                     its data in DIR (formatted when new, reused as it is otherwise). Tests
#                     that kill and restart a broker (kafka_restart.rs) start their own this way.
#
# The shared test broker (`start`), all on 127.0.0.1:
#   9092  PLAINTEXT        (what most tests, benches/e2e/kafka.sh and other peers' tests use)
#   9093  SASL_PLAINTEXT   PLAIN user carol/carol-secret; SCRAM-SHA-256 user alice/alice-secret;
#                          SCRAM-SHA-512 user bob/bob-secret (SCRAM users made at format time)
#   9094  SSL              mutual TLS: clients must present a certificate of the test CA
#   9095  SASL_SSL         TLS (server certificate only) + the SASL users above
#   9096  CONTROLLER       (KRaft; not for clients)
# Its directory ($SHARDTEL_KAFKA_DIR, default <repo>/target/kafka) holds server.properties,
# broker.log, broker.pid, data/ (wiped at every start) and tls/: ca.pem (the test CA),
# client.pem + client.key (a client certificate of that CA, for 9094), ca.key, broker.*.
# Topics are auto-created with 1 partition; tests create theirs with the partitions they need.
#
# Environment:
#   SHARDTEL_CACHE     cache root [${XDG_CACHE_HOME:-~/.cache}/shardtel]; jars in kafka-VERSION/lib
#   SHARDTEL_KAFKA_DIR the shared broker's directory [<repo>/target/kafka]
#   SHARDTEL_KAFKA_PORT the shared broker's first port [9092]; the others follow it as above
#                      (the Kafka tests read the same variable)
#   KAFKA_HEAP         JVM heap options [-Xms256m -Xmx512m]
#   JAVA               the java binary [java on PATH, or Debian's Java 17 when that is older]
# Needs Java 17+ and (for `fetch`) Maven; as root on Debian, installs openjdk-17-jre-headless
# and maven when missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../../.." && pwd)
VERSION=$(sed -nE 's:.*<kafka.version>([^<]+)</kafka.version>.*:\1:p' "$HERE/pom.xml")
[ -n "$VERSION" ] || { echo "kafka.sh: no <kafka.version> in $HERE/pom.xml" >&2; exit 1; }
if [ -n "${SHARDTEL_CACHE:-}" ]; then CACHE=$SHARDTEL_CACHE
elif [ -n "${XDG_CACHE_HOME:-}" ]; then CACHE=$XDG_CACHE_HOME/shardtel
elif [ -n "${HOME:-}" ]; then CACHE=$HOME/.cache/shardtel
else CACHE=$ROOT/target/cache; fi
CACHE=$CACHE/kafka-$VERSION
LIB=$CACHE/lib
DIR=${SHARDTEL_KAFKA_DIR:-$ROOT/target/kafka}
HEAP=${KAFKA_HEAP:--Xms256m -Xmx512m}
BASE=${SHARDTEL_KAFKA_PORT:-9092}
PLAINTEXT_PORT=$BASE SASL_PORT=$((BASE + 1)) SSL_PORT=$((BASE + 2)) SASL_SSL_PORT=$((BASE + 3)) CONTROLLER_PORT=$((BASE + 4))

die() { echo "kafka.sh: $*" >&2; exit 1; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Installs Debian packages when running as root, else says what to install.
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "kafka.sh: installing $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
      || die "apt-get install $* failed"
  else
    die "needs $* (Debian: sudo apt-get install $*)"
  fi
}

java_major() { "$1" -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p'; }
# Sets JAVA to a Java 17+ binary, installing Debian's Java 17 if there is none.
find_java() {
  JAVA=${JAVA:-$(command -v java || true)}
  if [ -n "$JAVA" ] && [ "$(java_major "$JAVA")" -ge 17 ] 2>/dev/null; then return; fi
  local jdk17
  jdk17=$(ls -d /usr/lib/jvm/java-17-openjdk-*/bin/java 2>/dev/null | head -1 || true)
  [ -n "$jdk17" ] || { apt_install openjdk-17-jre-headless; jdk17=$(ls -d /usr/lib/jvm/java-17-openjdk-*/bin/java | head -1); }
  JAVA=$jdk17
  [ "$(java_major "$JAVA")" -ge 17 ] 2>/dev/null || die "Kafka $VERSION needs Java 17 or newer; $JAVA is $(java_major "$JAVA")"
}

pom_stamp() { echo "$VERSION $(sha256sum "$HERE/pom.xml" | cut -c1-16)"; }

fetch() {
  if [ -f "$LIB/.complete" ] && [ "$(cat "$LIB/.complete")" = "$(pom_stamp)" ]; then return; fi
  command -v mvn >/dev/null || apt_install maven
  find_java
  echo "kafka.sh: resolving Apache Kafka $VERSION into $LIB (Maven Central)" >&2
  local tmp=$CACHE/lib.partial
  rm -rf "$tmp"
  mkdir -p "$CACHE"
  mvn -B -q -f "$HERE/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" -DincludeScope=runtime >"$CACHE/fetch.log" 2>&1 \
    || { tail -30 "$CACHE/fetch.log" >&2; die "mvn dependency:copy-dependencies failed (log: $CACHE/fetch.log)"; }
  [ -f "$tmp/kafka_2.13-$VERSION.jar" ] || die "kafka_2.13-$VERSION.jar missing after mvn (log: $CACHE/fetch.log)"
  rm -rf "$LIB"
  mv "$tmp" "$LIB"
  pom_stamp >"$LIB/.complete"
}

# The java command with the broker's class path, logging configuration and options (an array,
# so that `"${JCMD[@]}" … &` makes java itself the background process).
java_cmd() {
  find_java
  # shellcheck disable=SC2206 # KAFKA_HEAP holds several options
  JCMD=("$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$HERE/log4j2.xml" -cp "$LIB/*")
}

# The properties every broker here shares (KRaft, one combined node, replication factor 1).
common_properties() {  # controller-port log-dir
  cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$1
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$2
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# group.initial.rebalance.delay.ms stays at Kafka's 3 s: a new group waits that long for more
# members, so the consumers of all cores of a processor join before the first assignment (with
# 0 the first core gets every partition and a rebalance follows at once).
EOF
}

cluster_id() { head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n'; }

format() {  # properties [more StorageTool arguments]
  local props=$1; shift
  java_cmd
  "${JCMD[@]}" -Dshardtel.kafka.log.level=warn kafka.tools.StorageTool format \
    --cluster-id "$(cluster_id)" --config "$props" --ignore-formatted "$@" >/dev/null \
    || die "kafka-storage format failed for $props"
}

# The test CA, the broker's certificate (localhost, 127.0.0.1) and a client certificate.
make_tls() {
  local t=$DIR/tls
  rm -rf "$t"
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 3650 \
      -subj "/CN=shardtel test CA" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout broker.key -out broker.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >broker.ext
    openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out broker.crt \
      -days 3650 -extfile broker.ext 2>/dev/null
    # Kafka's PEM key store: the PKCS#8 key, then the certificate.
    cat broker.key broker.crt >broker.pem
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=shardtel-test-client" 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem \
      -days 3650 -extfile client.ext 2>/dev/null
    rm -f ./*.csr ./*.ext
  ) || die "making the test CA with openssl failed"
}

shared_properties() {
  local jaas_plain='org.apache.kafka.common.security.plain.PlainLoginModule required user_carol="carol-secret";'
  local jaas_scram='org.apache.kafka.common.security.scram.ScramLoginModule required;'
  common_properties "$CONTROLLER_PORT" "$DIR/data"
  cat <<EOF
listeners=PLAINTEXT://127.0.0.1:$PLAINTEXT_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PLAINTEXT_PORT,SASL_PLAINTEXT://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$SSL_PORT,SASL_SSL://127.0.0.1:$SASL_SSL_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
EOF
  for l in sasl_plaintext sasl_ssl; do
    echo "listener.name.$l.plain.sasl.jaas.config=$jaas_plain"
    echo "listener.name.$l.scram-sha-256.sasl.jaas.config=$jaas_scram"
    echo "listener.name.$l.scram-sha-512.sasl.jaas.config=$jaas_scram"
  done
  cat <<EOF
ssl.keystore.type=PEM
ssl.keystore.location=$DIR/tls/broker.pem
ssl.truststore.type=PEM
ssl.truststore.location=$DIR/tls/ca.pem
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
EOF
}

pid_alive() { [ -f "$DIR/broker.pid" ] && kill -0 "$(cat "$DIR/broker.pid")" 2>/dev/null; }

start() {
  if pid_alive; then
    listening "$PLAINTEXT_PORT" || die "the broker of $DIR (pid $(cat "$DIR/broker.pid")) runs, but not on port $PLAINTEXT_PORT: stop it, or set SHARDTEL_KAFKA_DIR"
    echo "kafka.sh: already running (pid $(cat "$DIR/broker.pid"))"
    return
  fi
  for p in $PLAINTEXT_PORT $SASL_PORT $SSL_PORT $SASL_SSL_PORT $CONTROLLER_PORT; do
    ! listening "$p" || die "port $p is taken; stop what listens there (ss -ltnp 'sport = :$p')"
  done
  fetch
  find_java
  command -v openssl >/dev/null || apt_install openssl
  rm -rf "$DIR/data"
  mkdir -p "$DIR"
  make_tls
  shared_properties >"$DIR/server.properties"
  format "$DIR/server.properties" \
    --add-scram 'SCRAM-SHA-256=[name=alice,password=alice-secret]' \
    --add-scram 'SCRAM-SHA-512=[name=bob,password=bob-secret]'
  java_cmd
  "${JCMD[@]}" kafka.Kafka "$DIR/server.properties" >"$DIR/broker.log" 2>&1 &
  local pid=$!
  echo "$pid" >"$DIR/broker.pid"
  for _ in $(seq 1 1200); do
    kill -0 "$pid" 2>/dev/null || { tail -40 "$DIR/broker.log" >&2; die "the broker exited; log: $DIR/broker.log"; }
    local up=1
    for p in $PLAINTEXT_PORT $SASL_PORT $SSL_PORT $SASL_SSL_PORT; do listening "$p" || { up=""; break; }; done
    [ -n "$up" ] && grep -q "Kafka Server started" "$DIR/broker.log" && {
      echo "Apache Kafka $VERSION on 127.0.0.1:$PLAINTEXT_PORT (PLAINTEXT), :$SASL_PORT (SASL_PLAINTEXT), :$SSL_PORT (SSL, client certificates), :$SASL_SSL_PORT (SASL_SSL); pid $pid, log $DIR/broker.log"
      return
    }
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  tail -40 "$DIR/broker.log" >&2
  die "the broker did not start within 120 s; log: $DIR/broker.log"
}

stop() {
  pid_alive || { rm -f "$DIR/broker.pid"; return 0; }
  local pid
  pid=$(cat "$DIR/broker.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "kafka.sh: the broker did not stop within 60 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/broker.pid"
}

run() {  # dir port controller-port
  [ $# -eq 3 ] || die "usage: kafka.sh run DIR PORT CONTROLLER_PORT"
  local dir port=$2 cport=$3
  dir=$(mkdir -p "$1" && cd "$1" && pwd)
  [ -f "$LIB/.complete" ] || die "Kafka's jars are not in $LIB: run tests/peers/kafka/kafka.sh fetch (./test.sh does)"
  find_java
  if [ ! -f "$dir/server.properties" ]; then
    {
      common_properties "$cport" "$dir/data"
      echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
      echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
      echo "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    } >"$dir/server.properties"
  fi
  [ -f "$dir/data/meta.properties" ] || format "$dir/server.properties"
  java_cmd
  exec "${JCMD[@]}" kafka.Kafka "$dir/server.properties"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if pid_alive; then echo "running (pid $(cat "$DIR/broker.pid"))"; else echo "not running"; exit 1; fi ;;
  run) shift; run "$@" ;;
  *) sed -n '2,40p' "$0" | sed -n '/^#/p' | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
