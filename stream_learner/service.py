"""The loop: source -> decode -> learner -> sink -> flush -> commit.

One :class:`Service` owns the shards of the partitions assigned to it (one
:class:`~stream_learner.learner.Learner` each). Per poll batch it decodes
every record, scores events and joins labels, queues one prediction per event
and one dead letter per unusable record, then flushes the sink and only then
commits the offsets the batch covered. A crash therefore never commits an
offset whose outputs were not durable (at-least-once).

With a labels topic (``kafka.labels_topic``), partition ``p`` of that topic
belongs to the shard of partition ``p`` of the events topic: the two topics
are co-partitioned and the Kafka source assigns them together.

:meth:`Service.stop` (wired to SIGTERM / SIGINT by the CLI) lets the current
batch finish, flush and commit before :meth:`Service.run` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stream_learner.errors import InvalidRecord
from stream_learner.events import Codec, encode_prediction
from stream_learner.labels import LabelStats
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.scopes import memory_bytes
from stream_learner.settings import Settings
from stream_learner.sinks import Sink, dead_letter_headers
from stream_learner.sources import Record, Source, TopicPartition

__all__ = ["Service", "Summary"]

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did; printed by ``stream-learner run`` at the end."""

    records: int = 0
    predictions: int = 0
    labels: int = 0
    dead_letters: int = 0
    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    metric_name: str = ""
    #: label counters, coverage and mean delays over the shards owned at the end
    labelling: dict[str, float] = field(default_factory=dict)
    #: resident / parked models and their size over the shards owned at the end
    models: dict[str, int] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        """Input records per second of wall time."""
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """The summary as a JSON-ready object."""
        return {
            "records": self.records,
            "predictions": self.predictions,
            "labels": self.labels,
            "dead_letters": self.dead_letters,
            "elapsed_s": self.elapsed_s,
            "events_per_s": self.events_per_s,
            "metric": self.metric_name,
            "online_metric": self.metrics,
            "labelling": self.labelling,
            "models": self.models,
        }

    def render(self) -> str:
        """A short human summary."""
        quality = ", ".join(f"{shard}: {value:.4f}" for shard, value in self.metrics.items())
        lab = self.labelling
        expired = int(lab.get("expired_pending", 0) + lab.get("expired_early", 0))
        return (
            f"{self.records} records in {self.elapsed_s:.2f}s ({self.events_per_s:,.0f} events/s): "
            f"{self.predictions} predictions, {self.labels} labels learned "
            f"(coverage {lab.get('coverage', 0.0):.1%}, {expired} expired), "
            f"{self.dead_letters} dead letters; online {self.metric_name}: {quality or 'n/a'}"
        )


