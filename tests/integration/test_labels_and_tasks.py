"""Delayed labels, a labels topic, per-key models, anomaly detection and forecasting,
through the real broker and the real CLI, compared one for one with River's own loops."""

from __future__ import annotations

import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaAdminClient
from river import anomaly, evaluate, linear_model, metrics, preprocessing, time_series

from stream_learner.events import Codec, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.settings import LabelSettings, LimitSettings, ModelSettings, SchemaSettings
from tests.support.kafka import consume_all, produce
from tests.support.service import run_service, service_command, service_env
from tests.support.streams import delayed, early, friedman, seasonal_series, sensor_anomalies

pytestmark = pytest.mark.kafka

REGRESSION = """
[service]
transport = "kafka"
batch_size = 200

[model]
name = "friedman"
task = "regression"

[[model.pipeline]]
step = "preprocessing.StandardScaler"

[[model.pipeline]]
step = "linear_model.LinearRegression"
params = { intercept_lr = 0.1 }
"""

ANOMALY = """
[service]
transport = "kafka"
batch_size = 200

[model]
name = "pumps"
task = "anomaly"
anomaly_quantile = 0.95

[[model.pipeline]]
step = "preprocessing.MinMaxScaler"

[[model.pipeline]]
step = "anomaly.HalfSpaceTrees"
params = { n_trees = 5, height = 6, window_size = 50 }
"""

FORECASTING = """
[service]
transport = "kafka"
batch_size = 200

[model]
name = "series"
task = "forecasting"
horizon = 3
max_resident = 2

[[model.pipeline]]
step = "time_series.HoltWinters"
params = { alpha = 0.3, beta = 0.1, gamma = 0.5, seasonality = 12 }
"""


def river_regressor() -> Any:
    return preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)


def holt_winters() -> Any:
    return time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.5, seasonality=12)


