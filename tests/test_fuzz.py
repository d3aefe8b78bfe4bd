"""Structure-aware fuzzing of the decoder, the labels and the features.

Records are assembled from JSON *text*, not from Python values, so that they
can hold what a JSON library never writes: nesting deeper than any parser
allows, numbers beyond a double, ``NaN`` / ``Infinity``, lone surrogates (as
escapes and as raw bytes), very long names, empty names and values, and the
same field twice. The properties:

- decoding raises nothing but :class:`InvalidRecord` with a documented reason;
- the service takes any mix of them without raising, and accounts for each;
- valid events get the same predictions with rejected records among them as
  without them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream_learner.errors import InvalidRecord
from stream_learner.events import REASONS, Codec, Origin
from stream_learner.models import ModelSpec
from stream_learner.service import Service, Summary
from stream_learner.settings import LimitSettings, SchemaSettings, Settings
from stream_learner.sources import Record
from stream_learner.testing import MemorySink, MemorySource
from tests.support.decoding import MODELS, check_decoded

ORIGIN = Origin("events", 0, 0)
LIMITS = LimitSettings(max_record_bytes=64_000, max_features=20, max_id_length=64)
#: modest: the whole file runs in a few seconds
FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
STREAMS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RESERVED = ["id", "key", "ts", "label", "features"]
WORKER_RECURSION_LIMIT = 1000

numbers = st.sampled_from([
    b"0", b"-0", b"1", b"-1", b"0.5", b"1e308", b"-1.7976931348623157e308", b"1e400", b"-1e400",
    b"1e-400", b"9223372036854775807", b"9223372036854775808", b"-9223372036854775809",
    b"18446744073709551616", b"1" * 400, b"1." + b"5" * 400, b"NaN", b"-NaN", b"Infinity",
    b"-Infinity", b"01", b"1.", b".5", b"+1", b"0x10",
]) | st.integers().map(lambda i: str(i).encode()) | st.floats().map(lambda f: repr(f).encode())
strings = st.sampled_from([
    b'""', b'"\\ud800"', b'"\\udfff"', b'"a\\udc00b"', b'"\\ud83d\\ude00"', b'"\xed\xa0\x80"',
    b'"\xff"', b'"\\u0000"', b'"tab\tin"', b'"\\"', b'"unterminated',
]) | st.text(max_size=12).map(lambda s: orjson.dumps(s)) | st.integers(0, 20_000).map(
    lambda n: b'"' + b"k" * n + b'"'
)
atoms = numbers | strings | st.sampled_from([b"true", b"false", b"null", b"[]", b"{}", b""])


def deep(depth: int, inner: bytes, kind: str) -> bytes:
    """``inner`` nested ``depth`` levels deep in lists or objects."""
    if kind == "list":
        return b"[" * depth + inner + b"]" * depth
    return b'{"a":' * depth + inner + b"}" * depth


#: around the limits that matter: orjson's 1,024 levels, Python's recursion limit of 1,000
depths = st.sampled_from([1, 255, 256, 990, 1000, 1010, 1022, 1023, 1024, 1025]) | st.integers(
    1, 3000
)
nested = st.builds(deep, depths, atoms, st.sampled_from(["list", "object"]))
names = st.sampled_from(RESERVED).map(lambda n: orjson.dumps(n)) | strings


def obj(pairs: list[tuple[bytes, bytes]]) -> bytes:
    return b"{" + b",".join(name + b":" + value for name, value in pairs) + b"}"


values = st.recursive(
    atoms | nested,
    lambda inner: st.lists(inner, max_size=4).map(lambda xs: b"[" + b",".join(xs) + b"]")
    | st.lists(st.tuples(names, inner), max_size=4).map(obj),
    max_leaves=10,
)
#: feature objects: plausible names and values, with odd ones, empty and duplicate names
features = st.lists(
    st.tuples(st.sampled_from([b'"a"', b'"b"', b'"c"', b'""']) | names, values | numbers),
    max_size=8,
).map(obj)
#: records: an object of reserved and other fields in any order, duplicates and all
shapeless = st.lists(
    st.tuples(names, values) | st.tuples(st.just(b'"features"'), features),
    max_size=8,
).map(obj) | values | st.binary(max_size=64)


def with_field(field: str, odd: bytes, with_features: bool) -> bytes:
    """An event (or a label record) whose ``field`` is ``odd`` (the last duplicate wins)."""
    return obj([
        (b'"id"', b"1"), (b'"key"', b'"k"'), (b'"label"', b"1"),
        *([(b'"features"', b'{"a":1.5}')] if with_features else []),
        (orjson.dumps(field), odd),
    ])


#: events and label records whose one field is odd: the paths past the first checks
one_odd_field = st.builds(with_field, st.sampled_from(RESERVED), atoms | values, st.booleans())
#: the same with deep nesting: each field's path must draw or measure it without recursion
one_deep_field = st.builds(with_field, st.sampled_from(RESERVED), nested, st.booleans())
records = shapeless | one_odd_field | one_deep_field


@contextmanager
def worker_stack() -> Iterator[None]:
    """Run with CPython's default recursion limit, as a worker does.

    Hypothesis raises the limit while a test runs; under it a label nested
    1,000 levels deep would not show the ``RecursionError`` it causes in a worker.
    """
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(WORKER_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(before)


def decode(codec: Codec, raw: bytes) -> Any:
    try:
        return codec.decode(raw, None, 0, ORIGIN)
    except InvalidRecord as error:
        assert error.reason in REASONS, error
        assert error.message
        return error


TASKS = st.sampled_from([*sorted(MODELS), "anomaly", "forecasting"])


def check(raw: bytes, task: str, flat: bool) -> None:
    schema = SchemaSettings(features="") if flat else SchemaSettings()
    with worker_stack():
        item = decode(Codec(schema, LIMITS, task), raw)
    if not isinstance(item, InvalidRecord) and task != "forecasting":
        check_decoded(item)


@FUZZ
@given(raw=shapeless, task=TASKS, flat=st.booleans())
def test_decode_raises_only_the_documented_rejection(raw: bytes, task: str, flat: bool) -> None:
    check(raw, task, flat)


@FUZZ
@given(raw=one_odd_field | one_deep_field, task=TASKS, flat=st.booleans())
def test_one_odd_id_key_time_label_or_features_is_rejected_or_accepted(
    raw: bytes, task: str, flat: bool
) -> None:
    check(raw, task, flat)


@settings(FUZZ, max_examples=150)
@given(raw=one_deep_field, task=TASKS, flat=st.booleans())
def test_deep_nesting_in_any_field_is_rejected_or_accepted(
    raw: bytes, task: str, flat: bool
) -> None:
    check(raw, task, flat)


# -- the service: valid events, with fuzzed records among them -----------------------------

valid_events = st.lists(
    st.tuples(
        st.floats(-100, 100, allow_nan=False),
        st.floats(-100, 100, allow_nan=False),
        st.sampled_from([None, 0, 1]),
    ),
    min_size=5,
    max_size=25,
)


def event_bytes(i: int, a: float, b: float, label: int | None, task: str) -> bytes:
    ev: dict[str, Any] = {"id": f"v{i}", "key": f"k{i % 3}", "features": {"a": a, "b": b}}
    if label is not None:
        ev["label"] = label if task == "classification" else float(a - b)
    return orjson.dumps(ev)


def serve(values: list[bytes], task: str) -> tuple[Summary, dict[str, Any]]:
    cfg = Settings.model_validate({
        "limits": LIMITS.model_dump(),
        "model": MODELS[task].model_dump(),
        "service": {"batch_size": 7},
    })
    partition = [Record(v, None, 0, Origin("events", 0, i)) for i, v in enumerate(values)]
    sink = MemorySink()
    service = Service(cfg, ModelSpec.from_settings(cfg.model),
                      MemorySource({("events", 0): partition}), sink)
    with worker_stack():
        summary = service.run()
    assert summary.records == len(values)
    assert summary.records == summary.predictions + summary.label_records + summary.dead_letters
    assert summary.input_dead_letters == len(sink.values("dead_letters"))
    assert summary.learn_dead_letters == len(sink.values("learn_dead_letters"))
    return summary, {p["id"]: (p["prediction"], p.get("proba")) for p in sink.decoded("predictions")}


@STREAMS
@given(valid=valid_events, fuzz=st.lists(records, min_size=1, max_size=15),
       places=st.lists(st.integers(0, 10**6), min_size=15, max_size=15),
       task=st.sampled_from(sorted(MODELS)))
def test_valid_events_are_predicted_as_without_the_rejected_records(
    valid: list[tuple[float, float, int | None]],
    fuzz: list[bytes],
    places: list[int],
    task: str,
) -> None:
    good = [event_bytes(i, a, b, y, task) for i, (a, b, y) in enumerate(valid)]
    mixed = list(good)
    for raw, place in zip(fuzz, places, strict=False):
        mixed.insert(place % (len(mixed) + 1), raw)
    # everything together: nothing raises, every record is accounted for
    serve(mixed, task)
    # the rejected ones alone among the valid: the same predictions as without them
    codec = Codec(SchemaSettings(), LIMITS, task)
    kept = [raw for raw in mixed if raw in good or isinstance(decode(codec, raw), InvalidRecord)]
    summary, with_rejected = serve(kept, task)
    _, alone = serve(good, task)
    assert with_rejected == alone
    assert summary.dead_letters == len(kept) - len(good)
