"""The live page's memory: samples of what the worker already measures, a few minutes of them.

The :class:`~stream_learner.reporting.Reporter` calls :meth:`History.sample`
when it measures consumer lag (at most once per ``metrics.lag_interval_s``,
and the history keeps at most one sample per :data:`SAMPLE_INTERVAL_S`), and
:meth:`History.alert` for each alert it writes. Nothing here runs per event.
A sample reads the Prometheus counters and histograms the loop already keeps
and the shards' own counters, on the loop's thread; the HTTP thread only
copies the finished samples (under a lock) and serialises them when a page
asks (:meth:`History.document`). With nobody watching, nothing is serialised.

Latency quantiles come from the bucket counts the histogram gained since the
previous sample, interpolated within a bucket as Prometheus'
``histogram_quantile`` does.

Examples
--------
>>> bucket_quantile([0.1, 1.0, float("inf")], [0, 10, 10], 0.5)
0.55
>>> bucket_quantile([0.1, 1.0, float("inf")], [0, 0, 0], 0.5) is None
True
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import Counter, Histogram
from prometheus_client.samples import Sample

from stream_learner.labels import LabelStats

if TYPE_CHECKING:
    from stream_learner.metrics import Metrics
    from stream_learner.recovery import Shard
    from stream_learner.reporting import ShardStats
    from stream_learner.scopes import ModelScope
    from stream_learner.sources import TopicPartition

__all__ = [
    "ALERTS_KEPT",
    "DASHBOARD_SCHEMA_VERSION",
    "FLEET_SCAN_SHARE",
    "SAMPLES_KEPT",
    "SAMPLE_INTERVAL_S",
    "History",
    "bucket_quantile",
    "dashboard_response",
    "empty_parts",
]

#: Version of the JSON document (``stream_learner/schemas/dashboard.json``).
DASHBOARD_SCHEMA_VERSION = 1
#: Least seconds between two samples.
SAMPLE_INTERVAL_S = 1.0
#: Samples kept: ten minutes at one a second.
SAMPLES_KEPT = 600
#: Most recent alerts kept for the drift timeline.
ALERTS_KEPT = 500
#: Most of the loop's time the samples may spend reading a shard's resident models (their
#: generation and challengers): a read that took t seconds is not repeated for
#: t / FLEET_SCAN_SHARE seconds. A few thousand models are read at every sample; 100,000
#: take about 0.1 s, so a fleet that large shows them every few seconds.
FLEET_SCAN_SHARE = 0.02


def bucket_quantile(bounds: Sequence[float], cumulative: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a histogram given its cumulative bucket counts (None when empty).

    Linear within the bucket that holds the quantile, from 0 below the first
    bound; the last finite bound when it falls in the ``+Inf`` bucket.
    """
    total = cumulative[-1] if cumulative else 0
    if total <= 0:
        return None
    rank = q * total
    below, lower = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        below, lower = count, bound
    return lower


def _samples(metric: Counter | Histogram) -> list[Sample]:
    return [sample for family in metric.collect() for sample in family.samples]


def _buckets(histogram: Histogram) -> tuple[list[float], list[float]]:
    """Upper bounds and cumulative counts of an unlabelled histogram."""
    bounds: list[float] = []
    counts: list[float] = []
    for sample in _samples(histogram):
        if sample.name.endswith("_bucket"):
            bounds.append(float(sample.labels["le"]))
            counts.append(sample.value)
    return bounds, counts


def _by_label(counter: Counter, *labels: str) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[name] for name in labels): s.value
        for s in _samples(counter)
        if s.name.endswith("_total")
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _quantiles(histogram: Histogram) -> dict[str, float | None]:
    bounds, counts = _buckets(histogram)
    return {"p50": bucket_quantile(bounds, counts, 0.5), "p99": bucket_quantile(bounds, counts, 0.99)}


