#!/usr/bin/env bash
# One-shot topic creation for docker-compose.yml (run in the apache/kafka image).
# Idempotent: existing topics are left as they are.
#
# The events and labels topics must have the same partition count (they are
# co-partitioned: a label joins its event in the same partition). The
# partition count of the events topic caps the number of busy workers of the
# consumer group. Names and counts come from the environment (defaults below).
set -euo pipefail

BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
PARTITIONS="${EVENTS_PARTITIONS:-6}"
KAFKA_TOPICS=/opt/kafka/bin/kafka-topics.sh

create() {  # create TOPIC PARTITIONS [--config k=v ...]
  local topic="$1" partitions="$2"
  shift 2
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$partitions" --replication-factor 1 "$@"
  echo "topic $topic: $partitions partitions"
}

create "${EVENTS_TOPIC:-events}" "$PARTITIONS"
create "${LABELS_TOPIC:-labels}" "$PARTITIONS"
create "${PREDICTIONS_TOPIC:-predictions}" "$PARTITIONS"
create "${DEAD_LETTER_TOPIC:-events.dlq}" 1 --config retention.ms=1209600000
create "${LEARN_DEAD_LETTER_TOPIC:-events.learn.dlq}" 1 --config retention.ms=1209600000
create "${ALERTS_TOPIC:-alerts}" 1
create "${METRICS_TOPIC:-metrics}" 1 --config retention.ms=604800000

# Co-partitioning check: a labels topic made earlier with another count is an error.
count() { "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --topic "$1" | grep -c 'Partition: '; }
events="$(count "${EVENTS_TOPIC:-events}")"
labels="$(count "${LABELS_TOPIC:-labels}")"
if [ "$events" != "$labels" ]; then
  echo "events has $events partitions but labels has $labels: they must be equal" >&2
  exit 1
fi
