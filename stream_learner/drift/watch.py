"""The learner's drift watch: monitors per model, alerts, and drift actions.

A :class:`DriftWatch` is owned by a :class:`~stream_learner.learner.Learner`.
Each model slot (the partition's model, or one per key when
``model.scope = "key"``) carries a :class:`SlotDrift` with its monitors
(:mod:`stream_learner.drift.monitors`): the error stream when labels arrive (0/1 for
classification, absolute error for regression and forecasting), each numeric
feature (up to ``drift.max_features``), the prediction or anomaly score, and the
feature set. Because the monitors live in the slot, a parked per-key model
takes its monitors along, and a checkpoint of the learner holds them all.

Each call of the learner works on one slot through the watch's
:class:`SlotContext` (the slot, its key, its drift state and the record's stamp). Lifecycle changes become
:class:`~stream_learner.drift.alerts.Alert` records, returned in order by the
methods that raise them, up to the learner's :data:`~stream_learner.learner.Outcome`
of the record (which the service writes, or drops while it replays silently after
a restore). A monitor that raises on a record's values stops that record's
updates with :class:`MonitorFailed`, which carries the alerts raised before it. A drift
action replaces a model through :meth:`~stream_learner.scopes.Slot.replace`.

Calibration:

- the error monitor follows the error getting *worse*; a detection of the error
  going down is an ``info`` record (action ``none``), not an alert;
- warm-up: after start, restore, reset and promotion, a slot's monitors feed
  their detectors but change nothing until the model has learned
  ``drift.warmup_labels`` labels (or, while no label comes at all, seen as many
  events); a replaced model also gets fresh monitors;
- the signals that cannot see the error (prediction, feature, schema) raise
  warnings, not drifts, while labels flow; they page (drift) once no label has
  come for ``drift.blind_pages_after_events`` events.

Actions (``drift.action``), on a drift alert of a signal in
``drift.action_signals``:

- ``alert``: nothing more;
- ``reset``: the model is replaced by a fresh one built from the configuration,
  which first learns the labelled events kept since the error rose
  (``drift.reset_replay_labels``). The replaced model keeps learning beside it
  as a *fallback* for ``drift.reset_trial_labels`` labels, and comes back if
  it scores better on the last half of them by ``drift.challenger_margin``
  (a reset that made things worse is undone); a reset made while labels are
  absent (the blind signals page) is final;
- ``challenger``: a model built at the warning (or at the drift, when no warning
  came first) learns every label next to the champion. Once drift is confirmed
  it trains through ``drift.challenger_labels`` more labels; both models are
  scored with the task's metric on the last ``drift.challenger_recent_labels``
  of them, and the challenger replaces the champion if it is better by
  ``drift.challenger_margin`` (relative), else it is dropped.

Predictions always come from the champion. Every reset and every challenger
decision is itself an alert of severity ``info`` (signal ``model``).

Examples
--------
>>> from stream_learner.models import ModelSpec
>>> from stream_learner.settings import DriftSettings, ModelSettings
>>> from stream_learner.tasks import make_task
>>> spec = ModelSpec.from_settings(ModelSettings())
>>> watch = make_watch(spec, make_task("regression", spec.build_metric()), DriftSettings())
>>> watch.open_counts(), watch.n_open_keys
({'error': 0, 'feature': 0, 'prediction': 0, 'schema': 0}, 0)
>>> make_watch(spec, make_task("regression", spec.build_metric()), None).open_counts()
{}
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stream_learner.drift.alerts import Alert, AlertModel, Span
from stream_learner.drift.monitors import (
    Change,
    Monitor,
    Rules,
    SchemaMonitor,
    Stamp,
    detector_params,
    feature_kind,
    make_detector,
    origin,
    warning_twin,
)
from stream_learner.events import Event
from stream_learner.models import ModelSpec
from stream_learner.scopes import Slot
from stream_learner.settings import SIGNALS, DriftSettings
from stream_learner.tasks import Scored, Task

__all__ = [
    "MONITORED",
    "Challenger",
    "DriftWatch",
    "MonitorFailed",
    "NullDriftWatch",
    "SlotContext",
    "SlotDrift",
    "Watch",
    "make_watch",
    "rise_start",
]

MONITORED = SIGNALS

#: no alert (the common case: returned without building a list)
_QUIET: tuple[Alert, ...] = ()


class MonitorFailed(Exception):
    """A monitor raised on a record's values; the record's other updates were skipped.

    The monitor's exception is the ``__cause__``; ``alerts`` are those the
    record raised before it, in order.
    """

    def __init__(self, alerts: Sequence[Alert]) -> None:
        super().__init__("a drift monitor raised on this record")
        self.alerts = alerts


class Watch(Protocol):
    """What the learner calls; :class:`NullDriftWatch` when drift is disabled.

    Both updates return the alerts they raised, in order (usually none: an
    empty tuple), or raise :class:`MonitorFailed`.
    """

    def observe(self, slot: Slot, key: str, event: Event, scored: Scored) -> Sequence[Alert]:
        """An event was scored by ``slot``'s model."""
        ...

    def labelled(
        self, slot: Slot, key: str, x: dict[str, Any], y: Any, metric_input: Any, at: Stamp
    ) -> Sequence[Alert]:
        """``slot``'s model learned label ``y`` of a prediction made earlier."""
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

    def observe(self, slot: Slot, key: str, event: Event, scored: Scored) -> Sequence[Alert]:
        """Nothing: no alert."""
        return _QUIET

    def labelled(
        self, slot: Slot, key: str, x: dict[str, Any], y: Any, metric_input: Any, at: Stamp
    ) -> Sequence[Alert]:
        """Nothing: no alert."""
        return _QUIET

    def open_counts(self) -> dict[str, int]:
        """Always empty."""
        return {}

    @property
    def n_open_keys(self) -> int:
        """Always 0."""
        return 0


