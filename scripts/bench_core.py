#!/usr/bin/env python3
"""Per-event CPU cost of the pure core: the service without Kafka, against River's bare loop.

Run from the repository root::

    python scripts/bench_core.py                          # the three models, 30 000 events
    python scripts/bench_core.py --models linear --events 10000
    python scripts/bench_core.py --parts                  # also the overhead in parts

For each model of ``scripts/benchmark.py`` (``linear``: StandardScaler |
LogisticRegression, ``tree``: HoeffdingTreeClassifier, ``anomaly``: MinMaxScaler |
HalfSpaceTrees) and the same seeded events, three loops are timed:

bare
    River's own loop (``benchmark.bare_loop``): predict then learn each event,
    one model per input partition.
core (drift on)
    :class:`~stream_learner.service.Service` over an in-memory source and sink
    (:mod:`stream_learner.testing`) with the default ``[drift]`` monitors
    (error, prediction, schema): decoding, scoring, learning, label accounting,
    drift monitors, encoding, metrics and commits, without the Kafka client.
core (drift off)
    The same with ``drift.enabled = false``.

With ``--parts``, a second table splits the overhead of each model (drift
on) into what can be timed alone on the same events: the drift monitors (drift
on minus drift off; of which River's detectors, fed alone the values the
monitors fed them), decoding and validating each record
(:meth:`~stream_learner.events.Codec.decode`: JSON, which the bare loop is
handed already parsed, and the event contract's checks), encoding each
prediction (:func:`~stream_learner.events.encode_prediction`), and the rest
(the loop, the learner's label and metric bookkeeping, the summary, commits
and checkpoints) as what is left.

Each figure is the median of ``--repeat`` runs (3 by default), interleaved
in this process, so the baseline and the service share the machine's state.
The table shows microseconds of CPU time per event (``time.process_time``
around each loop: the loop is single-threaded and does no I/O, and CPU time
is less disturbed than wall time by other processes on a shared machine;
``--wall`` for wall time), the service's overhead over the bare loop, and the
ratio bare / core (1.0: the service costs nothing over River).

Notes
-----
Drift alerts are logged at WARNING by the service; logging is disabled here so
that the table is not interleaved with them (they are a handful per run).
No timing is asserted anywhere: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this tree's package, not an installed one
    sys.path.insert(0, str(ROOT))

from stream_learner import service as service_module  # noqa: E402
from stream_learner.drift.monitors import Monitor  # noqa: E402
from stream_learner.events import Codec, Origin, encode_prediction  # noqa: E402
from stream_learner.models import ModelSpec  # noqa: E402
from stream_learner.service import Service  # noqa: E402
from stream_learner.settings import load_settings  # noqa: E402
from stream_learner.sources import Record  # noqa: E402
from stream_learner.testing import MemorySink, MemorySource  # noqa: E402


def _load_benchmark() -> ModuleType:
    """``scripts/benchmark.py``: its models, events and bare loop define the workload."""
    path = ROOT / "scripts" / "benchmark.py"
    spec = importlib.util.spec_from_file_location("benchmark_script", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


B = _load_benchmark()


@dataclass(frozen=True)
class Row:
    """Median microseconds per event of one model's three loops."""

    model: str
    bare_us: float
    core_us: float
    core_nodrift_us: float
    decode_us: float | None = None  # with --parts
    encode_us: float | None = None
    detectors_us: float | None = None

    @property
    def ratio(self) -> float:
        """bare / core with drift on: the share of the service's time River itself takes."""
        return self.bare_us / self.core_us


def partitions(values: Sequence[bytes]) -> dict[tuple[str, int], list[Record]]:
    """The events spread over the partitions as in ``benchmark.py`` (key by sensor)."""
    out: dict[tuple[str, int], list[Record]] = {}
    for i, value in enumerate(values):
        partition, key = B.sensor(i)
        records = out.setdefault(("events", partition), [])
        origin = Origin("events", partition, len(records))
        records.append(Record(value, key.encode(), i, origin))
    return out


