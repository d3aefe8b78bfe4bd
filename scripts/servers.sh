#!/usr/bin/env bash
# Start, stop or inspect the real servers used by development and tests:
# a single-node Apache Kafka 4.x broker (KRaft, combined mode) built from
# Maven Central jars, and Debian's redis-server, both on 127.0.0.1.
#
#   scripts/servers.sh start    install what is missing, start, wait until ready
#   scripts/servers.sh stop     stop what this script started (SIGTERM)
#   scripts/servers.sh status   print the addresses and whether they answer
#   scripts/servers.sh env      print `export` lines for the tests
#
# `start` and `stop` take an optional second argument, `kafka` or `redis`, to
# act on that server only (both by default). Stopping is SIGTERM (a clean,
# controlled shutdown); starting again reuses the data folder (no re-format),
# which is how tests restart a private server mid-stream.
#
# When STREAM_LEARNER_TEST_KAFKA (host:port) or STREAM_LEARNER_TEST_REDIS
# (redis:// URL) is set, that server is used as it is and nothing is started.
# Idempotent: a server that already answers is reused.
#
# Environment (defaults in brackets):
#   STREAM_LEARNER_SERVERS_DIR       state folder: data, logs, pid files [.servers]
#   STREAM_LEARNER_KAFKA_PORT        broker port [19092]
#   STREAM_LEARNER_CONTROLLER_PORT   KRaft controller port [19093]
#   STREAM_LEARNER_REDIS_PORT        Redis port [16379]
#   STREAM_LEARNER_KAFKA_LIBS        folder of the Kafka jars [<state>/kafka/libs];
#                                    fetched from Maven Central when not complete
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${STREAM_LEARNER_SERVERS_DIR:-$ROOT/.servers}"
KAFKA_PORT="${STREAM_LEARNER_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${STREAM_LEARNER_CONTROLLER_PORT:-19093}"
REDIS_PORT="${STREAM_LEARNER_REDIS_PORT:-16379}"
KAFKA_ADDR="${STREAM_LEARNER_TEST_KAFKA:-127.0.0.1:$KAFKA_PORT}"
REDIS_URL="${STREAM_LEARNER_TEST_REDIS:-redis://127.0.0.1:$REDIS_PORT/0}"
LIBS="${STREAM_LEARNER_KAFKA_LIBS:-$STATE/kafka/libs}"

log() { printf '[servers] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

install_redis() {
  command -v redis-server >/dev/null && return
  log "installing redis-server (apt)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
}

install_kafka() {
  if [ -f "$LIBS/.complete" ]; then return; fi
  log "fetching Kafka jars from Maven Central into $LIBS"
  mkdir -p "$LIBS"
  mvn -B -q -f "$ROOT/scripts/kafka-pom.xml" \
    org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIBS"
  touch "$LIBS/.complete"
}

write_kafka_config() {
  local dir="$STATE/kafka"
  mkdir -p "$dir/data" "$dir/logs"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
PROPS
  cat > "$dir/log4j2.properties" <<PROPS
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = $dir/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache
logger.apache.level = WARN
PROPS
}

start_kafka() {
  if [ -n "${STREAM_LEARNER_TEST_KAFKA:-}" ]; then log "using Kafka at $KAFKA_ADDR"; return; fi
  if port_open 127.0.0.1 "$KAFKA_PORT"; then log "Kafka already answers on $KAFKA_ADDR"; return; fi
  install_kafka
  write_kafka_config
  local dir="$STATE/kafka"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cid
    cid="$(python3 -c 'import base64,uuid;print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=").replace("-","A"))')"
    java -cp "$LIBS/*" -Dlog4j2.configurationFile="$dir/log4j2.properties" \
      kafka.tools.StorageTool format -g -t "$cid" -c "$dir/server.properties" >"$dir/logs/format.log" 2>&1
  fi
  log "starting Kafka on $KAFKA_ADDR"
  : > "$dir/logs/server.log"
  nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Dkafka.logs.dir="$dir/logs" \
    -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$dir/server.properties" >"$dir/logs/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 180); do
    if grep -q "Kafka Server started" "$dir/logs/server.log" 2>/dev/null; then log "Kafka ready"; return; fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      log "Kafka exited during start; last lines:"; tail -n 20 "$dir/logs/stdout.log" "$dir/logs/server.log" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  log "Kafka did not become ready in 90 s"; exit 1
}

start_redis() {
  if [ -n "${STREAM_LEARNER_TEST_REDIS:-}" ]; then log "using Redis at $REDIS_URL"; return; fi
  if port_open 127.0.0.1 "$REDIS_PORT"; then log "Redis already answers on port $REDIS_PORT"; return; fi
  install_redis
  local dir="$STATE/redis"
  mkdir -p "$dir"
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --appendfsync everysec \
    --dir "$dir" --daemonize yes --pidfile "$dir/pid" --logfile "$dir/redis.log" --save ""
  for _ in $(seq 1 100); do
    if port_open 127.0.0.1 "$REDIS_PORT"; then log "Redis ready"; return; fi
    sleep 0.1
  done
  log "Redis did not start; see $dir/redis.log"; exit 1
}

stop_pidfile() {
  local pidfile="$1" name="$2"
  [ -f "$pidfile" ] || return 0
  local pid; pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" || true
  fi
  rm -f "$pidfile"
}

print_env() {
  echo "export STREAM_LEARNER_TEST_KAFKA=$KAFKA_ADDR"
  echo "export STREAM_LEARNER_TEST_REDIS=$REDIS_URL"
  echo "export STREAM_LEARNER_TEST_KAFKA_PID_FILE=$STATE/kafka/pid"
  echo "export STREAM_LEARNER_TEST_REDIS_PID_FILE=$STATE/redis/pid"
}

which="${2:-all}"
case "$which" in
  all|kafka|redis) ;;
  *) echo "usage: $0 start|stop [kafka|redis]" >&2; exit 2 ;;
esac
wants() { [ "$which" = all ] || [ "$which" = "$1" ]; }

case "${1:-}" in
  start)
    mkdir -p "$STATE"
    if wants redis; then start_redis; fi
    if wants kafka; then start_kafka; fi
    print_env > "$STATE/env" ;;
  stop)
    if wants kafka; then stop_pidfile "$STATE/kafka/pid" Kafka; fi
    if wants redis; then stop_pidfile "$STATE/redis/pid" Redis; fi ;;
  status)
    host="${KAFKA_ADDR%:*}"; port="${KAFKA_ADDR##*:}"
    if port_open "$host" "$port"; then echo "kafka $KAFKA_ADDR up"; else echo "kafka $KAFKA_ADDR down"; fi
    if port_open 127.0.0.1 "$REDIS_PORT"; then echo "redis $REDIS_URL up"; else echo "redis $REDIS_URL down"; fi ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop [kafka|redis] | status | env" >&2; exit 2 ;;
esac
