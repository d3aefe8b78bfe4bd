"""Per-key models (LRU parking) and the anomaly / forecasting tasks against River's loops."""

from __future__ import annotations

import pickle
from collections import defaultdict
from typing import Any

import orjson
import pytest
from river import anomaly, linear_model, metrics, preprocessing, time_series

from stream_learner.errors import InvalidLabel, InvalidRecord, ModelConfigError, SettingsError
from stream_learner.events import Codec, Event, Origin
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.scopes import KeyedModels, memory_bytes
from stream_learner.settings import LimitSettings, ModelSettings, SchemaSettings, load_settings
from tests.support.learners import REGRESSOR, run_learner
from tests.support.streams import friedman, seasonal_series, sensor_anomalies

ANOMALY_PIPELINE = (
    {"step": "preprocessing.MinMaxScaler"},
    {"step": "anomaly.HalfSpaceTrees", "params": {"n_trees": 5, "height": 6, "window_size": 50}},
)


def river_regressor() -> Any:
    return preprocessing.StandardScaler() | linear_model.LinearRegression(intercept_lr=0.1)


# -- per-key models ------------------------------------------------------------------


@pytest.mark.parametrize("max_resident", [1, 3, 100])
def test_each_key_predicts_like_its_own_river_model(max_resident: int) -> None:
    spec = ModelSpec.from_settings(
        ModelSettings(pipeline=REGRESSOR, scope="key", max_resident=max_resident)
    )
    events = friedman(1200, keys=9)
    learner = Learner(spec)
    predictions = run_learner(learner, events)
    river_models: dict[str, Any] = defaultdict(river_regressor)
    n_learned: dict[str, int] = defaultdict(int)
    for event, prediction in zip(events, predictions, strict=True):
        model = river_models[event["key"]]
        assert prediction.prediction == model.predict_one(event["features"])
        assert prediction.model.n_learned == n_learned[event["key"]]
        model.learn_one(event["features"], event["label"])
        n_learned[event["key"]] += 1
    models = learner.models
    assert isinstance(models, KeyedModels)
    assert models.n_resident == min(max_resident, 9)
    assert models.n_resident + models.n_parked == 9 == models.n_created
    assert (models.n_evicted > 0) == (max_resident < 9)
    assert models.parked_bytes == sum(len(b) for b in models.parked.values())


def test_parked_models_survive_a_pickled_learner() -> None:
    spec = ModelSpec.from_settings(ModelSettings(pipeline=REGRESSOR, scope="key", max_resident=2))
    events = friedman(600, keys=6)
    straight = run_learner(Learner(spec), events)
    learner = Learner(spec)
    head = run_learner(learner, events[:311])
    assert learner.models.n_parked == 4
    tail = run_learner(pickle.loads(pickle.dumps(learner)), events[311:])
    assert [p.prediction for p in head + tail] == [p.prediction for p in straight]


def test_resident_memory_is_estimated_and_parking_keeps_it_bounded() -> None:
    small = ModelSpec.from_settings(ModelSettings(pipeline=REGRESSOR, scope="key", max_resident=2))
    large = ModelSpec.from_settings(ModelSettings(pipeline=REGRESSOR, scope="key", max_resident=50))
    events = friedman(400, keys=20)
    few, many = Learner(small), Learner(large)
    run_learner(few, events)
    run_learner(many, events)
    assert 0 < memory_bytes(few.models) < memory_bytes(many.models)
    assert few.models.n_resident == 2 and many.models.n_resident == 20


# -- anomaly detection ---------------------------------------------------------------


def test_anomaly_scores_equal_rivers_loop_with_a_quantile_threshold() -> None:
    spec = ModelSpec.from_settings(
        ModelSettings(task="anomaly", pipeline=ANOMALY_PIPELINE, anomaly_quantile=0.95)
    )
    events = sensor_anomalies(800)
    learner = Learner(spec)
    predictions = run_learner(learner, events, "anomaly")
    model = anomaly.QuantileFilter(
        preprocessing.MinMaxScaler()
        | anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=42),
        q=0.95,
    )
    metric = metrics.ROCAUC()
    for event, prediction in zip(events, predictions, strict=True):
        score = model.score_one(event["features"])
        is_anomaly = model.classify(score)
        assert prediction.fields == {"score": score, "is_anomaly": is_anomaly}
        assert prediction.prediction is is_anomaly
        metric.update(event["label"], score)
        model.learn_one(event["features"])
    assert learner.metric_value == metric.get()
    assert learner.metric_value > 0.9  # the injected anomalies are easy
    assert sum(p.fields["is_anomaly"] for p in predictions) > 0
    assert learner.n_learned == 800  # learned every event, labelled or not


def test_anomaly_detectors_learn_without_labels_and_score_labels_that_come_later() -> None:
    spec = ModelSpec.from_settings(
        ModelSettings(task="anomaly", pipeline=ANOMALY_PIPELINE, anomaly_threshold=0.8)
    )
    events = sensor_anomalies(300)
    unlabelled = [{k: v for k, v in e.items() if k != "label"} for e in events]
    learner = Learner(spec)
    predictions = run_learner(learner, unlabelled, "anomaly")
    model = anomaly.ThresholdFilter(
        preprocessing.MinMaxScaler()
        | anomaly.HalfSpaceTrees(n_trees=5, height=6, window_size=50, seed=42),
        threshold=0.8,
    )
    scores = []
    for event, prediction in zip(events, predictions, strict=True):
        scores.append(model.score_one(event["features"]))
        assert prediction.fields["score"] == scores[-1]
        model.learn_one(event["features"])
    assert learner.book.stats.labelled == 0 and len(learner.book.pending) == 300
    run_learner(learner, [{"id": e["id"], "key": e["key"], "label": e["label"]} for e in events])
    metric = metrics.ROCAUC()
    for event, score in zip(events, scores, strict=True):
        metric.update(event["label"], score)
    assert learner.metric_value == metric.get()
    assert learner.n_learned == 300  # labels never teach a detector


