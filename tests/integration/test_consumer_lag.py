"""Consumer lag on the real broker: the gauge is the records left behind each shard's position."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest

from stream_learner import cli
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import load_settings
from tests.support.kafka import produce
from tests.support.workers import labelled_events

pytestmark = pytest.mark.kafka

PARTITIONS = 2
EVENTS = 600  # 300 per partition (labelled_events keys 12 sensors over the partitions)
# The worker stops after this many: more than one partition holds, so both were read
# whatever order the client serves them in (librdkafka hands out one partition's fetched
# records before the next one's; kafka-python alternates).
PROCESSED = 450


def _settings(bootstrap: str, make_topic: Any, client: str) -> Any:
    kafka = {
        "client": client,
        "bootstrap_servers": bootstrap,
        "group_id": f"lag-{uuid.uuid4().hex[:8]}",
        "events_topic": make_topic("events", PARTITIONS),
        "predictions_topic": make_topic("predictions", PARTITIONS),
        "dead_letter_topic": make_topic("dlq", 1),
        "learn_dead_letter_topic": make_topic("learn-dlq", 1),
        "alerts_topic": make_topic("alerts", 1),
        "metrics_topic": make_topic("metrics", 1),
    }
    return load_settings(None, env={}, overrides={
        # the idle timeout only ends a run that could never reach max_events (then the
        # record count below fails) instead of letting it wait for ever
        "service": {"transport": "kafka", "batch_size": 50, "max_events": PROCESSED,
                    "idle_timeout_s": 60},
        "kafka": kafka,
        "metrics": {"lag_interval_s": 0.0},  # measured after every batch
    })


def test_lag_gauge_counts_the_records_behind_each_partition(
    kafka_bootstrap: str, make_topic: Any, kafka_client: str
) -> None:
    settings = _settings(kafka_bootstrap, make_topic, kafka_client)
    produce(kafka_bootstrap, settings.kafka.events_topic, labelled_events(EVENTS, PARTITIONS))
    source, sink = cli.build_edges(settings, dict(os.environ))
    metrics = Metrics()
    service = Service(settings, ModelSpec.from_settings(settings.model), source, sink, metrics)
    try:
        summary = service.run()
        positions = {tp: shard.position[tp] for tp, shard in service.shards.items()}
        gauge = {
            p: metrics.registry.get_sample_value(
                "stream_learner_consumer_lag_records", {"partition": str(p)}
            )
            for (_topic, p) in positions
        }
        # straight from the source too, after the run: the same ends, from the fetches
        direct = source.lag(positions)
    finally:  # closing revokes the partitions, which removes their gauges
        sink.close()
        source.close()

    assert summary.records == PROCESSED
    per_partition = EVENTS // PARTITIONS
    expected = {tp: per_partition - position for tp, position in positions.items()}
    assert sum(expected.values()) == EVENTS - PROCESSED
    assert direct == expected
    assert gauge == {p: float(n) for (_topic, p), n in expected.items()}
