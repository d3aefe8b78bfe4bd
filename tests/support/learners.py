"""The pure core fed directly: the test pipelines and a decode-then-process loop."""

from __future__ import annotations

from typing import Any

import orjson

from stream_learner.events import Codec, Origin, Prediction
from stream_learner.learner import Learner, Outcome
from stream_learner.settings import LimitSettings, SchemaSettings

CLASSIFIER = (
    {"step": "preprocessing.StandardScaler"},
    {"step": "linear_model.LogisticRegression"},
)
REGRESSOR = (
    {"step": "preprocessing.StandardScaler"},
    {"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
)


def run_outcomes(learner: Learner, records: Any, task: str = "regression") -> list[Outcome]:
    """Decode JSON records and feed them to ``learner``; return what each did."""
    codec = Codec(SchemaSettings(), LimitSettings(), task)
    out = []
    for offset, record in enumerate(records):
        item = codec.decode(orjson.dumps(record), None, 0, Origin("events", 0, offset))
        out.append(learner.process(item))
    return out


def run_learner(
    learner: Learner, records: Any, task: str = "regression"
) -> list[Prediction]:
    """Decode JSON records and feed them to ``learner``; return its predictions."""
    outcomes = run_outcomes(learner, records, task)
    return [o[0] for o in outcomes if o[0] is not None]
