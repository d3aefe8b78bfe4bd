"""The operator's view of a running service: alerts, per-shard gauges, lag, snapshots.

A :class:`Reporter` belongs to the :class:`~stream_learner.service.Service`.
It writes the alerts a live record raised (the record's
:data:`~stream_learner.learner.Outcome`) to the ``alerts`` output, keeps the
per-shard and consumer-lag gauges, and writes a metrics snapshot record to the
``metrics`` output every ``metrics.snapshot_interval_s`` seconds. The per-shard
figures are taken once, as a :class:`ShardStats`, and rendered three ways: as the
gauges (at most every :data:`GAUGES_INTERVAL_S`, and with each lag measurement),
as the snapshot record's ``partitions`` and as the live page's partition rows. None of it commits: a snapshot
record is an output the loop's next commit covers.

The snapshot record (``stream_learner/schemas/metrics-snapshot.json``)::

    {"schema_version": 1, "worker": "worker-1", "ts": 1764115260.0,
     "interval_s": 60.0, "records_per_s": 1800.5,
     "totals": {"records": 108030, "predictions": 108000, ...},
     "partitions": [{"partition": 0, "shard": "events:0", "metric": "MAE",
                     "online_metric": 0.42, "label_coverage": 0.98,
                     "pending_predictions": 12, "resident_models": 1,
                     "drift_open": {"error": 0, ...}, "drift_keys_open_ratio": 0.0,
                     "lag_records": 3, "lag_seconds": 0.2}]}

Consumer lag is read from the source at most once per ``metrics.lag_interval_s``:
records between the shard's position and the end of each of its input
partitions; in seconds, the age of the last processed record's timestamp while
records wait behind it. The live page's history (:mod:`stream_learner.dashboard`)
is sampled right after, at most once a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stream_learner.drift import MONITORED, Alert
from stream_learner.metrics import Metrics
from stream_learner.recovery import Shard
from stream_learner.scopes import memory_bytes
from stream_learner.settings import Settings
from stream_learner.sinks import Sink
from stream_learner.sources import Record, Source, TopicPartition

__all__ = ["GAUGES_INTERVAL_S", "SNAPSHOT_SCHEMA_VERSION", "Reporter", "ShardStats"]

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA_VERSION = 1

#: Least seconds between two updates of the per-partition gauges (metric, coverage,
#: buffers, models, drift): a scrape reads them every few seconds, and setting them
#: after every batch was most of a small batch's cost.
GAUGES_INTERVAL_S = 0.5


@dataclass(frozen=True, slots=True)
class ShardStats:
    """One shard's figures at one moment: what its gauges and its snapshot entry show.

    ``resident_models_bytes`` is an estimate taken only when asked for (it walks
    the models); None otherwise.
    """

    partition: int
    shard: str
    online_metric: float
    predictions: int
    labels_learned: int
    label_coverage: float
    pending_predictions: int
    early_labels: int
    resident_models: int
    parked_models: int
    parked_models_bytes: int
    drift_open: Mapping[str, int]
    drift_keys_open_ratio: float
    mean_delay_events: float
    mean_delay_seconds: float
    resident_models_bytes: int | None = None

    @classmethod
    def of(cls, tp: TopicPartition, shard: Shard, memory: bool = False) -> ShardStats:
        """The figures of ``shard`` (input partition ``tp``) now."""
        learner = shard.learner
        book, models, drift = learner.book, learner.models, learner.drift
        n_models = models.n_resident + models.n_parked
        labelled = book.stats.labelled
        return cls(
            partition=tp[1],
            shard=shard.id,
            online_metric=learner.metric_value,
            predictions=learner.n_predicted,
            labels_learned=learner.n_learned,
            label_coverage=book.stats.coverage,
            pending_predictions=len(book.pending),
            early_labels=len(book.early),
            resident_models=models.n_resident,
            parked_models=models.n_parked,
            parked_models_bytes=models.parked_bytes,
            drift_open=drift.open_counts(),
            drift_keys_open_ratio=drift.n_open_keys / n_models if n_models else 0.0,
            mean_delay_events=book.stats.delay_events_sum / labelled if labelled else 0.0,
            mean_delay_seconds=book.stats.delay_seconds_sum / labelled if labelled else 0.0,
            resident_models_bytes=memory_bytes(models) if memory else None,
        )

    def set_gauges(self, metrics: Metrics, metric: str) -> None:
        """Set this shard's gauges (the memory estimate only if it was taken)."""
        p = str(self.partition)
        m = metrics
        m.set_online_metric(p, metric, self.online_metric)
        for signal, count in self.drift_open.items():
            m.drift_open.labels(partition=p, signal=signal).set(count)
        m.drift_keys_open.labels(partition=p).set(self.drift_keys_open_ratio)
        m.label_coverage.labels(partition=p).set(self.label_coverage)
        m.pending_predictions.labels(partition=p).set(self.pending_predictions)
        m.early_labels.labels(partition=p).set(self.early_labels)
        m.resident_models.labels(partition=p).set(self.resident_models)
        m.parked_models.labels(partition=p).set(self.parked_models)
        m.parked_models_bytes.labels(partition=p).set(self.parked_models_bytes)
        if self.resident_models_bytes is not None:
            m.resident_models_bytes.labels(partition=p).set(self.resident_models_bytes)

    def record(self, metric: str, lag: tuple[int, float]) -> dict[str, Any]:
        """This shard's entry of a snapshot record, with its consumer lag (records, seconds)."""
        value = self.online_metric
        return {
            "partition": self.partition,
            "shard": self.shard,
            "metric": metric,
            "online_metric": value if value == value else None,  # NaN -> null
            "predictions": self.predictions,
            "labels_learned": self.labels_learned,
            "label_coverage": self.label_coverage,
            "pending_predictions": self.pending_predictions,
            "resident_models": self.resident_models,
            "parked_models": self.parked_models,
            "drift_open": dict(self.drift_open),
            "drift_keys_open_ratio": self.drift_keys_open_ratio,
            "lag_records": lag[0],
            "lag_seconds": lag[1],
        }


