"""The learner's drift watch: monitors per model, alerts, and drift actions.

A :class:`DriftWatch` is owned by a :class:`~stream_learner.learner.Learner`.
Each model slot (the partition's model, or one per key when
``model.scope = "key"``) carries a :class:`SlotDrift` with its monitors
(:mod:`stream_learner.drift`): the error stream when labels arrive (0/1 for
classification, absolute error for regression and forecasting), each numeric
feature (up to ``drift.max_features``), the prediction or anomaly score, and the
feature set. Because the monitors live in the slot, a parked per-key model
takes its monitors along, and a checkpoint of the learner holds them all.

Lifecycle changes become :class:`~stream_learner.alerts.Alert` records in an
outbox the service drains (and drops while it replays silently after a restore).

Actions (``drift.action``), on a drift alert of a signal in
``drift.action_signals``:

- ``alert``: nothing more;
- ``reset``: the model is replaced by a fresh one built from the configuration;
- ``challenger``: a model built at the warning (or at the drift, when no warning
  came first) learns every label next to the champion; both are scored with the
  task's metric on the labels since then. Once drift is confirmed and the
  challenger has ``drift.challenger_min_labels`` labels, it replaces the champion
  if its metric is better, else it is dropped.

Predictions always come from the champion. Every reset and every challenger
decision is itself an alert of severity ``info`` (signal ``model``).

Examples
--------
>>> from stream_learner.models import ModelSpec
>>> from stream_learner.settings import DriftSettings, ModelSettings
>>> from stream_learner.tasks import make_task
>>> spec = ModelSpec.from_settings(ModelSettings())
>>> watch = make_watch(spec, make_task("regression", spec.build_metric()), DriftSettings())
>>> watch.drain(), watch.open_counts()
([], {'error': 0, 'feature': 0, 'prediction': 0, 'schema': 0})
>>> make_watch(spec, make_task("regression", spec.build_metric()), None).drain()
[]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream_learner.alerts import Alert, AlertModel, Span
from stream_learner.drift import (
    Change,
    Monitor,
    Rules,
    SchemaMonitor,
    Stamp,
    feature_kind,
    make_detector,
    warning_twin,
)
from stream_learner.events import Event
from stream_learner.models import ModelSpec
from stream_learner.scopes import Slot
from stream_learner.settings import DriftSettings
from stream_learner.tasks import Scored, Task

__all__ = ["Challenger", "DriftWatch", "NullDriftWatch", "SlotDrift", "Watch", "make_watch"]

MONITORED = ("error", "feature", "prediction", "schema")


class Watch(Protocol):
    """What the learner calls; :class:`NullDriftWatch` when drift is disabled."""

    @property
    def outbox(self) -> Sequence[Alert]:
        """The alerts raised since the last drain (read per record: empty is cheap to test)."""
        ...

    def observe(self, slot: Slot, key: str, event: Event, scored: Scored) -> None:
        """An event was scored by ``slot``'s model."""
        ...

    def labelled(
        self, slot: Slot, key: str, x: dict[str, Any], y: Any, metric_input: Any, at: Stamp
    ) -> None:
        """``slot``'s model learned label ``y`` of a prediction made earlier."""
        ...

    def drain(self) -> list[Alert]:
        """The alerts raised since the last drain."""
        ...

    def open_counts(self) -> dict[str, int]:
        """Monitors in drift, per signal."""
        ...

    @property
    def n_open_keys(self) -> int:
        """Models (keys) with at least one monitor in drift."""
        ...


class NullDriftWatch:
    """Drift disabled: nothing is monitored."""

    #: never any alert (a class attribute: pickles of this watch stay as they were)
    outbox: tuple[Alert, ...] = ()

    def observe(self, slot: Slot, key: str, event: Event, scored: Scored) -> None:
        """Nothing."""

    def labelled(
        self, slot: Slot, key: str, x: dict[str, Any], y: Any, metric_input: Any, at: Stamp
    ) -> None:
        """Nothing."""

    def drain(self) -> list[Alert]:
        """Always empty."""
        return []

    def open_counts(self) -> dict[str, int]:
        """Always empty."""
        return {}

    @property
    def n_open_keys(self) -> int:
        """Always 0."""
        return 0


@dataclass
class Challenger:
    """A background model trained since a warning, scored next to the champion."""

    model: Any
    champion_metric: Any
    metric: Any
    series: str
    since: Stamp
    n_labels: int = 0
    n_learned: int = 0
    armed: bool = False


@dataclass
class SlotDrift:
    """The monitors of one model, and its challenger."""

    monitors: dict[str, Monitor] = field(default_factory=dict)
    schema: SchemaMonitor = field(default_factory=SchemaMonitor)
    challenger: Challenger | None = None
    n_features: int = 0


