"""Replay history through the live service's code path: backtests, batch predictions, warm starts.

History comes from JSON Lines or CSV files, or from a range of a Kafka topic
read with manually assigned partitions (no consumer group, nothing committed).
It is fed to the same :class:`~stream_learner.service.Service` the live worker
runs, through :class:`ReplaySource`, an implementation of the
:class:`~stream_learner.sources.Source` protocol; so predictions, label joins,
metrics and state are the live service's own.

The pure steps, each a function of its input alone:

- :func:`csv_records` reads CSV rows as flat records (numbers parsed);
- :func:`sort_by_event_time` orders records by event time, stably;
- :func:`delay_labels` takes each event's label out and re-emits it as a
  label record later in the same partition: after a fixed number of events,
  or when event time reaches a field of the event (e.g. ``label_ts``), so the
  learner's pending-label buffer joins it as it would live.

A file is one partition; its offsets are positions in the replayed sequence
(the line number when nothing is reordered or inserted). A topic range keeps
its real offsets unless labels are re-emitted, which renumbers each partition.

Reading a Kafka topic range, running a backtest and writing a warm-start
checkpoint for the live worker: :mod:`stream_learner.backtest`.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import heapq
import logging
import math
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from stream_learner.events import Origin, parse_ts
from stream_learner.labels import encode_label
from stream_learner.settings import SchemaSettings
from stream_learner.sinks import Header, Sink
from stream_learner.sources import (
    JSON_SPACE,
    FiniteInput,
    PartitionListener,
    Record,
    TopicPartition,
)

__all__ = [
    "DriftPoints",
    "LabelDelay",
    "Progress",
    "ReplaySource",
    "RoutedSink",
    "count_records",
    "csv_records",
    "delay_labels",
    "file_records",
    "sort_by_event_time",
]

log = logging.getLogger(__name__)

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


# -- reading files ---------------------------------------------------------------------


def _number(text: str) -> Any:
    """A CSV cell as a number when it is one, ``None`` when empty, else the text.

    Examples
    --------
    >>> [_number(t) for t in ("7", "-2.5", "1e3", "", "pump-7", "nan")]
    [7, -2.5, 1000.0, None, 'pump-7', 'nan']
    """
    if text == "":
        return None
    if not _NUMBER.fullmatch(text):
        return text
    try:
        return int(text)
    except ValueError:
        value = float(text)
        return value if math.isfinite(value) else text


def csv_records(lines: Iterable[str]) -> Iterator[bytes]:
    """Flat JSON records from CSV text with a header row (empty cells are null).

    Examples
    --------
    >>> list(csv_records(["sensor,ts,temp,target", "p-7,10.5,71.2,1"]))
    [b'{"sensor":"p-7","ts":10.5,"temp":71.2,"target":1}']
    """
    for row in csv.DictReader(lines):
        yield orjson.dumps({name: _number(cell or "") for name, cell in row.items()})


def file_records(path: str) -> Iterator[bytes]:
    """The records of a ``.csv`` file (see :func:`csv_records`) or a JSON Lines file / ``-``."""
    if path == "-":
        yield from (line.rstrip(b"\r\n") for line in sys.stdin.buffer if line.strip(JSON_SPACE))
        return
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"history file not found: {file}")
    if file.suffix.lower() == ".csv":
        with file.open(newline="", encoding="utf-8") as handle:
            yield from csv_records(handle)
        return
    with file.open("rb") as raw:
        yield from (line.rstrip(b"\r\n") for line in raw if line.strip(JSON_SPACE))


def _load(value: bytes | None) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _event_time(obj: dict[str, Any] | None, field_name: str) -> float | None:
    try:
        return parse_ts(obj[field_name]) if obj is not None else None
    except (KeyError, ValueError, TypeError, OverflowError):
        return None


def sort_by_event_time(values: Iterable[bytes], schema: SchemaSettings) -> list[bytes]:
    """``values`` in event-time order; stable, and a record without a usable time keeps
    the time of the record before it (so it stays next to its neighbours).

    Examples
    --------
    >>> sort_by_event_time([b'{"ts": 3}', b'{"ts": 1}', b'oops', b'{"ts": 1}'], SchemaSettings())
    [b'{"ts": 1}', b'oops', b'{"ts": 1}', b'{"ts": 3}']
    """
    keyed: list[tuple[float, int, bytes]] = []
    last = -math.inf
    for i, value in enumerate(values):
        ts = _event_time(_load(value), schema.ts)
        last = last if ts is None else ts
        keyed.append((last, i, value))
    keyed.sort()
    return [value for _ts, _i, value in keyed]


# -- delayed labels --------------------------------------------------------------------


@dataclass(frozen=True)
class LabelDelay:
    """How labels are re-emitted: ``events`` later, or at the event time in ``field``.

    Exactly one of the two is set; :meth:`none` keeps labels inline.
    """

    events: int | None = None
    field: str | None = None

    @classmethod
    def none(cls) -> LabelDelay:
        """Labels stay inline."""
        return cls()

    @property
    def active(self) -> bool:
        """True when labels are moved out of their events."""
        return self.events is not None or self.field is not None


@dataclass
class _Owed:
    """Labels of one partition waiting to be re-emitted, ordered by when they are due."""

    heap: list[tuple[float, int, Record]] = field(default_factory=list)
    seq: int = 0
    n_events: int = 0
    offset: int = 0
    ts: float | None = None
    #: labelled events whose label stayed inline (no usable ``delay.field``)
    kept: int = 0


class _Inline(enum.Enum):
    """A labelled event whose label stays inline: ``delay.field`` has no usable time."""

    KEPT = "kept"


_KEPT = _Inline.KEPT


def _split_label(
    record: Record, schema: SchemaSettings, delay: LabelDelay
) -> tuple[Record, dict[str, Any] | None, float | _Inline | None]:
    """The event without its label, the label record's fields, and when it is due (event time);
    ``_KEPT`` as the time when the label stays inline for want of a usable ``delay.field``."""
    obj = _load(record.value)
    if obj is None or obj.get(schema.label) is None:
        return record, None, None
    due = _event_time(obj, delay.field) if delay.field else None
    if delay.field and due is None:
        return record, None, _KEPT  # no usable label time: the label stays inline
    label = {schema.id: obj.get(schema.id), schema.label: obj.pop(schema.label)}
    if obj.get(schema.key) is not None:
        label[schema.key] = obj[schema.key]
    if delay.field:
        obj.pop(delay.field, None)
    return Record(orjson.dumps(obj), record.key, record.timestamp_ms, record.origin), label, due


def delay_labels(
    records: Iterable[Record], schema: SchemaSettings, delay: LabelDelay
) -> Iterator[Record]:
    """Move each event's label into a label record emitted later in its partition.

    With ``delay.events = k`` the label follows the ``k``-th later record of the
    partition; with ``delay.field`` it comes before the first record whose event
    time reaches that field's time (ties: the label first). Labels still owed at
    the end follow the last record. Offsets are renumbered per partition.

    Examples
    --------
    >>> from stream_learner.events import Origin
    >>> raw = [b'{"id": 1, "features": {"x": 1}, "label": 5}', b'{"id": 2, "features": {"x": 2}}']
    >>> recs = [Record(v, None, 0, Origin("h", 0, i)) for i, v in enumerate(raw)]
    >>> [(r.value, r.origin.offset) for r in delay_labels(recs, SchemaSettings(), LabelDelay(events=1))]
    [(b'{"id":1,"features":{"x":1}}', 0), (b'{"id": 2, "features": {"x": 2}}', 1), (b'{"id":1,"label":5}', 2)]
    """
    owed: dict[TopicPartition, _Owed] = {}
    try:
        yield from _delayed(records, schema, delay, owed)
    finally:
        kept = sum(state.kept for state in owed.values())
        if kept:
            log.warning("--label-ts-field %r: %d labelled events had no usable %r field, and "
                        "their labels stayed inline", delay.field, kept, delay.field)


def _delayed(records: Iterable[Record], schema: SchemaSettings, delay: LabelDelay,
             owed: dict[TopicPartition, _Owed]) -> Iterator[Record]:
    for record in records:
        tp = (record.origin.topic, record.origin.partition)
        state = owed.setdefault(tp, _Owed())
        event, label, due = _split_label(record, schema, delay)
        if due is _KEPT:
            state.kept += 1
            due = None
        now = _event_time(_load(event.value), schema.ts)
        if delay.field and now is not None:
            yield from _due(state, tp, now)  # labels due at or before this event's time
        state.ts = now if now is not None else state.ts
        yield _renumbered(event, tp, state)
        state.n_events += 1
        if label is not None:
            if due is None:  # fixed delay: due after the k-th later event
                due = float(state.n_events + (delay.events or 0) - 1)
                if state.ts is not None:
                    label.setdefault(schema.ts, state.ts)
            else:
                label.setdefault(schema.ts, due)
            heapq.heappush(state.heap, (due, state.seq, _label_record(label, event, schema)))
            state.seq += 1
        if delay.events is not None:
            yield from _due(state, tp, state.n_events - 0.5)
    for tp, state in owed.items():
        yield from _due(state, tp, math.inf)


def _label_record(label: dict[str, Any], event: Record, schema: SchemaSettings) -> Record:
    value = encode_label(
        label[schema.id], label[schema.label], label.get(schema.key), label.get(schema.ts), schema
    )
    return Record(value, event.key, event.timestamp_ms, event.origin)


def _due(state: _Owed, tp: TopicPartition, until: float) -> Iterator[Record]:
    """Owed labels due at or before ``until``, in due order."""
    while state.heap and state.heap[0][0] <= until:
        yield _renumbered(heapq.heappop(state.heap)[2], tp, state)


def _renumbered(record: Record, tp: TopicPartition, state: _Owed) -> Record:
    origin = Origin(tp[0], tp[1], state.offset)
    state.offset += 1
    return Record(record.value, record.key, record.timestamp_ms, origin)


# -- the replay source --------------------------------------------------------------------


class Progress:
    """A progress line on stderr (tqdm): done / total, share, rate and ETA.

    Only drawn when the stream is a terminal; otherwise it does nothing. While
    it is drawn, log records of the root logger's console handlers go through
    ``tqdm.write``, so that a log line never breaks into the progress line.
    """

    def __init__(
        self,
        total: int | None,
        stream: IO[str] | None = None,
        interval_s: float = 0.2,
    ) -> None:
        self.total = total
        self.done = 0
        stream = stream if stream is not None else sys.stderr
        self._stack = contextlib.ExitStack()
        self._bar: tqdm[Any] | None = None
        if not stream.isatty():
            return
        shape = ("replay {n}/{total} ({percentage:.0f}%) {bar:20} {rate_fmt} ETA {remaining}"
                 if total else "replay {n} records {rate_fmt}")
        self._bar = tqdm(total=total, file=stream, mininterval=interval_s, unit=" records",
                         bar_format=shape, dynamic_ncols=True)
        self._stack.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))
        self._stack.callback(self._bar.close)

    def update(self, n: int) -> None:
        """Count ``n`` more records; redraw when due."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)

    def counted(self, records: Iterable[Record], every: int = 500) -> Iterator[Record]:
        """Pass ``records`` through, counting them (redrawn every ``every`` records)."""
        pending = 0
        try:
            for record in records:
                pending += 1  # counted when handed out: a reader that stops holds it
                if pending == every:
                    self.update(pending)
                    pending = 0
                yield record
        finally:  # also when the reader stops early (max_events, Ctrl-C) and closes it
            self.update(pending)

    def close(self) -> None:
        """End the progress line and give the log handlers back."""
        self._stack.close()


