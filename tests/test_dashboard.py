"""The page's document: sampled from a running service, served at /api/v1/dashboard, and
built from a finished run's files; each checked against its JSON Schema."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import urllib.request
from pathlib import Path

import orjson
import pytest

from stream_learner.dashboard import render_page
from stream_learner.dashboard.history import SAMPLE_INTERVAL_S, bucket_quantile
from stream_learner.dashboard.report import ReportInputs, build_report
from stream_learner.metrics import Metrics, MetricsServer
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import Settings, load_settings
from stream_learner.testing import MemorySink, MemorySource
from tests.support.page import validate_document
from tests.support.service import ROOT, run_service, service_command, service_env


class Clock:
    """Monotonic seconds that move only when told (one tick per read)."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def _flip_events(n: int) -> list[bytes]:
    """y = x > 0.5, turned over half-way: the error monitor must raise a drift."""
    import random

    rng = random.Random(5)
    out = []
    for i in range(n):
        x = rng.random()
        y = (x > 0.5) != (i >= n // 2)
        out.append(orjson.dumps({"id": i, "key": "s", "ts": float(i), "features": {"x": x},
                                 "label": y}))
    return out


def _service(metrics: Metrics) -> tuple[Service, MemorySink]:
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "classification", "name": "flip", "pipeline": [
            {"step": "preprocessing.StandardScaler"}, {"step": "linear_model.LogisticRegression"}]},
        "drift": {"signals": ["error"], "action": "challenger", "cooldown_events": 0,
                  "challenger_labels": 50},
        "service": {"batch_size": 20},
        "metrics": {"lag_interval_s": 0.0},
    })
    events = _flip_events(4000)
    events[100:100] = [b"nope", b"[1]"]
    sink = MemorySink()
    # each clock read moves 2 ms: a sample (>= SAMPLE_INTERVAL_S apart) every few batches
    clock = Clock(0.002)
    service = Service(settings, ModelSpec.from_settings(settings.model),
                      MemorySource({("events", 0): events}), sink, metrics,
                      clock=clock, wall_clock=clock)
    return service, sink


def test_bucket_quantile_interpolates_like_prometheus() -> None:
    bounds = [0.001, 0.01, 0.1, float("inf")]
    assert bucket_quantile(bounds, [50, 100, 100, 100], 0.5) == 0.001
    assert bucket_quantile(bounds, [0, 100, 100, 100], 0.5) == pytest.approx(0.0055)
    assert bucket_quantile(bounds, [0, 0, 0, 10], 0.99) == 0.1  # +Inf: the last finite bound
    assert bucket_quantile(bounds, [0, 0, 0, 0], 0.5) is None


def test_history_of_a_run_follows_the_schema_and_the_counters() -> None:
    metrics = Metrics()
    service, sink = _service(metrics)
    summary = service.run()
    doc = metrics.history.document(123.0)
    validate_document(doc)
    assert doc["source"] == "live" and doc["generated_at"] == 123.0
    series = doc["series"]
    assert len(series) > 3
    gaps = [b["ts"] - a["ts"] for a, b in itertools.pairwise(series)]
    # at most one sample a second (of the one clock: the wall is read a few ticks later)
    assert min(gaps) > SAMPLE_INTERVAL_S - 0.1
    assert metrics.batches._value.get() > 2 * len(series)  # not one per batch
    assert series[0]["records_per_s"] is None and all(p["records_per_s"] for p in series[1:])
    # the last sample saw the end of the stream (sampled after the last batch)
    assert doc["totals"]["records"] <= summary.records
    assert doc["totals"]["dead_letters"] == 2 == summary.dead_letters
    assert {(d["output"], d["reason"]) for d in doc["dead_letters"]} == {
        (d["output"], d["reason"]) for d in doc["dead_letters"] if d["count"] == 1}
    assert sum(d["count"] for d in doc["dead_letters"]) == 2
    alerts = sink.decoded("alerts")
    assert [a["offsets"] for a in doc["alerts"]] == [a["offsets"] for a in alerts]
    assert any(a["severity"] == "drift" and a["signal"] == "error" for a in doc["alerts"])
    model = doc["models"][0]
    assert (model["shard"], model["name"], model["version"]) == ("events:0", "flip", 1)
    assert model["challenger"] == "none" or model["challenger"].startswith(("training", "armed"))
    assert 0.0 < doc["labels"]["coverage"] <= 1.0


