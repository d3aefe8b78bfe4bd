"""Synchronous offset commits while the broker is unreachable, on both clients:
retry with backoff, never drop offsets; one clear error when the group moved on."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError as CkError
from confluent_kafka import KafkaException
from confluent_kafka import TopicPartition as CkTopicPartition
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotCoordinatorError,
)
from kafka.structs import TopicPartition as KpTopicPartition

from stream_learner.errors import ConnectionFailed
from stream_learner.kafka.confluent import ConfluentSource
from stream_learner.kafka.kafka_python import KafkaPythonSource
from stream_learner.kafka.options import COMMIT_BACKOFF_S


class FlakyConsumer:
    """A consumer whose commits raise the queued errors first."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.committed: list[Any] = []
        self.attempts = 0

    def commit(self, *args: Any, **kwargs: Any) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.committed.append(kwargs.get("offsets", args[0] if args else None))


def _offsets(client: str, request: Any) -> dict[tuple[str, int], int]:
    if client == "kafka-python":
        return {(tp.topic, tp.partition): om.offset for tp, om in request.items()}
    return {(tp.topic, tp.partition): tp.offset for tp in request}


def _retriable(client: str) -> list[Exception]:
    if client == "kafka-python":
        errors: list[Exception] = [KafkaConnectionError("refused")] * 2 + [NotCoordinatorError()]
        return errors + [KafkaTimeoutError("timed out")] * 6
    return [KafkaException(CkError(CkError._TRANSPORT, "down", retriable=True))] * 9


def _fatal(client: str) -> Exception:
    if client == "kafka-python":
        return CommitFailedError("group rebalanced")
    return KafkaException(CkError(CkError.UNKNOWN_MEMBER_ID, "group rebalanced"))


def _source(client: str, consumer: Any) -> tuple[Any, list[float]]:
    source: Any = (
        KafkaPythonSource(consumer, ["events"]) if client == "kafka-python"
        else ConfluentSource(consumer, ["events"])
    )
    waits: list[float] = []
    source._sleep = waits.append
    return source, waits


CLIENTS = ["kafka-python", "confluent-kafka"]


@pytest.mark.parametrize("client", CLIENTS)
def test_retriable_commit_errors_are_retried_with_doubling_backoff(
    client: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = FlakyConsumer(_retriable(client))
    source, waits = _source(client, consumer)
    with caplog.at_level("WARNING"):
        source.commit({("events", 0): 10, ("events", 1): 7})
    assert consumer.attempts == 10
    assert [_offsets(client, c) for c in consumer.committed] == [
        {("events", 0): 10, ("events", 1): 7}
    ]
    first, longest = COMMIT_BACKOFF_S
    assert waits[:3] == [first, first * 2, first * 4]
    assert max(waits) == longest and waits == sorted(waits)
    assert caplog.text.count("offset commit failed") == 9


@pytest.mark.parametrize("client", CLIENTS)
def test_a_non_retriable_commit_error_stops_with_one_clear_error(client: str) -> None:
    consumer = FlakyConsumer([_fatal(client)])
    source, waits = _source(client, consumer)
    with pytest.raises(ConnectionFailed, match="offset commit refused"):
        source.commit({("events", 0): 3})
    assert waits == [] and consumer.attempts == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_without_retry_a_retriable_error_is_raised_at_once(client: str) -> None:
    consumer = FlakyConsumer(_retriable(client))
    source, waits = _source(client, consumer)
    with pytest.raises(ConnectionFailed, match="offset commit refused"):
        source.commit({("events", 0): 3}, retry=False)
    assert waits == [] and consumer.attempts == 1


@pytest.mark.parametrize("client", CLIENTS)
def test_nothing_to_commit_sends_nothing(client: str) -> None:
    consumer = FlakyConsumer([])
    source, _waits = _source(client, consumer)
    source.commit({})
    assert consumer.attempts == 0


def _broker_away() -> list[Exception]:
    """What a librdkafka consumer raises while the broker restarts: no retriable flag
    (measured against a closed port: committed -> _TIMED_OUT, watermarks ->
    _ALL_BROKERS_DOWN, a synchronous commit -> _WAIT_COORD)."""
    return [KafkaException(CkError(code, "away"))
            for code in (CkError._TIMED_OUT, CkError._ALL_BROKERS_DOWN, CkError._WAIT_COORD)]


class _ReadingCkConsumer:
    """A confluent consumer whose offset reads raise the queued errors first."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.attempts = 0

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return [CkTopicPartition(p.topic, p.partition, 41) for p in partitions]

    def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return 3, 90


class _PollingKpConsumer:
    """A kafka-python consumer whose polls raise the queued errors first."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.polls = 0

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Any]]:
        self.polls += 1
        if self.errors:
            raise self.errors.pop(0)
        record = SimpleNamespace(value=b"{}", key=b"k", timestamp=5, offset=7)
        return {KpTopicPartition("events", 1): [record]}


