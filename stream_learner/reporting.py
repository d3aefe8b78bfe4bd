"""The operator's view of a running service: alerts, drift gauges, lag, snapshots.

A :class:`Reporter` belongs to the :class:`~stream_learner.service.Service`.
It writes the alerts a live record raised (the record's
:data:`~stream_learner.learner.Outcome`) to the ``alerts`` output, keeps the drift
and consumer-lag gauges, and writes a metrics snapshot record to the ``metrics``
output every ``metrics.snapshot_interval_s`` seconds.

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
from typing import Any

import orjson

from stream_learner.drift import MONITORED, Alert
from stream_learner.metrics import Metrics
from stream_learner.recovery import Shard
from stream_learner.settings import Settings
from stream_learner.sinks import Sink
from stream_learner.sources import Record, Source, TopicPartition

__all__ = ["SNAPSHOT_SCHEMA_VERSION", "Reporter"]

log = logging.getLogger(__name__)

SNAPSHOT_SCHEMA_VERSION = 1


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
    ) -> None:
        self.settings = settings.metrics
        self.metrics = metrics
        self.source = source
        self.sink = sink
        self._clock = clock
        self._wall_clock = wall_clock
        self._worker = worker
        metrics.history.worker = worker
        self._lag_due = -float("inf")
        self._last_ts: dict[TopicPartition, float] = {}
        self._lag: dict[str, tuple[int, float]] = {}
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
            log.log(
                logging.WARNING if alert.severity in ("warning", "drift") else logging.INFO,
                "shard %s: %s", shard, alert.message,
            )

    def drift_gauges(self, partition: str, shard: Shard) -> None:
        """Monitors in drift per signal, and the share of models drifting."""
        learner = shard.learner
        for signal, count in learner.drift.open_counts().items():
            self.metrics.drift_open.labels(partition=partition, signal=signal).set(count)
        n_models = learner.models.n_resident + learner.models.n_parked
        share = learner.drift.n_open_keys / n_models if n_models else 0.0
        self.metrics.drift_keys_open.labels(partition=partition).set(share)

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
        self.metrics.history.sample(shards, self._lag, now, wall)
        return True

    # -- snapshots -----------------------------------------------------------------------

    def snapshot_due(
        self, shards: Mapping[TopicPartition, Shard], totals: Mapping[str, Any], metric: str
    ) -> bool:
        """Write a snapshot record when ``metrics.snapshot_interval_s`` has passed."""
        interval = self.settings.snapshot_interval_s
        now = self._clock()
        if not interval or now - self._snapshot_at < interval:
            return False
        self.sink.send("metrics", self._worker.encode("utf-8"), self.snapshot(shards, totals,
                                                                               metric, now))
        self.metrics.snapshots.inc()
        return True

    def snapshot(
        self,
        shards: Mapping[TopicPartition, Shard],
        totals: Mapping[str, Any],
        metric: str,
        now: float,
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
            "partitions": [self._partition(tp, shard, metric) for tp, shard in shards.items()],
        }
        return orjson.dumps(doc)

    def _partition(self, tp: TopicPartition, shard: Shard, metric: str) -> dict[str, Any]:
        learner = shard.learner
        lag_records, lag_seconds = self._lag.get(str(tp[1]), (0, 0.0))
        n_models = learner.models.n_resident + learner.models.n_parked
        value = learner.metric_value
        return {
            "partition": tp[1],
            "shard": shard.id,
            "metric": metric,
            "online_metric": value if value == value else None,  # NaN -> null
            "predictions": learner.n_predicted,
            "labels_learned": learner.n_learned,
            "label_coverage": learner.book.stats.coverage,
            "pending_predictions": len(learner.book.pending),
            "resident_models": learner.models.n_resident,
            "parked_models": learner.models.n_parked,
            "drift_open": learner.drift.open_counts(),
            "drift_keys_open_ratio": learner.drift.n_open_keys / n_models if n_models else 0.0,
            "lag_records": lag_records,
            "lag_seconds": lag_seconds,
        }
