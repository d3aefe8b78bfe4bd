"""The JSON Schema files describe the records the service really reads and writes."""

from __future__ import annotations

import base64
import importlib.resources
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from stream_learner.datasets import dataset_records
from stream_learner.events import REASONS, Codec, Origin
from stream_learner.settings import LimitSettings, SchemaSettings
from tests.support.service import run_service

NAMES = ("event", "prediction", "dead-letter")


def validator(name: str) -> Draft202012Validator:
    text = (importlib.resources.files("stream_learner") / "schemas" / f"{name}.json").read_text()
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.parametrize("name", NAMES)
def test_schema_files_are_valid_draft_2020_12(name: str) -> None:
    v = validator(name)
    assert v.schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_dead_letter_schema_lists_every_reason_code() -> None:
    reasons = validator("dead-letter").schema["properties"]["headers"]["properties"][
        "__stream_learner.errors.reason"
    ]["enum"]
    assert sorted(reasons) == sorted(REASONS)


GOOD_INPUT = [
    b'{"id": "r-1042", "key": "pump-7", "ts": 1764115200.25, '
    b'"features": {"temp": 71.2, "vibration": 0.013, "mode": "auto", "on": true, "gap": null}, '
    b'"label": 1}',
    b'{"id": 7, "features": {}}',
    b'{"id": 8, "ts": "2026-01-01T00:00:00Z", "key": 12, "features": {"a": 1}}',
    b'{"id": "r-1", "key": "pump-7", "label": 0.5}',
    b'{"id": "r-1", "features": null, "label": "spam"}',
]
BAD_INPUT = [  # each is rejected by the codec and by the schema
    b"[1]",
    b'{"features": {"a": 1}}',
    b'{"id": true, "features": {"a": 1}}',
    b'{"id": "", "features": {"a": 1}}',
    b'{"id": 1.5, "features": {"a": 1}}',
    b'{"id": 18446744073709551615, "features": {"a": 1}}',
    b'{"id": 1, "key": [1], "features": {"a": 1}}',
    b'{"id": 1, "ts": [1], "features": {"a": 1}}',
    b'{"id": 1, "ts": 1764116021000, "features": {"a": 1}}',  # epoch milliseconds
    b'{"id": 1, "ts": 1.0e300, "features": {"a": 1}}',
    b'{"id": 1, "features": [1]}',
    b'{"id": 1, "features": {"a": [1]}}',
    b'{"id": 1, "features": {"a": {"b": 1}}}',
    b'{"id": 1}',
    b'{"id": 1, "label": null}',
    b'{"id": 1, "label": [1]}',
]


def test_event_schema_agrees_with_the_codec() -> None:
    v = validator("event")
    codec = Codec(SchemaSettings(), LimitSettings(), "classification")
    regression = Codec(SchemaSettings(), LimitSettings(), "regression")
    for raw in GOOD_INPUT:
        assert not list(v.iter_errors(orjson.loads(raw))), raw
        try:
            codec.decode(raw, None, 0, Origin("t", 0, 0))
        except Exception:
            regression.decode(raw, None, 0, Origin("t", 0, 0))
    for raw in BAD_INPUT:
        assert list(v.iter_errors(orjson.loads(raw))), raw
        with pytest.raises(Exception, match=r"^\w+: "):
            codec.decode(raw, None, 0, Origin("t", 0, 0))


def test_bundled_dataset_events_match_the_event_schema() -> None:
    v = validator("event")
    for raw in list(dataset_records("Phishing"))[:200] + list(dataset_records("WaterFlow"))[:200]:
        assert not list(v.iter_errors(orjson.loads(raw)))


def _lines(path: Path) -> list[Any]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_records_written_by_the_service_match_their_schemas(tmp_path: Path) -> None:
    events = [orjson.loads(r) for r in list(dataset_records("Phishing"))[:300]]
    lines = [orjson.dumps(e) for e in events]
    lines[10] = b"\xff\xfe not json"
    lines[20] = b'{"id": 5, "features": {"a": [1]}}'
    lines[30] = b'{"id": "ghost", "label": true}'
    lines[40] = orjson.dumps({**events[40], "label": 0.5})  # predicted, label rejected
    lines[50] = b'{"id": 1, "features": {"x": "' + b"z" * 300 + b'"}}'
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    out = {name: tmp_path / f"{name}.jsonl" for name in ("pred", "dlq", "learn")}
    run_service(
        ["run", "--input", str(source), "--output", str(out["pred"])],
        model__task="classification",
        model__name="phishing",
        model__pipeline='[{step = "preprocessing.StandardScaler"}, '
        '{step = "linear_model.LogisticRegression"}]',
        limits__max_record_bytes="256",
        limits__max_dead_letter_bytes="128",
        local__dead_letters=str(out["dlq"]),
        local__learn_dead_letters=str(out["learn"]),
        # the ghost label waits for its event at most one later event, then expires
        labels__early_max_age_events="1",
    )
    predictions, dlq, learn = _lines(out["pred"]), _lines(out["dlq"]), _lines(out["learn"])
    assert (len(predictions), len(dlq), len(learn)) == (296, 3, 2)
    for record in predictions:
        validator("prediction").validate(record)
    for record in dlq + learn:
        validator("dead-letter").validate(record)
    assert [d["headers"]["__stream_learner.errors.reason"] for d in dlq] == [
        "not_json", "feature_not_scalar", "too_large"
    ]
    assert base64.b64decode(dlq[0]["value_base64"]) == b"\xff\xfe not json"
    assert dlq[2]["headers"]["__stream_learner.errors.value.truncated.from"] == str(len(lines[50]))
    # the expired label is written when the batch that expired it ends, after line 40's
    assert [d["headers"]["__stream_learner.errors.reason"] for d in learn] == [
        "invalid_label", "unknown_id"
    ]
    assert [d["headers"]["__stream_learner.errors.offset"] for d in learn] == ["40", "30"]
    ghost = orjson.loads(base64.b64decode(learn[1]["value_base64"]))
    assert {k: ghost[k] for k in ("id", "key", "label")} == {"id": "ghost", "key": "", "label": True}
    assert isinstance(ghost["ts"], float)


def test_forecasts_written_by_the_service_match_the_prediction_schema(tmp_path: Path) -> None:
    # HoltWinters cannot forecast before its second value: those records carry
    # "forecast": null (docs/contracts.md), the later ones a list of horizon values
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(
        orjson.dumps({"id": i, "key": "tank-2", "ts": 1764115200 + 3600 * i, "label": 50.0 + i})
        + b"\n" for i in range(6)))
    out = tmp_path / "pred.jsonl"
    run_service(
        ["run", "--input", str(source), "--output", str(out)],
        model__task="forecasting", model__name="tank-level", model__horizon="3",
        model__pipeline='[{step = "time_series.HoltWinters", params = {alpha = 0.5, beta = 0.1}}]',
    )
    predictions = _lines(out)
    assert [p["forecast"] is None for p in predictions] == [True, True] + [False] * 4
    assert all(len(p["forecast"]) == 3 for p in predictions[2:])
    for record in predictions:
        validator("prediction").validate(record)