def test_kafka_python_poll_outlives_a_broker_that_refuses_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kafka-python 3.0's poll raised ECONNREFUSED while the broker restarted (looking up
    the group coordinator) and the worker exited 1 (test_broker_restarted_mid_stream in
    a fresh-clone run): the poll now returns no records, waits, and the next one tries again."""
    consumer = _PollingKpConsumer([KafkaConnectionError("111 ECONNREFUSED")] * 3)
    source, waits = _source("kafka-python", consumer)
    with caplog.at_level("INFO"):
        assert [source.poll(500, 100) for _ in range(3)] == [[], [], []]
        (record,) = source.poll(500, 100)
    assert (record.value, record.origin) == (b"{}", ("events", 1, 7))
    assert waits == [0.1, 0.1, 0.1]  # each failed poll waits its timeout (100 ms): no busy loop
    assert caplog.text.count("Kafka consumer poll failed") == 1  # once per outage
    assert "Kafka consumer poll works again" in caplog.text


def test_kafka_python_poll_raises_an_error_that_is_not_the_broker_being_away() -> None:
    consumer = _PollingKpConsumer([CommitFailedError("group rebalanced")])
    source, _waits = _source("kafka-python", consumer)
    with pytest.raises(CommitFailedError):
        source.poll(500, 100)


def test_confluent_offset_reads_wait_for_a_broker_that_is_away() -> None:
    """A restore right after a broker restart (a rewound transaction) read the committed
    offsets while the broker was down, got _TIMED_OUT and crashed the worker."""
    consumer = _ReadingCkConsumer(_broker_away())
    source, waits = _source("confluent-kafka", consumer)
    assert source.committed([("events", 0)]) == {("events", 0): 41}
    assert consumer.attempts == 4 and len(waits) == 3
    consumer.errors = _broker_away()
    assert source.beginning([("events", 0), ("events", 1)]) == {("events", 0): 3, ("events", 1): 3}


def test_confluent_offsets_held_by_an_open_transaction_are_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broker that lost a committed transaction's markers left its offset commit open: a
    read_committed consumer's reads of the committed offsets time out for good. Seen through
    a real broker (tests/integration/test_server_restarts.py); the worker waits, and says why."""
    timed_out = [KafkaException(CkError(CkError._TIMED_OUT, "timed out")) for _ in range(5)]
    consumer = _ReadingCkConsumer(timed_out)
    source, waits = _source("confluent-kafka", consumer)
    with caplog.at_level(logging.ERROR, logger="stream_learner.kafka.confluent"):
        assert source.committed([("events", 1), ("events", 0)]) == {("events", 1): 41,
                                                                     ("events", 0): 41}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and len(waits) == 5
    assert "[('events', 0), ('events', 1)] are still unreadable after two attempts" in errors[0]
    assert "kafka-transactions.sh abort" in errors[0]