class Reporter:
    """Alerts, drift and lag gauges, and snapshots of one service.

    Parameters
    ----------
    settings
        ``[metrics]`` intervals; the worker's name.
    metrics, source, sink
        Where gauges go, where lag is read, where records are written.
    clock, wall_clock
        Monotonic and epoch seconds.
    worker
        The worker's name in snapshot records.
    metric
        The online metric's name (the gauge's label, the snapshot's ``metric``).
    """

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        source: Source,
        sink: Sink,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        worker: str,
        metric: str,
    ) -> None:
        self.settings = settings.metrics
        self.metrics = metrics
        self.source = source
        self.sink = sink
        self._clock = clock
        self._wall_clock = wall_clock
        self._worker = worker
        self._metric = metric
        metrics.history.worker = worker
        self._lag_due = -float("inf")
        self._last_ts: dict[TopicPartition, float] = {}
        self._lag: dict[str, tuple[int, float]] = {}
        self._gauges_due = self._memory_due = -float("inf")
        started = clock()
        self._snapshot_at = started
        self._snapshot_records = 0

    # -- alerts --------------------------------------------------------------------------

    def alerts(self, shard: str, alerts: Sequence[Alert]) -> None:
        """Write the alerts a live record of shard ``shard`` raised, in order."""
        for alert in alerts:
            record = alert.to_dict(shard)
            self.sink.send(
                "alerts",
                (alert.key or "").encode("utf-8"),
                orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS),
            )
            self.metrics.history.alert(record, self._wall_clock())
            self.metrics.drift_alerts.labels(severity=alert.severity, signal=alert.signal).inc()
            if alert.signal == "model":
                self.metrics.model_actions.labels(action=alert.action).inc()
            log.log(
                logging.WARNING if alert.severity in ("warning", "drift") else logging.INFO,
                "shard %s: %s", shard, alert.message,
            )

    # -- per-shard gauges ----------------------------------------------------------------

    def gauges(self, shards: Mapping[TopicPartition, Shard], force: bool = False) -> None:
        """Set every shard's gauges, when due: metric, coverage, buffers, models, drift.

        At most every :data:`GAUGES_INTERVAL_S` unless ``force``; the memory
        estimate at most every ``metrics.memory_interval_s``.
        """
        now = self._clock()
        if not force and now < self._gauges_due:
            return
        self._gauges_due = now + GAUGES_INTERVAL_S
        memory = now >= self._memory_due
        if memory:
            self._memory_due = now + self.settings.memory_interval_s
        for tp, shard in shards.items():
            ShardStats.of(tp, shard, memory).set_gauges(self.metrics, self._metric)

    def forget(self, partition: str) -> None:
        """Remove a revoked partition's series."""
        self.metrics.forget_partition(partition, MONITORED)
        self._lag.pop(partition, None)

    # -- lag -----------------------------------------------------------------------------

    def seen(self, records: Sequence[Record]) -> None:
        """Remember the timestamp of the last record of each partition in a batch."""
        for record in records:
            self._last_ts[(record.origin.topic, record.origin.partition)] = (
                record.timestamp_ms / 1000.0
            )

    def lag(self, shards: Mapping[TopicPartition, Shard], now: float) -> bool:
        """Measure the consumer lag of every shard, when ``metrics.lag_interval_s`` is up.

        The live page's sample goes with it. True when both were taken.
        """
        if now < self._lag_due or not shards:
            return False
        self._lag_due = now + self.settings.lag_interval_s
        positions = {tp: pos for shard in shards.values() for tp, pos in shard.position.items()}
        behind = self.source.lag(positions)
        wall = self._wall_clock()
        for (_topic, partition), shard in shards.items():
            records, seconds = 0, 0.0
            for tp in shard.position:
                n = behind.get(tp, 0)
                records += n
                last = self._last_ts.get(tp)
                if n and last:
                    seconds = max(seconds, wall - last)
            p = str(partition)
            self._lag[p] = (records, seconds)
            self.metrics.lag_records.labels(partition=p).set(records)
            self.metrics.lag_seconds.labels(partition=p).set(seconds)
        if self.metrics.history.due(now):
            stats = [ShardStats.of(tp, shard) for tp, shard in sorted(shards.items())]
            self.metrics.history.sample(shards, stats, self._lag, now, wall)
        return True

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_due(
        self, shards: Mapping[TopicPartition, Shard], totals: Callable[[], Mapping[str, Any]]
    ) -> bool:
        """Send a snapshot record when ``metrics.snapshot_interval_s`` has passed.

        ``totals()`` gives the run's counts (only called when a snapshot is due).
        True when one was sent (not yet durable: the loop's next commit covers it).
        """
        interval = self.settings.snapshot_interval_s
        now = self._clock()
        if not interval or now - self._snapshot_at < interval:
            return False
        self.send_snapshot(shards, totals(), now)
        return True

    def send_snapshot(
        self, shards: Mapping[TopicPartition, Shard], totals: Mapping[str, Any], now: float
    ) -> None:
        """Send a snapshot record to the ``metrics`` output now."""
        self.sink.send("metrics", self._worker.encode("utf-8"), self.snapshot(shards, totals, now))
        self.metrics.snapshots.inc()

    def snapshot(
        self, shards: Mapping[TopicPartition, Shard], totals: Mapping[str, Any], now: float
    ) -> bytes:
        """The snapshot record (and start the next interval)."""
        elapsed = max(now - self._snapshot_at, 1e-9)
        records = int(totals.get("records", 0))
        rate = (records - self._snapshot_records) / elapsed
        self._snapshot_at, self._snapshot_records = now, records
        doc = {
            "schema_version": SNAPSHOT_SCHEMA_VERSION,
            "worker": self._worker,
            "ts": self._wall_clock(),
            "interval_s": elapsed,
            "records_per_s": rate,
            "totals": dict(totals),
            "partitions": [
                ShardStats.of(tp, shard).record(self._metric, self._lag.get(str(tp[1]), (0, 0.0)))
                for tp, shard in shards.items()
            ],
        }
        return orjson.dumps(doc)
