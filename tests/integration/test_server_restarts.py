"""The broker or Redis restarted mid-stream: nothing is lost, the worker recovers by itself.

Each test restarts a server of its own (tests/support/private_servers.py), never the
shared ones: the broker test runs against a private broker (and the shared
Redis), the Redis test against a private Redis (and the shared broker).

In exactly-once mode the single test broker, stopped while a transaction
commits, can keep the commit and lose its markers. When the worker's next
abort ends it, the restore takes an older checkpoint (tests/test_recovery.py);
when it stays open, the worker cannot read its committed offsets and says so,
and the test plays the operator who follows docs/state.md (``_operator``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import TopicPartition

from tests.support.private_servers import PrivateServer
from tests.support.workers import Worker, labelled_events, paced_producer, reference, write_config
from tests.support.workers import check_predictions as _check_predictions
from tests.support.workers import final_models_equal_reference as _final_models_equal_reference
from tests.support.workers import worker_settings as _settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 2
N_EVENTS = 3000
DOWN_S = 4.0

Row = tuple[int, int, bytes]


def _create_topics(bootstrap: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    topics = {
        "events": (f"events-{suffix}", PARTITIONS),
        "predictions": (f"predictions-{suffix}", PARTITIONS),
        "dlq": (f"dlq-{suffix}", 1),
        "learn_dlq": (f"learn-dlq-{suffix}", 1),
        "alerts": (f"alerts-{suffix}", 1),
        "metrics": (f"metrics-{suffix}", 1),
    }
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-admin")
    try:
        admin.create_topics([NewTopic(n, p, 1) for n, p in topics.values()], timeout_ms=30000)
    finally:
        admin.close()
    return {role: name for role, (name, _p) in topics.items()}


def _read(
    bootstrap: str, topic: str, done: Callable[[list[Row]], bool], timeout_s: float,
    isolation_level: str = "read_uncommitted", alive: Callable[[], None] = lambda: None,
) -> list[Row]:
    """(partition, offset, value) of ``topic`` from the start until ``done`` and the end is reached."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    rows: list[Row] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                rows.extend((r.partition, r.offset, r.value) for r in records)
            if done(rows):
                end = consumer.end_offsets(tps)
                if all(consumer.position(tp) >= end[tp] for tp in tps):
                    return rows
            alive()
        raise AssertionError(f"{topic}: only {len(rows)} records after {timeout_s:.0f}s")
    finally:
        consumer.close()


def _input_is_as_produced(bootstrap: str, topic: str, records: list[tuple[int, bytes, bytes]]) -> None:
    """The producer's records all made it, in order: the reference applies."""
    rows = _read(bootstrap, topic, lambda rows: len(rows) >= len(records), 90)
    got = {p: [v for q, _o, v in sorted(rows) if q == p] for p in range(PARTITIONS)}
    sent = {p: [v for q, _k, v in records if q == p] for p in range(PARTITIONS)}
    assert got == sent, "the test producer lost or reordered records across the restart"


def _covers(n: int) -> Callable[[list[Row]], bool]:
    def done(rows: list[Row]) -> bool:
        seen = set()
        for _p, _o, value in rows:
            source = orjson.loads(value)["source"]
            seen.add((source["partition"], source["offset"]))
        return len(seen) >= n
    return done


def _alive(worker: Worker) -> Callable[[], None]:
    def check() -> None:
        if worker.proc.poll() is not None:
            raise AssertionError(f"worker exited {worker.proc.returncode}:\n{worker.log()[-3000:]}")
    return check


UNREADABLE = "are still unreadable after two attempts"


def _operator(server: PrivateServer, topics: dict[str, str], worker: Worker) -> Callable[[], None]:
    """The worker alive, and an operator who follows its error about a transaction left open.

    The single test broker, stopped while a transaction commits, can keep the
    commit and lose its markers (docs/state.md, C past K); the worker then cannot
    read its committed offsets, says so, and waits. The operator ends the open
    transactions with the documented commands; the run must then still be exact.
    """
    alive, repaired = _alive(worker), []

    def check() -> None:
        alive()
        if not repaired and UNREADABLE in worker.log():
            partitions = {name: PARTITIONS if role == "predictions" else 1
                          for role, name in topics.items() if role != "events"}
            repaired.extend(server.abort_open_transactions({"__consumer_offsets": 1,
                                                            **partitions}))
            assert repaired, "the worker said a transaction was left open; none was found"
    return check


def _run_through_restart(
    server: PrivateServer, bootstrap: str, redis_url: str, topics: dict[str, str],
    tmp_path: Path, guarantee: str, prefix: str,
) -> tuple[Worker, str]:
    """A worker consumes a paced stream while ``server`` is stopped and started again."""
    records = labelled_events(N_EVENTS, PARTITIONS)
    expected, learners = reference(records, PARTITIONS)
    settings = _settings(
        bootstrap, redis_url, topics, prefix,
        service__guarantee=guarantee, service__worker_id="w1",
        kafka__transaction_timeout_ms="10000",
    )
    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    worker = Worker(write_config(tmp_path), tmp_path / "worker.log", **settings)
    try:
        worker.wait_for(r"silent replay done|restore from", timeout=60)
        producer = paced_producer(bootstrap, topics["events"], records, seconds=10.0)
        time.sleep(3.0)
        server.stop()
        assert not server.up
        time.sleep(DOWN_S)
        _alive(worker)()
        server.start()
        producer.join(120)
        assert not producer.is_alive(), "the test producer did not finish"
        _input_is_as_produced(bootstrap, topics["events"], records)
        watch = _operator(server, topics, worker) if guarantee == "exactly_once" else _alive(worker)
        _read(bootstrap, topics["predictions"], _covers(N_EVENTS), 180, isolation, watch)
        assert worker.terminate() == 0, worker.log()[-3000:]
    finally:
        if worker.proc.poll() is None:
            worker.kill()
    rows = _read(bootstrap, topics["predictions"], _covers(N_EVENTS), 60, isolation)
    _check_predictions(
        [(p, o, None, v, []) for p, o, v in rows], expected, exactly_once=guarantee == "exactly_once"
    )
    _final_models_equal_reference(redis_url, prefix, topics["events"], learners)
    return worker, worker.log()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_broker_restarted_mid_stream(
    guarantee: str, private_kafka: PrivateServer, redis_url: str, tmp_path: Path,
    kafka_client: str, redis_prefixes: Callable[[str], str],
) -> None:
    topics = _create_topics(private_kafka.address)
    _run_through_restart(private_kafka, private_kafka.address, redis_url, topics, tmp_path,
                         guarantee, redis_prefixes("restart-kafka"))


def test_redis_restarted_mid_stream(
    private_redis: PrivateServer, kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = {
        "events": make_topic("events", PARTITIONS),
        "predictions": make_topic("predictions", PARTITIONS),
        "dlq": make_topic("dlq", 1),
        "learn_dlq": make_topic("learn-dlq", 1),
        "alerts": make_topic("alerts", 1),
        "metrics": make_topic("metrics", 1),
    }
    _worker, log = _run_through_restart(
        private_redis, kafka_bootstrap, private_redis.address, topics, tmp_path, "at_least_once",
        f"restart-redis-{uuid.uuid4().hex[:8]}",  # a private server: gone with the test
    )
    failed = re.search(r"checkpoint of \S+ failed \(cannot reach Redis", log)
    assert failed, "the worker should have reported failed checkpoints while Redis was down"
    again = re.search(r"checkpoint of \S+ saved again after failures", log[failed.end():])
    assert again, "checkpoints should succeed again once Redis is back"
