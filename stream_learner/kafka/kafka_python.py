"""The kafka-python client: consumer-group source, producer sink, and their builders.

The builders (:func:`consumer`, :func:`producer`) connect; the source and sink
take a built client and do no I/O in their constructors.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from stream_learner.commits import TransactionAborted
from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.events import Origin
from stream_learner.kafka.options import (
    COMMIT_BACKOFF_S,
    RECONNECT_BACKOFF_MAX_MS,
    kafka_client_options,
    unreachable,
)
from stream_learner.kafka.rebalance import CallbackGuard
from stream_learner.retrying import retry_call
from stream_learner.settings import KafkaSettings
from stream_learner.sinks import Header, KeyPartitioner
from stream_learner.sources import PartitionListener, Record, TopicPartition

__all__ = ["KafkaPythonSink", "KafkaPythonSource", "consumer", "partition_counts", "producer"]

log = logging.getLogger(__name__)


def consumer(settings: KafkaSettings, environ: Mapping[str, str], **options: Any) -> Any:
    """A connected ``KafkaConsumer`` with the shared connection options plus ``options``.

    Raises :class:`ConnectionFailed` (one line naming the address) when the broker
    cannot be reached within ``kafka.connect_timeout_s``.
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaConfigurationError, KafkaError

    config = {
        "enable_auto_commit": False,
        "bootstrap_timeout_ms": int(settings.connect_timeout_s * 1000),
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        **options,
        **kafka_client_options(settings, environ),
    }
    try:
        return KafkaConsumer(**config)
    except (KafkaConfigurationError, ValueError, TypeError) as exc:
        raise SettingsError(f"kafka.consumer_options: the client refused them: {exc}") from exc
    except KafkaError as exc:
        raise ConnectionFailed(unreachable(settings, exc)) from exc


def producer(settings: KafkaSettings, environ: Mapping[str, str], **options: Any) -> Any:
    """A connected idempotent ``KafkaProducer`` (``acks=all``) plus ``options``."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaConfigurationError, KafkaError

    settings_options = {
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.linger_ms,
        "max_block_ms": int(settings.connect_timeout_s * 1000),
        "bootstrap_timeout_ms": int(settings.connect_timeout_s * 1000),
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
        **options,
    }
    try:
        made = KafkaProducer(**settings_options, **kafka_client_options(settings, environ))
        if "transactional_id" in options:
            made.init_transactions()
    except (KafkaConfigurationError, ValueError, TypeError) as exc:
        raise SettingsError(f"kafka.producer_options: the client refused them: {exc}") from exc
    except KafkaError as exc:
        raise ConnectionFailed(unreachable(settings, exc)) from exc
    return made


def partition_counts(client: Any, settings: KafkaSettings, topics: Sequence[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists (a consumer asks the broker)."""
    from kafka.errors import KafkaError

    try:
        existing = client.topics()
    except KafkaError as exc:
        raise ConnectionFailed(unreachable(settings, exc)) from exc
    return {t: len(client.partitions_for_topic(t) or ()) for t in topics if t in existing}


def _away(exc: Exception) -> bool:
    """True for a kafka-python error of a broker that is unreachable for now: a retriable
    one, or the client's request timeout (a later call may succeed)."""
    from kafka.errors import KafkaError, KafkaTimeoutError  # on failures only

    return isinstance(exc, KafkaError) and (
        getattr(exc, "retriable", False) or isinstance(exc, KafkaTimeoutError)
    )


def _tp(tp: TopicPartition) -> Any:
    from kafka.structs import TopicPartition as KafkaTP

    return KafkaTP(*tp)


