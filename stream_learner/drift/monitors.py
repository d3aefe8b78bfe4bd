"""Drift monitors and the alert lifecycle: warning, drift, resolved.

A :class:`Monitor` follows one numeric series (the error stream, one feature,
the predictions) with one of River's detectors (``drift.ADWIN`` by default)
and, for detectors without a warning zone of their own, a looser twin of the
same detector whose detections are *warnings*. ``drift.binary.DDM``,
``EDDM``, ``HDDMA`` and ``HDDMW`` have their own ``warning_detected``. A
:class:`SchemaMonitor` follows the feature set itself: new, missing or
retyped features.

Lifecycle of a monitor, counted in its own updates (no clock)::

    stable --warning--> warning --drift--> drift --(resolve_after quiet updates)--> stable
       \\-------------------drift-------------^        (emits "resolved")

Every detection of the drift detector is a ``drift`` change, whatever the
state, with three exceptions:

- a monitor of the error (``worse_only``) follows only the error getting
  *worse*: a detection whose recent mean is not above the level before it
  (ADWIN: the values it cut from its window) is an *improvement* (severity
  ``improved``, never a lifecycle change; ADWIN then keeps the window it
  kept), and the warning twin's improvements are ignored;
- a monitor that is not ``warm`` (the model is still learning, see
  :mod:`stream_learner.drift.watch`) feeds its detectors but changes nothing;
- a monitor that does not ``page`` (a signal that cannot see the error while
  labels flow) turns its drifts into warnings.

A change is *emitted* as an alert unless the monitor is cooling down: within
``cooldown`` updates after its last emitted alert, warnings and drifts change
the state silently, except a drift of a ``worse_only`` monitor: the detector
starts afresh after each detection, so a new detection of the error going up
means it got worse than since the last one (a real drift that follows a false
alert is not swallowed). A ``resolved`` is emitted when the episode it closes
was announced. The drift alerts of a warm ``worse_only`` monitor fall exactly
on the detector's detections of a rise; with ``cooldown = 0``, those of any
warm monitor on all its detections.

Each change carries the statistics of its *window*: the updates since the
monitor's previous change (count, mean, and the detector's own estimate when
it has one), with their event-time and offset range.

Everything here is pure and deterministic, and pickles with the learner.

Examples
--------
>>> import random
>>> rng = random.Random(1)
>>> monitor = Monitor("feature", "feature:x", make_detector("adwin", {}),
...                   warning_twin("adwin", {}))
>>> values = [rng.gauss(0, 1) for _ in range(500)] + [rng.gauss(1.5, 1) for _ in range(300)]
>>> rules = Rules(cooldown=0, resolve_after=100)
>>> changes = [monitor.update(v, (float(i), "events", 0, i), rules)
...            for i, v in enumerate(values)]
>>> [(i, c.severity, c.window["n"]) for i, c in enumerate(changes) if c]
[(527, 'warning', 528), (543, 'drift', 16), (643, 'resolved', 100)]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from river import drift

from stream_learner.errors import SettingsError
from stream_learner.events import Origin
from stream_learner.settings import BINARY_ERROR_DETECTORS

__all__ = [
    "BINARY_DETECTORS",
    "DETECTORS",
    "Change",
    "Memo",
    "Monitor",
    "Rules",
    "SchemaMonitor",
    "Stamp",
    "Window",
    "detector_params",
    "feature_kind",
    "make_detector",
    "origin",
    "warning_twin",
]

#: Where an update happened: event time, then the record's origin (topic, partition,
#: offset) as plain values. Monitors keep stamps, and a slot of a keyed fleet is
#: encoded and decoded about once an event: plain values cost a tenth of an
#: :class:`~stream_learner.events.Origin`'s pickling (a named tuple's goes through
#: ``__reduce_ex__`` and its class). :func:`origin` gives the origin back.
Stamp = tuple[float, str, int, int]


def origin(at: Stamp) -> Origin:
    """The origin of the record stamped ``at``.

    >>> origin((12.5, "events", 2, 881))
    Origin(topic='events', partition=2, offset=881)
    """
    return Origin(at[1], at[2], at[3])

DETECTORS: dict[str, Any] = {
    "adwin": drift.ADWIN,
    "page_hinkley": drift.PageHinkley,
    "kswin": drift.KSWIN,
    "ddm": drift.binary.DDM,
    "eddm": drift.binary.EDDM,
    "hddm_a": drift.binary.HDDMA,
    "hddm_w": drift.binary.HDDMW,
}
#: Detectors of 0/1 streams, with a warning zone of their own.
BINARY_DETECTORS = frozenset(BINARY_ERROR_DETECTORS)
_OWN_WARNING = frozenset({drift.binary.DDM, drift.binary.EDDM, drift.binary.HDDMA,
                          drift.binary.HDDMW})
#: Parameters of the looser twin that raises warnings, per detector.
WARNING_DEFAULTS: dict[str, dict[str, float]] = {
    "adwin": {"delta": 0.01, "clock": 8},
    "page_hinkley": {"threshold": 25.0},
    "kswin": {"alpha": 0.05},
}


#: Parameters used when the settings leave them empty, per detector: the error
#: stream, and the signals blind to the error (prediction, features), chosen on
#: the tuning half of the drift suite (scripts/drift_report.py, docs/drift.md).
ERROR_DEFAULTS: dict[str, dict[str, float]] = {"adwin": {"delta": 0.002}}
BLIND_DEFAULTS: dict[str, dict[str, float]] = {"adwin": {"delta": 0.0002}}


def detector_params(name: str, params: Mapping[str, Any], error: bool) -> Mapping[str, Any]:
    """``params``, or the calibrated defaults of detector ``name`` when they are empty.

    Examples
    --------
    >>> detector_params("adwin", {}, error=False), detector_params("adwin", {"delta": 0.1}, False)
    ({'delta': 0.0002}, {'delta': 0.1})
    >>> detector_params("kswin", {}, error=True)
    {}
    """
    if params:
        return params
    return (ERROR_DEFAULTS if error else BLIND_DEFAULTS).get(name, {})


def make_detector(name: str, params: Mapping[str, Any], seed: int | None = None) -> Any:
    """A River detector by its setting name, with ``params``.

    Raises
    ------
    SettingsError
        An unknown detector or parameter.

    Examples
    --------
    >>> make_detector("page_hinkley", {"threshold": 10})
    PageHinkley (
      min_instances=30
      delta=0.005
      threshold=10
      alpha=0.9999
      mode="both"
    )
    >>> make_detector("adwin", {"delt": 0.1})
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: drift: ADWIN does not take parameters {'delt': 0.1} ...
    """
    try:
        cls = DETECTORS[name]
    except KeyError:
        raise SettingsError(f"drift: unknown detector {name!r}") from None
    kwargs = dict(params)
    if name == "kswin" and "seed" not in kwargs:
        kwargs["seed"] = seed
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"drift: {cls.__name__} does not take parameters {dict(params)} ({exc})"
        ) from None


def warning_twin(name: str, params: Mapping[str, Any], seed: int | None = None) -> Any:
    """The looser detector whose detections are warnings (None: the detector has its own)."""
    if name in BINARY_DETECTORS:
        return None
    return make_detector(name, params or WARNING_DEFAULTS[name], seed)


_ADWIN: Any = drift.ADWIN


def _adwin_inline(detector: Any, value: float) -> bool:
    """River's ``ADWIN.update(value)``, then its ``drift_detected``: half the cost.

    The statements of River's method (0.22 to 0.26) on its private attributes,
    without its two Python frames (the method and the property): a detector
    that fired starts afresh, then its window takes the value.
    :data:`_INLINE_ADWIN` checks at import that this gives what ``update`` gives;
    if not (another River), monitors call ``update``.
    """
    if detector._drift_detected:
        detector._reset()
    detected: bool = detector._helper.update(value)
    detector._drift_detected = detected
    return detected


def _inline_agrees() -> bool:
    """Whether :func:`_adwin_inline` matches ``ADWIN.update`` on a series with two shifts."""
    try:
        river_, inline = _ADWIN(clock=8), _ADWIN(clock=8)
        for i in range(1200):
            value = float((i * 7919) % 13 < (3 if i < 400 or i >= 800 else 10))
            river_.update(value)
            if _adwin_inline(inline, value) != river_.drift_detected:
                return False
        return bool(inline.width == river_.width and inline.total == river_.total)
    except AttributeError:  # a River whose ADWIN is built otherwise
        return False


#: ADWIN updates are made inline (see :func:`_adwin_inline`) when they agree with River's.
_INLINE_ADWIN = _inline_agrees()


def _level(detector: Any, fallback: float) -> float:
    """The detector's estimate of the recent mean just after a detection."""
    estimation = getattr(detector, "estimation", None)  # ADWIN: the window it kept
    if isinstance(estimation, int | float):
        return float(estimation)
    window = getattr(detector, "window", None)  # KSWIN: the most recent values it kept
    if window:
        return float(sum(window) / len(window))
    return fallback