def test_confluent_log_start_read_waits_for_partitions_a_restarted_broker_forgot() -> None:
    """A restore right after a broker restart asked for the log start offsets of its
    assigned partitions before the client's metadata knew them again: librdkafka raised
    "Local: Unknown partition" (_UNKNOWN_PARTITION) and the worker exited 1."""
    forgot = [KafkaException(CkError(code, "Failed to get watermark offsets"))
              for code in (CkError._UNKNOWN_PARTITION, CkError._UNKNOWN_TOPIC)]
    consumer = _ReadingCkConsumer(forgot)
    source, waits = _source("confluent-kafka", consumer)
    assert source.beginning([("events", 1)]) == {("events", 1): 3}
    assert consumer.attempts == 3 and len(waits) == 2
    consumer.errors = [KafkaException(CkError(CkError._UNKNOWN_PARTITION, "unknown"))]
    assert source.committed([("events", 1)]) == {("events", 1): 41}


def test_confluent_offset_read_refused_stops_with_one_clear_error() -> None:
    consumer = _ReadingCkConsumer([KafkaException(CkError(CkError.GROUP_AUTHORIZATION_FAILED,
                                                          "not allowed"))])
    source, waits = _source("confluent-kafka", consumer)
    with pytest.raises(ConnectionFailed, match="reading the committed offsets failed"):
        source.committed([("events", 0)])
    assert waits == []


def test_confluent_synchronous_commit_waits_for_a_broker_that_is_away() -> None:
    consumer = FlakyConsumer(_broker_away())
    source, waits = _source("confluent-kafka", consumer)
    source.commit({("events", 0): 10})
    assert consumer.attempts == 4 and len(waits) == 3
    assert [_offsets("confluent-kafka", c) for c in consumer.committed] == [{("events", 0): 10}]


class FakeProducer:
    """librdkafka's producer as the sink sees it: delivery reports served by poll()."""

    def __init__(self) -> None:
        self.queued: list[Any] = []  # on_delivery callbacks, in produce order
        self.served: list[int] = []  # indexes to report at the next poll

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.queued.append(on_delivery)

    def poll(self, timeout: float) -> int:
        for i in self.served:
            self.queued[i](None, None)
        n, self.served = len(self.served), []
        return n


def test_confluent_acknowledgements_advance_only_over_whole_batches_in_order() -> None:
    from stream_learner.kafka.confluent import ConfluentSink

    producer = FakeProducer()
    sink = ConfluentSink(producer, {"predictions": "p"})
    for _ in range(3):
        sink.send("predictions", b"k", b"v")
    first = sink.mark()
    for _ in range(2):
        sink.send("predictions", b"k", b"v")
    second = sink.mark()
    assert (first, second) == (3, 5)
    producer.served = [3, 4]  # the second batch is acknowledged first (another partition)
    assert sink.acknowledged() == 0
    producer.served = [0, 1]
    assert sink.acknowledged() == 0  # one record of the first batch still out
    producer.served = [2]
    assert sink.acknowledged() == second


def test_pipelined_commits_only_what_is_acknowledged_and_drain_commits_everything() -> None:
    from stream_learner.commits import Pipelined

    class Sink:
        sent = acked = flushed = 0

        def mark(self) -> int:
            return self.sent

        def acknowledged(self) -> int:
            return self.acked

        def flush(self) -> None:
            self.acked = self.sent
            self.flushed += 1

    class Source:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[Any, int]]] = []

        def commit_async(self, offsets: dict[Any, int]) -> None:
            self.calls.append(("async", dict(offsets)))

        def commit(self, offsets: dict[Any, int], retry: bool = True) -> None:
            self.calls.append(("sync", dict(offsets)))

    sink, source, now = Sink(), Source(), [0.0]
    cycle = Pipelined(source, sink, interval_s=1.0, clock=lambda: now[0])  # type: ignore[arg-type]
    sink.sent = 10
    cycle.commit({("e", 0): 10})
    sink.sent = 20
    cycle.commit({("e", 0): 20, ("e", 1): 4})
    assert source.calls == []  # nothing acknowledged yet
    sink.acked = 15
    cycle.poll()
    assert source.calls == [("async", {("e", 0): 10})]
    sink.acked = 20
    cycle.poll()  # acknowledged, but the interval has not passed
    assert len(source.calls) == 1
    now[0] = 1.0
    cycle.poll()
    assert source.calls[-1] == ("async", {("e", 0): 20, ("e", 1): 4})
    sink.sent = 30
    cycle.commit({("e", 1): 9})
    cycle.drain()  # waits for everything, commits every offset since the last drain
    assert sink.flushed == 1
    assert source.calls[-1] == ("sync", {("e", 0): 20, ("e", 1): 9})


