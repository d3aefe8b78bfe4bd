"""KafkaSource.commit while the broker is unreachable: retry with backoff, never drop offsets."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    NotCoordinatorError,
)

from stream_learner.errors import ConnectionFailed
from stream_learner.sources import COMMIT_BACKOFF_S, KafkaSource


class FlakyConsumer:
    """A consumer whose commits raise the queued errors first."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.committed: list[dict[Any, Any]] = []
        self.attempts = 0

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.committed.append(offsets)


def _source(consumer: FlakyConsumer) -> tuple[KafkaSource, list[float]]:
    source = object.__new__(KafkaSource)  # no broker: only commit is exercised
    waits: list[float] = []
    source._consumer = consumer  # type: ignore[attr-defined]
    source._sleep = waits.append  # type: ignore[attr-defined]
    return source, waits


def test_retriable_commit_errors_are_retried_with_doubling_backoff(caplog: pytest.LogCaptureFixture):
    errors: list[Exception] = [KafkaConnectionError("refused")] * 2 + [NotCoordinatorError()]
    errors += [KafkaTimeoutError("timed out")] * 6
    consumer = FlakyConsumer(errors)
    source, waits = _source(consumer)
    with caplog.at_level("WARNING", logger="stream_learner.sources"):
        source.commit({("events", 0): 10, ("events", 1): 7})
    assert consumer.attempts == 10
    assert [{(tp.topic, tp.partition): om.offset for tp, om in c.items()} for c in consumer.committed] == [
        {("events", 0): 10, ("events", 1): 7}
    ]
    first, longest = COMMIT_BACKOFF_S
    assert waits[:3] == [first, first * 2, first * 4]
    assert max(waits) == longest and waits == sorted(waits)
    assert caplog.text.count("offset commit failed") == 9


def test_a_non_retriable_commit_error_stops_with_one_clear_error():
    consumer = FlakyConsumer([CommitFailedError("group rebalanced")])
    source, waits = _source(consumer)
    with pytest.raises(ConnectionFailed, match="offset commit refused: CommitFailedError"):
        source.commit({("events", 0): 3})
    assert waits == [] and consumer.attempts == 1


def test_nothing_to_commit_sends_nothing():
    consumer = FlakyConsumer([])
    source, _waits = _source(consumer)
    source.commit({})
    assert consumer.attempts == 0