def _partition(stats: ShardStats, lag: Mapping[str, tuple[int, float]]) -> dict[str, Any]:
    """One partition's row of the page, from the figures its gauges show."""
    lag_records, lag_seconds = lag.get(str(stats.partition), (0, 0.0))
    return {
        "partition": stats.partition,
        "shard": stats.shard,
        "online_metric": _finite(stats.online_metric),
        "predictions": stats.predictions,
        "labels_learned": stats.labels_learned,
        "label_coverage": stats.label_coverage,
        "pending_predictions": stats.pending_predictions,
        "mean_delay_events": stats.mean_delay_events,
        "mean_delay_seconds": stats.mean_delay_seconds,
        "lag_records": lag_records,
        "lag_seconds": lag_seconds,
    }


def _fleet(models: ModelScope) -> tuple[int, str]:
    """The resident models' largest generation, and what their challengers are doing in a
    few words; one pass over them."""
    generation, states = 0, []
    for slot in models.resident():
        generation = max(generation, slot.generation)
        challenger = getattr(slot.drift, "challenger", None)
        if challenger is not None:
            states.append(challenger)
    if not states:
        return generation, "none"
    if len(states) == 1:
        c = states[0]
        doing = "reset on trial" if c.fallback else "armed" if c.armed else "training"
        return generation, f"{doing} on {c.series}: {c.n_labels} labels"
    trials = sum(1 for c in states if c.fallback)
    challengers = len(states) - trials
    armed = sum(1 for c in states if c.armed and not c.fallback)
    parts = []
    if challengers:
        parts.append(f"{challengers} challenger{'s' * (challengers > 1)} ({armed} armed)")
    if trials:
        parts.append(f"{trials} reset{'s' * (trials > 1)} on trial")
    return generation, ", ".join(parts)


