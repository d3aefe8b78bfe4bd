"""Drift monitors, the alert lifecycle and drift actions (pure core, in-memory twins)."""

from __future__ import annotations

import importlib.resources
import itertools
import json
import pickle
import random
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream_learner.drift import Monitor, Rules, SchemaMonitor, Stamp, make_detector, warning_twin
from stream_learner.errors import SettingsError
from stream_learner.events import Event, Origin
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import MODEL_ACTIONS, DriftSettings, Settings, load_settings
from stream_learner.testing import MemorySink, MemorySource
from tests.support.drift_streams import CLASSIFIER, STREAMS, reference_detections
from tests.support.memory import TickingClock


def at(i: int) -> Stamp:
    return float(i), "events", 0, i


def shifted(n: int = 500, m: int = 300, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(0, 1) for _ in range(n)] + [rng.gauss(1.5, 1) for _ in range(m)]


def adwin_monitor() -> Monitor:
    return Monitor("feature", "feature:x", make_detector("adwin", {}), warning_twin("adwin", {}))


def run_monitor(monitor: Monitor, values: list[float], rules: Rules) -> list[tuple[int, str, bool]]:
    out = []
    for i, v in enumerate(values):
        change = monitor.update(v, at(i), rules)
        if change is not None:
            out.append((i, change.severity, change.emit))
    return out


# -- lifecycle -------------------------------------------------------------------------


def test_lifecycle_goes_warning_drift_resolved() -> None:
    changes = run_monitor(adwin_monitor(), shifted(), Rules(cooldown=0, resolve_after=100))
    assert [c[1] for c in changes] == ["warning", "drift", "resolved"]
    assert all(emit for _, _, emit in changes)
    warning, drift, resolved = (c[0] for c in changes)
    assert warning <= drift and resolved - drift == 100


def test_drift_alerts_fall_on_every_detection_without_cooldown() -> None:
    values = shifted() + [-1.0] * 400 + [2.0] * 400
    detector = make_detector("adwin", {})
    detections = []
    for i, v in enumerate(values):
        detector.update(v)
        if detector.drift_detected:
            detections.append(i)
    changes = run_monitor(adwin_monitor(), values, Rules(0, 1000))
    assert [i for i, severity, _ in changes if severity == "drift"] == detections
    assert len(detections) >= 3


def test_inline_adwin_updates_are_river_s_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Monitors update ADWIN without its method frames; the changes and windows are River's."""
    from stream_learner.drift import monitors

    assert monitors._INLINE_ADWIN  # the installed River passes the import-time check
    values = shifted() + [-1.0] * 400 + [2.0] * 400
    error = [float(v > 1.0) for v in values]  # a 0/1 series with rises and falls
    inline = [adwin_monitor(), error_monitor()]
    runs = [run_monitor(inline[0], values, Rules(0, 100)), run_monitor(inline[1], error, Rules(0, 100))]
    monkeypatch.setattr(monitors, "_INLINE_ADWIN", False)  # River's update and property
    own = [adwin_monitor(), error_monitor()]
    assert runs == [run_monitor(own[0], values, Rules(0, 100)),
                    run_monitor(own[1], error, Rules(0, 100))]
    assert sum(len(run) for run in runs) >= 6
    for a, b in zip(inline, own, strict=True):
        for x, y in ((a.detector, b.detector), (a.warner, b.warner)):
            assert (x.width, x.total, x.variance, x.n_detections) == (
                y.width, y.total, y.variance, y.n_detections)


def test_cooldown_silences_alerts_but_not_detections() -> None:
    values = shifted() + [-1.0] * 400 + [2.0] * 400
    loud = run_monitor(adwin_monitor(), values, Rules(0, 10_000))
    quiet = run_monitor(adwin_monitor(), values, Rules(10_000, 10_000))
    assert [c[:2] for c in loud] == [c[:2] for c in quiet]  # same detections
    emitted = [severity for _, severity, emit in quiet if emit]
    assert emitted.count("drift") == 1  # everything after the first drift alert cools down


def test_ddm_has_its_own_warning_zone() -> None:
    rng = random.Random(3)
    errors = [float(rng.random() < 0.1) for _ in range(1000)] + [
        float(rng.random() < 0.5) for _ in range(500)
    ]
    monitor = Monitor("error", "error", make_detector("ddm", {}), warning_twin("ddm", {}))
    assert monitor.warner is None
    severities = [c[1] for c in run_monitor(monitor, errors, Rules(0, 200))]
    first_drift = severities.index("drift")
    assert severities[first_drift - 1] == "warning"


