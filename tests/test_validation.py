"""Validation of events and labels: every rejection has a stable reason code."""

from __future__ import annotations

import orjson
import pytest

from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import INPUT_REASONS, LEARN_REASONS, REASONS, Codec, Event, Label, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import LimitSettings, ModelSettings, SchemaSettings, Settings
from stream_learner.testing import MemorySink, MemorySource

ORIGIN = Origin("events", 0, 0)
LIMITS = LimitSettings(max_record_bytes=2048, max_features=5, max_id_length=16)


def codec(task: str = "regression", limits: LimitSettings = LIMITS, **schema: str) -> Codec:
    return Codec(SchemaSettings(**schema), limits, task)


def decode(raw: bytes | None, task: str = "regression", key: bytes | None = None) -> Event | Label:
    return codec(task).decode(raw, key, 5000, ORIGIN)


def reason_of(raw: bytes | None, task: str = "regression", key: bytes | None = None) -> str:
    with pytest.raises(InvalidRecord) as info:
        decode(raw, task, key)
    return info.value.reason


# One example per input reason the codec itself detects (model_rejected is the learner's).
REJECTED = [
    (None, "empty"),
    (b'{"id": 1, "features": {"x": "' + b"a" * 3000 + b'"}}', "too_large"),
    (b"not json", "not_json"),
    (b"\xff\xfe{}", "not_json"),
    (b'{"id": 1, "features": {"x": 1}', "not_json"),
    (b"NaN", "not_json"),
    (b'{"id": "\\ud800", "features": {}}', "not_json"),
    (b"[1, 2]", "not_object"),
    (b'"a string"', "not_object"),
    (b"null", "not_object"),
    (b"42", "not_object"),
    (b'{"features": {"x": 1}}', "missing_id"),
    (b'{"id": null, "features": {"x": 1}}', "missing_id"),
    (b'{"id": true, "features": {"x": 1}}', "invalid_id"),
    (b'{"id": 1.5, "features": {"x": 1}}', "invalid_id"),
    (b'{"id": [1], "features": {"x": 1}}', "invalid_id"),
    (b'{"id": "", "features": {"x": 1}}', "invalid_id"),
    (b'{"id": "' + b"i" * 17 + b'", "features": {"x": 1}}', "invalid_id"),
    (b'{"id": 18446744073709551615, "features": {"x": 1}}', "invalid_id"),
    (b'{"id": 123456789012345678901234567890, "features": {"x": 1}}', "invalid_id"),
    (b'{"id": 1, "key": {"a": 1}, "features": {"x": 1}}', "invalid_key"),
    (b'{"id": 1, "key": true, "features": {"x": 1}}', "invalid_key"),
    (b'{"id": 1, "key": "' + b"k" * 17 + b'", "features": {"x": 1}}', "invalid_key"),
    (b'{"id": 1, "ts": "yesterday", "features": {"x": 1}}', "invalid_ts"),
    (b'{"id": 1, "ts": true, "features": {"x": 1}}', "invalid_ts"),
    (b'{"id": 1, "ts": [1], "features": {"x": 1}}', "invalid_ts"),
    (b'{"id": 1, "features": [1, 2]}', "features_not_object"),
    (b'{"id": 1, "features": "x=1"}', "features_not_object"),
    (b'{"id": 1, "features": 3}', "features_not_object"),
    (b'{"id": 1, "features": {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}}',
     "too_many_features"),
    (b'{"id": 1, "features": {"x": [1, 2]}}', "feature_not_scalar"),
    (b'{"id": 1, "features": {"x": {"nested": 1}}}', "feature_not_scalar"),
    (b'{"id": 1, "features": {"x": 1e999}}', "non_finite"),
    (b'{"id": 1, "features": {"x": -1e999}}', "non_finite"),
    (b'{"id": 1, "features": {"x": 1}, "label": 1e999}', "non_finite"),
    (b'{"id": 1}', "no_features"),
    (b'{"id": 1, "label": null}', "no_features"),
]


@pytest.mark.parametrize(("raw", "reason"), REJECTED)
def test_each_bad_record_has_its_reason(raw: bytes | None, reason: str) -> None:
    assert reason_of(raw) == reason


def test_reason_codes_are_known_and_split_by_output() -> None:
    after_decoding = {"model_rejected", "encode_failed", "unexpected_error", "stopped_worker"}
    assert {reason for _raw, reason in REJECTED} == set(INPUT_REASONS) - after_decoding
    assert set(INPUT_REASONS).isdisjoint(LEARN_REASONS)
    assert REASONS == INPUT_REASONS + LEARN_REASONS


