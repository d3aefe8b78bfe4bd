"""A worker stopped by an error mid-batch: the error itself is what the log and the exit
line show, and the offsets of the outputs already written are committed, on both clients.

The model of these runs breaks for good at one event (``tests/support/failing_model.py``): an
error that is not about one record's content, so it stops the worker wherever it is.
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient

from tests.support.failing_model import MESSAGE
from tests.support.kafka import consume_all, produce
from tests.support.service import service_command, service_env

pytestmark = pytest.mark.kafka

#: The model breaks at this event (its offset: one partition, sent in order).
BREAKS_AT = 120
#: Events after it (in the same poll batches as the one that breaks it).
AFTER = 80


def _events() -> list[tuple[int, bytes, bytes]]:
    return [
        (0, b"k", orjson.dumps({"id": i, "key": "k", "features": {"x": float(i)}, "label": 1.0}))
        for i in range(BREAKS_AT + AFTER)
    ]


def _committed(bootstrap: str, group: str, topic: str) -> int | None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tests-offsets")
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    found = [om.offset for tp, om in offsets.items() if tp.topic == topic]
    return found[0] if found else None


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_the_error_that_stopped_the_worker_is_the_one_reported(
    guarantee: str, kafka_bootstrap: str, make_topic: Any
) -> None:
    topics = {role: make_topic(role) for role in ("events", "predictions", "dlq", "learn",
                                                   "alerts", "metrics")}
    group = f"fail-{uuid.uuid4().hex[:8]}"
    produce(kafka_bootstrap, topics["events"], _events())
    env = service_env(
        service__transport="kafka", service__guarantee=guarantee, service__batch_size="50",
        service__idle_timeout_s="20", kafka__commit_interval_ms="0",
        model__factory="tests.support.failing_model:model", model__task="regression",
        kafka__bootstrap_servers=kafka_bootstrap, kafka__group_id=group,
        kafka__events_topic=topics["events"], kafka__predictions_topic=topics["predictions"],
        kafka__dead_letter_topic=topics["dlq"], kafka__learn_dead_letter_topic=topics["learn"],
        kafka__alerts_topic=topics["alerts"], kafka__metrics_topic=topics["metrics"],
    )
    env["FAILING_MODEL_FROM_X"] = str(BREAKS_AT)
    proc = subprocess.run(
        service_command("run"), env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )
    log = proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "rebalance callback" not in log, log[-3000:]
    assert "Cannot block" not in log, log[-3000:]
    assert MESSAGE in log.strip().splitlines()[-1], log[-3000:]

    committed = _committed(kafka_bootstrap, group, topics["events"])
    assert committed is not None, log[-3000:]
    if guarantee == "at_least_once":
        # What was written before the error is committed: a restart resumes after it.
        assert committed >= BREAKS_AT, (committed, log[-3000:])
        rows = consume_all(kafka_bootstrap, topics["predictions"], committed, timeout_s=30)
        offsets = [orjson.loads(r[3])["source"]["offset"] for r in rows]
        assert set(range(BREAKS_AT)) <= set(offsets)
    else:
        # Transactions committed per batch until the error; the open one was aborted, so
        # what a read_committed consumer sees is exactly what the committed offset covers.
        assert 0 < committed <= BREAKS_AT, (committed, log[-3000:])
        rows = consume_all(kafka_bootstrap, topics["predictions"], committed, timeout_s=30,
                           isolation_level="read_committed")
        offsets = [orjson.loads(r[3])["source"]["offset"] for r in rows]
        assert sorted(offsets) == list(range(committed)), (committed, log[-3000:])
