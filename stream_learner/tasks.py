"""How each task kind scores an event and learns from a label.

A task turns a model's output into the prediction record's fields and into the
value its online metric is updated with, in exactly the way River's
``evaluate.progressive_val_score`` does, so that the service's metric equals
River's on the same stream.

Supervised tasks (classification, regression, forecasting) learn when the
label arrives (:meth:`Task.learn`); anomaly detection learns from every event
right after scoring it (:meth:`Task.observe`) and uses labels, when there are
any, only for its metric. Both methods return how many ``learn_one`` calls they
made, so the caller counts without asking which task it has.

Examples
--------
>>> from river import linear_model, metrics
>>> task = make_task("regression", metrics.MAE())
>>> model = linear_model.LinearRegression()
>>> task.predict(model, {"x": 1.0})
Scored(prediction=0.0, fields={}, metric_input=0.0)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from river import base, metrics

from stream_learner.models import final_step

__all__ = [
    "AnomalyDetection",
    "Classification",
    "Forecasting",
    "Regression",
    "Scored",
    "Task",
    "make_task",
]


class Scored(NamedTuple):
    """What a task makes of one model output."""

    prediction: Any
    fields: dict[str, Any]
    metric_input: Any


class Task(Protocol):
    """Scores events and learns labels for one task kind."""

    name: str

    def predict(self, model: Any, x: dict[str, Any]) -> Scored:
        """Score ``x`` without learning."""
        ...

    def observe(self, model: Any, x: dict[str, Any]) -> int:
        """Learn from ``x`` alone, right after scoring it; return the ``learn_one`` calls made."""
        ...

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> int:
        """Learn that ``x`` has label ``y``; return the ``learn_one`` calls made."""
        ...

    def error(self, y: Any, metric_input: Any) -> float | None:
        """The error of a prediction (its metric input) once its label ``y`` is known."""
        ...

    def signal(self, scored: Scored) -> float | None:
        """The number the prediction drift monitor follows (None: nothing to follow)."""
        ...


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _absolute_error(y: Any, y_pred: Any) -> float | None:
    y, y_pred = _number(y), _number(y_pred)
    return None if y is None or y_pred is None else abs(y - y_pred)


class Classification:
    """Class probabilities plus River's ``predict_one`` label."""

    name = "classification"

    def __init__(self, metric: metrics.base.Metric) -> None:
        self._metric_wants_proba = not getattr(metric, "requires_labels", True)
        self._derive_label: bool | None = None

    def predict(self, model: Any, x: dict[str, Any]) -> Scored:
        """Score ``x``: ``proba`` field and the most probable class."""
        proba = model.predict_proba_one(x)
        if self._derive_label is None:
            # Base classifiers' predict_one is the argmax of predict_proba_one:
            # derive it instead of running the model twice.
            final = type(final_step(model))
            self._derive_label = final.predict_one is base.Classifier.predict_one
        if self._derive_label:
            label = max(proba, key=proba.get) if proba else None
        else:
            label = model.predict_one(x)
        return Scored(label, {"proba": proba}, proba if self._metric_wants_proba else label)

    def observe(self, model: Any, x: dict[str, Any]) -> int:
        """Nothing: a supervised model waits for the label."""
        return 0

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> int:
        """``model.learn_one(x, y)``."""
        model.learn_one(x, y)
        return 1

    def error(self, y: Any, metric_input: Any) -> float | None:
        """1.0 when the predicted class (argmax of the probabilities) is wrong, else 0.0.

        Examples
        --------
        >>> from river import metrics
        >>> task = Classification(metrics.Accuracy())
        >>> task.error(1, 1), task.error(1, {0: 0.7, 1: 0.3}), task.error(1, None)
        (0.0, 1.0, 1.0)
        """
        if isinstance(metric_input, dict):
            metric_input = max(metric_input, key=metric_input.__getitem__) if metric_input else None
        return float(metric_input != y)

    def signal(self, scored: Scored) -> float | None:
        """The probability of the predicted class (the model's confidence)."""
        proba = scored.fields.get("proba")
        return float(max(proba.values())) if proba else None


class Regression:
    """A single number from ``predict_one``."""

    name = "regression"

    def predict(self, model: Any, x: dict[str, Any]) -> Scored:
        """Score ``x`` with ``predict_one``."""
        y_pred = model.predict_one(x)
        return Scored(y_pred, {}, y_pred)

    def observe(self, model: Any, x: dict[str, Any]) -> int:
        """Nothing: a supervised model waits for the label."""
        return 0

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> int:
        """``model.learn_one(x, y)``."""
        model.learn_one(x, y)
        return 1

    def error(self, y: Any, metric_input: Any) -> float | None:
        """The absolute error ``|y - y_pred|``.

        Examples
        --------
        >>> Regression().error(3.0, 1.5), Regression().error(3.0, None)
        (1.5, None)
        """
        return _absolute_error(y, metric_input)

    def signal(self, scored: Scored) -> float | None:
        """The predicted value."""
        return _number(scored.prediction)


