"""The service loop over in-memory edges: outputs, dead letters, flush-then-commit, stopping."""

from __future__ import annotations

import orjson
import pytest

from stream_learner.errors import ConnectionFailed
from stream_learner.events import Codec, Origin, encode_prediction
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import Settings
from stream_learner.sources import FileSource, Record
from stream_learner.testing import MemorySink, MemorySource
from tests.support.memory import TOPIC, WALL, make_settings, phishing


def make_service(settings: Settings, source, sink) -> Service:
    return Service(
        settings,
        ModelSpec.from_settings(settings.model),
        source,
        sink,
        clock=lambda: 0.0,  # latency_ms is then exactly 0.0
        wall_clock=lambda: WALL,
    )


def reference(settings: Settings, topic: str, partition: int, values: list[bytes]) -> list[dict]:
    """What a lone Learner makes of one partition, encoded as the service encodes it."""
    spec = ModelSpec.from_settings(settings.model)
    lrn = Learner(spec)
    codec = Codec(settings.schema_, settings.limits, spec.task)
    out = []
    for offset, value in enumerate(values):
        prediction = lrn.process(codec.decode(value, None, 0, Origin(topic, partition, offset)))[0]
        out.append(orjson.loads(encode_prediction(prediction, 0.0)))
    return out


def sample(registry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- predictions ----------------------------------------------------------------------------


def test_one_prediction_per_event_in_partition_order():
    values = phishing(0, 50)
    src = MemorySource({(TOPIC, 0): values})
    sink = MemorySink()
    summary = make_service(make_settings(service__batch_size=7), src, sink).run()

    out = sink.decoded("predictions")
    assert len(out) == 50
    assert [p["source"]["offset"] for p in out] == list(range(50))
    assert [p["id"] for p in out] == list(range(50))
    assert out == reference(make_settings(), TOPIC, 0, values)
    assert {k for role, k, _v, _h in sink.sent if role == "predictions"} == {b"Phishing"}
    assert summary.predictions == 50
    assert summary.records == 50
    assert summary.labels == 50
    assert summary.dead_letters == 0
    assert src.committed_offsets == {(TOPIC, 0): 50}
    assert sink.flushed == len(sink.sent)


def test_two_partitions_get_independent_models():
    settings = make_settings(service__batch_size=16)
    p0, p1 = phishing(0, 60), phishing(600, 640)
    src = MemorySource({(TOPIC, 0): p0, (TOPIC, 1): p1})
    sink = MemorySink()
    service = make_service(settings, src, sink)
    summary = service.run()

    out = sink.decoded("predictions")
    by_partition = {part: [p for p in out if p["source"]["partition"] == part] for part in (0, 1)}
    ref0 = reference(settings, TOPIC, 0, p0)
    ref1 = reference(settings, TOPIC, 1, p1)
    assert by_partition[0] == ref0
    assert by_partition[1] == ref1
    # A shared model would have learned partition 0 before scoring partition 1.
    assert by_partition[1][0]["model"]["n_learned"] == 0
    assert by_partition[1][0]["proba"] == {"false": 0.5, "true": 0.5}
    assert set(service.shards) == {(TOPIC, 0), (TOPIC, 1)}
    assert service.shards[(TOPIC, 0)] is not service.shards[(TOPIC, 1)]
    assert service.shards[(TOPIC, 0)].learner.n_learned == 60
    assert service.shards[(TOPIC, 1)].learner.n_learned == 40
    assert src.committed_offsets == {(TOPIC, 0): 60, (TOPIC, 1): 40}

    lone0, lone1 = Learner(service.spec), Learner(service.spec)
    codec = service.codec
    for lone, values, part in ((lone0, p0, 0), (lone1, p1, 1)):
        for off, v in enumerate(values):
            lone.process(codec.decode(v, None, 0, Origin(TOPIC, part, off)))
    assert summary.metrics == {
        f"{TOPIC}[0]": lone0.metric_value,
        f"{TOPIC}[1]": lone1.metric_value,
    }
    assert summary.metric_name == "Accuracy"


def test_prediction_key_is_the_event_key():
    src = MemorySource(
        {
            (TOPIC, 0): [
                Record(b'{"id": 1, "features": {"x": 1.0}}', b"pump-1", 5000, Origin(TOPIC, 0, 0)),
                Record(
                    b'{"id": 2, "key": "pump-2", "features": {"x": 2.0}}',
                    b"other",
                    6000,
                    Origin(TOPIC, 0, 1),
                ),
            ]
        }
    )
    sink = MemorySink()
    make_service(make_settings(), src, sink).run()
    keys = [k for role, k, _v, _h in sink.sent if role == "predictions"]
    assert keys == [b"pump-1", b"pump-2"]
    assert [p["ts"] for p in sink.decoded("predictions")] == [5.0, 6.0]


# -- dead letters ---------------------------------------------------------------------------

BAD = [
    (b"nope", b"k1", "not_json", "InvalidRecord"),
    (None, b"k2", "empty", "InvalidRecord"),
    (b'{"id": 5}', None, "no_features", "InvalidRecord"),
    (b'{"id": 6, "features": {"x": 1.0}, "label": 1.5}', None, "invalid_label", "InvalidLabel"),
    (b'{"id": 0, "label": true}', b"k5", "unknown_id", "InvalidLabel"),
    (b"[1, 2, 3]", None, "not_object", "InvalidRecord"),
]
#: the label record of BAD for an id never seen, re-encoded when it expires
EXPIRED_LABEL = b'{"id":0,"key":"k5","ts":0.0,"label":true}'


def test_bad_records_become_dead_letters_with_original_bytes_and_headers():
    good, after = phishing(0, 3), phishing(3, 5)
    records = [Record(v, None, 0, Origin(TOPIC, 2, i)) for i, v in enumerate(good)]
    for i, (value, key, _reason, _cls) in enumerate(BAD, start=len(good)):
        records.append(Record(value, key, 0, Origin(TOPIC, 2, i)))
    start = len(records)
    records += [Record(v, None, 0, Origin(TOPIC, 2, start + i)) for i, v in enumerate(after)]
    src = MemorySource({(TOPIC, 2): records})
    sink = MemorySink()
    # the label for an unknown id waits for its event at most one later event, then
    # expires: the two events after it make it a dead letter within the run
    service = make_service(make_settings(labels__early_max_age_events=1), src, sink)
    summary = service.run()

    outputs = ("dead_letters", "learn_dead_letters")
    dead = [(k, v, dict(h)) for role, k, v, h in sink.sent if role in outputs]
    # (offset, BAD entry) in the order the dead letters are written: the expired label
    # last, when the batch that expired it ends
    expected = [(off, bad) for off, bad in enumerate(BAD, start=len(good))]
    expected.sort(key=lambda item: item[1][2] == "unknown_id")
    assert len(dead) == len(BAD)
    # the event with a bad inline label is predicted; only its label is a dead letter
    assert summary.dead_letters == len(BAD) - 2
    assert summary.inline_labels_rejected == 1
    # the label record was accepted (to wait), and expired later
    assert summary.label_records == 1 and summary.labels_expired == 1
    assert summary.labels == len(good) + len(after)
    assert summary.predictions == len(good) + 1 + len(after)
    assert summary.records == len(records)
    for (key, value, headers), (offset, (orig, orig_key, reason, cls)) in zip(
        dead, expected, strict=True
    ):
        if reason == "unknown_id":
            assert value == EXPIRED_LABEL
        else:
            assert value == (orig if orig is not None else b"")
        assert key == orig_key
        assert headers["__stream_learner.errors.topic"] == TOPIC.encode()
        assert headers["__stream_learner.errors.partition"] == b"2"
        assert headers["__stream_learner.errors.offset"] == str(offset).encode()
        assert headers["__stream_learner.errors.reason"] == reason.encode()
        assert headers["__stream_learner.errors.exception.class.name"] == cls.encode()
        message = headers["__stream_learner.errors.exception.message"].decode()
        assert message
        assert not message.startswith(reason)  # the human message, without the code
        assert headers["__stream_learner.errors.timestamp"] == b"1764115200.500"
        assert headers["__stream_learner.errors.schema.version"] == b"1"
    # a bad record does not stop the partition: it is committed past
    assert src.committed_offsets == {(TOPIC, 2): len(records)}
    reg = service.metrics.registry
    assert sample(reg, "stream_learner_dead_letters_total", output="dead_letters", reason="not_json") == 1
    assert sample(reg, "stream_learner_dead_letters_total", output="learn_dead_letters", reason="unknown_id") == 1
    assert sample(reg, "stream_learner_labels_expired_total", buffer="early") == 1


def test_dead_letter_message_header_names_the_problem():
    src = MemorySource({(TOPIC, 0): [b'{"id": 1, "features": {"temp": [1]}}']})
    sink = MemorySink()
    make_service(make_settings(), src, sink).run()
    ((_role, _key, _value, headers),) = sink.sent
    message = dict(headers)["__stream_learner.errors.exception.message"].decode()
    assert "feature 'temp'" in message


# -- flush before commit --------------------------------------------------------------------


class RecordingSink(MemorySink):
    """A MemorySink that can be told to fail its flushes."""

    def __init__(self, fail_flush: bool = False) -> None:
        super().__init__()
        self.fail_flush = fail_flush
        self.flush_calls = 0

    def flush(self) -> None:
        self.flush_calls += 1
        if self.fail_flush:
            raise ConnectionFailed("broker down")
        super().flush()


class RecordingSource(MemorySource):
    """Records, at each commit, the offsets and how much of the sink was durable."""

    def __init__(self, partitions, sink: MemorySink) -> None:
        super().__init__(partitions)
        self.sink = sink
        self.commits: list[tuple[dict, int, int]] = []

    def commit(self, offsets) -> None:
        self.commits.append((dict(offsets), self.sink.flushed, len(self.sink.sent)))
        super().commit(offsets)


def test_offsets_are_committed_only_after_a_flush():
    values = [*phishing(0, 5), b"bad", *phishing(5, 10)]  # 11 records, one dead letter
    sink = RecordingSink()
    src = RecordingSource({(TOPIC, 0): values}, sink)
    make_service(make_settings(service__batch_size=4), src, sink).run()

    assert [c[0] for c in src.commits] == [{(TOPIC, 0): 4}, {(TOPIC, 0): 8}, {(TOPIC, 0): 11}]
    for _offsets, flushed, sent in src.commits:
        assert flushed == sent  # everything sent before the commit was flushed
    assert [sent for _o, _f, sent in src.commits] == [4, 8, 11]
    assert sink.flush_calls == 3


def test_no_commit_when_the_flush_fails():
    sink = RecordingSink(fail_flush=True)
    src = RecordingSource({(TOPIC, 0): phishing(0, 5)}, sink)
    service = make_service(make_settings(), src, sink)
    with pytest.raises(ConnectionFailed):
        service.run()
    assert src.commits == []
    assert src.committed_offsets == {}
    assert len(sink.sent) == 5
    assert service.metrics.is_ready is False
    assert service.metrics.registry.get_sample_value("stream_learner_ready") == 0.0


def test_revoking_a_partition_flushes_commits_and_drops_its_shard():
    sink = RecordingSink()
    src = RecordingSource({(TOPIC, 0): phishing(0, 3), (TOPIC, 1): phishing(3, 6)}, sink)
    service = make_service(make_settings(), src, sink)
    service.start()
    service.process_batch(src.poll(10, 0), 0.0)
    assert src.commits == []  # outputs queued, nothing durable yet
    service.on_revoked([(TOPIC, 1)])
    assert src.commits == [({(TOPIC, 0): 3, (TOPIC, 1): 3}, 6, 6)]
    assert set(service.shards) == {(TOPIC, 0)}


# -- stopping -------------------------------------------------------------------------------


def test_max_events_stops_early():
    src = MemorySource({(TOPIC, 0): phishing(0, 20)})
    sink = MemorySink()
    summary = make_service(
        make_settings(service__batch_size=4, service__max_events=10), src, sink
    ).run()
    assert summary.records == 10
    assert summary.predictions == 10
    assert len(sink.values("predictions")) == 10
    assert src.committed_offsets == {(TOPIC, 0): 10}
    assert not src.exhausted


def test_max_events_counts_records_across_partitions():
    src = MemorySource({(TOPIC, 0): phishing(0, 5), (TOPIC, 1): phishing(5, 10)})
    sink = MemorySink()
    summary = make_service(make_settings(service__max_events=7), src, sink).run()
    assert summary.records == 7
    assert sum(src.committed_offsets.values()) == 7


class StoppingSink(MemorySink):
    """Calls service.stop() from inside its first send."""

    service: Service | None = None

    def send(self, role, key, value, headers=()) -> None:
        super().send(role, key, value, headers)
        if self.service is not None:
            self.service.stop()


def test_stop_from_inside_send_ends_after_the_batch_and_still_commits():
    sink = StoppingSink()
    src = RecordingSource({(TOPIC, 0): phishing(0, 20)}, sink)
    service = make_service(make_settings(service__batch_size=5), src, sink)
    sink.service = service
    summary = service.run()

    assert summary.records == 5  # the whole first batch, nothing after
    assert summary.predictions == 5
    assert len(sink.values("predictions")) == 5
    assert src.commits == [({(TOPIC, 0): 5}, 5, 5)]
    assert sink.flushed == 5
    assert not src.exhausted


# -- summary --------------------------------------------------------------------------------


def test_summary_counts_add_up():
    unlabelled = [b'{"id": 100, "features": {"x": 1.0}}', b'{"id": 101, "features": {"x": 2.0}}']
    p0 = [*phishing(0, 10), b"bad", b'{"id": 3, "label": true}', *unlabelled]
    p1 = [*phishing(10, 15), None, b'{"id": 7}']
    src = MemorySource({(TOPIC, 0): p0, (TOPIC, 1): p1})
    sink = MemorySink()
    # the label record's (key "", id 3) is never seen: it waits at most one later event
    settings = make_settings(service__batch_size=3, labels__early_max_age_events=1)
    service = make_service(settings, src, sink)
    summary = service.run()

    reg = service.metrics.registry
    by_outcome = {
        o: sample(reg, "stream_learner_records_total", outcome=o)
        for o in ("prediction", "label", "dead_letter")
    }
    assert summary.records == len(p0) + len(p1) == 21
    assert summary.predictions == 10 + 2 + 5 == len(sink.values("predictions"))
    # the label record for an unknown id is accepted, waits, and expires to the learn
    # dead letters once its partition has scored two more events
    assert summary.label_records == 1
    assert summary.dead_letters == 3 == len(sink.values("dead_letters"))
    assert summary.labels_expired == 1 == summary.learn_dead_letters
    assert sink.decoded("learn_dead_letters") == [{"id": 3, "key": "", "ts": 0.0, "label": True}]
    assert by_outcome == {"prediction": 17.0, "label": 1.0, "dead_letter": 3.0}
    assert summary.records == summary.predictions + summary.label_records + summary.dead_letters
    assert (
        summary.input_dead_letters + summary.learn_dead_letters
        == summary.dead_letters + summary.inline_labels_rejected + summary.labels_expired
    )
    assert summary.labels == 15  # labelled events learned (unlabelled ones are not)
    assert sample(reg, "stream_learner_labels_learned_total") == 15
    assert sum(sh.learner.n_learned for sh in service.shards.values()) == 15
    assert "21 records" in summary.render()
    assert "3 dead letters" in summary.render()


def test_empty_input_runs_and_commits_nothing():
    src = MemorySource({(TOPIC, 0): []})
    sink = MemorySink()
    summary = make_service(make_settings(), src, sink).run()
    assert summary.records == 0
    assert src.committed_offsets == {}
    assert sink.sent == []
    assert summary.metrics == {f"{TOPIC}[0]": 0.0}


# -- inline labels off ----------------------------------------------------------------------


def test_inline_labels_off_means_events_are_not_learned():
    src = MemorySource({(TOPIC, 0): phishing(0, 10)})
    sink = MemorySink()
    service = make_service(make_settings(labels__inline=False), src, sink)
    summary = service.run()
    assert summary.predictions == 10
    assert summary.labels == 0
    assert service.shards[(TOPIC, 0)].learner.n_learned == 0
    # such events wait for a label record like any other
    assert len(service.shards[(TOPIC, 0)].learner.book.pending) == 10


def test_file_source_blank_lines_do_not_end_the_input(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(
        b'{"id": 1, "features": {"x": 1.0}, "label": true}\n'
        b"\n"
        b'{"id": 2, "features": {"x": 2.0}, "label": false}\n'
    )
    src = FileSource(str(path))
    sink = MemorySink()
    summary = make_service(make_settings(service__batch_size=1), src, sink).run()
    src.close()
    assert summary.predictions == 2
    assert [p["source"]["offset"] for p in sink.decoded("predictions")] == [0, 2]


# -- rebalances -----------------------------------------------------------------------------


def _batch(part: int, start: int, values: list[bytes]) -> list[Record]:
    return [Record(v, None, 0, Origin(TOPIC, part, start + i)) for i, v in enumerate(values)]


def test_partition_that_comes_straight_back_keeps_its_model():
    src = MemorySource({(TOPIC, 0): []})
    service = make_service(make_settings(), src, MemorySink())
    service.on_assigned([(TOPIC, 0)])
    service.restore()
    service.process_batch(_batch(0, 0, phishing(0, 5)), 0.0)
    before = service.shards[(TOPIC, 0)].learner
    service.on_revoked([(TOPIC, 0)])  # commits offset 5
    assert (TOPIC, 0) not in service.shards
    assert src.committed_offsets == {(TOPIC, 0): 5}
    service.on_assigned([(TOPIC, 0)])
    service.restore()
    assert service.shards[(TOPIC, 0)].learner is before
    service.process_batch(_batch(0, 5, phishing(5, 8)), 0.0)
    assert before.n_learned == 8


def test_partition_processed_elsewhere_meanwhile_starts_a_fresh_model_without_checkpoints():
    src = MemorySource({(TOPIC, 0): []})
    sink = MemorySink()
    service = make_service(make_settings(), src, sink)
    service.on_assigned([(TOPIC, 0)])
    service.restore()
    service.process_batch(_batch(0, 0, phishing(0, 5)), 0.0)
    before = service.shards[(TOPIC, 0)].learner
    service.on_revoked([(TOPIC, 0)])
    src.committed_offsets[(TOPIC, 0)] = 20  # another member processed offsets 5..19
    service.on_assigned([(TOPIC, 0)])
    service.restore()
    after = service.shards[(TOPIC, 0)].learner
    assert after is not before
    service.process_batch(_batch(0, 20, phishing(20, 23)), 0.0)
    assert after.n_learned == 3
    assert sink.decoded("predictions")[-3]["model"]["n_learned"] == 0
