"""Crash-exact state on the real broker and Redis: SIGKILL, rebalances, exactly-once."""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.kafka import consume_all
from tests.support.workers import (
    Worker,
    check_predictions,
    final_models_equal_reference,
    labelled_events,
    paced_producer,
    reference,
    worker_settings,
    worker_topics,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 2
N_EVENTS = 6000


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_sigkill_five_times_then_state_equals_uninterrupted_run(
    guarantee: str, kafka_bootstrap: str, redis_url: str, make_topic: Any, tmp_path: Path,
    redis_prefixes: Callable[[str], str],
) -> None:
    topics = worker_topics(make_topic, PARTITIONS)
    prefix = redis_prefixes("crash")
    records = labelled_events(N_EVENTS, PARTITIONS)
    expected, learners = reference(records, PARTITIONS)
    config = write_config(tmp_path)
    settings = worker_settings(
        kafka_bootstrap, redis_url, topics, prefix,
        service__guarantee=guarantee,
        service__worker_id="w1",
        kafka__static_membership="true",
        kafka__transaction_timeout_ms="10000",
    )
    rng = random.Random(1234)
    producer = paced_producer(kafka_bootstrap, topics["events"], records, seconds=30.0)
    log = tmp_path / "worker.log"
    for _ in range(5):
        worker = Worker(config, log, **settings)
        # killed mid-stream, after it restored and checkpointed (start-up time varies a lot
        # on a loaded machine, so the clock starts at the assignment)
        worker.wait_for(r"assigned partitions \[\(", timeout=60)
        time.sleep(rng.uniform(1.5, 3.0))
        worker.kill()
    producer.join(60)
    final = Worker(config, log, **settings, service__idle_timeout_s="6")
    assert final.wait(180) == 0, final.log()[-3000:]
    text = log.read_text()
    assert text.count("restore from checkpoint") >= 3, "the kills should land after checkpoints"
    assert "silent replay" in text

    isolation = "read_committed" if guarantee == "exactly_once" else "read_uncommitted"
    rows = consume_all(kafka_bootstrap, topics["predictions"], N_EVENTS, isolation_level=isolation)
    check_predictions(rows, expected, exactly_once=guarantee == "exactly_once")
    final_models_equal_reference(redis_url, prefix, topics["events"], learners)


def test_partitions_move_one_two_one_workers(
    kafka_bootstrap: str, redis_url: str, make_topic: Any, tmp_path: Path,
    redis_prefixes: Callable[[str], str],
) -> None:
    topics = worker_topics(make_topic, PARTITIONS)
    prefix = redis_prefixes("rebal")
    records = labelled_events(N_EVENTS, PARTITIONS)
    expected, learners = reference(records, PARTITIONS)
    config = write_config(tmp_path)
    settings = worker_settings(
        kafka_bootstrap, redis_url, topics, prefix,
        service__guarantee="exactly_once", kafka__transaction_timeout_ms="10000",
    )
    producer = paced_producer(kafka_bootstrap, topics["events"], records, seconds=15.0)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    # a waits out b's shutdown and the rebalance that follows without records: on a loaded
    # machine that took longer than 8 s, and a stopped before it got the partitions back
    a = Worker(config, log_a, **settings, service__worker_id="a", service__idle_timeout_s="25")
    a.wait_for(r"silent replay done|restore from")
    time.sleep(2)
    b = Worker(config, log_b, **settings, service__worker_id="b")
    b.wait_for(r"assigned partitions \[\(")  # 1 -> 2 workers: b owns a partition
    a.wait_for(r"revoked partitions \[\(")
    time.sleep(3)
    assert b.terminate() == 0, b.log()[-3000:]  # 2 -> 1: a takes everything back
    producer.join(60)
    assert a.wait(180) == 0, a.log()[-3000:]
    assert a.log().count("assigned partitions [(") >= 2

    rows = consume_all(kafka_bootstrap, topics["predictions"], N_EVENTS, isolation_level="read_committed")
    check_predictions(rows, expected, exactly_once=True)
    final_models_equal_reference(redis_url, prefix, topics["events"], learners)


def test_a_worker_paused_past_its_session_is_fenced_when_it_wakes(
    kafka_bootstrap: str, redis_url: str, make_topic: Any, tmp_path: Path,
    redis_prefixes: Callable[[str], str],
) -> None:
    """A zombie: a worker stopped (SIGSTOP) until the group gave its partitions away.

    When it wakes, the client reports the partitions lost, and the worker's save of
    the state it holds is refused by the epoch the new owner took in Redis: the
    zombie never overwrites the new owner's checkpoints, and the state stays exact.
    """
    topics = worker_topics(make_topic, PARTITIONS)
    prefix = redis_prefixes("zombie")
    records = labelled_events(N_EVENTS, PARTITIONS)
    expected, learners = reference(records, PARTITIONS)
    config = write_config(tmp_path)
    settings = worker_settings(kafka_bootstrap, redis_url, topics, prefix)
    producer = paced_producer(kafka_bootstrap, topics["events"], records, seconds=25.0)
    # a checkpoints only when it loses its partitions, so it holds unsaved state when stopped
    a = Worker(config, tmp_path / "a.log", **{
        **settings, "checkpoint__every_events": "1000000", "checkpoint__every_seconds": "3600",
    }, service__worker_id="a", service__idle_timeout_s="25")
    a.wait_for(r"assigned partitions \[\(")
    time.sleep(3)
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        b = Worker(config, tmp_path / "b.log", **settings, service__worker_id="b",
                   service__idle_timeout_s="25")
        # a's session (6 s) expires: b gets both partitions and claims their shards
        b.wait_for(r"assigned partitions \[\(.*\), \(.*\)\]", timeout=90)
        b.wait_for(r"(?s)restore from.*restore from", timeout=60)  # both shards: claimed
        time.sleep(1)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    a.wait_for(r"was claimed by epoch \d+; this worker holds epoch \d+", timeout=90)
    producer.join(60)
    assert a.wait(180) == 0, a.log()[-3000:]
    assert b.wait(180) == 0, b.log()[-3000:]

    rows = consume_all(kafka_bootstrap, topics["predictions"], N_EVENTS)
    check_predictions(rows, expected, exactly_once=False)
    final_models_equal_reference(redis_url, prefix, topics["events"], learners)