def test_anomaly_needs_a_threshold() -> None:
    with pytest.raises(ModelConfigError, match=r"anomaly_threshold or model\.anomaly_quantile"):
        ModelSpec.from_settings(ModelSettings(task="anomaly", pipeline=ANOMALY_PIPELINE))
    with pytest.raises(ModelConfigError, match=r"not a River base\.AnomalyDetector"):
        ModelSpec.from_settings(ModelSettings(task="anomaly", anomaly_threshold=0.5))


@pytest.mark.parametrize("label", ["yes", 2, 0.5])
def test_anomaly_labels_are_booleans_or_0_1(label: Any) -> None:
    codec = Codec(SchemaSettings(), LimitSettings(), "anomaly")
    value = orjson.dumps(label).decode()
    # an event with such a label is still scored; only its label is refused
    event = codec.decode(
        f'{{"id": 1, "features": {{"x": 1}}, "label": {value}}}'.encode(), None, 0,
        Origin("e", 0, 0),
    )
    assert isinstance(event, Event) and event.features == {"x": 1} and not event.has_label
    assert event.label_error is not None and event.label_error.reason == "invalid_label"
    assert "anomaly label" in event.label_error.message
    # a label record with such a label is refused at once
    with pytest.raises(InvalidLabel, match="anomaly label") as info:
        codec.decode(f'{{"id": 1, "label": {value}}}'.encode(), None, 0, Origin("e", 0, 1))
    assert info.value.reason == "invalid_label"
    for good in (b"true", b"false", b"0", b"1"):
        ok = codec.decode(b'{"id": 1, "features": {"x": 1}, "label": ' + good + b"}", None, 0,
                          Origin("e", 0, 2))
        assert isinstance(ok, Event) and ok.has_label and ok.label_error is None


# -- forecasting ---------------------------------------------------------------------

FORECASTERS = {
    "holt-winters": (
        ({"step": "time_series.HoltWinters",
          "params": {"alpha": 0.3, "beta": 0.1, "gamma": 0.5, "seasonality": 12}},),
        lambda: time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.5, seasonality=12),
    ),
    "snarimax": (
        ({"step": "time_series.SNARIMAX", "params": {"p": 2, "d": 1, "q": 1, "m": 12, "sp": 1}},),
        lambda: time_series.SNARIMAX(p=2, d=1, q=1, m=12, sp=1),
    ),
}


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_forecasts_equal_rivers_loop_per_key(name: str) -> None:
    pipeline, make = FORECASTERS[name]
    spec = ModelSpec.from_settings(
        ModelSettings(task="forecasting", pipeline=pipeline, horizon=3, max_resident=2)
    )
    assert spec.scope == "key"
    events = seasonal_series(900, keys=4)
    learner = Learner(spec)
    predictions = run_learner(learner, events, "forecasting")
    forecasters: dict[str, Any] = defaultdict(make)
    metric = metrics.MAE()
    for event, prediction in zip(events, predictions, strict=True):
        model = forecasters[event["key"]]
        try:
            forecast = model.forecast(horizon=3)
        except IndexError:  # HoltWinters before its first season
            forecast = None
        assert prediction.fields == {"forecast": forecast}
        assert prediction.prediction == (forecast[0] if forecast else None)
        if forecast:
            metric.update(event["label"], forecast[0])
        model.learn_one(event["label"])
    assert learner.metric_value == metric.get()
    assert learner.models.n_parked == 2  # four series, two resident


def test_forecasting_records_need_no_features_but_a_value() -> None:
    codec = Codec(SchemaSettings(features=""), LimitSettings(), "forecasting")
    record = b'{"id": 1, "key": "s", "ts": 5, "label": 2.5}'
    event = codec.decode(record, None, 0, Origin("e", 0, 0))
    assert isinstance(event, Event) and event.features == {} and event.label == 2.5
    assert event.has_label and event.label_error is None
    # docs/tasks.md: a record with a value and no features is an event, so one whose
    # value is not a number is an event too: it is forecast, and its value refused
    bad = codec.decode(b'{"id": 1, "label": "high"}', None, 0, Origin("e", 0, 1))
    assert isinstance(bad, Event) and bad.features == {} and not bad.has_label
    assert bad.label_error is not None and bad.label_error.reason == "invalid_label"
    learner = Learner(ModelSpec.from_settings(ModelSettings(
        task="forecasting", pipeline=({"step": "time_series.HoltWinters", "params": {"alpha": 0.5}},)
    )))
    prediction = learner.process(bad)[0]
    assert prediction is not None and prediction.fields == {"forecast": None}
    assert prediction.label_error is bad.label_error and learner.n_learned == 0
    # a record with neither features nor a value is still refused
    with pytest.raises(InvalidRecord, match="no_features"):
        codec.decode(b'{"id": 2, "key": "s"}', None, 0, Origin("e", 0, 2))


def test_forecasting_is_always_per_key() -> None:
    env = {"STREAM_LEARNER_MODEL__TASK": "forecasting", "STREAM_LEARNER_MODEL__SCOPE": "partition"}
    with pytest.raises(SettingsError, match="forecasting keeps one model per key"):
        load_settings(None, env=env)
