"""Recovery over in-memory edges: crash-exactness, rollback, policies, fencing, store failures.

A "crash" is simulated by dropping a Service after some batches were processed
and committed (and possibly one more processed without a commit), without the
final commit / checkpoint of :meth:`Service.run`. A new Service then starts on a
new MemorySource positioned at the committed offsets (as a Kafka consumer would
be) with the same store. Clocks are injected: nothing here depends on real time.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from stream_learner import admin
from stream_learner import recovery as recovery_module
from stream_learner.errors import CheckpointError, CheckpointRefused, ConnectionFailed
from stream_learner.events import Codec, Origin
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer, Shard
from stream_learner.settings import Settings
from stream_learner.sinks import Header
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
    TOPIC,
    TP0,
    TP1,
    WALL,
    Clock,
    Worker,
    by_offset,
    codec_for,
    make_settings,
    phishing,
    worker,
)

# -- helpers --------------------------------------------------------------------------------


class ReadinessSink(MemorySink):
    """Records the service's readiness each time a prediction is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: Metrics | None = None
        self.ready_seen: list[bool] = []

    def send(self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()) -> None:
        super().send(role, key, value, headers)
        if self.metrics is not None:
            self.ready_seen.append(self.metrics.is_ready)


def lone_learner(settings: Settings, start: Learner | None, tp: TopicPartition, values: Sequence[bytes], first: int) -> Learner:
    """``start`` (or a fresh learner) fed ``values`` (offsets first..) directly, no service."""
    spec = ModelSpec.from_settings(settings.model)
    learner = start or Learner(spec)
    codec = Codec(settings.schema_, settings.limits, spec.task)
    for i, v in enumerate(values):
        learner.process(codec.decode(v, None, 0, Origin(tp[0], tp[1], first + i)))
    return learner


# -- crash-exactness --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uninterrupted() -> dict[int, Worker]:
    """One uninterrupted run per checkpoint schedule (checkpointing must not change state)."""
    runs = {}
    for every in (30, 10_000):
        w = worker(crash_settings(every), DATA, MemoryStore())
        w.service.run()
        runs[every] = w
    return runs


CRASHES = {
    # name: (every_events, committed batches, processed-but-uncommitted batches, C vs K)
    "no checkpoint in store": (10_000, 5, 1, "none"),
    "checkpoint older than committed": (30, 7, 1, "older"),
    "checkpoint older than committed, nothing uncommitted": (30, 8, 0, "older"),
    "checkpoint equal to committed": (30, 6, 1, "equal"),
}


@pytest.mark.parametrize("case", list(CRASHES))
def test_crash_then_restore_is_exact(case: str, uninterrupted: dict[int, Worker]):
    every, batches, uncommitted, relation = CRASHES[case]
    settings = crash_settings(every)
    reference = uninterrupted[every]
    store = MemoryStore()

    crashed = worker(settings, DATA, store)
    crashed.crash_after(batches, uncommitted)
    committed = dict(crashed.source.committed_offsets)  # K
    frontier = {sid: checkpoint_offsets(store, sid, settings) for sid in (SID0, SID1)}  # C
    assert committed == {TP0: 10 * batches, TP1: 10 * batches}
    if relation == "none":
        assert frontier == {SID0: None, SID1: None}
        c = {TP0: 0, TP1: 0}
    else:
        c = {**frontier[SID0], **frontier[SID1]}  # type: ignore[dict-item]
        assert all((c[tp] < committed[tp]) if relation == "older" else (c[tp] == committed[tp]) for tp in c)

    resumed = worker(settings, DATA, store, committed=committed)
    summary = resumed.service.run()

    # (a) the final state is the uninterrupted run's
    for tp in (TP0, TP1):
        assert_same_state(resumed.learner(tp), reference.learner(tp))
    assert resumed.source.committed_offsets == {TP0: 160, TP1: 130}

    # (b) every offset has a prediction; any duplicate is identical to the uninterrupted one
    expected = by_offset(reference.predictions())
    assert all(len(v) == 1 for v in expected.values())
    got = by_offset(crashed.predictions() + resumed.predictions())
    assert set(got) == set(expected)
    for where, predictions in got.items():
        for p in predictions:
            assert p == expected[where][0], where

    # (c) C..K replayed silently; nothing below K emitted again
    assert summary.replayed == sum(committed[tp] - c[tp] for tp in c)
    if relation != "equal":
        assert summary.replayed > 0
    assert sample(resumed.metrics, "stream_learner_replayed_records_total") == summary.replayed
    for p in resumed.predictions():
        tp = (p["source"]["topic"], p["source"]["partition"])
        assert p["source"]["offset"] >= committed[tp]
    for where, predictions in got.items():
        if where[1] < committed[(TOPIC, where[0])]:
            assert len(predictions) == 1, where
    assert summary.predictions == sum(160 if tp == TP0 else 130 for tp in c) - sum(committed.values())