def core_us(case: Any, values: Sequence[bytes], drift: bool, wall: bool = False) -> float:
    """Microseconds per event of one :meth:`Service.run` over an in-memory source and sink.

    CPU time of the process, or wall time with ``wall``; building the service is not timed.
    """
    overrides: dict[str, Any] = {"model": case.model_settings()}
    if not drift:
        overrides["drift"] = {"enabled": False}
    settings = load_settings(None, env={}, overrides=overrides)
    spec = ModelSpec.from_settings(settings.model)
    service = Service(settings, spec, MemorySource(partitions(values)), MemorySink())
    clock = time.perf_counter if wall else time.process_time
    started = clock()
    summary = service.run()
    elapsed = clock() - started
    if summary.predictions != len(values):
        raise RuntimeError(f"{case.name}: {summary.predictions} predictions of {len(values)}")
    return elapsed / len(values) * 1e6


def bare_us(case: Any, values: Sequence[bytes], wall: bool = False) -> float:
    """Microseconds per event of River's bare predict-then-learn loop (CPU or wall time)."""
    bare = B.bare_loop(case, values)
    if wall:
        return 1e6 / float(bare.events_per_s)
    return float(bare.cpu_s_per_m)  # CPU seconds per million events: µs per event


@dataclass
class Recorded:
    """What one run with drift on handed to encoding and to River's detectors."""

    #: each prediction the loop encoded, with its latency
    predictions: list[tuple[Any, float | None]]
    #: each monitor's detector and warning twin as built (before their first value),
    #: and the values the monitor fed them
    fed: list[tuple[Any, Any, list[float]]]


def recorded_run(case: Any, values: Sequence[bytes]) -> Recorded:
    """Run the service once with drift on, recording what :func:`parts_us` times alone."""
    predictions: list[tuple[Any, float | None]] = []
    fed: dict[int, tuple[Any, Any, Any, list[float]]] = {}
    update = Monitor.update

    def encode(prediction: Any, latency_ms: float | None = None) -> bytes:
        predictions.append((prediction, latency_ms))
        return encode_prediction(prediction, latency_ms)

    def monitor_update(self: Monitor, value: float, at: Any, rules: Any) -> Any:
        entry = fed.get(id(self))
        if entry is None:  # the monitor is kept in the entry, so its id is not reused
            entry = fed[id(self)] = (self, deepcopy(self.detector), deepcopy(self.warner), [])
        entry[3].append(value)
        return update(self, value, at, rules)

    # the loop calls encode_prediction by its module's name
    with mock.patch.object(service_module, "encode_prediction", encode), \
            mock.patch.object(Monitor, "update", monitor_update):
        core_us(case, values, drift=True)
    return Recorded(predictions, [(d, w, series) for _m, d, w, series in fed.values()])


def parts_us(
    case: Any, values: Sequence[bytes], recorded: Recorded, wall: bool = False
) -> tuple[float, float, float]:
    """CPU (or wall) µs per event of decoding, of encoding the predictions, and of River's
    detectors fed alone (fresh copies of them, so each call times the same work)."""
    settings = load_settings(None, env={}, overrides={"model": case.model_settings()})
    codec = Codec(settings.schema_, settings.limits, ModelSpec.from_settings(settings.model).task)
    records = [r for run in partitions(values).values() for r in run]
    detectors = deepcopy(recorded.fed)
    clock = time.perf_counter if wall else time.process_time
    started = clock()
    for value, key, timestamp_ms, origin in records:
        codec.decode(value, key, timestamp_ms, origin)
    decoded = clock() - started
    started = clock()
    for prediction, latency_ms in recorded.predictions:
        encode_prediction(prediction, latency_ms)
    encoded = clock() - started
    started = clock()
    for detector, warner, series in detectors:
        for x in series:
            detector.update(x)
            if warner is not None:
                warner.update(x)
    fed = clock() - started
    per_event = 1e6 / len(values)
    return decoded * per_event, encoded * per_event, fed * per_event


