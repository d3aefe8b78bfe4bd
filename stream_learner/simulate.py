"""A sensor stream simulator: River generators as event and label records, at a paced rate.

The stream is pure and deterministic (:func:`simulate`): given the same
:class:`SimulationPlan` it yields the same records, byte for byte. Each sample
of a River synthetic generator (or of a dataset bundled with River) becomes one
event of the event contract, from one of ``keys`` sensors picked at random
(seeded); concept drift is placed at chosen event counts by chaining
``river.datasets.synth.ConceptDriftStream`` over the generator's concept
variants. With a label delay of ``k``, events carry no label and each label
follows as a label record ``{"id", "key", "ts", "label"}`` right after the
``k``-th later event; the labels still owed when the stream ends follow the
last event.

Writing is the edge: :func:`publish` sends records to an :class:`EventWriter`
(a JSON Lines file or stdout, or a Kafka topic keyed by sensor so that one
sensor's events and labels share a partition), paced against a schedule
(record ``i`` is due at ``start + i / rate``, so a slow send is caught up
rather than accumulated as drift).

Examples
--------
>>> import orjson
>>> plan = SimulationPlan(source="sea", count=3, keys=2, seed=7, label_delay=1)
>>> records = [orjson.loads(r.value) for r in simulate(plan)]
>>> [(r["id"], r["key"], r["ts"], sorted(r)) for r in records]  # doctest: +NORMALIZE_WHITESPACE
[(0, 'sensor-1', 1767225600.0, ['features', 'id', 'key', 'ts']),
 (1, 'sensor-0', 1767225600.01, ['features', 'id', 'key', 'ts']),
 (0, 'sensor-1', 1767225600.01, ['id', 'key', 'label', 'ts']),
 (2, 'sensor-1', 1767225600.02, ['features', 'id', 'key', 'ts']),
 (1, 'sensor-0', 1767225600.02, ['id', 'key', 'label', 'ts']),
 (2, 'sensor-1', 1767225600.02, ['id', 'key', 'label', 'ts'])]
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, NamedTuple, Protocol

import orjson
from river import datasets
from river.datasets import synth

from stream_learner.datasets import BUNDLED, sample_to_event
from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.labels import encode_label
from stream_learner.settings import KafkaSettings
from stream_learner.sinks import cut_unfinished_line

__all__ = [
    "GENERATORS",
    "EventWriter",
    "FileWriter",
    "KafkaWriter",
    "PublishStats",
    "Simulated",
    "SimulationPlan",
    "last_event_id",
    "publish",
    "simulate",
    "stream_seed",
    "task_of",
]

#: 2026-01-01T00:00:00Z: the default event time of the first record (fixed, so runs repeat).
DEFAULT_START_TS = 1767225600.0

#: Records read at the end of each partition (then twice as many while they hold no event)
#: to find where a resumed stream starts; bytes read at the end of a file, the same way.
TAIL_RECORDS = 256
TAIL_BYTES = 1 << 20

#: Synthetic generators by name: (task, number of concept variants, factory(variant, seed)).
GENERATORS: dict[str, tuple[str, int, Callable[[int, int], Any]]] = {
    "agrawal": ("classification", 10, lambda v, s: synth.Agrawal(classification_function=v, seed=s)),
    "sea": ("classification", 4, lambda v, s: synth.SEA(variant=v, seed=s)),
    "sine": ("classification", 4, lambda v, s: synth.Sine(classification_function=v, seed=s)),
    "stagger": ("classification", 3, lambda v, s: synth.STAGGER(classification_function=v, seed=s)),
    "friedman": ("regression", 1, lambda _v, s: synth.Friedman(seed=s)),
}


class Simulated(NamedTuple):
    """One simulated record: its Kafka key, its JSON value, and whether it is an event."""

    key: bytes
    value: bytes
    event: bool


@dataclass(frozen=True)
class SimulationPlan:
    """What to simulate.

    Parameters
    ----------
    source
        A generator of :data:`GENERATORS` or ``river:<Dataset>`` (bundled with River).
    count
        Events to emit (0: forever; a bundled dataset also ends with its last sample).
    keys
        Number of sensors; each event goes to one at random.
    seed
        Seeds the generator, the drift positions' sampling and the sensor choice.
    label_delay
        ``None``: labels inline; ``k``: a label record right after the ``k``-th later event.
    drift_at
        Event counts where the concept changes to the next variant (increasing).
    drift_width
        Events over which each change happens (1: abrupt; a gradual change is at
        least ``position / 175`` events wide, the narrowest River's sigmoid computes).
    variants
        The concept variant of each segment (default ``0, 1, 2, ...``).
    start_ts, interval_s
        Event time of event id 0 and between two events.
    first_id
        Id of the first event (0: a new stream). A stream that resumes an
        earlier one (``simulate --resume``) starts after the earlier one's last
        id: ids, event times and drift points go on counting from id 0, and
        the samples and sensors come from a seed derived from ``seed`` and
        ``first_id`` (:func:`stream_seed`), so the resumed stream does not
        repeat the earlier one's samples.
    """

    source: str = "agrawal"
    count: int = 0
    keys: int = 10
    seed: int = 42
    label_delay: int | None = None
    drift_at: tuple[int, ...] = ()
    drift_width: int = 1
    variants: tuple[int, ...] = ()
    start_ts: float = DEFAULT_START_TS
    interval_s: float = 0.01
    first_id: int = 0

    def __post_init__(self) -> None:
        _check_plan(self)


def task_of(source: str) -> str:
    """The task a source's labels fit: ``classification`` or ``regression``.

    Examples
    --------
    >>> task_of("agrawal"), task_of("river:WaterFlow")
    ('classification', 'regression')
    """
    if source.startswith("river:"):
        return BUNDLED[source.removeprefix("river:")]
    return GENERATORS[source][0]


def _check_plan(plan: SimulationPlan) -> None:
    name = plan.source.removeprefix("river:")
    if plan.source.startswith("river:"):
        if name not in BUNDLED:
            raise SettingsError(f"unknown bundled dataset {name!r}; choose one of {sorted(BUNDLED)}")
        if plan.drift_at:
            raise SettingsError("drift points need a synthetic generator, not a bundled dataset")
    elif plan.source not in GENERATORS:
        choices = [*sorted(GENERATORS), "river:<Dataset>"]
        raise SettingsError(f"unknown simulation source {plan.source!r}; choose one of {choices}")
    elif plan.drift_at and GENERATORS[plan.source][1] < 2:
        raise SettingsError(f"{plan.source} has a single concept: it cannot drift")
    elif any(not 0 <= v < GENERATORS[plan.source][1] for v in plan.variants):
        n = GENERATORS[plan.source][1]
        raise SettingsError(f"{plan.source} has the concept variants 0 to {n - 1}, "
                            f"got {', '.join(map(str, plan.variants))}")
    if any(b <= a for a, b in itertools.pairwise((0, *plan.drift_at))):
        raise SettingsError("drift points must be positive and increasing")
    if plan.keys < 1 or plan.count < 0 or plan.drift_width < 1:
        raise SettingsError("keys and drift width must be at least 1, count at least 0")
    if plan.label_delay is not None and plan.label_delay < 0:
        raise SettingsError("the label delay must be at least 0 events")
    if plan.first_id < 0:
        raise SettingsError("the first event id must be at least 0")
    if plan.first_id and plan.source.startswith("river:"):
        raise SettingsError("a bundled dataset cannot be resumed: it is a fixed sequence")


def stream_seed(plan: SimulationPlan) -> int:
    """The seed of the samples and sensors: ``seed`` for a new stream, else derived from
    ``seed`` and ``first_id`` (the same for the same pair, so a resumed run repeats too).

    Examples
    --------
    >>> stream_seed(SimulationPlan(seed=7)), stream_seed(SimulationPlan(seed=7, first_id=500))
    (7, 1469884155)
    """
    if not plan.first_id:
        return plan.seed
    return random.Random(f"{plan.seed}/{plan.first_id}").getrandbits(31)


def _samples(plan: SimulationPlan) -> Iterator[tuple[dict[Any, Any], Any]]:
    """The generator's (x, y) samples, with a concept change at each drift point."""
    if plan.source.startswith("river:"):
        return iter(getattr(datasets, plan.source.removeprefix("river:"))())
    _task, n_variants, make = GENERATORS[plan.source]
    segments = len(plan.drift_at) + 1
    variants = plan.variants or tuple(range(segments))
    if len(variants) < segments:
        raise SettingsError(f"{segments} concepts need {segments} variants, got {len(variants)}")
    # a resumed stream starts in the concept of its first id; drift points stay where they were
    past = sum(1 for d in plan.drift_at if d <= plan.first_id)
    seed, segments = stream_seed(plan), segments - past
    streams = [make(v % n_variants, seed + i) for i, v in enumerate(variants[past:past + segments])]
    starts = (0, *(d - plan.first_id for d in plan.drift_at[past:]))
    if plan.drift_width == 1:  # abrupt: each concept for exactly its segment
        lengths = [b - a for a, b in itertools.pairwise(starts)]
        parts = [itertools.islice(s, n) for s, n in zip(streams, lengths, strict=False)]
        return itertools.chain(*parts, streams[-1])
    # Innermost first: each ConceptDriftStream counts samples from where it starts being read.
    stream = streams[-1]
    for i in range(segments - 2, -1, -1):
        position = starts[i + 1] - starts[i]
        stream = synth.ConceptDriftStream(
            stream=streams[i], drift_stream=stream, position=position,
            width=max(plan.drift_width, _min_width(position)), seed=seed + 1000 + i,
        )
    return iter(stream)


def _min_width(position: int) -> int:
    """Narrowest transition River's sigmoid can compute at ``position`` (exp overflows past ~709)."""
    return -(-4 * position // 700)


def simulate(plan: SimulationPlan) -> Iterator[Simulated]:
    """Every event and label record, in emission order."""
    rng = random.Random(stream_seed(plan))
    owed: deque[tuple[int, dict[str, Any]]] = deque()
    samples = _samples(plan)
    if plan.count:
        samples = itertools.islice(samples, plan.count)
    for i, (x, y) in enumerate(samples, start=plan.first_id):
        key = f"sensor-{rng.randrange(plan.keys)}"
        event = sample_to_event(i, key, x, y)
        event["ts"] = round(plan.start_ts + i * plan.interval_s, 6)
        if plan.label_delay is not None and "label" in event:
            label = event.pop("label")
            owed.append((i + plan.label_delay, {"id": i, "key": key, "label": label}))
        yield Simulated(key.encode("utf-8"), orjson.dumps(event), True)
        while owed and owed[0][0] <= i:
            yield _label_record(owed.popleft()[1], event["ts"])
    for _due, label in owed:
        yield _label_record(label, event["ts"])


def _label_record(label: dict[str, Any], ts: float) -> Simulated:
    record = encode_label(label["id"], label["label"], label["key"], ts)
    return Simulated(label["key"].encode("utf-8"), record, False)


def last_event_id(values: Iterable[bytes | None]) -> int | None:
    """The largest integer ``id`` of the event records among ``values``, if any.

    Event records carry ``features``; label records, other producers' records,
    values that are not JSON objects and records without a value are passed over.

    Examples
    --------
    >>> last_event_id([b'{"id": 4, "features": {}}', b'{"id": 9, "label": 1}', b"oops",
    ...                None, b'{"id": 6, "features": {"x": 1}}'])
    6
    >>> last_event_id([b'{"id": "a", "features": {}}']) is None
    True
    """
    found: int | None = None
    for value in values:
        if value is None:
            continue
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(record, dict) or "features" not in record:
            continue
        rid = record.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool) and (found is None or rid > found):
            found = rid
    return found


class EventWriter(Protocol):
    """Where simulated records go."""

    def write(self, key: bytes, value: bytes) -> None:
        """Send one record."""
        ...

    def close(self) -> None:
        """Make every record durable and release."""
        ...


class FileWriter:
    """JSON Lines to a file (appended to with ``append``), or to stdout for ``-``."""

    def __init__(self, path: str, append: bool = False) -> None:
        self._own = path != "-"
        mode = "ab" if append else "wb"
        self._handle: IO[bytes] = open(path, mode) if self._own else sys.stdout.buffer  # noqa: SIM115
        if append and self._own:
            cut_unfinished_line(path, self._handle)

    @staticmethod
    def last_id(path: str) -> int | None:
        """The last event id of the JSON Lines file at ``path`` (None: none, or no file).

        Reads the file's end first (a simulated stream's ids only grow), the
        whole file only when its end holds no event.
        """
        try:
            with open(path, "rb") as handle:
                size = handle.seek(0, 2)
                handle.seek(max(0, size - TAIL_BYTES))
                lines = handle.read().split(b"\n")
                tail = lines[1:] if size > TAIL_BYTES else lines  # the first may be cut
                found = last_event_id(tail)
                if found is None and size > TAIL_BYTES:
                    handle.seek(0)
                    found = last_event_id(handle)
                return found
        except FileNotFoundError:
            return None

    def write(self, key: bytes, value: bytes) -> None:
        """Append one line."""
        self._handle.write(value + b"\n")

    def close(self) -> None:
        """Flush; close the file if this writer opened it."""
        self._handle.flush()
        if self._own:
            self._handle.close()


class KafkaWriter:
    """An idempotent producer (``acks=all``) to one topic, keyed by sensor."""

    def __init__(self, settings: KafkaSettings, environ: Mapping[str, str], topic: str) -> None:
        from kafka.errors import KafkaError

        from stream_learner.kafka import kafka_python
        from stream_learner.kafka.options import unreachable

        self._settings, self._environ = settings, environ

        self._producer = kafka_python.producer(
            settings, environ, linger_ms=max(5, settings.linger_ms)
        )
        try:
            found = self._producer.partitions_for(topic)
        except KafkaError as exc:
            self._producer.close()
            raise ConnectionFailed(unreachable(settings, exc)) from exc
        if not found:
            self._producer.close()
            raise ConnectionFailed(
                f"topic {topic!r} not found on Kafka at {settings.bootstrap_servers} "
                "(create it first)"
            )
        self._topic = topic
        self._partitions = sorted(found)
        self._failed: list[BaseException] = []

    def last_id(self) -> int | None:
        """The last event id in the topic (None: it holds no event record).

        The largest among each partition's last records: :data:`TAIL_RECORDS`
        of them, twice as many again while a partition's end holds labels only.
        """
        from kafka import TopicPartition
        from kafka.errors import KafkaError

        from stream_learner.kafka import kafka_python
        from stream_learner.kafka.options import unreachable

        consumer = kafka_python.consumer(self._settings, self._environ, group_id=None)
        try:
            found: int | None = None
            for partition in self._partitions:
                tp = TopicPartition(self._topic, partition)
                last = _partition_last_id(consumer, tp, self._settings.connect_timeout_s)
                if last is not None and (found is None or last > found):
                    found = last
            return found
        except KafkaError as exc:
            raise ConnectionFailed(unreachable(self._settings, exc)) from exc
        finally:
            consumer.close()

    def write(self, key: bytes, value: bytes) -> None:
        """Queue one record (failures are raised by :meth:`close`)."""
        future = self._producer.send(self._topic, key=key, value=value)
        future.add_errback(self._failed.append)

    def close(self) -> None:
        """Flush, close, and fail if any record was not written."""
        self._producer.flush()
        self._producer.close()
        if self._failed:
            exc = self._failed[0]
            raise ConnectionFailed(
                f"{len(self._failed)} simulated records were not written: "
                f"{type(exc).__name__}: {exc}"
            )


def _partition_last_id(consumer: Any, tp: Any, timeout_s: float) -> int | None:
    """The largest event id among the last records of one partition (see ``last_id``)."""
    consumer.assign([tp])
    begin, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
    window = TAIL_RECORDS
    while True:
        start = max(begin, end - window)
        if start >= end:
            return None
        consumer.seek(tp, start)
        values: list[bytes | None] = []
        deadline = time.monotonic() + timeout_s
        while consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise ConnectionFailed(f"{tp.topic}[{tp.partition}]: its last records could not "
                                       f"be read within {timeout_s:g}s")
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records if r.offset < end)
        found = last_event_id(values)
        if found is not None or start == begin:
            return found
        window *= 2


