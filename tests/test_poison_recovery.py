"""Exactly-once recovery after 1 -> 2 -> 1 workers and a SIGKILL, on the real broker and Redis.

The schedule: two input partitions, ``service.guarantee = "exactly_once"``;
worker ``a`` runs, ``b`` joins and leaves with SIGTERM, ``a`` takes both
partitions back and is SIGKILLed about a second later, mid-transaction, then
restarted. Restarted under the same worker id, its transactional id aborts the
killed incarnation's open transaction at once. Restarted under another id, that
transaction stays open until the broker aborts it after
``kafka.transaction_timeout_ms``: read_committed readers, and the restarted
worker's own offset fetch, wait for it (docs/state.md).

Either way every event ends up predicted exactly once, as in an uninterrupted
run. The seconds from the restart to the first committed prediction are
printed and kept as a test property (``-s`` shows them); no timing is asserted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer

from tests.support.workers import (
    Worker,
    labelled_events,
    paced_producer,
    reference,
    worker_settings,
    worker_topics,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 2
N_EVENTS = 3800


def _assigned(worker: Worker) -> int:
    return worker.log().count("assigned partitions [(")


@pytest.mark.parametrize("restart_id", ["a", "c"], ids=["same-worker-id", "other-worker-id"])
def test_exactly_once_resumes_after_scale_up_scale_down_and_sigkill(
    restart_id: str,
    kafka_bootstrap: str,
    redis_url: str,
    make_topic: Any,
    tmp_path: Path,
    record_property: Any,
    redis_prefixes: Callable[[str], str],
) -> None:
    topics = worker_topics(make_topic, PARTITIONS)
    settings = worker_settings(
        kafka_bootstrap, redis_url, topics, redis_prefixes("eos"),
        service__guarantee="exactly_once", metrics__enabled="false",
    )
    records = labelled_events(N_EVENTS, PARTITIONS)
    expected, _ = reference(records, PARTITIONS)
    config = write_config(tmp_path)
    producer = paced_producer(kafka_bootstrap, topics["events"], records, seconds=60.0)

    a = Worker(config, tmp_path / "a.log", **settings, service__worker_id="a")
    a.wait_for(r"assigned partitions \[\(")
    time.sleep(2)
    b = Worker(config, tmp_path / "b.log", **settings, service__worker_id="b")
    b.wait_for(r"assigned partitions \[\(")  # 1 -> 2
    a.wait_for(r"revoked partitions \[\(")
    time.sleep(3)
    before = _assigned(a)
    assert b.terminate() == 0, b.log()[-3000:]  # 2 -> 1
    deadline = time.monotonic() + 60
    while _assigned(a) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _assigned(a) > before, a.log()[-3000:]
    time.sleep(1.0)
    a.kill()

    consumer = KafkaConsumer(
        topics["predictions"], bootstrap_servers=kafka_bootstrap, group_id=None,
        auto_offset_reset="earliest", isolation_level="read_committed", enable_auto_commit=False,
    )
    rows: list[bytes] = []
    while batch := consumer.poll(timeout_ms=2000):
        rows += [r.value for records_ in batch.values() for r in records_]
    assert len(rows) < N_EVENTS, "the kill came after the last event: nothing to resume"
    restarted_at = time.monotonic()
    a2 = Worker(config, tmp_path / "a2.log", **settings, service__worker_id=restart_id)
    first_output = None
    deadline = restarted_at + 180
    while len(rows) < N_EVENTS and time.monotonic() < deadline:
        got = [r.value for records_ in consumer.poll(timeout_ms=500).values() for r in records_]
        if got and first_output is None:
            first_output = time.monotonic() - restarted_at
        rows += got
    rows += [r.value for records_ in consumer.poll(timeout_ms=2000).values() for r in records_]
    consumer.close()
    producer.join(60)
    assert a2.terminate() == 0, a2.log()[-3000:]
    print(f"\n{restart_id=}: first committed prediction {first_output:.1f} s after the restart")
    record_property("seconds_to_first_committed_output", first_output)

    seen: dict[tuple[int, int], int] = {}
    for value in rows:
        p = orjson.loads(value)
        where = (p["source"]["partition"], p["source"]["offset"])
        assert {"prediction": p["prediction"], "proba": p["proba"]} == expected[where], where
        seen[where] = seen.get(where, 0) + 1
    assert set(seen) == set(expected), "every event is predicted"
    assert max(seen.values()) == 1, "and only once"
