"""The wire contracts: decoding events / labels, every rejection reason, prediction encoding."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest

from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import (
    Codec,
    Event,
    Label,
    ModelInfo,
    Origin,
    Prediction,
    encode_prediction,
    parse_ts,
)
from stream_learner.settings import LimitSettings, SchemaSettings

ORIGIN = Origin("events", 3, 41)
FLAT = SchemaSettings(features="", key="sensor_id", label="target")


def codec(task: str = "classification", schema: SchemaSettings | None = None, **limits) -> Codec:
    return Codec(schema or SchemaSettings(), LimitSettings(**limits), task=task)


def decode(
    obj_or_bytes,
    *,
    task: str = "classification",
    schema: SchemaSettings | None = None,
    record_key: bytes | None = None,
    record_ts_ms: int = 0,
    **limits,
):
    value = obj_or_bytes if isinstance(obj_or_bytes, bytes | None) else orjson.dumps(obj_or_bytes)
    return codec(task, schema, **limits).decode(value, record_key, record_ts_ms, ORIGIN)


# -- valid records ------------------------------------------------------------------------


def test_full_event():
    ev = decode(
        {
            "id": "r-1042",
            "key": "pump-7",
            "ts": 1764115200.25,
            "features": {"temp": 71.2, "vibration": 0.013, "mode": "auto", "on": True, "n": None},
            "label": 1,
        },
        record_key=b"ignored-record-key",
        record_ts_ms=5,
    )
    assert ev == Event(
        id="r-1042",
        key="pump-7",
        ts=1764115200.25,
        features={"temp": 71.2, "vibration": 0.013, "mode": "auto", "on": True, "n": None},
        label=1,
        has_label=True,
        origin=ORIGIN,
    )


def test_event_without_label():
    ev = decode({"id": 7, "features": {"x": 1.0}}, task="regression")
    assert isinstance(ev, Event)
    assert ev.has_label is False
    assert ev.label is None


def test_null_label_means_no_label():
    ev = decode({"id": 7, "features": {"x": 1.0}, "label": None})
    assert isinstance(ev, Event)
    assert ev.has_label is False


def test_falsy_labels_are_labels():
    assert decode({"id": 1, "features": {"x": 1}, "label": False}).has_label is True
    assert decode({"id": 1, "features": {"x": 1}, "label": 0}).has_label is True
    reg = decode({"id": 1, "features": {"x": 1}, "label": 0.0}, task="regression")
    assert reg.has_label is True
    assert reg.label == 0.0


def test_zero_is_a_valid_id():
    assert decode({"id": 0, "features": {"x": 1}}).id == 0


def test_empty_features_object_is_an_event():
    ev = decode({"id": 1, "features": {}})
    assert isinstance(ev, Event)
    assert ev.features == {}


def test_flat_record_every_other_field_is_a_feature():
    ev = decode(
        {"id": "r1", "sensor_id": "s-9", "ts": 12.0, "temp": 20.5, "mode": "eco", "target": 3.5},
        task="regression",
        schema=FLAT,
    )
    assert isinstance(ev, Event)
    assert ev.key == "s-9"
    assert ev.ts == 12.0
    assert ev.features == {"temp": 20.5, "mode": "eco"}
    assert ev.label == 3.5
    assert ev.has_label is True


def test_flat_record_key_field_is_not_the_default_key_field():
    # With key = "sensor_id", a field named "key" is an ordinary feature.
    ev = decode({"id": 1, "key": "k", "x": 1}, schema=FLAT, record_key=b"rk")
    assert ev.key == "rk"
    assert ev.features == {"key": "k", "x": 1}


def test_label_only_record_returns_label():
    item = decode({"id": "r-1", "key": "pump-1", "ts": 3.0, "label": "spam"})
    assert item == Label(id="r-1", key="pump-1", ts=3.0, label="spam", origin=ORIGIN)


def test_label_only_flat_record_returns_label():
    item = decode({"id": 5, "sensor_id": "s", "target": 2.5}, task="regression", schema=FLAT)
    assert isinstance(item, Label)
    assert item.label == 2.5
    assert item.key == "s"


def test_key_defaults_to_record_key_bytes():
    ev = decode({"id": 1, "features": {"x": 1}}, record_key=b"pump-\xc3\xa9")
    assert ev.key == "pump-é"


def test_null_key_field_falls_back_to_record_key():
    ev = decode({"id": 1, "key": None, "features": {"x": 1}}, record_key=b"rk")
    assert ev.key == "rk"


def test_key_is_empty_without_field_or_record_key():
    assert decode({"id": 1, "features": {"x": 1}}).key == ""


def test_integer_key_becomes_a_string():
    assert decode({"id": 1, "key": 42, "features": {"x": 1}}).key == "42"


def test_ts_defaults_to_record_timestamp_in_seconds():
    ev = decode({"id": 1, "features": {"x": 1}}, record_ts_ms=1764115200250)
    assert ev.ts == 1764115200.25
    assert isinstance(ev.ts, float)


def test_integer_ts_becomes_float():
    ev = decode({"id": 1, "ts": 10, "features": {"x": 1}})
    assert ev.ts == 10.0
    assert isinstance(ev.ts, float)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T00:00:00+00:00", 1767225600.0),
        ("2026-01-01T02:00:00+02:00", 1767225600.0),
        ("2026-01-01T00:00:00.500Z", 1767225600.5),
    ],
)
def test_iso_8601_ts(text, expected):
    ev = decode({"id": 1, "ts": text, "features": {"x": 1}}, record_ts_ms=99_000)
    assert ev.ts == expected
    assert parse_ts(text) == expected


def test_parse_ts_refuses_booleans_and_non_finite():
    with pytest.raises(ValueError):
        parse_ts(True)
    with pytest.raises(ValueError):
        parse_ts(float("inf"))
    with pytest.raises(ValueError):
        parse_ts([1])


@pytest.fixture
def host_timezone():
    """Set the process time zone (TZ + tzset), restoring it afterwards."""
    with pytest.MonkeyPatch.context() as mp:

        def use(name: str) -> None:
            mp.setenv("TZ", name)
            time.tzset()

        yield use
    time.tzset()


def _ts_outcome(text: str):
    try:
        return decode({"id": 1, "ts": text, "features": {"x": 1}}).ts
    except InvalidRecord as err:
        return err.reason


def test_naive_iso_ts_does_not_depend_on_host_time_zone(host_timezone):
    host_timezone("UTC")
    in_utc = _ts_outcome("2026-01-01T00:00:00")
    host_timezone("America/New_York")
    in_new_york = _ts_outcome("2026-01-01T00:00:00")
    assert in_utc == in_new_york


# -- every rejection reason ---------------------------------------------------------------

LONG = "x" * 300  # over the default max_id_length of 256

REJECTIONS = [
    # (reason, value, decode kwargs)
    ("empty", None, {}),
    ("too_large", orjson.dumps({"id": 1, "features": {"x": "y" * 100}}), {"max_record_bytes": 64}),
    ("not_json", b"{not json", {}),
    ("not_json", b"", {}),
    ("not_json", b"\xff\xfe{}", {}),
    ("not_json", b'{"id": 1, "features": {"x": 1}} trailing', {}),
    ("not_object", b"[1, 2]", {}),
    ("not_object", b'"a string"', {}),
    ("not_object", b"42", {}),
    ("not_object", b"null", {}),
    ("missing_id", {"features": {"x": 1}}, {}),
    ("missing_id", {"id": None, "features": {"x": 1}}, {}),
    ("invalid_id", {"id": 1.5, "features": {"x": 1}}, {}),
    ("invalid_id", {"id": True, "features": {"x": 1}}, {}),
    ("invalid_id", {"id": "", "features": {"x": 1}}, {}),
    ("invalid_id", {"id": LONG, "features": {"x": 1}}, {}),
    ("invalid_id", {"id": ["a"], "features": {"x": 1}}, {}),
    ("invalid_id", {"id": {"a": 1}, "features": {"x": 1}}, {}),
    ("invalid_key", {"id": 1, "key": True, "features": {"x": 1}}, {}),
    ("invalid_key", {"id": 1, "key": 1.5, "features": {"x": 1}}, {}),
    ("invalid_key", {"id": 1, "key": ["k"], "features": {"x": 1}}, {}),
    ("invalid_key", {"id": 1, "key": LONG, "features": {"x": 1}}, {}),
    ("invalid_key", {"id": 1, "features": {"x": 1}}, {"record_key": b"\xff\xfe"}),
    ("invalid_key", {"id": 1, "features": {"x": 1}}, {"record_key": LONG.encode()}),
    ("invalid_ts", {"id": 1, "ts": "yesterday", "features": {"x": 1}}, {}),
    ("invalid_ts", {"id": 1, "ts": True, "features": {"x": 1}}, {}),
    ("invalid_ts", {"id": 1, "ts": [1], "features": {"x": 1}}, {}),
    ("invalid_ts", {"id": 1, "ts": {"s": 1}, "features": {"x": 1}}, {}),
    # ISO text past the range numbers are held to: it moved the clock as far as a number
    ("invalid_ts", {"id": 1, "ts": "9999-12-31T23:59:59-12:00", "features": {"x": 1}}, {}),
    ("features_not_object", {"id": 1, "features": [1, 2]}, {}),
    ("features_not_object", {"id": 1, "features": "x=1"}, {}),
    ("features_not_object", {"id": 1, "features": 3}, {}),
    ("too_many_features", {"id": 1, "features": {"a": 1, "b": 2, "c": 3}}, {"max_features": 2}),
    (
        "too_many_features",
        {"id": 1, "a": 1, "b": 2, "c": 3},
        {"max_features": 2, "schema": FLAT},
    ),
    ("feature_not_scalar", {"id": 1, "features": {"x": [1.0]}}, {}),
    ("feature_not_scalar", {"id": 1, "features": {"x": {"nested": 1}}}, {}),
    ("feature_not_scalar", {"id": 1, "nested": {"a": 1}}, {"schema": FLAT}),
    # a number that overflows a double (1e999) is reported as non_finite
    ("non_finite", b'{"id": 1, "features": {"x": 1e999}}', {}),
    ("not_json", b'{"id": 1, "features": {"x": NaN}}', {}),
    ("no_features", {"id": 1}, {}),
    ("no_features", {"id": 1, "features": None}, {}),
    ("no_features", {"id": 1, "key": "k", "ts": 1.0, "label": None}, {}),
    ("no_features", {"id": 1, "sensor_id": "s", "ts": 1.0}, {"schema": FLAT}),
    ("invalid_label", {"id": 1, "label": 2.5}, {}),
    ("invalid_label", {"id": 1, "label": "high"}, {"task": "regression"}),
]


@pytest.mark.parametrize(
    ("reason", "value", "kwargs"),
    REJECTIONS,
    ids=[f"{i:02d}-{r[0]}" for i, r in enumerate(REJECTIONS)],
)
def test_rejection_reason(reason, value, kwargs):
    with pytest.raises(InvalidRecord) as info:
        decode(value, **kwargs)
    err = info.value
    assert err.reason == reason
    assert str(err).startswith(f"{reason}: ")
    assert err.message
    # Only label problems are InvalidLabel.
    assert isinstance(err, InvalidLabel) == (reason == "invalid_label")


def test_every_reason_code_in_events_module_is_covered():
    import inspect
    import re

    import stream_learner.events as events

    source = inspect.getsource(events)
    codes = set(re.findall(r"Invalid(?:Record|Label)\(\s*\"([a-z_]+)\"", source))
    covered = {reason for reason, _value, _kwargs in REJECTIONS} | {"non_finite"}
    assert codes, "no reason codes found: the regex is out of date"
    assert codes <= covered, f"reason codes without a test: {sorted(codes - covered)}"


def test_non_finite_guard_on_already_parsed_features():
    # Unreachable through orjson (see the not_json cases above), but the guard
    # itself must hold for any decoder that yields inf / nan floats.
    c = codec()
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(InvalidRecord) as info:
            c._features({"features": {"ok": 1.0, "x": bad}})
        assert info.value.reason == "non_finite"
        assert "'x'" in info.value.message


def test_overflowing_feature_is_reported_as_non_finite():
    with pytest.raises(InvalidRecord) as info:
        decode(b'{"id": 1, "features": {"x": 1e999}}')
    assert info.value.reason == "non_finite"


def test_size_limit_is_inclusive():
    value = orjson.dumps({"id": 1, "features": {"x": "y" * 40}})
    assert decode(value, max_record_bytes=len(value)).features == {"x": "y" * 40}
    with pytest.raises(InvalidRecord, match="too_large"):
        decode(value, max_record_bytes=len(value) - 1)


def test_feature_count_limit_is_inclusive():
    assert len(decode({"id": 1, "features": {"a": 1, "b": 2}}, max_features=2).features) == 2


def test_id_length_limit_is_inclusive():
    assert decode({"id": "x" * 5, "key": "k" * 5, "features": {"x": 1}}, max_id_length=5).id == (
        "x" * 5
    )


def test_error_messages_tell_the_producer_what_to_fix():
    with pytest.raises(InvalidRecord) as info:
        decode({"id": 1, "features": {"temp": [1]}})
    assert "feature 'temp'" in info.value.message
    assert "list" in info.value.message
    with pytest.raises(InvalidRecord) as info:
        decode({"features": {"x": 1}}, schema=SchemaSettings(id="event_id"))
    assert "'event_id'" in info.value.message


# -- prediction encoding ------------------------------------------------------------------

CONTRACT_FIELDS = {"id", "key", "ts", "prediction", "model", "source", "latency_ms"}


def test_encode_classification_prediction_round_trips():
    p = Prediction(
        "r-1",
        "pump-7",
        1764115200.25,
        True,
        {"proba": {False: 0.25, True: 0.75}},
        ModelInfo("phishing", 3, 17),
        Origin("events", 2, 99),
    )
    doc = orjson.loads(encode_prediction(p, 1.23456))
    assert set(doc) == CONTRACT_FIELDS | {"proba"}
    assert doc == {
        "id": "r-1",
        "key": "pump-7",
        "ts": 1764115200.25,
        "prediction": True,
        "proba": {"false": 0.25, "true": 0.75},
        "model": {"name": "phishing", "version": 3, "n_learned": 17},
        "source": {"topic": "events", "partition": 2, "offset": 99},
        "latency_ms": 1.235,
    }


def test_encode_regression_prediction_round_trips():
    p = Prediction(7, "", 0.0, 101.5, {}, ModelInfo("m", 1, 0), Origin("river:WaterFlow", 0, 0))
    doc = orjson.loads(encode_prediction(p, 0.0))
    assert set(doc) == CONTRACT_FIELDS
    assert set(doc["model"]) == {"name", "version", "n_learned"}
    assert set(doc["source"]) == {"topic", "partition", "offset"}
    assert doc["id"] == 7
    assert doc["prediction"] == 101.5
    assert doc["latency_ms"] == 0.0


def test_encode_without_latency_has_no_latency_field():
    p = Prediction("a", "k", 1.0, 0, {"proba": {0: 1.0}}, ModelInfo("m", 1, 5), Origin("t", 0, 1))
    doc = orjson.loads(encode_prediction(p))
    assert "latency_ms" not in doc
    assert doc["proba"] == {"0": 1.0}


def test_encode_handles_numpy_scalars():
    p = Prediction(
        "a",
        "k",
        1.0,
        np.int64(1),
        {"proba": {0: np.float64(0.25), 1: np.float32(0.75)}},
        ModelInfo("m", 1, 5),
        Origin("t", 0, 1),
    )
    doc = orjson.loads(encode_prediction(p))
    assert doc["prediction"] == 1
    assert doc["proba"] == {"0": 0.25, "1": 0.75}


def test_to_dict_puts_task_fields_after_prediction():
    p = Prediction(
        "a", "k", 1.0, "x", {"proba": {"x": 1.0}}, ModelInfo("m", 1, 5), Origin("t", 0, 1)
    )
    assert list(p.to_dict(2.0)) == [
        "id",
        "key",
        "ts",
        "prediction",
        "proba",
        "model",
        "source",
        "latency_ms",
    ]


INLINE_BAD_LABELS = [
    ({"id": 1, "features": {"x": 1}, "label": 1.5}, "classification"),
    ({"id": 1, "features": {"x": 1}, "label": [1]}, "classification"),
    ({"id": 1, "features": {"x": 1}, "label": {"c": 1}}, "classification"),
    ({"id": 1, "features": {"x": 1}, "label": "high"}, "regression"),
    ({"id": 1, "features": {"x": 1}, "label": True}, "regression"),
    ({"id": 1, "features": {"x": 1}, "label": [1.0]}, "regression"),
]


@pytest.mark.parametrize(("record", "task"), INLINE_BAD_LABELS)
def test_event_with_a_bad_inline_label_is_still_an_event(record, task):
    """The event is scored; only its label is rejected (to the learn dead letters)."""
    codec = Codec(SchemaSettings(), LimitSettings(), task=task)
    event = codec.decode(orjson.dumps(record), None, 0, Origin("events", 0, 0))
    assert isinstance(event, Event)
    assert event.features == {"x": 1}
    assert event.label_error is not None and event.label_error.reason == "invalid_label"


@pytest.mark.parametrize(("value", "says", "never"), [
    # bytes that are not UTF-8: orjson speaks of surrogates, which there are none of
    (b'{"id": 1, "features": {"a": "\xff"}}', "not UTF-8: invalid start byte 0xff at byte 29",
     "surrogates"),
    (b"\xff\xfe\x00garbage", "not UTF-8: invalid start byte 0xff at byte 0", "surrogates"),
    # a float id is not "an integer beyond 64 bits"; a huge integral one is
    (b'{"id": 1.5, "features": {}}', "got number", "64 bits"),
    (b'{"id": 36893488147419103232, "features": {}}', "an integer beyond 64 bits", "\x00"),
    # an integer key is allowed: the message says so
    (b'{"id": 1, "key": {"a": 1}, "features": {}}', "at most 256 characters or an integer",
     "\x00"),
])
def test_rejection_messages_say_what_is_wrong(value: bytes, says: str, never: str) -> None:
    with pytest.raises(InvalidRecord) as info:
        decode(value)
    assert says in info.value.message
    assert never not in info.value.message
