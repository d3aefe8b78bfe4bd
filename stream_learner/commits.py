"""The produce -> acknowledge -> commit cycle: offsets follow durable outputs.

One :class:`Committer` owns the cycle for the service; the service tells it,
after each poll batch, the next offsets whose outputs it has sent
(:meth:`Committer.commit`), lets it serve acknowledgements on every loop turn
(:meth:`Committer.poll`), and asks it to settle everything at a revocation or
the end (:meth:`Committer.drain`). A checkpoint is written only of state whose
outputs are durable: at-least-once, :class:`~stream_learner.recovery.AckedCheckpoints`
wraps :class:`Pipelined` and writes a sealed checkpoint once the outputs it
covers are acknowledged; otherwise the service drains the cycle before the
checkpoint (``docs/state.md``).

- :class:`AtLeastOnce`: stop and wait: flush the sink, then commit the
  offsets, per batch. For file and in-memory edges (and a baseline).
- :class:`Pipelined`: at-least-once on Kafka without waiting: outputs are
  produced asynchronously; offsets are committed asynchronously, at most every
  ``kafka.commit_interval_ms``, only up to the records whose outputs the broker
  has acknowledged. A crash repeats at most the unacknowledged tail.
- :class:`Transactional`: exactly-once: the outputs and the offsets of one or
  more poll batches in one Kafka transaction, committed every
  ``kafka.commit_interval_ms``; ``read_committed`` consumers see each output once.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from stream_learner.errors import ConnectionFailed
from stream_learner.settings import Settings
from stream_learner.sinks import Sink
from stream_learner.sources import Source, TopicPartition

__all__ = [
    "AckingSink",
    "AtLeastOnce",
    "Committer",
    "CommittingSource",
    "Pipelined",
    "TransactionAborted",
    "Transactional",
    "TransactionalSink",
    "for_edges",
]

log = logging.getLogger(__name__)


class Committer(Protocol):
    """Owns the produce -> acknowledge -> commit cycle."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The outputs of the records before ``offsets`` are sent: commit them once durable."""
        ...

    def poll(self) -> None:
        """Serve acknowledgements and commit what became durable (never waits)."""
        ...

    def drain(self) -> None:
        """Wait until everything passed to :meth:`commit` is durable and committed."""
        ...

    def salvage(self, offsets: Mapping[TopicPartition, int]) -> None:
        """After an error: commit what is already durable (up to ``offsets``); never raise."""
        ...


class AtLeastOnce:
    """Flush the sink, then commit offsets, per batch: a crash in between repeats one batch."""

    def __init__(self, source: Source, sink: Sink) -> None:
        self._source = source
        self._sink = sink

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Flush, then commit."""
        self._sink.flush()
        if offsets:
            self._source.commit(offsets)

    def poll(self) -> None:
        """Nothing outstanding: :meth:`commit` waited."""

    def drain(self) -> None:
        """Nothing outstanding: :meth:`commit` waited."""

    def salvage(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Flush and commit ``offsets`` once; errors are logged."""
        try:
            self.commit(offsets)
        except Exception as exc:
            log.error("could not commit the offsets of the outputs already written: %s", exc)


@runtime_checkable
class AckingSink(Sink, Protocol):
    """A sink that reports acknowledgements without waiting for them."""

    def mark(self) -> int:
        """Records sent so far."""
        ...

    def acknowledged(self) -> int:
        """Records, counted from the first, known durable (up to some earlier mark)."""
        ...


