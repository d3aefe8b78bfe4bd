"""Synthetic streams with drifts at known positions, and the in-process reference.

Used by the equivalence tests and by scripts/drift_report.py. Every stream is a
River synthetic generator (or a seeded Gaussian stream for feature drift), made
into event records with inline labels; the reference runs the same model and the
same River detector in-process, on the same signal, in the service's order
(score, then learn).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import orjson
from river.datasets import synth

from stream_learner.drift import detector_params, make_detector

CLASSIFIER = (
    {"step": "preprocessing.StandardScaler"},
    {"step": "linear_model.LogisticRegression"},
)
TREE = ({"step": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 100}},)
REGRESSOR = (
    {"step": "preprocessing.StandardScaler"},
    {"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
)


@dataclass(frozen=True)
class DriftStream:
    """A named stream: its task, model pipeline, length and true drift positions."""

    name: str
    task: str
    pipeline: tuple[dict[str, Any], ...]
    n: int
    drifts: tuple[int, ...]
    description: str
    signal: str = "error"
    extra: dict[str, Any] = field(default_factory=dict)

    def samples(self) -> Iterator[tuple[dict[str, Any], Any]]:
        """(features, label) pairs, features keyed by strings."""
        for x, y in islice(_generator(self), self.n):
            yield {str(k): v for k, v in x.items()}, y

    def records(self) -> list[bytes]:
        """The stream as event records with inline labels (ts = index)."""
        return [
            orjson.dumps({"id": i, "key": "s", "ts": float(i), "features": x, "label": y})
            for i, (x, y) in enumerate(self.samples())
        ]

    def model_settings(self) -> dict[str, Any]:
        """The [model] section that runs this stream."""
        return {"task": self.task, "name": self.name, "pipeline": list(self.pipeline)}


def _gaussian_shift(stream: DriftStream) -> Iterator[tuple[dict[str, float], float]]:
    rng = random.Random(7)
    for i in range(stream.n):
        shift = sum(1.0 for d in stream.drifts if i >= d)
        x = {"level": rng.gauss(shift, 1.0), "noise": rng.gauss(0.0, 1.0)}
        yield x, x["noise"]


def _generator(stream: DriftStream) -> Iterator[tuple[dict[Any, Any], Any]]:
    if stream.name == "sea":
        return iter(synth.ConceptDriftStream(
            synth.SEA(variant=0, noise=0.1, seed=1), synth.SEA(variant=3, noise=0.1, seed=2),
            position=stream.drifts[0], width=50, seed=3,
        ))
    if stream.name == "agrawal":
        return iter(synth.ConceptDriftStream(
            synth.Agrawal(classification_function=0, seed=1),
            synth.Agrawal(classification_function=4, seed=2),
            position=stream.drifts[0], width=50, seed=3,
        ))
    if stream.name == "friedman":
        return iter(synth.FriedmanDrift(drift_type="gra", position=stream.drifts, seed=1))
    return _gaussian_shift(stream)


STREAMS = {
    s.name: s
    for s in (
        DriftStream("sea", "classification", CLASSIFIER, 6000, (3000,),
                    "SEA variant 0 -> 3, 10% label noise (ConceptDriftStream, width 50)"),
        DriftStream("agrawal", "classification", TREE, 6000, (3000,),
                    "Agrawal function 0 -> 4 (ConceptDriftStream, width 50)"),
        DriftStream("friedman", "regression", REGRESSOR, 6000, (2000, 4000),
                    "FriedmanDrift global recurring abrupt (gra)"),
        DriftStream("gaussian", "regression", REGRESSOR, 6000, (3000,),
                    "feature 'level' mean +1 sd (seeded Gaussian)", signal="feature:level"),
    )
}


def reference_detections(
    stream: DriftStream, spec: Any, warmup: int, detector: str = "adwin"
) -> list[int]:
    """Indices where the River detector, run in-process on the stream's signal, detects drift.

    With the service's rules for inline labels: the detector (with the service's
    parameters for the signal) sees every value, but detections count only once
    the model has learned ``warmup`` labels (the label of event ``i`` is the
    ``i + 1``-th; a feature of event ``i`` is seen before its label), and on the
    error only when ADWIN's window after the detection has a higher mean than
    the values it dropped from its window (the error got worse); after a fall,
    ADWIN keeps the window it cut instead of starting afresh. River's one-sided
    detectors of a 0/1 error (``hddm_a``, ``hddm_w``) detect only rises.
    """
    model = spec.build()
    error = not stream.signal.startswith("feature:")
    det = make_detector(detector, detector_params(detector, {}, error))
    found = []
    for i, (x, y) in enumerate(stream.samples()):
        value = _signal(stream, model, x, y)
        model.learn_one(x, y)
        if value is None:
            continue
        if detector != "adwin":
            det.update(value)
            if det.drift_detected and i + 1 >= warmup:
                found.append(i)
            continue
        width, total = det.width, det.total  # ADWIN's window before this value
        det.update(value)
        if det.drift_detected:
            dropped = (total + value - det.total) / (width + 1 - det.width)
            worse = not error or det.estimation > dropped
            if error and not worse:
                det._drift_detected = False  # the original ADWIN: keep the window it cut
            learned = i + 1 if error else i
            if worse and learned >= warmup:
                found.append(i)
    return found


def _signal(stream: DriftStream, model: Any, x: dict[str, Any], y: Any) -> float | None:
    if stream.signal.startswith("feature:"):
        return float(x[stream.signal.removeprefix("feature:")])
    y_pred = model.predict_one(x)
    if stream.task == "classification":
        return float(y_pred != y)
    return None if y_pred is None else abs(y - y_pred)
