"""Keyed state (``model.scope = "key"``, thousands of keys): incremental checkpoints,
models parked in the store, lazy restore, crash-exactness and rollback, on MemoryStore,
LocalStore and the real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_learner import admin
from stream_learner import stores as stores_module
from stream_learner.errors import CheckpointError
from stream_learner.events import Origin
from stream_learner.scopes import KeyedModels
from stream_learner.settings import Settings
from stream_learner.sources import Record
from stream_learner.stores import LocalStore, MemoryStore, RedisStore
from tests.support.memory import SID0, TOPIC, TP0, by_offset, codec_for, make_settings, worker

N_EVENTS, N_KEYS, BATCH, EVERY = 6000, 2000, 200, 1000


def events(n: int = N_EVENTS, keys: int = N_KEYS) -> list[bytes]:
    out = []
    for i in range(n):
        a, b = (i * 7919 % 1000) / 1000.0, (i * 104729 % 997) / 997.0
        out.append(orjson.dumps({"id": i, "key": f"sensor-{i % keys}", "ts": float(i),
                                 "features": {"a": a, "b": b}, "label": a + b > 1.0}))
    return out


DATA = {TP0: events()}
# the same records keyed by sensor, as a producer keys them: the service reads a batch's
# models ahead (one request per batch)
KEYED_DATA = {TP0: [
    Record(v, orjson.loads(v)["key"].encode(), 0, Origin(TOPIC, 0, i))
    for i, v in enumerate(DATA[TP0])
]}


def keyed_settings(**overrides: Any) -> Settings:
    tree: dict[str, Any] = {
        "model__scope": "key", "model__max_resident": 300, "service__batch_size": BATCH,
        "checkpoint__every_events": EVERY, "checkpoint__every_seconds": 1e9,
    }
    return make_settings(**{**tree, **overrides})


@pytest.fixture(params=["memory", "local", pytest.param("redis", marks=pytest.mark.redis)])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Builds a store; a second call gives another handle on the same data."""
    handles: list[Any] = []
    if request.param == "memory":
        shared = MemoryStore()

        def make() -> Any:
            return shared
    elif request.param == "local":
        def make() -> Any:
            handles.append(LocalStore(tmp_path / "ckpt"))
            return handles[-1]
    else:
        # its keys are deleted after the test
        url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue(
            "redis_prefixes")("keyed")

        def make() -> Any:
            handles.append(RedisStore(url, prefix))
            return handles[-1]
    yield make
    for handle in handles:
        handle.close()


def _models(w: Any) -> KeyedModels:
    models = w.learner().models
    assert isinstance(models, KeyedModels)
    return models


def _assert_exact(reference: Any, crashed: Any, resumed: Any) -> None:
    expected = by_offset(reference.predictions())
    got = by_offset(crashed.predictions() + resumed.predictions())
    assert set(got) == set(expected) and len(expected) == N_EVENTS
    for where, predictions in got.items():
        for p in predictions:
            assert p == expected[where][0], where
    assert resumed.learner().n_learned == reference.learner().n_learned
    assert resumed.learner().metric_value == reference.learner().metric_value


@pytest.mark.parametrize("uncommitted", [0, 1])
def test_crash_after_an_incremental_checkpoint_is_exact(new_store: Any, uncommitted: int):
    reference = worker(keyed_settings(), DATA, MemoryStore())
    reference.service.run()
    store = new_store()
    crashed = worker(keyed_settings(), DATA, store)
    crashed.crash_after(12, uncommitted)  # 2400 records committed, checkpoints at 1000, 2000
    models = _models(crashed)
    assert models.n_keys == N_KEYS and models.n_resident == 300
    assert models.parked == {}  # parked models are in the store, not in memory
    committed = dict(crashed.source.committed_offsets)
    assert committed == {TP0: 12 * BATCH}
    head = codec_for(keyed_settings()).read_header(store.latest(SID0)[1])
    assert head["keyed"]["keys"] == N_KEYS
    assert head["keyed"]["entries"] + head["keyed"]["promoted"] <= N_KEYS

    resumed = worker(keyed_settings(), DATA, new_store(), committed=committed)
    resumed.start()
    lazy = _models(resumed)
    assert (lazy.n_resident, lazy.n_keys) == (0, N_KEYS)  # nothing loaded before the first event
    resumed.service.run()
    _assert_exact(reference, crashed, resumed)


def test_crash_with_keyed_records_and_read_ahead_is_exact(new_store: Any):
    reference = worker(keyed_settings(), DATA, MemoryStore())
    reference.service.run()
    store = new_store()
    crashed = worker(keyed_settings(), KEYED_DATA, store)
    fetches = []
    real_fetch = store.fetch

    def counting_fetch(*args: Any) -> Any:
        fetches.append(args)
        return real_fetch(*args)

    store.fetch = counting_fetch
    crashed.crash_after(16, 1)  # 3200 committed, checkpoints at 1000, 2000, 3000
    assert len(fetches) >= 14  # one read-ahead per batch once models were parked
    committed = dict(crashed.source.committed_offsets)
    resumed = worker(keyed_settings(), KEYED_DATA, new_store(), committed=committed)
    resumed.service.run()
    _assert_exact(reference, crashed, resumed)