@runtime_checkable
class CommittingSource(Source, Protocol):
    """A source that can also commit without waiting."""

    def commit(self, offsets: Mapping[TopicPartition, int], retry: bool = True) -> None:
        """Commit and wait (retrying retriable errors unless ``retry`` is false)."""
        ...

    def commit_async(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Send a commit and return."""
        ...


class Pipelined:
    """At-least-once without stop-and-wait: commit asynchronously what is acknowledged.

    Examples
    --------
    >>> from stream_learner.testing import MemorySource
    >>> class Sink:
    ...     sent = acked = 0
    ...     def mark(self): return self.sent
    ...     def acknowledged(self): return self.acked
    ...     def flush(self): self.acked = self.sent
    >>> class Source:
    ...     def commit_async(self, offsets): print("async", offsets)
    ...     def commit(self, offsets): print("sync", offsets)
    >>> sink = Sink()
    >>> cycle = Pipelined(Source(), sink, interval_s=0.0)
    >>> sink.sent = 3; cycle.commit({("events", 0): 3})   # sent, not acknowledged
    >>> sink.sent = 5; cycle.commit({("events", 0): 5})
    >>> sink.acked = 4; cycle.poll()                      # the first batch is durable
    async {('events', 0): 3}
    >>> cycle.drain()                                     # wait for the rest, commit for sure
    sync {('events', 0): 5}
    """

    def __init__(
        self,
        source: CommittingSource,
        sink: AckingSink,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._sink = sink
        self._interval = interval_s
        self._clock = clock
        self._pending: deque[tuple[int, dict[TopicPartition, int]]] = deque()
        self._durable: dict[TopicPartition, int] = {}
        self._unsynced: dict[TopicPartition, int] = {}
        self._committed_at = -float("inf")

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Remember ``offsets`` until the outputs sent so far are acknowledged."""
        if offsets:
            self._pending.append((self._sink.mark(), dict(offsets)))
        self.poll()

    def poll(self) -> None:
        """Move acknowledged batches to the durable frontier; commit it when due."""
        pending = self._pending
        if pending:
            acked = self._sink.acknowledged()
            while pending and pending[0][0] <= acked:
                self._durable.update(pending.popleft()[1])
        if self._durable and self._clock() - self._committed_at >= self._interval:
            self._source.commit_async(self._durable)
            self._unsynced.update(self._durable)
            self._durable = {}
            self._committed_at = self._clock()

    def drain(self) -> None:
        """Flush the sink and commit every offset synchronously (covering the async commits)."""
        self._sink.flush()
        while self._pending:
            self._durable.update(self._pending.popleft()[1])
        frontier = {**self._unsynced, **self._durable}
        self._source.commit(frontier)
        self._unsynced = {}
        self._durable = {}
        self._committed_at = self._clock()

    def salvage(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Wait for the outputs already sent, then commit their offsets once (errors logged)."""
        try:
            if offsets:
                self._pending.append((self._sink.mark(), dict(offsets)))
            self._sink.flush()
            while self._pending:
                self._durable.update(self._pending.popleft()[1])
            self._source.commit({**self._unsynced, **self._durable}, retry=False)
        except Exception as exc:
            log.error("could not commit the offsets of the outputs already written: %s", exc)


class TransactionAborted(ConnectionFailed):
    """The broker aborted the open transaction (e.g. while it restarted); it was rolled back."""


class TransactionalSink(Sink, Protocol):
    """A sink whose outputs and offsets commit in one transaction."""

    def commit_transaction(self, offsets: Mapping[TopicPartition, int], group: Any) -> None:
        """Commit the open transaction with ``offsets`` inside it."""
        ...


class _GroupSource(Protocol):
    def group_metadata(self) -> Any: ...


class Transactional:
    """Outputs and offsets of one or more batches in one Kafka transaction.

    A transaction opens with the first output after a commit and is committed
    every ``interval_s`` (and before a checkpoint, a revocation and the end).
    When the broker aborts it (:class:`TransactionAborted`), ``on_abort`` is
    called: its outputs are gone, so the state that produced them must be
    rolled back to the last commit too.
    """

    def __init__(
        self,
        source: _GroupSource,
        sink: TransactionalSink,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._sink = sink
        self._interval = interval_s
        self._clock = clock
        self._offsets: dict[TopicPartition, int] = {}
        self._opened_at: float | None = None
        self.on_abort: Callable[[], None] | None = None

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Add ``offsets`` to the open transaction; commit it when due."""
        self._offsets.update(offsets)
        if self._opened_at is None:
            self._opened_at = self._clock()
        self.poll()

    def poll(self) -> None:
        """Commit the open transaction once it is ``interval_s`` old."""
        if self._opened_at is not None and self._clock() - self._opened_at >= self._interval:
            self.drain()

    def drain(self) -> None:
        """Commit the open transaction now."""
        if self._opened_at is None:
            return
        offsets, self._offsets, self._opened_at = self._offsets, {}, None
        try:
            self._sink.commit_transaction(offsets, self._source.group_metadata())
        except TransactionAborted as exc:
            if self.on_abort is None:
                raise
            log.warning("%s: every shard resumes from its checkpoint", exc)
            self.on_abort()

    def salvage(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit nothing: closing the sink aborts the open transaction (processed again)."""
        self._offsets = {}
        self._opened_at = None


def for_edges(settings: Settings, source: Source, sink: Sink) -> Committer:
    """The cycle the edges support: pipelined (or transactional) on Kafka, else stop-and-wait.

    Examples
    --------
    >>> from stream_learner.testing import MemorySink, MemorySource
    >>> type(for_edges(Settings(), MemorySource({}), MemorySink())).__name__
    'AtLeastOnce'
    """
    if isinstance(sink, AckingSink) and isinstance(source, CommittingSource):
        interval = settings.kafka.commit_interval_ms / 1000.0
        if settings.service.guarantee == "exactly_once":
            return Transactional(source, sink, interval)  # type: ignore[arg-type]
        return Pipelined(source, sink, interval)
    return AtLeastOnce(source, sink)