def test_history_holds_nothing_before_the_first_sample() -> None:
    doc = Metrics().history.document(1.0)
    validate_document(doc)
    assert doc["series"] == [] and doc["models"] == [] and doc["totals"]["records"] == 0


def test_page_and_document_are_served_on_the_metrics_port() -> None:
    metrics = Metrics()
    service, _sink = _service(metrics)
    service.run()
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/") as response:
            page = response.read().decode("utf-8")
            assert response.headers["Content-Type"].startswith("text/html")
        assert page == render_page() and "<script src" not in page and "<link rel=\"stylesheet" not in page
        with urllib.request.urlopen(base + "/api/v1/dashboard") as response:
            assert response.headers["Content-Type"] == "application/json"
            doc = orjson.loads(response.read())
        validate_document(doc)
        assert doc["totals"] == metrics.history.document(0.0)["totals"]
    finally:
        server.close()


def test_report_of_a_local_run_follows_the_schema(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([*_flip_events(3000), b"nope"]) + b"\n")
    out = {n: tmp_path / f"{n}.jsonl" for n in ("predictions", "alerts", "metrics", "dlq", "ldlq")}
    run_service(
        ["run", "--input", str(events), "--output", str(out["predictions"])],
        model__task="classification", model__name="flip",
        model__pipeline='[{step = "preprocessing.StandardScaler"}, '
        '{step = "linear_model.LogisticRegression"}]',
        drift__signals='["error"]', service__batch_size="50",
        metrics__snapshot_interval_s="0.001", local__alerts=str(out["alerts"]),
        local__metrics=str(out["metrics"]), local__dead_letters=str(out["dlq"]),
        local__learn_dead_letters=str(out["ldlq"]),
    )
    doc = build_report(ReportInputs(str(out["metrics"]), str(out["predictions"]), str(events),
                                    str(out["alerts"]), str(out["dlq"]), str(out["ldlq"])))
    validate_document(doc)
    snapshots = [orjson.loads(line) for line in out["metrics"].read_bytes().splitlines()]
    predictions = [orjson.loads(line) for line in out["predictions"].read_bytes().splitlines()]
    assert len(doc["series"]) == len(snapshots) > 1
    assert doc["totals"]["records"] == snapshots[-1]["totals"]["records"]
    assert doc["totals"]["predictions"] == len(predictions) == 3000
    assert doc["dead_letters"] == [{"output": "dead_letters", "reason": "not_json", "count": 1}]
    assert len(doc["alerts"]) == len(out["alerts"].read_bytes().splitlines()) > 0
    assert doc["labels"]["delay_events"] == {"p50": 0, "p99": 0}  # inline labels
    latencies = sorted(p["latency_ms"] for p in predictions)
    assert max(p["latency_p99_ms"] or 0 for p in doc["series"]) <= latencies[-1]
    assert doc["models"][0]["n_learned"] == snapshots[-1]["partitions"][0]["labels_learned"]


