"""The pure core with delayed and early labels equals River's progressive validation."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from river import evaluate, metrics

from stream_learner.events import Event, Label, Origin, Prediction
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.settings import LabelSettings, ModelSettings
from tests.support.learners import CLASSIFIER, REGRESSOR, run_learner, run_outcomes
from tests.support.streams import agrawal, delayed, early, friedman

CASES = {
    "accuracy": (ModelSettings(task="classification", pipeline=CLASSIFIER), agrawal),
    "logloss": (
        ModelSettings(task="classification", pipeline=CLASSIFIER, metric="metrics.LogLoss"),
        agrawal,
    ),
    "mae": (ModelSettings(task="regression", pipeline=REGRESSOR), friedman),
}


def river_delayed(
    spec: ModelSpec, events: list[dict[str, Any]], delay: int | None
) -> tuple[list[Any], float]:
    """Predictions (in event order) and final metric of progressive_val_score(delay=...)."""
    dataset = [(e["features"], e["label"]) for e in events]
    steps = evaluate.iter_progressive_val_score(
        dataset, spec.build(), spec.build_metric(), delay=delay, yield_predictions=True
    )
    predictions, metric = [], None
    for step in steps:
        predictions.append(step["Prediction"])
        metric = next(v for v in step.values() if isinstance(v, metrics.base.Metric))
    assert metric is not None
    return predictions, metric.get()


def metric_input(prediction: Prediction, learner: Learner) -> Any:
    """What River's progressive validation predicts: proba when the metric wants it."""
    wants_proba = not getattr(learner.metric, "requires_labels", True)
    return prediction.fields["proba"] if wants_proba else prediction.prediction


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("k", [1, 3, 50])
def test_labels_delayed_by_k_events_equal_progressive_val_score(case: str, k: int) -> None:
    settings, make = CASES[case]
    spec = ModelSpec.from_settings(settings)
    events = make(600)
    learner = Learner(spec)
    predictions = run_learner(learner, delayed(events, k), settings.task)
    expected, metric = river_delayed(spec, events, delay=k)
    assert [metric_input(p, learner) for p in predictions] == expected
    assert learner.metric_value == metric
    stats = learner.book.stats
    assert (stats.predictions, stats.labelled, stats.late) == (600, 600, 600)
    assert stats.coverage == 1.0
    assert stats.delay_events_sum == 600 * (k - 1) - sum(range(k))  # the last k come at the end
    assert not learner.book.pending and not learner.book.early


def test_delay_one_is_rivers_delay_zero() -> None:
    settings, make = CASES["mae"]
    spec = ModelSpec.from_settings(settings)
    events = make(300)
    predictions = run_learner(Learner(spec), delayed(events, 1))
    expected, _ = river_delayed(spec, events, delay=0)
    assert [p.prediction for p in predictions] == expected


@pytest.mark.parametrize("k", [1, 7])
def test_labels_before_their_event_are_joined_right_after_the_prediction(k: int) -> None:
    settings, make = CASES["logloss"]
    spec = ModelSpec.from_settings(settings)
    events = make(400)
    learner = Learner(spec)
    predictions = run_learner(learner, early(events, k), "classification")
    inline = Learner(spec)
    reference = run_learner(inline, events, "classification")
    assert [p.fields["proba"] for p in predictions] == [p.fields["proba"] for p in reference]
    assert learner.metric_value == inline.metric_value
    expected, metric = river_delayed(spec, events, delay=None)
    assert [p.fields["proba"] for p in predictions] == expected and learner.metric_value == metric
    stats = learner.book.stats
    assert (stats.early, stats.late, stats.inline, stats.expired_early) == (400, 0, 0, 0)
    assert inline.book.stats.inline == 400


def test_learning_uses_the_features_as_they_were_when_scored() -> None:
    spec = ModelSpec.from_settings(CASES["mae"][0])
    learner = Learner(spec)
    features = {"x": 1.0}
    learner.process(Event("a", "k", 0.0, features, None, False, Origin("e", 0, 0)))
    features["x"] = 1000.0  # the caller's dict changes after scoring
    learner.process(Label("a", "k", 1.0, 2.0, Origin("e", 0, 1)))
    reference = spec.build()
    reference.learn_one({"x": 1.0}, 2.0)
    model = learner.models.get("k").model
    assert model.predict_one({"x": 3.0}) == reference.predict_one({"x": 3.0})


def test_inline_labels_can_be_ignored_in_favour_of_label_records() -> None:
    spec = ModelSpec.from_settings(CASES["mae"][0])
    events = friedman(50)
    learner = Learner(spec, LabelSettings(inline=False))
    records = [*events, *({"id": e["id"], "key": e["key"], "label": -1.0} for e in events)]
    predictions = run_learner(learner, records)
    assert all(p.prediction == 0.0 for p in predictions)
    assert learner.book.stats.late == 50 and learner.book.stats.inline == 0