class DriftWatch:
    """Monitors, lifecycle and actions for the models of one learner.

    Parameters
    ----------
    spec
        Builds fresh models (reset, challenger) and metrics; names the model.
    task
        Gives the error and prediction signals, scores and trains challengers.
    settings
        The ``[drift]`` section.
    """

    def __init__(self, spec: ModelSpec, task: Task, settings: DriftSettings) -> None:
        self.spec = spec
        self.task = task
        self.outbox: list[Alert] = []
        self.open_by_signal = dict.fromkeys(MONITORED, 0)
        self.open_keys: dict[str, int] = {}
        self._keyed = spec.scope == "key"
        self._seed = spec.settings.seed
        self.configure(settings)

    def configure(self, settings: DriftSettings) -> None:
        """Apply ``settings`` (also after a restore); fails early on bad detector parameters."""
        self.settings = settings
        self.rules = Rules(settings.cooldown_events, settings.resolve_after_events)
        self.signals = frozenset(settings.signals)
        self.action_signals = frozenset(settings.action_signals)
        self._monitor("feature", "feature:probe")
        self._monitor("error", "error")

    # -- the learner's calls -------------------------------------------------------------

    def observe(self, slot: Slot, key: str, event: Event, scored: Scored) -> None:
        """Update the schema, feature and prediction monitors of ``slot``."""
        sd = _slot_drift(slot)
        signals = self.signals
        at: Stamp = (event.ts, event.origin)
        if "schema" in signals:
            self._schema(slot, sd, key, event.features, at)
        if "feature" in signals:
            self._features(slot, key, sd, event.features, at)
        if "prediction" in signals:
            value = self.task.signal(scored)
            if value is not None:
                self._update(slot, sd, key, "prediction", "prediction", value, at)
        challenger = sd.challenger
        if challenger is not None:
            challenger.n_learned += self.task.observe(challenger.model, event.features)

    def labelled(
        self, slot: Slot, key: str, x: dict[str, Any], y: Any, metric_input: Any, at: Stamp
    ) -> None:
        """Train the challenger, then update the error monitor of ``slot``."""
        sd = _slot_drift(slot)
        if sd.challenger is not None:
            self._train(sd, x, y, metric_input)
        if "error" in self.signals:
            error = self.task.error(y, metric_input)
            if error is not None:
                self._update(slot, sd, key, "error", "error", error, at)
        challenger = sd.challenger
        if challenger is not None and challenger.armed and self._ready(challenger):
            self._decide(slot, key, sd, at)

    def drain(self) -> list[Alert]:
        """The alerts raised since the last drain, oldest first."""
        out, self.outbox = self.outbox, []
        return out

    def open_counts(self) -> dict[str, int]:
        """Monitors in drift, per signal."""
        return dict(self.open_by_signal)

    @property
    def n_open_keys(self) -> int:
        """Models (keys) with at least one monitor in drift."""
        return len(self.open_keys)

    # -- monitors ------------------------------------------------------------------------

    def _monitor(self, signal: str, series: str) -> Monitor:
        s = self.settings
        if signal == "error":
            name, params = s.error_detector, s.error_params
            twin_params = s.warning_params if name == s.detector else {}
        else:
            name, params, twin_params = s.detector, s.params, s.warning_params
        detector = make_detector(name, params, self._seed)
        return Monitor(signal, series, detector, warning_twin(name, twin_params, self._seed))

    def _features(
        self, slot: Slot, key: str, sd: SlotDrift, features: dict[str, Any], at: Stamp
    ) -> None:
        for name, value in features.items():
            if feature_kind(value) != "number":
                continue
            series = f"feature:{name}"
            if series not in sd.monitors:
                if sd.n_features >= self.settings.max_features:
                    continue
                sd.n_features += 1
            self._update(slot, sd, key, "feature", series, float(value), at)

    def _update(
        self,
        slot: Slot,
        sd: SlotDrift,
        key: str,
        signal: str,
        series: str,
        value: float,
        at: Stamp,
    ) -> None:
        monitor = sd.monitors.get(series)
        if monitor is None:
            monitor = sd.monitors[series] = self._monitor(signal, series)
        before = monitor.state
        change = monitor.update(value, at, self.rules)
        if monitor.state != before:
            self._count_open(key, signal, before, monitor.state)
        if change is not None and change.emit:
            self._changed(slot, key, monitor, change, at)

    def _schema(
        self, slot: Slot, sd: SlotDrift, key: str, features: dict[str, Any], at: Stamp
    ) -> None:
        monitor = sd.schema
        before = monitor.state
        changes = monitor.update(features, at, self.rules, self.settings.schema_grace_events)
        if monitor.state != before:
            self._count_open(key, "schema", before, monitor.state)
        for change in changes:
            self._emit(slot, key, change, "schema", "schema", "schema", "none")

    def _count_open(self, key: str, signal: str, before: str, after: str) -> None:
        delta = (after == "drift") - (before == "drift")
        if not delta:
            return
        self.open_by_signal[signal] += delta
        scope = key if self._keyed else ""
        count = self.open_keys.get(scope, 0) + delta
        if count > 0:
            self.open_keys[scope] = count
        else:
            self.open_keys.pop(scope, None)

    # -- alerts and actions --------------------------------------------------------------

    def _changed(self, slot: Slot, key: str, monitor: Monitor, change: Change, at: Stamp) -> None:
        sd = _slot_drift(slot)
        acting = monitor.signal in self.action_signals
        action = "none"
        if acting and change.severity == "warning" and self.settings.action == "challenger":
            action = self._start(slot, sd, monitor.series, at)
        follow_up = None
        if acting and change.severity == "drift":
            action, follow_up = self._act(slot, key, sd, monitor.series, at)
        if change.severity == "resolved" and sd.challenger is not None and not sd.challenger.armed:
            sd.challenger = None
            action = "challenger_dropped"
        self._emit(slot, key, change, monitor.signal, monitor.series, monitor.detector_name, action)
        if follow_up is not None:
            follow_up()

    def _act(self, slot: Slot, key: str, sd: SlotDrift, series: str, at: Stamp) -> tuple[str, Any]:
        if self.settings.action == "reset":
            sd.challenger = None
            self._replace(slot, self.spec.build(), 0)
            return "reset", lambda: self._info(slot, key, series, "reset", {}, at, at)
        if self.settings.action == "challenger":
            action = self._start(slot, sd, series, at)
            challenger = sd.challenger
            assert challenger is not None
            challenger.armed = True
            if self._ready(challenger):
                return "challenger_decided", lambda: self._decide(slot, key, sd, at)
            return action if action != "none" else "challenger_armed", None
        return "none", None

    def _start(self, slot: Slot, sd: SlotDrift, series: str, at: Stamp) -> str:
        if sd.challenger is not None:
            return "none"
        metric = self.spec.build_metric
        sd.challenger = Challenger(self.spec.build(), metric(), metric(), series, at)
        return "challenger_started"

    def _ready(self, challenger: Challenger) -> bool:
        return challenger.n_labels >= self.settings.challenger_min_labels

    def _train(self, sd: SlotDrift, x: dict[str, Any], y: Any, metric_input: Any) -> None:
        ch = sd.challenger
        assert ch is not None
        try:
            mine = self.task.predict(ch.model, x).metric_input
            ch.n_learned += self.task.learn(ch.model, x, y)
        except Exception:  # third-party model code: a challenger that fails is dropped
            sd.challenger = None
            return
        if _usable(metric_input) and _usable(mine):
            ch.champion_metric.update(y, metric_input)
            ch.metric.update(y, mine)
            ch.n_labels += 1

    def _decide(self, slot: Slot, key: str, sd: SlotDrift, at: Stamp) -> None:
        ch = sd.challenger
        assert ch is not None
        sd.challenger = None
        better = ch.metric.is_better_than(ch.champion_metric)
        window = {
            "n": ch.n_labels,
            "metric": type(ch.metric).__name__,
            "champion": float(ch.champion_metric.get()),
            "challenger": float(ch.metric.get()),
        }
        if better:
            self._replace(slot, ch.model, ch.n_learned)
        action = "promoted" if better else "champion_kept"
        self._info(slot, key, ch.series, action, window, ch.since, at)

    def _replace(self, slot: Slot, model: Any, n_learned: int) -> None:
        slot.model = model
        slot.n_learned = n_learned
        slot.generation += 1

    def _info(
        self,
        slot: Slot,
        key: str,
        series: str,
        action: str,
        window: dict[str, Any],
        first: Stamp,
        at: Stamp,
    ) -> None:
        detector = "reset" if action == "reset" else "challenger"
        change = Change("info", window, first, at, True, 0)
        self._emit(slot, key, change, "model", series, detector, action)

    def _emit(
        self,
        slot: Slot,
        key: str,
        change: Change,
        signal: str,
        series: str,
        detector: str,
        action: str,
    ) -> None:
        alert_key = key if self._keyed else None
        span = Span(change.first[0], change.last[0], change.first[1], change.last[1])
        info = self.spec.settings
        model = AlertModel(info.name, info.version, slot.generation)
        message = _message(change.severity, series, action, alert_key)
        self.outbox.append(
            Alert(change.severity, signal, series, detector, alert_key, change.window, span,
                  change.updates, model, action, message)
        )


def _slot_drift(slot: Slot) -> SlotDrift:
    if slot.drift is None:
        slot.drift = SlotDrift()
    drift: SlotDrift = slot.drift
    return drift


def _usable(metric_input: Any) -> bool:
    return metric_input is not None and metric_input != {}


def _message(severity: str, series: str, action: str, key: str | None) -> str:
    where = f" of key {key!r}" if key is not None else ""
    text = {
        "warning": f"warning: {series}{where} may be drifting",
        "drift": f"drift confirmed on {series}{where}",
        "resolved": f"{series}{where} is stable again",
        "info": f"model{where}: {action.replace('_', ' ')} after drift on {series}",
    }[severity]
    return text if severity == "info" or action == "none" else f"{text} ({action.replace('_', ' ')})"


def make_watch(spec: ModelSpec, task: Task, settings: DriftSettings | None) -> Watch:
    """A :class:`DriftWatch`, or the null watch when ``settings`` is None or disabled."""
    if settings is None or not settings.enabled:
        return NullDriftWatch()
    return DriftWatch(spec, task, settings)
