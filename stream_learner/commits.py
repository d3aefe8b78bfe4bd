"""Commit strategies: make a batch's outputs durable, then commit its offsets.

:class:`AtLeastOnce` flushes the sink and then commits the consumer offsets: a
crash in between repeats at most one batch. :class:`ExactlyOnce` puts the
outputs and the offsets in one Kafka transaction, so consumers reading with
``isolation.level=read_committed`` see every output once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from stream_learner.sinks import Sink
from stream_learner.sources import Source, TopicPartition

__all__ = ["AtLeastOnce", "Committer", "ExactlyOnce"]


class Committer(Protocol):
    """Makes a batch's outputs durable and commits its offsets, as one step."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Outputs first, then offsets (or both atomically)."""
        ...


class AtLeastOnce:
    """Flush the sink, then commit offsets: a crash in between repeats one batch."""

    def __init__(self, source: Source, sink: Sink) -> None:
        self._source = source
        self._sink = sink

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Flush, then commit."""
        self._sink.flush()
        if offsets:
            self._source.commit(offsets)


class _TransactionalSink(Protocol):
    def commit_transaction(self, offsets: Mapping[TopicPartition, int], group: Any) -> None: ...


class _GroupSource(Protocol):
    def group_metadata(self) -> Any: ...


class ExactlyOnce:
    """Outputs and offsets in one Kafka transaction (read_committed consumers see each once)."""

    def __init__(self, source: _GroupSource, sink: _TransactionalSink) -> None:
        self._source = source
        self._sink = sink

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the open transaction with the offsets inside it."""
        self._sink.commit_transaction(offsets, self._source.group_metadata())
