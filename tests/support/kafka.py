"""Produce and consume test records on the real broker."""

from __future__ import annotations

import time
from collections.abc import Iterable

import orjson
from kafka import KafkaConsumer, KafkaProducer


def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[int, bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send ``(partition, key, value)`` records in order; return their (partition, offset)."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    futures = [producer.send(topic, value=v, key=k, partition=p) for p, k, v in records]
    producer.flush(timeout=60)
    out = [(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)]
    producer.close()
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