def test_crash_inside_a_local_incremental_checkpoint_is_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    reference = worker(keyed_settings(), DATA, MemoryStore())
    reference.service.run()
    crashed = worker(keyed_settings(), DATA, LocalStore(tmp_path))
    crashed.crash_after(9)  # checkpoint at 1000 done
    real = stores_module._atomic_write

    def dies_writing_a_head(path: Path, data: bytes) -> None:
        if path.suffix == ".ckpt":
            raise OSError(5, "Input/output error")  # entries committed, head not written
        real(path, data)

    monkeypatch.setattr(stores_module, "_atomic_write", dies_writing_a_head)
    crashed.step()  # 2000: the checkpoint fails half way
    monkeypatch.setattr(stores_module, "_atomic_write", real)
    store = LocalStore(tmp_path)
    assert store.ids(SID0) == [1]
    committed = dict(crashed.source.committed_offsets)
    resumed = worker(keyed_settings(), DATA, store, committed=committed)
    resumed.service.run()
    _assert_exact(reference, crashed, resumed)


def test_rollback_restores_the_entries_of_the_checkpoint(new_store: Any):
    store = new_store()
    w = worker(keyed_settings(), DATA, store)
    w.crash_after(14)  # checkpoints at 1000 and 2000; 2800 records processed
    ids = store.ids(SID0)
    assert len(ids) == 2
    probe_keys = [f"sensor-{i}" for i in range(0, N_KEYS, 97)]
    codec = codec_for(keyed_settings())
    at_first = {k: store.entry(SID0, k) for k in probe_keys}  # entries as of 2000
    w.service.finish()  # the run ends: a checkpoint at 2800
    newest = {k: store.entry(SID0, k) for k in probe_keys}
    assert newest != at_first
    new_id = admin.rollback(store, codec, SID0, ids[-1], lambda: 0.0)
    assert store.ids(SID0) == [*ids, new_id]  # the one at 2800 is gone
    assert {k: store.entry(SID0, k) for k in probe_keys} == at_first
    head = codec.read_header(store.latest(SID0)[1])
    assert head["resume_at_committed"] and head["rollback_of"] == ids[-1]
    with pytest.raises(CheckpointError):  # the worker that ran before the rollback is fenced
        store.save(SID0, w.service.shards[TP0].epoch, b"stale")


def test_models_parked_without_a_store_stay_in_memory():
    w = worker(keyed_settings(), DATA)
    w.service.run()
    models = _models(w)
    assert models.n_resident == 300 and len(models.parked) == N_KEYS - 300
    assert models.n_parked == N_KEYS - 300 and models.parked_bytes > 0


def test_new_keys_copy_the_prototype_and_predict_like_a_built_model():
    from stream_learner.models import ModelSpec

    spec = ModelSpec.from_settings(keyed_settings().model)
    models = KeyedModels(spec, 10)
    x = {"a": 0.3, "b": 0.9}
    assert models.get("new").model.predict_proba_one(x) == spec.build().predict_proba_one(x)
    models.get("new").model.learn_one(x, True)
    assert models.get("other").model.predict_proba_one(x) == spec.build().predict_proba_one(x)




# -- zombie fencing through the service ---------------------------------------------------------


@pytest.mark.parametrize("scope", ["partition", "key"])
def test_a_zombie_worker_never_overwrites_the_new_owner(new_store: Any, scope: str):
    settings = keyed_settings(model__scope=scope)
    zombie = worker(settings, DATA, new_store())
    zombie.start()
    for _ in range(6):
        zombie.step()  # checkpoint at 1000
    assert len(zombie.service.shards) == 1
    zombie_epoch = zombie.service.shards[TP0].epoch
    # the partition moves to a new owner (a rebalance the zombie has not noticed yet)
    owner_store = new_store()
    owner = worker(settings, DATA, owner_store,
                   committed=dict(zombie.source.committed_offsets))
    owner.start()
    owner.step()
    for _ in range(6):
        zombie.step()  # its next checkpoint is fenced: it drops the shard
    assert zombie.service.shards == {}
    assert sample_fenced(zombie) == 1
    for _ in range(6):
        owner.step()
    latest = owner_store.latest(SID0)
    head = codec_for(settings).read_header(latest[1])
    assert head["epoch"] == owner.service.shards[TP0].epoch > zombie_epoch
    assert all(codec_for(settings).read_header(owner_store.get(SID0, i))["epoch"] in
               (zombie_epoch, head["epoch"]) for i in owner_store.ids(SID0))


def sample_fenced(w: Any) -> float:
    return w.metrics.registry.get_sample_value(
        "stream_learner_checkpoints_total", {"result": "fenced"}
    ) or 0.0
