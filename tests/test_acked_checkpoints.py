"""Checkpoints written once their outputs are acknowledged (at-least-once, pipelined cycle).

In-memory twins of a Kafka sink (acknowledgements arrive only when the test
says so) and of a Kafka consumer (synchronous and asynchronous commits). A
"crash" drops the service; the outputs that survive it are those the sink had
acknowledged. Clocks are injected: nothing here depends on real time.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pytest

from stream_learner.commits import Pipelined
from stream_learner.errors import ConnectionFailed
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.recovery import AckedCheckpoints, Checkpointer
from stream_learner.service import Service
from stream_learner.settings import Settings
from stream_learner.sources import TopicPartition
from stream_learner.stores import MemoryStore
from stream_learner.testing import MemorySink
from tests.support.crashes import (
    DATA,
    assert_same_state,
    checkpoint_offsets,
    crash_settings,
    sample,
)
from tests.support.memory import (
    SID0,
    SID1,
    TP0,
    TP1,
    WALL,
    Clock,
    FairSource,
    Worker,
    by_offset,
    codec_for,
    worker,
)


class AckingMemorySink(MemorySink):
    """A sink whose outputs are acknowledged only by :meth:`ack` or :meth:`flush`."""

    def __init__(self) -> None:
        super().__init__()
        self.acked = 0

    def mark(self) -> int:
        return len(self.sent)

    def acknowledged(self) -> int:
        return self.acked

    def ack(self, n: int | None = None) -> None:
        """Acknowledge the first ``n`` outputs (all sent so far by default)."""
        self.acked = len(self.sent) if n is None else n

    def flush(self) -> None:
        super().flush()
        self.acked = len(self.sent)

    def durable(self, role: str = "predictions") -> list[bytes]:
        """What a crash now would leave in Kafka: the acknowledged outputs."""
        return [value for r, _k, value, _h in self.sent[: self.acked] if r == role]


class CommittingSource(FairSource):
    """A consumer twin with asynchronous commits (applied at once) and synchronous ones."""

    def __init__(self, partitions: Mapping[TopicPartition, Sequence[bytes]]) -> None:
        super().__init__(partitions)
        self.sync_commits = 0

    def commit(self, offsets: Mapping[TopicPartition, int], retry: bool = True) -> None:
        super().commit(offsets)
        self.sync_commits += 1

    def commit_async(self, offsets: Mapping[TopicPartition, int]) -> None:
        super().commit(offsets)


def acked_worker(
    settings: Settings,
    store: MemoryStore,
    committed: Mapping[TopicPartition, int] | None = None,
    commit_interval_s: float = 0.0,
) -> Worker:
    """A Service on the pipelined cycle over the twins; ``committed`` positions a restart."""
    source = CommittingSource(DATA)
    for tp, k in (committed or {}).items():
        source.committed_offsets[tp] = k
        source.seek(tp, k)
    sink, metrics, clock = AckingMemorySink(), Metrics(), Clock()
    checkpointer = Checkpointer(
        store, codec_for(settings), settings.checkpoint, metrics, lambda: WALL, clock
    )
    cycle = Pipelined(source, sink, commit_interval_s, clock)
    service = Service(
        settings, ModelSpec.from_settings(settings.model), source, sink, metrics=metrics,
        checkpointer=checkpointer, committer=cycle, clock=clock, wall_clock=lambda: WALL,
    )
    assert isinstance(service.committer, AckedCheckpoints)
    return Worker(service, source, sink, metrics, clock, checkpointer)


def first_offsets(store: MemoryStore, settings: Settings) -> Any:
    """The offsets of shard 0's first checkpoint."""
    blob = store.get(SID0, 1)
    assert blob is not None
    return codec_for(settings).read_header(blob)["offsets"]


def decoded(values: list[bytes]) -> list[dict[str, Any]]:
    return [orjson.loads(v) for v in values]


