"""The factory: connect, check the topics, hand built clients to the source and sink."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from stream_learner.client_options import client_options
from stream_learner.commits import AckingSink, CommittingSource
from stream_learner.kafka.options import check_topics, isolation_level
from stream_learner.settings import Settings
from stream_learner.sinks import output_topics, transactional_id
from stream_learner.sources import TopicPartition, worker_id

_T = TypeVar("_T")

__all__ = ["KafkaSink", "KafkaSource", "build_edges", "build_sink", "build_source"]


class KafkaSource(CommittingSource, Protocol):
    """What both clients' sources offer: a group member that commits with or without waiting."""

    def group_metadata(self) -> Any:
        """The client's consumer group metadata, for transactional offset commits."""
        ...


class KafkaSink(AckingSink, Protocol):
    """What both clients' sinks offer: acknowledgements without waiting, and transactions."""

    def commit_transaction(self, offsets: Mapping[TopicPartition, int], group: Any) -> None:
        """Commit the open transaction with ``offsets`` inside it."""
        ...


def _input_topics(settings: Settings) -> list[str]:
    k = settings.kafka
    return [k.events_topic] + ([k.labels_topic] if k.labels_topic else [])


def build_source(
    settings: Settings, environ: Mapping[str, str], required_topics: Sequence[str] = ()
) -> KafkaSource:
    """The consumer-group source of ``kafka.client``, topics checked.

    Fails with one line when the broker cannot be reached, a topic is missing,
    or the labels topic is not co-partitioned with the events topic.
    """
    k, svc = settings.kafka, settings.service
    topics = _input_topics(settings)
    instance = worker_id(settings) if k.static_membership else None
    heartbeat = max(1000, k.session_timeout_ms // 3)
    required = [*topics, *required_topics]
    source: KafkaSource
    if k.client == "confluent-kafka":
        from stream_learner.kafka import confluent

        options: dict[str, Any] = {
            "group.id": k.group_id,
            "partition.assignment.strategy": "range",
            "auto.offset.reset": k.auto_offset_reset,
            "session.timeout.ms": k.session_timeout_ms,
            "heartbeat.interval.ms": heartbeat,
            "isolation.level": isolation_level(settings),
        }
        if instance:
            options["group.instance.id"] = instance
        options |= client_options(k, "confluent-kafka", "consumer")
        made = confluent.consumer(k, environ, **options)
        source = confluent.ConfluentSource(made, topics, k.connect_timeout_s)
        counts = _checked(source, lambda: confluent.partition_counts(made, k, required))
    else:
        from kafka.coordinator.assignors.range import RangePartitionAssignor

        from stream_learner.kafka import kafka_python

        made = kafka_python.consumer(k, environ, **{
            "group_id": k.group_id,
            "partition_assignment_strategy": (RangePartitionAssignor,),
            "auto_offset_reset": k.auto_offset_reset,
            "max_poll_records": svc.batch_size,
            "session_timeout_ms": k.session_timeout_ms,
            "heartbeat_interval_ms": heartbeat,
            "group_instance_id": instance,
            "isolation_level": isolation_level(settings),
            **client_options(k, "kafka-python", "consumer"),
        })
        source = kafka_python.KafkaPythonSource(made, topics)
        counts = _checked(source, lambda: kafka_python.partition_counts(made, k, required))
    _checked(source, lambda: check_topics(k, counts, topics, list(required_topics)))
    return source


def _checked(source: KafkaSource, check: Callable[[], _T]) -> _T:
    """``check()``, closing ``source`` when it fails."""
    try:
        return check()
    except BaseException:
        source.close()
        raise


def build_sink(
    settings: Settings, environ: Mapping[str, str], transactional: bool = False
) -> KafkaSink:
    """The producer sink of ``kafka.client``; transactional in exactly-once mode."""
    k = settings.kafka
    topics = output_topics(settings)
    if k.client == "confluent-kafka":
        from stream_learner.kafka import confluent

        options: dict[str, Any] = {}
        if transactional:
            options = {
                "transactional.id": transactional_id(settings),
                "transaction.timeout.ms": k.transaction_timeout_ms,
            }
        options |= client_options(k, "confluent-kafka", "producer")
        made = confluent.producer(k, environ, **options)
        renew = (lambda: confluent.producer(k, environ, **options)) if transactional else None
        return confluent.ConfluentSink(made, topics, transactional, k.connect_timeout_s, renew)
    from stream_learner.kafka import kafka_python

    options = {"batch_size": 256 * 1024}
    if transactional:
        options |= {
            "transactional_id": transactional_id(settings),
            "transaction_timeout_ms": k.transaction_timeout_ms,
        }
    options |= client_options(k, "kafka-python", "producer")
    made = kafka_python.producer(k, environ, **options)
    rebuild = (lambda: kafka_python.producer(k, environ, **options)) if transactional else None
    return kafka_python.KafkaPythonSink(made, topics, transactional, rebuild)


def build_edges(
    settings: Settings, environ: Mapping[str, str], required_topics: Sequence[str] = ()
) -> tuple[KafkaSource, KafkaSink]:
    """Source and sink of ``kafka.client`` (the sink transactional in exactly-once mode)."""
    source = build_source(settings, environ, required_topics)
    try:
        eos = settings.service.guarantee == "exactly_once"
        return source, build_sink(settings, environ, transactional=eos)
    except BaseException:
        source.close()
        raise
