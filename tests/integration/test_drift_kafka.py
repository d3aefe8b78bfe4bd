"""Drift alerts and challenger promotion through the real broker."""

from __future__ import annotations

import importlib.resources
import json
import random
import uuid
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.support.kafka import consume_all, decode_values, produce
from tests.support.service import run_service

pytestmark = pytest.mark.kafka

N_EVENTS = 4000
FLIP_AT = 2000


def _flipped() -> list[tuple[int, bytes, bytes]]:
    """y = x > 0.5, then the concept turns over at FLIP_AT."""
    rng = random.Random(5)
    out = []
    for i in range(N_EVENTS):
        x = rng.random()
        y = (x > 0.5) != (i >= FLIP_AT)
        event = {"id": i, "key": "s", "ts": float(i), "features": {"x": x}, "label": y}
        out.append((0, b"s", orjson.dumps(event)))
    return out


def _validator(name: str) -> Draft202012Validator:
    text = (importlib.resources.files("stream_learner") / "schemas" / f"{name}.json").read_text()
    return Draft202012Validator(json.loads(text))


def test_challenger_is_promoted_and_serves_the_next_predictions(
    kafka_bootstrap: str, make_topic: Any
) -> None:
    topics = {
        role: make_topic(role, 1)
        for role in ("events", "predictions", "dlq", "learn-dlq", "alerts", "metrics")
    }
    produce(kafka_bootstrap, topics["events"], _flipped())
    run_service(
        ["run"],
        timeout=120,
        service__transport="kafka",
        service__max_events=str(N_EVENTS),
        service__idle_timeout_s="30",
        service__batch_size="200",
        kafka__bootstrap_servers=kafka_bootstrap,
        kafka__group_id=f"g-{uuid.uuid4().hex[:8]}",
        kafka__events_topic=topics["events"],
        kafka__predictions_topic=topics["predictions"],
        kafka__dead_letter_topic=topics["dlq"],
        kafka__learn_dead_letter_topic=topics["learn-dlq"],
        kafka__alerts_topic=topics["alerts"],
        kafka__metrics_topic=topics["metrics"],
        model__task="classification",
        model__name="flip",
        model__pipeline='[{step = "preprocessing.StandardScaler"}, '
        '{step = "linear_model.LogisticRegression"}]',
        drift__signals='["error"]',
        drift__action="challenger",
        drift__cooldown_events="0",
        drift__challenger_labels="200",
    )

    predictions = decode_values(consume_all(kafka_bootstrap, topics["predictions"], N_EVENTS))
    assert len(predictions) == N_EVENTS
    alert_rows = consume_all(kafka_bootstrap, topics["alerts"], 1, timeout_s=20)
    alerts = decode_values(alert_rows)
    validator = _validator("alert")
    for alert in alerts:
        validator.validate(alert)
    assert all(key == b"" for _p, _o, key, _v, _h in alert_rows)  # a partition model

    drifts = [a for a in alerts if a["severity"] == "drift" and a["signal"] == "error"]
    assert drifts and all(a["offsets"]["to"] >= FLIP_AT for a in drifts)
    promotions = [a for a in alerts if a["action"] == "promoted"]
    assert promotions, [(a["severity"], a["action"]) for a in alerts]
    first = promotions[0]
    assert first["severity"] == "info" and first["model"]["generation"] == 1
    assert first["window"]["challenger"] > first["window"]["champion"]

    # Predictions keep coming from the champion: the promoted model from the next event on.
    at = first["offsets"]["to"]
    nxt = promotions[1]["offsets"]["to"] if len(promotions) > 1 else N_EVENTS
    by_offset = {p["source"]["offset"]: p for p in predictions}
    generation = {o: by_offset[o]["model"].get("generation", 0) for o in by_offset}
    assert all(generation[o] == 0 for o in range(at + 1))
    assert all(generation[o] == 1 for o in range(at + 1, nxt + 1) if o < N_EVENTS)
    assert by_offset[at + 1]["model"]["n_learned"] < by_offset[at]["model"]["n_learned"]
