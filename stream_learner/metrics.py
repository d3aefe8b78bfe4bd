"""Every Prometheus metric of the service, declared once, and the HTTP endpoint.

Metrics live in a registry owned by one :class:`Metrics` object (no global
state, nothing registered at import). Names are ``stream_learner_*`` with
units in the name; labels are low-cardinality (partition, outcome, output,
reason code), never an entity id.

Accounting: ``sum(stream_learner_records_total)`` is every input record handled,
each with exactly one ``outcome``; ``sum(stream_learner_dead_letters_total)``
equals ``stream_learner_records_total{outcome="dead_letter"}`` plus
``stream_learner_inline_labels_rejected_total``.

Besides the service's own metrics, the registry holds the standard
``process_*`` metrics (CPU seconds, resident memory, open file descriptors,
start time; Linux only), ``stream_learner_build_info`` (the versions of
stream-learner, River and Python) and ``stream_learner_model_info`` (name,
version, task and configuration hash of the model being served).

The endpoint serves ``/metrics`` (Prometheus text format), ``/healthz``
(the process is alive), ``/readyz`` (200 only once state is restored and
the worker is consuming), and the live page ``/`` with its JSON document
``/api/v1/dashboard`` (:mod:`stream_learner.dashboard`); each also answers ``HEAD``.

Examples
--------
>>> m = Metrics()
>>> m.records.labels(outcome="prediction").inc(3)
>>> b'stream_learner_records_total{outcome="prediction"} 3.0' in m.render()
True
"""

from __future__ import annotations

import contextlib
import logging
import platform
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from functools import reduce
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, version
from operator import add
from typing import Any, TypeVar, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase

from stream_learner.dashboard.history import History, dashboard_response
from stream_learner.settings import MODEL_ACTIONS, SIGNALS

__all__ = [
    "DELAY_EVENT_BUCKETS",
    "DELAY_SECOND_BUCKETS",
    "LATENCY_BUCKETS",
    "Metrics",
    "MetricsServer",
    "observe_many",
    "try_listen",
]

log = logging.getLogger(__name__)

_Metric = TypeVar("_Metric", bound=MetricWrapperBase)

#: Events scored between an event and its label.
DELAY_EVENT_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000, 100000)
#: Seconds of event time between an event and its label: a second to a week.
DELAY_SECOND_BUCKETS = (0, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400)

