"""Where records come from: a Kafka consumer-group member, or a file / stdin.

Both sit behind :class:`Source`; :class:`stream_learner.testing.MemorySource`
is the in-memory twin. A source tells its :class:`PartitionListener` which
partitions it owns (a file is one partition, assigned at once), hands out
batches of :class:`Record`, and commits the next offsets to read once the
service has made their outputs durable.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from stream_learner.datasets import dataset_records
from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.events import Origin
from stream_learner.settings import KafkaSettings, Settings

__all__ = [
    "FileSource",
    "KafkaSource",
    "PartitionListener",
    "Record",
    "Source",
    "TopicPartition",
    "check_copartitioned",
    "kafka_client_options",
]

log = logging.getLogger(__name__)

#: (topic, partition): one input partition, the unit of state (a shard).
TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One raw input record, before decoding."""

    value: bytes | None
    key: bytes | None
    timestamp_ms: int
    origin: Origin


class PartitionListener(Protocol):
    """Told when partitions are assigned to or taken from this worker."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions now owned: build or restore their shards."""
        ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions about to be taken: flush, commit, release their shards."""
        ...


class Source(Protocol):
    """A stream of records split into partitions."""

    def subscribe(self, listener: PartitionListener) -> None:
        """Start reading; partition changes are reported to ``listener``."""
        ...

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Up to ``max_records`` records; empty when none came within ``timeout_ms``."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record ``offsets`` (the next offset to read, per partition) as done."""
        ...

    @property
    def exhausted(self) -> bool:
        """True when a finite input has been read to its end."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class FileSource:
    """JSON Lines from a file, stdin (``-``) or a bundled River dataset (``river:Name``).

    The whole input is partition 0 of a "topic" named after the input; the
    offset of a record is its line number, counting from 0.

    Examples
    --------
    >>> src = FileSource("river:WaterFlow")
    >>> src.subscribe(None)
    >>> [r.origin for r in src.poll(2, 0)]
    [Origin(topic='river:WaterFlow', partition=0, offset=0), Origin(topic='river:WaterFlow', partition=0, offset=1)]
    """

    def __init__(self, location: str) -> None:
        self.location = location
        self._lines: Iterator[bytes] = iter(())
        self._handle: BinaryIO | None = None
        self._offset = 0
        self._exhausted = False

    def subscribe(self, listener: PartitionListener | None) -> None:
        """Open the input and report its single partition."""
        if self.location.startswith("river:"):
            self._lines = dataset_records(self.location.removeprefix("river:"))
        elif self.location == "-":
            self._lines = (line.rstrip(b"\r\n") for line in sys.stdin.buffer)
        else:
            path = Path(self.location)
            if not path.is_file():
                raise FileNotFoundError(f"input file not found: {path}")
            self._handle = path.open("rb")
            self._lines = (line.rstrip(b"\r\n") for line in self._handle)
        if listener is not None:
            listener.on_assigned([(self.location, 0)])

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """The next ``max_records`` lines (blank lines are skipped but keep their number)."""
        out = []
        for line in islice(self._lines, max_records):
            if line.strip():
                out.append(Record(line, None, 0, Origin(self.location, 0, self._offset)))
            self._offset += 1
        if not out and len(out) < max_records:
            self._exhausted = True
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Nothing to record for a file; positions live in checkpoints."""

    @property
    def exhausted(self) -> bool:
        """True once the input ended."""
        return self._exhausted

    def close(self) -> None:
        """Close the file, if one was opened."""
        if self._handle is not None:
            self._handle.close()


def kafka_client_options(settings: KafkaSettings, environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin.

    Secrets are read from the environment variable named in the settings, never
    from the settings file itself.
    """
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password_env:
            opts["sasl_plain_password"] = environ.get(settings.sasl_password_env, "")
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name):
            opts[name] = getattr(settings, name)
    return opts


def _rebalance_adapter(listener: PartitionListener) -> Any:
    """Adapter from kafka-python's ConsumerRebalanceListener to ours."""
    from kafka import ConsumerRebalanceListener

    class _Rebalance(_RebalanceBase, ConsumerRebalanceListener):  # type: ignore[misc]
        pass

    return _Rebalance(listener)


class _RebalanceBase:
    def __init__(self, listener: PartitionListener) -> None:
        self._listener = listener

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._listener.on_revoked(sorted((tp.topic, tp.partition) for tp in revoked))

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._listener.on_assigned(sorted((tp.topic, tp.partition) for tp in assigned))


def check_copartitioned(events: tuple[str, int], labels: tuple[str, int]) -> None:
    """Fail unless the labels topic has as many partitions as the events topic.

    Examples
    --------
    >>> check_copartitioned(("events", 3), ("labels", 3))
    >>> check_copartitioned(("events", 3), ("labels", 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: kafka.labels_topic 'labels' has 2 partitions but ...
    """
    if events[1] != labels[1]:
        raise SettingsError(
            f"kafka.labels_topic {labels[0]!r} has {labels[1]} partitions but "
            f"kafka.events_topic {events[0]!r} has {events[1]}: a labels topic must be "
            "co-partitioned with the events topic (same partition count, records keyed like "
            "their events) so that the label of an event is read by the worker that scored it"
        )


class KafkaSource:
    """A member of the consumer group reading the events topic (and the labels topic).

    With ``kafka.labels_topic`` set, both topics are subscribed with the range
    assignor, which hands partition ``p`` of both topics to the same member
    when they have the same partition count (checked at start).

    Offsets are committed only through :meth:`commit`, never automatically.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.errors import KafkaError

        k = settings.kafka
        self._topics = [k.events_topic] + ([k.labels_topic] if k.labels_topic else [])
        try:
            self._consumer = KafkaConsumer(
                group_id=k.group_id,
                partition_assignment_strategy=(RangePartitionAssignor,),
                enable_auto_commit=False,
                auto_offset_reset=k.auto_offset_reset,
                max_poll_records=settings.service.batch_size,
                session_timeout_ms=k.session_timeout_ms,
                heartbeat_interval_ms=max(1000, k.session_timeout_ms // 3),
                bootstrap_timeout_ms=int(k.connect_timeout_s * 1000),
                **kafka_client_options(k, environ),
            )
        except KafkaError as exc:
            raise ConnectionFailed(
                f"cannot reach Kafka at {k.bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        counts = []
        for topic in self._topics:
            partitions = self._consumer.partitions_for_topic(topic)
            if partitions is None:
                self._consumer.close()
                raise ConnectionFailed(
                    f"topic {topic!r} does not exist on Kafka at {k.bootstrap_servers}"
                )
            counts.append((topic, len(partitions)))
        if len(counts) == 2:
            try:
                check_copartitioned(counts[0], counts[1])
            except SettingsError:
                self._consumer.close()
                raise

    def subscribe(self, listener: PartitionListener) -> None:
        """Join the consumer group; assignments arrive during :meth:`poll`."""
        self._consumer.subscribe(self._topics, listener=_rebalance_adapter(listener))

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """One fetch from the partitions this member owns."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, records in batches.items():
            topic, partition = tp.topic, tp.partition
            out.extend(
                Record(r.value, r.key, r.timestamp, Origin(topic, partition, r.offset))
                for r in records
            )
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offsets to read, synchronously."""
        from kafka.structs import OffsetAndMetadata
        from kafka.structs import TopicPartition as KafkaTP

        if offsets:
            self._consumer.commit(
                {KafkaTP(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
            )

    @property
    def exhausted(self) -> bool:
        """A topic never ends."""
        return False

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close(autocommit=False)