def test_expired_entries_are_counted_and_reported() -> None:
    spec = ModelSpec.from_settings(CASES["mae"][0])
    events = friedman(200)
    labels = LabelSettings(pending_max_age_events=5, early_max_age_events=3, early_max_count=100)
    learner = Learner(spec, labels)
    # labels delayed by 10 events: the prediction has waited 9 later events > 5
    outcomes = run_outcomes(learner, delayed(events, 10))
    book = learner.book
    stats = book.stats
    # prediction j expires at event j + 6: only 194..199 are still pending when their
    # labels come (after the last event)
    assert stats.late == 6
    assert stats.expired_pending == 194
    # each too-late label waits as an early label and expires 4 events later: those of
    # 0..186 did; those of 187..193 are still waiting when the stream ends
    expired = [e for outcome in outcomes for e in outcome[2]]
    assert [e.reason for e in expired if e.buffer == "pending"] == ["label_timeout"] * 194
    early_expired = [e for e in expired if e.buffer == "early"]
    assert [e.id for e in early_expired] == list(range(187))
    assert all(e.reason == "unknown_id" and e.label is not None for e in early_expired)
    assert stats.expired_early == 187 and len(book.early) == 7
    assert stats.coverage == 6 / 200
    assert len(expired) == stats.expired_pending + stats.expired_early  # each reported once


def test_buffers_are_bounded_by_count_oldest_first() -> None:
    spec = ModelSpec.from_settings(CASES["mae"][0])
    learner = Learner(spec, LabelSettings(pending_max_count=3, early_max_count=2))
    expired = []
    for i in range(5):
        out = learner.process(Event(i, "k", float(i), {"x": 1.0}, None, False, Origin("e", 0, i)))
        expired += out[2]
    assert [jk[1] for jk in learner.book.pending] == [2, 3, 4]
    for i in range(10, 14):
        expired += learner.process(Label(i, "k", 0.0, 1.0, Origin("e", 0, i)))[2]
    assert [jk[1] for jk in learner.book.early] == [12, 13]
    assert [(e.buffer, e.id) for e in expired] == [
        ("pending", 0), ("pending", 1), ("early", 10), ("early", 11)
    ]


def test_age_in_seconds_follows_event_time_not_a_clock() -> None:
    spec = ModelSpec.from_settings(CASES["mae"][0])
    labels = LabelSettings(pending_max_age_s=60.0, early_max_age_s=30.0)
    learner = Learner(spec, labels)
    ev = Event("a", "k", 1000.0, {"x": 1.0}, None, False, Origin("e", 0, 0))
    learner.process(ev)
    learner.process(Label("zz", "k", 0.0, 1.0, Origin("e", 0, 1)))  # never has an event
    learner.process(Event("b", "k", 1030.0, {"x": 1.0}, None, False, Origin("e", 0, 2)))
    assert learner.book.stats.expired_early == 0  # 30 s is not more than 30 s
    learner.process(Event("c", "k", 1020.0, {"x": 1.0}, None, False, Origin("e", 0, 3)))
    learner.process(Event("d", "k", 1030.5, {"x": 1.0}, None, False, Origin("e", 0, 4)))
    assert learner.book.stats.expired_early == 1
    assert learner.book.stats.expired_pending == 0
    joined = learner.process(Label("b", "k", 0.0, 1.0, Origin("e", 0, 5)))[1]
    assert joined[-1] == ("late", 2, 0.5)  # c and d came after; 1030.5 - 1030
    learner.process(Event("e", "k", 1061.0, {"x": 1.0}, None, False, Origin("e", 0, 6)))
    assert learner.book.stats.expired_pending == 1  # a: 61 s of event time
    assert [jk[1] for jk in learner.book.pending] == ["c", "d", "e"]


def test_a_second_event_with_the_same_id_expires_the_first() -> None:
    spec = ModelSpec.from_settings(CASES["mae"][0])
    learner = Learner(spec)
    for offset in range(2):
        learner.process(Event("a", "k", 0.0, {"x": 1.0}, None, False, Origin("e", 0, offset)))
    assert learner.book.stats.expired_pending == 1 and len(learner.book.pending) == 1


def test_the_learner_pickles_mid_stream_and_carries_on_identically() -> None:
    settings, make = CASES["accuracy"]
    spec = ModelSpec.from_settings(settings)
    records = list(delayed(make(300), 20))
    first, second = records[:170], records[170:]
    straight = Learner(spec)
    expected = run_learner(straight, records, "classification")
    learner = Learner(spec)
    head = run_learner(learner, first, "classification")
    restored = pickle.loads(pickle.dumps(learner))
    tail = run_learner(restored, second, "classification")
    assert [p.fields["proba"] for p in head + tail] == [p.fields["proba"] for p in expected]
    assert restored.metric_value == straight.metric_value
