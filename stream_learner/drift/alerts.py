"""The alert record: what a drift monitor or a drift action tells operators.

Alerts go to the ``alerts`` output (``kafka.alerts_topic``, or ``local.alerts``),
one JSON object per record, keyed by the entity key (empty for a partition
model). The schema is versioned (``schema_version``) and written down in
``stream_learner/schemas/alert.json``; ``docs/drift.md`` explains every field.

Severities: ``warning`` (a detector's warning zone), ``drift`` (confirmed
drift), ``resolved`` (the monitor saw no warning or drift for
``drift.resolve_after_events`` updates) and ``info`` (an action the service
took: a model reset, a challenger promoted or rejected).

Examples
--------
>>> from stream_learner.events import Origin
>>> span = Span(10.0, 12.5, Origin("events", 0, 100), Origin("events", 0, 180))
>>> alert = Alert("drift", "error", "error", "ADWIN", "pump-7", {"n": 80, "mean": 0.4},
...               span, 1200, AlertModel("m", 1, 0), "none", "drift on error")
>>> record = alert.to_dict("events:0")
>>> record["schema_version"], record["offsets"], record["event_time"]
(1, {'topic': 'events', 'partition': 0, 'from': 100, 'to': 180}, {'from': 10.0, 'to': 12.5})
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stream_learner.events import Origin

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "Alert",
    "AlertModel",
    "Span",
]

ALERT_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Span:
    """Event-time and offset range of the updates an alert is about."""

    ts_from: float
    ts_to: float
    first: Origin
    last: Origin


@dataclass(frozen=True, slots=True)
class AlertModel:
    """The model an alert is about: name, configured version, and generation
    (how many times a drift action replaced it)."""

    name: str
    version: int
    generation: int


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert record (see the module docstring)."""

    severity: str
    signal: str
    series: str
    detector: str
    key: str | None
    window: dict[str, Any]
    span: Span
    updates: int
    model: AlertModel
    action: str
    message: str

    def to_dict(self, shard: str) -> dict[str, Any]:
        """The JSON object of the alert schema, for the shard that raised it."""
        s = self.span
        return {
            "schema_version": ALERT_SCHEMA_VERSION,
            "severity": self.severity,
            "signal": self.signal,
            "series": self.series,
            "detector": self.detector,
            "key": self.key,
            "shard": shard,
            "model": {
                "name": self.model.name,
                "version": self.model.version,
                "generation": self.model.generation,
            },
            "window": {k: _finite(v) for k, v in self.window.items()},
            "updates": self.updates,
            "offsets": {
                "topic": s.last.topic,
                "partition": s.last.partition,
                "from": s.first.offset,
                "to": s.last.offset,
            },
            "event_time": {"from": s.ts_from, "to": s.ts_to},
            "action": self.action,
            "message": self.message,
        }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