#: Seconds; from 100 µs to 10 s, dense where a streaming learner lives.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(v)`` for every ``v`` of ``values``, at a batch's cost.

    The values are added to the sum in their order (so the sum is the very
    float one ``observe`` per value gives) and sorted once, so that one binary
    search per bucket bound counts them per bucket (a batch smaller than the
    number of buckets takes one search per value instead); then the sum is set
    and each bucket that got values is incremented once: a few locked operations
    per batch instead of two per value. Like ``observe``, a
    NaN goes into the sum and no bucket. The histogram must have one writer
    (the service's loop). Falls back to one ``observe`` per value if the
    client library's histogram is not built as expected.

    Examples
    --------
    >>> m = Metrics()
    >>> observe_many(m.event_latency, [0.0002, 0.0003, 0.02, 30.0])
    >>> r = m.registry.get_sample_value
    >>> r("stream_learner_event_latency_seconds_bucket", {"le": "0.0005"}), r(
    ...     "stream_learner_event_latency_seconds_count")
    (2.0, 4.0)
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if not values:
        return
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    acc = reduce(add, values, total.get())  # the same additions in the same order, in C
    if acc != acc:  # a NaN among the values (or already in the sum): it goes in no bucket
        values = [value for value in values if value == value]
    if len(values) < len(bounds):  # a small batch: one search per value, not per bound
        if values and values.count(values[0]) == len(values):  # one value (inline labels: 0)
            buckets[bisect_left(bounds, values[0])].inc(len(values))
            total.set(acc)
            return
        found: dict[int, int] = {}
        for value in values:  # its bucket: the first bound >= value, as observe finds it
            index = bisect_left(bounds, value)
            found[index] = found.get(index, 0) + 1
        for index, n in found.items():
            buckets[index].inc(n)
        total.set(acc)
        return
    ordered = sorted(values)
    below = 0
    for bucket, bound in zip(buckets, bounds, strict=True):
        upto = bisect_right(ordered, bound)  # values <= bound: their first bound >= value
        if upto > below:
            bucket.inc(upto - below)
        below = upto
    total.set(acc)


class Metrics:
    """The service's metrics, in their own registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.build_info = Info(
            "stream_learner_build", "Versions of stream-learner, River and Python.", registry=r
        )
        self.build_info.info({
            "version": _version("stream-learner"), "river": _version("river"),
            "python": platform.python_version(),
        })
        self.model_info = Info(
            "stream_learner_model", "The model being served: name, version, task, config hash.",
            registry=r,
        )
        self.records = Counter(
            "stream_learner_records_total",
            "Input records by outcome: prediction, label (a label record) or dead_letter.",
            ["outcome"], registry=r,
        )
        self.dead_letters = Counter(
            "stream_learner_dead_letters_total",
            "Records written to a dead-letter output (dead_letters: unusable input; "
            "learn_dead_letters: labels that cannot be learned), by reason code.",
            ["output", "reason"], registry=r,
        )
        self.inline_labels_rejected = Counter(
            "stream_learner_inline_labels_rejected_total",
            "Events predicted whose inline label went to learn_dead_letters instead of the model.",
            registry=r,
        )
        self.labels_learned = Counter(
            "stream_learner_labels_learned_total", "Labels the models learned.", registry=r
        )
        self.batches = Counter(
            "stream_learner_batches_total", "Poll batches processed.", registry=r
        )
        self.commits = Counter(
            "stream_learner_commits_total", "Offset commits after a durable flush.", registry=r
        )
        self.event_latency = Histogram(
            "stream_learner_event_latency_seconds",
            "Per event: from the poll that returned it to its prediction being queued.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = Histogram(
            "stream_learner_stage_seconds",
            "Time spent in a stage: process (a batch scored and learned), commit (its outputs "
            "handed over and offsets committed), checkpoint (the loop's pause to save a shard; "
            "a keyed write behind it is not waited for).",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.online_metric = Gauge(
            "stream_learner_online_metric",
            "Progressive-validation metric of the model of each input partition.",
            ["partition", "metric"], registry=r,
        )
        self.partitions = Gauge(
            "stream_learner_assigned_partitions", "Input partitions owned by this worker.",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "stream_learner_checkpoint_duration_seconds",
            "Time to seal and store one shard checkpoint (a keyed write behind the loop included).",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.checkpoint_written = Counter(
            "stream_learner_checkpoint_written_bytes_total",
            "Bytes of checkpoints written to the store (all partitions).",
            registry=r,
        )
        self.checkpoint_bytes = Gauge(
            "stream_learner_checkpoint_size_bytes", "Size of the last checkpoint of a partition.",
            ["partition"], registry=r,
        )
        self.checkpoint_age = Gauge(
            "stream_learner_checkpoint_age_seconds",
            "Seconds since the last successful checkpoint of a partition.",
            ["partition"], registry=r,
        )
        self.checkpoints = Counter(
            "stream_learner_checkpoints_total", "Checkpoint attempts by result (ok, error).",
            ["result"], registry=r,
        )
        self.checkpoint_restore_seconds = Histogram(
            "stream_learner_restore_duration_seconds",
            "Time to load and verify a shard checkpoint at assignment.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.replayed = Counter(
            "stream_learner_replayed_records_total",
            "Records re-processed silently after a restore (between checkpoint and commit).",
            registry=r,
        )
        self.recovery_alerts = Counter(
            "stream_learner_recovery_alerts_total",
            "Recovery problems that need an operator, by kind.",
            ["kind"], registry=r,
        )
        self.ready = Gauge(
            "stream_learner_ready", "1 when the worker has restored state and consumes.",
            registry=r,
        )
        self._declare_label_metrics(r)
        self._declare_model_metrics(r)
        self._declare_drift_metrics(r)

        self.is_ready = False
        self._children: dict[tuple[int, str], MetricWrapperBase] = {}
        self._metric_names: set[str] = set()
        #: what the page at ``/`` shows (sampled by the reporter, read by the HTTP thread)
        self.history = History(self)

    def _declare_label_metrics(self, r: CollectorRegistry) -> None:
        self.labels_joined = Counter(
            "stream_learner_labels_joined_total",
            "Labels applied, by when they were known: inline (in the event), early (a label "
            "record before its event) or late (a label record after its event).",
            ["when"], registry=r,
        )
        self.labels_expired = Counter(
            "stream_learner_labels_expired_total",
            "Buffer entries expired unjoined: pending (a prediction whose label never came) or "
            "early (a label whose event never came).",
            ["buffer"], registry=r,
        )
        self.label_delay_events = Histogram(
            "stream_learner_label_delay_events",
            "Per applied label: events its partition scored after the labelled one.",
            buckets=DELAY_EVENT_BUCKETS, registry=r,
        )
        self.label_delay_seconds = Histogram(
            "stream_learner_label_delay_seconds",
            "Per applied label: seconds of event time from the labelled event to the label.",
            buckets=DELAY_SECOND_BUCKETS, registry=r,
        )
        self.label_coverage = Gauge(
            "stream_learner_label_coverage_ratio",
            "Share of the predictions of each input partition that got a label.",
            ["partition"], registry=r,
        )
        self.pending_predictions = Gauge(
            "stream_learner_pending_predictions",
            "Predictions waiting for their label, per input partition.",
            ["partition"], registry=r,
        )
        self.early_labels = Gauge(
            "stream_learner_early_labels",
            "Labels waiting for their event, per input partition.",
            ["partition"], registry=r,
        )

    def _declare_model_metrics(self, r: CollectorRegistry) -> None:
        self.resident_models = Gauge(
            "stream_learner_resident_models",
            "Models in memory, per input partition (1 unless model.scope is key).",
            ["partition"], registry=r,
        )
        self.parked_models = Gauge(
            "stream_learner_parked_models",
            "Per-key models moved out of memory into the partition's state, per partition.",
            ["partition"], registry=r,
        )
        self.resident_models_bytes = Gauge(
            "stream_learner_resident_models_bytes",
            "Estimated memory of the resident models, per input partition (River's "
            "_raw_memory_usage, refreshed every metrics.memory_interval_s).",
            ["partition"], registry=r,
        )
        self.parked_models_bytes = Gauge(
            "stream_learner_parked_models_bytes",
            "Size of the parked models' entries, per input partition.",
            ["partition"], registry=r,
        )

    def _declare_drift_metrics(self, r: CollectorRegistry) -> None:
        self.drift_alerts = Counter(
            "stream_learner_drift_alerts_total",
            "Alert records written to the alerts output, by severity (warning, drift, resolved, "
            "info) and signal (error, feature, prediction, schema, model).",
            ["severity", "signal"], registry=r,
        )
        for severity in ("warning", "drift", "resolved"):  # exported at 0 before the first alert
            for signal in SIGNALS:
                self.drift_alerts.labels(severity=severity, signal=signal)
        self.drift_alerts.labels(severity="info", signal="model")
        self.model_actions = Counter(
            "stream_learner_model_actions_total",
            "Drift actions on the models (the info alert records of signal model), by action: "
            "reset, reset_undone, reset_kept (a reset's trial), promoted, champion_kept "
            "(a challenger's decision).",
            ["action"], registry=r,
        )
        for action in MODEL_ACTIONS:
            self.model_actions.labels(action=action)
        self.drift_open = Gauge(
            "stream_learner_drift_open",
            "Monitors in drift (confirmed, not resolved yet), per input partition and signal.",
            ["partition", "signal"], registry=r,
        )
        self.drift_keys_open = Gauge(
            "stream_learner_drift_keys_open_ratio",
            "Share of the models of an input partition (one per key with model.scope = key) "
            "with at least one monitor in drift.",
            ["partition"], registry=r,
        )
        self.lag_records = Gauge(
            "stream_learner_consumer_lag_records",
            "Records of an input partition (events and labels) not processed yet.",
            ["partition"], registry=r,
        )
        self.lag_seconds = Gauge(
            "stream_learner_consumer_lag_seconds",
            "Seconds since the timestamp of the last processed record of an input partition "
            "while records wait behind it (0 when none wait).",
            ["partition"], registry=r,
        )
        self.snapshots = Counter(
            "stream_learner_metrics_snapshots_total",
            "Metrics snapshot records written to the metrics output.", registry=r,
        )

    def forget_partition(self, partition: str, signals: tuple[str, ...] = ()) -> None:
        """Remove every per-partition series of ``partition`` (a revoked partition).

        Examples
        --------
        >>> m = Metrics()
        >>> m.lag_records.labels(partition="3").set(5)
        >>> m.drift_open.labels(partition="3", signal="error").set(1)
        >>> m.forget_partition("3", signals=("error",))
        >>> b'partition="3"' in m.render()
        False
        """
        single = (
            self.label_coverage, self.pending_predictions, self.early_labels,
            self.resident_models, self.parked_models, self.resident_models_bytes,
            self.parked_models_bytes, self.checkpoint_age, self.checkpoint_bytes,
            self.drift_keys_open, self.lag_records, self.lag_seconds,
        )
        pairs = [(self.drift_open, signal) for signal in signals]
        pairs += [(self.online_metric, name) for name in self._metric_names]
        for gauge in single:
            with contextlib.suppress(KeyError):
                gauge.remove(partition)
        for gauge, other in pairs:
            with contextlib.suppress(KeyError):
                gauge.remove(partition, other)

    def set_online_metric(self, partition: str, name: str, value: float) -> None:
        """Set the online metric gauge (and remember the name, to forget it later)."""
        self._metric_names.add(name)
        self.online_metric.labels(partition=partition, metric=name).set(value)

    def set_info(self, spec: Any) -> None:
        """Describe the served model (a :class:`~stream_learner.models.ModelSpec`)."""
        self.model_info.info({
            "name": spec.settings.name, "version": str(spec.settings.version),
            "task": spec.task, "config_hash": spec.config_hash,
        })

    def child(self, metric: _Metric, value: str) -> _Metric:
        """``metric.labels(value)`` of a one-label metric, looked up once (the loop asks
        for the same children every poll batch).

        Examples
        --------
        >>> m = Metrics()
        >>> m.child(m.stage_latency, "commit") is m.child(m.stage_latency, "commit")
        True
        """
        key = (id(metric), value)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(value)
        return cast(_Metric, found)

    def set_ready(self, ready: bool) -> None:
        """Mark the worker ready (state restored, consuming) or not."""
        self.is_ready = ready
        self.ready.set(1.0 if ready else 0.0)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:  # a source tree that is not installed
        return "0.0.0"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        self._head = head
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, self.server.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply(200, b"ok\n")
        elif path == "/readyz":
            ready = self.server.metrics.is_ready
            self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
        elif path in ("/", "/api/v1/dashboard"):  # the live page (docs/dashboard.md)
            body, ctype = dashboard_response(path, self.server.metrics.history)
            self._reply(200, body, ctype)
        else:
            self._reply(404, b"not found\n")

    def _reply(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not getattr(self, "_head", False):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics endpoint: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    metrics: Metrics


def try_listen(host: str, port: int) -> None:
    """Bind ``host:port`` as :class:`MetricsServer` does, then release it at once.

    Raises
    ------
    OSError
        The address cannot be bound: the port is in use, or ``host`` is no
        address of this machine.
    """
    _Server((host, port), _Handler).server_close()


class MetricsServer:
    """Serves a :class:`Metrics` over HTTP from a daemon thread.

    Parameters
    ----------
    metrics
        What ``/metrics`` shows and ``/readyz`` reads.
    host, port
        Bind address; ``port=0`` picks a free port (see :attr:`port`).
    """

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._server = _Server((host, port), _Handler)
        self._server.metrics = metrics
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )

    @property
    def host(self) -> str:
        """The bound address (``metrics.host``; loopback by default)."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Start serving; returns self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