def test_two_crashes_in_a_row_are_exact(uninterrupted: dict[int, Worker]):
    settings = crash_settings(30)
    store = MemoryStore()
    first = worker(settings, DATA, store)
    first.crash_after(7, uncommitted=1)  # K = 70, C = 60
    second = worker(settings, DATA, store, committed=first.source.committed_offsets)
    second.crash_after(5, uncommitted=1)  # replays 60..70, then K = 110, C = 90
    assert second.source.committed_offsets == {TP0: 110, TP1: 110}
    assert second.service.summary.replayed == 20
    third = worker(settings, DATA, store, committed=second.source.committed_offsets)
    summary = third.service.run()
    assert summary.replayed == 40
    for tp in (TP0, TP1):
        assert_same_state(third.learner(tp), uninterrupted[30].learner(tp))
    expected = by_offset(uninterrupted[30].predictions())
    got = by_offset(first.predictions() + second.predictions() + third.predictions())
    assert set(got) == set(expected)
    assert all(p == expected[k][0] for k, ps in got.items() for p in ps)


def test_a_crash_during_the_silent_replay_is_exact(uninterrupted: dict[int, Worker]):
    settings = crash_settings(30)
    store = MemoryStore()
    first = worker(settings, DATA, store)
    first.crash_after(8)  # K = 80, C = 60
    second = worker(settings, DATA, store, committed=first.source.committed_offsets)
    second.crash_after(0, uncommitted=1)  # replays 60..70 only, then dies
    assert second.predictions() == []
    assert second.source.committed_offsets == {TP0: 80, TP1: 80}
    third = worker(settings, DATA, store, committed=second.source.committed_offsets)
    summary = third.service.run()
    assert summary.replayed == 40
    for tp in (TP0, TP1):
        assert_same_state(third.learner(tp), uninterrupted[30].learner(tp))


def test_replay_emits_no_dead_letters_and_counts_no_records():
    values = [*phishing(0, 10), b"not json", *phishing(10, 29)]  # 30 records
    settings = make_settings(service__batch_size=10, checkpoint__every_events=10_000)
    store = MemoryStore()
    first = worker(settings, {TP0: values}, store)
    first.crash_after(2)  # K = 20, no checkpoint: replay 0..20
    assert first.sink.values("dead_letters") == [b"not json"]
    second = worker(settings, {TP0: values}, store, committed=first.source.committed_offsets)
    summary = second.service.run()
    assert second.sink.values("dead_letters") == []
    assert summary.replayed == 20
    assert summary.records == 10
    assert summary.predictions == 10
    assert summary.dead_letters == 0