class Service:
    """Wires a source, the learners of its partitions, a sink and metrics.

    Parameters
    ----------
    settings
        The frozen settings.
    spec
        Builds each shard's model and metric.
    source, sink
        The edges; see :mod:`stream_learner.sources` and :mod:`stream_learner.sinks`.
    metrics
        Where measurements go.
    clock
        Monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        source: Source,
        sink: Sink,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.source = source
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.codec = Codec(settings.schema_, settings.limits, spec.task)
        self.shards: dict[TopicPartition, Learner] = {}
        #: next offset each shard's state expects; a record at another offset means the
        #: state is stale (the partition was processed elsewhere in between).
        self._expected: dict[TopicPartition, int] = {}
        self._parked: dict[TopicPartition, Learner] = {}
        self._uncommitted: dict[TopicPartition, int] = {}
        self._labels_topic = settings.kafka.labels_topic
        self._events_topic = settings.kafka.events_topic
        self._memory_due = -float("inf")
        self._clock = clock
        self._wall_clock = wall_clock
        self._stopping = False
        self._metric_name = type(spec.build_metric()).__name__
        self.summary = Summary(metric_name=self._metric_name)

    # -- partition lifecycle (called by the source, inside poll) -------------------

    def shard_of(self, tp: TopicPartition) -> TopicPartition:
        """The shard a partition's records go to: labels partition p -> events partition p."""
        if tp[0] == self._labels_topic:
            return (self._events_topic, tp[1])
        return tp

    def _new_learner(self) -> Learner:
        return Learner(self.spec, self.settings.labels)

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Create a shard for each newly owned partition (or take back a parked one)."""
        for shard in {self.shard_of(tp) for tp in partitions}:
            if shard not in self.shards:
                parked = shard in self._parked
                self.shards[shard] = self._parked.pop(shard) if parked else self._new_learner()
        self.metrics.partitions.set(len(self.shards))
        log.info("assigned partitions %s", list(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Make outputs durable, commit, and release the shards of ``partitions``."""
        self._flush_and_commit()
        for tp in {self.shard_of(tp) for tp in partitions}:
            learner = self.shards.pop(tp, None)
            if learner is not None:
                # Kept in case the partition comes straight back; the offset check in
                # process_batch discards it if anyone else processed the partition since.
                self._parked[tp] = learner
        self.metrics.partitions.set(len(self.shards))
        log.info("revoked partitions %s", list(partitions))

    # -- the loop ---------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the current batch, flush, commit and return."""
        self._stopping = True

    def run(self) -> Summary:
        """Consume until the input ends, ``max_events`` is reached, or :meth:`stop`."""
        svc = self.settings.service
        started = self._clock()
        last_record = started
        self.source.subscribe(self)
        self.metrics.set_ready(True)
        try:
            while not self._stopping:
                budget = svc.batch_size
                if svc.max_events:
                    budget = min(budget, svc.max_events - self.summary.records)
                    if budget <= 0:
                        break
                records = self.source.poll(budget, svc.poll_timeout_ms)
                now = self._clock()
                if records:
                    last_record = now
                    self.process_batch(records, now)
                    self._flush_and_commit()
                elif self.source.exhausted:
                    break
                elif svc.idle_timeout_s and now - last_record >= svc.idle_timeout_s:
                    log.info("no records for %.1fs; stopping", svc.idle_timeout_s)
                    break
            self._flush_and_commit()
        finally:
            self.metrics.set_ready(False)
            self._finish_summary(started)
        return self.summary

    def _finish_summary(self, started: float) -> None:
        s = self.summary
        s.elapsed_s = self._clock() - started
        s.metrics = {f"{t}[{p}]": learner.metric_value for (t, p), learner in self.shards.items()}
        s.labelling = LabelStats.total(lr.book.stats for lr in self.shards.values()).to_dict()
        s.models = {
            "resident": sum(lr.models.n_resident for lr in self.shards.values()),
            "parked": sum(lr.models.n_parked for lr in self.shards.values()),
            "parked_bytes": sum(lr.models.parked_bytes for lr in self.shards.values()),
            "resident_bytes_estimate": sum(memory_bytes(lr.models) for lr in self.shards.values()),
        }

    def process_batch(self, records: Sequence[Record], received_at: float) -> None:
        """Decode, score and learn every record; queue outputs (not yet durable)."""
        codec, sink, clock = self.codec, self.sink, self._clock
        shards = self.shards
        latencies: list[float] = []
        n_pred = n_label = n_dead = 0
        for record in records:
            tp = (record.origin.topic, record.origin.partition)
            shard = self.shard_of(tp)
            learner = shards.get(shard)
            if learner is None:  # a record of a partition revoked mid-batch
                continue
            offset = record.origin.offset
            if self._expected.get(tp, offset) != offset:
                learner = self._replace_stale(tp, shard, offset)
            self._expected[tp] = offset + 1
            try:
                item = codec.decode(record.value, record.key, record.timestamp_ms, record.origin)
                prediction = learner.process(item)
            except InvalidRecord as error:
                self._dead_letter(record, error)
                n_dead += 1
            else:
                if prediction is None:
                    n_label += 1
                else:
                    latency = clock() - received_at
                    latencies.append(latency)
                    sink.send(
                        "predictions",
                        prediction.key.encode("utf-8"),
                        encode_prediction(prediction, latency * 1000.0),
                    )
                    n_pred += 1
            self._uncommitted[tp] = record.origin.offset + 1
        n_learned = self._drain_labels()
        self._record_batch(len(records), n_pred, n_label, n_dead, n_learned, latencies, received_at)

    def _replace_stale(self, tp: TopicPartition, shard: TopicPartition, offset: int) -> Learner:
        log.warning(
            "state of %s[%d] expected offset %d but the partition resumes at %d: "
            "it was processed elsewhere, starting a fresh model",
            tp[0], tp[1], self._expected[tp], offset,
        )
        self.metrics.stale_states.inc()
        learner = self.shards[shard] = self._new_learner()
        return learner

    def _drain_labels(self) -> int:
        """Report the labels the shards applied and the entries they expired; return applied."""
        m = self.metrics
        applied = 0
        for learner in self.shards.values():
            delays = learner.book.drain_delays()
            applied += len(delays)
            for when, events, seconds in delays:
                m.labels_joined.labels(when=when).inc()
                m.label_delay_events.observe(events)
                m.label_delay_seconds.observe(seconds)
            for expired in learner.book.drain_expired():
                m.labels_expired.labels(buffer=expired.buffer).inc()
                log.debug("expired %s entry %r of key %r", expired.buffer, expired.id, expired.key)
        return applied

    def _dead_letter(self, record: Record, error: InvalidRecord) -> None:
        headers = dead_letter_headers(record, error, self._wall_clock())
        self.sink.send("dead_letters", record.key, record.value or b"", headers)
        self.metrics.dead_letters.labels(reason=error.reason).inc()
        log.debug("dead letter at %s: %s", record.origin, error)

    def _record_batch(
        self,
        n: int,
        n_pred: int,
        n_label: int,
        n_dead: int,
        n_learned: int,
        latencies: list[float],
        t0: float,
    ) -> None:
        s, m = self.summary, self.metrics
        s.records += n
        s.predictions += n_pred
        s.labels += n_learned
        s.dead_letters += n_dead
        m.labels_learned.inc(n_learned)
        m.batches.inc()
        m.records.labels(outcome="prediction").inc(n_pred)
        m.records.labels(outcome="label").inc(n_label)
        m.records.labels(outcome="dead_letter").inc(n_dead)
        observe = m.event_latency.observe
        for latency in latencies:
            observe(latency)
        m.stage_latency.labels(stage="process").observe(self._clock() - t0)

    def _flush_and_commit(self) -> None:
        if not self._uncommitted:
            return
        t0 = self._clock()
        self.sink.flush()
        t1 = self._clock()
        self.source.commit(self._uncommitted)
        t2 = self._clock()
        self._uncommitted = {}
        m = self.metrics
        m.commits.inc()
        m.stage_latency.labels(stage="flush").observe(t1 - t0)
        m.stage_latency.labels(stage="commit").observe(t2 - t1)
        self._report_shards()

    def _report_shards(self) -> None:
        """Per-partition gauges: metric, coverage, buffers, models (memory when due)."""
        m = self.metrics
        now = self._clock()
        estimate = now >= self._memory_due
        if estimate:
            self._memory_due = now + self.settings.metrics.memory_interval_s
        for (_topic, partition), learner in self.shards.items():
            p = str(partition)
            m.online_metric.labels(partition=p, metric=self._metric_name).set(
                learner.metric_value
            )
            book, models = learner.book, learner.models
            m.label_coverage.labels(partition=p).set(book.stats.coverage)
            m.pending_predictions.labels(partition=p).set(len(book.pending))
            m.early_labels.labels(partition=p).set(len(book.early))
            m.resident_models.labels(partition=p).set(models.n_resident)
            m.parked_models.labels(partition=p).set(models.n_parked)
            m.parked_models_bytes.labels(partition=p).set(models.parked_bytes)
            if estimate:
                m.resident_models_bytes.labels(partition=p).set(memory_bytes(models))
