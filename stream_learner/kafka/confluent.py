"""The confluent-kafka (librdkafka) client: consumer-group source, producer sink, builders.

``pip install stream-learner[confluent]``. The same guarantees as the
kafka-python client, through librdkafka's own calls:

- the range assignor, so partition ``p`` of the events and labels topics go to
  the same member; offsets stored and committed only by the service;
- a seek right after an assignment is made by re-assigning the partitions with
  their start offsets (librdkafka refuses a seek on a partition whose fetch has
  not started yet);
- keyed outputs are partitioned with ``murmur2_random``, the Java client's (and
  kafka-python's) choice, so records keyed alike stay co-partitioned;
- the group generation is not exposed by the Python client, and nothing needs
  it: checkpoints are fenced by an epoch taken in the store
  (:mod:`stream_learner.stores`).
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from stream_learner.commits import TransactionAborted
from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.events import Origin
from stream_learner.kafka.options import COMMIT_BACKOFF_S, librdkafka_options, unreachable
from stream_learner.kafka.rebalance import CallbackGuard
from stream_learner.retrying import retry_call
from stream_learner.settings import KafkaSettings
from stream_learner.sinks import Header
from stream_learner.sources import PartitionListener, Record, TopicPartition

__all__ = ["ConfluentSink", "ConfluentSource", "consumer", "partition_counts", "producer"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: librdkafka's own log lines go here (under ``kafka``, like kafka-python's), not to stderr.
CLIENT_LOG = logging.getLogger("kafka.librdkafka")

#: Metadata refreshed this often (librdkafka's default is 5 minutes): after a broker restart
#: a partition whose leader went missing from the client's cache is found again within this.
METADATA_REFRESH_MS = 10_000

#: Sockets send at once, as the Java client's and kafka-python's do (librdkafka's default
#: holds a small request until the previous one is acknowledged at the TCP level).
NAGLE_OFF = True

#: librdkafka's "no offset" (OFFSET_INVALID): resume at the committed offset.
_NO_OFFSET = -1001

#: How long past its own timeout a transaction call may block before its producer is given
#: up: librdkafka does not always keep that timeout (``send_offsets_to_transaction`` after
#: a coordinator restart, confluentinc/librdkafka#5456).
STUCK_GRACE_S = 10.0

#: logged when the committed offsets stay unreadable (see :meth:`ConfluentSource.committed`)
UNSTABLE_OFFSETS = (
    "the committed offsets of %s are still unreadable after two attempts. If the broker is up, "
    "a transaction holds an offset commit of them open and no client can end it (a single "
    "broker restarted while a transaction committed can lose the transaction's markers): "
    "`kafka-transactions.sh describe-producers` on __consumer_offsets and on the outputs "
    "topics finds it, `kafka-transactions.sh abort` ends it (docs/state.md, Failure "
    "policies, 'A transaction left open'); the worker waits and asks again"
)


class _CallStuck(Exception):
    """A librdkafka transaction call did not return within its timeout plus the grace."""


def _import() -> Any:
    try:
        import confluent_kafka
    except ImportError:  # pragma: no cover - depends on the installed extras
        from stream_learner.errors import SettingsError

        raise SettingsError(
            'kafka.client = "confluent-kafka" needs the confluent-kafka package: '
            "pip install 'stream-learner[confluent]'"
        ) from None
    return confluent_kafka


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _kafka_error(exc: Exception) -> Any:
    """The ``KafkaError`` a librdkafka exception carries, else None."""
    return exc.args[0] if isinstance(exc, _import().KafkaException) and exc.args else None


def _retriable(exc: Exception) -> bool:
    """True for a librdkafka error that says the same call may be made again."""
    error = _kafka_error(exc)
    return error is not None and bool(error.retriable())


#: Error names of a broker that is away for now (restarting, or its group coordinator
#: moving). A consumer's committed offsets, watermarks and synchronous commit raise them
#: without librdkafka's retriable flag, which only transactional errors carry.
_AWAY = frozenset({
    "_TIMED_OUT", "_TRANSPORT", "_ALL_BROKERS_DOWN", "_WAIT_COORD", "REQUEST_TIMED_OUT",
    "NETWORK_EXCEPTION", "COORDINATOR_NOT_AVAILABLE", "NOT_COORDINATOR",
    "COORDINATOR_LOAD_IN_PROGRESS",
})


def _named(exc: Exception, names: frozenset[str]) -> bool:
    """True when ``exc`` carries a ``KafkaError`` whose name is one of ``names``."""
    error = _kafka_error(exc)
    return error is not None and error.name() in names


def _transient(exc: Exception) -> bool:
    """True for a consumer call's error that the same call may outlive: retriable, or a
    broker away for now (:data:`_AWAY`)."""
    return _retriable(exc) or _named(exc, _AWAY)


#: Error names of partitions the client's metadata does not know for now. Right after a
#: broker restart librdkafka may not know the partitions the group assigned to this
#: worker yet ("Local: Unknown partition" reading their log start offsets); they exist,
#: or the group would not have assigned them.
_FORGOTTEN = frozenset({"_UNKNOWN_PARTITION", "_UNKNOWN_TOPIC"})


def _read_transient(exc: Exception) -> bool:
    """True for an error reading the offsets of assigned partitions that a later read may
    not meet: :func:`_transient`, or partitions the metadata forgot (:data:`_FORGOTTEN`)."""
    return _transient(exc) or _named(exc, _FORGOTTEN)


def _log_commit(err: Any, partitions: Any) -> None:
    if err is not None:
        log.warning("asynchronous offset commit failed (a later commit covers it): %s", err)


def _built(kind: Any, conf: dict[str, Any], role: str) -> Any:
    """``kind(conf)``; librdkafka refusing an option is a settings error naming the table."""
    ck = _import()
    try:
        return kind(conf)
    except ck.KafkaException as exc:
        raise SettingsError(f"kafka.{role}_options: the client refused them: {exc}") from exc


def consumer(settings: KafkaSettings, environ: Mapping[str, str], **options: Any) -> Any:
    """A ``confluent_kafka.Consumer`` with the shared options plus ``options``.

    Offsets are never committed or stored automatically. The broker is asked
    for its topics once, so an unreachable broker fails here with one line.
    """
    ck = _import()
    conf = {
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "on_commit": _log_commit,
        "logger": CLIENT_LOG,
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        "socket.nagle.disable": NAGLE_OFF,
        **librdkafka_options(settings, environ),
        **options,
    }
    made = _built(ck.Consumer, conf, "consumer")
    try:
        made.list_topics(timeout=settings.connect_timeout_s)
    except ck.KafkaException as exc:
        made.close()
        raise ConnectionFailed(unreachable(settings, exc)) from exc
    return made


def producer(settings: KafkaSettings, environ: Mapping[str, str], **options: Any) -> Any:
    """An idempotent ``confluent_kafka.Producer`` (``acks=all``), transactions initialised."""
    ck = _import()
    conf = {
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": settings.linger_ms,
        "partitioner": "murmur2_random",
        "logger": CLIENT_LOG,
        "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
        "socket.nagle.disable": NAGLE_OFF,
        **librdkafka_options(settings, environ),
        **options,
    }
    made = _built(ck.Producer, conf, "producer")
    try:
        if "transactional.id" in options:
            made.init_transactions(settings.connect_timeout_s)
        else:
            made.list_topics(timeout=settings.connect_timeout_s)
    except ck.KafkaException as exc:
        raise ConnectionFailed(unreachable(settings, exc)) from exc
    return made


def partition_counts(client: Any, settings: KafkaSettings, topics: Sequence[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists."""
    ck = _import()
    try:
        found = client.list_topics(timeout=settings.connect_timeout_s).topics
    except ck.KafkaException as exc:
        raise ConnectionFailed(unreachable(settings, exc)) from exc
    return {
        t: len(found[t].partitions) for t in topics if t in found and found[t].error is None
    }