def test_replay_does_not_dead_letter_an_expired_label_again():
    ghost = b'{"id": "ghost", "key": "Phishing", "label": true}'
    values = [*phishing(0, 5), ghost, *phishing(5, 29)]  # 30 records
    settings = make_settings(
        service__batch_size=10, checkpoint__every_events=10_000, labels__early_max_age_events=2
    )
    store = MemoryStore()
    first = worker(settings, {TP0: values}, store)
    first.crash_after(2)  # K = 20, no checkpoint: replay 0..20
    # the ghost label expired at offset 8, in the first batch
    [(_role, _key, _value, headers)] = [s for s in first.sink.sent if s[0] == "learn_dead_letters"]
    assert dict(headers)["__stream_learner.errors.reason"] == b"unknown_id"
    assert first.service.summary.labels_expired == 1
    second = worker(settings, {TP0: values}, store, committed=first.source.committed_offsets)
    summary = second.service.run()
    assert summary.replayed == 20 and summary.records == 10
    # the replay expired it again (the state is the same) but emits and counts nothing
    assert second.learner().book.stats.expired_early == 1
    assert second.sink.values("learn_dead_letters") == []
    assert summary.labels_expired == summary.learn_dead_letters == 0
    assert sample(second.metrics, "stream_learner_labels_expired_total", buffer="early") == 0
    # labels joined are reported for the live records only
    assert summary.labels == 10
    assert sample(second.metrics, "stream_learner_labels_joined_total", when="inline") == 10


def test_a_tampered_checkpoint_stops_the_restore():
    settings = make_settings(service__batch_size=10, checkpoint__every_events=10)
    store = MemoryStore()
    worker(settings, {TP0: phishing(0, 30)}, store).service.run()
    _id, blob = store.latest(SID0)  # type: ignore[misc]
    store.save(SID0, 1, blob[:-1] + bytes([blob[-1] ^ 1]))
    w = worker(settings, {TP0: phishing(0, 40)}, store, committed={TP0: 30})
    with pytest.raises(CheckpointRefused, match="signature does not verify"):
        w.service.run()
    assert w.predictions() == []


def test_a_checkpoint_of_another_model_configuration_is_refused():
    settings = make_settings(service__batch_size=10, checkpoint__every_events=10)
    store = MemoryStore()
    worker(settings, {TP0: phishing(0, 30)}, store).service.run()
    other = make_settings(
        service__batch_size=10,
        model__pipeline=[{"step": "preprocessing.StandardScaler"}, {"step": "linear_model.Perceptron"}],
    )
    w = worker(other, {TP0: phishing(0, 40)}, store, committed={TP0: 30})
    with pytest.raises(CheckpointRefused, match="another model configuration"):
        w.service.run()


def test_a_checkpoint_of_another_shard_is_refused():
    settings = make_settings(service__batch_size=10, checkpoint__every_events=10)
    store = MemoryStore()
    worker(settings, {TP1: phishing(0, 30)}, store).service.run()
    _id, blob = store.latest(SID1)  # type: ignore[misc]
    store.save(SID0, 1, blob)  # validly signed, but for events:1
    spec = ModelSpec.from_settings(settings.model)
    with pytest.raises(CheckpointRefused, match="events:1"):
        _checkpointer(store).plan(SID0, {TP0: 30}, {TP0: 0}, lambda: Learner(spec))


# -- rollback -------------------------------------------------------------------------------


def _rolled_back(every_after: int = 20) -> tuple[MemoryStore, Settings, Learner, int]:
    """100 records checkpointed every 20 (ids 1..5 at offsets 20..100); roll back to id 2."""
    settings = make_settings(service__batch_size=10, checkpoint__every_events=20, checkpoint__keep=10)
    store = MemoryStore(keep=10)
    worker(settings, {TP0: phishing(0, 100)}, store).service.run()
    assert store.ids(SID0) == [1, 2, 3, 4, 5]
    codec = codec_for(settings)
    assert codec.read_header(store.get(SID0, 2))["offsets"] == [[TOPIC, 0, 40]]  # type: ignore[arg-type]
    at_two: Learner = codec.open(store.get(SID0, 2)).state  # type: ignore[arg-type]
    new_id = admin.rollback(store, codec, SID0, 2, lambda: WALL + 60)
    assert new_id == 6
    header = codec.read_header(store.latest(SID0)[1])  # type: ignore[index]
    assert header["resume_at_committed"] is True
    assert header["rollback_of"] == 2
    after = make_settings(service__batch_size=10, checkpoint__every_events=every_after, checkpoint__keep=10)
    return store, after, at_two, new_id


