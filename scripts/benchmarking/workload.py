"""The workload: events, topics, the three models and River's bare loop over them."""

from __future__ import annotations

import itertools
import math
import pickle
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]
# the command every subprocess role runs: ``python scripts/benchmark.py --role ...``
SCRIPT = ROOT / "scripts" / "benchmark.py"
if str(ROOT) not in sys.path:  # this tree's package, not an installed one
    sys.path.insert(0, str(ROOT))

PARTITIONS = 3
SENSORS = 12
SEED = 7
LOAD_LEVELS = (0.25, 0.5, 0.8)
CLIENTS = ("kafka-python", "confluent-kafka")
PEER_RATES = (2000.0, 5000.0)
QUIX = "quix"
NAIVE = "naive"
TOOL = "org.apache.kafka.tools.EndToEndLatency"


@dataclass(frozen=True)
class Case:
    """One model under test."""

    name: str
    title: str
    task: str
    pipeline: tuple[dict[str, Any], ...]
    labelled: bool
    throughput_target: float | None

    def model_settings(self) -> dict[str, Any]:
        """The ``[model]`` section for this case."""
        from stream_learner.settings import ModelSettings

        section: dict[str, Any] = {
            "name": f"bench-{self.name}",
            "task": self.task,
            "pipeline": [dict(step) for step in self.pipeline],
        }
        if self.task == "anomaly" and "anomaly_quantile" in ModelSettings.model_fields:
            section["anomaly_quantile"] = 0.95  # is_anomaly for the top 5 % of scores
        return section


CASES = (
    Case(
        "linear",
        "StandardScaler | LogisticRegression",
        "classification",
        ({"step": "preprocessing.StandardScaler"}, {"step": "linear_model.LogisticRegression"}),
        labelled=True,
        throughput_target=0.5,
    ),
    Case(
        "tree",
        "HoeffdingTreeClassifier",
        "classification",
        ({"step": "tree.HoeffdingTreeClassifier"},),
        labelled=True,
        throughput_target=0.85,
    ),
    Case(
        "anomaly",
        "MinMaxScaler | HalfSpaceTrees, in a QuantileFilter (q = 0.95)",
        "anomaly",
        ({"step": "preprocessing.MinMaxScaler"}, {"step": "anomaly.HalfSpaceTrees"}),
        labelled=False,
        throughput_target=None,
    ),
)


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (``--quick`` shrinks them)."""

    n_events: int
    phase_s: float
    floor_records: int
    warmup_events: int

    @classmethod
    def make(cls, quick: bool) -> Plan:
        """The full or the quick plan."""
        if quick:
            return cls(n_events=5000, phase_s=2.0, floor_records=500, warmup_events=100)
        return cls(n_events=30000, phase_s=6.0, floor_records=3000, warmup_events=300)


def samples(n: int) -> list[tuple[dict[str, Any], Any]]:
    """The first ``n`` samples of a seeded synthetic sensor-like stream (9 numeric features)."""
    from river.datasets import synth

    stream = synth.Agrawal(classification_function=2, seed=SEED)
    return [(dict(x), int(y)) for x, y in itertools.islice(stream, n)]


def sensor(i: int, sensors: int = SENSORS) -> tuple[int, str]:
    """Partition and key of event ``i``: ``sensors`` keys spread over the partitions."""
    s = i % sensors
    return s % PARTITIONS, f"sensor-{s}"


def event(
    i: int, x: dict[str, Any], y: Any, labelled: bool, ts: float, sensors: int = SENSORS
) -> dict[str, Any]:
    """Event ``i`` of the event contract."""
    doc: dict[str, Any] = {"id": i, "key": sensor(i, sensors)[1], "ts": ts, "features": x}
    if labelled:
        doc["label"] = y
    return doc


def encoded_events(
    pool: Sequence[tuple[dict[str, Any], Any]], labelled: bool, sensors: int = SENSORS
) -> list[bytes]:
    """One JSON record per sample."""
    return [orjson.dumps(event(i, x, y, labelled, float(i), sensors))
            for i, (x, y) in enumerate(pool)]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..1).

    Examples
    --------
    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([1.0, 2.0, 3.0, 4.0], 0.99)
    (2.0, 4.0)
    """
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Bare:
    """River's own loop: the ceiling."""

    events_per_s: float
    cpu_s_per_m: float
    p50_us: float
    p99_us: float
    p999_us: float
    model_kib: float


