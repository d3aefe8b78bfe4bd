"""scripts/benchmark.py: the parts that need no broker (bare loop, report, page update).

The benchmark itself is not part of the suite; this only checks that the script
runs, covers its three models, and reports targets and pending rows honestly.
No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import ROOT, service_env

SCRIPT = ROOT / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("benchmark_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_bare_only_runs_every_model_without_a_broker() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--bare-only", "--quick", "--events", "300"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = [line.split(":")[0] for line in proc.stdout.splitlines()]
    assert names == ["linear", "tree", "anomaly"]


def _results(bench: ModuleType) -> list[object]:
    bare = bench.Bare(events_per_s=1000.0, cpu_s_per_m=1.0, p50_us=10.0, p99_us=1000.0,
                      p999_us=2000.0, model_kib=1.0)
    linear = bench.CaseResult(bench.CASES[0], bare)
    linear.max = bench.MaxRun(events_per_s=600.0, cpu_s_per_m=2.0, rss_mib=100.0, records=10,
                              elapsed_s=10.0)
    linear.latency = [
        bench.LatencyRun(load=load, rate=100.0, received=10, sent=10, p50_ms=1.0, p99_ms=p99,
                         p999_ms=p99, late_share=0.0)
        for load, p99 in zip(bench.LOAD_LEVELS, (5.0, 50.0, 70.0), strict=True)
    ]
    # 10 checkpoints of 50 ms in all over 10 s: 0.5 % of the loop's time
    linear.checkpoint = bench.MaxRun(
        events_per_s=590.0, cpu_s_per_m=2.0, rss_mib=100.0, records=10, elapsed_s=10.0,
        state_metrics={
            "stream_learner_checkpoint_duration_seconds_sum": 0.05,
            "stream_learner_checkpoint_duration_seconds_count": 10.0,
            "stream_learner_checkpoint_size_bytes{partition=0}": 2048.0,
        },
    )
    # 3 shards restored in 900 ms in all: 300 ms each
    linear.restore = bench.MaxRun(
        0.0, 0.0, 100.0, 0, 0.0,
        state_metrics={
            "stream_learner_restore_duration_seconds_sum": 0.9,
            "stream_learner_restore_duration_seconds_count": 3.0,
        },
    )
    tree = bench.CaseResult(bench.CASES[1], bare)
    tree.max = bench.MaxRun(events_per_s=500.0, cpu_s_per_m=2.0, rss_mib=100.0, records=10,
                            elapsed_s=10.0)
    tree.checkpoint = tree.restore = bench.CHECKPOINTS_PENDING
    anomaly = bench.CaseResult(bench.CASES[2], bare, pending="pending: task `anomaly` not accepted")
    return [linear, tree, anomaly]


def test_report_states_each_target_and_what_is_pending(bench: ModuleType) -> None:
    floor = bench.Floor(p50_ms=2.0, p99_ms=10.0, p999_ms=20.0, avg_ms=3.0, records=100,
                        record_bytes=200)
    text = bench.render(_results(bench), floor, {"cpu": "test"}, bench.Plan.make(True), True)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # linear: 600 / 1000 >= 0.5; tree: 500 / 1000 < 0.85
    ratio = rows["| service / bare throughput"]
    assert "0.60 (>= 0.5) **PASS**" in ratio and "0.50 (>= 0.85) **FAIL**" in ratio
    # p99 at 50 % load (50 ms) against 2 x 10 ms + 1 ms
    p99_row = rows["| p99 at 50% load <= 2 x Kafka p99 floor + model p99"]
    assert "50.0 ms vs 21.0 ms **FAIL**" in p99_row
    ckpt_row = rows["| checkpoint every 1 s costs <= 1% throughput"]
    assert "0.50% of the loop's time **PASS**" in ckpt_row
    restore_row = rows["| restore <= 200 ms (1 MiB model)"]
    assert "300.0 ms for 2 KiB **FAIL**" in restore_row
    assert bench.CHECKPOINTS_PENDING in restore_row  # the tree's column
    assert "pending: task `anomaly` not accepted" in rows["| service max throughput, events/s"]


def test_report_bounds_the_ratio_by_the_edges_alone(bench: ModuleType) -> None:
    # bare loop 1000 events/s = 1000 µs per event; edges 4000 events/s = 250 µs per event
    edges = [bench.Edges("kafka-python", events_per_s=4000.0, cpu_us=200.0),
             bench.Edges("confluent-kafka", events_per_s=9000.0, cpu_us=20.0)]
    text = bench.render(_results(bench), None, {"cpu": "test"}, bench.Plan.make(True), True,
                        edges)
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| ")}
    # 1000 / (1000 + 250) for every model
    assert rows["| throughput ratio if the service added only the kafka-python edges"] == (
        "| throughput ratio if the service added only the kafka-python edges | 0.80 | 0.80 | 0.80 |"
    )
    assert "| kafka-python | 4,000 | 200.0 | 250.0 |" in text
    assert "| confluent-kafka | 9,000 | 20.0 | 111.1 |" in text
    without = bench.render(_results(bench), None, {"cpu": "test"}, bench.Plan.make(True), True)
    assert "edges" not in without


def test_report_checks_the_restore_target_on_a_state_of_a_mebibyte(bench: ModuleType) -> None:
    def text(ms: float) -> str:
        big = bench.BigRestore("forest", 1500, 1536.0, "Redis", ms, 5)
        return bench.render(_results(bench), None, {"cpu": "test"}, bench.Plan.make(True), True,
                            (), big)

    assert "Restore of a 1.5 MiB state (forest after 1,500 events)" in text(27.5)
    assert "median of 5: 27.5 ms **PASS**" in text(27.5)
    assert "median of 5: 250.0 ms **FAIL**" in text(250.0)


def test_page_keeps_text_outside_the_generated_block(bench: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    bench.write_doc(f"{bench.BEGIN}\nfirst\n{bench.END}", page)
    page.write_text(page.read_text() + "\n## Notes written by hand\n")
    bench.write_doc(f"{bench.BEGIN}\nsecond\n{bench.END}", page)
    text = page.read_text()
    assert "second" in text and "first" not in text and "## Notes written by hand" in text
