"""Keyed checkpoints written behind the loop (stream_learner.write_behind): the loop
serves while a write is in flight, loads read its entries from memory, parks wait, a
failed write goes again with the next checkpoint, and every way stays crash-exact; on a
gated in-memory store and on the real Redis (its writes paused)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from stream_learner.errors import ConnectionFailed
from stream_learner.keyed_state import PARK_BATCH, StoreSpill
from stream_learner.stores import MemoryStore, RedisStore
from tests.support.memory import SID0, TP0, codec_for, worker
from tests.test_keyed_state import _assert_exact, events, keyed_settings

# 1000 keys, 300 in memory: a key comes back every 1000 records, while the checkpoint
# that holds it (every 1000 records) is still being written
DATA = {TP0: events(keys=1000)}


class GatedStore(MemoryStore):
    """A MemoryStore whose saves run in the background and wait for the gate to open;
    ``fail_next`` makes the next save fail as an unreachable store would."""

    background_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next = False
        self.saves = 0

    def save(self, *args: Any, **kwargs: Any) -> int:
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fail_next:
            self.fail_next = False
            raise ConnectionFailed("cannot reach the store (test)")
        self.saves += 1
        return super().save(*args, **kwargs)


def _spill(w: Any) -> StoreSpill:
    spill = w.learner().models.spill
    assert isinstance(spill, StoreSpill)
    return spill


def _reference() -> Any:
    reference = worker(keyed_settings(), DATA, MemoryStore())
    reference.service.run()
    return reference


def _resume_and_compare(reference: Any, crashed: Any, store: Any, settings: Any = None) -> None:
    committed = dict(crashed.source.committed_offsets)
    resumed = worker(settings or keyed_settings(), DATA, store, committed=committed)
    resumed.service.run()
    _assert_exact(reference, crashed, resumed)


def test_the_loop_serves_while_a_keyed_checkpoint_is_written():
    reference = _reference()
    store = GatedStore()
    settings = keyed_settings(checkpoint__every_events=2000)
    w = worker(settings, DATA, store)
    assert w.checkpointer.writes.background
    w.start()
    store.gate.clear()
    for _ in range(10):
        w.step()  # 2000 records: the checkpoint is sealed, its write waits at the gate
    spill = _spill(w)
    unwritten = dict(spill.unwritten)
    scratch = dict(store._scratch[SID0])  # parks before the checkpoint: it promotes them
    assert len(unwritten) >= 300 and store.ids(SID0) == []
    for _ in range(9):
        w.step()  # 1800 more records served, the write still in flight
    assert store.ids(SID0) == [] and store.saves == 0
    # keys of the unwritten checkpoint came back: read from memory, the store has none
    came_back = [k for k in unwritten if w.learner().models._resident.get(k) is not None]
    assert came_back and all(store.entry(SID0, k) is None for k in came_back)
    # more models were parked than a park batch, and none went to the store
    assert len(spill.pending) > PARK_BATCH and store._scratch[SID0] == scratch
    store.gate.set()
    for _ in range(3):
        w.step()  # 4400: the write settled, the one at 4000 written after it
    assert w.checkpointer.settle(wait=True) == []
    assert store.ids(SID0) == [1, 2] and spill.unwritten == {}
    _resume_and_compare(reference, w, store)


@pytest.mark.parametrize("background", [True, False])
def test_a_failed_keyed_write_goes_again_with_the_next_checkpoint(background: bool):
    reference = _reference()
    store = GatedStore()
    store.background_writes = background
    w = worker(keyed_settings(), DATA, store)
    w.start()
    store.fail_next = True
    for _ in range(5):
        w.step()  # the checkpoint at 1000 fails (settled at this turn's end, or at once)
    w.checkpointer.settle(wait=True)
    failed = dict(_spill(w).unwritten)
    assert failed and store.ids(SID0) == []
    assert w.service.shards[TP0].dirty
    w.clock.advance(2.0)  # past the retry wait
    w.step()  # 1200: the retry writes the failed entries and those changed since
    w.checkpointer.settle(wait=True)
    assert store.ids(SID0) == [1]
    head = codec_for(keyed_settings()).read_header(store.latest(SID0)[1])
    assert head["offsets"] == [[TP0[0], TP0[1], 1200]]
    assert all(store.entry(SID0, k) is not None for k in failed)
    for _ in range(3):
        w.step()
    errors = w.metrics.registry.get_sample_value(
        "stream_learner_checkpoints_total", {"result": "error"})
    assert errors == 1
    _resume_and_compare(reference, w, store)


def test_the_worker_waits_for_the_write_before_the_next_checkpoint_of_the_shard():
    store = GatedStore()
    w = worker(keyed_settings(), DATA, store)
    w.start()
    store.gate.clear()
    for _ in range(5):
        w.step()
    timer = threading.Timer(0.3, store.gate.set)
    timer.start()
    for _ in range(5):
        w.step()  # the checkpoint at 2000 waits for the one at 1000, then goes out
    timer.join()
    w.checkpointer.settle(wait=True)
    assert store.ids(SID0) == [1, 2]
    offsets = [codec_for(keyed_settings()).read_header(store.get(SID0, i))["offsets"][0][2]
               for i in (1, 2)]
    assert offsets == [1000, 2000]


@pytest.mark.redis
def test_redis_writes_paused_the_loop_serves_and_the_restore_is_exact(
    redis_url: str, redis_prefixes: Any
):
    reference = _reference()
    prefix = redis_prefixes("write-behind")
    store = RedisStore(redis_url, prefix)
    # every model in memory: no park (a write) waits for the pause before the checkpoint
    settings = keyed_settings(model__max_resident=2000)
    w = worker(settings, DATA, store)
    assert w.checkpointer.writes.background
    w.start()
    for _ in range(4):
        w.step()
    admin = RedisStore(redis_url, prefix)
    admin._redis.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")  # reads go on
    try:
        for _ in range(5):
            w.step()  # the checkpoint at 1000 is sent; its script waits for the pause
        assert list(w.checkpointer.writes.shards()) == [SID0]
        assert store.ids(SID0) == [] and _spill(w).unwritten
    finally:
        admin._redis.execute_command("CLIENT", "UNPAUSE")
    for _ in range(3):
        w.step()
    w.checkpointer.settle(wait=True)
    assert store.ids(SID0) == [1, 2]
    crashed_store = RedisStore(redis_url, prefix)
    try:
        _resume_and_compare(reference, w, crashed_store, settings)
    finally:
        for handle in (store, admin, crashed_store):
            handle.close()


@pytest.mark.redis
def test_with_write_behind_off_a_redis_checkpoint_is_written_before_the_loop_goes_on(
    redis_url: str, redis_prefixes: Any
):
    store = RedisStore(redis_url, redis_prefixes("write-behind-off"))
    try:
        w = worker(keyed_settings(checkpoint__write_behind=False), DATA, store)
        assert not w.checkpointer.writes.background
        w.start()
        for _ in range(5):
            w.step()
        assert list(w.checkpointer.writes.shards()) == [] and store.ids(SID0) == [1]
    finally:
        store.close()


def test_an_interrupted_write_leaves_nothing_in_flight_to_wait_for():
    class Interrupted(MemoryStore):
        def save(self, *args: Any, **kwargs: Any) -> int:
            raise KeyboardInterrupt  # Ctrl-C inside a write made at once

    store = Interrupted()
    w = worker(keyed_settings(), DATA, store)
    assert not w.checkpointer.writes.background
    w.start()
    for _ in range(4):
        w.step()
    with pytest.raises(KeyboardInterrupt):
        w.step()
    assert list(w.checkpointer.writes.shards()) == []
    w.checkpointer.close()  # returns: no write left to wait for
