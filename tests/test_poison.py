"""A record whose content breaks a stage of the loop is a dead letter, never a stopped worker.

From the outside: the CLI on the local transport, real files.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_learner import service as service_module
from stream_learner.drift import DriftWatch
from stream_learner.errors import ModelFailing, RecordStoppedWorker
from stream_learner.events import Codec, Origin
from stream_learner.guard import (
    KEEP,
    Guard,
    LocalSuspects,
    MemorySuspects,
    RedisSuspects,
    Suspect,
    SuspectStore,
    digest,
)
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.service import Service, Summary
from stream_learner.settings import Settings
from stream_learner.sources import Record
from stream_learner.testing import MemorySink, MemorySource
from tests.support.fragile_model import (
    BREAKS_DRIFT,
    BREAKS_METRIC,
    EXITS,
    LEARN_RAISES,
    PREDICT_RAISES,
    UNENCODABLE,
)
from tests.support.service import service_command, service_env

STEPS = {
    "classification": "linear_model.LogisticRegression",
    "regression": "linear_model.LinearRegression",
    "anomaly": "anomaly.HalfSpaceTrees",
}


def cli(tmp_path: Path, *args: str, **overrides: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the local transport with its outputs in ``tmp_path``."""
    return subprocess.run(
        service_command(*args),
        env=service_env(
            local__dead_letters=str(tmp_path / "dlq.jsonl"),
            local__learn_dead_letters=str(tmp_path / "learn-dlq.jsonl"),
            metrics__enabled="false",
            **overrides,
        ),
        capture_output=True, text=True, timeout=120, check=False,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def nested(depth: int) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth


def reason(letter: dict[str, Any]) -> str:
    return str(letter["headers"]["__stream_learner.errors.reason"])


def test_a_label_nested_1000_levels_deep_is_a_dead_letter_not_a_crash(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join([
        b'{"id":1,"key":"k","features":{"x":1.0},"label":1.5}',
        b'{"id":2,"key":"k","label":' + nested(1000) + b"}",
        b'{"id":3,"key":"k","features":{"x":2.0},"label":2.5}',
    ]) + b"\n")
    out = tmp_path / "out.jsonl"
    proc = cli(tmp_path, "run", "--input", str(source), "--output", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p["id"] for p in lines(out)] == [1, 3]
    assert lines(tmp_path / "dlq.jsonl") == []
    letters = lines(tmp_path / "learn-dlq.jsonl")
    assert [reason(d) for d in letters] == ["invalid_label"]
    assert letters[0]["value_base64"] and letters[0]["value"].startswith('{"id":2,')
    assert letters[0]["headers"]["__stream_learner.errors.offset"] == "1"


def test_deep_labels_features_and_ids_on_every_task(tmp_path: Path) -> None:
    """Inline, label-record, regression and anomaly labels share the path that broke."""
    deep = nested(1000)
    for task, good in (("classification", b"1"), ("regression", b"1.5"), ("anomaly", b"0")):
        source = tmp_path / f"{task}.jsonl"
        source.write_bytes(b"\n".join([
            b'{"id":1,"key":"k","features":{"x":1.0},"label":' + good + b"}",
            b'{"id":2,"key":"k","features":{"x":1.0},"label":' + deep + b"}",
            b'{"id":3,"key":"k","label":' + deep + b"}",
            b'{"id":' + deep + b',"key":"k","features":{"x":1.0}}',
            b'{"id":5,"key":' + deep + b',"features":{"x":1.0}}',
            b'{"id":6,"key":"k","ts":' + deep + b',"features":{"x":1.0}}',
            b'{"id":7,"key":"k","features":' + deep + b"}",
            b'{"id":8,"key":"k","features":{"x":' + deep + b"}}",
            b'{"id":9,"key":"k","features":{"x":3.0},"label":' + good + b"}",
        ]) + b"\n")
        out = tmp_path / f"{task}-out.jsonl"
        config = tmp_path / f"{task}.toml"
        threshold = "anomaly_threshold = 0.9\n" if task == "anomaly" else ""
        config.write_text(
            f'[model]\ntask = "{task}"\n{threshold}\n[[model.pipeline]]\nstep = "{STEPS[task]}"\n'
        )
        proc = cli(tmp_path, "run", "-c", str(config), "--input", str(source), "--output", str(out))
        assert proc.returncode == 0, (task, proc.stderr[-3000:])
        assert [p["id"] for p in lines(out)] == [1, 2, 9], task
        learn = lines(tmp_path / "learn-dlq.jsonl")
        inputs = lines(tmp_path / "dlq.jsonl")
        assert [reason(d) for d in learn] == ["invalid_label", "invalid_label"], task
        assert [reason(d) for d in inputs] == [
            "invalid_id", "invalid_key", "invalid_ts", "features_not_object", "feature_not_scalar"
        ], task
        for path in (tmp_path / "learn-dlq.jsonl", tmp_path / "dlq.jsonl"):
            path.unlink()


FRAGILE = Settings.model_validate({"model": {"factory": "tests.support.fragile_model:fragile"}})


def event(i: int, **features: Any) -> bytes:
    return orjson.dumps({"id": i, "key": "k", "features": {"x": float(i), **features},
                         "label": float(i) / 2})


def serve(values: list[bytes], settings: Settings = FRAGILE) -> tuple[Summary, MemorySink]:
    source = MemorySource({("events", 0): values})
    sink = MemorySink()
    spec = ModelSpec.from_settings(settings.model)
    return Service(settings, spec, source, sink, Metrics()).run(), sink


def predictions(sink: MemorySink) -> dict[Any, Any]:
    return {p["id"]: p["prediction"] for p in (orjson.loads(v) for r, _k, v, _h in sink.sent
                                                 if r == "predictions")}


def letters(sink: MemorySink) -> list[tuple[str, str, bytes]]:
    return [(role, dict(h)["__stream_learner.errors.reason"].decode(), v)
            for role, _k, v, h in sink.sent if role != "predictions"]


def test_every_stage_after_decoding_fails_into_its_own_dead_letter() -> None:
    good = [event(i) for i in range(1, 40)]
    bad = {
        100: (event(100, boom=PREDICT_RAISES), "dead_letters", "model_rejected"),
        101: (event(101, boom=LEARN_RAISES), "learn_dead_letters", "learn_failed"),
        102: (event(102, boom=UNENCODABLE), "dead_letters", "encode_failed"),
    }
    stream = [*good[:10], bad[100][0], *good[10:20], bad[101][0], *good[20:30]]
    stream += [bad[102][0], *good[30:]]
    summary, sink = serve(stream)
    _alone, alone_sink = serve(good)
    assert predictions(sink) == {**predictions(alone_sink), 101: predictions(sink)[101]}
    assert letters(sink) == [(out, why, value) for value, out, why in bad.values()]
    assert summary.records == len(stream)
    assert summary.predictions == len(good) + 1  # the event whose label failed is predicted
    assert summary.dead_letters == 2 and summary.inline_labels_rejected == 1


def test_a_metric_and_drift_monitors_that_raise_cost_only_their_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from river import metrics

    real_update = metrics.MAE.update
    real_observe = DriftWatch.observe

    def update(self: Any, y_true: Any, y_pred: Any, *args: Any) -> Any:
        if y_true == 5.0:
            raise TypeError("unorderable")
        return real_update(self, y_true, y_pred, *args)

    def observe(self: Any, slot: Any, key: str, ev: Any, scored: Any) -> Any:
        if ev.id == 7:
            raise ZeroDivisionError("float division by zero")
        return real_observe(self, slot, key, ev, scored)

    monkeypatch.setattr(metrics.MAE, "update", update)
    monkeypatch.setattr(DriftWatch, "observe", observe)
    settings = Settings.model_validate({"drift": {"enabled": True}})
    stream = [event(i) for i in range(1, 30)]
    summary, sink = serve(stream, settings)
    assert len(predictions(sink)) == 29
    assert letters(sink) == [
        ("learn_dead_letters", "drift_failed", stream[6]),  # id 7
        ("learn_dead_letters", "metric_failed", stream[9]),  # label 5.0
    ]
    assert summary.labels == 29  # the model learned both labels
    assert summary.inline_labels_rejected == 2


def test_a_model_that_fails_on_every_record_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(service_module, "MODEL_FAILURE_LIMIT", 20)
    # failures broken by a success do not stop it; records rejected before the model do not
    # break the streak
    mixed = [event(i, boom=PREDICT_RAISES) for i in range(19)] + [event(99)]
    mixed += [event(i, boom=LEARN_RAISES) for i in range(19)]
    summary, _ = serve(mixed)
    assert summary.records == len(mixed)
    streak = [event(i, boom=PREDICT_RAISES if i % 2 else LEARN_RAISES) for i in range(15)]
    streak += [b"{oops"] * 3 + [event(i, boom=PREDICT_RAISES) for i in range(5)]
    with pytest.raises(ModelFailing, match=r"20 records in a row, the last at events\[0\]@22"):
        serve(streak)


def test_a_record_that_stops_the_worker_is_dead_lettered_when_it_comes_again() -> None:
    guard = Guard(MemorySuspects())
    stream = [event(i) for i in range(5)] + [event(5, boom=EXITS)] + [event(i) for i in (6, 7)]
    spec = ModelSpec.from_settings(FRAGILE.model)
    with pytest.raises(RecordStoppedWorker, match=r"events\[0\]@5 made the worker stop: Sys"):
        Service(FRAGILE, spec, MemorySource({("events", 0): stream}), MemorySink(), Metrics(),
                guard=guard).run()
    restarted = Guard(guard.store)
    sink = MemorySink()
    summary = Service(FRAGILE, spec, MemorySource({("events", 0): stream}), sink, Metrics(),
                      guard=restarted).run()
    assert letters(sink) == [("dead_letters", "stopped_worker", stream[5])]
    assert sorted(predictions(sink)) == [0, 1, 2, 3, 4, 6, 7]
    # other bytes at that offset are not the record that stopped the worker
    other = [*stream[:5], event(5), *stream[6:]]
    summary, sink = serve(other)
    assert letters(sink) == [] and summary.predictions == 8


# -- from the outside: the CLI, real files ------------------------------------------------


def test_cli_run_twice_dead_letters_the_record_that_stopped_the_first_run(tmp_path: Path) -> None:
    stream = [event(i) for i in range(6)] + [event(6, boom=EXITS)] + [event(i) for i in (7, 8)]
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(stream) + b"\n")
    store = {
        "model__factory": "tests.support.fragile_model:fragile",
        "checkpoint__store": "local",
        "checkpoint__directory": str(tmp_path / "ckpt"),
        "checkpoint__every_events": "2",
        "checkpoint_key": "k" * 32,
        "service__batch_size": "2",
    }
    first = cli(tmp_path, "run", "--input", str(source), "--output", str(tmp_path / "1.jsonl"),
                **store)
    assert first.returncode == 1, first.stderr[-3000:]
    last = first.stderr.strip().splitlines()[-1]
    assert "@6 made the worker stop: SystemExit: 3" in last, first.stderr[-3000:]
    assert list((tmp_path / "ckpt" / ".suspects").iterdir())

    second = cli(tmp_path, "run", "--input", str(source), "--output", str(tmp_path / "2.jsonl"),
                 **store)
    assert second.returncode == 0, second.stderr[-3000:]
    dead = lines(tmp_path / "dlq.jsonl")
    assert [reason(d) for d in dead] == ["stopped_worker"]
    assert dead[0]["value"].encode() == stream[6]
    assert "SystemExit: 3" in dead[0]["headers"]["__stream_learner.errors.exception.message"]
    # the second run resumed from the checkpoint at offset 6, and predicts as if the record
    # had never been there
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"\n".join(stream[:6] + stream[7:]) + b"\n")
    alone = cli(tmp_path, "run", "--input", str(clean), "--output", str(tmp_path / "c.jsonl"),
                model__factory="tests.support.fragile_model:fragile")
    assert alone.returncode == 0, alone.stderr[-3000:]
    expected = {p["id"]: p["prediction"] for p in lines(tmp_path / "c.jsonl")}
    assert [p["id"] for p in lines(tmp_path / "1.jsonl")] == [0, 1, 2, 3, 4, 5]
    got = {p["id"]: p["prediction"] for p in lines(tmp_path / "2.jsonl")}
    assert got == {i: expected[i] for i in (7, 8)}

    third = cli(tmp_path, "run", "--input", str(source), "--output", str(tmp_path / "3.jsonl"),
                **store)
    assert third.returncode == 0, third.stderr[-3000:]


