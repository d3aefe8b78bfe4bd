"""Backtests and batch predictions: history through the live service, and warm starts.

:func:`run_backtest` reads history (files, or a range of the events topic read
by :class:`TopicHistory` with manually assigned partitions: no consumer group,
nothing committed), prepares it with the pure steps of :mod:`stream_learner.replay`
(event-time order, delayed labels), and runs it through the live
:class:`~stream_learner.service.Service` behind a
:class:`~stream_learner.replay.ReplaySource`.

Warm start (:func:`write_warm_start`): after a backtest of offsets ``[S, N)``
of partition ``p`` of the events topic, the shard's state is checkpointed under
the name the live worker uses (``<events_topic>:<p>``) with offset ``N``. The
live worker restores it, seeks to ``N`` and re-processes silently only what
its group already committed past ``N`` (its outputs exist); with no committed
offset (a new group) or one at ``N``, nothing is learned twice and the worker
continues exactly as an uninterrupted run would. A committed offset below
``N`` is reported: the live worker resumes at ``N`` and the records between
were scored by the backtest, not by the group.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.events import Origin, parse_ts
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.recovery import Shard, shard_id
from stream_learner.replay import (
    _NUMBER,
    DriftPoints,
    LabelDelay,
    Progress,
    ReplaySource,
    RoutedSink,
    count_records,
    delay_labels,
    file_records,
    sort_by_event_time,
)
from stream_learner.service import Service, Summary
from stream_learner.settings import Settings
from stream_learner.sinks import FileSink, Sink, local_outputs
from stream_learner.sources import Record, TopicPartition
from stream_learner.stores import CheckpointStore

__all__ = [
    "BacktestOptions",
    "BacktestResult",
    "TopicHistory",
    "TopicRange",
    "group_committed",
    "parse_position",
    "run_backtest",
    "write_warm_start",
]

log = logging.getLogger(__name__)


# -- Kafka topic ranges ---------------------------------------------------------------------


def parse_position(spec: str) -> str | int | float | dict[int, int]:
    """A range bound: ``earliest``, ``latest``, an offset for every partition,
    ``P:OFFSET,...`` per partition, or ``@TIME`` (epoch seconds or ISO 8601).

    Examples
    --------
    >>> parse_position("earliest"), parse_position("100"), parse_position("0:5,1:7")
    ('earliest', 100, {0: 5, 1: 7})
    >>> parse_position("@2026-01-01T00:00:00Z")
    1767225600.0
    """
    spec = spec.strip()
    try:
        if spec in ("earliest", "latest"):
            return spec
        if spec.startswith("@"):
            text = spec[1:]
            return parse_ts(float(text) if _NUMBER.fullmatch(text) else text)
        if ":" in spec:
            pairs = (part.split(":", 1) for part in spec.split(","))
            return {int(p): int(o) for p, o in pairs}
        return int(spec)
    except ValueError:
        raise SettingsError(
            f"range bound {spec!r}: expected earliest, latest, an offset, P:OFFSET,... or @TIME"
        ) from None


@dataclass(frozen=True)
class TopicRange:
    """Offsets ``[start, end)`` of each partition of a topic."""

    topic: str
    start: dict[int, int]
    end: dict[int, int]

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions with at least one offset in the range."""
        return [(self.topic, p) for p in sorted(self.start) if self.start[p] < self.end[p]]

    @property
    def size(self) -> int:
        """Offsets covered (records, minus transaction markers and compacted records)."""
        return sum(max(0, self.end[p] - self.start[p]) for p in self.start)


