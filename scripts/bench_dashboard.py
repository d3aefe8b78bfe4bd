#!/usr/bin/env python3
"""What the live page costs the worker: throughput with nobody watching vs one viewer.

The same stream (the demo's sensor stream, inline labels, 100,000 events) runs
through the service in this process, file in, predictions to /dev/null, with
the metrics endpoint up, in four variants, interleaved round by round so that
the shared machine's noise falls on all of them alike:

- ``no history``: the page's sampling switched off (the cost of collecting it);
- ``nobody watching``: as shipped (the baseline of the ratios);
- ``one viewer``: a separate process does what an open page does: ``/`` once,
  then ``/api/v1/dashboard`` every 2 s;
- ``busy viewer``: the same, every 0.1 s (twenty open pages).

Then the cost of each piece, in CPU time of the thread that does it (which the
machine's other load barely changes): one sample (the loop's thread, once a
second), and the document with a full history (600 samples, 500 alerts) and
the page (the HTTP thread, per request). The loop is one thread holding the
GIL, so a viewer can take from its throughput at most the serving thread's
share of a core: the document's cost every 2 s.

Each variant's throughput is input records per CPU second of the worker's
process (``time.process_time``: the loop and the HTTP thread that serves the
page, not the viewer), which other processes on a shared machine do not
change, and, for reference, per wall-clock second. Ratios are per round,
against ``nobody watching``; the median is reported with the range.

    python scripts/bench_dashboard.py                 # ~5 minutes; figures for docs/dashboard.md
    python scripts/bench_dashboard.py --events 50000 --rounds 2   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source tree that is not installed
    sys.path.insert(0, str(ROOT))

from stream_learner.api import build_service  # noqa: E402
from stream_learner.cli import settle_heap  # noqa: E402
from stream_learner.dashboard.history import (  # noqa: E402
    ALERTS_KEPT,
    SAMPLE_INTERVAL_S,
    SAMPLES_KEPT,
    History,
    dashboard_response,
)
from stream_learner.metrics import Metrics, MetricsServer  # noqa: E402
from stream_learner.reporting import ShardStats  # noqa: E402
from stream_learner.sinks import FileSink  # noqa: E402
from stream_learner.sources import FileSource  # noqa: E402

VARIANTS = ("no history", "nobody watching", "one viewer", "busy viewer")
POLL = {"one viewer": 2.0, "busy viewer": 0.1}
#: the demo's model (config/demo.toml)
SETTINGS = {
    "model": {"name": "sensor-classifier", "task": "classification",
              "metric": "metrics.Accuracy", "pipeline": [
                  {"step": "preprocessing.StandardScaler"},
                  {"step": "linear_model.LogisticRegression"}]},
    "local": {"alerts": os.devnull, "metrics": ""},
}

VIEWER = """
import sys, time, urllib.request
base, every = sys.argv[1], float(sys.argv[2])
urllib.request.urlopen(base + "/").read()
print("ready", flush=True)
while True:
    urllib.request.urlopen(base + "/api/v1/dashboard").read()
    time.sleep(every)
