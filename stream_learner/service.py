"""The loop: source -> decode -> learner -> sink -> commit -> checkpoint.

One :class:`Service` owns the shards of the partitions assigned to it (one
:class:`~stream_learner.recovery.Shard` each). Per poll batch it decodes every
record, scores events (learning inline labels right after), queues one
prediction per event and one dead letter per unusable record, then makes the
outputs durable and commits the offsets the batch covered (the output frontier
K), and only then checkpoints shards whose schedule is due (the state frontier
C <= K). See ``docs/state.md``.

When partitions are assigned, each shard is restored before its records are
used: from its newest checkpoint (seek to C, re-process C..K silently), from
the log start when the store holds nothing, or as a fresh model when
checkpoints are disabled.

:meth:`Service.stop` (wired to SIGTERM / SIGINT by the CLI) lets the current
batch finish, flush, commit and checkpoint before :meth:`Service.run` returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream_learner.errors import CheckpointFenced, InvalidRecord
from stream_learner.events import Codec, Event, encode_prediction
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics, observe_many
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer, Shard, shard_id
from stream_learner.settings import Settings
from stream_learner.sinks import Sink, dead_letter_headers
from stream_learner.sources import Record, Source, TopicPartition

__all__ = ["AtLeastOnce", "Committer", "ExactlyOnce", "Service", "Summary"]

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did; printed by ``stream-learner run`` at the end."""

    records: int = 0
    predictions: int = 0
    labels: int = 0
    dead_letters: int = 0
    replayed: int = 0
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
            "records": self.records,
            "predictions": self.predictions,
            "labels": self.labels,
            "dead_letters": self.dead_letters,
            "replayed": self.replayed,
            "elapsed_s": self.elapsed_s,
            "events_per_s": self.events_per_s,
            "metric": self.metric_name,
            "online_metric": self.metrics,
        }

    def render(self) -> str:
        """A short human summary."""
        quality = ", ".join(f"{shard}: {value:.4f}" for shard, value in self.metrics.items())
        replayed = f", {self.replayed} replayed silently" if self.replayed else ""
        return (
            f"{self.records} records in {self.elapsed_s:.2f}s ({self.events_per_s:,.0f} events/s): "
            f"{self.predictions} predictions, {self.labels} labels learned, "
            f"{self.dead_letters} dead letters{replayed}; "
            f"online {self.metric_name}: {quality or 'n/a'}"
        )


class Committer(Protocol):
    """Makes a batch's outputs durable and commits its offsets, as one step."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Outputs first, then offsets (or both atomically)."""
        ...


class AtLeastOnce:
    """Flush the sink, then commit offsets: a crash in between repeats one batch."""

    def __init__(self, source: Source, sink: Sink) -> None:
        self._source = source
        self._sink = sink

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Flush, then commit."""
        self._sink.flush()
        if offsets:
            self._source.commit(offsets)


class _TransactionalSink(Protocol):
    def commit_transaction(self, offsets: Mapping[TopicPartition, int], group: Any) -> None: ...


class _GroupSource(Protocol):
    def group_metadata(self) -> Any: ...


class ExactlyOnce:
    """Outputs and offsets in one Kafka transaction (read_committed consumers see each once)."""

    def __init__(self, source: _GroupSource, sink: _TransactionalSink) -> None:
        self._source = source
        self._sink = sink

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the open transaction with the offsets inside it."""
        self._sink.commit_transaction(offsets, self._source.group_metadata())