def measure(case: Any, events: int, repeat: int, wall: bool = False, parts: bool = False) -> Row:
    """Bare, core with drift and core without drift (and the parts), interleaved run by run."""
    values = B.encoded_events(B.samples(events), case.labelled)
    runs: dict[str, list[float]] = {
        "bare": [], "on": [], "off": [], "decode": [], "encode": [], "detectors": []
    }
    recorded = recorded_run(case, values) if parts else None
    for _ in range(repeat):  # interleaved: a slow moment of the machine hits all of them
        runs["bare"].append(bare_us(case, values, wall))
        runs["on"].append(core_us(case, values, drift=True, wall=wall))
        runs["off"].append(core_us(case, values, drift=False, wall=wall))
        if recorded is not None:
            decode, encode, detectors = parts_us(case, values, recorded, wall)
            runs["decode"].append(decode)
            runs["encode"].append(encode)
            runs["detectors"].append(detectors)
    med = {name: statistics.median(times) for name, times in runs.items() if times}
    return Row(
        case.name, med["bare"], med["on"], med["off"], med.get("decode"), med.get("encode"),
        med.get("detectors"),
    )


def _table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A Markdown table: the first column left-aligned, the figures right-aligned."""
    lines = ["| " + " | ".join(columns) + " |", "|---|" + "---:|" * (len(columns) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def render(rows: Sequence[Row]) -> str:
    """The results as a Markdown table."""
    columns = ["model", "bare µs/event", "core µs/event (drift on)", "overhead µs",
               "core µs/event (drift off)", "overhead µs", "bare / core"]
    return _table(columns, [
        [r.model, f"{r.bare_us:.1f}", f"{r.core_us:.1f}", f"{r.core_us - r.bare_us:.1f}",
         f"{r.core_nodrift_us:.1f}", f"{r.core_nodrift_us - r.bare_us:.1f}", f"{r.ratio:.2f}"]
        for r in rows
    ])


def render_parts(rows: Sequence[Row]) -> str:
    """The overhead with drift on, split into its parts, as a Markdown table."""
    columns = ["model", "overhead µs (drift on)", "drift monitors", "of which River's detectors",
               "decode", "encode", "rest: loop, labels, metrics, commits"]
    cells = []
    for r in rows:
        if r.decode_us is None or r.encode_us is None or r.detectors_us is None:
            continue
        overhead, monitors = r.core_us - r.bare_us, r.core_us - r.core_nodrift_us
        rest = overhead - monitors - r.decode_us - r.encode_us
        cells.append([r.model, f"{overhead:.1f}", f"{monitors:.1f}", f"{r.detectors_us:.1f}",
                      f"{r.decode_us:.1f}", f"{r.encode_us:.1f}", f"{rest:.1f}"])
    return _table(columns, cells)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, measure every model, print the table."""
    names = [case.name for case in B.CASES]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", nargs="+", choices=names, default=names, help="models to measure"
    )
    parser.add_argument("--events", type=int, default=30_000, help="events per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    parser.add_argument(
        "--wall", action="store_true", help="wall time instead of the process's CPU time"
    )
    parser.add_argument(
        "--parts", action="store_true",
        help="split the overhead (drift on) into drift monitors, decode, encode and the rest",
    )
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    cases = {case.name: case for case in B.CASES}
    rows = []
    for name in args.models:
        rows.append(measure(cases[name], args.events, args.repeat, args.wall, args.parts))
        print(f"{name}: done", file=sys.stderr, flush=True)
    clock = "wall time" if args.wall else "CPU time"
    print(f"{args.events} events, median of {args.repeat} runs, µs of {clock} per event\n")
    print(render(rows))
    if args.parts:
        print("\nThe overhead with drift on, in parts (µs per event):\n")
        print(render_parts(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