def test_rollback_resumes_at_committed_with_the_rolled_back_model():
    store, settings, at_two, _new_id = _rolled_back()
    values = phishing(0, 150)
    w = worker(settings, {TP0: values}, store, committed={TP0: 100})
    w.start()
    shard = w.service.shards[TP0]
    assert shard.position == {TP0: 100}  # no replay from C = 40
    assert_same_state(shard.learner, at_two)
    summary = w.service.run()
    assert summary.replayed == 0
    assert [p["source"]["offset"] for p in w.predictions()] == list(range(100, 150))
    assert w.predictions()[0]["model"]["n_learned"] == 40
    reference = lone_learner(settings, codec_for(settings).open(store.get(SID0, 2)).state, TP0, values[100:], 100)  # type: ignore[arg-type]
    assert_same_state(w.learner(), reference)
    # the next checkpoint is an ordinary one again
    assert "resume_at_committed" not in codec_for(settings).read_header(store.latest(SID0)[1])  # type: ignore[index]


def test_crash_after_a_rollback_before_the_next_checkpoint_loses_nothing():
    store, settings, at_two, _new_id = _rolled_back(every_after=10_000)  # no checkpoint after it
    values = phishing(0, 150)
    first = worker(settings, {TP0: values}, store, committed={TP0: 100})
    first.crash_after(3)  # learns 100..130 on top of the rolled-back model, commits 130
    assert first.source.committed_offsets == {TP0: 130}
    assert store.ids(SID0)[-1] == 7  # restoring the rollback re-saved it as a normal checkpoint at K
    second = worker(settings, {TP0: values}, store, committed={TP0: 130})
    summary = second.service.run()
    reference = lone_learner(settings, at_two, TP0, values[100:], 100)
    assert_same_state(second.learner(), reference)
    assert summary.replayed == 30


# -- offset out of range ----------------------------------------------------------------------


def _checkpoint_at_20_committed_30(settings: Settings) -> MemoryStore:
    store = MemoryStore()
    first = worker(settings, {TP0: phishing(0, 80)}, store)
    first.crash_after(3)
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 20}
    assert first.source.committed_offsets == {TP0: 30}
    return store


def test_checkpoint_older_than_the_log_start_fails_by_default():
    settings = make_settings(service__batch_size=10, checkpoint__every_events=20)
    assert settings.checkpoint.on_offset_out_of_range == "fail"
    store = _checkpoint_at_20_committed_30(settings)
    w = worker(settings, {TP0: phishing(0, 80)}, store, committed={TP0: 30}, log_start={TP0: 25})
    with pytest.raises(CheckpointError) as info:
        w.service.run()
    message = str(info.value)
    assert "checkpoint offset 20 of events[0] is older than the log start 25" in message
    assert "records 20..24 were deleted by retention" in message
    assert "on_offset_out_of_range = fail" in message
    assert "replay_from_earliest" in message
    assert w.predictions() == []
    assert sample(w.metrics, "stream_learner_recovery_alerts_total", kind="offset_out_of_range") == 1


def test_checkpoint_older_than_the_log_start_replays_from_earliest_when_asked():
    settings = make_settings(
        service__batch_size=10,
        checkpoint__every_events=20,
        checkpoint__on_offset_out_of_range="replay_from_earliest",
    )
    store = _checkpoint_at_20_committed_30(settings)
    values = phishing(0, 80)
    at_20 = codec_for(settings).open(store.latest(SID0)[1]).state  # type: ignore[index]
    w = worker(settings, {TP0: values}, store, committed={TP0: 30}, log_start={TP0: 25})
    summary = w.service.run()
    assert sample(w.metrics, "stream_learner_recovery_alerts_total", kind="offset_out_of_range") == 1
    assert summary.replayed == 5  # 25..29
    assert [p["source"]["offset"] for p in w.predictions()] == list(range(30, 80))
    assert_same_state(w.learner(), lone_learner(settings, at_20, TP0, values[25:], 25))


# -- a checkpoint past the committed offsets ----------------------------------------------------


