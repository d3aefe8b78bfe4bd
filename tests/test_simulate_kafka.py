"""simulate --to kafka on the real broker: a restarted simulator does not publish ids again.

The compose stack's simulator restarts (``restart: unless-stopped``) with the same
command; without ``--resume`` it would start again at id 0, and the topic would
hold every id twice, against the event contract (ids unique per key).
"""

from __future__ import annotations

import collections
from typing import Any

import orjson
import pytest

from tests.support.kafka import consume_all, produce
from tests.support.service import run_service

pytestmark = pytest.mark.kafka


def _simulate(bootstrap: str, topic: str, *args: str) -> str:
    proc = run_service(
        ["simulate", "--to", "kafka", "--keys", "6", "--label-delay", "5", *args],
        timeout=120, kafka__bootstrap_servers=bootstrap, kafka__events_topic=topic,
    )
    return proc.stderr


def _records(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    return [orjson.loads(row[3]) for row in consume_all(bootstrap, topic, expected, 60)]


def test_a_restarted_simulator_resumes_after_the_topic_s_last_event(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    topic = make_topic("sim-events", 3)
    first = _simulate(kafka_bootstrap, topic, "--count", "120", "--resume")
    assert "nothing to resume in topic" in first
    again = _simulate(kafka_bootstrap, topic, "--count", "80", "--resume")
    assert f"resuming after event id 119 in topic '{topic}'" in again
    records = _records(kafka_bootstrap, topic, 400)
    events = [r["id"] for r in records if "features" in r]
    labels = [r["id"] for r in records if "features" not in r]
    assert sorted(events) == list(range(200))  # every id once
    assert sorted(labels) == list(range(200))  # and one label each
    # a sensor's records share a partition, in id order
    by_key: dict[str, list[int]] = collections.defaultdict(list)
    for r in records:
        if "features" in r:
            by_key[r["key"]].append(r["id"])
    assert all(ids == sorted(ids) for ids in by_key.values())


def test_without_resume_a_restart_publishes_the_same_ids_again(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    """What --resume is for: the same command twice repeats the stream, ids included."""
    topic = make_topic("sim-events", 1)
    _simulate(kafka_bootstrap, topic, "--count", "30")
    _simulate(kafka_bootstrap, topic, "--count", "30")
    events = [r["id"] for r in _records(kafka_bootstrap, topic, 120) if "features" in r]
    assert sorted(events) == sorted(list(range(30)) * 2)


def test_resume_finds_the_last_event_behind_a_long_run_of_labels(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    """The end of the topic holds only labels when the delay exceeds what is read first."""
    topic = make_topic("sim-events", 1)
    _simulate(kafka_bootstrap, topic, "--count", "300", "--keys", "1",
              "--label-delay", "290")
    again = _simulate(kafka_bootstrap, topic, "--count", "10", "--resume")
    assert "resuming after event id 299" in again


def test_resume_passes_over_records_that_are_not_simulated_events(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    """Another producer's record, one that is not JSON and a tombstone end the topic."""
    topic = make_topic("sim-events", 1)
    _simulate(kafka_bootstrap, topic, "--count", "40")
    produce(kafka_bootstrap, topic, [
        (0, b"other", b'{"id": 10000, "key": "other", "ts": 0, "label": 1}'),
        (0, b"other", b"not json"),
        (0, b"other", None),  # type: ignore[list-item]
    ])
    again = _simulate(kafka_bootstrap, topic, "--count", "5", "--resume")
    assert "resuming after event id 39" in again
