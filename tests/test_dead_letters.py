"""Dead letters: routing by output, headers, accounting, metrics, flush before commit."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson
import pytest

from stream_learner.errors import ConnectionFailed
from stream_learner.events import Origin
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.service import Service, Summary
from stream_learner.settings import Settings
from stream_learner.sinks import TRUNCATED_HEADER, FileSink, Header
from stream_learner.sources import Record, TopicPartition
from stream_learner.testing import MemorySink, MemorySource

GOOD = b'{"id": 1, "key": "a", "features": {"x": 1.0}, "label": 2.0}'
BAD_INLINE = b'{"id": 2, "key": "a", "features": {"x": 2.0}, "label": "high"}'
UNKNOWN = b'{"id": 99, "key": "a", "label": 3.0}'
#: UNKNOWN as its dead letter holds it once it expired unjoined (the original bytes are gone)
UNKNOWN_EXPIRED = b'{"id":99,"key":"a","ts":0.0,"label":3.0}'
GOOD_2 = b'{"id": 3, "key": "a", "features": {"x": 3.0}, "label": 4.0}'
WRONG_LABEL = b'{"id": 98, "key": "a", "label": [3]}'
NOT_JSON = b"{oops"
NO_ID = b'{"features": {"x": 1.0}}'


def run(
    partitions: Mapping[TopicPartition, Sequence[bytes | Record]],
    settings: Settings | None = None,
    sink: MemorySink | None = None,
) -> tuple[Summary, MemorySink, MemorySource, Metrics]:
    settings = settings or Settings()
    source = MemorySource(partitions)
    sink = sink or MemorySink()
    metrics = Metrics()
    service = Service(
        settings, ModelSpec.from_settings(settings.model), source, sink, metrics,
        wall_clock=lambda: 1700000000.5,
    )
    return service.run(), sink, source, metrics


def headers_of(sink: MemorySink, role: str) -> list[dict[str, str]]:
    return [
        {k: v.decode() for k, v in headers} for r, _k, _v, headers in sink.sent if r == role
    ]


def expiring() -> Settings:
    """Settings where a label waits for its event at most one later event of its partition."""
    return Settings.model_validate({"labels": {"early_max_age_events": 1}})


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_each_error_goes_to_its_output_with_its_headers() -> None:
    # UNKNOWN waits for its event; the events at offsets 5 and 6 make it expire
    summary, sink, source, _m = run(
        {("events", 3): [GOOD, NOT_JSON, UNKNOWN, NO_ID, WRONG_LABEL, BAD_INLINE, GOOD_2]},
        expiring(),
    )
    assert sink.values("dead_letters") == [NOT_JSON, NO_ID]
    assert sink.values("learn_dead_letters") == [WRONG_LABEL, BAD_INLINE, UNKNOWN_EXPIRED]
    assert summary.labels_expired == 1 and summary.label_records == 1
    inputs = headers_of(sink, "dead_letters")
    assert [h["__stream_learner.errors.reason"] for h in inputs] == ["not_json", "missing_id"]
    assert [h["__stream_learner.errors.offset"] for h in inputs] == ["1", "3"]
    assert {h["__stream_learner.errors.exception.class.name"] for h in inputs} == {"InvalidRecord"}
    learn = headers_of(sink, "learn_dead_letters")
    assert [h["__stream_learner.errors.reason"] for h in learn] == [
        "invalid_label", "invalid_label", "unknown_id"
    ]
    # the expired label's headers point at the label record itself
    assert [h["__stream_learner.errors.offset"] for h in learn] == ["4", "5", "2"]
    assert "id 99 and key 'a'" in learn[2]["__stream_learner.errors.exception.message"]
    for h in inputs + learn:
        assert h["__stream_learner.errors.topic"] == "events"
        assert h["__stream_learner.errors.partition"] == "3"
        assert h["__stream_learner.errors.timestamp"] == "1700000000.500"
        assert h["__stream_learner.errors.schema.version"] == "1"
        assert h["__stream_learner.errors.exception.message"]
    assert {h["__stream_learner.errors.exception.class.name"] for h in learn} == {"InvalidLabel"}
    assert source.committed_offsets == {("events", 3): 7}


def test_event_with_a_bad_inline_label_is_predicted_and_its_label_dead_lettered() -> None:
    summary, sink, _source, metrics = run({("events", 0): [GOOD, BAD_INLINE]})
    assert [p["id"] for p in sink.decoded("predictions")] == [1, 2]
    assert summary.predictions == 2 and summary.labels == 1
    assert summary.dead_letters == 0 and summary.inline_labels_rejected == 1
    assert summary.learn_dead_letters == 1
    assert sample(metrics, "stream_learner_inline_labels_rejected_total") == 1
    assert sample(metrics, "stream_learner_records_total", outcome="prediction") == 2
    assert sample(
        metrics, "stream_learner_dead_letters_total",
        output="learn_dead_letters", reason="invalid_label",
    ) == 1


def test_accounting_adds_up_exactly() -> None:
    # UNKNOWN (offset 3) expires after the events at offsets 6 and 8
    p0 = [GOOD, NOT_JSON, BAD_INLINE, UNKNOWN, None, NO_ID, GOOD, WRONG_LABEL, GOOD_2]
    p1 = [GOOD] * 5 + [b"[]", BAD_INLINE, b'{"id": 1, "features": {"x": "a"}, "label": 1.0}']
    summary, sink, source, metrics = run({("events", 0): p0, ("events", 1): p1}, expiring())
    assert summary.records == len(p0) + len(p1) == 17
    assert summary.records == summary.predictions + summary.label_records + summary.dead_letters
    assert (
        summary.input_dead_letters + summary.learn_dead_letters
        == summary.dead_letters + summary.inline_labels_rejected + summary.labels_expired
    )
    assert summary.input_dead_letters == len(sink.values("dead_letters")) == 4
    assert summary.learn_dead_letters == len(sink.values("learn_dead_letters")) == 5
    assert summary.predictions == len(sink.values("predictions")) == 11
    assert summary.inline_labels_rejected == 3  # two wrong types, one the model cannot learn
    assert summary.label_records == 1 and summary.labels_expired == 1  # UNKNOWN
    assert summary.dead_letters == 5  # four input dead letters and WRONG_LABEL
    outcomes = {
        o: sample(metrics, "stream_learner_records_total", outcome=o)
        for o in ("prediction", "label", "dead_letter")
    }
    assert outcomes == {"prediction": 11, "label": 1, "dead_letter": 5}
    dead = sum(
        s.value for metric in metrics.registry.collect()
        if metric.name == "stream_learner_dead_letters" for s in metric.samples
        if s.name.endswith("_total")
    )
    assert dead == (
        outcomes["dead_letter"] + summary.inline_labels_rejected + summary.labels_expired
    )
    assert sample(metrics, "stream_learner_labels_expired_total", buffer="early") == 1
    assert source.committed_offsets == {("events", 0): len(p0), ("events", 1): len(p1)}
    assert summary.to_dict()["inline_labels_rejected"] == 3
    assert summary.to_dict()["labels_expired"] == 1


def test_records_of_a_revoked_partition_are_not_counted_or_committed() -> None:
    settings = Settings()
    source = MemorySource({("events", 0): [GOOD]})
    sink = MemorySink()
    service = Service(settings, ModelSpec.from_settings(settings.model), source, sink)
    service.on_assigned([("events", 0)])
    service.restore()
    stray = Record(GOOD, None, 0, Origin("events", 7, 0))
    service.process_batch([stray], 0.0)
    assert service.summary.records == 0 and sink.sent == []
    service.process_batch([Record(GOOD, None, 0, Origin("events", 0, 0))], 0.0)  # owned
    assert service.summary.records == 1 and len(sink.sent) == 1


def test_huge_dead_letter_values_are_cut_and_say_so() -> None:
    settings = Settings.model_validate(
        {"limits": {"max_record_bytes": 100, "max_dead_letter_bytes": 64}}
    )
    huge = b'{"id": 1, "features": {"x": "' + b"y" * 200 + b'"}}'
    _summary, sink, _source, _m = run({("events", 0): [huge]}, settings)
    [value] = sink.values("dead_letters")
    assert value == huge[:64]
    [headers] = headers_of(sink, "dead_letters")
    assert headers[TRUNCATED_HEADER] == str(len(huge))
    assert headers["__stream_learner.errors.reason"] == "too_large"


def test_tombstone_becomes_an_empty_dead_letter_with_its_key() -> None:
    rec = Record(None, b"pump-7", 0, Origin("events", 0, 0))
    _summary, sink, _source, _m = run({("events", 0): [rec]})
    [(role, key, value, _headers)] = sink.sent
    assert (role, key, value) == ("dead_letters", b"pump-7", b"")


# -- durability order -------------------------------------------------------------------


class JournalSink(MemorySink):
    """A sink that writes what happens into a journal shared with the source."""

    def __init__(self, journal: list[str], fail: bool = False) -> None:
        super().__init__()
        self.journal = journal
        self.fail = fail

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        super().send(role, key, value, headers)
        self.journal.append(f"send {role}")

    def flush(self) -> None:
        if self.fail:
            raise ConnectionFailed("broker gone")
        super().flush()
        self.journal.append("flush")


class JournalSource(MemorySource):
    def __init__(self, journal: list[str], records: list[bytes]) -> None:
        super().__init__({("events", 0): records})
        self.journal = journal

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        super().commit(offsets)
        self.journal.append(f"commit {dict(offsets)}")


def test_dead_letters_are_flushed_before_the_offsets_they_cover_are_committed() -> None:
    journal: list[str] = []
    # each UNKNOWN expires in the batch of the second event after it (offsets 4 and 8)
    records = [NOT_JSON, UNKNOWN, GOOD, NO_ID, BAD_INLINE, NOT_JSON, UNKNOWN, GOOD, GOOD_2]
    settings = Settings.model_validate(
        {"service": {"batch_size": 3}, "labels": {"early_max_age_events": 1}}
    )
    sink = JournalSink(journal)
    source = JournalSource(journal, records)
    Service(settings, ModelSpec.from_settings(settings.model), source, sink).run()
    commits = [i for i, line in enumerate(journal) if line.startswith("commit")]
    assert len(commits) == 3
    for i in commits:
        sends_before = [j for j, line in enumerate(journal[:i]) if line.startswith("send")]
        assert journal[i - 1] == "flush"
        assert all(j < i - 1 for j in sends_before)  # every record sent so far was flushed
    assert journal.count("send dead_letters") == 3
    assert journal.count("send learn_dead_letters") == 3
    assert source.committed_offsets == {("events", 0): len(records)}


def test_nothing_is_committed_when_the_flush_fails() -> None:
    journal: list[str] = []
    settings = Settings()
    source = JournalSource(journal, [NOT_JSON, GOOD])
    service = Service(
        settings, ModelSpec.from_settings(settings.model), source, JournalSink(journal, fail=True)
    )
    with pytest.raises(ConnectionFailed):
        service.run()
    assert source.committed_offsets == {}
    assert not any(line.startswith("commit") for line in journal)


# -- the local (file) form --------------------------------------------------------------


def test_file_sink_writes_each_dead_letter_output_to_its_file(tmp_path: Path) -> None:
    targets = {
        "predictions": str(tmp_path / "p.jsonl"),
        "dead_letters": str(tmp_path / "dlq.jsonl"),
        "learn_dead_letters": str(tmp_path / "learn.jsonl"),
    }
    sink = FileSink(targets)
    settings = expiring()
    raw_bad = Record(b"\xff\x00bin", b"\xfe", 0, Origin("in.jsonl", 0, 1))
    source = MemorySource({("in.jsonl", 0): [
        Record(GOOD, None, 0, Origin("in.jsonl", 0, 0)), raw_bad,
        Record(UNKNOWN, None, 0, Origin("in.jsonl", 0, 2)),
        # two more events: UNKNOWN expires unjoined
        Record(GOOD_2, None, 0, Origin("in.jsonl", 0, 3)),
        Record(GOOD_2, None, 0, Origin("in.jsonl", 0, 4)),
    ]})
    Service(settings, ModelSpec.from_settings(settings.model), source, sink).run()
    sink.close()
    [dlq] = [orjson.loads(line) for line in Path(targets["dead_letters"]).read_bytes().splitlines()]
    assert base64.b64decode(dlq["value_base64"]) == b"\xff\x00bin"
    assert dlq["value"] is None and dlq["schema_version"] == 1
    assert dlq["headers"]["__stream_learner.errors.reason"] == "not_json"
    learn_lines = Path(targets["learn_dead_letters"]).read_bytes().splitlines()
    [learn] = [orjson.loads(line) for line in learn_lines]
    assert learn["value"] == UNKNOWN_EXPIRED.decode()
    assert base64.b64decode(learn["value_base64"]) == UNKNOWN_EXPIRED
    assert learn["headers"]["__stream_learner.errors.reason"] == "unknown_id"
    assert learn["headers"]["__stream_learner.errors.topic"] == "in.jsonl"
    assert learn["headers"]["__stream_learner.errors.offset"] == "2"
    assert len(Path(targets["predictions"]).read_bytes().splitlines()) == 3
