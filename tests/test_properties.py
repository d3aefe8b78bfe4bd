"""Property-based: arbitrary bytes and JSON never escape as anything but a dead letter."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import REASONS, Codec, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import SchemaSettings, Settings
from stream_learner.sources import Record
from stream_learner.testing import MemorySink, MemorySource
from tests.support.decoding import LIMITS, MODELS, check_decoded

ORIGIN = Origin("events", 0, 0)
EXAMPLES = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SPECS = {task: ModelSpec.from_settings(model) for task, model in MODELS.items()}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too: orjson reads those as floats
    | st.floats()  # NaN and infinities serialise as NaN / Infinity: not JSON
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
feature_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
events = st.fixed_dictionaries(
    {},
    optional={
        "id": st.integers(-(2**65), 2**65) | st.text(max_size=40) | json_values,
        "key": st.text(max_size=40) | st.integers() | json_values,
        "ts": st.floats() | st.integers() | st.text(max_size=30) | json_values,
        "features": st.dictionaries(st.text(max_size=6), feature_values, max_size=10)
        | st.dictionaries(st.text(max_size=6), json_values, max_size=3)
        | json_values,
        "label": feature_values | json_values,
        "extra": json_values,
    },
)

# Nearly valid events, so that the model sees many (and odd) feature values and labels.
plausible_events = st.fixed_dictionaries(
    {
        "id": st.integers(0, 10**6) | st.text(min_size=1, max_size=8),
        "features": st.dictionaries(st.sampled_from("abcdef"), feature_values, max_size=6),
    },
    optional={
        "key": st.sampled_from(["k1", "k2"]),
        "ts": st.floats(0, 2e9),
        "label": feature_values,
    },
)


def dumps(value: Any) -> bytes:
    """JSON bytes as producers write them: big integers, and NaN / Infinity when given."""
    return json.dumps(value).encode("utf-8")


records = (
    st.binary(max_size=200)
    | json_values.map(dumps)
    | events.map(dumps)
    | plausible_events.map(dumps)
    | st.none()
)
schemas = st.sampled_from([SchemaSettings(), SchemaSettings(features="", key="key")])
tasks = st.sampled_from(sorted(MODELS))


@EXAMPLES
@given(raw=records, key=st.none() | st.binary(max_size=8), schema=schemas, task=tasks)
def test_decode_raises_only_invalid_record(
    raw: bytes | None, key: bytes | None, schema: SchemaSettings, task: str
) -> None:
    codec = Codec(schema, LIMITS, task)
    try:
        item = codec.decode(raw, key, 0, ORIGIN)
    except InvalidRecord as error:
        assert error.reason in REASONS
        assert error.message
    else:
        check_decoded(item)


@EXAMPLES
@given(items=st.lists(plausible_events.map(dumps) | records, max_size=12), task=tasks)
def test_learner_raises_only_invalid_record(items: list[bytes | None], task: str) -> None:
    codec = Codec(SchemaSettings(), LIMITS, task)
    learner = Learner(SPECS[task])
    predicted = 0
    for raw in items:
        try:
            item = codec.decode(raw, None, 0, ORIGIN)
            prediction = learner.process(item)[0]
        except InvalidRecord as error:
            assert error.reason in REASONS
            continue
        if prediction is not None:
            predicted += 1
            error = prediction.label_error
            assert error is None or isinstance(error, InvalidLabel)
    assert learner.n_predicted == predicted
    assert learner.n_learned <= predicted


@EXAMPLES
@given(
    p0=st.lists(records, max_size=15),
    p1=st.lists(records, max_size=15),
    keys=st.lists(st.none() | st.binary(max_size=4), min_size=30, max_size=30),
    task=tasks,
    batch_size=st.integers(1, 7),
)
@example(  # two label records of one id and no event: the first expires when replaced
    p0=[],
    p1=[b'{"id":0,"":0,"label":false}', b'{"id":0,"":0,"label":false}'],
    keys=[None] * 30,
    task="classification",
    batch_size=1,
)
def test_service_never_stops_and_accounting_adds_up(
    p0: list[bytes | None],
    p1: list[bytes | None],
    keys: list[bytes | None],
    task: str,
    batch_size: int,
) -> None:
    settings_ = Settings.model_validate({
        "service": {"batch_size": batch_size},
        "limits": LIMITS.model_dump(),
        "model": MODELS[task].model_dump(),
    })
    partitions = {
        ("events", p): [Record(v, keys[i], 0, Origin("events", p, i)) for i, v in enumerate(vals)]
        for p, vals in ((0, p0), (1, p1))
    }
    source, sink = MemorySource(partitions), MemorySink()
    summary = Service(settings_, SPECS[task], source, sink).run()

    assert summary.records == len(p0) + len(p1)
    assert summary.records == summary.predictions + summary.label_records + summary.dead_letters
    assert summary.predictions == len(sink.values("predictions"))
    assert summary.input_dead_letters == len(sink.values("dead_letters"))
    assert summary.learn_dead_letters == len(sink.values("learn_dead_letters"))
    # docs/errors.md: label records accepted early whose event never came are dead-lettered
    # when they expire, so they count on both sides
    assert (
        summary.input_dead_letters + summary.learn_dead_letters
        == summary.dead_letters + summary.inline_labels_rejected + summary.labels_expired
    )
    assert sink.flushed == len(sink.sent)
    assert source.committed_offsets == {tp: len(v) for tp, v in partitions.items() if v}
    for prediction in sink.decoded("predictions"):
        assert prediction["model"]["n_learned"] <= summary.labels