def test_an_aborted_transaction_restores_every_shard_from_its_checkpoint() -> None:
    """Its outputs are gone, so the state that made them is dropped and rebuilt."""
    from stream_learner.commits import TransactionAborted, Transactional
    from stream_learner.datasets import dataset_records
    from stream_learner.models import ModelSpec
    from stream_learner.service import Service
    from stream_learner.settings import load_settings
    from stream_learner.testing import MemorySink, MemorySource

    class AbortingSink(MemorySink):
        def commit_transaction(self, offsets: Any, group: Any) -> None:
            raise TransactionAborted("transaction aborted: coordinator load in progress")

    class GroupSource(MemorySource):
        def group_metadata(self) -> Any:
            return None

    settings = load_settings(None, env={}, overrides={"service": {"guarantee": "exactly_once"}})
    records = [r for _, r in zip(range(20), dataset_records("WaterFlow"), strict=False)]
    source, sink = GroupSource({("events", 0): records}), AbortingSink()
    cycle = Transactional(source, sink, interval_s=0.0)
    service = Service(settings, ModelSpec.from_settings(settings.model), source, sink,
                      committer=cycle)
    service.start()
    service.process_batch(source.poll(10, 0), 0.0)
    before = service.shards[("events", 0)]
    service.step()  # 10 more records; the broker aborts the transaction at the commit
    assert service.shards == {} and service.metrics.is_ready is False  # queued for restore
    service.restore()
    assert service.shards[("events", 0)] is not before


class _Result:
    """A transactional request result: answered, or lost (never answered)."""

    def __init__(self, answered: bool) -> None:
        self.answered = answered
        self.waited_ms: int | None = None

    def wait(self, timeout_ms: int | None = None) -> bool:
        self.waited_ms = timeout_ms
        return self.answered


class _TxnProducer:
    """The parts of kafka-python's KafkaProducer a transactional commit uses."""

    def __init__(self, lost: bool) -> None:
        self.config = {"request_timeout_ms": 30000}
        self.lost = lost
        self.closed_with: float | None = None
        self.calls: list[str] = []
        producer = self

        class _Manager:
            def send_offsets_to_transaction(self, offsets: Any, group: Any) -> _Result:
                producer.calls.append("offsets")
                return _Result(answered=not producer.lost)

            def begin_commit(self) -> _Result:
                producer.calls.append("commit")
                return _Result(answered=True)

        class _Sender:
            def wakeup(self) -> None:
                pass

        self._transaction_manager = _Manager()
        self._sender = _Sender()

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def close(self, timeout: float | None = None) -> None:
        self.closed_with = timeout


def test_a_transactional_request_without_reply_gets_a_new_producer_and_aborts() -> None:
    """kafka-python can lose a transactional request across a broker restart and wait for
    ever: the commit gives up after the request timeout, replaces the producer and reports
    the transaction aborted (the service then rolls its shards back)."""
    from stream_learner.commits import TransactionAborted
    from stream_learner.kafka.kafka_python import KafkaPythonSink

    stuck, fresh = _TxnProducer(lost=True), _TxnProducer(lost=False)
    sink = KafkaPythonSink(stuck, {"predictions": "p"}, transactional=True, rebuild=lambda: fresh)
    with pytest.raises(TransactionAborted, match="no reply to the offsets"):
        sink.commit_transaction({("events", 0): 10}, group="g")
    assert stuck.calls == ["begin", "offsets"] and stuck.closed_with == 0
    sink.commit_transaction({("events", 0): 10}, group="g")  # the next one on the new producer
    assert fresh.calls == ["begin", "offsets", "commit"]


