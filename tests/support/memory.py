"""A service over the in-memory edges, with injected clocks, for the pure-core tests.

Shared by tests/test_service.py, tests/test_recovery.py and tests/test_keyed_state.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.datasets import dataset_records
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer, shard_id
from stream_learner.service import Service
from stream_learner.settings import Settings, load_settings
from stream_learner.sources import Record, TopicPartition
from stream_learner.testing import MemorySink, MemorySource

WALL = 1_764_115_200.5
TOPIC = "events"
CLASSIFIER = {
    "task": "classification",
    "name": "phishing",
    "pipeline": [
        {"step": "preprocessing.StandardScaler"},
        {"step": "linear_model.LogisticRegression"},
    ],
}


def make_settings(**overrides: Any) -> Settings:
    """The phishing classifier's settings; ``section__key=value`` overrides."""
    tree: dict[str, Any] = {"model": CLASSIFIER}
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        tree.setdefault(section, {})
        tree[section] = {**tree[section], key: value}
    return load_settings(None, env={}, overrides=tree)


def phishing(start: int, stop: int) -> list[bytes]:
    """Records ``start``..``stop`` of River's Phishing dataset, as JSON events."""
    return list(itertools.islice(dataset_records("Phishing"), start, stop))


KEY = b"recovery-test-key-0123456789abcd"
TP0: TopicPartition = (TOPIC, 0)
TP1: TopicPartition = (TOPIC, 1)
SID0, SID1 = shard_id(TP0), shard_id(TP1)


class Clock:
    """A fake clock: moves only when told to."""

    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class TickingClock(Clock):
    """A fake clock that moves 10 ms per reading: snapshots fall due in the middle of a run."""

    def __call__(self) -> float:
        self.t += 0.01
        return self.t


class FairSource(MemorySource):
    """A MemorySource that interleaves partitions and can have a log start (retention)."""

    def __init__(
        self,
        partitions: Mapping[TopicPartition, Sequence[bytes]],
        log_start: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        super().__init__(partitions)
        self.log_start = dict(log_start or {})
        self.last_polled = 0  # records the last poll returned

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        per = max(1, max_records // len(self._records))
        out: list[Record] = []
        for tp, records in self._records.items():
            start = self._position[tp]
            take = records[start : start + per]
            self._position[tp] = start + len(take)
            out.extend(take)
        self.last_polled = len(out)
        return out

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.log_start.get(tp, 0) for tp in partitions}


def codec_for(settings: Settings) -> EnvelopeCodec:
    """The checkpoint codec of ``settings``' model, under the test key."""
    return EnvelopeCodec(KEY, ModelSpec.from_settings(settings.model).config_hash)


@dataclass
class Worker:
    service: Service
    source: FairSource
    sink: MemorySink
    metrics: Metrics
    clock: Clock
    checkpointer: Checkpointer | NullCheckpointer

    def start(self) -> None:
        """Subscribe and restore the assigned shards (what run() does first)."""
        self.service.start()

    def step(self, commit: bool = True) -> None:
        """One turn of Service.run(), or with ``commit=False`` only a batch processed."""
        svc = self.service
        if commit:
            assert svc.step(), "the run ended"
        else:  # a batch whose outputs, offsets and checkpoints never happen (a crash follows)
            svc.process_batch(self.source.poll(svc.settings.service.batch_size, 0), self.clock())
        assert self.source.last_polled, "the test ran past the end of the input"

    def crash_after(self, batches: int, uncommitted: int = 0) -> None:
        """Process ``batches`` committed batches, then ``uncommitted`` more; then die."""
        self.start()
        for _ in range(batches):
            self.step()
        for _ in range(uncommitted):
            self.step(commit=False)

    def predictions(self) -> list[dict[str, Any]]:
        return self.sink.decoded("predictions")

    def learner(self, tp: TopicPartition = TP0) -> Learner:
        return self.service.shards[tp].learner


def worker(
    settings: Settings,
    data: Mapping[TopicPartition, Sequence[bytes]],
    store: Any = None,
    committed: Mapping[TopicPartition, int] | None = None,
    log_start: Mapping[TopicPartition, int] | None = None,
    clock: Clock | None = None,
    sink: MemorySink | None = None,
) -> Worker:
    """A Service on a new FairSource; ``committed`` positions it as a restarted consumer."""
    source = FairSource(data, log_start)
    for tp, k in (committed or {}).items():
        source.committed_offsets[tp] = k
        source.seek(tp, k)
    metrics = Metrics()
    clock = clock or Clock()
    spec = ModelSpec.from_settings(settings.model)
    checkpointer: Checkpointer | NullCheckpointer
    if store is None:
        checkpointer = NullCheckpointer()
    else:
        checkpointer = Checkpointer(
            store, codec_for(settings), settings.checkpoint, metrics, lambda: WALL, clock,
            exactly_once=settings.service.guarantee == "exactly_once",
        )
    sink = sink or MemorySink()
    service = Service(
        settings, spec, source, sink, metrics=metrics, checkpointer=checkpointer,
        clock=clock, wall_clock=lambda: WALL,
    )
    return Worker(service, source, sink, metrics, clock, checkpointer)


def by_offset(predictions: list[dict[str, Any]]) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """Predictions grouped by the (partition, offset) of their event."""
    out: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for p in predictions:
        out.setdefault((p["source"]["partition"], p["source"]["offset"]), []).append(p)
    return out