@dataclass
class Challenger:
    """A background model trained since a warning, scored next to the champion.

    ``armed_at`` is ``n_labels`` when drift was confirmed (None before); the
    metrics are started afresh for the last labels of the window after it.
    ``fallback``: the model a reset replaced, armed at the reset; it comes back
    if it proves better than the fresh model.
    """

    model: Any
    champion_metric: Any
    metric: Any
    series: str
    since: Stamp
    n_labels: int = 0
    n_learned: int = 0
    armed_at: int | None = None
    fallback: bool = False

    @property
    def armed(self) -> bool:
        """Drift was confirmed: the challenger is trained through its window."""
        return self.armed_at is not None


@dataclass
class SlotDrift:
    """The monitors of one model, its challenger, and its warm-up and label counts."""

    monitors: dict[str, Monitor] = field(default_factory=dict)
    schema: SchemaMonitor = field(default_factory=SchemaMonitor)
    challenger: Challenger | None = None
    n_features: int = 0
    #: the watch's epoch this slot warmed up in (a restore starts a new one)
    epoch: int = -1
    warm: bool = False
    #: labels learned during the warm-up, and events seen, since start, restore or replacement
    learned: int = 0
    seen: int = 0
    #: ``seen`` at the last label
    label_seen: int = 0
    #: ``seen`` from which an event may end the warm-up or make the blind signals page
    due: int = 0
    #: the signals blind to the error page (labels absent or late)
    blind: bool = False
    #: action ``reset``: the last labelled events (features, label, error), replayed to a
    #: fresh model from where the error rose
    recent: deque[tuple[dict[str, Any], Any, float]] | None = None