def _rose(detector: Any, base_mean: float) -> bool:
    """Whether a detection of ``detector`` is the series going up.

    ``base_mean`` is what the detection is compared with (ADWIN: the mean of the
    values it dropped from its window; KSWIN: of the values since its previous
    detection, as it starts afresh after each one). DDM and EDDM only detect a rising
    error rate, and so do HDDM_A and HDDM_W unless two-sided (then their test of a
    rise is asked again); PageHinkley tells which of its two tests fired.
    """
    if isinstance(detector, drift.binary.DDM | drift.binary.EDDM):
        return True
    if isinstance(detector, drift.binary.HDDMA):  # one-sided unless told: rises only
        return not detector.two_sided_test or detector._mean_incr(detector.drift_confidence)
    if isinstance(detector, drift.binary.HDDMW):
        return not detector.two_sided_test or detector._detect_mean_incr(
            detector.drift_confidence)
    if isinstance(detector, drift.PageHinkley):
        return bool(detector._sum_increase - detector._min_increase > detector.threshold)
    return _level(detector, base_mean) > base_mean


class Rules(NamedTuple):
    """Lifecycle rules, in updates of the monitor."""

    cooldown: int
    resolve_after: int


@dataclass
class Window:
    """Count, mean and range of the updates since a monitor's previous change."""

    n: int = 0
    total: float = 0.0
    first: Stamp | None = None
    last: Stamp | None = None

    def add(self, value: float, at: Stamp) -> None:
        """Count one update."""
        self.n += 1
        self.total += value
        if self.first is None:
            self.first = at
        self.last = at

    def stats(self, detector: Any) -> dict[str, Any]:
        """Count and mean, plus the detector's estimate (ADWIN: mean and width of its window)."""
        out: dict[str, Any] = {"n": self.n, "mean": self.total / self.n if self.n else None}
        estimation = getattr(detector, "estimation", None)
        if isinstance(estimation, int | float) and math.isfinite(estimation):
            out["detector_estimation"] = float(estimation)
        width = getattr(detector, "width", None)
        if isinstance(width, int | float):
            out["detector_width"] = int(width)
        return out


