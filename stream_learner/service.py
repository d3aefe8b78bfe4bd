"""The loop: source -> decode -> learner -> sink -> commit -> checkpoint.

One :class:`Service` owns the shards of the partitions assigned to it (one
:class:`~stream_learner.recovery.Shard` each). Per poll batch it decodes every
record, scores events (learning inline labels right after), queues one
prediction per event and one dead letter per unusable record, then makes the
outputs durable and commits the offsets the batch covered (the output frontier
K), and only then checkpoints shards whose schedule is due (the state frontier
C <= K). See ``docs/state.md``.

With a labels topic (``kafka.labels_topic``), partition ``p`` of that topic
belongs to the shard of partition ``p`` of the events topic: the two topics
are co-partitioned and the Kafka source assigns them together. A shard then
has two input partitions, each with its own position and committed offset.

When partitions are assigned, each shard is restored before its records are
used: from its newest checkpoint (seek to C, re-process C..K silently), from
the log start when the store holds nothing, or as a fresh model when
checkpoints are disabled.

Outcome accounting: :mod:`stream_learner.summary`. Commit strategies:
:mod:`stream_learner.commits`.

:meth:`Service.stop` (wired to SIGTERM / SIGINT by the CLI) lets the current
batch finish, flush, commit and checkpoint before :meth:`Service.run` returns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

import orjson

from stream_learner.commits import AtLeastOnce, Committer, ExactlyOnce
from stream_learner.errors import CheckpointFenced, InvalidLabel, InvalidRecord
from stream_learner.events import Codec, encode_prediction
from stream_learner.labels import Expired, LabelStats
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics, observe_many
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer, Shard, shard_id
from stream_learner.reporting import Reporter
from stream_learner.scopes import KeyedModels, memory_bytes
from stream_learner.settings import Settings
from stream_learner.sinks import Sink, dead_letter
from stream_learner.sources import Record, Source, TopicPartition, worker_id
from stream_learner.summary import Counts, Summary

__all__ = ["AtLeastOnce", "Committer", "Counts", "ExactlyOnce", "Service", "Summary"]

log = logging.getLogger(__name__)


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
        self._labels_topic = settings.kafka.labels_topic
        self._events_topic = settings.kafka.events_topic
        self._memory_due = -float("inf")
        self._clock = clock
        self._wall_clock = wall_clock
        self._stopping = False
        self._metric_name = type(spec.build_metric()).__name__
        self.summary = Summary(metric_name=self._metric_name)
        self.reporter = Reporter(
            settings, self.metrics, source, sink, clock, wall_clock, worker_id(settings)
        )
        self._outputs_pending = False
        self._keyed = spec.scope == "key"

    # -- partition lifecycle (called by the source, inside poll) -------------------

    def shard_of(self, tp: TopicPartition) -> TopicPartition:
        """The shard a partition's records go to: labels partition p -> events partition p."""
        if self._labels_topic and tp[0] == self._labels_topic:
            return (self._events_topic, tp[1])
        return tp

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Queue newly owned partitions for restore (done after the poll returns)."""
        self._to_restore.extend(tp for tp in partitions if self.shard_of(tp) not in self.shards)
        self.metrics.set_ready(False)
        log.info("assigned partitions %s", list(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Commit, checkpoint and release the shards of ``partitions``."""
        self._commit()
        now = self._clock()
        for tp in sorted({self.shard_of(tp) for tp in partitions}):
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
            self.reporter.forget(str(tp[1]))
        self._to_restore = [tp for tp in self._to_restore if tp not in partitions]
        self.metrics.partitions.set(len(self.shards))
        log.info("revoked partitions %s", list(partitions))

    def _restore(self) -> set[TopicPartition]:
        """Resume every queued partition's shard; return the partitions told to seek."""
        inputs: dict[TopicPartition, list[TopicPartition]] = {}
        for tp in sorted(set(self._to_restore)):
            inputs.setdefault(self.shard_of(tp), []).append(tp)
        self._to_restore = []
        every = sorted(tp for tps in inputs.values() for tp in tps)
        committed = self.source.committed(every)
        beginning = self.source.beginning(every)
        moved: set[TopicPartition] = set()
        for key, tps in inputs.items():
            shard = self._resume(
                key, {tp: committed[tp] for tp in tps}, {tp: beginning[tp] for tp in tps}
            )
            self.shards[key] = shard
            moved.update(shard.position)
        self.metrics.partitions.set(len(self.shards))
        return moved

    def _resume(
        self,
        key: TopicPartition,
        committed: dict[TopicPartition, int | None],
        beginning: dict[TopicPartition, int],
    ) -> Shard:
        sid = shard_id(key)
        parked = self._parked.pop(key, None)
        # Current when each input partition's committed offset is where the shard stopped;
        # a partition it never read (e.g. its labels partition) has none on either side.
        if (
            parked is not None
            and all(parked.position.get(tp) == k for tp, k in committed.items())
            and self.checkpointer.reclaim(parked)
        ):
            log.info("shard %s: in-memory state is current at %s", sid, committed)
            for tp, k in committed.items():
                if k is not None:
                    self.source.seek(tp, k)
            return parked
        plan = self.checkpointer.plan(sid, committed, beginning, self._new_learner)
        for partition, offset in plan.seek.items():
            self.source.seek(partition, offset)
        plan.learner.use_drift(self.settings.drift)
        shard = Shard(sid, plan.learner, dict(plan.seek), dict(plan.replay_until), epoch=plan.epoch)
        shard.saved_at = self._clock()
        if plan.save_now:
            shard.dirty = True
            self.checkpointer.save(shard, shard.saved_at)
        return shard

    def _new_learner(self) -> Learner:
        return Learner(self.spec, self.settings.labels, self.settings.drift)

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
                self._report(self._clock())
            self._commit()
            self._checkpoint_all()
        finally:
            self.metrics.set_ready(False)
            self._finish_summary(started)
        return self.summary

    def _finish_summary(self, started: float) -> None:
        s = self.summary
        s.elapsed_s = self._clock() - started
        learners = [shard.learner for shard in self.shards.values()]
        s.metrics = {
            f"{t}[{p}]": shard.learner.metric_value for (t, p), shard in self.shards.items()
        }
        s.labelling = LabelStats.total(lr.book.stats for lr in learners).to_dict()
        s.models = {
            "resident": sum(lr.models.n_resident for lr in learners),
            "parked": sum(lr.models.n_parked for lr in learners),
            "parked_bytes": sum(lr.models.parked_bytes for lr in learners),
            "resident_bytes_estimate": sum(memory_bytes(lr.models) for lr in learners),
        }

    def _replaying(self) -> bool:
        return any(shard.replay_until for shard in self.shards.values())

    def process_batch(self, records: Sequence[Record], received_at: float) -> None:
        """Decode, score and learn every record; queue outputs (not yet durable)."""
        if self._keyed:
            self._prefetch(records)
        counts = Counts()
        latencies: list[float] = []
        n_replayed = 0
        shards, uncommitted = self.shards, self._uncommitted
        for record in records:
            topic, partition, offset = record.origin
            tp = (topic, partition)
            shard = shards.get(self.shard_of(tp))
            if shard is None:  # revoked mid-batch: not ours to count or commit
                continue
            if not self._in_sequence(shard, tp, offset):
                continue
            if shard.replaying(tp, offset):
                self._drain_shard(shard, counts)  # what live records of the batch left
                self._replay(record, shard.learner)
                self.reporter.alerts(shard, emit=False)
                n_replayed += 1
            else:
                self._handle(record, shard.learner, counts, latencies, received_at)
                if shard.learner.drift.outbox:
                    self.reporter.alerts(shard, emit=True)
                uncommitted[tp] = offset + 1
            self._advance(shard, tp, offset)
        self.reporter.seen(records)
        self.summary.replayed += n_replayed
        self.metrics.replayed.inc(n_replayed)
        self._drain_labels(counts)
        self._record_batch(counts, latencies, received_at)

    def _drain_labels(self, counts: Counts) -> None:
        """Report joined labels' delays; dead-letter early labels that expired unjoined."""
        for shard in self.shards.values():
            self._drain_shard(shard, counts)

    def _drain_shard(self, shard: Shard, counts: Counts) -> None:
        m = self.metrics
        book = shard.learner.book
        delays = book.drain_delays()
        if delays:
            self._report_delays(delays)
        for expired in book.drain_expired():
            m.labels_expired.labels(buffer=expired.buffer).inc()
            if expired.label is not None:
                self._expired_label(expired, counts)

    def _report_delays(self, delays: Sequence[tuple[str, int, float]]) -> None:
        """Joined labels and their delays: one increment per ``when``, one fill per histogram.

        Three locked Prometheus calls per label were a tenth of the loop's time;
        the values are the same as with one ``inc`` and two ``observe`` per label.
        """
        m = self.metrics
        for when, n in Counter(when for when, _, _ in delays).items():  # first-seen order
            m.labels_joined.labels(when=when).inc(n)
        observe_many(m.label_delay_events, [events for _, events, _ in delays])
        observe_many(m.label_delay_seconds, [seconds for _, _, seconds in delays])

    def _advance(self, shard: Shard, tp: TopicPartition, offset: int) -> None:
        shard.position[tp] = offset + 1
        shard.records_since_save += 1
        shard.dirty = True
        until = shard.replay_until.get(tp)
        if until is not None and offset + 1 >= until:
            del shard.replay_until[tp]
            log.info("shard %s: silent replay done at offset %d", shard.id, offset + 1)

    def _replay(self, record: Record, learner: Learner) -> None:
        """Re-process a record below the committed offset: learn, emit nothing.

        Labels it joined and buffer entries it expired were reported (and
        expired labels dead-lettered) when the record was first processed.
        """
        try:
            item = self.codec.decode(record.value, record.key, record.timestamp_ms, record.origin)
            learner.process(item)
        except InvalidRecord:
            pass  # its dead letter was emitted before the crash
        learner.book.drain_delays()
        learner.book.drain_expired()

    def _handle(
        self,
        record: Record,
        learner: Learner,
        counts: Counts,
        latencies: list[float],
        received_at: float,
    ) -> None:
        counts.records += 1
        stats = learner.book.stats
        labelled = stats.labelled
        value, key, timestamp_ms, origin = record
        try:
            item = self.codec.decode(value, key, timestamp_ms, origin)
            prediction = learner.process(item)
        except InvalidRecord as error:
            self._dead_letter(record, error, counts)
            counts.dead_letters += 1
            return
        # labels learned by this record: an inline one, an early one joined to this event,
        # or this label record joined to its prediction (not one that waits for its event)
        counts.labels += stats.labelled - labelled
        if prediction is None:
            counts.label_records += 1
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

    def _expired_label(self, expired: Expired, counts: Counts) -> None:
        """An early label whose event never came: to the learn dead letters.

        The label record was accepted (counted as a label record) when it came;
        its value here is the label re-encoded, as its original bytes are gone.
        """
        label = expired.label
        assert label is not None
        value = orjson.dumps(
            {"id": label.id, "key": label.key, "ts": label.ts, "label": label.label},
            option=orjson.OPT_NON_STR_KEYS,
        )
        record = Record(value, label.key.encode("utf-8"), int(label.ts * 1000), label.origin)
        error = InvalidLabel(
            "unknown_id",
            f"no event with id {label.id!r} and key {label.key!r} arrived within the "
            "[labels] early_max_* limits",
        )
        self._dead_letter(record, error, counts)
        counts.labels_expired += 1

    def _record_batch(self, counts: Counts, latencies: list[float], t0: float) -> None:
        m = self.metrics
        self.summary.add(counts)
        m.labels_learned.inc(counts.labels)
        m.batches.inc()
        m.records.labels(outcome="prediction").inc(counts.predictions)
        m.records.labels(outcome="label").inc(counts.label_records)
        m.records.labels(outcome="dead_letter").inc(counts.dead_letters)
        m.inline_labels_rejected.inc(counts.inline_labels_rejected)
        observe_many(m.event_latency, latencies)  # per batch, not one locked observe per event
        m.stage_latency.labels(stage="process").observe(self._clock() - t0)

    def _report(self, now: float) -> None:
        """Consumer lag when due; a metrics snapshot when due (made durable at once)."""
        self.reporter.lag(self.shards, now)
        totals = {**self.summary.counts_dict(), "replayed": self.summary.replayed}
        if self.reporter.snapshot_due(self.shards, totals, self._metric_name):
            self._outputs_pending = True
            self._commit()

    def _commit(self) -> None:
        if not self._uncommitted and not self._outputs_pending:
            return
        t0 = self._clock()
        self.committer.commit(self._uncommitted)
        self._uncommitted = {}
        self._outputs_pending = False
        m = self.metrics
        m.commits.inc()
        m.stage_latency.labels(stage="commit").observe(self._clock() - t0)
        self._report_shards()

    def _report_shards(self) -> None:
        """Per-partition gauges: metric, coverage, buffers, models (memory when due)."""
        m = self.metrics
        now = self._clock()
        estimate = now >= self._memory_due
        if estimate:
            self._memory_due = now + self.settings.metrics.memory_interval_s
        for (_topic, partition), shard in self.shards.items():
            learner = shard.learner
            p = str(partition)
            m.set_online_metric(p, self._metric_name, learner.metric_value)
            self.reporter.drift_gauges(p, shard)
            book, models = learner.book, learner.models
            m.label_coverage.labels(partition=p).set(book.stats.coverage)
            m.pending_predictions.labels(partition=p).set(len(book.pending))
            m.early_labels.labels(partition=p).set(len(book.early))
            m.resident_models.labels(partition=p).set(models.n_resident)
            m.parked_models.labels(partition=p).set(models.n_parked)
            m.parked_models_bytes.labels(partition=p).set(models.parked_bytes)
            if estimate:
                m.resident_models_bytes.labels(partition=p).set(memory_bytes(models))

    # -- checkpoints --------------------------------------------------------------------

    def _prefetch(self, records: Sequence[Record]) -> None:
        """Per-key models: read the batch's models that are out of memory in one request."""
        keys: dict[TopicPartition, set[bytes]] = {}
        for record in records:
            if record.key is not None:
                tp = (record.origin.topic, record.origin.partition)
                keys.setdefault(self.shard_of(tp), set()).add(record.key)
        for tp, names in keys.items():
            shard = self.shards.get(tp)
            models = shard.learner.models if shard is not None else None
            if isinstance(models, KeyedModels):
                models.prefetch(name.decode("utf-8", "replace") for name in names)

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
            self.checkpointer.save(shard, now)
            self.metrics.stage_latency.labels(stage="checkpoint").observe(self._clock() - t0)