def _offsets(offsets: Mapping[TopicPartition, int]) -> dict[Any, Any]:
    from kafka.structs import OffsetAndMetadata
    from kafka.structs import TopicPartition as KafkaTP

    return {KafkaTP(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()}


class KafkaPythonSource:
    """A member of the consumer group, on kafka-python.

    With ``kafka.labels_topic`` set, both topics are subscribed with the range
    assignor, which hands partition ``p`` of both topics to the same member.
    Offsets are committed only through :meth:`commit` / :meth:`commit_async`.
    """

    def __init__(self, client: Any, topics: Sequence[str]) -> None:
        self._consumer = client
        self._topics = list(topics)
        self._sleep = time.sleep
        #: the last poll failed with a retriable error (logged once per outage)
        self._poll_failing = False
        self._guard = CallbackGuard()
        self._in_rebalance = False
        self._deferred: dict[TopicPartition, int] = {}

    def subscribe(self, listener: PartitionListener) -> None:
        """Join the consumer group; assignments arrive during :meth:`poll`.

        kafka-python runs rebalance callbacks on its I/O thread, where a blocking
        call to the consumer fails. A commit the listener makes while partitions
        are revoked is therefore deferred, and awaited on that thread right after
        the listener returned, before the group rebalances (see :meth:`commit`).
        """
        from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener

        source = self

        class _Rebalance(AsyncConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                source._in_rebalance = True
                try:
                    source._guard.call(
                        listener.on_revoked, sorted((t.topic, t.partition) for t in revoked)
                    )
                finally:
                    source._in_rebalance = False
                await source._commit_deferred()

            async def on_partitions_assigned(self, assigned: Any) -> None:
                source._guard.call(
                    listener.on_assigned, sorted((t.topic, t.partition) for t in assigned)
                )

        self._consumer.subscribe(self._topics, listener=_Rebalance())

    async def _commit_deferred(self) -> None:
        """Commit, on the I/O thread, what the revoke callback asked to commit."""
        offsets, self._deferred = self._deferred, {}
        if not offsets:
            return
        try:
            await self._consumer._coordinator._commit_offsets_sync_async(_offsets(offsets))
        except Exception as exc:
            log.warning(
                "offset commit on revocation failed (%s: %s): outputs are written; the "
                "next owner resumes at the previous commit and repeats them",
                type(exc).__name__, exc,
            )

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """One fetch from the partitions this member owns.

        While the broker is away, kafka-python's poll may raise a retriable error
        (e.g. ``KafkaConnectionError`` looking up the group coordinator): that poll
        returns no records after waiting its timeout, and the next one tries again,
        as librdkafka does on its own. The first failure of an outage is logged as a
        warning, the first poll that works again as info.
        """
        try:
            batches = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except Exception as exc:
            if not _away(exc):
                raise
            if not self._poll_failing:
                log.warning("Kafka consumer poll failed (%s: %s); polling again",
                            type(exc).__name__, exc)
            self._poll_failing = True
            self._guard.raise_pending()  # a rebalance callback's error comes first
            self._sleep(timeout_ms / 1000.0)
            return []
        if self._poll_failing:
            self._poll_failing = False
            log.info("Kafka consumer poll works again")
        self._guard.raise_pending()
        out: list[Record] = []
        new = tuple.__new__  # the named tuples without their Python __new__: per record
        for tp, records in batches.items():
            topic, partition = tp.topic, tp.partition
            out += [
                new(Record, (r.value, r.key, r.timestamp, new(Origin, (topic, partition, r.offset))))
                for r in records
            ]
        return out

    def commit(self, offsets: Mapping[TopicPartition, int], retry: bool = True) -> None:
        """Commit the next offsets to read, synchronously.

        While the broker is unreachable (a retriable error, or the client's request
        timeout) the commit is retried with backoff, logging each failure: the outputs are
        already durable, and nothing after them may be processed before they are committed.
        A non-retriable error (e.g. the group moved on without this member), or any
        error when ``retry`` is false, raises :class:`ConnectionFailed`. Called from a
        revoke callback (on the client's I/O thread), the commit is made when the
        callback returns, before the group rebalances.
        """
        from kafka.errors import KafkaError

        if not offsets:
            return
        if self._in_rebalance:  # on the I/O thread: committed when the callback returns
            self._deferred.update(offsets)
            return
        request = _offsets(offsets)

        try:
            retry_call(lambda: self._consumer.commit(request), "offset commit",
                       lambda exc: retry and _away(exc),
                       COMMIT_BACKOFF_S, sleep=self._sleep, log=log)
        except KafkaError as exc:
            raise ConnectionFailed(f"offset commit refused: {type(exc).__name__}: {exc}") from exc

    def commit_async(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Send a commit of ``offsets`` and return; a failure is logged (a later commit covers it)."""
        if offsets and self._in_rebalance:
            self._deferred.update(offsets)
        elif offsets:
            self._consumer.commit_async(_offsets(offsets), callback=_log_async_commit)

    @property
    def exhausted(self) -> bool:
        """A topic never ends."""
        return False

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets (K), read from the coordinator."""
        return {tp: self._consumer.committed(_tp(tp)) for tp in partitions}

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The log start offsets."""
        found = self._consumer.beginning_offsets([_tp(tp) for tp in partitions])
        return {(tp.topic, tp.partition): int(offset) for tp, offset in found.items()}

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` on."""
        self._consumer.seek(_tp(partition), offset)

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Each partition's end offset minus its ``position``.

        The end is the high watermark the latest fetch response carried, as the
        Java consumer's ``records-lag`` metric uses: no request, so measuring lag
        never holds up the loop. Only partitions not fetched yet cost one request
        for their end offsets. With ``read_committed`` the high watermark can be
        ahead of what the worker may read by the records of open transactions and
        their markers.
        """
        from kafka.errors import IllegalStateError, KafkaError

        ends: dict[TopicPartition, int] = {}
        unknown = []
        for tp in positions:
            try:
                end = self._consumer.highwater(_tp(tp))
            except IllegalStateError:  # no longer assigned: nothing to report
                continue
            if end is None:
                unknown.append(_tp(tp))
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
        """Leave the group (the revoke callback runs on the client's own thread here)."""
        self._consumer.close(autocommit=False)
        self._guard.log_pending("closing the Kafka consumer")


def _log_async_commit(offsets: Any, response: Any) -> None:
    if isinstance(response, Exception):
        log.warning("asynchronous offset commit failed (a later commit covers it): %s", response)


class KafkaPythonSink:
    """An idempotent producer writing each role to its topic, on kafka-python.

    Records are sent asynchronously; :meth:`acknowledged` says how many of them,
    counted from the first, the broker has acknowledged. With a transactional
    producer, :meth:`commit_transaction` commits the outputs and offsets together.
    """

    def __init__(
        self,
        client: Any,
        topics: Mapping[str, str],
        transactional: bool = False,
        rebuild: Callable[[], Any] | None = None,
    ) -> None:
        self._producer = client
        self._topics = dict(topics)
        self._transactional = transactional
        self._rebuild = rebuild
        self._in_transaction = False
        self._futures: deque[Any] = deque()
        self._sent = 0
        self._by_key: dict[str, KeyPartitioner] = {}

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Queue one record for the role's topic.

        A keyed record goes to the partition Kafka's default partitioner picks
        for its key (murmur2), computed once per key and topic.
        """
        if self._transactional and not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        topic = self._topics[role]
        partition = None
        if key is not None:
            by_key = self._by_key.get(topic)
            if by_key is None:
                by_key = self._by_key[topic] = KeyPartitioner(self._producer.partitions_for(topic))
            partition = by_key(key)
        self._futures.append(
            self._producer.send(
                topic, value=value, key=key, headers=list(headers) if headers else None,
                partition=partition,
            )
        )
        self._sent += 1

    def mark(self) -> int:
        """Records sent so far; :meth:`acknowledged` reaches this mark once all are durable."""
        return self._sent

    def acknowledged(self) -> int:
        """How many records, from the first, the broker has acknowledged (never blocks).

        Raises :class:`ConnectionFailed` when one was not written.
        """
        futures = self._futures
        while futures and futures[0].is_done:
            future = futures.popleft()
            if future.failed():
                self._failed(future.exception, len(futures) + 1)
        return self._sent - len(futures)

    def _failed(self, exc: Exception, n: int) -> None:
        self._futures.clear()
        raise ConnectionFailed(
            f"output records were not written ({n} pending): {type(exc).__name__}: {exc}"
        ) from exc

    def flush(self) -> None:
        """Wait for every queued record; raise :class:`ConnectionFailed` if one failed."""
        self._producer.flush()
        for topic, by_key in self._by_key.items():  # the topic may have gained partitions
            by_key.update(self._producer.partitions_for(topic))
        failed = [f for f in self._futures if f.failed()]
        if failed:
            self._failed(failed[0].exception, len(failed))
        self._futures.clear()

    def commit_transaction(self, offsets: Mapping[TopicPartition, int], group: Any) -> None:
        """Commit the open transaction with ``offsets`` (next offsets to read) inside it."""
        from kafka.errors import KafkaError

        if not offsets and not self._in_transaction:
            return
        try:
            if not self._in_transaction:
                self._producer.begin_transaction()
                self._in_transaction = True
            manager = self._producer._transaction_manager
            if offsets:
                self._await(manager.send_offsets_to_transaction(_offsets(offsets), group),
                            "the offsets added to the transaction")
            self._await(manager.begin_commit(), "the transaction's commit")
        except KafkaError as exc:
            raise ConnectionFailed(
                f"transaction commit failed: {type(exc).__name__}: {exc}"
            ) from exc
        finally:
            self._in_transaction = False
            self._futures.clear()

    def _await(self, result: Any, what: str) -> None:
        """Wait for a transactional request, at most the producer's request timeout.

        kafka-python (3.x) can lose a transactional request when the broker
        restarts under it: its sender then waits for a reply that never comes,
        and ``send_offsets_to_transaction`` / ``commit_transaction`` block for
        ever. A request without a reply in time gets a new producer under the
        same transactional id (its ``init_transactions`` fences the old one and
        aborts the open transaction), and the transaction counts as aborted
        (:class:`~stream_learner.commits.TransactionAborted`): the service rolls
        its shards back to their checkpoints, as for any aborted transaction.
        """
        self._producer._sender.wakeup()
        timeout_ms = int(self._producer.config["request_timeout_ms"])
        if result.wait(timeout_ms=timeout_ms):  # raises the request's own error, if any
            return
        if self._rebuild is None:
            raise ConnectionFailed(f"no reply to {what} within {timeout_ms} ms")
        log.warning("no reply to %s within %d ms: a new producer takes over", what, timeout_ms)
        try:
            self._producer.close(timeout=0)
        except Exception as exc:  # it is being replaced: its errors no longer matter
            log.debug("closing the stuck producer: %s", exc)
        self._producer = self._rebuild()
        raise TransactionAborted(
            f"transaction aborted: no reply to {what} within {timeout_ms} ms"
        )

    def close(self) -> None:
        """Flush (abort an unfinished transaction) and close the producer."""
        try:
            if self._in_transaction:
                self._producer.abort_transaction()
                self._in_transaction = False
            else:
                self.flush()
        finally:
            self._producer.close()