def test_unknown_detector_parameters_are_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="KSWIN does not take"):
        make_detector("kswin", {"alpha_": 0.1})
    for binary in ("ddm", "eddm", "hddm_a", "hddm_w"):
        with pytest.raises(SettingsError, match="needs a 0/1 error stream"):
            load_settings(None, env={"STREAM_LEARNER_DRIFT__ERROR_DETECTOR": binary})
        settings = load_settings(None, env={"STREAM_LEARNER_DRIFT__ERROR_DETECTOR": binary,
                                            "STREAM_LEARNER_MODEL__TASK": "classification"})
        assert settings.drift.error_detector == binary


def test_schema_monitor_reports_new_missing_and_retyped_features_once() -> None:
    m = SchemaMonitor()
    rules = Rules(0, 3)
    for i in range(5):
        assert m.update({"a": 1.0, "b": "x", "c": None}, at(i), rules, grace=5) == []
    changes = m.update({"a": "1", "c": 2, "d": True}, at(5), rules, grace=5)
    assert [(c.window["change"], c.window["feature"]) for c in changes] == [
        ("retyped", "a"), ("new", "d"), ("missing", "b"),
    ]
    assert m.update({"a": "2", "c": 3, "d": False}, at(6), rules, grace=5) == []
    resolved = [m.update({"a": "2", "c": 3, "d": False}, at(i), rules, grace=5) for i in (7, 8)]
    assert [c.severity for c in resolved[-1]] == ["resolved"]


# -- the learner -------------------------------------------------------------------------


def learner(**drift: Any) -> Learner:
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "classification", "name": "m", "pipeline": list(CLASSIFIER)},
        "drift": {"cooldown_events": 0, **drift},
    })
    return Learner(ModelSpec.from_settings(settings.model), settings.labels, settings.drift)