class Topics:
    """Unique events / predictions / both dead-letter topics and the settings naming them."""

    def __init__(self, make_topic: Any, bootstrap: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.events = make_topic("events", partitions)
        self.predictions = make_topic("predictions", partitions)
        self.dlq = make_topic("dlq", 1)
        # the worker requires its output topics at start
        self.learn_dlq = make_topic("learn-dlq", 1)
        self.alerts = make_topic("alerts", 1)
        self.metrics = make_topic("metrics", 1)
        self.group = f"g-{uuid.uuid4().hex[:8]}"

    def overrides(self, **extra: str) -> dict[str, str]:
        return {
            "kafka__bootstrap_servers": self.bootstrap,
            "kafka__events_topic": self.events,
            "kafka__predictions_topic": self.predictions,
            "kafka__dead_letter_topic": self.dlq,
            "kafka__learn_dead_letter_topic": self.learn_dlq,
            "kafka__alerts_topic": self.alerts,
            "kafka__metrics_topic": self.metrics,
            "kafka__group_id": self.group,
            **extra,
        }

    def produce(self, per_partition: dict[int, Iterable[dict[str, Any]]], topic: str = "") -> int:
        rows = [
            (p, str(r["key"]).encode(), orjson.dumps(r))
            for p, records in per_partition.items()
            for r in records
        ]
        produce(self.bootstrap, topic or self.events, rows)
        return len(rows)

    def predictions_by_partition(self, expected: int) -> dict[int, list[dict[str, Any]]]:
        rows = consume_all(self.bootstrap, self.predictions, expected)
        assert len(rows) == expected, "exactly one prediction record per event"
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for p in (orjson.loads(r[3]) for r in rows):
            out[p["source"]["partition"]].append(p)
        for preds in out.values():
            preds.sort(key=lambda p: p["source"]["offset"])
        return out


def run(tmp_path: Path, config: str, topics: Topics, n_records: int, **extra: str) -> dict:
    """Run the CLI until it has read ``n_records``; return its summary."""
    path = tmp_path / "worker.toml"
    path.write_text(config)
    summary = tmp_path / "summary.json"
    proc = run_service(
        ["run", "-c", str(path), "--summary-json", str(summary)],
        **topics.overrides(
            service__max_events=str(n_records), service__idle_timeout_s="60", **extra
        ),
    )
    result: dict = orjson.loads(summary.read_bytes())
    # fewer means the worker stopped on its idle timeout: say so, with its log
    assert result["records"] == n_records, (
        f"the worker read {result['records']} of {n_records} records:\n{proc.stderr[-4000:]}"
    )
    return result


def in_process(settings: ModelSettings, labels: LabelSettings, records: list[dict]) -> Learner:
    """The pure core on the same records, for what River has no loop for (expiry)."""
    learner = Learner(ModelSpec.from_settings(settings), labels)
    codec = Codec(SchemaSettings(), LimitSettings(), settings.task)
    for offset, record in enumerate(records):
        learner.process(codec.decode(orjson.dumps(record), None, 0, Origin("e", 0, offset)))
    return learner


# -- (a) label records on the events topic ---------------------------------------------


def test_delayed_early_and_expired_labels_on_the_events_topic(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = Topics(make_topic, kafka_bootstrap, 3)
    streams = {p: friedman(500, keys=4, seed=p) for p in range(3)}
    records = {
        0: list(delayed(streams[0], 7)),  # late by 7 events: River's delay=7
        1: list(early(streams[1], 5)),  # every label 5 events before its event
        2: list(delayed(streams[2], 40)),  # too late for pending_max_age_events = 30
    }
    n = topics.produce(records)
    summary = run(
        tmp_path, REGRESSION, topics, n,
        labels__pending_max_age_events="30", labels__early_max_age_events="20",
    )
    got = topics.predictions_by_partition(1500)

    spec = ModelSpec.from_settings(ModelSettings(
        task="regression",
        pipeline=(
            {"step": "preprocessing.StandardScaler"},
            {"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
        ),
    ))
    for partition, delay in ((0, 7), (1, None)):
        dataset = [(e["features"], e["label"]) for e in streams[partition]]
        steps = list(evaluate.iter_progressive_val_score(
            dataset, river_regressor(), metrics.MAE(), delay=delay, yield_predictions=True
        ))
        assert [p["prediction"] for p in got[partition]] == [s["Prediction"] for s in steps]
        assert [p["id"] for p in got[partition]] == [e["id"] for e in streams[partition]]
        expected_metric = evaluate.progressive_val_score(
            dataset, river_regressor(), metrics.MAE(), delay=delay
        ).get()
        assert summary["online_metric"][f"{topics.events}[{partition}]"] == expected_metric

    limits = LabelSettings(pending_max_age_events=30, early_max_age_events=20)
    reference = in_process(spec.settings, limits, records[2])
    stats = reference.book.stats
    assert stats.expired_pending == 500 - 31  # only the last 31 wait at most 30 events
    assert stats.late == 31
    assert stats.expired_early == 440  # labels of expired predictions, waiting in vain
    # and those still waiting when the worker stops: no checkpoint store keeps them
    waiting = len(reference.book.early)
    assert waiting == 29
    assert summary["online_metric"][f"{topics.events}[2]"] == reference.metric_value
    lab = summary["labelling"]
    assert lab["predictions"] == 1500 and lab["inline"] == 0
    assert lab["late"] == 500 + stats.late and lab["early"] == 500
    assert lab["expired_pending"] == stats.expired_pending
    assert lab["expired_early"] == stats.expired_early + waiting
    assert lab["waiting_labels"] == 0
    assert lab["coverage"] == (1000 + stats.late) / 1500
    assert summary["labels"] == 1000 + stats.late and summary["dead_letters"] == 0
    # labels whose event was never seen (here: whose prediction expired) went to the learn
    # dead letters when they expired or the worker stopped, re-encoded, with headers
    # pointing at the label record
    expired = stats.expired_early + waiting
    assert summary["labels_expired"] == summary["learn_dead_letters"] == expired
    rows = consume_all(kafka_bootstrap, topics.learn_dlq, expired)
    assert len(rows) == expired
    labels_at = {offset: r for offset, r in enumerate(records[2]) if "features" not in r}
    for _p, _o, key, value, headers in rows:
        h = {k.removeprefix("__stream_learner.errors."): v.decode() for k, v in headers}
        assert (h["topic"], h["partition"], h["reason"]) == (topics.events, "2", "unknown_id")
        label = labels_at[int(h["offset"])]
        body = orjson.loads(value)
        assert {k: body[k] for k in ("id", "key", "label")} == label
        assert key == label["key"].encode()


# -- (b) a co-partitioned labels topic -------------------------------------------------


def _wait_committed(
    topics: Topics, topic: str, ends: dict[int, int], timeout_s: float = 60
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap, client_id="tests-offsets")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            offsets = admin.list_group_offsets(topics.group).get(topics.group, {})
            done = {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}
            if all(done.get(p, -1) >= end for p, end in ends.items()):
                return
            time.sleep(0.1)
    finally:
        admin.close()
    pytest.fail(f"the service did not commit {topic} up to {ends} within {timeout_s}s")


def test_labels_topic_joins_labels_to_the_shard_of_their_events(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    """Labels of each chunk are produced once its events are committed, so the order
    is known: a chunk's events, then its labels (River: revealed at the chunk's end)."""
    topics = Topics(make_topic, kafka_bootstrap, 2)
    labels_topic = make_topic("labels", 2)
    streams = {p: friedman(450, keys=3, seed=10 + p) for p in range(2)}
    chunks = [(0, 150), (150, 300), (300, 450)]
    path = tmp_path / "worker.toml"
    path.write_text(REGRESSION)
    summary_path = tmp_path / "summary.json"
    env = service_env(**topics.overrides(kafka__labels_topic=labels_topic))
    cmd = service_command("run", "-c", str(path), "--summary-json", str(summary_path))
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for start, end in chunks:
            topics.produce({p: [
                {k: v for k, v in e.items() if k != "label"} for e in s[start:end]
            ] for p, s in streams.items()})
            _wait_committed(topics, topics.events, {0: end, 1: end})
            topics.produce({p: [
                {"id": e["id"], "key": e["key"], "label": e["label"]} for e in s[start:end]
            ] for p, s in streams.items()}, topic=labels_topic)
            _wait_committed(topics, labels_topic, {0: end, 1: end})
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    summary = orjson.loads(summary_path.read_bytes())
    got = topics.predictions_by_partition(900)
    for partition, stream in streams.items():
        dataset = [(e["features"], e["label"]) for e in stream]
        # River's delay callable sees (x, y): find the event's position from x itself
        index = {id(x): i for i, (x, _y) in enumerate(dataset)}

        def reveal_at_chunk_end(x: dict, _y: float, index: dict = index) -> int:
            i = index[id(x)]
            return next(end for _s, end in chunks if i < end) - i

        steps = list(evaluate.iter_progressive_val_score(
            dataset, river_regressor(), metrics.MAE(), delay=reveal_at_chunk_end,
            yield_predictions=True,
        ))
        # answers come out in event order within a chunk, so this is event order
        assert [p["prediction"] for p in got[partition]] == [s["Prediction"] for s in steps]
        assert [p["source"]["topic"] for p in got[partition]] == [topics.events] * 450
        final = steps[-1]["MAE"].get()
        assert summary["online_metric"][f"{topics.events}[{partition}]"] == final
    lab = summary["labelling"]
    assert (lab["late"], lab["coverage"], lab["expired_pending"], lab["expired_early"]) == (
        900, 1.0, 0, 0
    )
    assert lab["mean_delay_events"] > 0


def test_labels_topic_with_another_partition_count_is_refused(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = Topics(make_topic, kafka_bootstrap, 3)
    labels_topic = make_topic("labels", 2)
    path = tmp_path / "worker.toml"
    path.write_text(REGRESSION)
    proc = subprocess.run(
        service_command("run", "-c", str(path)),
        env=service_env(**topics.overrides(kafka__labels_topic=labels_topic)),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2  # a configuration error (docs/security.md: exit 2)
    assert (
        f"kafka.labels_topic '{labels_topic}' has 2 partitions but "
        f"kafka.events_topic '{topics.events}' has 3"
    ) in proc.stderr
    assert "co-partitioned" in proc.stderr


# -- (c) one model per key -------------------------------------------------------------


def test_each_key_predicts_like_a_river_model_of_its_own_events(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = Topics(make_topic, kafka_bootstrap, 3)
    events = friedman(1800, keys=24, seed=3)
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for e in events:
        by_partition[int(e["key"].split("-")[1]) % 3].append(e)
    topics.produce(by_partition)
    config = REGRESSION.replace(
        'task = "regression"', 'task = "regression"\nscope = "key"\nmax_resident = 3'
    )
    summary = run(tmp_path, config, topics, 1800)
    got = topics.predictions_by_partition(1800)

    models: dict[str, Any] = defaultdict(river_regressor)
    learned: dict[str, int] = defaultdict(int)
    for partition, stream in by_partition.items():
        for event, pred in zip(stream, got[partition], strict=True):
            model = models[event["key"]]
            assert pred["id"] == event["id"] and pred["key"] == event["key"]
            assert pred["prediction"] == model.predict_one(event["features"])
            assert pred["model"]["n_learned"] == learned[event["key"]]
            model.learn_one(event["features"], event["label"])
            learned[event["key"]] += 1
    assert summary["models"]["resident"] == 9  # 3 per partition
    assert summary["models"]["parked"] == 24 - 9
    assert summary["models"]["parked_bytes"] > 0


# -- (d) anomaly detection and forecasting ----------------------------------------------


def test_anomaly_scores_equal_rivers_loop(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = Topics(make_topic, kafka_bootstrap, 1)
    events = sensor_anomalies(1000)
    topics.produce({0: events})
    summary = run(tmp_path, ANOMALY, topics, 1000)
    got = topics.predictions_by_partition(1000)[0]
    model = anomaly.QuantileFilter(
        preprocessing.MinMaxScaler()
        | anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=42),
        q=0.95,
    )
    metric = metrics.ROCAUC()
    for event, pred in zip(events, got, strict=True):
        score = model.score_one(event["features"])
        is_anomaly = model.classify(score)
        assert (pred["score"], pred["is_anomaly"], pred["prediction"]) == (
            score, is_anomaly, is_anomaly
        )
        metric.update(event["label"], score)
        model.learn_one(event["features"])
    assert summary["online_metric"][f"{topics.events}[0]"] == metric.get()
    assert summary["metric"] == "ROCAUC"


def test_forecasts_equal_rivers_loop_per_series(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path
) -> None:
    topics = Topics(make_topic, kafka_bootstrap, 2)
    events = seasonal_series(1200, keys=6)
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for e in events:
        by_partition[int(e["key"].split("-")[1]) % 2].append(e)
    topics.produce(by_partition)
    summary = run(tmp_path, FORECASTING, topics, 1200)
    got = topics.predictions_by_partition(1200)
    for partition, stream in by_partition.items():
        models: dict[str, Any] = defaultdict(holt_winters)
        metric = metrics.MAE()
        for event, pred in zip(stream, got[partition], strict=True):
            model = models[event["key"]]
            try:
                forecast = model.forecast(horizon=3)
            except IndexError:  # not a full season yet
                forecast = None
            assert pred["forecast"] == forecast and pred["key"] == event["key"]
            if forecast:
                metric.update(event["label"], forecast[0])
            model.learn_one(event["label"])
        assert summary["online_metric"][f"{topics.events}[{partition}]"] == metric.get()
    assert summary["models"]["resident"] == 4 and summary["models"]["parked"] == 2
