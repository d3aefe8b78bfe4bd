"""The pure core: score an event, learn its label, keep the online metric.

A :class:`Learner` holds one shard's state (one input partition): the model,
the online metric and counters. It does no I/O and reads no clock: given the
same ordered input it produces the same predictions and the same state, which
is what makes recovery and backtests exact.

The order is River's progressive validation: predict, then learn the label and
update the metric with the prediction made before learning
(``evaluate.progressive_val_score``).

Bad input never escapes as anything but :class:`~stream_learner.errors.InvalidRecord`:
a model that cannot score an event's features raises ``model_rejected`` (the
state is untouched); a label the model cannot learn does not stop the
prediction: it is returned with ``label_error`` set (``learn_failed``), the
metric is not updated and ``n_learned`` does not move.

Examples
--------
>>> from stream_learner.events import Event, Origin
>>> from stream_learner.models import ModelSpec
>>> from stream_learner.settings import ModelSettings
>>> learner = Learner(ModelSpec.from_settings(ModelSettings()))
>>> ev = Event("e1", "pipe-1", 0.0, {"hour": 3}, 101.5, True, Origin("events", 0, 0))
>>> p = learner.process(ev)
>>> p.prediction, p.model.n_learned, learner.n_learned
(0.0, 0, 1)
>>> _ = learner.process(Event("e2", "pipe-1", 0.0, {"hour": 4}, 99.0, True, Origin("events", 0, 1)))
>>> bad = Event("e3", "pipe-1", 0.0, {"hour": "five"}, None, False, Origin("events", 0, 2))
>>> learner.process(bad)
Traceback (most recent call last):
...
stream_learner.errors.InvalidRecord: model_rejected: the model cannot score these features: ...
"""

from __future__ import annotations

from typing import Any

from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import Event, Label, ModelInfo, Prediction
from stream_learner.models import ModelSpec
from stream_learner.tasks import make_task

__all__ = ["Learner"]


class Learner:
    """One shard's model, metric and counters.

    Parameters
    ----------
    spec
        Builds the model and the metric.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.model = spec.build()
        self.metric = spec.build_metric()
        self.task = make_task(spec.task, self.metric)
        self.n_predicted = 0
        self.n_learned = 0
        self._name = spec.settings.name
        self._version = spec.settings.version

    def process(self, item: Event | Label) -> Prediction | None:
        """Handle one decoded record: an event gives a prediction, a label gives none.

        Raises
        ------
        InvalidLabel
            For a label-only record: its event is unknown to this learner.
        InvalidRecord
            ``model_rejected``: the model raised on the event's features.
        """
        if isinstance(item, Label):
            raise InvalidLabel(
                "unknown_id", f"no pending prediction with id {item.id!r} for key {item.key!r}"
            )
        return self.predict_one(item)

    def predict_one(self, event: Event) -> Prediction:
        """Score ``event``; when it carries its label, learn it and update the metric."""
        x = event.features
        try:
            scored = self.task.predict(self.model, x)
        except Exception as exc:  # the model is third-party code: map its errors here
            raise InvalidRecord(
                "model_rejected", f"the model cannot score these features: {_describe(exc)}"
            ) from exc
        info = ModelInfo(self._name, self._version, self.n_learned)
        self.n_predicted += 1
        label_error = event.label_error
        if event.has_label:
            label_error = self._learn(x, event.label, scored.metric_input)
        return Prediction(
            event.id,
            event.key,
            event.ts,
            scored.prediction,
            scored.fields,
            info,
            event.origin,
            label_error,
        )

    def _learn(self, x: dict[str, Any], y: Any, metric_input: Any) -> InvalidLabel | None:
        try:
            self.task.learn(self.model, x, y)
        except Exception as exc:  # the model is third-party code: map its errors here
            return InvalidLabel(
                "learn_failed", f"the model cannot learn this event: {_describe(exc)}"
            )
        if metric_input is not None and metric_input != {}:
            self.metric.update(y, metric_input)
        self.n_learned += 1
        return None

    @property
    def metric_value(self) -> float:
        """Current value of the online metric."""
        return float(self.metric.get())


def _describe(exc: Exception, limit: int = 200) -> str:
    text = str(exc)
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} chars)"
    return f"{type(exc).__name__}: {text}"
