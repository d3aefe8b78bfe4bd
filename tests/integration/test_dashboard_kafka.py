"""The operator's page of a worker on the real broker, in a real headless browser.

Two partitions of events whose concept turns over half-way, and a few
unusable records; the worker consumes them and stays up. The page must show
what the worker exports (per partition: lag, online metric, label coverage),
and the drift timeline the alerts raised during the run. Same checks as
tests/test_dashboard_browser.py, which also says when it skips.
"""

from __future__ import annotations

import random
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.kafka import produce
from tests.support.page import (
    Worker,
    check_against_metrics,
    check_page,
    open_live,
    scrape,
    validate_document,
)

pytestmark = pytest.mark.kafka

N_PER_PARTITION = 3000


def _events() -> list[tuple[int, bytes, bytes]]:
    """Per partition: y = x > 0.5, turned over half-way; two unusable records on partition 1."""
    rng = random.Random(3)
    out: list[tuple[int, bytes, bytes]] = []
    for i in range(N_PER_PARTITION):
        for partition in (0, 1):
            x = rng.random()
            y = (x > 0.5) != (i >= N_PER_PARTITION // 2)
            key = f"s{partition}"
            event = {"id": f"{partition}-{i}", "key": key, "ts": 1_767_225_600.0 + i,
                     "features": {"x": x}, "label": y}
            out.append((partition, key.encode(), orjson.dumps(event)))
    out += [(1, b"s1", b"not json"), (1, b"s1", b"[1]")]
    return out


def test_live_page_of_a_kafka_worker(
    kafka_bootstrap: str, make_topic: Any, browser: Any, tmp_path: Path
) -> None:
    topics = {role: make_topic(role, 2 if role == "events" else 1)
              for role in ("events", "predictions", "dlq", "learn-dlq", "alerts", "metrics")}
    events = _events()
    produce(kafka_bootstrap, topics["events"], events)
    worker = Worker(
        [], tmp_path / "worker.log",
        service__transport="kafka", service__batch_size="200",
        kafka__bootstrap_servers=kafka_bootstrap, kafka__group_id=f"g-{uuid.uuid4().hex[:8]}",
        kafka__events_topic=topics["events"], kafka__predictions_topic=topics["predictions"],
        kafka__dead_letter_topic=topics["dlq"], kafka__learn_dead_letter_topic=topics["learn-dlq"],
        kafka__alerts_topic=topics["alerts"], kafka__metrics_topic=topics["metrics"],
        model__task="classification", model__name="flip",
        model__pipeline='[{step = "preprocessing.StandardScaler"}, '
        '{step = "linear_model.LogisticRegression"}]',
        drift__signals='["error"]', drift__action="challenger",
        drift__challenger_labels="50",
    )
    try:
        doc = worker.settle(len(events))
        validate_document(doc)
        assert sorted(p["partition"] for p in doc["partitions"]) == [0, 1]
        assert any(a["severity"] == "drift" and a["signal"] == "error" for a in doc["alerts"])
        check_against_metrics(doc, scrape(worker.base + "/metrics"))
        dom, shown = open_live(browser, worker.base)
        validate_document(shown)
        check_page(dom, shown)
        assert {d["reason"] for d in shown["dead_letters"]} == {"not_json", "not_object"}
    finally:
        worker.stop(grace_s=0)
    assert worker.proc.returncode == 0, (tmp_path / "worker.log").read_text()[-3000:]
