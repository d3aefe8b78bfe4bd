"""The dashboard document of a finished run, from its files (``stream-learner report``).

A run on the local transport leaves JSON Lines files: metrics snapshots
(``local.metrics``), predictions (``local.output``), alerts (``local.alerts``)
and dead letters; its input holds the label records. :func:`build_report`
turns them into the document the live page draws
(``stream_learner/schemas/dashboard.json``, ``source = "report"``):

- one sample per metrics snapshot: its records/s, online metric and lag per
  partition, and the exact p50 / p99 of ``latency_ms`` of the predictions
  made in its interval (the predictions file is in output order; a snapshot's
  ``totals.predictions`` says how many came before it);
- totals, partitions and label coverage from the last snapshot;
- label delays from the input (events and label records in arrival order):
  events scored between an event and its label, and seconds of event time;
- dead letters by output and reason code (the reason header of each); a
  dead-letter file that does not exist counts as none (the file sink creates
  it with the first dead letter);
- per shard, the model of its last prediction, and the last challenger
  action in the alerts.

Examples
--------
>>> exact_quantile([4.0, 1.0, 3.0, 2.0], 0.5), exact_quantile([], 0.5)
(2.0, None)
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from stream_learner.dashboard.history import DASHBOARD_SCHEMA_VERSION, empty_parts
from stream_learner.errors import SettingsError
from stream_learner.settings import SchemaSettings

__all__ = ["ReportInputs", "build_report", "exact_quantile"]

_REASON = "__stream_learner.errors.reason"
_CHALLENGER_ACTIONS = {
    "challenger_started": "training",
    "challenger_armed": "armed",
    "challenger_decided": "deciding",
    "challenger_dropped": "none (dropped)",
    "promoted": "none (last: promoted)",
    "champion_kept": "none (last: champion kept)",
    # a reset keeps the replaced model learning beside the fresh one until its trial ends
    "reset": "reset on trial",
    "reset_final": "none (last: reset, final)",
    "reset_undone": "none (last: reset undone)",
    "reset_kept": "none (last: reset kept)",
}


def exact_quantile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile by the nearest-rank method (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True)
class ReportInputs:
    """The files of a finished run (each optional but ``metrics``)."""

    metrics: str
    predictions: str = ""
    labels: str = ""
    alerts: str = ""
    dead_letters: str = ""
    learn_dead_letters: str = ""


def _lines(path: str) -> Iterator[dict[str, Any]]:
    """JSON objects of a JSON Lines file, skipping blank and undecodable lines."""
    if not path:
        return
    with Path(path).open("rb") as handle:
        for line in handle:
            if line.strip():
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(value, dict):
                    yield value


def _snapshots(path: str) -> list[dict[str, Any]]:
    """The metrics snapshots of a file; objects that are not snapshots are left out.

    Raises
    ------
    SettingsError
        The file holds objects, none of which is a snapshot (another run file given).
    """
    records = list(_lines(path))
    snapshots = [r for r in records if isinstance(r.get("ts"), int | float)
                 and isinstance(r.get("totals"), dict) and isinstance(r.get("partitions", []), list)]
    if records and not snapshots:
        raise SettingsError(
            f"--metrics {path}: none of its {len(records)} records is a metrics snapshot (with "
            "ts and totals): give the local.metrics file of a run")
    return snapshots


def _series(snapshots: list[dict[str, Any]], latencies: list[float]) -> list[dict[str, Any]]:
    out = []
    start = 0
    for snap in snapshots:
        end = int(snap.get("totals", {}).get("predictions", start))
        window = latencies[start:end]
        start = max(start, end)
        parts = snap.get("partitions", [])
        p50, p99 = exact_quantile(window, 0.5), exact_quantile(window, 0.99)
        out.append({
            "ts": snap["ts"],
            "records_per_s": snap.get("records_per_s"),
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "online_metric": {str(p["partition"]): p.get("online_metric") for p in parts},
            "lag_records": {str(p["partition"]): p.get("lag_records", 0) for p in parts},
        })
    return out


def _label_delays(path: str, schema: SchemaSettings) -> tuple[list[int], list[float]]:
    events: dict[Any, tuple[int, float]] = {}
    n_events, event_time = 0, -math.inf
    by_events: list[int] = []
    by_seconds: list[float] = []
    for record in _lines(path):
        ts = record.get(schema.ts)
        ts = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else 0.0
        if schema.features:
            is_event = schema.features in record
        else:  # flat records: an event has a field besides the id, key, time and label
            is_event = bool(record.keys() - {schema.id, schema.key, schema.ts, schema.label})
        ident = (record.get(schema.key), record.get(schema.id))
        if is_event:
            events[ident] = (n_events, ts)
            n_events += 1
            event_time = max(event_time, ts)
            if schema.label in record:
                by_events.append(0)
                by_seconds.append(0.0)
        elif schema.label in record and ident in events:
            seq, at = events.pop(ident)
            by_events.append(n_events - 1 - seq)
            by_seconds.append(max(0.0, event_time - at))  # event time moves with events only
    return by_events, by_seconds


def _models(predictions: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    for p in predictions:
        source = p.get("source", {})
        last[f"{source.get('topic', '')}:{source.get('partition', 0)}"] = p
    challenger: dict[str, str] = {}
    for a in alerts:
        action = str(a.get("action"))
        if action == "reset":  # the reset's own record says whether a trial started
            if a.get("severity") != "info":
                continue
            if not a.get("window", {}).get("n_trial"):
                action = "reset_final"  # reset_trial_labels = 0, or no labels
        state = _CHALLENGER_ACTIONS.get(action)
        if state is not None:
            challenger[str(a.get("shard"))] = state
    out = []
    for shard, p in sorted(last.items()):
        model = p.get("model", {})
        out.append({
            "shard": shard,
            "name": model.get("name", ""),
            "version": model.get("version", 0),
            "generation": model.get("generation", 0),
            "n_learned": model.get("n_learned", 0),
            "challenger": challenger.get(shard, "none"),
        })
    return out


def build_report(
    inputs: ReportInputs, schema: SchemaSettings | None = None, generated_at: float | None = None
) -> dict[str, Any]:
    """The dashboard document of a finished run (``source = "report"``)."""
    snapshots = _snapshots(inputs.metrics)
    predictions = list(_lines(inputs.predictions))
    alerts = list(_lines(inputs.alerts))
    latencies = [float(p["latency_ms"]) for p in predictions if "latency_ms" in p]
    doc = {
        "schema_version": DASHBOARD_SCHEMA_VERSION,
        "source": "report",
        "worker": snapshots[-1].get("worker", "") if snapshots else "",
        "generated_at": time.time() if generated_at is None else generated_at,
        **empty_parts(),
        "series": _series(snapshots, latencies),
        "alerts": alerts,
        "models": _models(predictions, alerts),
    }
    if snapshots:
        last = snapshots[-1]
        by_shard = {p["shard"]: p for p in last.get("partitions", [])}
        for model in doc["models"]:  # a prediction counts the labels learned before it
            part = by_shard.get(model["shard"], {})
            model["n_learned"] = part.get("labels_learned", model["n_learned"])
            model["models"] = part.get("resident_models", 0) + part.get("parked_models", 0)
        totals = last.get("totals", {})
        parts = last.get("partitions", [])
        doc["metric"] = next((p.get("metric", "") for p in parts), "")
        doc["totals"] = {name: int(totals.get(key, 0)) for name, key in (
            ("records", "records"), ("predictions", "predictions"),
            ("label_records", "label_records"), ("dead_letters", "dead_letters"),
            ("labels_learned", "labels"))}
        doc["partitions"] = [{
            "partition": p["partition"], "shard": p["shard"],
            "online_metric": p.get("online_metric"), "predictions": p.get("predictions", 0),
            "labels_learned": p.get("labels_learned", 0),
            "label_coverage": p.get("label_coverage", 0.0),
            "pending_predictions": p.get("pending_predictions", 0),
            "mean_delay_events": None, "mean_delay_seconds": None,
            "lag_records": p.get("lag_records", 0), "lag_seconds": p.get("lag_seconds", 0.0),
        } for p in parts]
        n = sum(p.get("predictions", 0) for p in parts)
        labelled = sum(p.get("predictions", 0) * p.get("label_coverage", 0.0) for p in parts)
        doc["labels"]["coverage"] = labelled / n if n else 0.0
        doc["labels"]["labelled"] = round(labelled)
        doc["labels"]["expired"] = int(totals.get("labels_expired", 0))
    if inputs.labels:
        by_events, by_seconds = _label_delays(inputs.labels, schema or SchemaSettings())
        for name, values in (("delay_events", by_events), ("delay_seconds", by_seconds)):
            doc["labels"][name] = {
                "p50": exact_quantile(values, 0.5), "p99": exact_quantile(values, 0.99)}
    dead: Counter[tuple[str, str]] = Counter()
    for output, path in (("dead_letters", inputs.dead_letters),
                         ("learn_dead_letters", inputs.learn_dead_letters)):
        if path and not Path(path).exists():  # the file sink creates it on the first one
            continue
        for record in _lines(path):
            dead[(output, str(record.get("headers", {}).get(_REASON, "unknown")))] += 1
    doc["dead_letters"] = [
        {"output": output, "reason": reason, "count": count}
        for (output, reason), count in sorted(dead.items())
    ]
    return doc
