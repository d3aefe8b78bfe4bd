"""Drift: monitors, the learner's drift watch, and the alert records they raise.

- :mod:`stream_learner.drift.monitors`: River detectors wrapped in the alert
  lifecycle (warning, drift, resolved), and the feature-set monitor;
- :mod:`stream_learner.drift.watch`: the monitors of every model slot, their
  warm-up, and the drift actions (alert, reset, challenger);
- :mod:`stream_learner.drift.alerts`: the alert record and its JSON form.

The public names of the three are re-exported here.

Before this package, the three were the top-level modules ``stream_learner.drift``,
``stream_learner.drift_watch`` and ``stream_learner.alerts``. State pickled then
(checkpoints, parked per-key models) names its classes by those paths:
``stream_learner.drift.Monitor`` is still re-exported here, and the two other
paths stay importable as aliases of :mod:`~stream_learner.drift.watch` and
:mod:`~stream_learner.drift.alerts` (:data:`MOVED`), so those checkpoints still load.
"""

from __future__ import annotations

import sys

from stream_learner.drift import alerts, watch
from stream_learner.drift.alerts import ALERT_SCHEMA_VERSION, Alert, AlertModel, Span
from stream_learner.drift.monitors import (
    BINARY_DETECTORS,
    DETECTORS,
    Change,
    Memo,
    Monitor,
    Rules,
    SchemaMonitor,
    Stamp,
    Window,
    detector_params,
    feature_kind,
    make_detector,
    warning_twin,
)
from stream_learner.drift.watch import (
    MONITORED,
    Challenger,
    DriftWatch,
    MonitorFailed,
    NullDriftWatch,
    SlotContext,
    SlotDrift,
    Watch,
    make_watch,
    rise_start,
)

#: old module path -> the module that now holds its classes (registered in ``sys.modules``)
MOVED = {"stream_learner.drift_watch": watch, "stream_learner.alerts": alerts}
for _old, _module in MOVED.items():
    sys.modules.setdefault(_old, _module)

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "BINARY_DETECTORS",
    "DETECTORS",
    "MONITORED",
    "MOVED",
    "Alert",
    "AlertModel",
    "Challenger",
    "Change",
    "DriftWatch",
    "Memo",
    "Monitor",
    "MonitorFailed",
    "NullDriftWatch",
    "Rules",
    "SchemaMonitor",
    "SlotContext",
    "SlotDrift",
    "Span",
    "Stamp",
    "Watch",
    "Window",
    "detector_params",
    "feature_kind",
    "make_detector",
    "make_watch",
    "rise_start",
    "warning_twin",
]
