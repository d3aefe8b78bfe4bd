"""The loop: source -> decode -> learner -> sink -> flush -> commit.

One :class:`Service` owns the shards of the partitions assigned to it (one
:class:`~stream_learner.learner.Learner` each). Per poll batch it decodes
every record, scores events (learning inline labels right after), queues one
prediction per event and one dead letter per unusable record, then flushes the
sink and only then commits the offsets the batch covered. A crash therefore
never commits an offset whose outputs (dead letters included) were not
durable (at-least-once).

Accounting: every input record ends as exactly one outcome, ``prediction``
(an event was scored), ``label`` (a label record was applied) or
``dead_letter`` (the record went to a dead-letter output), so
``records == predictions + label_records + dead_letters``. An event whose
inline label cannot be learned is a ``prediction``; its label additionally
goes to the ``learn_dead_letters`` output and is counted as
``inline_labels_rejected``, so that
``input_dead_letters + learn_dead_letters == dead_letters + inline_labels_rejected``.

:meth:`Service.stop` (wired to SIGTERM / SIGINT by the CLI) lets the current
batch finish, flush and commit before :meth:`Service.run` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import Codec, Event, Label, encode_prediction
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.settings import Settings
from stream_learner.sinks import Sink, dead_letter
from stream_learner.sources import Record, Source, TopicPartition

__all__ = ["Counts", "Service", "Summary"]

log = logging.getLogger(__name__)


@dataclass
class Counts:
    """Outcome counts (see the module docstring for how they add up)."""

    records: int = 0
    predictions: int = 0
    label_records: int = 0
    dead_letters: int = 0
    labels: int = 0
    input_dead_letters: int = 0
    learn_dead_letters: int = 0
    inline_labels_rejected: int = 0

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these."""
        for name in Counts.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def counts_dict(self) -> dict[str, int]:
        """The counts as a JSON-ready object."""
        return {name: getattr(self, name) for name in Counts.__dataclass_fields__}


@dataclass
class Summary(Counts):
    """What a run did; printed by ``stream-learner run`` at the end.

    ``labels`` counts labels learned (inline and label records);
    ``label_records`` counts label records applied (an input outcome).
    """

    elapsed_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    metric_name: str = ""

    @property
    def events_per_s(self) -> float:
        """Input records per second of wall time."""
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        """The summary as a JSON-ready object."""
        return {
            **self.counts_dict(),
            "elapsed_s": self.elapsed_s,
            "events_per_s": self.events_per_s,
            "metric": self.metric_name,
            "online_metric": self.metrics,
        }

    def render(self) -> str:
        """A short human summary."""
        quality = ", ".join(f"{shard}: {value:.4f}" for shard, value in self.metrics.items())
        rejected = (
            f" (+{self.inline_labels_rejected} rejected inline labels)"
            if self.inline_labels_rejected
            else ""
        )
        return (
            f"{self.records} records in {self.elapsed_s:.2f}s ({self.events_per_s:,.0f} events/s): "
            f"{self.predictions} predictions, {self.label_records} label records, "
            f"{self.dead_letters} dead letters{rejected}; {self.labels} labels learned; "
            f"online {self.metric_name}: {quality or 'n/a'}"
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
        self._clock = clock
        self._wall_clock = wall_clock
        self._stopping = False
        self._metric_name = type(spec.build_metric()).__name__
        self.summary = Summary(metric_name=self._metric_name)

    # -- partition lifecycle (called by the source, inside poll) -------------------

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Create a shard for each newly owned partition (or take back a parked one)."""
        for tp in partitions:
            if tp not in self.shards:
                self.shards[tp] = self._parked.pop(tp) if tp in self._parked else Learner(self.spec)
        self.metrics.partitions.set(len(self.shards))
        log.info("assigned partitions %s", list(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Make outputs durable, commit, and release the shards of ``partitions``."""
        self._flush_and_commit()
        for tp in partitions:
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
            self.summary.elapsed_s = self._clock() - started
            self.summary.metrics = {
                f"{t}[{p}]": learner.metric_value for (t, p), learner in self.shards.items()
            }
        return self.summary

    def process_batch(self, records: Sequence[Record], received_at: float) -> None:
        """Decode, score and learn every record; queue outputs (not yet durable).

        Only :class:`~stream_learner.errors.InvalidRecord` is expected from a
        record; it becomes a dead letter and the loop carries on.
        """
        counts = Counts()
        latencies: list[float] = []
        for record in records:
            tp = (record.origin.topic, record.origin.partition)
            learner = self.shards.get(tp)
            if learner is None:  # revoked mid-batch: not ours to count or commit
                continue
            offset = record.origin.offset
            if self._expected.get(tp, offset) != offset:
                learner = self._replace_stale(tp, offset)
            self._expected[tp] = offset + 1
            self._handle(record, learner, counts, latencies, received_at)
            self._uncommitted[tp] = offset + 1
        self._record_batch(counts, latencies, received_at)

    def _handle(
        self,
        record: Record,
        learner: Learner,
        counts: Counts,
        latencies: list[float],
        received_at: float,
    ) -> None:
        counts.records += 1
        try:
            item = self.codec.decode(record.value, record.key, record.timestamp_ms, record.origin)
            prediction = learner.process(item)
        except InvalidRecord as error:
            self._dead_letter(record, error, counts)
            counts.dead_letters += 1
            return
        if prediction is None:
            counts.label_records += 1
            counts.labels += isinstance(item, Label)
            return
        latency = self._clock() - received_at
        latencies.append(latency)
        self.sink.send(
            "predictions",
            prediction.key.encode("utf-8"),
            encode_prediction(prediction, latency * 1000.0),
        )
        counts.predictions += 1
        if prediction.label_error is not None:
            self._dead_letter(record, prediction.label_error, counts)
            counts.inline_labels_rejected += 1
        elif isinstance(item, Event) and item.has_label:
            counts.labels += 1

    def _replace_stale(self, tp: TopicPartition, offset: int) -> Learner:
        log.warning(
            "state of %s[%d] expected offset %d but the partition resumes at %d: "
            "it was processed elsewhere, starting a fresh model",
            tp[0], tp[1], self._expected[tp], offset,
        )
        self.metrics.stale_states.inc()
        learner = self.shards[tp] = Learner(self.spec)
        return learner

    def _dead_letter(self, record: Record, error: InvalidRecord, counts: Counts) -> None:
        """Queue ``record`` on the input or the learn dead-letter output."""
        limit = self.settings.limits.max_dead_letter_bytes
        value, headers = dead_letter(record, error, self._wall_clock(), limit)
        if isinstance(error, InvalidLabel):
            output = "learn_dead_letters"
            counts.learn_dead_letters += 1
        else:
            output = "dead_letters"
            counts.input_dead_letters += 1
        self.sink.send(output, record.key, value, headers)
        self.metrics.dead_letters.labels(output=output, reason=error.reason).inc()
        log.debug("dead letter at %s: %s", record.origin, error)

    def _record_batch(self, counts: Counts, latencies: list[float], t0: float) -> None:
        m = self.metrics
        self.summary.add(counts)
        m.labels_learned.inc(counts.labels)
        m.batches.inc()
        m.records.labels(outcome="prediction").inc(counts.predictions)
        m.records.labels(outcome="label").inc(counts.label_records)
        m.records.labels(outcome="dead_letter").inc(counts.dead_letters)
        m.inline_labels_rejected.inc(counts.inline_labels_rejected)
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
        for (_topic, partition), learner in self.shards.items():
            m.online_metric.labels(partition=str(partition), metric=self._metric_name).set(
                learner.metric_value
            )