def flipped(n: int, flip_at: int, seed: int = 5) -> list[Event]:
    """y = x > 0.5, then y = x <= 0.5 from ``flip_at``: the concept turns over."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.random()
        y = (x > 0.5) != (i >= flip_at)
        out.append(Event(i, "k", float(i), {"x": x}, y, True, Origin("events", 0, i)))
    return out


def alerts_of(lr: Learner, events: list[Event]) -> list[dict[str, Any]]:
    out = []
    for event in events:
        out.extend(a.to_dict("events:0") for a in lr.process(event)[3])
    return out


def test_learner_alerts_are_deterministic_and_survive_pickling() -> None:
    events = flipped(3000, 1500)
    straight = alerts_of(learner(), events)
    assert any(a["severity"] == "drift" and a["signal"] == "error" for a in straight)
    again = alerts_of(learner(), events)
    assert again == straight
    first = learner()
    head = alerts_of(first, events[:1600])
    restored = pickle.loads(pickle.dumps(first))
    assert head + alerts_of(restored, events[1600:]) == straight


def test_null_watch_when_disabled() -> None:
    lr = learner(enabled=False)
    assert alerts_of(lr, flipped(2000, 1000)) == []
    assert lr.drift.open_counts() == {}


def test_reset_action_replaces_the_model_and_says_so() -> None:
    lr = learner(action="reset", signals=["error"])
    alerts = alerts_of(lr, flipped(3000, 1500))
    drift = [a for a in alerts if a["severity"] == "drift"]
    info = [a for a in alerts if a["severity"] == "info"]
    assert drift and drift[0]["action"] == "reset"
    assert info[0]["action"] == "reset" and info[0]["model"]["generation"] == 1
    replaced = [a for a in info if a["action"] in ("reset", "reset_undone")]
    assert lr.models.get("k").generation == len(replaced)


def test_challenger_is_promoted_when_better_on_recent_data() -> None:
    lr = learner(action="challenger", signals=["error"], challenger_labels=300,
                 challenger_recent_labels=100)
    events = flipped(4000, 2000)
    alerts = alerts_of(lr, events)
    promoted = [a for a in alerts if a["action"] == "promoted"]
    assert promoted, [(a["severity"], a["action"]) for a in alerts]
    first = promoted[0]
    assert first["severity"] == "info" and first["signal"] == "model"
    assert first["detector"] == "challenger" and first["model"]["generation"] == 1
    window = first["window"]
    assert window["metric"] == "Accuracy" and window["challenger"] > window["champion"] * 1.05
    assert window["n"] == 100 and window["n_trained"] >= 300
    # the promoted model serves next: its generation shows in the predictions
    p = lr.process(Event("z", "k", 9e3, {"x": 0.9}, None, False, Origin("events", 0, 9999)))[0]
    assert p is not None and p.model.generation >= 1
    assert p.to_dict()["model"]["generation"] == p.model.generation


# -- the service -----------------------------------------------------------------------------


def service_settings(**drift: Any) -> Settings:
    stream = STREAMS["agrawal"]
    return load_settings(None, env={}, overrides={
        "model": stream.model_settings(),
        "drift": {"cooldown_events": 0, **drift},
        "service": {"batch_size": 100},
    })


def run(settings: Settings, records: list[bytes], **kwargs: Any) -> tuple[Service, MemorySink]:
    sink = MemorySink()
    service = Service(
        settings, ModelSpec.from_settings(settings.model),
        MemorySource({("events", 0): records}), sink, **kwargs,
    )
    service.run()
    return service, sink


def schema(name: str) -> Draft202012Validator:
    text = (importlib.resources.files("stream_learner") / "schemas" / f"{name}.json").read_text()
    doc = json.loads(text)
    Draft202012Validator.check_schema(doc)
    return Draft202012Validator(doc)


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_service_alerts_fall_on_the_same_events_as_the_detector_in_process(name: str) -> None:
    stream = STREAMS[name]
    # the error's drifts are never silenced: the shipped cooldown applies; a feature's are
    cooldown = {} if stream.signal == "error" else {"cooldown_events": 0}
    settings = load_settings(None, env={}, overrides={
        "model": stream.model_settings(),
        "drift": {**cooldown, "signals": ["error", "feature", "prediction", "schema"]},
        "service": {"batch_size": 64},
    })
    _, sink = run(settings, stream.records())
    alerts = sink.decoded("alerts")
    # labels flow: a feature (blind to the error) warns where the error would page
    severity = "drift" if stream.signal == "error" else "warning"
    got = [a["offsets"]["to"] for a in alerts
           if a["series"] == stream.signal and a["severity"] == severity]
    spec = ModelSpec.from_settings(settings.model)
    assert got == reference_detections(stream, spec, settings.drift.warmup_labels)
    if name in ("agrawal", "gaussian"):  # drifts that move the signal (docs/drift.md)
        assert got


@pytest.mark.parametrize("detector", ["hddm_a", "hddm_w"])
@pytest.mark.parametrize("name", ["sea", "agrawal"])
def test_hoeffding_error_alerts_fall_on_river_s_detections_in_process(
    name: str, detector: str
) -> None:
    stream = STREAMS[name]
    settings = load_settings(None, env={}, overrides={
        "model": stream.model_settings(),
        "drift": {"signals": ["error"], "error_detector": detector},
        "service": {"batch_size": 64},
    })
    _, sink = run(settings, stream.records())
    drifts = [a for a in sink.decoded("alerts") if a["severity"] == "drift"]
    assert {a["detector"] for a in drifts} <= {{"hddm_a": "HDDMA", "hddm_w": "HDDMW"}[detector]}
    spec = ModelSpec.from_settings(settings.model)
    expected = reference_detections(stream, spec, settings.drift.warmup_labels, detector)
    assert [a["offsets"]["to"] for a in drifts] == expected
    if name == "agrawal":
        assert expected


def test_service_alerts_match_their_schema_and_metrics_count_them() -> None:
    service, sink = run(service_settings(action="challenger"), STREAMS["agrawal"].records())
    alerts = sink.decoded("alerts")
    assert {a["severity"] for a in alerts} >= {"warning", "drift", "resolved"}
    validator = schema("alert")
    for alert in alerts:
        validator.validate(alert)
    assert all(a["shard"] == "events:0" and a["key"] is None for a in alerts)
    text = service.metrics.render().decode()
    drifts = sum(1 for a in alerts if a["severity"] == "drift" and a["signal"] == "error")
    assert f'stream_learner_drift_alerts_total{{severity="drift",signal="error"}} {drifts}.0' in text
    assert 'stream_learner_drift_open{partition="0",signal="error"}' in text
    assert 'stream_learner_drift_keys_open_ratio{partition="0"}' in text


def test_alert_records_are_json_with_the_documented_example() -> None:
    example = orjson.loads(_doc_example())
    schema("alert").validate(example)


def _doc_example() -> str:
    from tests.support.service import ROOT

    text = (ROOT / "docs" / "drift.md").read_text()
    start = text.index("```json\n", text.index("## Alert schema")) + len("```json\n")
    return text[start : text.index("```", start)]


def test_silent_replay_updates_monitors_but_emits_no_alert() -> None:
    from stream_learner.checkpoint import EnvelopeCodec
    from stream_learner.metrics import Metrics
    from stream_learner.recovery import Checkpointer
    from stream_learner.stores import MemoryStore

    settings = service_settings()
    records = STREAMS["agrawal"].records()[:4000]
    first, sink = run(settings, records)
    assert sink.decoded("alerts")
    # a worker with an empty store re-learns everything below the committed offsets silently
    spec = ModelSpec.from_settings(settings.model)
    metrics = Metrics()
    checkpointer = Checkpointer(
        MemoryStore(), EnvelopeCodec(b"k" * 32, spec.config_hash), settings.checkpoint, metrics,
        lambda: 0.0, lambda: 0.0,
    )
    source = MemorySource({("events", 0): records})
    source.committed_offsets = {("events", 0): len(records)}
    sink2 = MemorySink()
    second = Service(settings, spec, source, sink2, metrics, checkpointer)
    summary = second.run()
    assert summary.replayed == len(records) and sink2.values("alerts") == []
    before = first.shards[("events", 0)].learner.drift.open_counts()
    restored = second.shards[("events", 0)].learner
    assert restored.drift.open_counts() == before


def test_per_key_monitors_and_the_fleet_share() -> None:
    rng = random.Random(2)
    records = []
    for i in range(4000):
        key = f"k{i % 4}"
        x = rng.random()
        flip = key in ("k0", "k1") and i >= 2000
        records.append(orjson.dumps({"id": i, "key": key, "ts": float(i),
                                     "features": {"x": x}, "label": (x > 0.5) != flip}))
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "classification", "pipeline": list(CLASSIFIER), "scope": "key"},
        "drift": {"cooldown_events": 0, "signals": ["error"], "resolve_after_events": 5000},
    })
    service, sink = run(settings, records)
    drift_keys = {a["key"] for a in sink.decoded("alerts") if a["severity"] == "drift"}
    assert drift_keys == {"k0", "k1"}
    text = service.metrics.render().decode()
    assert 'stream_learner_drift_keys_open_ratio{partition="0"} 0.5' in text


def test_metrics_snapshots_follow_their_schema() -> None:
    settings = load_settings(None, env={}, overrides={
        "model": STREAMS["agrawal"].model_settings(),
        "metrics": {"snapshot_interval_s": 5.0}, "service": {"batch_size": 50},
    })
    service, sink = run(settings, STREAMS["agrawal"].records()[:2000], clock=TickingClock(),
                        wall_clock=lambda: 1.7e9)
    snapshots = sink.decoded("metrics")
    assert snapshots, "no snapshot record was written"
    validator = schema("metrics-snapshot")
    for snap in snapshots:
        validator.validate(snap)
    last = snapshots[-1]
    assert last["partitions"][0]["shard"] == "events:0"
    assert last["totals"]["records"] <= 2000
    assert sink.flushed == len(sink.sent)
    assert "stream_learner_metrics_snapshots_total" in service.metrics.render().decode()


def test_consumer_lag_gauges_and_their_removal_on_revocation() -> None:
    settings = load_settings(None, env={}, overrides={
        "model": STREAMS["agrawal"].model_settings(), "service": {"batch_size": 100},
        "metrics": {"lag_interval_s": 0.0},
    })
    records = STREAMS["agrawal"].records()[:300]
    source = MemorySource({("events", 0): records})
    service = Service(settings, ModelSpec.from_settings(settings.model), source, MemorySink())
    service.start()
    service.step()  # 100 records processed and committed, then the lag measured
    text = service.metrics.render().decode()
    assert 'stream_learner_consumer_lag_records{partition="0"} 200.0' in text
    assert 'stream_learner_consumer_lag_seconds{partition="0"}' in text
    service.on_revoked([("events", 0)])
    assert 'partition="0"' not in service.metrics.render().decode()


def test_drift_settings_defaults_are_documented() -> None:
    d = DriftSettings()
    assert d.detector == "adwin" and d.action == "alert" and d.enabled


# -- calibration: direction, warm-up, blind signals, replacement, restore ----------------------


def error_monitor(warm: bool = True) -> Monitor:
    monitor = Monitor("error", "error", make_detector("adwin", {}), warning_twin("adwin", {}),
                      worse_only=True)
    monitor.warm = warm
    return monitor


def rates(*stretches: tuple[int, float], seed: int = 4) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < p) for n, p in stretches for _ in range(n)]


def test_error_going_down_is_an_improvement_not_an_alert() -> None:
    monitor = error_monitor()
    changes = run_monitor(monitor, rates((1500, 0.4), (1500, 0.1)), Rules(0, 100_000))
    assert [s for _, s, _ in changes if s != "improved"] == []
    assert "improved" in [s for _, s, _ in changes]
    assert monitor.state == "stable"
    worse = run_monitor(error_monitor(), rates((1500, 0.1), (1500, 0.4)), Rules(0, 100_000))
    assert "drift" in [s for _, s, _ in worse]


def river_detections(name: str, params: dict[str, Any], values: list[float]) -> list[int]:
    detector, out = make_detector(name, params), []
    for i, v in enumerate(values):
        detector.update(v)
        if detector.drift_detected:
            out.append(i)
    return out


@pytest.mark.parametrize("name", ["hddm_a", "hddm_w"])
def test_hoeffding_detectors_alert_on_river_s_detections_of_a_rise(name: str) -> None:
    """HDDM_A / HDDM_W (one-sided, as River ships them): a rise alerts where River detects
    it, with the detector's own warnings before; a fall is never a drift."""
    worse = rates((1500, 0.1), (1500, 0.4))
    monitor = Monitor("error", "error", make_detector(name, {}), warning_twin(name, {}),
                      worse_only=True)
    assert monitor.warner is None
    changes = run_monitor(monitor, worse, Rules(0, 100_000))
    drifts = [i for i, s, _ in changes if s == "drift"]
    assert drifts and drifts == river_detections(name, {}, worse)
    assert changes[0][1] == "warning" and changes[0][0] < drifts[0]
    better = rates((1500, 0.4), (1500, 0.1))
    assert river_detections(name, {}, better) == []
    fell = run_monitor(Monitor("error", "error", make_detector(name, {}), None, worse_only=True),
                       better, Rules(0, 100_000))
    assert {s for _, s, _ in fell} <= {"warning", "resolved"}