class Change(NamedTuple):
    """A lifecycle change of a monitor; ``emit`` is False while it cools down."""

    severity: str
    window: dict[str, Any]
    first: Stamp
    last: Stamp
    emit: bool
    updates: int


@dataclass
class Monitor:
    """One detector (and its warning twin) on one series, with its lifecycle state."""

    signal: str
    series: str
    detector: Any
    warner: Any
    state: str = "stable"
    n: int = 0
    changed_at: int = 0
    alerted_at: int | None = None
    announced: bool = False
    window: Window = field(default_factory=Window)
    #: follow only increases (the error): decreases are improvements
    worse_only: bool = False
    #: detections may change the state (False while the model warms up)
    warm: bool = True
    #: detections are drifts (False: warnings; a signal blind to the error while labels flow)
    pages: bool = True
    #: sum of all the values, and (n, sum) at the last detection of the detector and the twin
    total: float = 0.0
    marks: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 0.0), (0.0, 0.0)])

    @property
    def detector_name(self) -> str:
        """The River class name of the drift detector."""
        return type(self.detector).__name__

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickle, also one written before monitors knew the error's direction."""
        if "marks" not in state:  # the values since the last change stand for the window
            window = state.get("window") or Window()
            mark = (float(state.get("n", 0) - window.n), -window.total)
            state = {"worse_only": state.get("signal") == "error", "total": 0.0,
                     "marks": [mark, mark], **state}
        self.__dict__.update(state)

    def update(self, value: float, at: Stamp, rules: Rules) -> Change | None:
        """Feed one value; return the lifecycle change it caused, if any.

        The monitor's ``state`` changes only with a change returned: None means
        nothing the watch follows moved.
        """
        self.n += 1
        self.total += value
        detector, warner = self.detector, self.warner
        # ADWIN's update and drift_detected in one call: this runs for every value
        if type(detector) is _ADWIN and _INLINE_ADWIN:
            detected = _adwin_inline(detector, value)
        else:
            detector.update(value)
            detected = detector.drift_detected
        if warner is None:
            warned = False
        elif type(warner) is _ADWIN and _INLINE_ADWIN:
            warned = _adwin_inline(warner, value)
        else:
            warner.update(value)
            warned = warner.drift_detected
        w = self.window  # Window.add, inline: this runs for every value
        w.n += 1
        w.total += value
        if w.first is None:
            w.first = at
        w.last = at
        if detected:
            return self._detected(rules)
        if warner is not None:
            warns = bool(warned)
            if warns and self.worse_only:
                warns = self._rose(warner, 1)
        elif detector.__class__ in _OWN_WARNING:  # DDM, EDDM, HDDM: their own warning zone
            warns = bool(detector.warning_detected)
        else:
            warns = False
        if not warns and self.state == "stable":  # the common case: nothing changes
            return None
        return self._quiet(warns and self.warm, rules)

    def _detected(self, rules: Rules) -> Change | None:
        """The drift detector fired."""
        if not self.worse_only:
            return self._change("drift" if self.pages else "warning", rules) if self.warm else None
        before = self._baseline(self.detector, 0)
        if not self._rose(self.detector, 0):
            return self._improved(before, _level(self.detector, before))
        if not self.warm:
            return None
        self.alerted_at = None  # the error got worse: never a repeat to silence
        return self._change("drift", rules)

    def _baseline(self, detector: Any, which: int) -> float:
        """What a detection of ``detector`` (0: the drift detector, 1: the twin) compares with.

        The values since its previous detection (ADWIN and KSWIN start afresh after
        each one, ADWIN also keeps its window after a fall: those since its
        previous detection then start with that window); for ADWIN, only those it
        dropped from its window at this one.
        """
        n, total = self.marks[which]
        since = self.n - int(n)
        if isinstance(detector, drift.ADWIN) and since > detector.width:
            return (self.total - total - detector.total) / (since - detector.width)
        return (self.total - total) / max(1, since)

    def _rose(self, detector: Any, which: int) -> bool:
        """Whether ``detector`` (0: the drift detector, 1: the twin) fired on a rise.

        After a fall, ADWIN keeps the window it cut (River's ADWIN would start
        afresh at its next update, as the original ADWIN does not): the error's
        new, lower level is what the next rise is measured against.
        """
        rose = _rose(detector, self._baseline(detector, which))
        if not rose and isinstance(detector, drift.ADWIN):
            detector._drift_detected = False
            self.marks[which] = (float(self.n - detector.width), self.total - detector.total)
        else:
            self.marks[which] = (float(self.n), self.total)
        return rose

    def _quiet(self, warns: bool, rules: Rules) -> Change | None:
        """The lifecycle of an update without a drift detection."""
        if self.state == "stable":
            return self._change("warning", rules) if warns else None
        if warns:
            self.changed_at = self.n
        elif self.n - self.changed_at >= rules.resolve_after:
            return self._change("resolved", rules)
        return None

    def _improved(self, before: float, after: float) -> Change | None:
        """A detection of the error going down: an info change, not a lifecycle one."""
        if not self.warm:
            return None
        w = self.window
        assert w.first is not None and w.last is not None
        stats = {"n": w.n, "mean_before": before, "mean_after": after}
        return Change("improved", stats, w.first, w.last, True, self.n)

    def _cooling(self, rules: Rules) -> bool:
        return self.alerted_at is not None and self.n - self.alerted_at <= rules.cooldown

    def _change(self, severity: str, rules: Rules) -> Change:
        if severity == "resolved":
            emit, self.announced = self.announced, False
            self.state = "stable"
        else:
            emit = not self._cooling(rules)
            self.announced = self.announced or emit
            self.state = severity
            self.changed_at = self.n
            if emit and (severity == "drift" or not self.pages):
                self.alerted_at = self.n
        w = self.window
        assert w.first is not None and w.last is not None
        change = Change(severity, w.stats(self.detector), w.first, w.last, emit, self.n)
        self.window = Window()
        return change