class AnomalyDetection:
    """An anomaly score for every event, and whether it passes the threshold.

    The model's last step is a River anomaly filter (``anomaly.ThresholdFilter``,
    ``anomaly.QuantileFilter``; see ``model.anomaly_threshold``), whose ``classify``
    gives ``is_anomaly``. The detector learns from every event right after scoring
    it (``learn_one(x)``, no label); a label, when one arrives, only updates the
    metric with the score, as ``evaluate.progressive_val_score`` does for a detector.

    Examples
    --------
    >>> from river import anomaly, metrics
    >>> task = make_task("anomaly", metrics.ROCAUC())
    >>> model = anomaly.ThresholdFilter(
    ...     anomaly.HalfSpaceTrees(window_size=3, seed=1), threshold=0.8)
    >>> for v in [0.1, 0.2, 0.15]:
    ...     _ = task.predict(model, {"x": v})
    ...     _ = task.observe(model, {"x": v})
    >>> task.predict(model, {"x": 0.9})  # doctest: +ELLIPSIS
    Scored(prediction=True, fields={'score': 0.99..., 'is_anomaly': True}, metric_input=0.99...)
    >>> task.observe(model, {"x": 0.9}), task.learn(model, {"x": 0.9}, True)
    (1, 0)
    """

    name = "anomaly"

    def predict(self, model: Any, x: dict[str, Any]) -> Scored:
        """``score_one`` and the filter's ``classify``; the metric gets the score."""
        score = float(model.score_one(x))  # some detectors return an int 0 at first
        is_anomaly = bool(final_step(model).classify(score))
        return Scored(is_anomaly, {"score": score, "is_anomaly": is_anomaly}, score)

    def observe(self, model: Any, x: dict[str, Any]) -> int:
        """``model.learn_one(x)``: detectors learn without labels."""
        model.learn_one(x)
        return 1

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> int:
        """Nothing to learn: the label only scores the detector."""
        return 0

    def error(self, y: Any, metric_input: Any) -> float | None:
        """None: a score is not a prediction of the label (the score is the signal)."""
        return None

    def signal(self, scored: Scored) -> float | None:
        """The anomaly score."""
        return _number(scored.fields.get("score"))


class Forecasting:
    """A ``horizon``-step forecast made before the observed value is learned.

    The event's label is the observed value ``y`` of its series (one series per
    key). ``forecast`` is ``model.forecast(horizon)``, the event's features (if
    any) being the exogenous features of every step; ``prediction`` and the
    metric input are its first step, the forecast of ``y`` itself. Then the model
    learns ``learn_one(y=y, x=x)``. A model with too little history to forecast
    (e.g. ``time_series.HoltWinters`` before its first values) forecasts ``null``.

    Examples
    --------
    >>> from river import metrics, time_series
    >>> task = make_task("forecasting", metrics.MAE(), horizon=2)
    >>> model = time_series.HoltWinters(alpha=0.5)
    >>> task.predict(model, {})
    Scored(prediction=None, fields={'forecast': None}, metric_input=None)
    >>> task.learn(model, {}, 10.0), task.learn(model, {}, 12.0)
    (1, 1)
    >>> task.predict(model, {})
    Scored(prediction=11.0, fields={'forecast': [11.0, 11.0]}, metric_input=11.0)
    """

    name = "forecasting"

    def __init__(self, horizon: int = 1) -> None:
        self.horizon = horizon

    def predict(self, model: Any, x: dict[str, Any]) -> Scored:
        """``model.forecast(horizon)`` before the value is known."""
        xs = [x] * self.horizon if x else None
        try:
            forecast = list(model.forecast(horizon=self.horizon, xs=xs))
        except (IndexError, ZeroDivisionError):  # not enough history yet
            return Scored(None, {"forecast": None}, None)
        first = forecast[0]
        return Scored(first, {"forecast": forecast}, first)

    def observe(self, model: Any, x: dict[str, Any]) -> int:
        """Nothing: the observed value comes as the label."""
        return 0

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> int:
        """``model.learn_one(y=y, x=x)``."""
        model.learn_one(x=x, y=y)
        return 1

    def error(self, y: Any, metric_input: Any) -> float | None:
        """The absolute error of the one-step forecast."""
        return _absolute_error(y, metric_input)

    def signal(self, scored: Scored) -> float | None:
        """The one-step forecast."""
        return _number(scored.prediction)


def make_task(name: str, metric: metrics.base.Metric, horizon: int = 1) -> Task:
    """The task object for a ``model.task`` name."""
    if name == "classification":
        return Classification(metric)
    if name == "regression":
        return Regression()
    if name == "anomaly":
        return AnomalyDetection()
    if name == "forecasting":
        return Forecasting(horizon)
    raise ValueError(f"unknown task {name!r}")