class SlotContext:
    """The slot one call of the learner is about: the slot, its key, its drift state, the stamp.

    A watch keeps one context and fills it at the start of each call of the
    learner (no object per event); its methods read it and keep nothing of it.
    It is not part of a checkpoint.
    """

    __slots__ = ("at", "key", "slot", "state")

    #: the model slot (its model, learn count and generation)
    slot: Slot
    #: the entity key of the record (partition scope: any key, one slot)
    key: str
    #: the slot's monitors, challenger and warm-up counts (``slot.drift``)
    state: SlotDrift
    #: the record's event time and offset
    at: Stamp


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
        self.open_by_signal = dict.fromkeys(MONITORED, 0)
        self.open_keys: dict[str, int] = {}
        self._keyed = spec.scope == "key"
        self._seed = spec.settings.seed
        self.epoch = 0
        self._ctx = SlotContext()
        self.configure(settings)

    def __getstate__(self) -> dict[str, Any]:
        """The watch's state without its context, in the shape checkpoints have always had.

        Earlier builds kept a list of alerts after ``task``, always empty when a
        checkpoint was taken; it is written as such, so a checkpoint is the same
        bytes as before and the build before can still read it.
        """
        state: dict[str, Any] = {}
        for name, value in self.__dict__.items():
            if name != "_ctx":
                state[name] = value
            if name == "task":
                state["outbox"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore ``state`` (without the alert list of earlier builds), with a fresh context."""
        self.__dict__.update(state)
        self.__dict__.pop("outbox", None)
        self._ctx = SlotContext()

    def configure(self, settings: DriftSettings) -> None:
        """Apply ``settings`` (also after a restore: every slot warms up again).

        Fails early on bad detector parameters.
        """
        self.settings = settings
        self.rules = Rules(settings.cooldown_events, settings.resolve_after_events)
        self.signals = frozenset(settings.signals)
        self.action_signals = frozenset(settings.action_signals)
        self.warmup = settings.warmup_labels
        self.blind_after = settings.blind_pages_after_events
        self.replay = settings.reset_replay_labels if settings.action == "reset" else 0
        self.epoch += 1
        self._monitor("feature", "feature:probe")
        self._monitor("error", "error")

    # -- the learner's calls -------------------------------------------------------------

    def observe(self, slot: Slot, key: str, event: Event, scored: Scored) -> Sequence[Alert]:
        """Update the schema, feature and prediction monitors of ``slot``; the alerts raised.

        Raises
        ------
        MonitorFailed
            A monitor raised on the event's values (the alerts before it go with it).
        """
        raised: Sequence[Alert] = _QUIET
        try:
            sd = slot.drift
            if sd is None or sd.epoch != self.epoch:
                sd = self._state(slot)
            sd.seen += 1
            if sd.seen >= sd.due:
                self._due(sd)
            at: Stamp = (event.ts, *event.origin)
            signals = self.signals
            features = event.features
            if "schema" in signals:
                schema = sd.schema
                before = schema.state
                changes = schema.update(features, at, self.rules, self.settings.schema_grace_events)
                if changes or schema.state != before:
                    ctx = self._context(slot, key, sd, at)
                    raised = self._schema_changed(ctx, before, changes)
            if "feature" in signals:  # per feature, so a failing one keeps the alerts before it
                for name, value in features.items():
                    series = self._feature_series(sd, name, value)
                    if series is not None:
                        more = self._update(slot, key, sd, "feature", series, float(value), at)
                        if more:
                            raised = [*raised, *more]
            if "prediction" in signals:
                value = self.task.signal(scored)
                if value is not None:
                    more = self._update(slot, key, sd, "prediction", "prediction", value, at)
                    if more:
                        raised = [*raised, *more]
            challenger = sd.challenger
            if challenger is not None:
                challenger.n_learned += self.task.observe(challenger.model, features)
        except Exception as exc:  # monitors read the record's values
            raise MonitorFailed(raised) from exc
        return raised

    def labelled(
        self, slot: Slot, key: str, x: dict[str, Any], y: Any, metric_input: Any, at: Stamp
    ) -> Sequence[Alert]:
        """Train the challenger, then update the error monitor of ``slot``; the alerts raised.

        Raises
        ------
        MonitorFailed
            A monitor raised on the label's values (the alerts before it go with it).
        """
        raised: Sequence[Alert] = _QUIET
        try:
            sd = slot.drift
            if sd is None or sd.epoch != self.epoch:
                sd = self._state(slot)
            sd.label_seen = sd.seen
            if sd.blind and self.blind_after:
                self._blind(sd, False)
                self._plan(sd)
            if not sd.warm:
                sd.learned += 1
                if sd.learned >= self.warmup:
                    self._warmed(sd)
            if sd.challenger is not None:
                self._train(sd, x, y, metric_input)
            if self.replay:
                self._keep(sd, x, y, metric_input)
            if "error" in self.signals:
                error = self.task.error(y, metric_input)
                if error is not None:
                    raised = self._update(slot, key, sd, "error", "error", error, at)
            challenger = sd.challenger
            if challenger is not None and challenger.armed and self._ready(challenger):
                raised = [*raised, *self._decide(self._context(slot, key, sd, at))]
        except Exception as exc:  # monitors read the record's values
            raise MonitorFailed(raised) from exc
        return raised

    def open_counts(self) -> dict[str, int]:
        """Monitors in drift, per signal."""
        return dict(self.open_by_signal)

    @property
    def n_open_keys(self) -> int:
        """Models (keys) with at least one monitor in drift."""
        return len(self.open_keys)

    # -- monitors and their warm-up ------------------------------------------------------

    def _state(self, slot: Slot) -> SlotDrift:
        """The drift state of ``slot``: made on its first call, restarted in a new epoch."""
        sd = slot.drift
        if sd is None:
            sd = slot.drift = SlotDrift()
        if sd.epoch != self.epoch:
            self._restart(sd)
        return sd

    def _monitor(self, signal: str, series: str, sd: SlotDrift | None = None) -> Monitor:
        """A monitor of ``signal``: the error has a warning twin; the blind signals do not."""
        s = self.settings
        if signal == "error":
            name = s.error_detector
            detector = make_detector(name, detector_params(name, s.error_params, True), self._seed)
            monitor = Monitor(signal, series, detector,
                              warning_twin(name, s.warning_params, self._seed), worse_only=True)
        else:
            name = s.detector
            detector = make_detector(name, detector_params(name, s.params, False), self._seed)
            monitor = Monitor(signal, series, detector, None)
            monitor.pages = sd.blind if sd is not None else True
        if sd is not None:
            monitor.warm = sd.warm
        return monitor

    def _restart(self, sd: SlotDrift) -> None:
        """Start the warm-up of ``sd`` (start, restore, replacement)."""
        since_label = sd.seen - sd.label_seen
        sd.epoch = self.epoch
        sd.learned = sd.seen = 0
        sd.label_seen = -since_label
        sd.warm = False
        if not self.warmup:
            self._warmed(sd)
        else:
            for monitor in sd.monitors.values():
                monitor.warm = False
        self._blind(sd, since_label >= self.blind_after)
        self._plan(sd)

    def _due(self, sd: SlotDrift) -> None:
        """An event may end the warm-up (no label at all) or make the blind signals page."""
        if not sd.blind and self.blind_after and sd.seen - sd.label_seen >= self.blind_after:
            self._blind(sd, True)
        if not sd.warm and not sd.learned and sd.seen >= self.warmup:
            self._warmed(sd)
        self._plan(sd)

    def _plan(self, sd: SlotDrift) -> None:
        """The next ``seen`` at which :meth:`_due` has something to check (earlier is harmless)."""
        due = sys.maxsize
        if not sd.blind and self.blind_after:
            due = sd.label_seen + self.blind_after
        if not sd.warm and not sd.learned:
            due = min(due, self.warmup)
        sd.due = due

    def _warmed(self, sd: SlotDrift) -> None:
        sd.warm = True
        for monitor in sd.monitors.values():
            monitor.warm = True

    def _blind(self, sd: SlotDrift, blind: bool) -> None:
        """Let the signals blind to the error page (``blind``) or only warn."""
        sd.blind = blind
        sd.schema.pages = blind
        for monitor in sd.monitors.values():
            if monitor.signal != "error":
                monitor.pages = blind

    def _feature_series(self, sd: SlotDrift, name: str, value: Any) -> str | None:
        """The series of feature ``name`` if it is monitored: numeric, within ``max_features``."""
        if feature_kind(value) != "number":
            return None
        series = f"feature:{name}"
        if series not in sd.monitors:
            if sd.n_features >= self.settings.max_features:
                return None
            sd.n_features += 1
        return series

    def _context(self, slot: Slot, key: str, sd: SlotDrift, at: Stamp) -> SlotContext:
        """The watch's context, filled for the record at hand (only when something happens)."""
        ctx = self._ctx
        ctx.slot, ctx.key, ctx.state, ctx.at = slot, key, sd, at
        return ctx

    def _update(
        self, slot: Slot, key: str, sd: SlotDrift, signal: str, series: str, value: float,
        at: Stamp,
    ) -> Sequence[Alert]:
        """Feed ``value`` to the monitor of ``series`` of ``slot``; the alerts it raises, in order.

        A monitor changes its state only with a change it returns, so an update
        without one (nearly all of them) needs nothing more: not even the context.
        """
        monitor = sd.monitors.get(series)
        if monitor is None:
            monitor = sd.monitors[series] = self._monitor(signal, series, sd)
        before = monitor.state
        change = monitor.update(value, at, self.rules)
        if change is None:  # the common case: nothing happened
            return _QUIET
        ctx = self._context(slot, key, sd, at)
        if monitor.state != before:
            self._count_open(key, signal, before, monitor.state)
        if not change.emit:
            return _QUIET
        if change.severity == "improved":
            info = change._replace(severity="info")
            return [self._alert(ctx, info, signal, series, monitor.detector_name, "none")]
        return self._changed(ctx, monitor, change)

    def _schema_changed(self, ctx: SlotContext, before: str, changes: list[Change]) -> list[Alert]:
        """The schema monitor moved from state ``before`` or found ``changes``: their alerts."""
        after = ctx.state.schema.state
        if after != before:
            self._count_open(ctx.key, "schema", before, after)
        return [self._alert(ctx, change, "schema", "schema", "schema", "none") for change in changes]

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

    def _changed(self, ctx: SlotContext, monitor: Monitor, change: Change) -> list[Alert]:
        """A lifecycle change of ``monitor``: its action, then its alert and the action's."""
        sd = ctx.state
        acting = monitor.signal in self.action_signals
        action = "none"
        if acting and change.severity == "warning" and self.settings.action == "challenger":
            action = self._start(sd, monitor.series, ctx.at)
        follow_up: list[Alert] = []
        if acting and change.severity == "drift":
            action, follow_up = self._act(ctx, monitor)
        if change.severity == "resolved" and sd.challenger is not None and not sd.challenger.armed:
            sd.challenger = None
            action = "challenger_dropped"
        alert = self._alert(ctx, change, monitor.signal, monitor.series, monitor.detector_name,
                            action)
        return [alert, *follow_up]

    def _act(self, ctx: SlotContext, monitor: Monitor) -> tuple[str, list[Alert]]:
        """Take the drift action on a confirmed drift: its name and the alerts it raises."""
        sd, series, at = ctx.state, monitor.series, ctx.at
        if self.settings.action == "reset":
            replaced, n_before = ctx.slot.model, ctx.slot.n_learned
            model, n_replayed, n_learned = self._fresh(sd)
            self._replace(ctx, model, n_learned)
            trial = 0 if sd.blind else self.settings.reset_trial_labels  # labels judge a trial
            if trial:
                sd.challenger = self._challenger(replaced, series, at, n_learned=n_before,
                                                 armed_at=0, fallback=True)
            window = {"n_replayed": n_replayed, "n_trial": trial}
            return "reset", [self._info(ctx, series, "reset", window, at)]
        if self.settings.action == "challenger":
            action = self._start(sd, series, at)
            challenger = sd.challenger
            assert challenger is not None
            if challenger.armed_at is None:
                challenger.armed_at = challenger.n_labels
                self._recent(challenger)
            return action if action != "none" else "challenger_armed", []
        return "none", []

    def _keep(self, sd: SlotDrift, x: dict[str, Any], y: Any, metric_input: Any) -> None:
        """Keep a labelled event and its error for the next reset's replay."""
        error = self.task.error(y, metric_input)
        if error is None:
            return
        if sd.recent is None or sd.recent.maxlen != self.replay:
            sd.recent = deque(sd.recent or (), self.replay)
        sd.recent.append((x, y, error))

    def _fresh(self, sd: SlotDrift) -> tuple[Any, int, int]:
        """A fresh model that learned the labelled events since the error rose (reset).

        Of the last ``drift.reset_replay_labels`` labelled events, those after
        :func:`rise_start`. Returns the model, the events replayed and its
        ``learn_one`` calls.
        """
        model = self.spec.build()
        recent = list(sd.recent or ())
        sd.recent = None
        start = rise_start([error for _, _, error in recent])
        n_learned = 0
        for x, y, _ in recent[start:]:
            n_learned += self.task.learn(model, x, y)
        return model, len(recent) - start, n_learned

    def _start(self, sd: SlotDrift, series: str, at: Stamp) -> str:
        if sd.challenger is not None:
            return "none"
        sd.challenger = self._challenger(self.spec.build(), series, at)
        return "challenger_started"

    def _challenger(self, model: Any, series: str, at: Stamp, **state: Any) -> Challenger:
        """A challenger (or a reset's fallback) of ``model``, with fresh metrics for both."""
        return Challenger(model, self.spec.build_metric(), self.spec.build_metric(), series, at,
                          **state)

    def _window(self, challenger: Challenger) -> tuple[int, int]:
        """The labels ``challenger`` learns after the drift, and the last of them it is scored on.

        A reset's fallback: ``drift.reset_trial_labels`` and the last half of them.
        """
        s = self.settings
        if challenger.fallback:
            return s.reset_trial_labels, max(1, s.reset_trial_labels // 2)
        return s.challenger_labels, min(s.challenger_recent_labels, s.challenger_labels)

    def _ready(self, challenger: Challenger) -> bool:
        """Trained through its window after the drift."""
        assert challenger.armed_at is not None
        return challenger.n_labels - challenger.armed_at >= self._window(challenger)[0]

    def _recent(self, challenger: Challenger) -> None:
        """Start both metrics afresh when the last labels of the window begin."""
        assert challenger.armed_at is not None
        labels, recent = self._window(challenger)
        if challenger.n_labels - challenger.armed_at == labels - recent:
            challenger.champion_metric = self.spec.build_metric()
            challenger.metric = self.spec.build_metric()

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
            if ch.armed_at is not None:
                self._recent(ch)
            ch.champion_metric.update(y, metric_input)
            ch.metric.update(y, mine)
            ch.n_labels += 1

    def _decide(self, ctx: SlotContext) -> list[Alert]:
        """Promote the challenger or keep the champion: the decision's alert."""
        sd = ctx.state
        ch = sd.challenger
        assert ch is not None
        sd.challenger = None
        champion, mine = float(ch.champion_metric.get()), float(ch.metric.get())
        better = _better(mine, champion, ch.metric.bigger_is_better, self.settings.challenger_margin)
        window = {
            "n": self._window(ch)[1],
            "n_trained": ch.n_labels,
            "metric": type(ch.metric).__name__,
            "champion": champion,
            "challenger": mine,
        }
        if better:
            self._replace(ctx, ch.model, ch.n_learned)
        if ch.fallback:
            action = "reset_undone" if better else "reset_kept"
        else:
            action = "promoted" if better else "champion_kept"
        return [self._info(ctx, ch.series, action, window, ch.since)]

    def _replace(self, ctx: SlotContext, model: Any, n_learned: int) -> None:
        """Serve ``model``: fresh monitors (the next ones are closed), and a new warm-up."""
        ctx.slot.replace(model, n_learned)
        sd = ctx.state
        sd.challenger = None
        for monitor in sd.monitors.values():
            if monitor.state == "drift":
                self._count_open(ctx.key, monitor.signal, "drift", "stable")
        sd.monitors = {}
        sd.n_features = 0
        self._restart(sd)

    def _info(
        self, ctx: SlotContext, series: str, action: str, window: dict[str, Any], first: Stamp
    ) -> Alert:
        """The ``info`` alert of a drift action on the model (signal ``model``)."""
        detector = "reset" if action.startswith("reset") else "challenger"
        change = Change("info", window, first, ctx.at, True, 0)
        return self._alert(ctx, change, "model", series, detector, action)

    def _alert(
        self, ctx: SlotContext, change: Change, signal: str, series: str, detector: str, action: str
    ) -> Alert:
        """The alert record of ``change`` (the model's generation as it is now)."""
        alert_key = ctx.key if self._keyed else None
        span = Span(change.first[0], change.last[0], origin(change.first), origin(change.last))
        info = self.spec.settings
        model = AlertModel(info.name, info.version, ctx.slot.generation)
        message = _message(change.severity, series, action, alert_key)
        return Alert(change.severity, signal, series, detector, alert_key, change.window, span,
                     change.updates, model, action, message)


def rise_start(errors: Sequence[float]) -> int:
    """Where the error rose: the split of ``errors`` that best separates a lower mean
    before it from a higher one after it (``len(errors)`` when none does).

    The split maximises ``k (n - k) / n (after - before)^2``, the between-groups
    sum of squares, over the splits whose mean after is above the mean before.

    Examples
    --------
    >>> rise_start([0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1, 1])
    6
    >>> rise_start([1, 1, 0, 0]), rise_start([])
    (4, 0)
    """
    n = len(errors)
    total = float(sum(errors))
    best, start, before = 0.0, n, 0.0
    for k in range(1, n):
        before += errors[k - 1]
        gap = (total - before) / (n - k) - before / k
        score = k * (n - k) * gap * gap
        if gap > 0 and score > best:
            best, start = score, k
    return start


def _better(mine: float, champion: float, bigger_is_better: bool, margin: float) -> bool:
    """Whether ``mine`` beats ``champion`` by the relative ``margin``.

    Examples
    --------
    >>> _better(0.83, 0.80, True, 0.02), _better(0.81, 0.80, True, 0.02)
    (True, False)
    >>> _better(9.0, 10.0, False, 0.05), _better(9.8, 10.0, False, 0.05)
    (True, False)
    """
    gain = mine - champion if bigger_is_better else champion - mine
    return gain > margin * abs(champion)


def _usable(metric_input: Any) -> bool:
    return metric_input is not None and metric_input != {}


def _message(severity: str, series: str, action: str, key: str | None) -> str:
    where = f" of key {key!r}" if key is not None else ""
    if severity == "info" and action == "none":
        return f"{series}{where} went down: the model improved (no action)"
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