@pytest.mark.parametrize("name", ["hddm_a", "hddm_w"])
def test_two_sided_hoeffding_detectors_report_a_fall_as_an_improvement(name: str) -> None:
    params = {"two_sided_test": True}
    better = rates((1500, 0.4), (1500, 0.1))
    assert river_detections(name, params, better)  # River detects the fall
    monitor = Monitor("error", "error", make_detector(name, params), None, worse_only=True)
    changes = run_monitor(monitor, better, Rules(0, 100_000))
    assert [s for _, s, _ in changes if s not in ("improved", "warning")] == []
    assert "improved" in [s for _, s, _ in changes]
    worse = rates((1500, 0.1), (1500, 0.4))
    monitor = Monitor("error", "error", make_detector(name, params), None, worse_only=True)
    assert "drift" in [s for _, s, _ in run_monitor(monitor, worse, Rules(0, 100_000))]


def test_a_monitor_warming_up_feeds_its_detector_but_changes_nothing() -> None:
    values = rates((1500, 0.1), (1500, 0.4))
    cold = error_monitor(warm=False)
    assert run_monitor(cold, values, Rules(0, 100)) == []
    assert cold.state == "stable" and cold.n == len(values)
    assert "drift" in [s for _, s, _ in run_monitor(error_monitor(), values, Rules(0, 100))]


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_cooldown_does_not_swallow_a_real_drift_after_a_false_alert(seed: int) -> None:
    # a short bump of the error (the false alert), back to normal, then the real drift
    values = rates((2000, 0.1), (100, 0.35), (400, 0.1), (600, 0.6), seed=seed)
    changes = run_monitor(error_monitor(), values, Rules(cooldown=5000, resolve_after=100_000))
    drifts = [(i, emit) for i, s, emit in changes if s == "drift"]
    assert len(drifts) == 2 and drifts[0][0] < 2200 <= 2500 <= drifts[1][0], drifts
    assert all(emit for _, emit in drifts)
    # a warning twin's warnings still cool down
    feature = run_monitor(adwin_monitor(), values, Rules(cooldown=5000, resolve_after=100_000))
    assert len([c for c in feature if c[1] == "drift" and c[2]]) == 1