def _checkpoints_at_20_and_40(settings: Settings) -> tuple[MemoryStore, list[bytes]]:
    """Checkpoints at 20 and 40, all committed; the restart is then told K = 30, as after a
    broker that lost the committed transaction of 30..39 (its outputs are gone with it)."""
    store, values = MemoryStore(), phishing(0, 80)
    first = worker(settings, {TP0: values}, store)
    first.crash_after(4)
    assert [codec_for(settings).open(store.get(SID0, i)).offsets  # type: ignore[arg-type]
            for i in store.ids(SID0)] == [{TP0: 20}, {TP0: 40}]
    return store, values


def test_exactly_once_restores_the_newest_checkpoint_at_or_before_k(caplog: pytest.LogCaptureFixture):
    settings = make_settings(service__batch_size=10, checkpoint__every_events=20,
                             service__guarantee="exactly_once")
    store, values = _checkpoints_at_20_and_40(settings)
    w = worker(settings, {TP0: values}, store, committed={TP0: 30})
    summary = w.service.run()
    assert summary.replayed == 10  # 20..29, from the checkpoint at 20
    assert [p["source"]["offset"] for p in w.predictions()] == list(range(30, 80))
    assert_same_state(w.learner(), lone_learner(settings, None, TP0, values, 0))
    assert sample(w.metrics, "stream_learner_recovery_alerts_total",
                  kind="checkpoint_past_committed") == 1
    assert "checkpoint 2 (offsets {('events', 0): 40}) is past the committed offsets" in caplog.text
    assert "restoring checkpoint 1, replayed silently up to them" in caplog.text


def test_exactly_once_without_an_older_checkpoint_resumes_at_c_and_says_what_is_missing(
    caplog: pytest.LogCaptureFixture,
):
    settings = make_settings(service__batch_size=10, checkpoint__every_events=20,
                             service__guarantee="exactly_once")
    store, values = _checkpoints_at_20_and_40(settings)
    w = worker(settings, {TP0: values}, store, committed={TP0: 15})  # before both checkpoints
    w.service.run()
    assert [p["source"]["offset"] for p in w.predictions()] == list(range(40, 80))
    assert "ALERT shard events:0: checkpoint 2" in caplog.text
    assert "the outputs between the two are missing from Kafka" in caplog.text


def test_at_least_once_resumes_at_a_checkpoint_past_k():
    """At-least-once writes a checkpoint once its outputs are acknowledged, before their
    offsets are committed: C past K is the normal aftermath of a crash in between."""
    settings = make_settings(service__batch_size=10, checkpoint__every_events=20)
    store, values = _checkpoints_at_20_and_40(settings)
    w = worker(settings, {TP0: values}, store, committed={TP0: 30})
    summary = w.service.run()
    assert summary.replayed == 0
    assert [p["source"]["offset"] for p in w.predictions()] == list(range(40, 80))
    assert sample(w.metrics, "stream_learner_recovery_alerts_total",
                  kind="checkpoint_past_committed") == 0


# -- fencing ----------------------------------------------------------------------------------


def test_fenced_save_during_revoke_drops_the_shard():
    settings = make_settings(service__batch_size=10, checkpoint__every_events=10_000)
    store = MemoryStore()
    w = worker(settings, {TP0: phishing(0, 50)}, store)
    w.start()
    w.step()
    w.step()
    newer = store.claim(SID0)  # a newer owner after a rebalance; this worker has the older epoch
    w.step(commit=False)  # dirty, uncommitted state
    w.service.on_revoked([TP0])  # must not raise
    assert TP0 not in w.service.shards
    assert TP0 not in w.service._parked  # stale state is not kept for a comeback
    assert w.source.committed_offsets == {TP0: 30}  # outputs were still committed first
    assert store.latest(SID0) is None
    assert store.epoch(SID0) == newer
    assert sample(w.metrics, "stream_learner_checkpoints_total", result="ok") == 0


