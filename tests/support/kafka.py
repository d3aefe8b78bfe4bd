"""Produce and consume test records on the real broker."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send ``(partition, key, value)`` records in order; return their (partition, offset).

    The first record of each partition is sent and acknowledged alone before the
    rest, so that a fresh topic's first produce (a leader not elected yet, a producer
    id being assigned) is retried before any later record is in flight. Raises
    ``AssertionError`` if the broker stored a partition's records in another order
    than they were sent: every test that compares outputs with River's loop relies
    on that order.
    """
    rows = list(records)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    firsts = {p: i for i, (p, _, _) in reversed(list(enumerate(rows)))}
    futures: dict[int, Any] = {}
    for i in sorted(firsts.values()):
        p, k, v = rows[i]
        futures[i] = producer.send(topic, value=v, key=k, partition=p)
    producer.flush(timeout=60)
    for i, (p, k, v) in enumerate(rows):
        if i not in futures:
            futures[i] = producer.send(topic, value=v, key=k, partition=p)
    producer.flush(timeout=60)
    out = [(m.partition, m.offset) for m in (futures[i].get(timeout=30) for i in range(len(rows)))]
    producer.close()
    last: dict[int, int] = {}
    for i, (partition, offset) in enumerate(out):
        assert offset > last.get(partition, -1), (
            f"record {i} of {topic}[{partition}] was stored at offset {offset}, before a "
            f"record sent ahead of it (offset {last[partition]}): the producer reordered them"
        )
        last[partition] = offset
    return out


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
        for records in consumer.poll(timeout_ms=500).values():
            out.extend((r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records)
    # one more short poll: more records than expected is a failure worth seeing
    for records in consumer.poll(timeout_ms=1000).values():
        out.extend((r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records)
    consumer.close()
    return sorted(out, key=lambda r: (r[0], r[1]))


def decode_values(
    rows: list[tuple[int, int, bytes | None, bytes, list[tuple[str, bytes]]]],
) -> list[dict]:
    """JSON values of consumed rows."""
    return [orjson.loads(r[3]) for r in rows]
