"""River's bundled datasets as streams of event records (no downloads).

Each sample ``(x, y)`` of a dataset that ships inside the ``river`` package
becomes one JSON event of the event contract: a running ``id``, the dataset
name as ``key``, ``x`` as ``features`` and ``y`` as ``label``. A datetime
feature becomes the event time ``ts`` and is expanded into ``hour`` and
``weekday`` features, since models take numbers; feature names become strings
(JSON object keys).

Examples
--------
>>> import itertools, orjson
>>> first = next(iter(dataset_records("WaterFlow")))
>>> event = orjson.loads(first)
>>> event["id"], event["key"], event["ts"], event["label"]
(0, 'WaterFlow', 1647770400.0, 100.59)
>>> event["features"]
{'hour': 11, 'weekday': 6}
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import orjson
from river import datasets

__all__ = ["BUNDLED", "dataset_records", "sample_to_event"]

#: Datasets whose files ship inside the river package, by task.
BUNDLED = {
    "WaterFlow": "regression",
    "TrumpApproval": "regression",
    "ChickWeights": "regression",
    "Phishing": "classification",
    "Bananas": "classification",
}


def sample_to_event(index: int, key: str, x: dict[str, Any], y: Any) -> dict[str, Any]:
    """One River sample as an event object of the event contract."""
    features: dict[str, Any] = {}
    ts = float(index)
    for name, value in x.items():
        if isinstance(value, dt.datetime):
            ts = value.timestamp()
            features["hour"] = value.hour
            features["weekday"] = value.weekday()
        else:
            features[str(name)] = value
    event: dict[str, Any] = {"id": index, "key": key, "ts": ts, "features": features}
    if y is not None:
        event["label"] = y.item() if hasattr(y, "item") else y
    return event


def dataset_records(name: str) -> Iterator[bytes]:
    """JSON records of a bundled River dataset, in the dataset's order."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled dataset {name!r}; choose one of {sorted(BUNDLED)}")
    dataset = getattr(datasets, name)()
    for i, (x, y) in enumerate(dataset):
        yield orjson.dumps(sample_to_event(i, name, x, y))