def _resolve(
    consumer: Any, tps: list[Any], bound: str | int | float | dict[int, int], fallback: str
) -> dict[int, int]:
    first = consumer.beginning_offsets(tps)
    last = consumer.end_offsets(tps)
    if isinstance(bound, dict):
        chosen = {
            tp.partition: bound.get(tp.partition, first[tp] if fallback == "earliest" else last[tp])
            for tp in tps
        }
    elif bound == "earliest":
        chosen = {tp.partition: first[tp] for tp in tps}
    elif bound == "latest":
        chosen = {tp.partition: last[tp] for tp in tps}
    elif isinstance(bound, int):
        chosen = dict.fromkeys((tp.partition for tp in tps), bound)
    else:
        found = consumer.offsets_for_times({tp: int(bound * 1000) for tp in tps})
        chosen = {tp.partition: found[tp].offset if found[tp] else last[tp] for tp in tps}
    return {tp.partition: min(max(chosen[tp.partition], first[tp]), last[tp]) for tp in tps}


class TopicHistory:
    """Reads a range of a topic with manually assigned partitions (no group, no commits).

    The end of the range is fixed when it is opened, so a replay ends even while
    producers keep writing.
    """

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str],
        start: str,
        end: str,
        partitions: Sequence[int] = (),
        stall_timeout_s: float = 30.0,
    ) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import TopicPartition as KafkaTP

        from stream_learner.kafka import kafka_python
        from stream_learner.kafka.options import isolation_level, unreachable

        k = settings.kafka
        self._stall = stall_timeout_s
        self._consumer = kafka_python.consumer(
            k, environ, group_id=None, max_poll_records=settings.service.batch_size,
            isolation_level=isolation_level(settings),
        )
        try:
            found = self._consumer.partitions_for_topic(k.events_topic)
        except KafkaError as exc:
            self._consumer.close()
            raise ConnectionFailed(unreachable(k, exc)) from exc
        if not found:
            self._consumer.close()
            raise ConnectionFailed(f"topic {k.events_topic!r} not found on Kafka at "
                                   f"{k.bootstrap_servers}")
        chosen = sorted(partitions or found)
        tps = [KafkaTP(k.events_topic, p) for p in chosen]
        self._consumer.assign(tps)
        self.range = TopicRange(
            k.events_topic,
            _resolve(self._consumer, tps, parse_position(start), "earliest"),
            _resolve(self._consumer, tps, parse_position(end), "latest"),
        )

    def records(self) -> Iterator[Record]:
        """The records of the range, each partition in log order."""
        from kafka.structs import TopicPartition as KafkaTP

        r = self.range
        todo = {KafkaTP(t, p) for t, p in r.partitions}
        for tp in todo:
            self._consumer.seek(tp, r.start[tp.partition])
        self._consumer.pause(*[tp for tp in self._consumer.assignment() if tp not in todo])
        last_progress = time.monotonic()
        while todo:
            for tp, batch in self._consumer.poll(timeout_ms=500).items():
                end = r.end[tp.partition]
                yield from (
                    Record(m.value, m.key, m.timestamp, Origin(tp.topic, tp.partition, m.offset))
                    for m in batch if m.offset < end
                )
                last_progress = time.monotonic()
            for tp in [tp for tp in todo if self._consumer.position(tp) >= r.end[tp.partition]]:
                todo.discard(tp)
                self._consumer.pause(tp)
            if todo and time.monotonic() - last_progress > self._stall:
                raise ConnectionFailed(f"no records from {sorted(todo)} for {self._stall:.0f}s")

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def group_committed(
    settings: Settings, environ: Mapping[str, str], partitions: Sequence[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The live group's committed offsets K (read only: the group is not joined)."""
    from kafka.structs import TopicPartition as KafkaTP

    from stream_learner.kafka import kafka_python

    consumer = kafka_python.consumer(settings.kafka, environ, group_id=settings.kafka.group_id)
    try:
        return {tp: consumer.committed(KafkaTP(*tp)) for tp in partitions}
    finally:
        consumer.close(autocommit=False)


# -- warm start -------------------------------------------------------------------------


def write_warm_start(
    store: CheckpointStore,
    codec: EnvelopeCodec,
    shards: Mapping[TopicPartition, tuple[Shard, int]],
    created_at: float,
) -> dict[str, int]:
    """Checkpoint each replayed shard as the live shard ``(topic, partition)``, resuming at
    the given offset; return the checkpoint id of each shard name.

    The checkpoint carries the store's newest epoch of that shard, so it is not
    fenced, and the next live owner (a newer epoch) replaces it as usual.
    """
    written: dict[str, int] = {}
    for tp, (shard, offset) in sorted(shards.items()):
        sid = shard_id(tp)
        epoch = max(store.epoch(sid), 0)
        blob = codec.seal(sid, {tp: offset}, epoch, shard.learner, created_at=created_at)
        written[sid] = store.save(sid, epoch, blob)
    return written


# -- the backtest -----------------------------------------------------------------------


@dataclass(frozen=True)
class BacktestOptions:
    """What to replay and where the results go.

    Parameters
    ----------
    inputs
        JSON Lines / CSV files (``-``: stdin); empty: a range of ``kafka.events_topic``.
    start, end, partitions
        The topic range (see :func:`parse_position`); all partitions when empty.
    sort_by_ts
        Files: replay in event-time order (stable).
    label_delay
        Labels inline, or re-emitted as label records later.
    output_topic
        Predictions to this Kafka topic instead of ``local.output``.
    alerts
        Drift alerts to this JSON Lines file (empty: not written).
    resume_offset, partition
        Files with a checkpoint: the shard ``<events_topic>:<partition>`` resumes at this offset.
    """

    inputs: tuple[str, ...] = ()
    start: str = "earliest"
    end: str = "latest"
    partitions: tuple[int, ...] = ()
    sort_by_ts: bool = False
    label_delay: LabelDelay = field(default_factory=LabelDelay.none)
    output_topic: str = ""
    alerts: str = ""
    resume_offset: int | None = None
    partition: int = 0


@dataclass
class BacktestResult:
    """The run summary, the drift alerts seen, and the warm-start checkpoints written."""

    summary: Summary
    drift: DriftPoints
    checkpoints: dict[str, int] = field(default_factory=dict)
    #: the replay was stopped (``on_start``'s stop): its input may not have been read to the end
    stopped: bool = False

    def render(self) -> str:
        """The summary lines printed at the end."""
        lines = [self.summary.render(), self.drift.render()]
        if self.checkpoints:
            lines.append("warm start: " + ", ".join(
                f"{sid} checkpoint {cid}" for sid, cid in sorted(self.checkpoints.items())
            ))
        return "\n".join(lines)


def _file_history(
    settings: Settings, options: BacktestOptions
) -> tuple[Settings, list[TopicPartition], Iterable[Record], int | None]:
    flat = any(path.lower().endswith(".csv") for path in options.inputs)
    if flat:  # CSV rows are flat: [schema] names the id/key/ts/label columns
        schema = settings.schema_.model_copy(update={"features": ""})
        settings = settings.model_copy(update={"schema_": schema})
    values: Iterable[bytes] = itertools.chain.from_iterable(
        file_records(path) for path in options.inputs
    )
    total = count_records(options.inputs)
    if options.sort_by_ts:
        values = sort_by_event_time(values, settings.schema_)
        total = len(values)
    name = options.inputs[0] if len(options.inputs) == 1 else "history"
    records = (Record(v, None, 0, Origin(name, 0, i)) for i, v in enumerate(values))
    return settings, [(name, 0)], records, total


def _sink(settings: Settings, environ: Mapping[str, str], options: BacktestOptions) -> DriftPoints:
    # alerts to the backtest's own file; no metrics snapshots
    targets = {**local_outputs(settings), DriftPoints.ROLE: options.alerts or None, "metrics": None}
    if options.output_topic:
        targets["predictions"] = None
    files = FileSink(targets)
    sink: Sink = files
    if options.output_topic:
        kafka = settings.kafka.model_copy(update={"predictions_topic": options.output_topic})
        try:
            from stream_learner.kafka.factory import build_sink

            producer = build_sink(settings.model_copy(update={"kafka": kafka}), environ)
        except BaseException:
            files.close()
            raise
        sink = RoutedSink({"predictions": producer}, files)
    return DriftPoints(sink)


def run_backtest(
    settings: Settings,
    spec: ModelSpec,
    environ: Mapping[str, str],
    options: BacktestOptions,
    store: CheckpointStore | None = None,
    codec: EnvelopeCodec | None = None,
    on_start: Callable[[Callable[[], None]], None] | None = None,
) -> BacktestResult:
    """Replay the history ``options`` names through the service; checkpoint it into ``store``.

    ``on_start`` is given the service's ``stop`` once it runs (the CLI wires it to
    Ctrl-C): a stopped replay finishes its batch, writes its outputs and returns
    its partial result, with ``stopped`` set and no warm-start checkpoint.
    """
    if store is not None and options.inputs and options.resume_offset is None:
        raise SettingsError(
            "a warm start from files needs --resume-offset: the offset of "
            f"{settings.kafka.events_topic}:{options.partition} the live worker starts at"
        )
    history: TopicHistory | None = None
    if options.inputs:
        settings, partitions, records, total = _file_history(settings, options)
    else:
        history = TopicHistory(settings, environ, options.start, options.end, options.partitions)
        partitions, records, total = history.range.partitions, history.records(), history.range.size
    if total is not None and settings.service.max_events:
        total = min(total, settings.service.max_events)
    progress = Progress(total)
    records = progress.counted(records)  # input records: inserted label records do not count
    if options.label_delay.active:
        records = delay_labels(records, settings.schema_, options.label_delay)
    source = ReplaySource(partitions, records, progress)
    stop_requested = False

    def stop() -> None:
        nonlocal stop_requested
        stop_requested = True
        service.stop()

    try:
        sink = _sink(settings, environ, options)
        try:
            service = Service(settings, spec, source, sink, Metrics())
            if on_start is not None:
                on_start(stop)
            # a warm-start checkpoint keeps the labels still waiting for their events
            summary = service.run(final=store is None)
        finally:
            sink.close()
    finally:
        source.close()
        if history is not None:
            history.close()
    # stopped even when the input ended in the same batch: with standard input, the
    # interrupt itself ends the input (the CLI switches it to /dev/null)
    result = BacktestResult(summary, sink, stopped=stop_requested)
    if store is not None and codec is not None and not result.stopped:
        if not source.exhausted:
            raise SettingsError("the replay stopped before the end of its input (--max-events): "
                                "no warm-start checkpoint was written")
        targets = _warm_targets(settings, environ, options, service.shards, history)
        result.checkpoints = write_warm_start(store, codec, targets, time.time())
    return result


def _warm_targets(
    settings: Settings,
    environ: Mapping[str, str],
    options: BacktestOptions,
    shards: Mapping[TopicPartition, Shard],
    history: TopicHistory | None,
) -> dict[TopicPartition, tuple[Shard, int]]:
    if history is None:
        (shard,) = shards.values()
        assert options.resume_offset is not None
        return {(settings.kafka.events_topic, options.partition): (shard, options.resume_offset)}
    targets = {tp: (shard, history.range.end[tp[1]]) for tp, shard in shards.items()}
    committed = group_committed(settings, environ, sorted(targets))
    for tp, k in committed.items():
        n = targets[tp][1]
        if k is not None and k < n:
            log.warning(
                "group %s committed %s[%d] at %d, before the replayed end %d: the live worker "
                "resumes at %d (records %d..%d were scored by this replay, not by the group)",
                settings.kafka.group_id, tp[0], tp[1], k, n, n, k, n - 1,
            )
        elif k is not None and k > n:
            log.info("group %s committed %s[%d] at %d: the live worker re-learns %d..%d silently",
                     settings.kafka.group_id, tp[0], tp[1], k, n, k - 1)
    return targets