def test_record_key_that_is_not_utf8_is_invalid_key_only_when_used() -> None:
    assert reason_of(b'{"id": 1, "features": {"x": 1}}', key=b"\xff\xfe") == "invalid_key"
    event = decode(b'{"id": 1, "key": "k", "features": {"x": 1}}', key=b"\xff\xfe")
    assert event.key == "k"


def test_record_key_and_time_are_defaults() -> None:
    event = decode(b'{"id": 1, "features": {"x": 1}}', key=b"pump-7")
    assert isinstance(event, Event)
    assert (event.key, event.ts) == ("pump-7", 5.0)
    assert decode(b'{"id": 1, "key": 42, "features": {}}').key == "42"


def test_huge_integers_in_features_and_labels() -> None:
    # orjson keeps integers up to 2**64 - 1 exact and reads larger ones as floats.
    event = decode(b'{"id": 1, "features": {"a": 18446744073709551615, "b": 1e150}, '
                   b'"label": 123456789012345678901234567890}')
    assert isinstance(event, Event) and event.has_label
    assert event.features == {"a": 18446744073709551615, "b": 1e150}
    assert event.label == 1.2345678901234568e29
    # a larger double is finite, but its square is not: one broke a model's sums for good
    assert reason_of(b'{"id": 1, "features": {"a": 1, "b": 1e300}}') == "non_finite"
    assert reason_of(b'{"id": 1, "features": {"a": 1, "b": -1e151}}') == "non_finite"
    assert decode(b'{"id": -9223372036854775808, "features": {}}').id == -(2**63)
    assert decode(b'{"id": 9223372036854775807, "features": {}}').id == 2**63 - 1
    assert reason_of(b'{"id": 9223372036854775808, "features": {}}') == "invalid_id"


def test_tiny_numbers_are_zero_not_errors() -> None:
    event = decode(b'{"id": 1, "features": {"x": 1e-999}}')
    assert event.features == {"x": 0.0}


def test_feature_values_of_every_scalar_kind_are_accepted() -> None:
    event = decode(b'{"id": 1, "features": {"n": 1, "f": 0.5, "s": "auto", "b": true, "z": null}}')
    assert event.features == {"n": 1, "f": 0.5, "s": "auto", "b": True, "z": None}


def test_limits_are_configurable() -> None:
    raw = b'{"id": 1, "features": {"a": 1, "b": 2, "c": 3}}'
    strict = Codec(SchemaSettings(), LimitSettings(max_features=2), "regression")
    with pytest.raises(InvalidRecord, match="max_features=2"):
        strict.decode(raw, None, 0, ORIGIN)
    small = Codec(SchemaSettings(), LimitSettings(max_record_bytes=64), "regression")
    with pytest.raises(InvalidRecord, match="max_record_bytes=64"):
        small.decode(raw + b" " * 64, None, 0, ORIGIN)
    assert Codec(SchemaSettings(), LimitSettings(), "regression").decode(raw, None, 0, ORIGIN)


def test_flat_schema_counts_every_other_field_as_a_feature() -> None:
    flat = codec(key="sensor_id", label="target", features="")
    event = flat.decode(b'{"id": 5, "sensor_id": "p-7", "temp": 70.1, "target": 2.5}', None, 0,
                        ORIGIN)
    assert isinstance(event, Event)
    assert (event.key, event.features, event.label) == ("p-7", {"temp": 70.1}, 2.5)
    label = flat.decode(b'{"id": 5, "sensor_id": "p-7", "target": 2.5}', None, 0, ORIGIN)
    assert isinstance(label, Label)
    with pytest.raises(InvalidRecord) as info:
        flat.decode(b'{"id": 5, "temp": [1]}', None, 0, ORIGIN)
    assert info.value.reason == "feature_not_scalar"


# -- labels -------------------------------------------------------------------------------

WRONG_LABELS = {
    "classification": [b"1.5", b"[1]", b'{"a": 1}'],
    "regression": [b'"high"', b"true", b"[1]", b'{"a": 1}'],
}
GOOD_LABELS = {
    "classification": [b'"spam"', b"1", b"true", b"-3"],
    "regression": [b"1.5", b"-2", b"0", b"18446744073709551615"],
}


@pytest.mark.parametrize("task", sorted(WRONG_LABELS))
def test_wrong_label_type_on_a_label_record_is_invalid_label(task: str) -> None:
    for label in WRONG_LABELS[task]:
        with pytest.raises(InvalidLabel) as info:
            decode(b'{"id": 1, "label": ' + label + b"}", task)
        assert info.value.reason == "invalid_label"
        assert "label must be" in info.value.message