def test_report_command_writes_one_self_contained_file(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(orjson.dumps({
        "schema_version": 1, "worker": "w", "ts": 1.0, "interval_s": 1.0, "records_per_s": 5.0,
        "totals": {"records": 5, "predictions": 5, "labels": 5},
        "partitions": [{"partition": 0, "shard": "e:0", "metric": "MAE", "online_metric": 0.5,
                        "predictions": 5, "labels_learned": 5, "label_coverage": 1.0,
                        "pending_predictions": 0, "lag_records": 0, "lag_seconds": 0.0}]}) + b"\n")
    out = tmp_path / "r.html"
    run_service(["report", "--metrics", str(metrics), "-o", str(out)])
    html = out.read_text()
    assert '"worker":"w"' in html  # the document is embedded
    assert not re.search(r'(src|href)="(?!data:)', html)  # and nothing is loaded from elsewhere
    proc = subprocess.run(
        service_command("report", "--metrics", str(tmp_path / "missing.jsonl"), "-o", str(out)),
        env=service_env(), capture_output=True, text=True, check=False, cwd=ROOT)
    assert proc.returncode == 2 and "cannot read" in proc.stderr  # as run's and replay's input


def test_live_page_settings_default_to_loopback() -> None:
    assert Settings().metrics.host == "127.0.0.1"


def test_dashboard_doc_names_real_metrics_and_every_document_field() -> None:
    text = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    names = {m.name for m in Metrics().registry.collect()}
    for metric in re.findall(r"`(stream_learner_[a-z_]+?)(?:_total)?[{`]", text):
        assert metric in names, metric
    schema = json.loads((ROOT / "stream_learner" / "schemas" / "dashboard.json").read_text())
    for field in schema["required"]:
        assert f'"{field}"' in text, field


def test_report_label_delays_follow_arrival_order_in_both_record_shapes(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b"")
    nested = tmp_path / "nested.jsonl"
    nested.write_bytes(b"\n".join([
        b'{"id": 1, "key": "a", "ts": 10, "features": {"x": 1}}',
        b'{"id": 2, "key": "a", "ts": 11, "features": {"x": 2}}',
        b'{"id": 3, "key": "a", "ts": 12, "features": {"x": 3}, "label": 1}',
        b'{"id": 1, "key": "a", "ts": 15, "label": 0}',
        b'{"id": 2, "key": "a", "ts": 16, "label": 0}',
    ]))
    doc = build_report(ReportInputs(str(metrics), labels=str(nested)))
    # delays in events: 0 (inline), 2 and 1 (events scored after the labelled one)
    assert doc["labels"]["delay_events"] == {"p50": 1, "p99": 2}
    # seconds: from the labelled event's ts to the latest event's (12), as the service counts
    assert doc["labels"]["delay_seconds"] == {"p50": 1.0, "p99": 2.0}
    flat = tmp_path / "flat.jsonl"
    flat.write_bytes(b"\n".join([
        b'{"sensor": "a", "n": 1, "t": 10, "temp": 3.5}',
        b'{"sensor": "a", "n": 2, "t": 11, "temp": 3.6}',
        b'{"sensor": "a", "n": 1, "t": 12, "target": 1}',
    ]))
    schema = load_settings(None, env={}, overrides={"schema": {
        "id": "n", "key": "sensor", "ts": "t", "label": "target", "features": ""}}).schema_
    doc = build_report(ReportInputs(str(metrics), labels=str(flat)), schema)
    assert doc["labels"]["delay_events"] == {"p50": 1, "p99": 1}
    assert doc["labels"]["delay_seconds"] == {"p50": 1.0, "p99": 1.0}


@pytest.mark.parametrize(("trial", "live", "last"), [
    (3000, "reset on trial on error: ", "reset on trial"),
    (200, "none", "none (last: reset kept)"),
    (0, "none", "none (last: reset, final)"),
])
def test_a_reset_on_trial_shows_on_the_live_page_and_the_report(
    tmp_path: Path, trial: int, live: str, last: str,
) -> None:
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "classification", "name": "flip", "pipeline": [
            {"step": "preprocessing.StandardScaler"}, {"step": "linear_model.LogisticRegression"}]},
        "drift": {"signals": ["error"], "action": "reset", "reset_trial_labels": trial},
        "metrics": {"lag_interval_s": 0.0},
    })
    metrics, sink, clock = Metrics(), MemorySink(), Clock(0.002)
    Service(settings, ModelSpec.from_settings(settings.model),
            MemorySource({("events", 0): _flip_events(4000)}), sink, metrics,
            clock=clock, wall_clock=clock).run()
    actions = [a["action"] for a in sink.decoded("alerts") if a["signal"] == "model"]
    if trial > 2000 or not trial:
        assert actions == ["reset"]
    else:
        assert actions[:2] == ["reset", "reset_kept"]
    trials = [a["window"]["n_trial"] for a in sink.decoded("alerts") if a["action"] == "reset"
              and a["severity"] == "info"]
    assert trials == [trial]
    model = metrics.history.document(0.0)["models"][0]
    assert model["challenger"].startswith(live), model
    files = {role: tmp_path / f"{role}.jsonl" for role in ("predictions", "alerts", "metrics")}
    for role, path in files.items():
        path.write_bytes(b"".join(v + b"\n" for v in sink.values(role)))
    doc = build_report(ReportInputs(str(files["metrics"]), str(files["predictions"]),
                                    alerts=str(files["alerts"])))
    validate_document(doc)
    assert doc["models"][0]["challenger"] == last


