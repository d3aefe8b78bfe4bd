"""Produce and consume test records on the real broker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from kafka import KafkaConsumer


class Deliveries:
    """An idempotent librdkafka producer for test input that remembers where each record
    landed, or why it did not.

    The tests' input goes through librdkafka, not through kafka-python (a client the
    service under test runs on): a CI run saw kafka-python's idempotent producer
    store a fresh topic's first record after the twelve sent behind it.
    """

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5,
        })
        self.landed: list[tuple[int, int] | None] = []
        self.errors: list[str] = []

    def send(self, topic: str, partition: int | None, key: bytes | None, value: bytes) -> None:
        """Queue one record (in order); ``partition`` None: the key's partition."""
        index = len(self.landed)
        self.landed.append(None)

        def report(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(f"record {index}: {err}")
            else:
                self.landed[index] = (msg.partition(), msg.offset())

        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report, **extra)
                break
            except BufferError:  # the local queue is full: serve delivery reports, retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def finish(self, timeout: float = 60.0) -> list[tuple[int, int]]:
        """Wait for every delivery; the (partition, offset) of each record, in send order.

        Raises ``AssertionError`` when a record was not stored, or a partition's
        records were stored in another order than they were sent: every test that
        compares outputs with River's loop relies on that order.
        """
        left = self._producer.flush(timeout)
        assert not self.errors and not left, (
            f"{left} records undelivered after {timeout}s; errors: {self.errors[:5]}")
        out = [where for where in self.landed if where is not None]
        assert len(out) == len(self.landed), "a record has no delivery report"
        last: dict[int, int] = {}
        for i, (partition, offset) in enumerate(out):
            assert offset > last.get(partition, -1), (
                f"record {i} was stored at offset {offset} of partition {partition}, before "
                f"a record sent ahead of it (offset {last[partition]})")
            last[partition] = offset
        return out


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send ``(partition, key, value)`` records in order; return their (partition, offset).

    Raises ``AssertionError`` unless every record was stored, in send order per partition.
    """
    deliveries = Deliveries(bootstrap)
    for partition, key, value in records:
        deliveries.send(topic, partition, key, value)
    return deliveries.finish()


def consume_all(
    bootstrap: str,
    topic: str,
    expected: int,
    timeout_s: float = 120.0,
    isolation_level: str = "read_uncommitted",
) -> list[tuple[int, int, bytes | None, bytes, list[tuple[str, bytes]]]]:
    """Read ``topic`` from the beginning until ``expected`` records (or the timeout).

    Returns (partition, offset, key, value, headers) in partition, offset order.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        isolation_level=isolation_level,
    )
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(_poll(consumer, 500))
    # then on to the end of every partition, not just one more poll: more records than
    # expected is a failure worth seeing, and where an at-least-once run repeated outputs,
    # the count is reached before the slowest partition's last records are read
    out.extend(_drain(consumer, deadline=time.monotonic() + 15.0))
    consumer.close()
    return sorted(out, key=lambda r: (r[0], r[1]))


def _drain(consumer: Any, deadline: float) -> list[tuple[int, int, bytes | None, bytes, list]]:
    """The records up to the end offsets of the consumer's partitions as of now (and at
    least one more short poll), until ``deadline``."""
    out = _poll(consumer, 1000)
    assigned = list(consumer.assignment())
    ends = consumer.end_offsets(assigned) if assigned else {}
    while time.monotonic() < deadline and any(
            consumer.position(tp) < end for tp, end in ends.items()):
        out.extend(_poll(consumer, 500))
    return out


def _poll(consumer: Any, timeout_ms: int) -> list[tuple[int, int, bytes | None, bytes, list]]:
    """One poll's records as (partition, offset, key, value, headers)."""
    return [(r.partition, r.offset, r.key, r.value, list(r.headers))
            for records in consumer.poll(timeout_ms=timeout_ms).values() for r in records]


def decode_values(
    rows: list[tuple[int, int, bytes | None, bytes, list[tuple[str, bytes]]]],
) -> list[dict]:
    """JSON values of consumed rows."""
    return [orjson.loads(r[3]) for r in rows]
