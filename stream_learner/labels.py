"""Where labels wait for their predictions, and predictions for their labels.

A shard keeps two bounded buffers, both keyed by ``(key, id)``:

- *pending*: one entry per prediction still waiting for its label, holding
  what learning needs later: a copy of the features as they were when the
  event was scored, the value the online metric is updated with, and the
  event's time and position;
- *early*: labels that arrived before their event; the event learns its label
  right after it is scored.

Ages are measured on the shard's own clock, never a wall clock: the number of
events the shard has scored, and its event time (the largest ``ts`` among
those events). An entry expires when it is older than the ``[labels]`` limits
(``*_max_age_events``, ``*_max_age_s``; 0 turns a limit off) or when its buffer
is over its count limit (oldest first). Expired entries are counted and
returned by the call that expired them (:meth:`LabelBook.tick`, :meth:`~LabelBook.hold`,
:meth:`~LabelBook.wait`), never dropped unseen. An early label that expires is a
label whose event was never seen: its reason code is ``unknown_id``. Each label
applied is counted and returned as a :data:`Joined` (when it was known, its delay).

Examples
--------
>>> book = LabelBook(LabelSettings(pending_max_age_events=1))
>>> book.tick(10.0), book.hold("k", "a", {"t": 1.0}, 0.5, ts=10.0), book.tick(12.5)
((), (), ())
>>> entry = book.claim("k", "a")
>>> entry.x, entry.metric_input, book.delay_of(entry)
({'t': 1.0}, 0.5, (1, 2.5))
>>> book.labelled("late", book.delay_of(entry))
(('late', 1, 2.5),)
>>> book.tick(13.0), book.hold("k", "b", {"t": 2.0}, 0.7, ts=13.0), book.tick(14.0)
((), (), ())
>>> [(e.buffer, e.id, e.reason) for e in book.tick(15.0)]
[('pending', 'b', 'label_timeout')]
>>> book.stats.expired_pending, len(book.pending)
(1, 0)
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import orjson

from stream_learner.events import Label
from stream_learner.settings import LabelSettings, SchemaSettings

__all__ = [
    "EarlyLabel", "Expired", "Joined", "LabelBook", "LabelStats", "PendingPrediction",
    "encode_label",
]

_SCHEMA = SchemaSettings()

#: (key, id): what joins a label to its event.
JoinKey = tuple[str, str | int]


@dataclass(slots=True)
class PendingPrediction:
    """A scored event waiting for its label."""

    x: dict[str, Any]
    metric_input: Any
    ts: float
    seq: int
    t: float


@dataclass(slots=True)
class EarlyLabel:
    """A label waiting for its event."""

    label: Label
    seq: int
    t: float


@dataclass(frozen=True, slots=True)
class Expired:
    """An entry that left a buffer without being joined.

    ``buffer`` is ``pending`` (a prediction whose label never came; reason
    ``label_timeout``) or ``early`` (a label whose event never came; reason
    ``unknown_id``, with the :class:`Label` itself so it can be traced).
    """

    buffer: str
    key: str
    id: str | int
    reason: str
    label: Label | None = None


#: A label applied: ``(when, events, seconds)``: when it was known (``inline``,
#: ``early``, ``late``) and its delay in events scored after the labelled one and in
#: seconds of event time (see :meth:`LabelBook.delay_of`); 0 unless the label is late.
#: A plain tuple: the service reports a batch of them column by column.
Joined = tuple[str, int, float]


#: the two lists earlier builds kept in a book (see :meth:`LabelBook.__getstate__`)
_LEGACY = frozenset({"expired", "delays"})
#: nothing expired (the common case: no list is built)
_NONE: tuple[Expired, ...] = ()
#: an inline or an early label: no delay (shared, as one is applied per event)
_INLINE: tuple[Joined] = (("inline", 0, 0.0),)
_EARLY: tuple[Joined] = (("early", 0, 0.0),)


@dataclass(slots=True)
class LabelStats:
    """Counters of one shard's labels, for metrics and the run summary."""

    predictions: int = 0
    labelled: int = 0
    #: labels applied, by when they were known: in the event, before it, after it
    inline: int = 0
    early: int = 0
    late: int = 0
    expired_pending: int = 0
    expired_early: int = 0
    delay_events_sum: int = 0
    delay_seconds_sum: float = 0.0

    @classmethod
    def total(cls, many: Iterable[LabelStats]) -> LabelStats:
        """The sum of several shards' counters.

        Examples
        --------
        >>> LabelStats.total([LabelStats(predictions=3, labelled=1),
        ...                   LabelStats(predictions=1, labelled=1)]).coverage
        0.5
        """
        out = cls()
        for stats in many:
            for f in fields(cls):
                setattr(out, f.name, getattr(out, f.name) + getattr(stats, f.name))
        return out

    @property
    def coverage(self) -> float:
        """Share of predictions that got a label (0 before any prediction)."""
        return self.labelled / self.predictions if self.predictions else 0.0

    def to_dict(self) -> dict[str, float]:
        """The counters, coverage and mean delays as a JSON-ready object."""
        n = self.labelled
        return {
            "predictions": self.predictions,
            "labelled": self.labelled,
            "inline": self.inline,
            "early": self.early,
            "late": self.late,
            "expired_pending": self.expired_pending,
            "expired_early": self.expired_early,
            "coverage": self.coverage,
            "mean_delay_events": self.delay_events_sum / n if n else 0.0,
            "mean_delay_seconds": self.delay_seconds_sum / n if n else 0.0,
        }


