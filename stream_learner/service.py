"""The loop: source -> decode -> learner -> sink -> commit -> checkpoint.

One :class:`Service` owns the shards of the partitions assigned to it (one
:class:`~stream_learner.recovery.Shard` each). Per poll batch it decodes every
record, scores events (learning inline labels right after), queues one
prediction per event and one dead letter per unusable record, then makes the
offsets the batch covered to the committer, which commits them once their
outputs are durable (the output frontier K, :mod:`stream_learner.commits`).
A checkpoint is written only once the outputs of the records it covers are
durable: at-least-once on Kafka with one model per partition, a due shard is
sealed at once and written on a later loop turn, when the broker has
acknowledged them (:class:`~stream_learner.recovery.AckedCheckpoints`);
otherwise the committer is drained first. See ``docs/state.md``.

With a labels topic (``kafka.labels_topic``), partition ``p`` of that topic
belongs to the shard of partition ``p`` of the events topic: the two topics
are co-partitioned and the Kafka source assigns them together. A shard then
has two input partitions, each with its own position and committed offset.

When partitions are assigned, each shard is restored before its records are
used: from its newest checkpoint (seek to C, re-process C..K silently), from
the log start when the store holds nothing, or as a fresh model when
checkpoints are disabled.

Outcome accounting: :mod:`stream_learner.summary`. Commit cycles:
:mod:`stream_learner.commits`.

:meth:`Service.stop` (wired to SIGTERM / SIGINT by the CLI) lets the current
batch finish, flush, commit and checkpoint before :meth:`Service.run` returns.
When an exception escapes the loop, :meth:`Service.run` commits what is already
durable (no checkpoint: the state may be half-updated) and re-raises it
unchanged. A revocation after :meth:`Service.run` returned (while the client
closes, on kafka-python's own I/O thread) only releases the shards: it never
calls the client back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

from stream_learner.commits import (
    AckingSink,
    AtLeastOnce,
    Committer,
    Pipelined,
    Transactional,
    for_edges,
)
from stream_learner.drift import Alert
from stream_learner.errors import (
    CheckpointFenced,
    InvalidLabel,
    InvalidRecord,
    ModelFailing,
    RecordStoppedWorker,
    StreamLearnerError,
)
from stream_learner.events import Codec, Event, encode_prediction
from stream_learner.guard import Guard, MemorySuspects
from stream_learner.labels import Expired, Joined, LabelStats, encode_label
from stream_learner.learner import Learner, Outcome
from stream_learner.metrics import Metrics, observe_many
from stream_learner.models import ModelSpec
from stream_learner.recovery import (
    AckedCheckpoints,
    Checkpointer,
    NullCheckpointer,
    Shard,
    shard_id,
)
from stream_learner.reporting import GAUGES_INTERVAL_S, Reporter
from stream_learner.scopes import KeyedModels, memory_bytes
from stream_learner.settings import Settings
from stream_learner.sinks import Sink, dead_letter
from stream_learner.sources import FiniteInput, Record, Source, TopicPartition, worker_id
from stream_learner.summary import Counts, Summary

__all__ = ["AtLeastOnce", "Committer", "Counts", "Pipelined", "Service", "Summary", "Transactional"]

log = logging.getLogger(__name__)

#: Model failures (``model_rejected``, ``learn_failed``) in a row after which the worker
#: stops: a model that raises on every record is misconfigured, not fed bad records.
MODEL_FAILURE_LIMIT = 1000

_MODEL_REASONS = frozenset({"model_rejected", "learn_failed"})


#: Errors of these libraries come from servers and clients, never from one record's content.
_CLIENT_MODULES = ("kafka", "confluent_kafka", "redis")


def _about_one_record(exc: BaseException) -> bool:
    """False for what stops the worker whatever the record: signals, I/O, servers, settings.

    Examples
    --------
    >>> _about_one_record(RecursionError()), _about_one_record(SystemExit(3))
    (True, True)
    >>> _about_one_record(OSError("disk full")), _about_one_record(ModelFailing("x"))
    (False, False)
    >>> _about_one_record(MemoryError())
    False
    """
    if isinstance(exc, KeyboardInterrupt | GeneratorExit | OSError | MemoryError):
        return False
    if isinstance(exc, StreamLearnerError) and not isinstance(exc, InvalidRecord):
        return False
    return not any(c.__module__.split(".")[0] in _CLIENT_MODULES for c in type(exc).__mro__)


@dataclass(slots=True)
class _Labels:
    """What a batch's live records of one shard did to its labels, reported after the batch."""

    joined: list[Joined] = field(default_factory=list)
    expired: list[Expired] = field(default_factory=list)