def blind_learner(**drift: Any) -> Learner:
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "classification", "name": "m", "pipeline": list(CLASSIFIER)},
        "drift": {"signals": ["error", "schema"], "schema_grace_events": 10, **drift},
    })
    return Learner(ModelSpec.from_settings(settings.model), settings.labels, settings.drift)


def test_blind_signals_warn_while_labels_come_and_page_when_they_stop() -> None:
    lr = blind_learner(blind_pages_after_events=300)
    events = flipped(1000, 10_000)
    labelled = alerts_of(lr, events[:500])
    new = Event(500, "k", 500.0, {"x": 0.5, "y": 1.0}, True, True, Origin("events", 0, 500))
    warned = alerts_of(lr, [new])
    assert [(a["signal"], a["severity"]) for a in warned] == [("schema", "warning")]
    assert not [a for a in labelled if a["severity"] == "drift"]
    # no label for 300 events: the schema (blind to the error) pages
    unlabelled = [Event(i, "k", float(i), {"x": 0.5, "y": 1.0}, None, False,
                        Origin("events", 0, i)) for i in range(501, 900)]
    alerts_of(lr, unlabelled)
    gone = Event(900, "k", 900.0, {"x": 0.5, "y": 1.0, "z": 2.0}, None, False,
                 Origin("events", 0, 900))
    paged = alerts_of(lr, [gone])
    assert [(a["signal"], a["severity"]) for a in paged] == [("schema", "drift")]


