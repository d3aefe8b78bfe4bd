"""The service routes a labels topic to its events shard, counts and reports labels."""

from __future__ import annotations

import orjson
from river import evaluate

from stream_learner.events import Origin
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import Settings
from stream_learner.sources import Record
from stream_learner.testing import MemorySink, MemorySource
from tests.support.streams import delayed, early, friedman


def _settings(**sections: dict) -> Settings:
    return Settings.model_validate({"kafka": {"labels_topic": "labels"}, **sections})


def test_labels_topic_partition_p_feeds_events_partition_p() -> None:
    settings = _settings()
    events = {p: friedman(100, seed=p) for p in range(2)}
    source = MemorySource(
        {
            **{("events", p): [orjson.dumps({**e, "label": None}) for e in evs]
               for p, evs in events.items()},
            **{("labels", p): [orjson.dumps({"id": e["id"], "key": e["key"], "label": e["label"]})
                               for e in evs] for p, evs in events.items()},
        }
    )
    sink, metrics = MemorySink(), Metrics()
    service = Service(settings, ModelSpec.from_settings(settings.model), source, sink, metrics)
    summary = service.run()
    assert sorted(service.shards) == [("events", 0), ("events", 1)]
    assert summary.predictions == 200 and summary.labels == 200 and summary.dead_letters == 0
    assert summary.labelling["coverage"] == 1.0 and summary.labelling["late"] == 200
    assert source.committed_offsets == {
        ("events", 0): 100, ("events", 1): 100, ("labels", 0): 100, ("labels", 1): 100
    }
    text = metrics.render().decode()
    assert 'stream_learner_labels_joined_total{when="late"} 200.0' in text
    assert 'stream_learner_label_coverage_ratio{partition="1"} 1.0' in text
    assert "stream_learner_label_delay_events_count 200.0" in text


def test_a_shard_revoked_before_its_labels_partition_was_read_comes_back_as_it_was() -> None:
    """Events read and committed, nothing yet on the labels partition (nothing committed
    there): a rebalance that gives the shard straight back keeps its model and pending
    predictions (without checkpoints, a fresh model would lose them)."""
    settings = _settings()
    events = friedman(20)
    source = MemorySource({
        ("events", 0): [orjson.dumps({**e, "label": None}) for e in events],
        ("labels", 0): [],
    })
    service = Service(settings, ModelSpec.from_settings(settings.model), source, MemorySink())
    service.start()
    service.process_batch(source.poll(100, 0), 0.0)
    before = service.shards[("events", 0)].learner
    assert len(before.book.pending) == 20
    assignment = [("events", 0), ("labels", 0)]
    service.on_revoked(assignment)  # commits events at 20; labels: nothing to commit
    assert source.committed_offsets == {("events", 0): 20}
    service.on_assigned(assignment)
    service.restore()
    assert service.shards[("events", 0)].learner is before
    service.process_batch([
        Record(orjson.dumps({"id": e["id"], "key": e["key"], "label": e["label"]}), None, 0,
               Origin("labels", 0, i))
        for i, e in enumerate(events)
    ], 0.0)
    assert before.book.stats.late == 20 and len(before.book.pending) == 0


def test_delayed_labels_on_the_events_topic_through_the_service() -> None:
    settings = Settings.model_validate({"labels": {"pending_max_age_events": 30}})
    spec = ModelSpec.from_settings(settings.model)
    events = friedman(500)
    records = [orjson.dumps(r) for r in delayed(events, 20)]
    records += [orjson.dumps({"id": "ghost", "key": "nobody", "label": 1.0})]
    source = MemorySource({("events", 0): records})
    sink, metrics = MemorySink(), Metrics()
    summary = Service(settings, spec, source, sink, metrics).run()
    predictions = sink.decoded("predictions")
    expected = evaluate.iter_progressive_val_score(
        [(e["features"], e["label"]) for e in events], spec.build(), spec.build_metric(),
        delay=20, yield_predictions=True,
    )
    assert [p["prediction"] for p in predictions] == [step["Prediction"] for step in expected]
    lab = summary.labelling
    assert (lab["late"], lab["expired_pending"], lab["coverage"]) == (500, 0, 1.0)
    assert lab["mean_delay_events"] == (480 * 19 + sum(range(20))) / 500
    # the ghost label waits for an event that never comes: still waiting, not lost
    assert service_gauge(metrics, "stream_learner_early_labels") == 1.0
    assert summary.models == {
        "resident": 1, "parked": 0, "parked_bytes": 0,
        "resident_bytes_estimate": summary.models["resident_bytes_estimate"],
    }
    assert summary.models["resident_bytes_estimate"] > 0


def test_labels_learned_counts_labels_joined_not_labels_waiting() -> None:
    settings = Settings.model_validate({"labels": {"early_max_age_events": 3}})
    events = friedman(50)
    ghost = {"id": "ghost", "key": "nobody", "label": 1.0}
    # every label comes two events before its own (three events' wait at most); the ghost
    # label's event never comes
    records = [orjson.dumps(r) for r in [ghost, *early(events, 2)]]
    source, sink, metrics = MemorySource({("events", 0): records}), MemorySink(), Metrics()
    summary = Service(settings, ModelSpec.from_settings(settings.model), source, sink, metrics).run()
    assert summary.label_records == 51 and summary.predictions == 50
    assert summary.labels == 50 == summary.labelling["early"]  # counted when joined
    assert summary.labels_expired == 1 and len(sink.values("learn_dead_letters")) == 1
    assert metrics.registry.get_sample_value("stream_learner_labels_learned_total") == 50
    assert metrics.registry.get_sample_value(
        "stream_learner_labels_joined_total", {"when": "early"}
    ) == 50


def test_per_key_model_gauges() -> None:
    settings = Settings.model_validate(
        {"model": {"scope": "key", "max_resident": 3}, "metrics": {"memory_interval_s": 0}}
    )
    source = MemorySource({("events", 0): [orjson.dumps(e) for e in friedman(300, keys=7)]})
    metrics = Metrics()
    summary = Service(
        settings, ModelSpec.from_settings(settings.model), source, MemorySink(), metrics
    ).run()
    assert summary.models["resident"] == 3 and summary.models["parked"] == 4
    assert service_gauge(metrics, "stream_learner_resident_models") == 3.0
    assert service_gauge(metrics, "stream_learner_parked_models") == 4.0
    parked_bytes = service_gauge(metrics, "stream_learner_parked_models_bytes")
    assert parked_bytes == summary.models["parked_bytes"]
    assert service_gauge(metrics, "stream_learner_resident_models_bytes") > 0


def service_gauge(metrics: Metrics, name: str) -> float:
    """The value of a partition-0 gauge."""
    value = metrics.registry.get_sample_value(name, {"partition": "0"})
    assert value is not None, name
    return value
