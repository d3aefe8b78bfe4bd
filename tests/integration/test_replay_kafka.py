"""Replay on the real broker and Redis: the same predictions as the live service, and warm starts."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.models import ModelSpec
from stream_learner.stores import RedisStore
from tests.support.kafka import consume_all, produce
from tests.support.service import run_service
from tests.support.workers import (
    CHECKPOINT_KEY,
    MODEL,
    labelled_events,
    probe_set,
    reference,
    write_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

PARTITIONS = 2


def _topics(make_topic: Any) -> dict[str, str]:
    return {
        "events": make_topic("events", PARTITIONS),
        "predictions": make_topic("predictions", PARTITIONS),
        "dlq": make_topic("dlq", 1),
        "learn_dlq": make_topic("learn-dlq", 1),
        "alerts": make_topic("alerts", 1),
        "metrics": make_topic("metrics", 1),
    }


def _settings(bootstrap: str, topics: dict[str, str], group: str, **extra: str) -> dict[str, str]:
    return {
        "kafka__bootstrap_servers": bootstrap,
        "kafka__events_topic": topics["events"],
        "kafka__predictions_topic": topics["predictions"],
        "kafka__dead_letter_topic": topics["dlq"],
        "kafka__learn_dead_letter_topic": topics["learn_dlq"],
        "kafka__alerts_topic": topics["alerts"],
        "kafka__metrics_topic": topics["metrics"],
        "kafka__group_id": group,
        "service__idle_timeout_s": "3",
        "checkpoint_key": CHECKPOINT_KEY,
        **extra,
    }


def _by_source(values: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
    return {
        (r["source"]["partition"], r["source"]["offset"]): {
            k: v for k, v in r.items() if k not in ("latency_ms", "source")
        }
        for r in values
    }


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_file_and_topic_replay_equal_the_live_service(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = _topics(make_topic)
    records = labelled_events(1200, PARTITIONS)
    produce(kafka_bootstrap, topics["events"], records)
    config = write_config(tmp_path)
    settings = _settings(kafka_bootstrap, topics, f"live-{uuid.uuid4().hex[:8]}")
    run_service(["run", "-c", str(config)], **settings)
    rows = consume_all(kafka_bootstrap, topics["predictions"], len(records))
    live = _by_source([orjson.loads(r[3]) for r in rows])
    assert len(live) == len(records)

    out = tmp_path / "topic-replay.jsonl"
    run_service(["replay", "-c", str(config), "--output", str(out)],
                **settings, service__transport="local")
    assert _by_source(_lines(out)) == live

    history = tmp_path / "partition-1.jsonl"
    history.write_bytes(b"\n".join(v for p, _k, v in records if p == 1) + b"\n")
    out = tmp_path / "file-replay.jsonl"
    run_service(["replay", "-c", str(config), str(history), "--output", str(out)],
                **settings, service__transport="local")
    from_file = {(1, offset): p for (_p, offset), p in _by_source(_lines(out)).items()}
    assert from_file == {k: v for k, v in live.items() if k[0] == 1}


def test_topic_range_by_offsets_and_times(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = _topics(make_topic)
    produce(kafka_bootstrap, topics["events"], labelled_events(300, PARTITIONS))
    config = write_config(tmp_path)
    settings = _settings(kafka_bootstrap, topics, f"range-{uuid.uuid4().hex[:8]}")
    out = tmp_path / "range.jsonl"
    run_service(["replay", "-c", str(config), "--start", "0:10,1:20", "--end", "0:60",
                 "--output", str(out)], **settings)
    got = sorted((r["source"]["partition"], r["source"]["offset"]) for r in _lines(out))
    assert got == [(0, o) for o in range(10, 60)] + [(1, o) for o in range(20, 150)]
    out = tmp_path / "times.jsonl"
    run_service(["replay", "-c", str(config), "--start", "@0", "--end", "@4102444800",
                 "--output", str(out)], **settings)
    assert len(_lines(out)) == 300


def test_replay_checkpoint_warm_starts_a_live_worker_exactly(
    kafka_bootstrap: str, redis_url: str, make_topic: Any, tmp_path: Path,
    redis_prefixes: Callable[[str], str],
) -> None:
    topics = _topics(make_topic)
    group = redis_prefixes("warm")
    records = labelled_events(2000, PARTITIONS)
    history, live_part = records[:1200], records[1200:]
    expected, learners = reference(records, PARTITIONS)
    produce(kafka_bootstrap, topics["events"], history)
    config = write_config(tmp_path)
    settings = _settings(
        kafka_bootstrap, topics, group,
        checkpoint__store="redis", checkpoint__redis_url=redis_url, checkpoint__key_prefix=group,
    )
    proc = run_service(["replay", "-c", str(config), "--quiet", "--checkpoint-to", "redis"],
                       **settings)
    assert "warm start:" in proc.stderr
    produce(kafka_bootstrap, topics["events"], live_part)
    run_service(["run", "-c", str(config)], **settings)

    n_history = {p: sum(1 for q, _k, _v in history if q == p) for p in range(PARTITIONS)}
    rows = consume_all(kafka_bootstrap, topics["predictions"], len(live_part))
    got = _by_source([orjson.loads(r[3]) for r in rows])
    assert sorted(got) == sorted(k for k in expected if k[1] >= n_history[k[0]])
    for where, record in got.items():
        assert {"prediction": record["prediction"], "proba": record["proba"]} == expected[where]

    store = RedisStore(redis_url, group)
    codec = EnvelopeCodec(CHECKPOINT_KEY.encode(), ModelSpec.from_settings(MODEL).config_hash)
    try:
        for partition, learner in learners.items():
            latest = store.latest(f"{topics['events']}:{partition}")
            assert latest is not None
            snap = codec.open(latest[1])
            assert snap.offsets == {(topics["events"], partition): learner.n_predicted}
            assert snap.state.n_learned == learner.n_learned
            for x in probe_set():
                assert snap.state.model.predict_proba_one(x) == learner.model.predict_proba_one(x)
    finally:
        store.close()