def test_fenced_scheduled_checkpoint_drops_only_that_shard():
    settings = make_settings(service__batch_size=20, checkpoint__every_events=10)
    store = MemoryStore()
    w = worker(settings, {TP0: phishing(0, 50), TP1: phishing(100, 150)}, store)
    w.start()
    w.step()  # both shards checkpointed by this worker's epochs
    assert store.ids(SID0) == [1]
    assert store.ids(SID1) == [1]
    store.claim(SID0)
    w.step()  # shard 0's checkpoint is fenced: it is dropped, shard 1 carries on
    assert set(w.service.shards) == {TP1}
    assert store.ids(SID0) == [1]
    assert store.ids(SID1) == [1, 2]
    w.step()
    assert w.service.shards[TP1].position == {TP1: 30}
    assert store.ids(SID1) == [1, 2, 3]


# -- schedule -----------------------------------------------------------------------------------


def _checkpointer(store: Any = None, clock: Clock | None = None, **checkpoint: Any) -> Checkpointer:
    settings = make_settings(**{f"checkpoint__{k}": v for k, v in checkpoint.items()})
    return Checkpointer(
        store if store is not None else MemoryStore(), codec_for(settings), settings.checkpoint,
        Metrics(), lambda: WALL, clock or Clock(),
    )


def _shard(**kw: Any) -> Shard:
    spec = ModelSpec.from_settings(make_settings().model)
    return Shard(SID0, Learner(spec), {TP0: 7}, **kw)


def test_due_by_events():
    ck = _checkpointer(every_events=5, every_seconds=60.0)
    assert not ck.due(_shard(records_since_save=4, dirty=True), now=10.0)
    assert ck.due(_shard(records_since_save=5, dirty=True), now=10.0)
    assert not ck.due(_shard(records_since_save=500, dirty=False), now=10.0)


def test_due_by_seconds():
    ck = _checkpointer(every_events=1000, every_seconds=30.0)
    shard = _shard(records_since_save=1, dirty=True, saved_at=100.0)
    assert not ck.due(shard, now=129.9)
    assert ck.due(shard, now=130.0)
    shard.dirty = False
    assert not ck.due(shard, now=1000.0)  # nothing new to save


def test_save_resets_the_schedule():
    store = MemoryStore()
    ck = _checkpointer(store, every_events=5, every_seconds=30.0)
    shard = _shard(records_since_save=9, dirty=True, saved_at=0.0)
    shard.epoch = store.claim(SID0)
    ck.save(shard, now=50.0)
    assert (shard.records_since_save, shard.saved_at, shard.dirty) == (0, 50.0, False)
    header = ck.codec.read_header(store.latest(SID0)[1])  # type: ignore[index]
    assert header["offsets"] == [[TOPIC, 0, 7]]
    assert header["epoch"] == shard.epoch == 1
    assert header["created_at"] == WALL
    assert sample(ck.metrics, "stream_learner_checkpoints_total", result="ok") == 1
    assert sample(ck.metrics, "stream_learner_checkpoint_size_bytes", partition="0") == len(store.latest(SID0)[1])  # type: ignore[index]


def test_service_checkpoints_by_seconds_with_an_injected_clock():
    settings = make_settings(
        service__batch_size=10, checkpoint__every_events=10_000, checkpoint__every_seconds=30.0
    )
    store = MemoryStore()
    w = worker(settings, {TP0: phishing(0, 60)}, store, clock=Clock(1000.0))
    w.start()
    w.step()
    w.clock.advance(29.0)
    w.step()
    assert store.ids(SID0) == []
    w.clock.advance(1.0)
    w.step()  # 30 s since the restore
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 30}
    w.clock.advance(29.999)
    w.step()
    assert store.ids(SID0) == [1]
    w.clock.advance(0.001)
    w.step()
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 50}


# -- store failures -------------------------------------------------------------------------------