def test_without_a_way_to_rebuild_a_lost_request_stops_the_worker_in_one_line() -> None:
    from stream_learner.kafka.kafka_python import KafkaPythonSink

    sink = KafkaPythonSink(_TxnProducer(lost=True), {"predictions": "p"}, transactional=True)
    with pytest.raises(ConnectionFailed, match="no reply to the offsets added to the transaction"):
        sink.commit_transaction({("events", 0): 10}, group="g")


class _CkTxnProducer:
    """The parts of a confluent-kafka Producer a transactional commit uses; each call
    raises the errors queued for it first."""

    def __init__(self, **errors: list[Exception]) -> None:
        self.errors = errors
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        queued = self.errors.get(name)
        if queued:
            raise queued.pop(0)

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(self, offsets: Any, group: Any, timeout: float) -> None:
        self._call("offsets")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")

    def purge(self) -> None:
        self._call("purge")


def _ck_sink(producer: _CkTxnProducer) -> tuple[Any, list[float]]:
    from stream_learner.kafka.confluent import ConfluentSink

    sink = ConfluentSink(producer, {"predictions": "p"}, transactional=True)
    waits: list[float] = []
    sink._sleep = waits.append
    return sink, waits


def test_confluent_retriable_transaction_errors_repeat_the_same_call_never_abort() -> None:
    """A timeout while the broker restarts: librdkafka may still be committing in the
    background, so the commit (and the offsets) are made again, not aborted."""
    timed_out = KafkaException(CkError(CkError._TIMED_OUT, "broker down", retriable=True))
    producer = _CkTxnProducer(offsets=[timed_out], commit=[timed_out, timed_out])
    sink, waits = _ck_sink(producer)
    sink.commit_transaction({("events", 0): 10}, group="g")
    assert producer.calls == ["begin", "offsets", "offsets", "commit", "commit", "commit"]
    assert waits == [COMMIT_BACKOFF_S[0], COMMIT_BACKOFF_S[0], 2 * COMMIT_BACKOFF_S[0]]


def test_confluent_transaction_that_requires_an_abort_is_aborted_and_reported() -> None:
    from stream_learner.commits import TransactionAborted

    fenced = KafkaException(CkError(CkError._FENCED, "epoch bumped", txn_requires_abort=True))
    down = KafkaException(CkError(CkError._TRANSPORT, "down", retriable=True))
    producer = _CkTxnProducer(commit=[fenced], abort=[down])
    sink, waits = _ck_sink(producer)
    with pytest.raises(TransactionAborted, match="epoch bumped"):
        sink.commit_transaction({("events", 0): 10}, group="g")
    assert producer.calls == ["begin", "offsets", "commit", "abort", "abort"]
    assert waits == [COMMIT_BACKOFF_S[0]]
    sink.commit_transaction({("events", 0): 12}, group="g")  # a new transaction afterwards
    assert producer.calls[-3:] == ["begin", "offsets", "commit"]


def test_confluent_fatal_transaction_error_stops_with_one_line() -> None:
    fatal = KafkaException(CkError(CkError._FATAL, "producer fenced", fatal=True))
    producer = _CkTxnProducer(commit=[fatal])
    sink, _waits = _ck_sink(producer)
    with pytest.raises(ConnectionFailed, match=r"transaction commit failed: .*producer fenced"):
        sink.commit_transaction({("events", 0): 10}, group="g")
    assert "abort" not in producer.calls


