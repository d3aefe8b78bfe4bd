"""Where records come from: a Kafka consumer-group member, or a file / stdin.

Both sit behind :class:`Source`; :class:`stream_learner.testing.MemorySource`
is the in-memory twin. A source tells its :class:`PartitionListener` which
partitions it owns (a file is one partition, assigned at once), hands out
batches of :class:`Record`, and commits the next offsets to read once the
service has made their outputs durable.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from stream_learner.datasets import dataset_records
from stream_learner.errors import ConnectionFailed
from stream_learner.events import Origin
from stream_learner.settings import KafkaSettings, Settings

__all__ = [
    "FileSource",
    "KafkaSource",
    "PartitionListener",
    "Record",
    "Source",
    "TopicPartition",
    "kafka_client_options",
    "worker_id",
]

log = logging.getLogger(__name__)

#: (topic, partition): one input partition, the unit of state (a shard).
TopicPartition = tuple[str, int]


class Record(NamedTuple):
    """One raw input record, before decoding.

    Immutable; a named tuple because one is built per input record and a
    tuple is the cheapest immutable object Python builds.
    """

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

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The committed offsets K (``None``: nothing committed yet)."""
        ...

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The oldest offset still in the log of each partition."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""
        ...

    def generation(self) -> int:
        """The consumer-group generation this worker belongs to (0 without a group)."""
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
        self._open()
        if listener is not None:
            listener.on_assigned([(self.location, 0)])

    def _open(self) -> None:
        self.close()
        self._offset = 0
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

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """The next ``max_records`` lines (blank lines are skipped but keep their number)."""
        out = []
        read = 0
        for line in islice(self._lines, max_records):
            read += 1
            if line.strip():
                out.append(Record(line, None, 0, Origin(self.location, 0, self._offset)))
            self._offset += 1
        if read < max_records:
            self._exhausted = True
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Nothing to record for a file; positions live in checkpoints."""

    @property
    def exhausted(self) -> bool:
        """True once the input ended."""
        return self._exhausted

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """A file has no committed offsets: a checkpoint alone says where to resume."""
        return dict.fromkeys(partitions)

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Every line is still there."""
        return dict.fromkeys(partitions, 0)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Skip to line ``offset`` (re-opening the input to go back, when it is a file)."""
        if offset < self._offset:
            if self.location == "-":
                raise ValueError("cannot seek backwards on stdin")
            self._open()
        for _ in islice(self._lines, offset - self._offset):
            self._offset += 1
        self._offset = max(self._offset, offset)

    def generation(self) -> int:
        """No group: always 0."""
        return 0

    def close(self) -> None:
        """Close the file, if one was opened."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def worker_id(settings: Settings) -> str:
    """This worker's stable name: ``service.worker_id``, else the host name."""
    return settings.service.worker_id or socket.gethostname()


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


class KafkaSource:
    """A member of the consumer group reading the events topic.

    Offsets are committed only through :meth:`commit`, never automatically.
    """

    def __init__(self, settings: Settings, environ: Mapping[str, str]) -> None:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        k = settings.kafka
        self._topics = [k.events_topic]
        try:
            self._consumer = KafkaConsumer(
                group_id=k.group_id,
                enable_auto_commit=False,
                auto_offset_reset=k.auto_offset_reset,
                max_poll_records=settings.service.batch_size,
                session_timeout_ms=k.session_timeout_ms,
                heartbeat_interval_ms=max(1000, k.session_timeout_ms // 3),
                group_instance_id=worker_id(settings) if k.static_membership else None,
                isolation_level=(
                    "read_committed"
                    if settings.service.guarantee == "exactly_once"
                    else "read_uncommitted"
                ),
                bootstrap_timeout_ms=int(k.connect_timeout_s * 1000),
                **kafka_client_options(k, environ),
            )
        except KafkaError as exc:
            raise ConnectionFailed(
                f"cannot reach Kafka at {k.bootstrap_servers}: {type(exc).__name__}: {exc}"
            ) from exc
        for topic in self._topics:
            if self._consumer.partitions_for_topic(topic) is None:
                self._consumer.close()
                raise ConnectionFailed(
                    f"topic {topic!r} does not exist on Kafka at {k.bootstrap_servers}"
                )

    def subscribe(self, listener: PartitionListener) -> None:
        """Join the consumer group; assignments arrive during :meth:`poll`."""
        self._consumer.subscribe(self._topics, listener=_rebalance_adapter(listener))

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """One fetch from the partitions this member owns."""
        batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        out: list[Record] = []
        for tp, records in batches.items():
            topic, partition = tp.topic, tp.partition
            out += [
                Record(r.value, r.key, r.timestamp, Origin(topic, partition, r.offset))
                for r in records
            ]
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

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (K), read from the coordinator."""
        from kafka.structs import TopicPartition as KafkaTP

        return {tp: self._consumer.committed(KafkaTP(*tp)) for tp in partitions}

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offsets."""
        from kafka.structs import TopicPartition as KafkaTP

        found = self._consumer.beginning_offsets([KafkaTP(*tp) for tp in partitions])
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` on."""
        from kafka.structs import TopicPartition as KafkaTP

        self._consumer.seek(KafkaTP(*partition), offset)

    def generation(self) -> int:
        """The group generation of the current assignment."""
        return int(self._consumer.group_metadata().generation_id)

    def group_metadata(self) -> Any:
        """kafka-python's ConsumerGroupMetadata, for transactional offset commits."""
        return self._consumer.group_metadata()

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close(autocommit=False)