"""


def make_events(path: Path, n: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "stream_learner", "simulate", "--source", "agrawal", "--count",
         str(n), "--keys", "20", "--drift-at", str(n // 2), "--variants", "0,2", "--seed", "7",
         "--output", str(path)], env=env, check=True, stderr=subprocess.DEVNULL)


@contextmanager
def viewer(variant: str, port: int) -> Iterator[None]:
    if variant not in POLL:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", VIEWER, f"http://127.0.0.1:{port}",
                             str(POLL[variant])], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # started and has loaded the page: its start-up is not timed
        yield
    finally:
        proc.kill()
        proc.wait()


def run_once(variant: str, events: Path) -> tuple[float, float]:
    """Input records per CPU second and per wall-clock second of one run of ``variant``."""
    metrics = Metrics()
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    sink = FileSink({"predictions": os.devnull, "dead_letters": os.devnull,
                     "learn_dead_letters": os.devnull, "alerts": os.devnull, "metrics": None})
    service = build_service(SETTINGS, source=FileSource(str(events)), sink=sink, metrics=metrics,
                            environ={})
    off = mock.patch.object(History, "sample", return_value=False)
    try:
        with viewer(variant, server.port):
            cpu = time.process_time()
            if variant == "no history":
                with off:
                    summary = service.run()
            else:
                summary = service.run()
            cpu = time.process_time() - cpu
    finally:
        sink.close()
        server.close()
    return summary.records / cpu, summary.records / summary.elapsed_s


def per_call_costs(events: Path, repeats: int = 200) -> dict[str, float]:
    """CPU seconds (this thread's) of one sample, and of serving the page and the document
    with a full history (600 samples, 500 alerts), after a run over ``events``."""
    metrics = Metrics()
    sink = FileSink({"predictions": os.devnull, "dead_letters": os.devnull,
                     "learn_dead_letters": os.devnull, "alerts": os.devnull, "metrics": None})
    service = build_service(SETTINGS, source=FileSource(str(events)), sink=sink,
                            metrics=metrics, environ={})
    service.run()
    sink.close()
    history = metrics.history
    lag = {str(tp[1]): (0, 0.0) for tp in service.shards}
    clock = 1e6
    costs: dict[str, list[float]] = {"sample": [], "page": [], "document": []}
    for _ in range(SAMPLES_KEPT):
        clock += SAMPLE_INTERVAL_S
        t0 = time.thread_time()
        stats = [ShardStats.of(tp, shard) for tp, shard in sorted(service.shards.items())]
        history.sample(service.shards, stats, lag, clock, clock)
        costs["sample"].append(time.thread_time() - t0)
    alert = {"severity": "drift", "signal": "error", "series": "error", "detector": "ADWIN",
             "shard": "events:0", "key": None, "action": "none", "message": "drift confirmed",
             "offsets": {"topic": "events", "partition": 0, "from": 1, "to": 2},
             "event_time": {"from": 1.0, "to": 2.0}, "window": {"n": 10, "mean": 0.4}}
    for i in range(ALERTS_KEPT):
        history.alert(alert, float(i))
    for _ in range(repeats):
        for name, path in (("page", "/"), ("document", "/api/v1/dashboard")):
            t0 = time.thread_time()
            dashboard_response(path, history)
            costs[name].append(time.thread_time() - t0)
    return {name: statistics.median(values) for name, values in costs.items()}


def table(cpu: dict[str, list[float]], wall: dict[str, list[float]],
          args: argparse.Namespace) -> None:
    """The end-to-end table: rates and ratios to nobody watching, per variant."""
    print(f"{args.events:,} events per run, {args.rounds} rounds, interleaved\n")
    print("| variant | records per CPU second (median) | vs nobody watching (median, range) "
          "| records per wall second (median) | vs nobody watching (median, range) |")
    print("|---|---:|---|---:|---|")
    for v in VARIANTS:
        cells = [f"| {v} "]
        for rates in (cpu, wall):
            ratios = [x / b for x, b in zip(rates[v], rates["nobody watching"], strict=True)]
            cells.append(f"| {statistics.median(rates[v]):,.0f} | {statistics.median(ratios):.3f} "
                         f"({min(ratios):.3f} .. {max(ratios):.3f}) ")
        print("".join(cells) + "|")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the end-to-end runs (0: only the per-call costs)")
    args = parser.parse_args()
    logging.getLogger("stream_learner").setLevel(logging.ERROR)  # alerts are logged as warnings
    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    events = work / "events.jsonl"
    make_events(events, args.events)
    settle_heap()
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
        for variant in order:
            per_cpu, per_wall = run_once(variant, events)
            cpu[variant].append(per_cpu)
            wall[variant].append(per_wall)
        print(f"round {r + 1}: " + ", ".join(f"{v} {cpu[v][-1]:,.0f}/cpu-s" for v in VARIANTS),
              file=sys.stderr)
    if args.rounds:
        table(cpu, wall, args)
    cost = per_call_costs(events)
    print("\n| per call (CPU of the worker's thread, median) | cost | share of one core |")
    print("|---|---:|---:|")
    print(f"| one sample, once a second (the loop's thread) | {cost['sample'] * 1e6:,.0f} µs "
          f"| {cost['sample'] / SAMPLE_INTERVAL_S:.4%} |")
    print(f"| the document, full history, every 2 s per viewer (HTTP thread) "
          f"| {cost['document'] * 1e3:,.2f} ms | {cost['document'] / 2.0:.4%} |")
    print(f"| the page, once per viewer (HTTP thread) | {cost['page'] * 1e6:,.0f} µs | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