class FlakyStore(MemoryStore):
    """A MemoryStore whose next ``failures`` saves raise ConnectionFailed."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def save(self, shard: str, epoch: int, blob: bytes, *args: Any, **kwargs: Any) -> int:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionFailed("cannot reach Redis at redis://cache:6379/0: Connection refused")
        return super().save(shard, epoch, blob, *args, **kwargs)


def test_store_failure_keeps_serving_backs_off_and_recovers():
    settings = make_settings(
        service__batch_size=10, checkpoint__every_events=10, checkpoint__every_seconds=1000.0
    )
    store = FlakyStore(failures=2)
    w = worker(settings, {TP0: phishing(0, 80)}, store, clock=Clock(100.0))
    w.start()

    def errors() -> float:
        return sample(w.metrics, "stream_learner_checkpoints_total", result="error")

    w.step()  # t=100: due, fails; retry after 1 s
    assert (store.attempts, errors()) == (1, 1)
    w.clock.advance(0.5)
    w.step()  # t=100.5: backing off, no attempt
    assert store.attempts == 1
    w.clock.advance(0.5)
    w.step()  # t=101: due again, fails; retry after 2 s
    assert (store.attempts, errors()) == (2, 2)
    w.clock.advance(1.9)
    w.step()  # t=102.9: still backing off
    assert store.attempts == 2
    w.clock.advance(0.1)
    w.step()  # t=103: succeeds
    assert store.attempts == 3
    assert sample(w.metrics, "stream_learner_checkpoints_total", result="ok") == 1
    assert checkpoint_offsets(store, SID0, settings) == {TP0: 50}
    age = sample(w.metrics, "stream_learner_checkpoint_age_seconds", partition="0")
    assert age == pytest.approx(3.0)  # reported before the successful save: time since restore
    w.clock.advance(1.0)
    w.step()  # t=104: 10 more records, due, saves straight away
    assert store.attempts == 4
    assert sample(w.metrics, "stream_learner_checkpoint_age_seconds", partition="0") == pytest.approx(1.0)
    # serving never stopped
    assert [p["source"]["offset"] for p in w.predictions()] == list(range(60))
    assert w.source.committed_offsets == {TP0: 60}
    assert errors() == 2


def test_checkpoint_backoff_doubles_up_to_the_maximum():
    store = FlakyStore(failures=10)
    ck = _checkpointer(store, every_events=1, max_backoff_s=3.0)
    shard = _shard(records_since_save=1, dirty=True)
    now, waits = 0.0, []
    for _ in range(4):
        ck.save(shard, now)
        retry_at = now
        while not ck.due(shard, retry_at):
            retry_at += 0.25
        waits.append(retry_at - now)
        now = retry_at
    assert waits == [1.0, 2.0, 3.0, 3.0]
    assert shard.dirty
    assert sample(ck.metrics, "stream_learner_checkpoints_total", result="error") == 4


def test_a_save_that_succeeds_after_failures_says_so(caplog: pytest.LogCaptureFixture):
    store = FlakyStore(failures=2)
    ck = _checkpointer(store, every_events=1)
    shard = _shard(records_since_save=1, dirty=True)
    with caplog.at_level("INFO", logger="stream_learner.recovery"):
        for now in (0.0, 1.0, 3.0):
            ck.save(shard, now)
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    again = [r for r in caplog.records if "saved again" in r.getMessage()]
    assert len(failed) == 2 and len(again) == 1
    assert not shard.dirty
    caplog.clear()
    shard.dirty = True
    with caplog.at_level("INFO", logger="stream_learner.recovery"):
        ck.save(shard, 4.0)  # an ordinary save after a healthy one: nothing to report
    assert "saved again" not in caplog.text


def test_store_unreachable_at_restore_is_retried_then_fails(monkeypatch: pytest.MonkeyPatch):
    clock = Clock()
    monkeypatch.setattr(recovery_module, "time", types.SimpleNamespace(sleep=clock.advance))

    class Down(MemoryStore):
        def claim(self, shard: str) -> int:
            raise ConnectionFailed("cannot reach Redis at redis://cache:6379/0")

    ck = _checkpointer(Down(), clock, restore_timeout_s=5.0)
    spec = ModelSpec.from_settings(make_settings().model)
    with pytest.raises(ConnectionFailed, match=r"claim events:0: store unreachable for 5s") as info:
        ck.plan(SID0, {TP0: 10}, {TP0: 0}, lambda: Learner(spec))
    assert "redis://cache:6379/0" in str(info.value)
    assert clock.t <= 5.0


def test_store_unreachable_at_restore_then_back_is_retried(monkeypatch: pytest.MonkeyPatch):
    clock = Clock()
    monkeypatch.setattr(recovery_module, "time", types.SimpleNamespace(sleep=clock.advance))

    class Blip(MemoryStore):
        down = 2

        def latest(self, shard: str) -> tuple[int, bytes] | None:
            if self.down:
                self.down -= 1
                raise ConnectionFailed("cannot reach Redis at redis://cache:6379/0")
            return super().latest(shard)

    ck = _checkpointer(Blip(), clock)
    spec = ModelSpec.from_settings(make_settings().model)
    plan = ck.plan(SID0, {TP0: 10}, {TP0: 0}, lambda: Learner(spec))
    assert plan.source == "log start"
    assert plan.seek == {TP0: 0}
    assert plan.replay_until == {TP0: 10}
    assert clock.t == pytest.approx(0.6)  # 0.2 + 0.4


# -- checkpoints disabled ---------------------------------------------------------------------


def test_null_checkpointer_resumes_fresh_at_committed_offsets(caplog: pytest.LogCaptureFixture):
    settings = make_settings(service__batch_size=10)
    values = phishing(0, 80)
    first = worker(settings, {TP0: values})
    first.crash_after(5)
    assert first.source.committed_offsets == {TP0: 50}
    second = worker(settings, {TP0: values}, committed={TP0: 50})
    with caplog.at_level("WARNING", logger="stream_learner.recovery"):
        summary = second.service.run()
    assert "checkpoints are disabled" in caplog.text
    assert summary.replayed == 0
    assert [p["source"]["offset"] for p in second.predictions()] == list(range(50, 80))
    assert second.predictions()[0]["model"]["n_learned"] == 0
    assert_same_state(second.learner(), lone_learner(settings, None, TP0, values[50:], 50))


def test_null_checkpointer_plan():
    spec = ModelSpec.from_settings(make_settings().model)
    plan = NullCheckpointer().plan(SID0, {TP0: 50}, {TP0: 0}, lambda: Learner(spec))
    assert (plan.seek, plan.replay_until, plan.source) == ({}, {}, "fresh")
    assert plan.learner.n_learned == 0


# -- readiness after a restore ------------------------------------------------------------------


def _readiness_run(settings: Settings, store: MemoryStore, values: list[bytes], committed: dict) -> list[bool]:
    sink = ReadinessSink()
    w = worker(settings, {TP0: values}, store, committed=committed, sink=sink)
    sink.metrics = w.metrics
    w.service.run()
    return sink.ready_seen


def test_ready_once_the_silent_replay_is_done():
    settings = make_settings(service__batch_size=10, checkpoint__every_events=20)
    store = MemoryStore()
    worker(settings, {TP0: phishing(0, 60)}, store).crash_after(3)  # C = 20, K = 30
    seen = _readiness_run(settings, store, phishing(0, 60), {TP0: 30})
    assert len(seen) == 30
    assert seen[-1] is True


@pytest.mark.parametrize("case", ["empty store, nothing committed", "checkpoint at the committed offset"])
def test_ready_after_a_restore_with_nothing_to_replay(case: str):
    settings = make_settings(service__batch_size=10, checkpoint__every_events=10)
    store = MemoryStore()
    committed: dict[TopicPartition, int] = {}
    if case == "checkpoint at the committed offset":
        worker(settings, {TP0: phishing(0, 60)}, store).crash_after(3)  # C = K = 30
        committed = {TP0: 30}
        assert checkpoint_offsets(store, SID0, settings) == committed
    seen = _readiness_run(settings, store, phishing(0, 60), committed)
    assert seen
    assert seen[-1] is True


def test_summary_json_of_a_resumed_run():
    settings = crash_settings(30)
    store = MemoryStore()
    worker(settings, DATA, store).crash_after(7, 1)
    resumed = worker(settings, DATA, store, committed={TP0: 70, TP1: 70})
    doc = orjson.loads(orjson.dumps(resumed.service.run().to_dict()))
    assert doc["replayed"] == 20
    assert doc["records"] == 90 + 60
    assert "20 replayed silently" in resumed.service.summary.render()