def test_the_live_page_counts_the_resets_on_trial_of_a_keyed_fleet() -> None:
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "classification", "name": "flip", "scope": "key", "pipeline": [
            {"step": "preprocessing.StandardScaler"}, {"step": "linear_model.LogisticRegression"}]},
        "drift": {"signals": ["error"], "action": "reset", "reset_trial_labels": 5000},
        "metrics": {"lag_interval_s": 0.0},
    })
    events = [orjson.dumps({**orjson.loads(e), "key": f"s{i % 3}"})
              for i, e in enumerate(_flip_events(12000))]
    metrics, sink, clock = Metrics(), MemorySink(), Clock(0.002)
    Service(settings, ModelSpec.from_settings(settings.model),
            MemorySource({("events", 0): events}), sink, metrics,
            clock=clock, wall_clock=clock).run()
    resets = {a["key"] for a in sink.decoded("alerts") if a["action"] == "reset"
              and a["severity"] == "info"}
    assert resets == {"s0", "s1", "s2"}
    assert metrics.history.document(0.0)["models"][0]["challenger"] == "3 resets on trial"


def test_a_large_fleet_is_read_for_the_page_at_most_a_share_of_the_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_learner.dashboard import history as history_module
    from stream_learner.learner import Learner
    from stream_learner.recovery import Shard
    from stream_learner.sources import TopicPartition

    settings = load_settings(None, env={}, overrides={"model": {"scope": "key"}})
    learner = Learner(ModelSpec.from_settings(settings.model))
    for key in ("a", "b", "c"):
        learner.models.get(key)
    shards: dict[TopicPartition, Shard] = {("events", 0): Shard("events:0", learner)}
    ticks = itertools.count()
    # every read of the clock moves it 0.5 s: each read of the models "takes" 0.5 s, and
    # may come back 0.5 / 0.125 = 4 s later (both exact in binary)
    monkeypatch.setattr(history_module.time, "perf_counter", lambda: next(ticks) * 0.5)
    monkeypatch.setattr(history_module, "FLEET_SCAN_SHARE", 0.125)
    history = Metrics().history
    seen = []
    for now in range(10):
        learner.models.get("b").generation = now
        assert history.sample(shards, [], {}, now=float(now), wall=float(now))
        seen.append(history.document(0.0)["models"][0]["generation"])
    assert seen == [0] * 4 + [4] * 4 + [8] * 2
    # the partition is given back, then assigned again: its models are read at once
    assert history.sample({}, [], {}, now=10.0, wall=10.0)
    learner.models.get("b").generation = 11
    assert history.sample(shards, [], {}, now=11.0, wall=11.0)
    assert history.document(0.0)["models"][0]["generation"] == 11
