#!/usr/bin/env python3
"""Measure detection delay and false alarms of the drift monitors on synthetic streams.

Each stream of tests/drift_streams.py (River synthetic generators with drifts
at known positions) runs through the service with in-memory twins and the
default ``[drift]`` settings except ``cooldown_events = 0`` (every detection
is an alert). For the stream's signal it reports, per true drift, the delay
(events from the drift position to the first drift alert after it, within the
next 1000 events), and the drift alerts on the stable stretches (before the
first drift and more than 1000 events after the last one: false alarms).

Usage::

    python scripts/drift_report.py        # prints the Markdown table of docs/drift.md
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source tree that is not installed
    sys.path.insert(0, str(ROOT))

from stream_learner.models import ModelSpec  # noqa: E402
from stream_learner.service import Service  # noqa: E402
from stream_learner.settings import load_settings  # noqa: E402
from stream_learner.testing import MemorySink, MemorySource  # noqa: E402
from tests.drift_streams import STREAMS, DriftStream  # noqa: E402

#: Events after a true drift within which a detection counts as detecting it.
HORIZON = 1000


def detections(stream: DriftStream, detector: str) -> list[int]:
    """Offsets of the drift alerts on the stream's signal."""
    settings = load_settings(None, env={}, overrides={
        "model": stream.model_settings(),
        "drift": {"cooldown_events": 0, "detector": detector, "error_detector": detector},
        "service": {"batch_size": 500},
    })
    sink = MemorySink()
    spec = ModelSpec.from_settings(settings.model)
    Service(settings, spec, MemorySource({("events", 0): stream.records()}), sink).run()
    return [
        a["offsets"]["to"] for a in sink.decoded("alerts")
        if a["series"] == stream.signal and a["severity"] == "drift"
    ]


def score(stream: DriftStream, found: list[int]) -> tuple[list[str], int, int]:
    """Delay per true drift ('missed' when none), false alarms, stable events."""
    delays = []
    for d in stream.drifts:
        hits = [f - d for f in found if d <= f < d + HORIZON]
        delays.append(str(hits[0]) if hits else "missed")
    stable = [
        (0, stream.drifts[0]),
        *((a + HORIZON, b) for a, b in zip(stream.drifts, stream.drifts[1:], strict=False)),
        (stream.drifts[-1] + HORIZON, stream.n),
    ]
    false = sum(1 for f in found for lo, hi in stable if lo <= f < hi)
    return delays, false, sum(max(0, hi - lo) for lo, hi in stable)


def main() -> int:
    """Print the table."""
    print("| stream | signal | detector | drifts at | delay (events) | false alarms "
          "| stable events |")
    print("|---|---|---|---|---|---|---|")
    for stream in STREAMS.values():
        for detector in ("adwin", "page_hinkley", "kswin"):
            delays, false, stable = score(stream, detections(stream, detector))
            drifts = ", ".join(str(d) for d in stream.drifts)
            print(f"| {stream.name} | {stream.signal} | {detector} | {drifts} | "
                  f"{', '.join(delays)} | {false} | {stable} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