def _unexpected(exc: Exception) -> InvalidRecord:
    text = str(exc)
    if len(text) > 300:
        text = f"{text[:300]}...({len(text)} chars)"
    return InvalidRecord(
        "unexpected_error",
        f"an unexpected {type(exc).__name__} while handling this record: {text}",
    )


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
        The produce -> acknowledge -> commit cycle (default: what the edges support,
        :func:`~stream_learner.commits.for_edges`).
    clock, wall_clock
        Monotonic and epoch seconds; injectable for tests.
    guard
        Remembers a record that made the worker stop (default: in memory only).
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
        guard: Guard | None = None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.source = source
        self.sink = sink
        self.metrics = metrics or Metrics()
        self.checkpointer = checkpointer or NullCheckpointer()
        self.committer = committer or for_edges(settings, source, sink)
        if isinstance(self.committer, Transactional):
            self.committer.on_abort = self._rewind
        self._acked_checkpoints(spec, clock)
        self.codec = Codec(settings.schema_, settings.limits, spec.task)
        self.shards: dict[TopicPartition, Shard] = {}
        self._parked: dict[TopicPartition, Shard] = {}
        self._to_restore: list[TopicPartition] = []
        self._assigned: set[TopicPartition] = set()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._labels_topic = settings.kafka.labels_topic
        self._events_topic = settings.kafka.events_topic
        self._ages_due = -float("inf")  # the checkpoint-age gauges, every GAUGES_INTERVAL_S
        self._clock = clock
        self._wall_clock = wall_clock
        self._stopping = False
        self._closed = False
        self._started = self._last_record = clock()
        self._metric_name = type(spec.build_metric()).__name__
        self.summary = Summary(metric_name=self._metric_name)
        self.reporter = Reporter(
            settings, self.metrics, source, sink, clock, wall_clock, worker_id(settings),
            self._metric_name,
        )
        self._outputs_pending = False
        self.guard = guard or Guard(MemorySuspects())
        self._suspects = self.guard.suspects  # empty unless a record stopped a worker before
        self._reasons_logged: set[str] = set()
        self._model_streak = 0
        self._succeeded_at_failure = -1
        self._failed_predictions = 0
        self._snapshot_records = 0  # records at the last metrics snapshot
        self._keyed = spec.scope == "key"

    # -- partition lifecycle (called by the source, inside poll) -------------------

    def shard_of(self, tp: TopicPartition) -> TopicPartition:
        """The shard a partition's records go to: labels partition p -> events partition p."""
        if self._labels_topic and tp[0] == self._labels_topic:
            return (self._events_topic, tp[1])
        return tp

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Queue newly owned partitions for restore (done after the poll returns)."""
        self._assigned.update(partitions)
        self._to_restore.extend(tp for tp in partitions if self.shard_of(tp) not in self.shards)
        self.metrics.set_ready(False)
        log.info("assigned partitions %s", list(partitions))

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Commit, checkpoint and release the shards of ``partitions``.

        After :meth:`run` returned (the client is closing) the shards are only
        released: the run committed and checkpointed them, or, after an error,
        committed what it could; nothing here may block the client.
        """
        if self._closed:
            for tp in {self.shard_of(tp) for tp in partitions}:
                self.shards.pop(tp, None)
            log.info("revoked partitions %s (closing)", list(partitions))
            return
        self._commit()
        self.committer.drain()
        now = self._clock()
        saved: dict[TopicPartition, Shard] = {}
        for tp in sorted({self.shard_of(tp) for tp in partitions}):
            shard = self.shards.pop(tp, None)
            if shard is None:
                continue
            try:
                self._save(shard, now)
            except CheckpointFenced as exc:
                log.warning("shard %s: %s", shard.id, exc)
                continue
            saved[tp] = shard
        for shard, refused in self.checkpointer.settle(True, {s.id for s in saved.values()}):
            log.warning("shard %s: %s", shard.id, refused)
            saved = {tp: s for tp, s in saved.items() if s is not shard}
        for tp, shard in saved.items():
            # Kept in case the partition comes straight back with nothing processed elsewhere.
            self._parked[tp] = shard
            self.reporter.forget(str(tp[1]))
        self._to_restore = [tp for tp in self._to_restore if tp not in partitions]
        self._assigned.difference_update(partitions)
        self.metrics.partitions.set(len(self.shards))
        log.info("revoked partitions %s", list(partitions))

    def _rewind(self) -> None:
        """The open transaction was aborted: restore every shard as if newly assigned.

        Its outputs are gone, so the state that produced them is dropped too: the
        next loop turn resumes each shard from its checkpoint (C), replays up to
        the committed offsets (K) silently, and produces again from K.
        """
        self.shards.clear()
        self._parked.clear()
        self._uncommitted = {}
        self._to_restore = sorted(self._assigned)
        self.metrics.set_ready(False)

    def restore(self) -> set[TopicPartition]:
        """Resume the shards of the partitions assigned since the last restore.

        :meth:`start` and each :meth:`step` call it first; a caller that feeds
        :meth:`process_batch` itself calls it after :meth:`on_assigned`.

        Returns
        -------
        set of TopicPartition
            The partitions the source was told to seek (to a checkpoint or an offset).
        """
        inputs: dict[TopicPartition, list[TopicPartition]] = {}
        for tp in sorted(set(self._to_restore)):
            inputs.setdefault(self.shard_of(tp), []).append(tp)
        self._to_restore = []
        every = sorted(tp for tps in inputs.values() for tp in tps)
        committed = self.source.committed(every)
        beginning = self.source.beginning(every)
        self.guard.watch(every)
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

    def run(self, on_start: Callable[[], None] | None = None, *, final: bool = False) -> Summary:
        """Consume until the input ends, ``max_events`` is reached, or :meth:`stop`.

        The loop in full: :meth:`start`, :meth:`step` until it returns False,
        :meth:`finish`. After an error, the offsets whose outputs are written are
        committed and the error propagates. ``on_start`` is called after
        :meth:`start`, once the shards the source assigned at once are restored.
        ``final``: see :meth:`finish`.
        """
        self.start()
        if on_start is not None:
            on_start()
        try:
            while self.step():
                pass
        except BaseException:
            self._salvage()
            self._close()
            raise
        return self.finish(final=final)

    def start(self) -> None:
        """Subscribe to the source and restore the shards it already assigned."""
        self._started = self._last_record = self._clock()
        self.source.subscribe(self)
        if self._to_restore:
            self.restore()

    def step(self) -> bool:
        """One turn of the loop: one poll batch, processed, committed, checkpointed.

        Restores newly assigned shards, polls at most ``service.batch_size``
        records, processes them, refreshes the metrics (a snapshot record when
        due), commits what the broker acknowledged and saves the shards whose
        checkpoint is due.

        Returns
        -------
        bool
            False when the run is over: :meth:`stop` was called, the input ended,
            ``max_events`` records were read or ``idle_timeout_s`` passed without one.
        """
        svc = self.settings.service
        if self._stopping:
            return False
        if self._to_restore:
            self.restore()
        self.metrics.set_ready(not self._to_restore and not self._replaying())
        budget = svc.batch_size
        if svc.max_events:
            budget = min(budget, svc.max_events - self.summary.records)
            if budget <= 0:
                return False
        records = self.source.poll(budget, svc.poll_timeout_ms)
        if self._to_restore:  # assigned during this poll: drop what precedes a seek
            moved = self.restore()
            records = [r for r in records if (r.origin.topic, r.origin.partition) not in moved]
        now = self._clock()
        if records:
            self._last_record = now
            self.process_batch(records, now)
        elif self.source.exhausted:
            return False
        elif svc.idle_timeout_s and now - self._last_record >= svc.idle_timeout_s:
            log.info("no records for %.1fs; stopping", svc.idle_timeout_s)
            return False
        else:
            self.committer.poll()
        self._report(self._clock())
        self._commit()  # the batch's offsets and outputs, a snapshot record included
        if records:
            self._checkpoint_due(self._clock())
        self._settle(wait=False)
        return True

    def finish(self, final: bool = False) -> Summary:
        """End the run: a last metrics snapshot, commit, checkpoint every shard.

        ``final``: nothing keeps this service's memory after the run (the CLI and
        :func:`stream_learner.api.run` end with it). Label records still waiting for
        their events then go to the learn dead letters, unless a checkpoint store
        keeps them.

        Returns
        -------
        Summary
            What the run did; the service then only releases shards.
        """
        try:
            self._waiting_labels(final)
            self._final_snapshot()
            self._commit()
            self._checkpoint_all()
            self.reporter.gauges(self.shards, force=True)
        except BaseException:
            self._salvage()
            raise
        finally:
            self._close()
        return self.summary

    def _waiting_labels(self, final: bool) -> None:
        """Label records still waiting for their events as the run ends: kept by the
        checkpoint, or, with no checkpoint store, to the learn dead letters."""
        waiting = sum(len(shard.learner.book.early) for shard in self.shards.values())
        if not waiting or not final:
            return
        these = ("1 label record {}waits for its event" if waiting == 1
                 else f"{waiting} label records {{}}wait for their events")
        if not isinstance(self.checkpointer, NullCheckpointer):
            log.info("%s (kept in the checkpoint)", these.format(""))
            return
        log.warning("%s as the run ends, and no checkpoint store keeps them: to the learn "
                    "dead letters (unknown_id)", these.format("still "))
        counts = Counts()
        for shard in self.shards.values():
            for expired in shard.learner.book.drain_early():
                self.metrics.labels_expired.labels(buffer=expired.buffer).inc()
                self._expired_label(expired, counts, "before the run ended")
        self.summary.add(counts)

    def _close(self) -> None:
        self._closed = True
        self.metrics.set_ready(False)
        self._finish_summary(self._started)

    def _salvage(self) -> None:
        """After an error: commit the offsets whose outputs are written; never raise."""
        uncommitted, self._uncommitted = self._uncommitted, {}
        self.committer.salvage(uncommitted)

    def _finish_summary(self, started: float) -> None:
        s = self.summary
        s.elapsed_s = self._clock() - started
        learners = [shard.learner for shard in self.shards.values()]
        s.metrics = {
            f"{t}[{p}]": shard.learner.metric_value for (t, p), shard in self.shards.items()
        }
        s.labelling = {**LabelStats.total(lr.book.stats for lr in learners).to_dict(),
                       "waiting_labels": sum(len(lr.book.early) for lr in learners)}
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
        shards = self.shards
        labels: dict[TopicPartition, _Labels] = {}
        for tp, run in _runs(records):
            key = self.shard_of(tp)
            shard = shards.get(key)
            if shard is None:  # revoked mid-batch: not ours to count or commit
                continue
            left = labels.get(key)
            if left is None:
                left = labels[key] = _Labels()
            n_replayed += self._process_run(shard, tp, run, counts, latencies, received_at, left)
        self.reporter.seen(records)
        if n_replayed:
            self.summary.replayed += n_replayed
            self.metrics.replayed.inc(n_replayed)
        for key in shards:  # in the shards' order
            left = labels.get(key)
            if left is not None:
                self._report_labels(left, counts)
        self._record_batch(counts, latencies, received_at)

    def _process_run(
        self,
        shard: Shard,
        tp: TopicPartition,
        run: Sequence[Record],
        counts: Counts,
        latencies: list[float],
        received_at: float,
        left: _Labels,
    ) -> int:
        """Consecutive records of one partition of a shard, in order; returns how many replayed.

        A record below the frontier of a restore (``shard.replay_until``) is
        replayed silently, the others are handled live: a live record's alerts
        are written right after it, its labels' delays and expired entries are
        kept in ``left`` and reported after the batch (or before a replayed
        record). The shard's position, commit frontier and checkpoint schedule
        are kept in locals and written when the run ends or fails (their values
        are those of a record-by-record update), and before an out-of-sequence
        offset is judged.
        """
        until = shard.replay_until.get(tp)  # None: nothing of this partition to replay
        expected = shard.position.get(tp)
        learner = shard.learner
        handle, in_sequence = self._handle, self._in_sequence
        done = replayed = 0
        live_end: int | None = None  # the commit frontier after the last live record
        record: Record | None = None
        try:
            for record in run:
                offset = record.origin[2]
                if offset != expected and expected is not None:
                    shard.position[tp] = expected  # what _in_sequence compares with
                    if not in_sequence(shard, tp, offset):
                        continue
                if until is not None and offset < until:
                    self._report_labels(left, counts)  # what live records of the batch left
                    self._replay(record, learner)
                    replayed += 1
                else:
                    alerts = handle(record, learner, counts, latencies, received_at, left)
                    if alerts:
                        self.reporter.alerts(shard.id, alerts)
                    live_end = offset + 1
                expected = offset + 1
                done += 1
                if until is not None and expected >= until:
                    del shard.replay_until[tp]
                    log.info("shard %s: silent replay done at offset %d", shard.id, expected)
                    until = None
        except BaseException as exc:
            self._escaped(record, exc)
        finally:  # the records handled before an error are processed: keep their bookkeeping
            if done and expected is not None:
                shard.position[tp] = expected
                shard.records_since_save += done
                shard.dirty = True
            if live_end is not None:
                self._uncommitted[tp] = live_end
        return replayed

    def _report_labels(self, left: _Labels, counts: Counts) -> None:
        """Report joined labels' delays; count expired entries, dead-letter expired early labels.

        ``left`` is emptied.
        """
        if left.joined:
            self._report_delays(left.joined)
            left.joined = []
        if left.expired:
            m = self.metrics
            for expired in left.expired:
                m.labels_expired.labels(buffer=expired.buffer).inc()
                if expired.label is not None:
                    self._expired_label(expired, counts)
            left.expired = []

    def _report_delays(self, delays: Sequence[Joined]) -> None:
        """Joined labels and their delays: one increment per ``when``, one fill per histogram.

        Three locked Prometheus calls per label were a tenth of the loop's time;
        the values are the same as with one ``inc`` and two ``observe`` per label.
        """
        m = self.metrics
        whens, events, seconds = zip(*delays, strict=True)  # the three columns, in C
        if whens.count(whens[0]) == len(whens):  # one kind (e.g. every label inline)
            m.child(m.labels_joined, whens[0]).inc(len(whens))
        else:
            for when, n in Counter(whens).items():  # first-seen order
                m.child(m.labels_joined, when).inc(n)
        observe_many(m.label_delay_events, events)
        observe_many(m.label_delay_seconds, seconds)

    def _replay(self, record: Record, learner: Learner) -> None:
        """Re-process a record below the committed offset: learn, emit nothing.

        Its outcome is dropped: the labels it joined, the buffer entries it
        expired and the alerts it raised were reported (and expired labels
        dead-lettered) when the record was first processed.
        """
        if self._suspects and self.guard.recognise(record) is not None:
            return  # it stopped a worker before: dead-lettered, never learned
        try:
            item = self.codec.decode(record.value, record.key, record.timestamp_ms, record.origin)
            learner.process(item)
        except Exception:  # its dead letter was emitted when it was first processed
            pass

    def _handle(
        self,
        record: Record,
        learner: Learner,
        counts: Counts,
        latencies: list[float],
        received_at: float,
        left: _Labels,
    ) -> Sequence[Alert]:
        """Decode, score, learn and emit one live record; its content's failures are its own.

        Whatever this record's content makes fail (decode, validation, the
        model, the metric, the drift monitors, encoding the prediction) makes a
        dead letter with a reason code, never an exception: see docs/errors.md.
        The labels the record joined and the entries it expired go to ``left``;
        returns the alerts it raised, for the caller to write after it.
        """
        counts.records += 1
        if self._suspects and self._stopped_before(record, counts):
            return ()
        value, key, timestamp_ms, origin = record
        try:
            item = self.codec.decode(value, key, timestamp_ms, origin)
            # Learner.process without its type test for the common case, an event
            outcome = (
                learner.process_event(item) if type(item) is Event else learner.process(item)
            )
        except InvalidRecord as error:
            self._reject(record, error, counts)
            done: Outcome | None = error.outcome  # e.g. a label learned, then the metric failed
            return () if done is None else self._took(done, counts, left)
        except MemoryError:
            raise  # the worker's memory, not this record (records are at most max_record_bytes)
        except StreamLearnerError:
            # the state (a key's stored entry refused), a server or the settings: not this
            # record's content; the worker stops with one line, as at restore
            raise
        except Exception as exc:  # a defect this record's content reached: only its own loss
            self._reject(record, _unexpected(exc), counts, exc)
            return ()
        prediction, joined, expired, alerts = outcome
        if joined:  # labels learned by this record: an inline one, an early one joined to
            # this event, or this label record joined to its prediction
            counts.labels += len(joined)
            left.joined += joined
        if expired:
            left.expired += expired
        if prediction is None:
            counts.label_records += 1
            return alerts
        latency = self._clock() - received_at
        try:
            body = encode_prediction(prediction, latency * 1000.0)
        except Exception as exc:  # the model returned what JSON cannot hold
            unencodable = InvalidRecord(
                "encode_failed",
                f"the prediction of this event cannot be encoded: {type(exc).__name__}: {exc}",
            )
            self._reject(record, unencodable, counts)
            return alerts
        latencies.append(latency)
        self.sink.send("predictions", prediction.key.encode("utf-8"), body)
        counts.predictions += 1
        if prediction.label_error is not None:
            counts.inline_labels_rejected += 1
            if prediction.label_error.reason == "learn_failed":
                self._failed_predictions += 1
                self._model_failed(record, prediction.label_error, counts)
            self._dead_letter(record, prediction.label_error, counts)
        return alerts

    def _took(self, outcome: Outcome, counts: Counts, left: _Labels) -> Sequence[Alert]:
        """Count and keep what a record the learner refused still did; its alerts."""
        _prediction, joined, expired, alerts = outcome
        counts.labels += len(joined)
        left.joined += joined
        left.expired += expired
        return alerts

    def _reject(
        self,
        record: Record,
        error: InvalidRecord,
        counts: Counts,
        cause: BaseException | None = None,
    ) -> None:
        """``record`` has no other outcome than its dead letter."""
        counts.dead_letters += 1
        if error.reason in _MODEL_REASONS:
            self._model_failed(record, error, counts)
        self._dead_letter(record, error, counts, cause)

    def _model_failed(self, record: Record, error: InvalidRecord, counts: Counts) -> None:
        """Count a model failure; stop once the model has failed on every one of many records.

        The streak is broken by any record the model handled without raising
        (a prediction without ``learn_failed``, or a label record); records
        rejected before the model neither break nor extend it.

        Raises
        ------
        ModelFailing
            After :data:`MODEL_FAILURE_LIMIT` model failures in a row.
        """
        s = self.summary
        succeeded = (
            s.predictions + counts.predictions + s.label_records + counts.label_records
            - self._failed_predictions
        )
        if succeeded != self._succeeded_at_failure:
            self._model_streak = 0
        self._succeeded_at_failure = succeeded
        self._model_streak += 1
        if self._model_streak >= MODEL_FAILURE_LIMIT:
            topic, partition, offset = record.origin
            raise ModelFailing(
                f"the model raised on {self._model_streak} records in a row, the last at "
                f"{topic}[{partition}]@{offset}: {error}; check the [model] settings"
            )

    def _stopped_before(self, record: Record, counts: Counts) -> bool:
        """Dead-letter ``record`` when it made a worker stop before (see :mod:`.guard`)."""
        suspect = self.guard.recognise(record)
        if suspect is None:
            return False
        error = InvalidRecord(
            "stopped_worker",
            f"this record made a worker stop before ({suspect.error}); it is not retried",
        )
        self._reject(record, error, counts)
        return True

    def _escaped(self, record: Record | None, exc: BaseException) -> NoReturn:
        """An error left one record's handling: re-raise it, or stop naming that record."""
        if record is None or not _about_one_record(exc):
            raise exc
        self._stopped_by(record, exc)

    def _stopped_by(self, record: Record, exc: BaseException) -> NoReturn:
        """Leave a marker of ``record`` and stop: one line naming the record and the error."""
        topic, partition, offset = record.origin
        log.error(
            "%s[%d]@%d made the worker stop; a restarted worker dead-letters it "
            "(reason stopped_worker) if it comes again with the same bytes",
            topic, partition, offset, exc_info=exc,
        )
        self.guard.remember(record, exc)
        raise RecordStoppedWorker(
            f"{topic}[{partition}]@{offset} made the worker stop: {type(exc).__name__}: {exc}"
        ) from exc

    def _in_sequence(self, shard: Shard, tp: TopicPartition, offset: int) -> bool:
        expected = shard.position.get(tp)
        if expected is None or offset == expected:
            return True
        if offset < expected:
            log.debug("shard %s: skipping offset %d, already processed", shard.id, offset)
            return False
        if isinstance(self.source, FiniteInput):  # a file keeps every line: these were blank
            return True
        log.error(
            "ALERT shard %s: offsets %d..%d of %s[%d] were skipped by the consumer "
            "(retention or an offset reset); continuing at %d",
            shard.id, expected, offset - 1, tp[0], tp[1], offset,
        )
        self.metrics.recovery_alerts.labels(kind="offset_gap").inc()
        return True

    def _dead_letter(
        self,
        record: Record,
        error: InvalidRecord,
        counts: Counts,
        cause: BaseException | None = None,
    ) -> None:
        """Queue ``record`` on the input or the learn dead-letter output.

        Every dead letter is logged at debug level; the first of each reason
        also as a warning (with the traceback of an unexpected error).
        """
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
        if error.reason not in self._reasons_logged:
            self._reasons_logged.add(error.reason)
            log.warning(
                "dead letter to %s at %s[%d]@%d: %s (further ones of this reason at debug level)",
                output, *record.origin, error, exc_info=cause,
            )

    def _expired_label(
        self, expired: Expired, counts: Counts, until: str = "within the [labels] early_max_* limits"
    ) -> None:
        """An early label whose event never came: to the learn dead letters.

        The label record was accepted (counted as a label record) when it came;
        its value here is the label re-encoded in the ``[schema]`` field names, as
        its original bytes are gone.
        """
        label = expired.label
        assert label is not None
        value = encode_label(label.id, label.label, label.key, label.ts, self.settings.schema_)
        record = Record(value, label.key.encode("utf-8"), int(label.ts * 1000), label.origin)
        error = InvalidLabel(
            "unknown_id",
            f"no event with id {label.id!r} and key {label.key!r} arrived {until}",
        )
        self._dead_letter(record, error, counts)
        counts.labels_expired += 1

    def _record_batch(self, counts: Counts, latencies: list[float], t0: float) -> None:
        """The batch's counts into the summary and the metrics (a zero adds nothing)."""
        m = self.metrics
        self.summary.add(counts)
        m.batches.inc()
        if counts.labels:
            m.labels_learned.inc(counts.labels)
        for kind, n in (("prediction", counts.predictions), ("label", counts.label_records),
                        ("dead_letter", counts.dead_letters)):
            if n:
                m.child(m.records, kind).inc(n)
        if counts.inline_labels_rejected:
            m.inline_labels_rejected.inc(counts.inline_labels_rejected)
        observe_many(m.event_latency, latencies)  # per batch, not one locked observe per event
        m.child(m.stage_latency, "process").observe(self._clock() - t0)

    def _report(self, now: float) -> None:
        """Consumer lag, the per-partition gauges and a metrics snapshot, each when due.

        The gauges are also set with each lag measurement, from the same state as
        the live page's sample: an idle worker's gauges and page agree. A snapshot
        record is an output like the others: the commit that follows covers it.
        """
        lagged = self.reporter.lag(self.shards, now)
        self.reporter.gauges(self.shards, force=lagged)
        if self.reporter.snapshot_due(self.shards, self._totals):
            self._snapshot_records = self.summary.records
            self._outputs_pending = True

    def _totals(self) -> dict[str, int]:
        """The run's counts for a metrics snapshot."""
        return {**self.summary.counts_dict(), "replayed": self.summary.replayed}

    def _final_snapshot(self) -> None:
        """Local transport: a last metrics snapshot at shutdown, however short the run was."""
        local = self.settings.service.transport == "local"
        if (
            not (local and self.settings.local.metrics)  # Kafka: the periodic snapshots
            or not self.settings.metrics.snapshot_interval_s
            or self._snapshot_records == self.summary.records  # the last one has these totals
        ):
            return
        self.reporter.send_snapshot(self.shards, self._totals(), self._clock())
        self._outputs_pending = True

    def _commit(self) -> None:
        if not self._uncommitted and not self._outputs_pending:
            return
        t0 = self._clock()
        self.committer.commit(self._uncommitted)
        self._uncommitted = {}
        self._outputs_pending = False
        m = self.metrics
        m.commits.inc()
        m.child(m.stage_latency, "commit").observe(self._clock() - t0)

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

    def _acked_checkpoints(self, spec: ModelSpec, clock: Callable[[], float]) -> None:
        """Pipelined with one model per partition: checkpoints wait for acks, not the loop."""
        committer, sink, checkpointer = self.committer, self.sink, self.checkpointer
        if (
            isinstance(committer, Pipelined) and isinstance(sink, AckingSink)
            and isinstance(checkpointer, Checkpointer) and spec.scope != "key"
        ):
            self.committer = AckedCheckpoints(
                committer, sink, checkpointer, self._fenced, clock
            )

    def _fenced(self, shard: Shard, exc: CheckpointFenced) -> None:
        """A newer epoch refused a checkpoint of ``shard``: drop it, or stop on a finite input.

        On Kafka another worker got the partition in a rebalance. A file or
        standard input is one shard read by one run: a newer epoch means another
        run (or a rollback) took over its checkpoints, and this run must not
        write another output.

        Raises
        ------
        CheckpointFenced
            ``exc``, when the source is a finite input.
        """
        if isinstance(self.source, FiniteInput):
            raise exc
        log.warning("dropping shard %s: %s", shard.id, exc)
        for tp, owned in list(self.shards.items()):
            if owned is shard:
                del self.shards[tp]

    def _checkpoint_due(self, now: float) -> None:
        ages = now >= self._ages_due  # every shard's age gauge when due, a due shard's always
        if ages:
            self._ages_due = now + GAUGES_INTERVAL_S
        due = []
        for tp, shard in self.shards.items():
            is_due = self.checkpointer.due(shard, now)
            if ages or is_due:
                self.metrics.checkpoint_age.labels(partition=str(tp[1])).set(now - shard.saved_at)
            if is_due:
                due.append((tp, shard))
        if due and isinstance(self.committer, AckedCheckpoints):
            for _tp, shard in due:
                self.committer.take(shard, now)  # written once its outputs are acknowledged
        elif due:
            self.committer.drain()  # C <= K: commit everything the snapshots cover first
            for tp, shard in due:
                if self.shards.get(tp) is shard:  # not dropped by an aborted transaction
                    self._save_or_drop(shard, now)

    def _checkpoint_all(self) -> None:
        self.committer.drain()
        now = self._clock()
        for shard in list(self.shards.values()):
            if shard.dirty:
                self._save_or_drop(shard, now)
        self._settle(wait=True)

    def _settle(self, wait: bool) -> None:
        """Account for the keyed checkpoint writes done in the background (all: ``wait``)."""
        for shard, exc in self.checkpointer.settle(wait):
            self._fenced(shard, exc)

    def _save_or_drop(self, shard: Shard, now: float) -> None:
        """Checkpoint ``shard`` now; fenced, see :meth:`_fenced`."""
        try:
            self._save(shard, now)
        except CheckpointFenced as exc:
            self._fenced(shard, exc)

    def _save(self, shard: Shard, now: float) -> None:
        if shard.dirty:
            t0 = self._clock()
            self.checkpointer.save(shard, now)
            self.metrics.child(self.metrics.stage_latency, "checkpoint").observe(self._clock() - t0)


def _runs(records: Sequence[Record]) -> list[tuple[TopicPartition, list[Record]]]:
    """The batch cut into runs of consecutive records of one input partition, in order.

    Examples
    --------
    >>> from stream_learner.events import Origin
    >>> rs = [Record(b"", None, 0, Origin("t", p, o)) for p, o in [(0, 5), (0, 6), (1, 2), (0, 7)]]
    >>> [(tp, [r.origin.offset for r in run]) for tp, run in _runs(rs)]
    [(('t', 0), [5, 6]), (('t', 1), [2]), (('t', 0), [7])]
    """
    out: list[tuple[TopicPartition, list[Record]]] = []
    current: TopicPartition | None = None
    run: list[Record] = []
    for record in records:
        topic, partition, _offset = record.origin
        if current is None or partition != current[1] or topic != current[0]:
            current = (topic, partition)
            run = []
            out.append((current, run))
        run.append(record)
    return out
