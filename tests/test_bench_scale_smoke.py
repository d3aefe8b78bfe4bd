"""scripts/bench_scale.py --key-cost runs and reports what a key costs, and the docs' section
reads the targets on the right rows (no timing is asserted)."""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from types import ModuleType
from typing import Any

from tests.support.service import ROOT, load_script, service_env

SCRIPT = ROOT / "scripts" / "bench_scale.py"


def test_key_cost_reports_flat_entries_smaller_than_whole_pickles() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--key-cost", "--keys", "300"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cost = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cost["keys"] == 300 and cost["events_per_key"] == 10
    assert min(cost["save_entry_us"], cost["load_entry_us"], cost["create_copy_us"]) > 0
    assert cost["memory_bytes_per_key"] > 0
    assert 0 < cost["entry_bytes"] < cost["pickle_entry_bytes"]


def _script() -> ModuleType:
    return load_script("bench_scale")


def _row(sensors: int, resident: int, cpu: float, rss: float) -> dict[str, Any]:
    return {"sensors": sensors, "store": "local", "max_resident": resident,
            "events": sensors * 10, "events_per_s": 1e6 / cpu, "cpu_us_per_event": cpu,
            "rss_mb": rss, "checkpoints": 3, "bytes_per_checkpoint": 1000.0,
            "changed_per_checkpoint": min(sensors, 5000), "max_ratio": 1000.0,
            "mean_entry_bytes": 1000.0, "restart": {"first_prediction_s": 0.01},
            "events_per_sensor": 10, "min_events": 100}


def test_the_targets_read_the_shipped_max_resident_and_the_other_rows_apart() -> None:
    script = _script()
    rows = [_row(100, 10_000, 50.0, 100.0), _row(100_000, 10_000, 250.0, 300.0),
            _row(100, 200_000, 50.0, 100.0), _row(100_000, 200_000, 100.0, 1600.0)]
    args = argparse.Namespace(events_per_sensor=10, min_events=100)
    text = script.render(rows, args, "today")
    assert "local: throughput at 100,000 sensors / at 100 sensors = 0.20 (target >= 0.6: missed)" \
        in text
    assert ("local, max_resident 200,000 (every model in memory, nothing loaded or parked): "
            "CPU per event 50 µs at 100 sensors, 100 µs at 100,000, a ratio of 0.50; peak RSS "
            "1,600 MB") in text
    assert "--max-resident 200000 --stores local" in text


def test_full_collections_are_timed_and_shown_with_the_longest() -> None:
    script = _script()
    before = list(gc.callbacks)
    pauses = script._time_full_collections()
    try:
        gc.collect(0)
        gc.collect(1)
        assert pauses == []  # young and middle collections are not full ones
        gc.collect()
        gc.collect()
    finally:
        gc.callbacks[:] = before
    assert len(pauses) == 2 and all(p > 0 for p in pauses)
    row = {**_row(100_000, 200_000, 100.0, 1600.0),
           "full_gcs": 6, "full_gc_s": 12.4, "longest_full_gc_s": 2.1}
    text = script.render([row, _row(100, 200_000, 50.0, 100.0)],
                         argparse.Namespace(events_per_sensor=10, min_events=100), "today")
    assert "| 10 ms | 6 (2,100 ms) |" in text
    assert "| 10 ms | - |" in text  # a row recorded before collections were timed
    assert "--gc-old-threshold" not in text
    other = script.render([{**row, "gc_old_threshold": 10}],
                          argparse.Namespace(events_per_sensor=10, min_events=100), "today")
    assert "--max-resident 200000 --stores local --gc-old-threshold 10" in other


def test_river_bare_loop_runs_one_model_per_sensor_on_the_same_events() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--child", "--store", "river", "--where", "",
         "--sensors", "50", "--events-per-sensor", "4", "--min-events", "0",
         "--max-resident", "10000", "--every-seconds", "1"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert peer["keys"] == 50 and peer["events"] == 200
    assert 0 < peer["model_us_per_event"] < peer["cpu_us_per_event"]
    assert peer["clone_us"] > 0


def test_the_peer_is_a_row_of_its_own_and_read_against_the_service() -> None:
    script = _script()
    peer = [{"sensors": n, "store": "river", "max_resident": 10_000, "events": n * 10,
             "events_per_s": 1e6 / cpu, "cpu_us_per_event": cpu, "model_us_per_event": alone,
             "clone_us": 450.0, "rss_mb": rss, "keys": n, "full_gcs": 0,
             "events_per_sensor": 10, "min_events": 100}
            for n, cpu, alone, rss in ((100, 20.0, 19.0, 140.0), (100_000, 80.0, 32.0, 630.0))]
    rows = [_row(100, 10_000, 50.0, 100.0), _row(100_000, 10_000, 250.0, 300.0), *peer]
    text = script.render(rows, argparse.Namespace(events_per_sensor=10, min_events=100), "today")
    assert "| 100,000 | 10 | River's bare loop | - | 12,500 | 80 µs | 630 MB | - |" in text
    assert ("CPU per event 20 µs at 100 sensors, 80 µs at 100,000, a ratio of 0.25; "
            "`clone()` costs 450 µs a sensor") in text
    assert "19 µs at 100 sensors, 32 µs at 100,000, a ratio of 0.59" in text
    assert ("the service at 100,000 sensors, local, max_resident 10,000 (shipped): 250 µs an "
            "event, 3.12x River's bare loop") in text
    assert ("the service at 100 sensors, local, max_resident 10,000 (shipped): 50 µs an "
            "event, 2.50x River's bare loop") in text
    assert "river: throughput" not in text  # the targets are the service's
    assert "--stores local,river" in text