class Service:
    """Wires a source, the shards of its partitions, a sink, checkpoints and metrics.

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
    checkpointer
        Saves and restores shard state (default: disabled).
    committer
        Output-then-offset commit strategy (default: :class:`AtLeastOnce`).
    clock, wall_clock
        Monotonic and epoch seconds; injectable for tests.
    """

    def __init__(
        self,
        settings: Settings,
        spec: ModelSpec,
        source: Source,
        sink: Sink,
        metrics: Metrics | None = None,
        checkpointer: Checkpointer | NullCheckpointer | None = None,
        committer: Committer | None = None,
        clock: Callable[[], float] = time.perf_counter,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.source = source
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.checkpointer = checkpointer or NullCheckpointer()
        self.committer = committer or AtLeastOnce(source, sink)
        self.codec = Codec(settings.schema_, settings.limits, spec.task)
        self.shards: dict[TopicPartition, Shard] = {}
        self._parked: dict[TopicPartition, Shard] = {}
        self._to_restore: list[TopicPartition] = []
        self._uncommitted: dict[TopicPartition, int] = {}
        self._clock = clock
        self._wall_clock = wall_clock
        self._stopping = False
        self._metric_name = type(spec.build_metric()).__name__
        self.summary = Summary(metric_name=self._metric_name)

    # -- partition lifecycle (called by the source, inside poll) -------------------

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Queue newly owned partitions for restore (done after the poll returns)."""
        self._to_restore.extend(tp for tp in partitions if tp not in self.shards)
        self.metrics.set_ready(False)
        log.info("assigned partitions %s", list(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Commit, checkpoint and release the shards of ``partitions``."""
        self._commit()
        now = self._clock()
        for tp in partitions:
            shard = self.shards.pop(tp, None)
            if shard is None:
                continue
            try:
                self._save(shard, now)
            except CheckpointFenced as exc:
                log.warning("shard %s: %s", shard.id, exc)
                continue
            # Kept in case the partition comes straight back with nothing processed elsewhere.
            self._parked[tp] = shard
        self._to_restore = [tp for tp in self._to_restore if tp not in partitions]
        self.metrics.partitions.set(len(self.shards))
        log.info("revoked partitions %s", list(partitions))

    def _restore(self) -> set[TopicPartition]:
        """Resume every queued partition; return those the source was told to seek."""
        restored = set(self._to_restore)
        self._to_restore = []
        committed = self.source.committed(sorted(restored))
        beginning = self.source.beginning(sorted(restored))
        generation = self.source.generation()
        moved: set[TopicPartition] = set()
        for tp in sorted(restored):
            shard = self.shards[tp] = self._resume(tp, committed[tp], beginning[tp], generation)
            moved.update(shard.position)
        self.metrics.partitions.set(len(self.shards))
        return moved

    def _resume(self, tp: TopicPartition, k: int | None, start: int, generation: int) -> Shard:
        sid = shard_id(tp)
        parked = self._parked.pop(tp, None)
        if parked is not None and k is not None and parked.position.get(tp) == k:
            log.info("shard %s: in-memory state is current at offset %d", sid, k)
            self.source.seek(tp, k)
            return parked
        plan = self.checkpointer.plan(sid, {tp: k}, {tp: start}, generation, self._new_learner)
        for partition, offset in plan.seek.items():
            self.source.seek(partition, offset)
        shard = Shard(sid, plan.learner, dict(plan.seek), dict(plan.replay_until))
        shard.saved_at = self._clock()
        if plan.save_now:
            shard.dirty = True
            self.checkpointer.save(shard, generation, shard.saved_at)
        return shard

    def _new_learner(self) -> Learner:
        return Learner(self.spec)

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
        try:
            while not self._stopping:
                if self._to_restore:
                    self._restore()
                self.metrics.set_ready(not self._to_restore and not self._replaying())
                budget = svc.batch_size
                if svc.max_events:
                    budget = min(budget, svc.max_events - self.summary.records)
                    if budget <= 0:
                        break
                records = self.source.poll(budget, svc.poll_timeout_ms)
                if self._to_restore:  # assigned during this poll: drop what precedes a seek
                    moved = self._restore()
                    records = [r for r in records if (r.origin.topic, r.origin.partition) not in moved]
                now = self._clock()
                if records:
                    last_record = now
                    self.process_batch(records, now)
                    self._commit()
                    self._checkpoint_due(self._clock())
                elif self.source.exhausted:
                    break
                elif svc.idle_timeout_s and now - last_record >= svc.idle_timeout_s:
                    log.info("no records for %.1fs; stopping", svc.idle_timeout_s)
                    break
            self._commit()
            self._checkpoint_all()
        finally:
            self.metrics.set_ready(False)
            self.summary.elapsed_s = self._clock() - started
            self.summary.metrics = {
                f"{t}[{p}]": shard.learner.metric_value for (t, p), shard in self.shards.items()
            }
        return self.summary

    def _replaying(self) -> bool:
        return any(shard.replay_until for shard in self.shards.values())

    def process_batch(self, records: Sequence[Record], received_at: float) -> None:
        """Decode, score and learn every record; queue outputs (not yet durable)."""
        codec, sink, clock = self.codec, self.sink, self._clock
        shards = self.shards
        latencies: list[float] = []
        n_pred = n_label = n_dead = n_learned = n_replayed = 0
        for record in records:
            tp = (record.origin.topic, record.origin.partition)
            shard = shards.get(tp)
            if shard is None:  # a record of a partition revoked mid-batch
                continue
            offset = record.origin.offset
            if not self._in_sequence(shard, tp, offset):
                continue
            silent = shard.replaying(tp, offset)
            learner = shard.learner
            try:
                item = codec.decode(record.value, record.key, record.timestamp_ms, record.origin)
                prediction = learner.process(item)
            except InvalidRecord as error:
                if not silent:
                    self._dead_letter(record, error)
                    n_dead += 1
            else:
                if silent:
                    pass
                elif prediction is None:
                    n_label += 1
                    n_learned += 1
                else:
                    latency = clock() - received_at
                    latencies.append(latency)
                    sink.send(
                        "predictions",
                        prediction.key.encode("utf-8"),
                        encode_prediction(prediction, latency * 1000.0),
                    )
                    n_pred += 1
                    n_learned += isinstance(item, Event) and item.has_label
            shard.position[tp] = offset + 1
            shard.records_since_save += 1
            shard.dirty = True
            if silent:
                n_replayed += 1
                if offset + 1 >= shard.replay_until[tp]:
                    del shard.replay_until[tp]
                    log.info("shard %s: silent replay done at offset %d", shard.id, offset + 1)
            else:
                self._uncommitted[tp] = offset + 1
        self.summary.replayed += n_replayed
        self.metrics.replayed.inc(n_replayed)
        n_records = len(records) - n_replayed
        self._record_batch(n_records, n_pred, n_label, n_dead, n_learned, latencies, received_at)

    def _in_sequence(self, shard: Shard, tp: TopicPartition, offset: int) -> bool:
        expected = shard.position.get(tp)
        if expected is None or offset == expected:
            return True
        if offset < expected:
            log.debug("shard %s: skipping offset %d, already processed", shard.id, offset)
            return False
        log.error(
            "ALERT shard %s: offsets %d..%d of %s[%d] were skipped by the consumer "
            "(retention or an offset reset); continuing at %d",
            shard.id, expected, offset - 1, tp[0], tp[1], offset,
        )
        self.metrics.recovery_alerts.labels(kind="offset_gap").inc()
        return True

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
        observe_many(m.event_latency, latencies)  # per batch, not one locked observe per event
        m.stage_latency.labels(stage="process").observe(self._clock() - t0)

    def _commit(self) -> None:
        if not self._uncommitted:
            return
        t0 = self._clock()
        self.committer.commit(self._uncommitted)
        self._uncommitted = {}
        m = self.metrics
        m.commits.inc()
        m.stage_latency.labels(stage="commit").observe(self._clock() - t0)
        for (_topic, partition), shard in self.shards.items():
            m.online_metric.labels(partition=str(partition), metric=self._metric_name).set(
                shard.learner.metric_value
            )

    # -- checkpoints --------------------------------------------------------------------

    def _checkpoint_due(self, now: float) -> None:
        for tp, shard in list(self.shards.items()):
            self.metrics.checkpoint_age.labels(partition=str(tp[1])).set(now - shard.saved_at)
            if self.checkpointer.due(shard, now):
                self._save_or_drop(tp, shard, now)

    def _checkpoint_all(self) -> None:
        now = self._clock()
        for tp, shard in list(self.shards.items()):
            if shard.dirty:
                self._save_or_drop(tp, shard, now)

    def _save_or_drop(self, tp: TopicPartition, shard: Shard, now: float) -> None:
        try:
            self._save(shard, now)
        except CheckpointFenced as exc:
            log.warning("dropping shard %s: %s", shard.id, exc)
            self.shards.pop(tp, None)

    def _save(self, shard: Shard, now: float) -> None:
        if shard.dirty:
            t0 = self._clock()
            self.checkpointer.save(shard, self.source.generation(), now)
            self.metrics.stage_latency.labels(stage="checkpoint").observe(self._clock() - t0)