def test_exactly_once_and_the_stop_and_wait_cycle_keep_the_blocking_checkpoint() -> None:
    settings = crash_settings(30)
    store = MemoryStore()
    w = worker(settings, DATA, store)  # MemorySink: the stop-and-wait cycle
    assert not isinstance(w.service.committer, AckedCheckpoints)
    w.start()
    for _ in range(3):
        w.step()
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 30}  # written in the loop turn


def test_a_checkpoint_is_not_written_before_its_outputs_are_acknowledged() -> None:
    settings = crash_settings(30)  # 10 records per shard per batch: due every third batch
    store = MemoryStore()
    w = acked_worker(settings, store)
    w.start()
    for _ in range(3):
        w.step()
    sink = w.sink
    assert isinstance(sink, AckingMemorySink)
    cycle = w.service.committer
    assert isinstance(cycle, AckedCheckpoints)
    assert cycle.waiting == 2  # both shards sealed at offset 30
    assert store.latest(SID0) is None and store.latest(SID1) is None
    mark = len(sink.sent)
    w.step()  # more outputs, not acknowledged: the sealed state stays out of the store
    sink.ack(mark - 1)
    cycle.poll()
    assert store.latest(SID0) is None
    assert w.service.shards[TP0].position == {TP0: 40}
    assert not w.checkpointer.due(w.service.shards[TP0], w.clock())  # sealed: not sealed twice
    sink.ack(mark)
    cycle.poll()  # the outputs up to the seal are durable: written, with the sealed offsets
    assert cycle.waiting == 0
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 30}
    assert checkpoint_offsets(store, SID1, settings) == {TP1: 30}
    assert sample(w.metrics, "stream_learner_checkpoints_total", result="ok") == 2
    assert w.source.sync_commits == 0  # the loop never committed synchronously
    shard = w.service.shards[TP0]
    assert (shard.records_since_save, shard.dirty) == (10, True)  # the batch after the seal


def test_a_drain_writes_the_sealed_checkpoints() -> None:
    settings = crash_settings(30)
    store = MemoryStore()
    w = acked_worker(settings, store)
    w.start()
    for _ in range(4):
        w.step()  # sealed at 30; nothing acknowledged
    assert store.latest(SID0) is None
    w.service.on_revoked([TP0, TP1])  # flush, commit, write the sealed ones, then checkpoint
    assert w.source.committed_offsets == {TP0: 40, TP1: 40}
    assert w.source.sync_commits == 1
    assert store.ids(SID0) == [1, 2] and store.ids(SID1) == [1, 2]
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 40}
    assert first_offsets(store, settings) == [[TP0[0], 0, 30]]


def test_the_end_of_the_run_writes_what_was_never_acknowledged() -> None:
    settings = crash_settings(30)
    store = MemoryStore()
    w = acked_worker(settings, store)
    w.service.run()  # the twin acknowledges only on flush: every checkpoint waits to the end
    assert store.ids(SID0) == [1, 2]
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 160}
    assert first_offsets(store, settings) == [[TP0[0], 0, 30]]


def test_a_crash_before_the_write_restores_the_previous_checkpoint_and_replays_exactly(
    uninterrupted: dict[int, Worker],
) -> None:
    settings = crash_settings(30)
    store = MemoryStore()
    crashed = acked_worker(settings, store)
    crashed.start()
    sink = crashed.sink
    assert isinstance(sink, AckingMemorySink)
    for _ in range(5):  # sealed at 30 after the third batch, written in the fourth's commit
        crashed.step()
        sink.ack()
    crashed.service.committer.poll()  # batch 5's offsets committed asynchronously
    crashed.step()  # batch 6: sealed at 60, its outputs not acknowledged
    crashed.step()  # batch 7: a loop turn with the seal still unacknowledged; then a crash
    cycle = crashed.service.committer
    assert isinstance(cycle, AckedCheckpoints) and cycle.waiting == 2
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 30}  # C: the previous checkpoint
    committed = dict(crashed.source.committed_offsets)
    assert committed == {TP0: 50, TP1: 50}  # K
    durable = decoded(sink.durable())

    resumed = acked_worker(settings, store, committed=committed)
    summary = resumed.service.run()

    assert summary.replayed == 2 * (50 - 30)  # C..K silently
    reference = uninterrupted[30]
    for tp in (TP0, TP1):
        assert_same_state(resumed.learner(tp), reference.learner(tp))
    expected = by_offset(reference.predictions())
    got = by_offset(durable + resumed.predictions())
    assert set(got) == set(expected)  # nothing lost
    for where, predictions in got.items():
        assert len(predictions) == 1, where  # nothing twice: K covered exactly what was durable
        assert predictions[0] == expected[where][0], where