def test_cli_model_failing_on_every_record_stops_with_one_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(event(i, boom=PREDICT_RAISES) for i in range(1200)) + b"\n")
    proc = cli(tmp_path, "run", "--input", str(source), "--quiet",
               model__factory="tests.support.fragile_model:fragile")
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert "ERROR" in last and "the model raised on 1000 records in a row" in last, last
    assert "Traceback" not in proc.stderr


def test_a_prediction_monitors_or_the_metric_cannot_read_is_still_sent() -> None:
    stream = [event(i) for i in range(10)] + [event(10, boom=BREAKS_DRIFT)]
    stream += [event(11, boom=BREAKS_METRIC)] + [event(i) for i in range(12, 20)]
    summary, sink = serve(stream)
    got = predictions(sink)
    assert (got[10], got[11]) == (0.5, "0.5")
    assert letters(sink) == [
        ("learn_dead_letters", "drift_failed", stream[10]),
        ("learn_dead_letters", "metric_failed", stream[11]),
    ]
    assert summary.predictions == 20


def test_an_unexpected_error_in_decoding_costs_only_its_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = Codec.decode

    def decode(self: Codec, value: bytes | None, *args: Any) -> Any:
        if value == b'{"id": "trap", "features": {}}':
            raise AttributeError("'NoneType' object has no attribute 'get'")
        return real(self, value, *args)

    monkeypatch.setattr(Codec, "decode", decode)
    stream = [event(1), b'{"id": "trap", "features": {}}', event(2)]
    summary, sink = serve(stream)
    assert summary.records == 3 and summary.dead_letters == 1
    assert sorted(predictions(sink)) == [1, 2]
    assert letters(sink) == [("dead_letters", "unexpected_error", stream[1])]
    message = dict(sink.sent[1][3])["__stream_learner.errors.exception.message"]
    assert message == (
        b"an unexpected AttributeError while handling this record: "
        b"'NoneType' object has no attribute 'get'"
    )


