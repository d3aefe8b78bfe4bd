"""The pure core: score an event, join its label, learn, keep the online metric.

A :class:`Learner` holds one shard's state (one input partition): the model
(or one model per key, see :mod:`stream_learner.scopes`), the online metric,
the buffers where predictions wait for labels and labels for events (see
:mod:`stream_learner.labels`), and counters. It does no I/O and reads no
clock: given the same ordered input it produces the same predictions and the
same state, which is what makes recovery and backtests exact. It holds no
locks, handles or lambdas, so a shard is checkpointed by pickling it.

The order is River's progressive validation (``evaluate.progressive_val_score``
and ``stream.simulate_qa``): an event is scored; when its label is known (in
the event itself, or a label record that came early) the metric is updated
with that prediction and the model learns right away; otherwise the
prediction waits, with a copy of the features, and the label record that
comes later updates the metric with the prediction made when the event was
scored and teaches the model those features. With labels delayed by ``k``
events this is exactly ``progressive_val_score(..., delay=k)``.

Every call returns what the record did as one :data:`Outcome`: its prediction,
the labels it made the model learn (with when each was known and its delay),
the label-buffer entries it expired, and the drift alerts it raised, in order.
The learner keeps none of it for later: the service writes it (dead letters for
expired early labels, metrics, alert records), a silent replay drops it.

Bad input never escapes as anything but :class:`~stream_learner.errors.InvalidRecord`:
a model that cannot score an event's features raises ``model_rejected`` (the
state is untouched); a label the model cannot learn does not stop the
prediction: it is returned with ``label_error`` set (``learn_failed``), the
metric is not updated and ``n_learned`` does not move. A label record that
cannot be learned raises :class:`~stream_learner.errors.InvalidLabel`. The
metric and the drift monitors read the record's values too: when one of them
raises, the model has still learned (and the event is still predicted), and
the error travels the same way (``metric_failed``, ``drift_failed``). A record
refused after it changed something (a label learned, an entry expired, an alert
raised) carries its outcome in the error's ``outcome``.

Examples
--------
>>> from stream_learner.events import Event, Label, Origin
>>> from stream_learner.models import ModelSpec
>>> from stream_learner.settings import ModelSettings
>>> learner = Learner(ModelSpec.from_settings(ModelSettings()))
>>> ev = Event("e1", "pipe-1", 0.0, {"hour": 3}, 101.5, True, Origin("events", 0, 0))
>>> prediction, joined, expired, alerts = learner.process(ev)
>>> prediction.prediction, prediction.model.n_learned, joined
(0.0, 0, (('inline', 0, 0.0),))
>>> learner.n_learned
1

A label record for an event scored earlier:

>>> ev = Event("e2", "pipe-1", 1.0, {"hour": 4}, None, False, Origin("events", 0, 1))
>>> prediction, joined, expired, alerts = learner.process(ev)
>>> prediction.model.n_learned, joined, len(learner.book.pending)
(1, (), 1)
>>> learner.process(Label("e2", "pipe-1", 9.0, 99.0, Origin("events", 0, 2)))
(None, (('late', 0, 0.0),), (), ())
>>> learner.n_learned, learner.book.stats.coverage
(2, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stream_learner.drift import Alert, DriftWatch, MonitorFailed, Watch, make_watch
from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.events import Event, Label, ModelInfo, Prediction, preview
from stream_learner.labels import Expired, Joined, LabelBook
from stream_learner.models import ModelSpec
from stream_learner.scopes import Slot, make_models
from stream_learner.settings import DriftSettings, LabelSettings
from stream_learner.tasks import make_task

__all__ = ["NOTHING", "Learner", "Outcome"]

#: ``tuple.__new__``: a named tuple from a tuple of its fields, without the Python frame
#: of the class's ``__new__`` (the same object; two are built per event)
_new = tuple.__new__

#: What one record did: ``(prediction, joined, expired, alerts)``, each part in the
#: order it happened.
#:
#: ``prediction``
#:     The event's prediction; None for a label record.
#: ``joined``
#:     The labels the record made the model learn (an inline label, an early label
#:     joined to this event, or this label record joined to its prediction), each
#:     with when it was known and its delay.
#: ``expired``
#:     The label-buffer entries the record expired (by age on the shard's clock, or
#:     by count), for the service to count and dead-letter.
#: ``alerts``
#:     The drift alerts the record raised.
#:
#: A plain tuple, one per record (a named tuple costs about 1 % of the service's
#: time per event, ``scripts/bench_core.py``); the parts that are usually empty are
#: empty tuples, shared.
Outcome = tuple[Prediction | None, tuple[Joined, ...], Sequence[Expired], Sequence[Alert]]

#: what :meth:`Learner._learn` returns when the model learned nothing
_NOTHING_LEARNED = frozenset({"learn_failed", "invalid_label"})


def _label_kinds(y: Any) -> str:
    """``strings`` or ``numbers`` (integers and booleans): River's classifiers sort their
    classes, and a string does not compare with a number.

    >>> _label_kinds("pump"), _label_kinds(3), _label_kinds(True)
    ('strings', 'numbers', 'numbers')
    """
    return "strings" if isinstance(y, str) else "numbers"


#: a label record that waits for its event and changed nothing else (shared)
NOTHING: Outcome = (None, (), (), ())


class Learner:
    """One shard's models, metric, label buffers and counters.

    Parameters
    ----------
    spec
        Builds the models and the metric.
    labels
        Whether inline labels are learned, and the limits of the label buffers.
    drift
        Drift monitors and actions (see :mod:`stream_learner.drift.watch`); none when
        ``None`` or disabled.
    """

    #: classification: the kind of the labels learned (``strings`` or ``numbers``); a label
    #: of the other kind is refused (``invalid_label``), as it would break River's classifiers
    label_kinds: str | None = None

    def __init__(
        self,
        spec: ModelSpec,
        labels: LabelSettings | None = None,
        drift: DriftSettings | None = None,
    ) -> None:
        labels = labels or LabelSettings()
        self.spec = spec
        self.models = make_models(spec)
        self.metric = spec.build_metric()
        self.task = make_task(spec.task, self.metric, spec.settings.horizon)
        self.drift: Watch = make_watch(spec, self.task, drift)
        self.book = LabelBook(labels)
        self.n_predicted = 0
        self.n_learned = 0
        self._inline = labels.inline
        self._classifies = spec.task == "classification"
        self._name = spec.settings.name
        self._version = spec.settings.version

    def process(self, item: Event | Label) -> Outcome:
        """Handle one decoded record: what it did (an event's has a prediction).

        Raises
        ------
        InvalidRecord
            ``model_rejected``: the model raised on the event's features.
        InvalidLabel
            ``learn_failed``: the model raised learning a label record;
            ``metric_failed``, ``drift_failed``: it learned it, the metric or
            the drift monitors could not use it.
        """
        if isinstance(item, Label):
            return self.process_label(item)
        return self.process_event(item)

    def process_event(self, event: Event) -> Outcome:
        """Score ``event``; learn its label now if it is known, else keep it pending.

        Raises
        ------
        InvalidRecord
            ``model_rejected``: the model raised on the event's features.
        """
        book, task = self.book, self.task
        event_id, key, ts, x, y, has_label, origin, label_error = event
        expired = book.tick(ts)
        slot = self.models.get(key)
        info = _new(ModelInfo, (self._name, self._version, slot.n_learned, slot.generation))
        try:
            scored = task.predict(slot.model, x)
        except Exception as exc:  # the model is third-party code: map its errors here
            error = InvalidRecord(
                "model_rejected", f"the model cannot score these features: {_describe(exc)}"
            )
            if expired:  # the event still moved the shard's clock
                error.outcome = (None, (), expired, ())
            raise error from exc
        when: str | None = None
        kept = x
        if has_label and self._inline:
            when = "inline"
        else:
            early = book.claim_early(key, event_id)
            if early is not None:
                when, y = "early", early.label
            else:
                kept = dict(x)  # the features as they are when scored wait for the label
        try:
            n = task.observe(slot.model, x)
        except Exception as exc:
            label_error = InvalidLabel(
                "learn_failed", f"the model cannot learn this event: {_describe(exc)}"
            )
        else:
            if n:
                self._count_learned(slot, n)
        self.n_predicted += 1
        book.stats.predictions += 1
        try:
            alerts = self.drift.observe(slot, key, event, scored)
        except Exception as exc:  # monitors read the record's values: map their errors here
            alerts = _raised_before(exc)
            label_error = label_error or _monitor_error(exc)
        prediction, fields, metric_input = scored
        joined: tuple[Joined, ...] = ()
        if when is None:
            more = book.hold(key, event_id, kept, metric_input, ts)
            if more:
                expired = [*expired, *more]
        else:
            learn_error = self._learn(slot, x, y, metric_input)
            if learn_error is None or learn_error.reason not in _NOTHING_LEARNED:
                joined = book.labelled(when)
                try:
                    raised = self.drift.labelled(slot, key, x, y, metric_input, (ts, *origin))
                except Exception as exc:  # monitors read the record's values
                    raised = _raised_before(exc)
                    learn_error = learn_error or _monitor_error(exc)
                if raised:
                    alerts = [*alerts, *raised]
            label_error = learn_error or label_error
        out = _new(Prediction, (event_id, key, ts, prediction, fields, info, origin, label_error))
        return out, joined, expired, alerts

    def process_label(self, label: Label) -> Outcome:
        """Join a label record to its pending prediction and learn; else wait for the event.

        Raises
        ------
        InvalidLabel
            ``learn_failed``: the model raised while learning it; ``metric_failed``,
            ``drift_failed``: it learned it, the metric or the monitors could not
            use it (the error's ``outcome`` has the label learned and any alerts).
        """
        book = self.book
        entry = book.claim(label.key, label.id)
        if entry is None:
            expired = book.wait(label)
            return (None, (), expired, ()) if expired else NOTHING
        at = (label.ts, *label.origin)
        slot = self.models.get(label.key)
        x, y, metric_input = entry.x, label.label, entry.metric_input
        error = self._learn(slot, x, y, metric_input)
        if error is not None and error.reason in _NOTHING_LEARNED:
            raise error
        try:
            alerts = self.drift.labelled(slot, label.key, x, y, metric_input, at)
        except Exception as exc:  # monitors read the record's values
            alerts = _raised_before(exc)
            error = error or _monitor_error(exc)
        outcome: Outcome = (None, book.labelled("late", book.delay_of(entry)), (), alerts)
        if error is not None:
            error.outcome = outcome
            raise error
        return outcome

    def _learn(
        self, slot: Slot, x: dict[str, Any], y: Any, metric_input: Any
    ) -> InvalidLabel | None:
        """Teach ``slot``'s model label ``y`` and update the metric (the caller then drift).

        Returns why not everything was done, or None: ``invalid_label`` (a
        classification label of another kind than those learned before: nothing
        was learned), ``learn_failed`` (nothing was learned), ``metric_failed``
        (the model learned the label; the metric skipped it).
        """
        if self._classifies and (kinds := _label_kinds(y)) != self.label_kinds:
            if self.label_kinds is not None:
                return InvalidLabel(
                    "invalid_label",
                    f"a classification label must be of the kind of the labels learned "
                    f"before ({self.label_kinds}), got {preview(y)}",
                )
            self.label_kinds = kinds
        try:
            n = self.task.learn(slot.model, x, y)
        except Exception as exc:  # the model is third-party code: map its errors here
            return InvalidLabel(
                "learn_failed", f"the model cannot learn this label: {_describe(exc)}"
            )
        slot.n_learned += n  # _count_learned, inline: this runs for every label
        self.n_learned += n
        error = None
        if metric_input is not None and metric_input != {}:
            try:
                self.metric.update(y, metric_input)
            except Exception as exc:
                error = InvalidLabel(
                    "metric_failed",
                    f"the model learned this label, the metric cannot use it: {_describe(exc)}",
                )
        return error

    def use_drift(self, settings: DriftSettings) -> None:
        """Apply the running ``[drift]`` settings to a learner restored from a checkpoint.

        Monitors already built keep their detectors; the lifecycle rules and the
        action follow ``settings``. Enabling or disabling drift swaps the watch.
        """
        if isinstance(self.drift, DriftWatch) and settings.enabled:
            self.drift.configure(settings)
        elif isinstance(self.drift, DriftWatch) != settings.enabled:
            self.drift = make_watch(self.spec, self.task, settings)

    def _count_learned(self, slot: Slot, n: int) -> None:
        slot.n_learned += n
        self.n_learned += n

    @property
    def model(self) -> Any:
        """The model of a partition-scoped learner (per-key learners: ``models.get(key)``)."""
        return self.models.get("").model

    @property
    def metric_value(self) -> float:
        """Current value of the online metric."""
        return float(self.metric.get())


def _raised_before(exc: Exception) -> Sequence[Alert]:
    """The alerts the record raised before the drift watch failed with ``exc``."""
    return exc.alerts if isinstance(exc, MonitorFailed) else ()


def _monitor_error(exc: Exception) -> InvalidLabel:
    cause = exc.__cause__ if isinstance(exc, MonitorFailed) else exc  # the monitor's own
    return InvalidLabel(
        "drift_failed", f"the drift monitors cannot use this record: {_describe(cause or exc)}"
    )


def _describe(exc: BaseException, limit: int = 200) -> str:
    text = str(exc)
    if len(text) > limit:
        text = f"{text[:limit]}...({len(text)} chars)"
    return f"{type(exc).__name__}: {text}"
