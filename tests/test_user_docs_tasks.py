"""Statements of docs/tasks.md about River's behaviour, checked against River itself."""

from __future__ import annotations

import re
from typing import Any

import orjson
from river import anomaly, time_series

from stream_learner.events import Codec, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.replay import LabelDelay, delay_labels
from stream_learner.settings import LimitSettings, ModelSettings, SchemaSettings
from stream_learner.sources import Record
from tests.support.service import ROOT
from tests.support.streams import delayed

TASKS = " ".join((ROOT / "docs" / "tasks.md").read_text(encoding="utf-8").split())
CONTRACTS = (ROOT / "docs" / "contracts.md").read_text(encoding="utf-8")


class _Counting(anomaly.HalfSpaceTrees):
    """A detector that counts the events it learns."""

    learned = 0

    def learn_one(self, x: dict[str, Any]) -> None:
        type(self).learned += 1
        super().learn_one(x)


def _learned(filter_: Any) -> int:
    _Counting.learned = 0
    for i in range(200):
        filter_.learn_one({"x": float(i % 7)})
    return _Counting.learned


def test_threshold_filter_unprotected_never_learns_as_the_doc_warns() -> None:
    unprotected = anomaly.ThresholdFilter(_Counting(seed=1), threshold=2.0,
                                          protect_anomaly_detector=False)
    protected = anomaly.ThresholdFilter(_Counting(seed=1), threshold=2.0)
    quantile = anomaly.QuantileFilter(_Counting(seed=1), q=0.5, protect_anomaly_detector=False)
    assert _learned(unprotected) == 0  # River 0.26: protection off means no learning at all
    assert _learned(protected) == 200  # threshold 2.0 > any score: every event is normal
    assert _learned(quantile) == 200
    assert "with `false` the detector never learns at all" in TASKS
    assert "e.g. to set `protect_anomaly_detector`" not in TASKS


def _records(events: list[dict[str, Any]]) -> list[Record]:
    return [Record(orjson.dumps(e), None, 0, Origin("h", 0, i)) for i, e in enumerate(events)]


def test_label_delay_k_is_rivers_delay_k_plus_one() -> None:
    events = [{"id": i, "key": "k", "features": {"x": i}, "label": i % 2} for i in range(30)]
    for k in (1, 3, 7):
        replayed = [orjson.loads(r.value) for r in
                    delay_labels(_records(events), SchemaSettings(), LabelDelay(events=k))]
        # tests/support/streams.delayed(events, d) is simulate_qa(delay=d)'s arrival order
        river_order = list(delayed(events, k + 1))
        assert [(("features" in r), r["id"]) for r in replayed] == [
            (("features" in r), r["id"]) for r in river_order]
    assert "is River's `delay=K+1`" in TASKS
    assert "a label arriving `k` events after its event is River's `delay=k`" not in TASKS


def test_forecasting_contract_matches_the_first_forecast() -> None:
    spec = ModelSpec.from_settings(ModelSettings(
        task="forecasting", pipeline=({"step": "time_series.SNARIMAX",
                                       "params": {"p": 1, "d": 0, "q": 0}},)))
    learner = Learner(spec)
    codec = Codec(SchemaSettings(), LimitSettings(), "forecasting")
    event = codec.decode(b'{"id": 0, "key": "s", "ts": 0, "label": 5.0}', None, 0,
                         Origin("e", 0, 0))
    prediction = learner.process(event)[0]
    assert prediction is not None
    river_first = time_series.SNARIMAX(p=1, d=0, q=0).forecast(horizon=1)
    assert prediction.fields == {"forecast": river_first}  # exactly River's forecast
    row = next(line for line in CONTRACTS.splitlines() if line.startswith("| `forecast` |"))
    if prediction.prediction is not None:  # a forecast from no history is not null...
        assert "too little history" not in row  # ...so the contract must not promise null
        assert "n_learned" in row  # and says how to tell it
    assert re.search(r"`null` .*raises", row)