# -- the marker stores: one contract, three places ----------------------------------------


@pytest.fixture(params=["memory", "local", pytest.param("redis", marks=pytest.mark.redis)])
def suspects(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SuspectStore]:
    if request.param == "memory":
        yield MemorySuspects()
    elif request.param == "local":
        yield LocalSuspects(tmp_path)
    else:
        url = request.getfixturevalue("redis_url")
        store = RedisSuspects(url, f"test-suspects-{uuid.uuid4().hex[:8]}")
        try:
            yield store
        finally:
            store._redis.delete(store._key(("events", 0)), store._key(("events", 1)))
            store.close()


def test_marker_stores_keep_the_newest_markers_of_each_partition(suspects: SuspectStore) -> None:
    assert suspects.load(("events", 0)) == []
    for offset in range(KEEP + 3):
        suspects.add(("events", 0), Suspect(offset, digest(str(offset).encode()), "E: x"))
    suspects.add(("events", 1), Suspect(7, "tombstone", "SystemExit: 3"))
    kept = suspects.load(("events", 0))
    assert [s.offset for s in kept] == list(range(3, KEEP + 3))
    assert kept[0] == Suspect(3, digest(b"3"), "E: x")
    assert suspects.load(("events", 1)) == [Suspect(7, "tombstone", "SystemExit: 3")]
    guard = Guard(suspects)
    guard.watch([("events", 1)])
    tombstone = Record(None, b"k", 0, Origin("events", 1, 7))
    assert guard.recognise(tombstone) == Suspect(7, "tombstone", "SystemExit: 3")
    assert guard.recognise(tombstone._replace(value=b"")) is None