def count_records(paths: Sequence[str]) -> int | None:
    """How many records :func:`file_records` will read from ``paths`` (``None`` for stdin).

    One pass over the files, so that a replay's progress has a total and an ETA.
    """
    if "-" in paths:
        return None
    total = 0
    for path in paths:
        file = Path(path)
        if not file.is_file():
            return None
        if file.suffix.lower() == ".csv":
            with file.open(newline="", encoding="utf-8") as handle:
                total += sum(1 for _ in csv.DictReader(handle))
        else:
            with file.open("rb") as raw:
                total += sum(1 for line in raw if line.strip(JSON_SPACE))
    return total


class ReplaySource(FiniteInput):
    """A finite, ordered sequence of records behind the :class:`~stream_learner.sources.Source`
    protocol: every partition is assigned at once, nothing is committed, and the
    service restores each shard as a fresh model.

    Parameters
    ----------
    partitions
        The partitions the records belong to (each becomes one shard).
    records
        The records, in the order they are to be processed.
    progress
        Closed with the source (it counts the input records itself, see
        :meth:`Progress.counted`, so that inserted label records do not count).
    """

    def __init__(
        self,
        partitions: Sequence[TopicPartition],
        records: Iterable[Record],
        progress: Progress | None = None,
    ) -> None:
        self.partitions = sorted(partitions)
        self._records = iter(records)
        self._progress = progress
        self._exhausted = False

    def subscribe(self, listener: PartitionListener) -> None:
        """Assign every partition."""
        listener.on_assigned(self.partitions)

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """The next ``max_records`` records."""
        batch = [r for _, r in zip(range(max_records), self._records, strict=False)]
        if len(batch) < max_records:
            self._exhausted = True
        return batch

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """A replay is read once, in order; fresh shards never seek."""

    def close(self) -> None:
        """Stop reading the records (which counts the last ones), then close the progress line."""
        close = getattr(self._records, "close", None)
        if close is not None:
            close()
        if self._progress is not None:
            self._progress.close()


