"""Per-shard figures taken once and shown twice (gauges, snapshot), and snapshots that do not commit."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from stream_learner.models import ModelSpec
from stream_learner.reporting import ShardStats
from stream_learner.service import Service
from stream_learner.settings import Settings, load_settings
from stream_learner.sinks import Header
from stream_learner.testing import MemorySink, MemorySource
from tests.support.drift_streams import STREAMS
from tests.support.memory import TickingClock


class FlushLog(MemorySink):
    """Keeps the order of sends and flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        super().send(role, key, value, headers)
        self.log.append(role)

    def flush(self) -> None:
        super().flush()
        self.log.append("flush")


def settings(**metrics: float) -> Settings:
    return load_settings(None, env={}, overrides={
        "model": STREAMS["agrawal"].model_settings(),
        "metrics": {"snapshot_interval_s": 2.0, **metrics},
        "service": {"batch_size": 50},
    })


def serve(sink: MemorySink, config: Settings | None = None) -> Service:
    config = config or settings()
    records = STREAMS["agrawal"].records()[:1500]
    source = MemorySource({("events", 0): records[::2], ("events", 1): records[1::2]})
    service = Service(config, ModelSpec.from_settings(config.model), source, sink,
                      clock=TickingClock(), wall_clock=lambda: 1.7e9)
    service.run()
    return service


def gauge(service: Service, name: str, **labels: str) -> float | None:
    return service.metrics.registry.get_sample_value(name, labels)


def test_a_snapshot_record_goes_out_with_the_batch_commit_not_its_own() -> None:
    sink = FlushLog()
    service = serve(sink)
    snapshots = [i for i, entry in enumerate(sink.log) if entry == "metrics"]
    assert len(snapshots) >= 2
    batches = gauge(service, "stream_learner_batches_total")
    assert gauge(service, "stream_learner_commits_total") == batches  # one commit per batch
    assert sink.log.count("flush") == batches
    for i in snapshots:  # written after its batch's outputs, then flushed with them
        assert sink.log[i + 1] == "flush", sink.log[i - 2 : i + 3]
    assert sink.flushed == len(sink.sent)


def test_gauges_and_snapshot_entries_show_the_same_figures_of_each_shard() -> None:
    service = serve(MemorySink())
    service.reporter.gauges(service.shards, force=True)
    stats = [ShardStats.of(tp, shard) for tp, shard in service.shards.items()]
    assert [s.partition for s in stats] == [0, 1]
    record = service.reporter.snapshot(service.shards, {"records": 1500}, 99.0)
    entries = orjson.loads(record)["partitions"]
    for s, entry in zip(stats, entries, strict=True):
        p = str(s.partition)
        lag = (gauge(service, "stream_learner_consumer_lag_records", partition=p),
               gauge(service, "stream_learner_consumer_lag_seconds", partition=p))
        assert entry == s.record(entry["metric"], lag)  # the lag last measured
        assert entry["online_metric"] == gauge(
            service, "stream_learner_online_metric", partition=p, metric=entry["metric"]
        )
        assert entry["label_coverage"] == gauge(
            service, "stream_learner_label_coverage_ratio", partition=p
        )
        assert entry["pending_predictions"] == gauge(
            service, "stream_learner_pending_predictions", partition=p
        )
        assert entry["resident_models"] == gauge(service, "stream_learner_resident_models", partition=p)
        assert entry["drift_keys_open_ratio"] == gauge(
            service, "stream_learner_drift_keys_open_ratio", partition=p
        )
        for signal, count in entry["drift_open"].items():
            assert count == gauge(service, "stream_learner_drift_open", partition=p, signal=signal)
        assert entry["predictions"] == service.shards[("events", s.partition)].learner.n_predicted


def test_the_live_page_shows_the_snapshot_figures_of_each_shard() -> None:
    service = serve(MemorySink())
    service.reporter.lag(service.shards, 1e9)  # a lag measurement samples the page's history
    page = service.metrics.history.document(1.7e9)["partitions"]
    record = service.reporter.snapshot(service.shards, {"records": 1500}, 99.0)
    entries = orjson.loads(record)["partitions"]
    assert [row["partition"] for row in page] == [e["partition"] for e in entries] == [0, 1]
    shared = ("shard", "online_metric", "predictions", "labels_learned", "label_coverage",
              "pending_predictions", "lag_records", "lag_seconds")
    for row, entry in zip(page, entries, strict=True):
        assert {k: row[k] for k in shared} == {k: entry[k] for k in shared}
        stats = service.shards[("events", row["partition"])].learner.book.stats.to_dict()
        assert row["mean_delay_events"] == stats["mean_delay_events"]
        assert row["mean_delay_seconds"] == stats["mean_delay_seconds"]
