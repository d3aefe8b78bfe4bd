"""The pure core: the Learner must be River's own progressive validation, exactly."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing, tree

from stream_learner.datasets import sample_to_event
from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import Codec, Event, Label, ModelInfo, Origin
from stream_learner.learner import NOTHING, Learner
from stream_learner.models import ModelSpec
from stream_learner.settings import (
    DriftSettings,
    LabelSettings,
    LimitSettings,
    ModelSettings,
    SchemaSettings,
)

SCALED_LOGREG = (
    {"step": "preprocessing.StandardScaler"},
    {"step": "linear_model.LogisticRegression"},
)
SCALED_LINREG = (
    {"step": "preprocessing.StandardScaler"},
    {"step": "linear_model.LinearRegression"},
)
HOEFFDING = ({"step": "tree.HoeffdingTreeClassifier"},)


def learner(task: str, pipeline: tuple[dict[str, Any], ...], metric: str = "") -> Learner:
    settings = ModelSettings(name="m", version=2, task=task, pipeline=pipeline, metric=metric)
    return Learner(ModelSpec.from_settings(settings))


def dataset_events(dataset, name: str, task: str) -> Iterator[Event | Label]:
    """Each sample as the service sees it: contract JSON bytes, decoded by the Codec."""
    codec = Codec(SchemaSettings(), LimitSettings(), task)
    for i, (x, y) in enumerate(dataset):
        value = orjson.dumps(sample_to_event(i, name, x, y))
        yield codec.decode(value, None, 0, Origin(f"river:{name}", 0, i))


def river_reference(dataset, model, metric) -> tuple[list[Any], list[float]]:
    """River's progressive validation: each step's prediction and running metric value."""
    name = type(metric).__name__
    predictions, values = [], []
    for state in evaluate.iter_progressive_val_score(
        dataset, model, metric, step=1, yield_predictions=True
    ):
        predictions.append(state["Prediction"])
        values.append(state[name].get())
    return predictions, values


def run_learner(lrn: Learner, events) -> tuple[list[Any], list[float]]:
    predictions, values = [], []
    for event in events:
        predictions.append(lrn.process(event)[0])
        values.append(lrn.metric_value)
    return predictions, values


# -- equality with River's progressive_val_score ------------------------------------------


def test_classification_labels_and_accuracy_equal_river():
    lrn = learner("classification", SCALED_LOGREG)
    ours, our_metric = run_learner(
        lrn, dataset_events(datasets.Phishing(), "Phishing", "classification")
    )
    theirs, their_metric = river_reference(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.Accuracy(),
    )
    assert len(ours) == len(theirs) == 1250
    assert [p.prediction for p in ours] == theirs
    assert our_metric == their_metric
    assert lrn.metric_value == their_metric[-1]
    assert type(lrn.metric) is metrics.Accuracy
    assert lrn.n_learned == lrn.n_predicted == 1250


def test_classification_probabilities_and_logloss_equal_river():
    lrn = learner("classification", SCALED_LOGREG, metric="metrics.LogLoss")
    ours, our_metric = run_learner(
        lrn, dataset_events(datasets.Phishing(), "Phishing", "classification")
    )
    theirs, their_metric = river_reference(
        datasets.Phishing(),
        preprocessing.StandardScaler() | linear_model.LogisticRegression(),
        metrics.LogLoss(),
    )
    assert [p.fields["proba"] for p in ours] == theirs
    assert [p.prediction for p in ours] == [max(p, key=p.get) for p in theirs]
    assert our_metric == their_metric
    assert lrn.metric_value == their_metric[-1]


def test_regression_predictions_and_mae_equal_river():
    lrn = learner("regression", SCALED_LINREG)
    ours, our_metric = run_learner(
        lrn, dataset_events(datasets.TrumpApproval(), "TrumpApproval", "regression")
    )
    theirs, their_metric = river_reference(
        datasets.TrumpApproval(),
        preprocessing.StandardScaler() | linear_model.LinearRegression(),
        metrics.MAE(),
    )
    assert len(ours) == len(theirs) == 1001
    assert [p.prediction for p in ours] == theirs
    assert all(p.fields == {} for p in ours)
    assert our_metric == their_metric
    assert type(lrn.metric) is metrics.MAE
    assert lrn.metric_value == their_metric[-1]


def test_hoeffding_tree_equals_river():
    lrn = learner("classification", HOEFFDING)
    ours, our_metric = run_learner(
        lrn, dataset_events(datasets.Phishing(), "Phishing", "classification")
    )
    theirs, their_metric = river_reference(
        datasets.Phishing(), tree.HoeffdingTreeClassifier(), metrics.Accuracy()
    )
    assert [p.prediction for p in ours] == theirs
    assert our_metric == their_metric
    # The untrained tree has no classes: an empty proba and no label, not counted.
    assert ours[0].prediction is None
    assert ours[0].fields == {"proba": {}}


def test_hoeffding_tree_probabilities_equal_river():
    lrn = learner("classification", HOEFFDING, metric="metrics.LogLoss")
    ours, our_metric = run_learner(
        lrn, dataset_events(datasets.Phishing(), "Phishing", "classification")
    )
    theirs, their_metric = river_reference(
        datasets.Phishing(), tree.HoeffdingTreeClassifier(), metrics.LogLoss()
    )
    assert [p.fields["proba"] for p in ours] == theirs
    assert our_metric == their_metric


def test_metric_skips_empty_probabilities_like_river():
    lrn = learner("classification", HOEFFDING)
    first = Event(1, "k", 0.0, {"x": 1.0}, True, True, Origin("t", 0, 0))
    lrn.process(first)
    assert lrn.metric.cm.total_weight == 0  # nothing to score: metric not updated
    assert lrn.n_learned == 1
    lrn.process(Event(2, "k", 0.0, {"x": 1.0}, True, True, Origin("t", 0, 1)))
    assert lrn.metric.cm.total_weight == 1
    assert lrn.metric_value == 1.0


# -- determinism and counters ---------------------------------------------------------------


def test_two_learners_on_the_same_input_agree_exactly():
    events = list(
        itertools.islice(dataset_events(datasets.Phishing(), "Phishing", "classification"), 400)
    )
    a = learner("classification", SCALED_LOGREG)
    b = learner("classification", SCALED_LOGREG)
    out_a = [a.process(e)[0].to_dict() for e in events]
    out_b = [b.process(e)[0].to_dict() for e in events]
    assert out_a == out_b
    assert a.metric_value == b.metric_value
    assert a.n_learned == b.n_learned == 400


def test_randomised_model_is_deterministic_through_the_seed():
    arf = ({"step": "forest.ARFClassifier", "params": {"n_models": 3}},)
    events = list(
        itertools.islice(dataset_events(datasets.Phishing(), "Phishing", "classification"), 300)
    )
    a = learner("classification", arf)
    b = learner("classification", arf)
    assert [a.process(e)[0].fields for e in events] == [
        b.process(e)[0].fields for e in events
    ]


def test_prediction_carries_event_identity_and_model_info():
    lrn = learner("regression", SCALED_LINREG)
    origin = Origin("events", 4, 1234)
    p = lrn.process(Event("e-9", "pump-3", 42.5, {"x": 2.0}, 3.0, True, origin))[0]
    assert (p.id, p.key, p.ts, p.origin) == ("e-9", "pump-3", 42.5, origin)
    assert p.model == ModelInfo("m", 2, 0)


def test_n_learned_is_the_count_before_learning_the_event():
    lrn = learner("regression", SCALED_LINREG)
    has_label = [True, False, True, True, False, False, True, True]
    seen = []
    for i, labelled in enumerate(has_label):
        ev = Event(
            i,
            "k",
            float(i),
            {"x": float(i)},
            float(i) if labelled else None,
            labelled,
            Origin("t", 0, i),
        )
        seen.append(lrn.process(ev)[0].model.n_learned)
    assert seen == [0, 1, 1, 2, 3, 3, 3, 4]
    assert lrn.n_learned == 5
    assert lrn.n_predicted == len(has_label)


def test_event_without_label_is_predicted_but_not_learned():
    origin = Origin("t", 0, 0)
    warmup = [Event(i, "k", 0.0, {"x": float(i)}, 2.0 * i + 1, True, origin) for i in range(20)]
    unlabelled = Event("u", "k", 0.0, {"x": 100.0}, None, False, origin)
    probe = Event("p", "k", 0.0, {"x": 3.0}, 7.0, True, origin)

    with_it = learner("regression", SCALED_LINREG)
    without_it = learner("regression", SCALED_LINREG)
    for ev in warmup:
        with_it.process(ev)
        without_it.process(ev)
    metric_before = with_it.metric_value
    n_learned = with_it.n_learned

    p = with_it.process(unlabelled)[0]
    assert p is not None
    assert isinstance(p.prediction, float)
    assert p.prediction != 0.0
    assert with_it.n_learned == n_learned
    assert with_it.n_predicted == 21
    assert with_it.metric_value == metric_before
    assert with_it.metric._mean.n == without_it.metric._mean.n == 20  # MAE's sample count
    # The model (scaler included) did not move: the next output equals that of a
    # learner that never saw the unlabelled event.
    with_p, without_p = with_it.process(probe)[0], without_it.process(probe)[0]
    assert with_p.prediction == without_p.prediction
    assert with_it.metric_value == without_it.metric_value


def test_label_record_for_an_unknown_id_waits_then_expires_as_unknown_id():
    labels = LabelSettings(early_max_age_events=2)
    settings = ModelSettings(name="m", version=2, task="classification", pipeline=SCALED_LOGREG)
    lrn = Learner(ModelSpec.from_settings(settings), labels)
    lrn.process(Event("e1", "pump-1", 0.0, {"x": 1.0}, True, True, Origin("t", 0, 0)))
    stray = Label("never-seen", "pump-1", 1.0, False, Origin("t", 0, 1))
    assert lrn.process(stray) == NOTHING  # not refused at once: it waits for its event
    assert list(lrn.book.early) == [("pump-1", "never-seen")]
    for i in (2, 3):  # two more events of the key: still within early_max_age_events
        out = lrn.process(Event(f"e{i}", "pump-1", float(i), {"x": 1.0}, True, True, Origin("t", 0, i)))
        assert out[2] == ()
    out = lrn.process(Event("e4", "pump-1", 4.0, {"x": 1.0}, True, True, Origin("t", 0, 4)))
    [expired] = out[2]
    assert (expired.buffer, expired.key, expired.id, expired.reason) == (
        "early", "pump-1", "never-seen", "unknown_id"
    )
    assert expired.label == stray  # with its origin, for the dead letter's headers
    assert len(lrn.book.early) == 0 and lrn.book.stats.expired_early == 1
    assert lrn.book.stats.early == 0  # never joined
    assert lrn.n_learned == lrn.n_predicted == 4  # the four inline labels, not the stray one


def test_label_record_after_its_event_is_learned():
    lrn = learner("classification", SCALED_LOGREG)
    lrn.process(Event("e1", "pump-1", 0.0, {"x": 1.0}, None, False, Origin("t", 0, 0)))
    out = lrn.process(Label("e1", "pump-1", 1.0, True, Origin("t", 0, 1)))
    assert out[0] is None
    assert out[1] == (("late", 0, 0.0),)  # no event came in between
    assert lrn.n_learned == 1


def test_learner_state_is_per_instance():
    a = learner("regression", SCALED_LINREG)
    b = learner("regression", SCALED_LINREG)
    assert a.model is not b.model
    assert a.metric is not b.metric
    a.process(Event(1, "k", 0.0, {"x": 1.0}, 5.0, True, Origin("t", 0, 0)))
    assert a.metric_value == 5.0  # |5.0 - 0.0|: the untrained prediction is 0
    assert b.n_learned == 0
    assert b.metric_value == 0.0
    assert b.metric._mean.n == 0  # MAE's sample count


# -- what a refused record still did ----------------------------------------------------------


def test_an_event_the_model_rejects_still_returns_the_entries_its_time_expired():
    spec = ModelSpec.from_settings(ModelSettings(task="regression", pipeline=SCALED_LINREG))
    lrn = Learner(spec, LabelSettings(pending_max_age_s=10.0))
    for i in range(3):  # a model that learned numbers cannot scale a string
        lrn.process(Event(i, "k", 0.0, {"x": float(i)}, 2.0 * i, True, Origin("t", 0, i)))
    lrn.process(Event("a", "k", 0.0, {"x": 1.0}, None, False, Origin("t", 0, 3)))
    with pytest.raises(InvalidRecord) as info:
        lrn.process(Event("b", "k", 60.0, {"x": "four"}, None, False, Origin("t", 0, 4)))
    assert info.value.reason == "model_rejected"
    prediction, joined, [expired], alerts = info.value.outcome
    assert (prediction, joined, alerts) == (None, (), ())
    assert (expired.buffer, expired.id, expired.reason) == ("pending", "a", "label_timeout")
    assert lrn.book.stats.expired_pending == 1 and not lrn.book.pending


def test_a_label_learned_before_the_metric_failed_comes_back_with_the_error():
    lrn = learner("regression", SCALED_LINREG)
    lrn.process(Event("a", "k", 0.0, {"x": 1.0}, None, False, Origin("t", 0, 0)))
    lrn.process(Event("b", "k", 5.0, {"x": 2.0}, None, False, Origin("t", 0, 1)))

    def update(y_true: Any, y_pred: Any) -> None:
        raise TypeError("unorderable")

    lrn.metric.update = update  # the metric of this learner only
    with pytest.raises(InvalidLabel) as info:
        lrn.process(Label("a", "k", 6.0, 1.0, Origin("t", 0, 2)))
    assert info.value.reason == "metric_failed"
    assert info.value.outcome == (None, (("late", 1, 5.0),), (), ())
    assert lrn.book.stats.late == 1 and lrn.n_learned == 1


def test_a_label_the_model_cannot_learn_changes_nothing_and_carries_no_outcome():
    lrn = learner("regression", SCALED_LINREG)
    lrn.process(Event("a", "k", 0.0, {"x": 1.0}, None, False, Origin("t", 0, 0)))
    with pytest.raises(InvalidLabel) as info:
        lrn.process(Label("a", "k", 1.0, {"not": "a number"}, Origin("t", 0, 1)))
    assert info.value.reason == "learn_failed" and info.value.outcome is None
    assert lrn.book.stats.labelled == 0 and lrn.n_learned == 0


def test_a_pickled_learner_keeps_the_shape_earlier_builds_wrote_and_read():
    spec = ModelSpec.from_settings(ModelSettings(task="regression", pipeline=SCALED_LINREG))
    lrn = Learner(spec, drift=DriftSettings())
    lrn.process(Event("a", "k", 0.0, {"x": 1.0}, 1.0, True, Origin("t", 0, 0)))
    book, watch = lrn.book.__getstate__(), lrn.drift.__getstate__()
    assert list(book)[-2:] == ["expired", "delays"] and book["expired"] == book["delays"] == []
    assert list(watch)[:3] == ["spec", "task", "outbox"] and watch["outbox"] == []
    restored = pickle.loads(pickle.dumps(lrn))
    assert "expired" not in vars(restored.book) and "outbox" not in vars(restored.drift)
    assert list(vars(restored.book)) == list(vars(lrn.book))
    assert restored.process(Event("b", "k", 1.0, {"x": 2.0}, 2.0, True, Origin("t", 0, 1))) == (
        lrn.process(Event("b", "k", 1.0, {"x": 2.0}, 2.0, True, Origin("t", 0, 1)))
    )