def feature_kind(value: Any) -> str | None:
    """The schema type of a feature value (None for null, which fits any type).

    Examples
    --------
    >>> [feature_kind(v) for v in (1, 2.5, True, "a", None)]
    ['number', 'number', 'bool', 'string', None]
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "string"


class Memo(set):  # type: ignore[type-arg]
    """A set that is a cache of other state: it pickles empty, and is rebuilt on use.

    Writing a cache in every checkpoint and every parked model would cost more
    than rebuilding it (a set of feature signatures holds type objects, which
    are slow to pickle): a restored owner starts with an empty one.

    Examples
    --------
    >>> import pickle
    >>> pickle.loads(pickle.dumps(Memo({1, 2})))
    Memo()
    """

    __slots__ = ()

    def __reduce__(self) -> tuple[type[Memo], tuple[()]]:
        return (Memo, ())


@dataclass
class SchemaMonitor:
    """The feature set seen so far; after a grace period, changes to it are drifts.

    A change is *new* (a name never seen), *missing* (a name that was in every
    event so far) or *retyped* (a name seen with another type). Each change is
    reported once, then becomes part of the schema. The monitor is in drift
    (in warning when it does not ``page``) from a change until ``resolve_after``
    events pass without one.

    The feature sets already folded into the schema are remembered (``seen``,
    ``known``) so that the next event with one of them skips the comparison.
    They are a cache: an event of such a set finds no change and changes
    nothing either way, so they are not checkpointed (:class:`Memo`) and a
    restored monitor reports what an uninterrupted one would.

    Examples
    --------
    >>> m = SchemaMonitor()
    >>> at = (0.0, "events", 0, 0)
    >>> rules = Rules(0, 10)
    >>> m.update({"a": 1.0, "b": "x"}, at, rules, grace=1)
    []
    >>> [c.window["change"] for c in m.update({"a": "oops", "c": 1}, at, rules, grace=1)]
    ['retyped', 'new', 'missing']
    """

    types: dict[str, str] = field(default_factory=dict)
    always: set[str] = field(default_factory=set)
    n: int = 0
    state: str = "stable"
    changed_at: int = 0
    first: Stamp | None = None
    #: feature sets (names and value types) already folded into the schema: an event
    #: with one of them can change nothing, so it skips the comparison; cleared
    #: whenever the schema changes (a cache: not checkpointed)
    seen: set[tuple[tuple[str, type], ...]] = field(
        default_factory=Memo, repr=False, compare=False
    )
    #: changes are drifts (False: warnings, while labels flow)
    pages: bool = True
    #: the signatures of ``seen`` as (names, types): the same test without building a
    #: pair per feature (derived from ``seen``)
    known: set[tuple[tuple[str, ...], tuple[type, ...]]] = field(
        default_factory=Memo, repr=False, compare=False
    )

    signal = "schema"
    series = "schema"
    detector_name = "schema"

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickle with empty caches (a pickle written when they were kept
        holds them full, as plain sets, or lacks ``known``)."""
        self.__dict__.update(state)
        self.seen, self.known = Memo(), Memo()

    def update(
        self, features: dict[str, Any], at: Stamp, rules: Rules, grace: int
    ) -> list[Change]:
        """Compare one event's features to the schema; return the drifts and resolutions."""
        self.n += 1
        if self.first is None:
            self.first = at
        names_types = (tuple(features), tuple(map(type, features.values())))
        if names_types in self.known:
            if self.state == "stable":  # nothing to find and nothing to resolve
                return []
            found: list[tuple[str, str, dict[str, Any]]] = []
        elif (signature := tuple(zip(*names_types, strict=True))) in self.seen:
            self.known.add(names_types)
            if self.state == "stable":
                return []
            found = []
        else:
            found = self._compare(features) if self.n > grace else []
            before = (dict(self.types), set(self.always))
            self._learn(features)
            if before != (self.types, self.always):
                self.seen.clear()
                self.known.clear()
            self.seen.add(signature)
            self.known.add(names_types)
        changes = [self._drift(kind, name, detail, at) for kind, name, detail in found]
        if not changes and self.state != "stable" and self.n - self.changed_at >= rules.resolve_after:
            self.state = "stable"
            changes.append(self._make("resolved", {"n": self.n - self.changed_at}, at))
        if changes:
            self.first = None
        return changes

    def _compare(self, features: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
        found: list[tuple[str, str, dict[str, Any]]] = []
        for name, value in features.items():
            kind = feature_kind(value)
            known = self.types.get(name)
            if name not in self.types:
                found.append(("new", name, {"type": kind}))
            elif kind is not None and known and kind != known:
                found.append(("retyped", name, {"from": known, "to": kind}))
        for name in sorted(self.always - features.keys()):
            found.append(("missing", name, {}))
        return found

    def _learn(self, features: dict[str, Any]) -> None:
        if self.n == 1:
            self.always = set(features)
        else:
            self.always &= features.keys()
        for name, value in features.items():
            kind = feature_kind(value)
            if kind is not None or name not in self.types:
                self.types[name] = kind or self.types.get(name, "") or ""

    def _drift(self, kind: str, name: str, detail: dict[str, Any], at: Stamp) -> Change:
        self.state = "drift" if self.pages else "warning"
        self.changed_at = self.n
        return self._make(self.state, {"change": kind, "feature": name, **detail}, at)

    def _make(self, severity: str, window: dict[str, Any], at: Stamp) -> Change:
        return Change(severity, window, self.first or at, at, True, self.n)