def test_a_crash_between_a_checkpoint_and_its_commit_resumes_at_the_checkpoint(
    uninterrupted: dict[int, Worker], caplog: pytest.LogCaptureFixture
) -> None:
    settings = crash_settings(30)
    store = MemoryStore()
    crashed = acked_worker(settings, store, commit_interval_s=1000.0)  # one async commit only
    crashed.start()
    sink = crashed.sink
    assert isinstance(sink, AckingMemorySink)
    for _ in range(4):
        crashed.step()
        sink.ack()
    crashed.service.committer.poll()
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 30}  # C
    committed = dict(crashed.source.committed_offsets)
    assert committed == {TP0: 10, TP1: 10}  # K < C: the commit after the checkpoint never came
    durable = decoded(sink.durable())

    resumed = acked_worker(settings, store, committed=committed)
    with caplog.at_level(logging.INFO, logger="stream_learner.recovery"):
        summary = resumed.service.run()

    assert summary.replayed == 0
    messages = [r for r in caplog.records if "past the committed offset" in r.getMessage()]
    assert messages and all(r.levelno == logging.INFO for r in messages)
    reference = uninterrupted[30]
    for tp in (TP0, TP1):
        assert_same_state(resumed.learner(tp), reference.learner(tp))
    assert min(p["source"]["offset"] for p in resumed.predictions()) == 30
    expected = by_offset(reference.predictions())
    got = by_offset(durable + resumed.predictions())
    assert set(got) == set(expected)
    assert all(p == expected[where][0] for where, ps in got.items() for p in ps)


def test_a_fenced_write_drops_only_that_shard() -> None:
    settings = crash_settings(30)
    store = MemoryStore()
    w = acked_worker(settings, store)
    w.start()
    for _ in range(3):
        w.step()
    store.claim(SID0)  # a newer owner of shard 0 while its checkpoint waits
    w.sink.flush()
    w.service.committer.poll()
    assert set(w.service.shards) == {TP1}
    assert store.latest(SID0) is None
    assert checkpoint_offsets(store, SID1, settings) == {TP1: 30}
    assert sample(w.metrics, "stream_learner_checkpoints_total", result="fenced") == 1


class DownOnce(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.fail:
            self.fail = False
            raise ConnectionFailed("redis: connection refused")
        super().save(*args, **kwargs)


def test_a_failed_write_makes_the_shard_due_again_after_the_backoff() -> None:
    settings = crash_settings(30)
    store = DownOnce()
    w = acked_worker(settings, store)
    w.start()
    for _ in range(3):
        w.step()
    w.sink.flush()
    w.service.committer.poll()  # shard 0's write fails, shard 1's succeeds
    shard = w.service.shards[TP0]
    assert store.latest(SID0) is None
    assert (shard.dirty, shard.records_since_save, shard.sealed) == (True, 30, False)
    assert sample(w.metrics, "stream_learner_checkpoints_total", result="error") == 1
    assert not w.checkpointer.due(shard, w.clock())  # backing off
    w.clock.advance(1.0)
    w.step()
    w.sink.flush()
    w.service.committer.poll()
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 40}


@pytest.fixture(scope="module")
def uninterrupted() -> dict[int, Worker]:
    w = worker(crash_settings(30), DATA, MemoryStore())
    w.service.run()
    return {30: w}
