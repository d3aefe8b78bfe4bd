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
import time
from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

from stream_learner.datasets import dataset_records
from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.events import Origin
from stream_learner.settings import KafkaSettings, Settings

__all__ = [
    "COMMIT_BACKOFF_S",
    "RECONNECT_BACKOFF_MAX_MS",
    "FileSource",
    "FiniteInput",
    "KafkaSource",
    "PartitionListener",
    "Record",
    "Source",
    "TopicPartition",
    "check_copartitioned",
    "kafka_client_options",
    "unreachable",
    "worker_id",
]

log = logging.getLogger(__name__)

#: Longest wait between attempts to reconnect to a broker: a restarted broker is used again
#: within a second (the Java client's default), not after kafka-python's default of 30 s.
RECONNECT_BACKOFF_MAX_MS = 1000

#: First and longest wait between attempts of an offset commit that failed retriably.
COMMIT_BACKOFF_S = (0.2, 5.0)

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

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Records between each partition's ``position`` (next to process) and its end."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class FiniteInput:
    """The parts of :class:`Source` shared by inputs that are read once, without a group.

    Nothing is committed (positions live in checkpoints), every offset is still
    there, there is no group generation and no live end to lag behind.
    """

    _exhausted: bool = False

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Nothing to record: positions live in checkpoints."""

    @property
    def exhausted(self) -> bool:
        """True once the input ended."""
        return self._exhausted

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """No committed offsets: a checkpoint alone says where to resume."""
        return dict.fromkeys(partitions)

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets start at 0 and every one is still there."""
        return dict.fromkeys(partitions, 0)

    def generation(self) -> int:
        """No group: always 0."""
        return 0

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """No live end to lag behind: always 0."""
        return dict.fromkeys(positions, 0)


class FileSource(FiniteInput):
    """JSON Lines from a file, stdin (``-``) or a bundled River dataset (``river:Name``).

    The whole input is partition 0 of a "topic" named after the input; the
    offset of a record is its line number, counting from 0.

    Examples
    --------
    >>> src = FileSource("river:WaterFlow")
    >>> src.subscribe(None)
    >>> [tuple(r.origin) for r in src.poll(2, 0)]
    [('river:WaterFlow', 0, 0), ('river:WaterFlow', 0, 1)]
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

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Skip to line ``offset`` (re-opening the input to go back, when it is a file)."""
        if offset < self._offset:
            if self.location == "-":
                raise ValueError("cannot seek backwards on stdin")
            self._open()
        for _ in islice(self._lines, offset - self._offset):
            self._offset += 1
        self._offset = max(self._offset, offset)

    def close(self) -> None:
        """Close the file, if one was opened."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def worker_id(settings: Settings) -> str:
    """This worker's stable name: ``service.worker_id``, else the host name."""
    return settings.service.worker_id or socket.gethostname()


def _secret(environ: Mapping[str, str], setting: str, variable: str) -> str:
    try:
        return environ[variable]
    except KeyError:
        raise SettingsError(
            f"kafka.{setting} names the environment variable {variable!r}, which is not set "
            "(export it, or leave the setting empty)"
        ) from None


def kafka_client_options(settings: KafkaSettings, environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin.

    Secrets are read from the environment variable named in the settings, never
    from the settings file itself; a named variable that is not set is a
    :class:`~stream_learner.errors.SettingsError` (naming the variable, not its value).

    Examples
    --------
    >>> k = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...                   sasl_username="svc", sasl_password_env="KAFKA_PASSWORD")
    >>> opts = kafka_client_options(k, {"KAFKA_PASSWORD": "s3cret"})
    >>> opts["security_protocol"], opts["sasl_plain_username"], opts["sasl_plain_password"]
    ('SASL_SSL', 'svc', 's3cret')
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
            opts["sasl_plain_password"] = _secret(
                environ, "sasl_password_env", settings.sasl_password_env
            )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name):
            opts[name] = getattr(settings, name)
    if settings.ssl_password_env:
        opts["ssl_password"] = _secret(environ, "ssl_password_env", settings.ssl_password_env)
    return opts


