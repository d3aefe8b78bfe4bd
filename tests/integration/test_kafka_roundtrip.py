"""Events through the real broker give exactly River's own predict-then-learn results."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from river import datasets, evaluate

from stream_learner.datasets import sample_to_event
from stream_learner.models import ModelSpec
from stream_learner.settings import ModelSettings
from tests.support.kafka import consume_all, produce
from tests.support.service import ROOT, run_service

pytestmark = pytest.mark.kafka

N_EVENTS = 3000
PARTITIONS = 3
SENSORS = 12

CASES = {
    "classification": (
        lambda: datasets.synth.Agrawal(classification_function=2, seed=7),
        ModelSettings(
            name="agrawal-clf",
            task="classification",
            pipeline=(
                {"step": "preprocessing.StandardScaler"},
                {"step": "linear_model.LogisticRegression"},
            ),
        ),
    ),
    "regression": (
        lambda: datasets.synth.Friedman(seed=7),
        ModelSettings(
            name="friedman-reg",
            task="regression",
            pipeline=(
                {"step": "preprocessing.StandardScaler"},
                {"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
            ),
        ),
    ),
}


def _events(make_dataset: Any) -> list[tuple[int, bytes, bytes]]:
    out = []
    for i, (x, y) in enumerate(itertools.islice(make_dataset(), N_EVENTS)):
        sensor = i % SENSORS
        event = sample_to_event(i, f"sensor-{sensor}", x, y)
        out.append((sensor % PARTITIONS, event["key"].encode(), orjson.dumps(event)))
    return out


def _river_reference(spec: ModelSpec, stream: list[dict[str, Any]]) -> tuple[list[dict], float]:
    """River's own loop over one partition's events, and progressive_val_score."""
    model = spec.build()
    out = []
    for ev in stream:
        x, y = ev["features"], ev["label"]
        rec: dict[str, Any] = {"id": ev["id"], "prediction": model.predict_one(x)}
        if spec.task == "classification":
            # JSON object keys are strings: class True is "true", class 1 is "1"
            proba = model.predict_proba_one(x)
            rec["proba"] = orjson.loads(orjson.dumps(proba, option=orjson.OPT_NON_STR_KEYS))
        out.append(rec)
        model.learn_one(x, y)
    pairs = [(ev["features"], ev["label"]) for ev in stream]
    metric = evaluate.progressive_val_score(pairs, spec.build(), spec.build_metric())
    return out, metric.get()


def _config(tmp_path: Path, model: ModelSettings) -> Path:
    steps = "\n".join(
        f"[[model.pipeline]]\nstep = {s['step']!r}\n"
        + (
            f"params = {{ intercept_lr = {s['params']['intercept_lr']} }}\n"
            if "params" in s
            else ""
        )
        for s in model.pipeline
    )
    path = tmp_path / "worker.toml"
    path.write_text(
        f'[service]\ntransport = "kafka"\nbatch_size = 200\n\n'
        f'[model]\nname = "{model.name}"\ntask = "{model.task}"\n\n{steps}'
    )
    return path


@pytest.mark.parametrize("task", sorted(CASES))
def test_predictions_equal_river_loop(
    task: str, kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    make_dataset, model_settings = CASES[task]
    spec = ModelSpec.from_settings(model_settings)
    events_topic = make_topic("events", PARTITIONS)
    predictions_topic = make_topic("predictions", PARTITIONS)
    dlq_topic = make_topic("dlq", 1)
    learn_dlq_topic = make_topic("learn-dlq", 1)
    alerts_topic, metrics_topic = make_topic("alerts", 1), make_topic("metrics", 1)
    events = _events(make_dataset)
    positions = produce(kafka_bootstrap, events_topic, events)

    summary_path = tmp_path / "summary.json"
    run_service(
        ["run", "-c", str(_config(tmp_path, model_settings)), "--summary-json", str(summary_path)],
        kafka__bootstrap_servers=kafka_bootstrap,
        kafka__events_topic=events_topic,
        kafka__predictions_topic=predictions_topic,
        kafka__dead_letter_topic=dlq_topic,
        kafka__learn_dead_letter_topic=learn_dlq_topic,
        kafka__alerts_topic=alerts_topic,
        kafka__metrics_topic=metrics_topic,
        kafka__group_id=f"g-{uuid.uuid4().hex[:8]}",
        service__max_events=str(N_EVENTS),
        service__idle_timeout_s="60",
    )

    rows = consume_all(kafka_bootstrap, predictions_topic, N_EVENTS)
    predictions = {
        (p["source"]["partition"], p["source"]["offset"]): p
        for p in (orjson.loads(r[3]) for r in rows)
    }
    assert len(rows) == N_EVENTS, "exactly one prediction record per event"
    assert len(predictions) == N_EVENTS

    summary = orjson.loads(summary_path.read_bytes())
    assert summary["predictions"] == N_EVENTS and summary["dead_letters"] == 0
    by_partition: dict[int, list[tuple[int, dict]]] = {}
    for (partition, offset), (_p, _k, value) in zip(positions, events, strict=True):
        by_partition.setdefault(partition, []).append((offset, orjson.loads(value)))
    for partition, stream in sorted(by_partition.items()):
        stream.sort(key=lambda pair: pair[0])
        expected, metric = _river_reference(spec, [ev for _o, ev in stream])
        for (offset, ev), exp in zip(stream, expected, strict=True):
            got = predictions[(partition, offset)]
            assert got["id"] == ev["id"] and got["key"] == ev["key"]
            assert got["prediction"] == exp["prediction"], (partition, offset)
            if task == "classification":
                assert got["proba"] == exp["proba"], (partition, offset)
            assert got["source"]["topic"] == events_topic
        assert summary["online_metric"][f"{events_topic}[{partition}]"] == metric
    # prediction records are keyed by the event key, so consumers can co-partition
    assert {r[2] for r in rows} == {f"sensor-{i}".encode() for i in range(SENSORS)}
    assert ROOT.is_dir()