class History:
    """Samples and alerts for the live page, bounded, shared by the loop and the HTTP thread.

    Parameters
    ----------
    metrics
        The registry the samples read (records, latency, labels, dead letters).
    worker
        The worker's name on the page.
    """

    def __init__(self, metrics: Metrics, worker: str = "") -> None:
        self.metrics = metrics
        self.worker = worker
        self._lock = threading.Lock()
        self._samples: deque[dict[str, Any]] = deque(maxlen=SAMPLES_KEPT)
        self._alerts: deque[dict[str, Any]] = deque(maxlen=ALERTS_KEPT)
        self._latest: dict[str, Any] = {}
        self._due = -math.inf
        self._last: tuple[float, float, list[float]] | None = None  # mono, records, buckets
        #: per shard: when its models may be read again, their generation and challengers
        self._scans: dict[str, tuple[float, int, str]] = {}

    # -- the loop's thread ---------------------------------------------------------------

    def alert(self, record: Mapping[str, Any], wall: float) -> None:
        """Remember an alert record (the alert schema's object) written at ``wall``."""
        with self._lock:
            self._alerts.append({**record, "written_at": wall})

    def due(self, now: float) -> bool:
        """True when :data:`SAMPLE_INTERVAL_S` has passed since the last sample."""
        return now >= self._due

    def sample(
        self,
        shards: Mapping[TopicPartition, Shard],
        stats: Sequence[ShardStats],
        lag: Mapping[str, tuple[int, float]],
        now: float,
        wall: float,
    ) -> bool:
        """Take a sample when :data:`SAMPLE_INTERVAL_S` has passed; True if one was taken.

        ``stats`` are the shards' figures as the gauges and snapshots show them
        (:class:`~stream_learner.reporting.ShardStats`), in partition order.
        """
        if not self.due(now):
            return False
        self._due = now + SAMPLE_INTERVAL_S
        records = sum(_by_label(self.metrics.records, "outcome").values())
        point = self._rates(records, now, wall)
        partitions = [_partition(one, lag) for one in stats]
        point["online_metric"] = {str(p["partition"]): p["online_metric"] for p in partitions}
        point["lag_records"] = {str(p["partition"]): p["lag_records"] for p in partitions}
        dead = _by_label(self.metrics.dead_letters, "output", "reason")
        latest = {
            "metric": next((type(s.learner.metric).__name__ for s in shards.values()), ""),
            "totals": self._totals(records),
            "partitions": partitions,
            "labels": self._labels(shards),
            "dead_letters": [{"output": output, "reason": reason, "count": int(count)}
                             for (output, reason), count in sorted(dead.items())],
            "models": [self._model(shard, now) for _tp, shard in sorted(shards.items())],
        }
        owned = {shard.id for shard in shards.values()}  # a shard given back is read afresh
        self._scans = {sid: scan for sid, scan in self._scans.items() if sid in owned}
        with self._lock:
            self._samples.append(point)
            self._latest = latest
        return True

    def _rates(self, records: float, now: float, wall: float) -> dict[str, Any]:
        """Records/s and latency quantiles since the previous sample (None for the first)."""
        bounds, counts = _buckets(self.metrics.event_latency)
        point: dict[str, Any] = {"ts": wall, "records_per_s": None,
                                 "latency_p50_ms": None, "latency_p99_ms": None}
        if self._last is not None:
            then, before, old = self._last
            point["records_per_s"] = (records - before) / max(now - then, 1e-9)
            delta = [c - o for c, o in zip(counts, old, strict=True)]
            for name, q in (("latency_p50_ms", 0.5), ("latency_p99_ms", 0.99)):
                value = bucket_quantile(bounds, delta, q)
                point[name] = None if value is None else value * 1000.0
        self._last = (now, records, counts)
        return point

    def _totals(self, records: float) -> dict[str, int]:
        by_outcome = _by_label(self.metrics.records, "outcome")
        return {
            "records": int(records),
            "predictions": int(by_outcome.get(("prediction",), 0)),
            "label_records": int(by_outcome.get(("label",), 0)),
            "dead_letters": int(by_outcome.get(("dead_letter",), 0)),
            "labels_learned": int(sum(_by_label(self.metrics.labels_learned).values())),
        }

    def _labels(self, shards: Mapping[TopicPartition, Shard]) -> dict[str, Any]:
        stats = LabelStats.total(s.learner.book.stats for s in shards.values()).to_dict()
        return {
            "coverage": stats["coverage"],
            "labelled": int(stats["labelled"]),
            "expired": int(stats["expired_pending"] + stats["expired_early"]),
            "delay_events": _quantiles(self.metrics.label_delay_events),
            "delay_seconds": _quantiles(self.metrics.label_delay_seconds),
        }

    def _model(self, shard: Shard, now: float) -> dict[str, Any]:
        learner = shard.learner
        info = learner.spec.settings
        due, generation, challenger = self._scans.get(shard.id, (-math.inf, 0, "none"))
        if now >= due:
            started = time.perf_counter()
            generation, challenger = _fleet(learner.models)
            took = time.perf_counter() - started
            self._scans[shard.id] = (now + took / FLEET_SCAN_SHARE, generation, challenger)
        return {
            "shard": shard.id,
            "name": info.name,
            "version": info.version,
            "generation": generation,
            "n_learned": learner.n_learned,
            "models": learner.models.n_resident + learner.models.n_parked,
            "challenger": challenger,
        }

    # -- the HTTP thread -----------------------------------------------------------------

    def document(self, generated_at: float) -> dict[str, Any]:
        """The dashboard document (``schemas/dashboard.json``) of what was sampled so far."""
        with self._lock:
            series = list(self._samples)
            alerts = list(self._alerts)
            latest = dict(self._latest)
        return {
            "schema_version": DASHBOARD_SCHEMA_VERSION,
            "source": "live",
            "worker": self.worker,
            "generated_at": generated_at,
            **empty_parts(),
            **latest,
            "series": series,
            "alerts": alerts,
        }


def dashboard_response(path: str, history: History) -> tuple[bytes, str]:
    """Body and content type of the live page (``/``) or its document (``/api/v1/dashboard``)."""
    if path == "/":
        from stream_learner.dashboard.page import render_page

        return render_page().encode("utf-8"), "text/html; charset=utf-8"
    body = orjson.dumps(history.document(time.time()), option=orjson.OPT_NON_STR_KEYS)
    return body, "application/json"


def empty_parts() -> dict[str, Any]:
    """The document's tables before anything was measured."""
    none = {"p50": None, "p99": None}
    return {
        "metric": "",
        "totals": dict.fromkeys(
            ("records", "predictions", "label_records", "dead_letters", "labels_learned"), 0),
        "partitions": [],
        "labels": {"coverage": 0.0, "labelled": 0, "expired": 0,
                   "delay_events": dict(none), "delay_seconds": dict(none)},
        "dead_letters": [],
        "models": [],
    }