def build_model(case: Case) -> Any:
    """A fresh model of ``case``, exactly as the service builds it from the same settings.

    For the anomaly case that includes the ``anomaly.QuantileFilter`` the service
    wraps the detector in (``model.anomaly_quantile``), whose ``learn_one`` scores
    each event once more: River's work either way, so it belongs in the ceiling.
    """
    from stream_learner.models import ModelSpec
    from stream_learner.settings import load_settings

    settings = load_settings(None, env={}, overrides={"model": case.model_settings()})
    return ModelSpec.from_settings(settings.model).build()


def bare_loop(case: Case, values: Sequence[bytes]) -> Bare:
    """Predict then learn every event with one model per partition, timing each event."""
    decoded = [orjson.loads(v) for v in values]
    parts = [sensor(ev["id"])[0] for ev in decoded]
    models = [build_model(case) for _ in range(PARTITIONS)]
    durations: list[int] = []
    record = durations.append
    clock = time.perf_counter_ns
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if case.task == "anomaly":
        for ev, p in zip(decoded, parts, strict=True):
            model, x = models[p], ev["features"]
            t = clock()
            model.score_one(x)
            model.learn_one(x)
            record(clock() - t)
    else:
        for ev, p in zip(decoded, parts, strict=True):
            model, x = models[p], ev["features"]
            t = clock()
            model.predict_proba_one(x)
            model.learn_one(x, ev["label"])
            record(clock() - t)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ordered = sorted(d / 1000.0 for d in durations)
    return Bare(
        events_per_s=len(values) / wall,
        cpu_s_per_m=cpu / len(values) * 1e6,
        p50_us=percentile(ordered, 0.5),
        p99_us=percentile(ordered, 0.99),
        p999_us=percentile(ordered, 0.999),
        model_kib=max(len(pickle.dumps(m)) for m in models) / 1024.0,
    )


def service_support(case: Case) -> str | None:
    """None when the service accepts ``case``'s model settings, else why not."""
    from stream_learner.models import ModelSpec
    from stream_learner.settings import load_settings

    try:
        settings = load_settings(None, env={}, overrides={"model": case.model_settings()})
        ModelSpec.from_settings(settings.model)
    except Exception as exc:  # any refusal means "not supported yet"
        first = str(exc).strip().splitlines()
        log(f"{case.name}: the service refuses the model settings: {' '.join(first)[-300:]}")
        return f"pending: task `{case.task}` not accepted by the service yet"
    return None


def client_support(client: str) -> str | None:
    """None when the installed service accepts ``kafka.client = client``, else why not.

    A service without the setting has one client, kafka-python: it is run
    without the key.
    """
    from stream_learner.settings import KafkaSettings, load_settings

    if "client" not in KafkaSettings.model_fields:
        return None if client == "kafka-python" else (
            "the installed service has no `kafka.client` setting (only kafka-python)")
    try:
        load_settings(None, env={}, overrides={"kafka": {"client": client}})
    except Exception as exc:  # any refusal: the service does not offer that client
        return f"the installed service refuses kafka.client = {client!r}: {str(exc).strip()[:200]}"
    return None


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[benchmark] {message}", file=sys.stderr, flush=True)


def service_peer(client: str) -> str:
    """Key of the service's row in :class:`Peers` for one Kafka client."""
    return f"service:{client}"


@dataclass(frozen=True)
class GapVariant:
    """One setup of the throughput-gap experiment (``--gap``)."""

    name: str
    events: int = 30_000
    sensors: int = SENSORS
    features: int = 9
    checkpoints: bool = False
    drift: bool = True
    live: bool = False


GAP_VARIANTS = (
    GapVariant("this page's max run: 30,000 events, 12 sensors, 9 features, drift on, "
               "no checkpoints, pre-filled topic"),
    GapVariant("+ Redis checkpoints every 1 s", checkpoints=True),
    GapVariant("drift off instead", drift=False),
    GapVariant("+ 50 sensors, 8 features", sensors=50, features=8),
    GapVariant("+ 100,000 events", events=100_000),
    GapVariant("+ produced while the worker reads (live)", live=True),
    GapVariant("the comparison's setup: 100,000 events, 50 sensors, 8 features, drift on, "
               "checkpoints every 1 s", events=100_000, sensors=50, features=8, checkpoints=True),
    GapVariant("the same, produced while the worker reads", events=100_000, sensors=50,
               features=8, checkpoints=True, live=True),
)