def test_reset_gives_fresh_monitors_that_warm_up_again() -> None:
    lr = learner(action="reset", signals=["error"], warmup_labels=400)
    alerts = alerts_of(lr, flipped(6000, 3000))
    resets = [a["offsets"]["to"] for a in alerts if a["action"] == "reset" and a["severity"] == "info"]
    undone = [a for a in alerts if a["action"] == "reset_undone"]
    assert resets and resets[0] >= 3000  # nothing while the first model learned
    drifts = [a["offsets"]["to"] for a in alerts if a["severity"] == "drift"]
    for before, after in itertools.pairwise(drifts):
        assert after - before >= 400  # each new model warms up before its next alert
    slot = lr.models.get("k")
    monitor = slot.drift.monitors["error"]
    assert monitor.n <= 6000 - resets[-1] and slot.generation == len(resets) + len(undone)


def test_a_restored_learner_warms_up_again() -> None:
    lr = learner(signals=["error"], warmup_labels=300)
    events = flipped(4000, 1000)
    alerts_of(lr, events[:900])
    restored = pickle.loads(pickle.dumps(lr))
    settings = DriftSettings(cooldown_events=0, signals=("error",), warmup_labels=300)
    restored.use_drift(settings)
    after = alerts_of(restored, events[900:1200])  # the flip at 1000 comes during the warm-up
    assert not [a for a in after if a["severity"] == "drift"]
    sd = restored.models.get("k").drift
    assert sd.warm and sd.learned == 300
    straight = alerts_of(lr, events[900:1200])
    assert [a for a in straight if a["severity"] == "drift"]  # without the restore it alerts


