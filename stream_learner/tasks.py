"""How each task kind scores an event and learns from a label.

A task turns a model's output into the prediction record's fields and into the
value its online metric is updated with, in exactly the way River's
``evaluate.progressive_val_score`` does, so that the service's metric equals
River's on the same stream.

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

from river import base, compose, metrics

__all__ = ["Classification", "Regression", "Scored", "Task", "make_task"]


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

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> None:
        """Learn that ``x`` has label ``y``."""
        ...


def _final_step(model: Any) -> Any:
    if isinstance(model, compose.Pipeline):
        return list(model.steps.values())[-1]
    return model


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
            final = type(_final_step(model))
            self._derive_label = final.predict_one is base.Classifier.predict_one
        if self._derive_label:
            label = max(proba, key=proba.get) if proba else None
        else:
            label = model.predict_one(x)
        return Scored(label, {"proba": proba}, proba if self._metric_wants_proba else label)

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> None:
        """``model.learn_one(x, y)``."""
        model.learn_one(x, y)


class Regression:
    """A single number from ``predict_one``."""

    name = "regression"

    def predict(self, model: Any, x: dict[str, Any]) -> Scored:
        """Score ``x`` with ``predict_one``."""
        y_pred = model.predict_one(x)
        return Scored(y_pred, {}, y_pred)

    def learn(self, model: Any, x: dict[str, Any], y: Any) -> None:
        """``model.learn_one(x, y)``."""
        model.learn_one(x, y)


def make_task(name: str, metric: metrics.base.Metric) -> Task:
    """The task object for a ``model.task`` name."""
    if name == "classification":
        return Classification(metric)
    if name == "regression":
        return Regression()
    raise ValueError(f"unknown task {name!r}")