@pytest.mark.parametrize("task", sorted(WRONG_LABELS))
def test_wrong_inline_label_keeps_the_event_and_carries_the_error(task: str) -> None:
    for label in WRONG_LABELS[task]:
        event = decode(b'{"id": 1, "features": {"x": 1}, "label": ' + label + b"}", task)
        assert isinstance(event, Event)
        assert not event.has_label
        assert event.label_error is not None and event.label_error.reason == "invalid_label"


@pytest.mark.parametrize("task", sorted(GOOD_LABELS))
def test_good_labels_are_accepted(task: str) -> None:
    for label in GOOD_LABELS[task]:
        event = decode(b'{"id": 1, "features": {"x": 1}, "label": ' + label + b"}", task)
        assert isinstance(event, Event) and event.has_label and event.label_error is None
        assert event.label == orjson.loads(label)
        assert isinstance(decode(b'{"id": 1, "label": ' + label + b"}", task), Label)


def test_error_messages_do_not_echo_large_producer_data() -> None:
    huge = b'"' + b"z" * 1500 + b'"'
    with pytest.raises(InvalidLabel) as info:
        decode(b'{"id": 1, "label": ' + huge + b"}")
    assert len(info.value.message) < 200


def test_label_for_an_unknown_id_is_invalid_label_once_it_expires() -> None:
    label = b'{"id": "never-seen", "key": "k", "label": 2.0}'
    unlabelled = [b'{"id": %d, "key": "k", "features": {"x": 1.0}}' % i for i in range(2)]
    settings = Settings.model_validate({"labels": {"early_max_age_events": 1}})
    source, sink = MemorySource({("events", 0): [label, *unlabelled]}), MemorySink()
    service = Service(settings, ModelSpec.from_settings(settings.model), source, sink)
    summary = service.run()
    # accepted when it came (it may precede its event), refused when it expired unjoined
    assert isinstance(decode(label), Label)
    assert summary.label_records == 1 and summary.labels_expired == 1
    [(role, key, _value, headers)] = [sent for sent in sink.sent if sent[0] != "predictions"]
    h = {name: value.decode() for name, value in headers}
    assert (role, key) == ("learn_dead_letters", b"k")
    assert h["__stream_learner.errors.reason"] == "unknown_id" and "unknown_id" in LEARN_REASONS
    assert h["__stream_learner.errors.exception.class.name"] == "InvalidLabel"
    assert h["__stream_learner.errors.offset"] == "0"
    message = h["__stream_learner.errors.exception.message"]
    assert "'never-seen'" in message and "'k'" in message
    assert service.shards[("events", 0)].learner.n_learned == 0


# -- the model's own errors -----------------------------------------------------------


def _trained_learner() -> Learner:
    learner = Learner(ModelSpec.from_settings(ModelSettings()))
    for i, x in enumerate([1.0, 2.0, 4.0]):
        learner.process(Event(i, "k", 0.0, {"x": x}, x * 2, True, ORIGIN))
    return learner


def test_features_the_model_cannot_score_are_model_rejected_and_change_nothing() -> None:
    learner = _trained_learner()
    before = (learner.n_predicted, learner.n_learned, learner.metric_value)
    with pytest.raises(InvalidRecord) as info:
        learner.process(Event("bad", "k", 0.0, {"x": "four"}, 1.0, True, ORIGIN))
    assert info.value.reason == "model_rejected"
    assert not isinstance(info.value, InvalidLabel)
    assert (learner.n_predicted, learner.n_learned, learner.metric_value) == before


def test_a_label_the_model_cannot_learn_keeps_the_prediction() -> None:
    learner = _trained_learner()
    before = (learner.n_learned, learner.metric_value)
    outcome = learner.process(Event("new", "k", 0.0, {"mode": "auto"}, 1.0, True, ORIGIN))
    prediction = outcome[0]
    assert prediction is not None
    assert prediction.label_error is not None and prediction.label_error.reason == "learn_failed"
    assert (learner.n_learned, learner.metric_value) == before
    assert learner.n_predicted == 4
    # the label was not applied: it neither counts as joined nor covers the prediction
    assert learner.book.stats.labelled == learner.book.stats.inline == 3
    assert outcome[1] == ()


def test_inline_label_error_is_passed_to_the_prediction() -> None:
    learner = _trained_learner()
    event = decode(b'{"id": 9, "features": {"x": 1}, "label": "high"}')
    prediction = learner.process(event)[0]
    assert prediction is not None and prediction.label_error is event.label_error
    assert learner.n_learned == 3