# -- outputs ----------------------------------------------------------------------------


class RoutedSink:
    """Sends each role to its own sink (e.g. predictions to Kafka, dead letters to files)."""

    def __init__(self, routes: Mapping[str, Sink], default: Sink) -> None:
        self._routes = dict(routes)
        self._default = default
        self._sinks = list({id(s): s for s in [default, *routes.values()]}.values())

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Route one record."""
        self._routes.get(role, self._default).send(role, key, value, headers)

    def flush(self) -> None:
        """Flush every sink."""
        for sink in self._sinks:
            sink.flush()

    def close(self) -> None:
        """Close every sink."""
        for sink in self._sinks:
            sink.close()


class DriftPoints:
    """Passes records through to ``sink`` and keeps the drift alerts among them.

    The service sends alert records with the role ``alerts``; every one is
    forwarded and kept in :attr:`alerts`. The drift points of the replay
    summary are the confirmed drifts among them (``severity = "drift"``), not
    the warnings, resolutions or actions.
    """

    ROLE = "alerts"

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self.alerts: list[dict[str, Any]] = []

    @property
    def points(self) -> list[dict[str, Any]]:
        """The confirmed drifts: alert records with ``severity = "drift"``."""
        return [a for a in self.alerts if a.get("severity") == "drift"]

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Forward; keep a copy of alerts."""
        if role == self.ROLE:
            alert = _load(value)
            if alert is not None:
                self.alerts.append(alert)
        self._sink.send(role, key, value, headers)

    def flush(self) -> None:
        """Flush the wrapped sink."""
        self._sink.flush()

    def close(self) -> None:
        """Close the wrapped sink."""
        self._sink.close()

    def render(self) -> str:
        """One summary line: where the confirmed drifts were seen.

        Examples
        --------
        >>> from stream_learner.testing import MemorySink
        >>> points = DriftPoints(MemorySink())
        >>> points.alerts = [{"severity": "drift", "shard": "events:0", "series": "error",
        ...     "detector": "ADWIN", "key": "s1", "offsets": {"from": 5, "to": 9}},
        ...     {"severity": "resolved"}]
        >>> points.render()
        'drift points (1): events:0 error (ADWIN) offsets 5..9 key s1'
        """
        points = self.points
        if not points:
            return "drift points: none"

        def where(a: dict[str, Any]) -> str:
            offsets = a.get("offsets") or {}
            key = f" key {a['key']}" if a.get("key") else ""
            return (f"{a.get('shard')} {a.get('series')} ({a.get('detector')}) "
                    f"offsets {offsets.get('from')}..{offsets.get('to')}{key}")

        shown = ", ".join(where(a) for a in points[:20])
        more = f" and {len(points) - 20} more" if len(points) > 20 else ""
        return f"drift points ({len(points)}): {shown}{more}"