class ConfluentSource:
    """A member of the consumer group, on librdkafka."""

    def __init__(self, client: Any, topics: Sequence[str], timeout_s: float = 30.0) -> None:
        self._ck = _import()
        self._consumer = client
        self._topics = list(topics)
        self._timeout = timeout_s
        self._sleep = time.sleep
        self._guard = CallbackGuard()
        #: partitions of the latest assignment whose fetch start may still be set
        self._starts: dict[TopicPartition, int] = {}
        self._reassign = False
        self._in_rebalance = False

    def subscribe(self, listener: PartitionListener) -> None:
        """Join the consumer group; assignments arrive during :meth:`poll`."""
        guard = self._guard

        def assigned(_consumer: Any, partitions: Any) -> None:
            tps = sorted((p.topic, p.partition) for p in partitions)
            self._starts = dict.fromkeys(tps, _NO_OFFSET)
            guard.call(listener.on_assigned, tps)

        def revoked(_consumer: Any, partitions: Any) -> None:
            tps = sorted((p.topic, p.partition) for p in partitions)
            self._starts = {}
            self._in_rebalance = True
            try:
                guard.call(listener.on_revoked, tps)
            finally:
                self._in_rebalance = False

        self._consumer.subscribe(
            self._topics, on_assign=assigned, on_revoke=revoked, on_lost=revoked
        )

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Up to ``max_records`` records from the partitions this member owns.

        Returns as soon as one record is there (librdkafka's ``consume`` would wait
        for a full batch or the whole timeout): what is queued, else the first
        record within ``timeout_ms`` and what is queued behind it. Nothing waits
        for more records to make a batch: waiting 0.5 or 2 ms after the first one
        raised the latency at 2,000 and 5,000 events/s by as much
        (docs/benchmarks.md).
        """
        self._position()
        consumer = self._consumer
        messages = consumer.consume(max_records, 0)
        if not messages:
            first = consumer.poll(timeout_ms / 1000.0)
            if first is not None:
                messages = [first]
                if max_records > 1:
                    messages += consumer.consume(max_records - 1, 0)
        self._guard.raise_pending()
        out: list[Record] = []
        new = tuple.__new__  # the named tuples without their Python __new__: per record
        for m in messages:
            error = m.error()
            if error is not None:
                if error.fatal():
                    raise ConnectionFailed(f"Kafka consumer failed: {error}")
                log.warning("Kafka consumer: %s", error)
                continue
            origin = new(Origin, (m.topic(), m.partition(), m.offset()))
            out.append(new(Record, (m.value(), m.key(), m.timestamp()[1], origin)))
        return out

    def _position(self) -> None:
        """Start the newly assigned partitions at the offsets :meth:`seek` asked for."""
        if self._reassign:
            tp = self._ck.TopicPartition
            self._consumer.assign([tp(t, p, o) for (t, p), o in self._starts.items()])
            self._reassign = False
        self._starts = {}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` on."""
        if partition in self._starts:
            self._starts[partition] = offset
            self._reassign = True
            return
        self._consumer.seek(self._ck.TopicPartition(*partition, offset))

    def _request(self, offsets: Mapping[TopicPartition, int]) -> list[Any]:
        tp = self._ck.TopicPartition
        return [tp(t, p, o) for (t, p), o in offsets.items()]

    def commit(self, offsets: Mapping[TopicPartition, int], retry: bool = True) -> None:
        """Commit the next offsets to read, synchronously, retrying retriable errors.

        A non-retriable error, or any error when ``retry`` is false, raises
        :class:`ConnectionFailed`. While partitions are revoked (or lost) the
        commit is tried once and a failure logged, as with kafka-python.
        """
        if not offsets:
            return
        request = self._request(offsets)
        if self._in_rebalance:
            self._commit_on_revocation(request)
            return
        try:
            retry_call(lambda: self._consumer.commit(offsets=request, asynchronous=False),
                       "offset commit", lambda exc: retry and _transient(exc),
                       COMMIT_BACKOFF_S, sleep=self._sleep, log=log)
        except self._ck.KafkaException as exc:
            raise ConnectionFailed(f"offset commit refused: {_error_text(exc)}") from exc

    def _commit_on_revocation(self, request: list[Any]) -> None:
        """One synchronous attempt: partitions lost with the membership cannot be committed."""
        try:
            self._consumer.commit(offsets=request, asynchronous=False)
        except self._ck.KafkaException as exc:
            log.warning(
                "offset commit on revocation failed (%s): outputs are written; the next owner "
                "resumes at the previous commit and repeats them", exc,
            )

    def commit_async(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Send a commit of ``offsets`` and return; a failure is logged."""
        if offsets:
            self._consumer.commit(offsets=self._request(offsets), asynchronous=True)

    @property
    def exhausted(self) -> bool:
        """A topic never ends."""
        return False

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (K); asked again while the broker is away.

        In exactly-once mode (read_committed) the broker answers only once no
        transaction holds an offset commit of these partitions open. When two
        attempts (each up to ``kafka.connect_timeout_s``) got no answer, an
        error says so once, with what an operator does about it.
        """
        tp = self._ck.TopicPartition
        request = [tp(*p) for p in partitions]
        asked = itertools.count(1)

        def ask() -> Any:
            if next(asked) == 3:
                log.error(UNSTABLE_OFFSETS, sorted(partitions))
            return self._consumer.committed(request, timeout=self._timeout)

        found = self._asked(ask, "reading the committed offsets")
        return {(p.topic, p.partition): p.offset if p.offset >= 0 else None for p in found}

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offsets; asked again while the broker is away."""
        return {p: self._log_start(p) for p in partitions}

    def _log_start(self, partition: TopicPartition) -> int:
        request = self._ck.TopicPartition(*partition)
        low, _high = self._asked(
            lambda: self._consumer.get_watermark_offsets(request, timeout=self._timeout),
            "reading the log start offsets",
        )
        return int(low)

    def _asked(self, call: Callable[[], _T], what: str) -> _T:
        """``call()``, made again with backoff while the broker is away (a restart, a
        coordinator move: the restore after it waits for the broker, as a commit does)
        or the client's metadata does not know the assigned partitions yet; any other
        error raises :class:`ConnectionFailed`."""
        try:
            return retry_call(call, what, _read_transient, COMMIT_BACKOFF_S, sleep=self._sleep,
                              log=log)
        except self._ck.KafkaException as exc:
            raise ConnectionFailed(f"{what} failed: {_error_text(exc)}") from exc

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Each partition's end offset minus its ``position``.

        The end is the high watermark librdkafka keeps from its fetch responses
        (no request); a partition not fetched yet costs one request.
        """
        tp = self._ck.TopicPartition
        out: dict[TopicPartition, int] = {}
        for p, position in positions.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(tp(*p), cached=True)
                if high < 0:
                    _low, high = self._consumer.get_watermark_offsets(tp(*p), timeout=self._timeout)
            except self._ck.KafkaException as exc:
                log.warning("cannot read end offsets for the lag: %s", exc)
                continue
            out[p] = max(0, int(high) - position)
        return out

    def group_metadata(self) -> Any:
        """The consumer group metadata, for transactional offset commits."""
        return self._consumer.consumer_group_metadata()

    def close(self) -> None:
        """Leave the group (the revoke callback runs here, on this thread)."""
        self._consumer.close()
        self._guard.log_pending("closing the Kafka consumer")


class _Segment:
    """Records sent between two marks, and how many of them the broker acknowledged."""

    __slots__ = ("acked", "end", "error", "sent")

    def __init__(self, start: int) -> None:
        self.end = start
        self.sent = 0
        self.acked = 0
        self.error: Any = None

    def delivered(self, err: Any, _msg: Any) -> None:
        self.acked += 1
        if err is not None and self.error is None:
            self.error = err


class ConfluentSink:
    """An idempotent producer writing each role to its topic, on librdkafka.

    Delivery reports are served by :meth:`acknowledged` (and :meth:`flush`),
    on the calling thread.
    """

    def __init__(
        self, client: Any, topics: Mapping[str, str], transactional: bool = False,
        timeout_s: float = 30.0, rebuild: Callable[[], Any] | None = None,
    ) -> None:
        self._ck = _import()
        self._producer = client
        #: a new transactional producer under the same id, after a fatal error
        self._rebuild = rebuild
        self._topics = dict(topics)
        self._transactional = transactional
        self._timeout = timeout_s
        self._in_transaction = False
        #: why librdkafka refused an output of the open transaction (it must abort)
        self._refused: str | None = None
        self._current = _Segment(0)
        self._segments: deque[_Segment] = deque()
        self._sent = 0
        self._acked = 0
        self._sleep = time.sleep
        self._grace = STUCK_GRACE_S

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Queue one record for the role's topic."""
        if self._transactional and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        segment = self._current
        topic = self._topics[role]
        while True:
            try:
                self._producer.produce(
                    topic, value, key, headers=list(headers) if headers else None,
                    on_delivery=segment.delivered,
                )
                break
            except BufferError:  # the local queue is full: serve reports, then retry
                self._producer.poll(0.05)
            except self._ck.KafkaException as exc:
                if not self._transaction_failed(exc):
                    raise
                return
        segment.sent += 1
        self._sent += 1

    def _transaction_failed(self, exc: Exception) -> bool:
        """True when ``exc`` says the open transaction failed, not the record.

        After a broker restart loses a produce request, librdkafka puts the
        transaction in an abortable error state and refuses every further
        record (``_STATE``). Those records are not at fault, so they are not
        raised to the loop (which would dead-letter them); the transaction is
        aborted at its commit, and its shards roll back and process them again.
        """
        error = exc.args[0] if exc.args else None
        if not self._transactional or error is None or error.fatal():
            return False
        if not (error.txn_requires_abort() or error.code() == self._ck.KafkaError._STATE):
            return False
        if self._refused is None:
            self._refused = _error_text(exc)
            log.warning("the open transaction failed (%s): it is aborted at its commit",
                        self._refused)
        return True

    def mark(self) -> int:
        """Records sent so far; :meth:`acknowledged` reaches this mark once all are durable."""
        if self._current.sent:
            self._current.end = self._sent
            self._segments.append(self._current)
            self._current = _Segment(self._sent)
        return self._sent

    def acknowledged(self) -> int:
        """Records, from the first, up to the newest mark the broker fully acknowledged."""
        self._producer.poll(0)
        segments = self._segments
        while segments and segments[0].acked == segments[0].sent:
            segment = segments.popleft()
            if segment.error is not None:
                self._failed(segment.error)
            self._acked = segment.end
        return self._acked

    def _failed(self, error: Any) -> None:
        self._segments.clear()
        raise ConnectionFailed(f"output records were not written: {error}")

    def flush(self) -> None:
        """Wait for every queued record; raise :class:`ConnectionFailed` if one failed."""
        self.mark()
        while self._producer.flush(self._timeout):
            log.warning("outputs still not acknowledged after %.0fs; waiting on", self._timeout)
        failed = [s.error for s in self._segments if s.error is not None]
        self._segments.clear()
        self._acked = self._sent
        if failed:
            self._failed(failed[0])

    def commit_transaction(self, offsets: Mapping[TopicPartition, int], group: Any) -> None:
        """Commit the open transaction with ``offsets`` (next offsets to read) inside it.

        librdkafka's rules: a retriable error (e.g. a timeout while the broker
        restarts) means the same call may go on in the background and is made
        again; only an error that says the transaction requires an abort is
        answered with an abort (:class:`TransactionAborted`). Aborting after a
        retriable error raced the commit still under way and could leave the
        producer stuck.
        """
        if not offsets and not self._in_transaction:
            return
        tp = self._ck.TopicPartition
        producer = self._producer
        try:
            if self._refused is not None:
                self._retrying(lambda: producer.abort_transaction(self._timeout),
                               "transaction abort")
                raise TransactionAborted(f"transaction aborted: {self._refused}")
            if not self._in_transaction:
                producer.begin_transaction()
                self._in_transaction = True
            if offsets:
                request = [tp(t, p, o) for (t, p), o in offsets.items()]
                self._retrying(
                    lambda: producer.send_offsets_to_transaction(request, group, self._timeout),
                    "adding the offsets to the transaction",
                )
            self._retrying(lambda: producer.commit_transaction(self._timeout),
                           "transaction commit")
        except self._ck.KafkaException as exc:
            raise self._ended(exc) from exc
        except _CallStuck as stuck:
            raise self._given_up(stuck) from stuck
        finally:
            self._in_transaction = False
            self._refused = None
            self._segments.clear()
            self._current = _Segment(self._sent)
            self._acked = self._sent

    def _ended(self, exc: Any) -> Exception:
        """What a failed transaction raises: aborted (the shards rewind) or a lost connection.

        An error that requires an abort is answered with one. A fatal error
        (librdkafka: the producer can no longer be used, e.g. INVALID_TXN_STATE
        after a broker restart) gets a new producer under the same transactional
        id: its ``init_transactions`` fences the old one and settles the open
        transaction, committed or aborted. Either way the shards rewind to their
        checkpoints and replay up to the committed offsets the broker then
        reports, so nothing is lost or produced twice.
        """
        error = exc.args[0] if exc.args else None
        if error is not None and error.txn_requires_abort() and not error.fatal():
            try:
                self._retrying(lambda: self._producer.abort_transaction(self._timeout),
                               "transaction abort")
                return TransactionAborted(f"transaction aborted: {_error_text(exc)}")
            except self._ck.KafkaException as again:
                exc, error = again, (again.args[0] if again.args else None)
            except _CallStuck as stuck:
                return self._given_up(stuck)
        if error is not None and error.fatal() and self._rebuild is not None:
            log.warning("fatal producer error (%s): a new producer takes over", _error_text(exc))
            try:
                self._producer.purge()  # its queued outputs belong to the ended transaction
            except Exception as gone:  # it is being replaced: its errors no longer matter
                log.debug("purging the failed producer: %s", gone)
            return self._replaced(_error_text(exc))
        return ConnectionFailed(f"transaction commit failed: {_error_text(exc)}")

    def _given_up(self, stuck: _CallStuck) -> Exception:
        """What a transaction call that never returned raises.

        The call still blocks a thread of its own, so the producer is left to it
        (not purged, not closed) and a new producer under the same transactional
        id takes over; without a way to build one the worker stops, and the
        next one's ``init_transactions`` does the same.
        """
        if self._rebuild is None:
            return ConnectionFailed(f"transaction commit failed: {stuck}")
        log.warning("%s: a new producer takes over", stuck)
        return self._replaced(str(stuck))

    def _replaced(self, why: str) -> TransactionAborted:
        """Serve from a new producer; its ``init_transactions`` fences the old one."""
        assert self._rebuild is not None
        self._producer = self._rebuild()
        return TransactionAborted(f"transaction aborted: {why}")

    def _retrying(self, call: Callable[[], object], what: str) -> None:
        """``call()``, again while it fails retriably (e.g. the broker is restarting).

        Each attempt runs under :meth:`_bounded`.
        """
        retry_call(lambda: self._bounded(call, what), what, _retriable, COMMIT_BACKOFF_S,
                   sleep=self._sleep, log=log)

    def _bounded(self, call: Callable[[], object], what: str) -> None:
        """``call()`` on a thread of its own; :class:`_CallStuck` when it is still
        blocked :data:`STUCK_GRACE_S` past the sink's timeout (its errors are raised here)."""
        failure: list[BaseException] = []

        def attempt() -> None:
            try:
                call()
            except BaseException as exc:  # handed to the waiting thread
                failure.append(exc)

        limit = self._timeout + self._grace
        thread = threading.Thread(target=attempt, name=f"kafka {what}", daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            raise _CallStuck(f"{what}: no return from librdkafka after {limit:.0f}s")
        if failure:
            raise failure[0]

    def close(self) -> None:
        """Flush (abort an unfinished transaction)."""
        if self._in_transaction:
            self._in_transaction = False
            try:
                self._bounded(lambda: self._producer.abort_transaction(self._timeout),
                              "transaction abort")
            except _CallStuck as stuck:  # the next owner's init_transactions settles it
                log.warning("%s", stuck)
        else:
            self.flush()