def test_a_marker_that_cannot_be_written_does_not_hide_the_error(tmp_path: Path) -> None:
    (tmp_path / ".suspects").write_text("a file where the folder should be")
    guard = Guard(LocalSuspects(tmp_path))
    guard.remember(Record(b"x", None, 0, Origin("events", 0, 1)), RuntimeError("boom"))
    assert guard.suspects == {}


def test_markers_that_cannot_be_read_do_not_stop_the_worker(tmp_path: Path) -> None:
    store = LocalSuspects(tmp_path)
    store.add(("events", 0), Suspect(1, "d", "E: x"))
    store._path(("events", 0)).write_text("{not json")
    guard = Guard(store)
    guard.watch([("events", 0)])
    assert guard.suspects == {}


def test_running_out_of_memory_stops_the_worker_without_blaming_the_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def decode(self: Codec, value: bytes | None, *args: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(Codec, "decode", decode)
    guard = Guard(MemorySuspects())
    sink = MemorySink()
    service = Service(FRAGILE, ModelSpec.from_settings(FRAGILE.model),
                      MemorySource({("events", 0): [event(1)]}), sink, Metrics(), guard=guard)
    with pytest.raises(MemoryError):
        service.run()
    assert guard.store.load(("events", 0)) == [] and sink.sent == []