@dataclass(frozen=True)
class PublishStats:
    """What :func:`publish` sent, and how fast."""

    records: int
    events: int
    elapsed_s: float
    requested_rate: float
    #: most seconds a record was sent after its scheduled time
    max_lag_s: float

    @property
    def rate(self) -> float:
        """Events per second achieved."""
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def render(self) -> str:
        """One line for stderr."""
        asked = f"{self.requested_rate:g}/s" if self.requested_rate else "as fast as possible"
        return (
            f"simulated {self.events} events ({self.records} records) in {self.elapsed_s:.2f}s: "
            f"{self.rate:,.0f} events/s (requested {asked}, max lag {self.max_lag_s * 1000:.0f} ms)"
        )


def publish(
    records: Iterator[Simulated] | Sequence[Simulated],
    writer: EventWriter,
    rate: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    should_stop: Callable[[], bool] = lambda: False,
) -> PublishStats:
    """Send ``records`` to ``writer``, event ``i`` at ``start + i / rate`` (``rate`` 0: at once).

    Label records (no ``features``) go with the event they follow, unpaced.
    """
    start = clock()
    n_records = n_events = 0
    max_lag = 0.0
    for key, value, is_event in records:
        if should_stop():
            break
        if is_event:
            if rate > 0:
                due = start + n_events / rate
                now = clock()
                if due > now:
                    sleep(due - now)
                else:
                    max_lag = max(max_lag, now - due)
            n_events += 1
        writer.write(key, value)
        n_records += 1
    writer.close()
    return PublishStats(n_records, n_events, clock() - start, rate, max_lag)
