"""Deterministic test streams and the River loops the service must equal."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any

from river import datasets

from stream_learner.datasets import sample_to_event


def agrawal(n: int, keys: int = 1) -> list[dict[str, Any]]:
    """Classification events (boolean-free integer labels), keys round-robin."""
    data = datasets.synth.Agrawal(classification_function=2, seed=7)
    return [
        sample_to_event(i, f"sensor-{i % keys}", x, y)
        for i, (x, y) in enumerate(itertools.islice(data, n))
    ]


def friedman(n: int, keys: int = 1, seed: int = 7) -> list[dict[str, Any]]:
    """Regression events, keys in a shuffled (but seeded) interleaving."""
    rng = random.Random(seed)
    data = datasets.synth.Friedman(seed=seed)
    return [
        sample_to_event(i, f"sensor-{rng.randrange(keys)}", x, y)
        for i, (x, y) in enumerate(itertools.islice(data, n))
    ]


def sensor_anomalies(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """Two-feature readings in [0, 1] with about 2% injected anomalies (label 1)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        anomalous = rng.random() < 0.02
        if anomalous:
            features = {"temp": rng.uniform(0.9, 1.0), "vibration": rng.uniform(0.9, 1.0)}
        else:
            features = {"temp": rng.gauss(0.4, 0.05), "vibration": rng.gauss(0.3, 0.05)}
        event = {"id": i, "key": "pump-1", "ts": float(i), "features": features}
        out.append({**event, "label": int(anomalous)})
    return out


def seasonal_series(n: int, keys: int = 3, seed: int = 5) -> list[dict[str, Any]]:
    """Observations of ``keys`` seasonal series (period 12), interleaved; no features."""
    rng = random.Random(seed)
    steps = dict.fromkeys(range(keys), 0)
    out = []
    for i in range(n):
        k = rng.randrange(keys)
        t = steps[k]
        steps[k] += 1
        value = 10.0 * (k + 1) + 3.0 * ((t % 12) - 6) / 6 + 0.05 * t + rng.gauss(0, 0.3)
        out.append({"id": i, "key": f"series-{k}", "ts": float(i), "label": round(value, 4)})
    return out


def delayed(events: list[dict[str, Any]], k: int) -> Iterator[dict[str, Any]]:
    """Events without their labels; the label of event j comes right before event j + k.

    This is the arrival order of ``river.stream.simulate_qa(..., delay=k)`` for
    ``k >= 1``; labels of the last ``k`` events come after the last event.
    """
    labels = [{"id": e["id"], "key": e["key"], "label": e["label"]} for e in events]
    for i, event in enumerate(events):
        if i >= k:
            yield labels[i - k]
        yield {name: value for name, value in event.items() if name != "label"}
    yield from labels[max(0, len(events) - k) :]


def early(events: list[dict[str, Any]], k: int) -> Iterator[dict[str, Any]]:
    """The label of event j comes right before event j - k (before its event)."""
    labels = [{"id": e["id"], "key": e["key"], "label": e["label"]} for e in events]
    yield from labels[:k]
    for i, event in enumerate(events):
        if i + k < len(labels):
            yield labels[i + k]
        yield {name: value for name, value in event.items() if name != "label"}