def test_confluent_fatal_transaction_error_gets_a_new_producer_and_aborts() -> None:
    """A broker restart can leave librdkafka's transactional producer in a fatal state
    (INVALID_TXN_STATE at the commit): a new producer under the same id takes over, and
    the shards rewind, whichever way the broker settled the old transaction."""
    from stream_learner.commits import TransactionAborted
    from stream_learner.kafka.confluent import ConfluentSink

    fatal = KafkaException(CkError(CkError._FATAL, "Failed to end transaction", fatal=True))
    old, new = _CkTxnProducer(commit=[fatal]), _CkTxnProducer()
    sink = ConfluentSink(old, {"predictions": "p"}, transactional=True, rebuild=lambda: new)
    with pytest.raises(TransactionAborted, match="Failed to end transaction"):
        sink.commit_transaction({("events", 0): 10}, group="g")
    assert old.calls == ["begin", "offsets", "commit", "purge"]  # never aborted: it cannot
    sink.commit_transaction({("events", 0): 12}, group="g")
    assert new.calls == ["begin", "offsets", "commit"]


class _StuckCkProducer(_CkTxnProducer):
    """A transactional producer whose ``send_offsets_to_transaction`` never returns, as
    librdkafka's can after a coordinator restart (confluentinc/librdkafka#5456)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_offsets_to_transaction(self, offsets: Any, group: Any, timeout: float) -> None:
        self._call("offsets")
        self.release.wait(60)


def test_confluent_transaction_call_that_never_returns_gets_a_new_producer() -> None:
    """The call is given up its timeout plus a grace after it started: a new producer
    under the same id takes over (the stuck one is left to its thread, untouched), and
    the shards rewind."""
    from stream_learner.commits import TransactionAborted
    from stream_learner.kafka.confluent import ConfluentSink

    old, new = _StuckCkProducer(), _CkTxnProducer()
    sink = ConfluentSink(old, {"predictions": "p"}, transactional=True, timeout_s=0.2,
                         rebuild=lambda: new)
    sink._grace = 0.1
    try:
        started = time.monotonic()
        with pytest.raises(TransactionAborted, match=r"adding the offsets .* after 0s"):
            sink.commit_transaction({("events", 0): 10}, group="g")
        assert time.monotonic() - started < 10
        assert old.calls == ["begin", "offsets"]  # neither committed, aborted nor purged
        sink.commit_transaction({("events", 0): 12}, group="g")
        assert new.calls == ["begin", "offsets", "commit"]
    finally:
        old.release.set()


def test_confluent_transaction_call_that_never_returns_without_a_rebuild_stops() -> None:
    from stream_learner.kafka.confluent import ConfluentSink

    old = _StuckCkProducer()
    sink = ConfluentSink(old, {"predictions": "p"}, transactional=True, timeout_s=0.2)
    sink._grace = 0.1
    try:
        with pytest.raises(ConnectionFailed, match="no return from librdkafka"):
            sink.commit_transaction({("events", 0): 10}, group="g")
    finally:
        old.release.set()


class _RefusingCkProducer(_CkTxnProducer):
    """A transactional producer whose transaction went into an abortable error state (a
    broker restart lost a produce request): librdkafka refuses every further record."""

    def produce(self, topic: str, value: bytes, key: Any, headers: Any, on_delivery: Any) -> None:
        self.calls.append("produce")
        raise KafkaException(CkError(CkError._STATE, "Unable to produce message: Local: Erroneous state"))


def test_confluent_output_refused_by_a_failed_transaction_aborts_it_not_the_record() -> None:
    """The record is not at fault: no error from send (which the service would blame on the
    record), and the transaction is aborted at its commit so its shards roll back."""
    from stream_learner.commits import TransactionAborted

    producer = _RefusingCkProducer()
    sink, _waits = _ck_sink(producer)
    sink.send("predictions", b"k", b"v")
    sink.send("predictions", b"k", b"w")
    with pytest.raises(TransactionAborted, match="Erroneous state"):
        sink.commit_transaction({("events", 0): 10}, group="g")
    assert producer.calls == ["begin", "produce", "produce", "abort"]  # never committed
    producer.calls.clear()
    sink.commit_transaction({("events", 0): 12}, group="g")  # the next transaction commits
    assert producer.calls == ["begin", "offsets", "commit"]