@dataclass
class LabelBook:
    """The pending and early buffers of one shard, their clock and counters.

    Parameters
    ----------
    settings
        Count and age limits of both buffers.
    """

    settings: LabelSettings
    pending: OrderedDict[JoinKey, PendingPrediction] = field(default_factory=OrderedDict)
    early: OrderedDict[JoinKey, EarlyLabel] = field(default_factory=OrderedDict)
    #: events scored by the shard, and the largest event time among them
    n_events: int = 0
    event_time: float = -math.inf
    stats: LabelStats = field(default_factory=LabelStats)

    def __getstate__(self) -> dict[str, Any]:
        """The book's state in the shape checkpoints have always had.

        Earlier builds kept two lists here, always empty when a checkpoint was
        taken; they are written as such, so a checkpoint is the same bytes as
        before and the build before can still read it.
        """
        return {**self.__dict__, "expired": [], "delays": []}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore ``state``, without the two lists of earlier builds.

        Names are interned as pickle's default restore does, so that pickling
        the restored book again gives the same bytes as before.
        """
        for name, value in state.items():
            if name not in _LEGACY:
                self.__dict__[sys.intern(name)] = value

    # -- the clock ----------------------------------------------------------------

    def tick(self, ts: float) -> Sequence[Expired]:
        """One more event, at event time ``ts``: advance the clock, expire what is too old.

        Returns the entries that expired, oldest first (usually none).
        """
        self.n_events += 1
        if self.event_time == -math.inf:  # the clock starts: labels that came first start too
            for wait in self.early.values():
                wait.t = ts
        if ts > self.event_time:
            self.event_time = ts
        if self.pending or self.early:
            return self._expire_old()
        return _NONE

    def _too_old(self, seq: int, t: float, max_events: int, max_s: float) -> bool:
        return (max_events > 0 and self.n_events - 1 - seq > max_events) or (
            max_s > 0 and self.event_time - t > max_s
        )

    def _expire_old(self) -> Sequence[Expired]:
        s = self.settings
        out: Sequence[Expired] = _NONE
        while self.pending:
            jk, entry = next(iter(self.pending.items()))
            if not self._too_old(entry.seq, entry.t, s.pending_max_age_events, s.pending_max_age_s):
                break
            out = [*out, self._expire_pending(jk)]
        while self.early:
            jk, wait = next(iter(self.early.items()))
            if not self._too_old(wait.seq, wait.t, s.early_max_age_events, s.early_max_age_s):
                break
            out = [*out, self._expire_early(jk)]
        return out

    # -- predictions waiting for labels -------------------------------------------

    def hold(
        self, key: str, id: str | int, x: dict[str, Any], metric_input: Any, ts: float
    ) -> Sequence[Expired]:
        """Keep a scored event (``x`` is copied) until its label comes.

        Returns the entries this expired: an older prediction of the same
        ``(key, id)``, and the oldest ones beyond ``pending_max_count``.
        """
        jk = (key, id)
        out: Sequence[Expired] = _NONE
        if jk in self.pending:  # the same id again: the older prediction cannot be joined
            out = [self._expire_pending(jk)]
        self.pending[jk] = PendingPrediction(
            dict(x), metric_input, ts, self.n_events - 1, self.event_time
        )
        while len(self.pending) > self.settings.pending_max_count:
            out = [*out, self._expire_pending(next(iter(self.pending)))]
        return out

    def claim(self, key: str, id: str | int) -> PendingPrediction | None:
        """Take the pending prediction of ``(key, id)``, if any."""
        return self.pending.pop((key, id), None)

    def _expire_pending(self, jk: JoinKey) -> Expired:
        del self.pending[jk]
        self.stats.expired_pending += 1
        return Expired("pending", jk[0], jk[1], "label_timeout")

    # -- labels waiting for events ------------------------------------------------

    def wait(self, label: Label) -> Sequence[Expired]:
        """Keep a label whose event has not been seen yet.

        Returns the entries this expired: an older label of the same
        ``(key, id)``, and the oldest ones beyond ``early_max_count``.
        """
        jk = (label.key, label.id)
        out: Sequence[Expired] = _NONE
        if jk in self.early:
            out = [self._expire_early(jk)]
        # seq: the last event scored before the label came (-1: none yet)
        self.early[jk] = EarlyLabel(label, self.n_events - 1, self.event_time)
        while len(self.early) > self.settings.early_max_count:
            out = [*out, self._expire_early(next(iter(self.early)))]
        return out

    def claim_early(self, key: str, id: str | int) -> Label | None:
        """Take the early label of ``(key, id)``, if any."""
        wait = self.early.pop((key, id), None)
        return None if wait is None else wait.label

    def drain_early(self) -> list[Expired]:
        """Expire every label still waiting for its event, oldest first (the run ends and
        nothing keeps them)."""
        return [self._expire_early(jk) for jk in list(self.early)]

    def _expire_early(self, jk: JoinKey) -> Expired:
        wait = self.early.pop(jk)
        self.stats.expired_early += 1
        return Expired("early", jk[0], jk[1], "unknown_id", wait.label)

    # -- accounting ---------------------------------------------------------------

    def predicted(self) -> None:
        """Count one prediction (the denominator of coverage)."""
        self.stats.predictions += 1

    def labelled(self, when: str, delay: tuple[int, float] = (0, 0.0)) -> tuple[Joined]:
        """Count one label applied; ``when``: ``inline``, ``early`` or ``late``.

        Only a late label has a delay other than 0 (see :meth:`delay_of`).
        Returns the label's :data:`Joined`, alone in a tuple (shared when the
        delay is 0).
        """
        events, seconds = delay
        st = self.stats
        st.labelled += 1
        st.delay_events_sum += events
        st.delay_seconds_sum += seconds
        if when == "inline":
            st.inline += 1
            return _INLINE
        if when == "early":
            st.early += 1
            return _EARLY
        st.late += 1
        return ((when, events, seconds),)

    def delay_of(self, entry: PendingPrediction) -> tuple[int, float]:
        """Delay of a label applied now to ``entry``: (events, seconds of event time).

        Events are those the shard scored after the labelled one; seconds run
        from the event's ``ts`` to the shard's event time (never below 0).
        """
        return self.n_events - 1 - entry.seq, max(0.0, self.event_time - entry.ts)


def encode_label(
    id: Any, label: Any, key: str | None = None, ts: float | None = None,
    schema: SchemaSettings | None = None,
) -> bytes:
    """The JSON bytes of a label record: an event's id, its key and time, and its label.

    Parameters
    ----------
    id, label
        The event's id and its label.
    key, ts
        The event's key and event time; left out of the record when None.
    schema
        The field names (``[schema]``); the default names when None.

    Returns
    -------
    bytes
        The record, fields in the order ``id``, ``key``, ``ts``, ``label``.

    Examples
    --------
    >>> encode_label(7, 1.5, "pump-7", 10.0)
    b'{"id":7,"key":"pump-7","ts":10.0,"label":1.5}'
    >>> encode_label("a", True, schema=SchemaSettings(id="rid", label="y"))
    b'{"rid":"a","y":true}'
    """
    names = schema or _SCHEMA
    record: dict[str, Any] = {names.id: id}
    if key is not None:
        record[names.key] = key
    if ts is not None:
        record[names.ts] = ts
    record[names.label] = label
    return orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS)