def unreachable(settings: KafkaSettings, exc: Exception) -> str:
    """One line saying which broker address could not be reached, and why."""
    detail = str(exc) or type(exc).__name__
    if not detail.startswith(type(exc).__name__):
        detail = f"{type(exc).__name__}: {detail}"
    return (
        f"cannot reach Kafka at {settings.bootstrap_servers} within "
        f"kafka.connect_timeout_s={settings.connect_timeout_s:g}s ({detail})"
    )


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
    At start it checks that the events topic and ``required_topics`` (the
    output topics) exist, and fails with one line naming the missing ones.
    """

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        required_topics: Sequence[str] = (),
    ) -> None:
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.errors import KafkaError

        k = settings.kafka
        self._sleep = time.sleep
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
                group_instance_id=worker_id(settings) if k.static_membership else None,
                isolation_level=(
                    "read_committed"
                    if settings.service.guarantee == "exactly_once"
                    else "read_uncommitted"
                ),
                bootstrap_timeout_ms=int(k.connect_timeout_s * 1000),
                reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
                **kafka_client_options(k, environ),
            )
        except KafkaError as exc:
            raise ConnectionFailed(unreachable(k, exc)) from exc
        try:
            existing = self._consumer.topics()
        except KafkaError as exc:
            self._consumer.close()
            raise ConnectionFailed(unreachable(k, exc)) from exc
        missing = [t for t in dict.fromkeys([*self._topics, *required_topics]) if t not in existing]
        if missing:
            self._consumer.close()
            names = ", ".join(repr(t) for t in missing)
            raise ConnectionFailed(
                f"topic{'s' * (len(missing) > 1)} {names} not found on Kafka at "
                f"{k.bootstrap_servers} (create {'them' if len(missing) > 1 else 'it'} first)"
            )
        counts = [(t, len(self._consumer.partitions_for_topic(t) or ())) for t in self._topics]
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
            out += [
                Record(r.value, r.key, r.timestamp, Origin(topic, partition, r.offset))
                for r in records
            ]
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offsets to read, synchronously.

        While the broker is unreachable (a retriable error, or the client's request
        timeout) the commit is retried with backoff, logging each failure: the outputs are
        already durable, and nothing after them may be processed before they are committed.
        A non-retriable error (e.g. the group moved on without this member) raises
        :class:`ConnectionFailed`.
        """
        from kafka.errors import KafkaError, KafkaTimeoutError
        from kafka.structs import OffsetAndMetadata
        from kafka.structs import TopicPartition as KafkaTP

        if not offsets:
            return
        request = {KafkaTP(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}
        delay = COMMIT_BACKOFF_S[0]
        while True:
            try:
                self._consumer.commit(request)
                return
            except KafkaError as exc:
                if not (getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError)):
                    raise ConnectionFailed(
                        f"offset commit refused: {type(exc).__name__}: {exc}"
                    ) from exc
                log.warning(
                    "offset commit failed (%s: %s); retrying in %.1fs",
                    type(exc).__name__, exc, delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, COMMIT_BACKOFF_S[1])

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

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Each partition's end offset minus its ``position``.

        The end is the high watermark the latest fetch response carried, as the
        Java consumer's ``records-lag`` metric uses: no request, so measuring lag
        never holds up the loop. (A request for end offsets waits behind the fetch
        the broker holds open on the same connection: up to ``fetch.max.wait.ms``.)
        Only partitions not fetched yet cost one request for their end offsets.
        With ``read_committed`` the high watermark can be ahead of what the
        worker may read by the records of open transactions and their markers.
        """
        from kafka.errors import IllegalStateError, KafkaError
        from kafka.structs import TopicPartition as KafkaTP

        ends: dict[TopicPartition, int] = {}
        unknown = []
        for tp in positions:
            try:
                end = self._consumer.highwater(KafkaTP(*tp))
            except IllegalStateError:  # no longer assigned: nothing to report
                continue
            if end is None:
                unknown.append(KafkaTP(*tp))
            else:
                ends[tp] = int(end)
        if unknown:
            try:
                fetched = self._consumer.end_offsets(unknown)
            except KafkaError as exc:
                log.warning("cannot read end offsets for the lag: %s", exc)
                fetched = {}
            ends.update({(tp.topic, tp.partition): int(end) for tp, end in fetched.items()})
        return {tp: max(0, end - positions[tp]) for tp, end in ends.items()}

    def group_metadata(self) -> Any:
        """kafka-python's ConsumerGroupMetadata, for transactional offset commits."""
        return self._consumer.group_metadata()

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close(autocommit=False)