def test_challenger_is_promoted_on_regression_too() -> None:
    rng = random.Random(9)
    events = []
    for i in range(6000):
        x = rng.random()
        y = 3 * x if i < 3000 else 4 - 3 * x
        events.append(Event(i, "k", float(i), {"x": x}, y, True, Origin("events", 0, i)))
    settings = load_settings(None, env={}, overrides={
        "model": {"task": "regression", "name": "r", "pipeline": [
            {"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.001}}]},
        "drift": {"action": "challenger", "signals": ["error"]},  # the shipped window, margin
    })
    lr = Learner(ModelSpec.from_settings(settings.model), settings.labels, settings.drift)
    decisions = [a for a in alerts_of(lr, events) if a["signal"] == "model"]
    assert decisions and decisions[0]["action"] == "promoted", decisions
    window = decisions[0]["window"]
    assert window["metric"] == "MAE" and window["challenger"] < 0.95 * window["champion"]


def test_an_error_monitor_pickled_before_the_direction_existed_learns_it() -> None:
    monitor = error_monitor()
    run_monitor(monitor, rates((500, 0.1)), Rules(0, 100))
    old = {k: v for k, v in monitor.__dict__.items()
           if k not in ("worse_only", "warm", "pages", "total", "marks")}
    restored = Monitor.__new__(Monitor)
    restored.__setstate__(pickle.loads(pickle.dumps(old)))
    assert restored.worse_only and restored.warm
    changes = run_monitor(restored, rates((1500, 0.4), (1500, 0.1), seed=8), Rules(0, 100_000))
    severities = [s for _, s, _ in changes]
    assert "drift" in severities and "improved" in severities


def test_adwin_keeps_its_window_after_the_error_falls() -> None:
    # the model learns (0.3 -> 0.05): a fall; then the error rises to 0.12, little above
    # the learning phase's mean but well above the level the fall left
    values = rates((800, 0.3), (1500, 0.05), (1200, 0.12), seed=11)
    changes = run_monitor(error_monitor(), values, Rules(0, 100_000))
    falls = [i for i, s, _ in changes if s == "improved"]
    drifts = [i for i, s, _ in changes if s == "drift"]
    assert falls and falls[0] < 2300, changes
    assert drifts and 2300 <= drifts[0] < 3300, changes
    # River's ADWIN alone starts afresh after the fall: the window it cut is gone
    river = make_detector("adwin", {"delta": 0.002})
    cut_at = None
    for i, v in enumerate(values):
        river.update(v)
        if river.drift_detected and cut_at is None:
            cut_at, kept = i, river.width
        elif cut_at is not None and i == cut_at + 1:
            assert river.width == 1 and kept > 1


def test_a_detection_is_a_rise_against_the_values_adwin_dropped() -> None:
    values = rates((800, 0.3), (1500, 0.05), (1200, 0.12), seed=11)
    monitor = error_monitor()
    for i, v in enumerate(values):
        width, total = monitor.detector.width, monitor.detector.total
        change = monitor.update(v, at(i), Rules(0, 100_000))
        if change is not None and change.severity in ("improved", "drift"):
            dropped = (total + v - monitor.detector.total) / (width + 1 - monitor.detector.width)
            kept = monitor.detector.estimation
            assert (change.severity == "drift") == (kept > dropped)
            if change.severity == "improved":
                assert change.window["mean_before"] == pytest.approx(dropped)
                assert change.window["mean_after"] == pytest.approx(kept)


def test_rise_start_finds_where_the_error_went_up() -> None:
    from stream_learner.drift import rise_start

    errors = rates((700, 0.1), (300, 0.5), seed=3)
    assert abs(rise_start(errors) - 700) < 40
    assert rise_start(rates((500, 0.5), (500, 0.1), seed=3)) > 900  # a fall: (almost) nothing
    assert rise_start([0.2] * 50) == 50  # no rise: nothing


def test_reset_replays_the_labelled_events_since_the_rise_to_the_fresh_model() -> None:
    lr = learner(action="reset", signals=["error"], reset_replay_labels=600)
    events = flipped(3000, 1500)
    alerts = alerts_of(lr, events[:1900])
    drift = [a for a in alerts if a["severity"] == "drift"]
    info = [a for a in alerts if a["severity"] == "info"]
    assert drift and info and info[0]["action"] == "reset", alerts
    replayed = info[0]["window"]["n_replayed"]
    since_flip = drift[0]["offsets"]["to"] + 1 - 1500
    assert 0 < replayed <= 600 and abs(replayed - since_flip) <= 40, (replayed, since_flip)
    slot = lr.models.get("k")
    # the fresh model learned the replayed events, then every label after the reset
    assert slot.n_learned == replayed + 1900 - 1 - drift[0]["offsets"]["to"]
    plain = learner(action="reset", signals=["error"], reset_replay_labels=0)
    info = [a for a in alerts_of(plain, events[:1900]) if a["severity"] == "info"]
    assert info and info[0]["window"]["n_replayed"] == 0


def noisy_burst(n: int, start: int, end: int, seed: int, d: int = 8) -> list[Event]:
    """A fixed linear concept over ``d`` features, with coin-flip labels in ``[start, end)``."""
    rng = random.Random(seed)
    weights = [rng.uniform(-1, 1) for _ in range(d)]
    out = []
    for i in range(n):
        x = {f"x{j}": rng.random() for j in range(d)}
        y = sum(w * (x[f"x{j}"] - 0.5) for j, w in enumerate(weights)) > 0
        if start <= i < end:
            y = rng.random() < 0.5
        out.append(Event(i, "k", float(i), x, y, True, Origin("events", 0, i)))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_reset_that_made_things_worse_is_undone(seed: int) -> None:
    # a burst of noise raises the error, the model is reset, the concept never changed:
    # the replaced model kept learning beside the fresh one and comes back
    lr = learner(action="reset", signals=["error"], reset_trial_labels=300)
    events = noisy_burst(4000, 2000, 2300, seed)
    reset_at = None
    for event in events:
        for a in (a.to_dict("events:0") for a in lr.process(event)[3]):
            if a["action"] == "reset" and a["severity"] == "info":
                reset_at = a["offsets"]["to"]
                fallback = lr.models.get("k").drift.challenger
                assert fallback is not None and fallback.fallback and fallback.armed
            if a["action"] in ("reset_undone", "reset_kept"):
                decision = a
                break
        else:
            continue
        break
    assert reset_at is not None and 2000 <= reset_at < 2300
    assert decision["action"] == "reset_undone", decision
    assert decision["detector"] == "reset" and decision["signal"] == "model"
    window = decision["window"]
    assert window["challenger"] > window["champion"] * 1.05 and window["n"] == 150
    # the old model serves again, as a new generation, with fresh monitors that warm up
    slot = lr.models.get("k")
    assert decision["model"]["generation"] == slot.generation == 2
    assert slot.drift.challenger is None and not slot.drift.warm
    assert slot.drift.monitors == {} or all(m.n <= 1 for m in slot.drift.monitors.values())
    # it is the replaced model, which kept learning: every label up to the decision's
    assert slot.n_learned == decision["offsets"]["to"] + 1
    assert decision["offsets"]["to"] - reset_at == 300
    assert schema("alert").is_valid(decision)


def test_a_reset_that_helped_is_kept() -> None:
    lr = learner(action="reset", signals=["error"], reset_trial_labels=200)
    alerts = alerts_of(lr, flipped(4000, 2000))
    decisions = [a for a in alerts if a["action"] in ("reset_undone", "reset_kept")]
    assert decisions and decisions[0]["action"] == "reset_kept", decisions
    window = decisions[0]["window"]
    assert window["n"] == 100  # the last half of the trial
    assert window["champion"] > window["challenger"]  # the fresh model learned the flip
    assert schema("alert").is_valid(decisions[0])
    generation = lr.models.get("k").generation
    assert generation == sum(a["severity"] == "info" and a["action"] in ("reset", "reset_undone")
                             for a in alerts)


def test_a_learner_restored_while_a_reset_is_on_trial_decides_the_same() -> None:
    settings = {"action": "reset", "signals": ["error"], "reset_trial_labels": 300,
                "warmup_labels": 0}
    events = noisy_burst(3000, 2000, 2300, seed=0)
    straight = alerts_of(learner(**settings), events)
    assert any(a["action"] == "reset_undone" for a in straight)
    first = learner(**settings)
    reset_at = next(a["offsets"]["to"] for a in straight if a["action"] == "reset")
    head = alerts_of(first, events[: reset_at + 100])
    restored = pickle.loads(pickle.dumps(first))
    tail = alerts_of(restored, events[reset_at + 100 :])
    assert [a["action"] for a in head + tail if a["signal"] == "model"] == [
        a["action"] for a in straight if a["signal"] == "model"]


def test_a_reset_with_no_trial_is_final() -> None:
    lr = learner(action="reset", signals=["error"], reset_trial_labels=0)
    alerts = alerts_of(lr, noisy_burst(4000, 2000, 2300, seed=0))
    resets = [a for a in alerts if a["action"] == "reset" and a["severity"] == "info"]
    assert resets and all(a["window"]["n_trial"] == 0 for a in resets)
    assert not any(a["action"] in ("reset_undone", "reset_kept") for a in alerts)
    assert lr.models.get("k").drift.challenger is None


def test_a_reset_during_a_trial_puts_the_model_it_replaces_on_trial() -> None:
    lr = learner(action="reset", signals=["error"], reset_trial_labels=5000, warmup_labels=100)
    events = flipped(3000, 1000)
    events = [*events, *(Event(e.id, e.key, e.ts + 3000, e.features, not e.label, True,
                               Origin("events", 0, e.origin.offset + 3000)) for e in events)]
    resets = 0
    for event in events:
        serving = lr.models.get("k").model
        for a in lr.process(event)[3]:
            if a.severity == "info" and a.action == "reset":
                resets += 1
                fallback = lr.models.get("k").drift.challenger
                assert fallback is not None and fallback.model is serving
            assert a.action not in ("reset_undone", "reset_kept")  # no trial ended
    assert resets >= 2


def test_a_reset_while_labels_are_absent_is_final() -> None:
    # nothing could judge a trial: the replaced model is not kept beside the fresh one
    lr = blind_learner(signals=["error", "prediction"], blind_pages_after_events=300,
                       action="reset", action_signals=["prediction"])
    alerts_of(lr, flipped(1000, 10_000))
    rng = random.Random(3)
    shifted = [Event(i, "k", float(i), {"x": 0.9 + 0.1 * rng.random()} if i >= 1500
                     else {"x": rng.random()}, None, False, Origin("events", 0, i))
               for i in range(1000, 4000)]
    alerts = alerts_of(lr, shifted)
    resets = [a for a in alerts if a["signal"] == "model"]
    assert resets and all(a["action"] == "reset" for a in resets), alerts
    assert all(a["window"]["n_trial"] == 0 for a in resets)
    assert lr.models.get("k").drift.challenger is None


def test_model_actions_are_counted_by_action() -> None:
    fresh = Metrics().render().decode()
    for action in MODEL_ACTIONS:  # exported at 0 before the first one
        assert f'stream_learner_model_actions_total{{action="{action}"}} 0.0' in fresh
    assert set(MODEL_ACTIONS) <= set(schema("alert").schema["properties"]["action"]["enum"])
    service, sink = run(service_settings(action="reset", reset_trial_labels=300),
                        STREAMS["agrawal"].records())
    actions = [a["action"] for a in sink.decoded("alerts") if a["signal"] == "model"]
    assert "reset" in actions and {"reset_undone", "reset_kept"} & set(actions), actions
    text = service.metrics.render().decode()
    for action in MODEL_ACTIONS:
        count = actions.count(action)
        assert f'stream_learner_model_actions_total{{action="{action}"}} {count}.0' in text
