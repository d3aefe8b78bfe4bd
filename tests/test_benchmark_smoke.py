"""scripts/benchmark.py: the parts that need no broker (bare loop, report, page update).

The benchmark itself is not part of the suite; this only checks that the script
runs, covers its three models, and reports targets and pending rows honestly.
No timing is asserted.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.service import ROOT, load_script, service_env

SCRIPT = ROOT / "scripts" / "benchmark.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmark")


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


def _peers(bench: ModuleType, *, ck: bool) -> object:
    def lat(p99s: tuple[float, float], received: int = 100) -> list[object]:
        return [bench.LatencyRun(load=0.0, rate=rate, received=received, sent=100, p50_ms=1.0,
                                 p99_ms=p99, p999_ms=p99, late_share=0.0)
                for rate, p99 in zip(bench.PEER_RATES, p99s, strict=True)]

    def run(rate: float) -> object:
        return bench.MaxRun(events_per_s=rate, cpu_s_per_m=50.0, rss_mib=100.0, records=10,
                            elapsed_s=1.0)

    peers = bench.Peers(1000, "Redis, every 1 s")
    kp = bench.Peer("stream-learner, kafka-python client", run(1200.0), lat((30.0, 90.0)))
    peers.systems[bench.service_peer("kafka-python")] = kp
    if ck:
        peers.systems[bench.service_peer("confluent-kafka")] = bench.Peer(
            "stream-learner, confluent-kafka client", run(2700.0), lat((15.0, 80.0), 99))
    else:
        peers.systems[bench.service_peer("confluent-kafka")] = bench.Peer(
            "stream-learner, confluent-kafka client", note="skipped: refused")
    peers.systems[bench.QUIX] = bench.Peer("Quix Streams app", run(2000.0), lat((20.0, 60.0)))
    peers.systems[bench.NAIVE] = bench.Peer("naive kafka-python loop", run(1000.0))
    return peers


def test_peer_targets_compare_each_client_with_its_peer(bench: ModuleType) -> None:
    verdicts = {target: (measured, verdict) for target, measured, verdict
                in bench.peer_targets(_peers(bench, ck=True))}
    # 2700 / 2000 = 1.35 >= 1.3; 1200 / 1000 = 1.2 < 1.3
    assert verdicts["confluent-kafka: throughput >= 1.3 x the Quix Streams app"] == (
        "1.35 x (2,700 vs 2,000 events/s)", "**PASS**")
    assert verdicts["kafka-python: throughput >= 1.3 x the naive kafka-python loop"] == (
        "1.20 x (1,200 vs 1,000 events/s)", "**FAIL**")
    assert verdicts["confluent-kafka: p99 at 2,000 events/s <= the Quix app's"] == (
        "15.0 vs 20.0 ms (1 missing)", "**FAIL**")  # a lost prediction never passes
    assert verdicts["confluent-kafka: p99 at 5,000 events/s <= the Quix app's"][1] == "**FAIL**"


def test_latency_targets_compare_the_medians_of_the_rounds(bench: ModuleType) -> None:
    """Three rounds: the verdict is the medians', whichever system won more rounds."""
    peers = _peers(bench, ck=True)
    svc = peers.systems[bench.service_peer("confluent-kafka")]
    quix = peers.systems[bench.QUIX]
    svc.latency = [dataclasses.replace(r, received=r.sent) for r in svc.latency]
    for p99s, theirs in (((17.0, 50.0), (16.0, 40.0)), ((25.0, 35.0), (18.0, 45.0))):
        svc.latency += [bench.LatencyRun(0.0, rate, 100, 100, 1.0, p99, p99, 0.0)
                        for rate, p99 in zip(bench.PEER_RATES, p99s, strict=True)]
        quix.latency += [bench.LatencyRun(0.0, rate, 100, 100, 1.0, p99, p99, 0.0)
                         for rate, p99 in zip(bench.PEER_RATES, theirs, strict=True)]
    verdicts = {target: (measured, verdict) for target, measured, verdict
                in bench.peer_targets(peers)}
    # 2,000/s: service 15 / 17 / 25 -> 17, Quix 20 / 16 / 18 -> 18 (one round won)
    assert verdicts["confluent-kafka: p99 at 2,000 events/s <= the Quix app's"] == (
        "17.0 vs 18.0 ms (median of 3 rounds; lower or equal in 1)", "**PASS**")
    # 5,000/s: service 80 / 50 / 35 -> 50, Quix 60 / 40 / 45 -> 45 (one round won)
    assert verdicts["confluent-kafka: p99 at 5,000 events/s <= the Quix app's"] == (
        "50.0 vs 45.0 ms (median of 3 rounds; lower or equal in 1)", "**FAIL**")
    text = "\n".join(bench.render_peers(peers))
    assert "- Quix Streams app: 2,000/s: 20.0, 16.0, 18.0; 5,000/s: 60.0, 40.0, 45.0" in text
    assert "3 rounds of 6 s per rate" in text


def test_a_client_the_service_refuses_is_a_row_that_says_so(bench: ModuleType) -> None:
    text = "\n".join(bench.render_peers(_peers(bench, ck=False)))
    assert "| stream-learner, confluent-kafka client | skipped: refused |" in text
    assert "| confluent-kafka: throughput >= 1.3 x the Quix Streams app | skipped: refused | " \
        "not measured |" in text
    assert "| naive kafka-python loop | 1,000 | 50.0 | not measured | not measured |" in text
    assert "| Quix Streams app | 2,000 | 50.0 | 1.0 / 20.0 / 20.0 | 1.0 / 60.0 / 60.0 |" in text


def test_client_support_follows_the_installed_settings(bench: ModuleType) -> None:
    from stream_learner.settings import KafkaSettings

    assert bench.client_support("kafka-python") is None
    answer = bench.client_support("confluent-kafka")
    if "client" in KafkaSettings.model_fields:
        assert answer is None
    else:
        assert answer is not None and "kafka.client" in answer


@pytest.mark.kafka
def test_peers_run_through_the_broker(kafka_bootstrap: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--models", "linear", "--events", "400",
         "--skip", "latency", "floor", "checkpoint", "edges", "--no-write",
         "--bootstrap", kafka_bootstrap],
        env=service_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split(" | ")[0]: line.split(" | ") for line in proc.stdout.splitlines()
            if line.startswith("| ")}
    for system in ("stream-learner, kafka-python client", "Quix Streams app",
                   "naive kafka-python loop"):
        assert float(rows[f"| {system}"][1].replace(",", "")) > 0, rows[f"| {system}"]


def test_gap_table_shows_medians_of_both_windows(bench: ModuleType) -> None:
    def run(rate: float, since: float) -> object:
        return bench.MaxRun(events_per_s=rate, cpu_s_per_m=1.0, rss_mib=1.0, records=1000,
                            elapsed_s=1000 / rate, since_run_s=since, since_spawn_s=since * 2)

    base, ckpt = bench.GAP_VARIANTS[0], bench.GAP_VARIANTS[1]
    text = bench.render_gap([(base, [run(900.0, 2.0), run(1000.0, 1.0), run(2000.0, 4.0)]),
                             (ckpt, [run(800.0, 2.5)])])
    # medians: 1,000 events/s from the first record; 1000 records / 2 s from the loop
    # start; 1000 records / 4 s from the process start
    assert f"| {base.name} | 1,000 | 500 | 250 | 1.0 | 3 |" in text
    assert f"| {ckpt.name} | 800 | 400 | 200 | 1.0 | 1 |" in text


def test_page_keeps_a_section_between_other_markers(bench: ModuleType, tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    scale = "<!-- scale:begin -->\n## Scale\n\n| keys | ms |\n<!-- scale:end -->\n"
    page.write_text(f"# Benchmarks\n\n{bench.BEGIN}\nold\n{bench.END}\n\n{scale}\n## Notes\n")
    bench.write_doc(f"{bench.BEGIN}\nnew\n{bench.END}", page)
    text = page.read_text()
    assert scale in text and "new" in text and "old" not in text
    assert text.index(bench.END) < text.index("<!-- scale:begin -->")


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="reads /proc (Linux)")
def test_cpu_share_of_a_phase_counts_this_process_and_the_machine() -> None:
    """The latency phases' CPU line: a busy loop in this process shows up in its share."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmarking.cpu import CpuShare, process_cpu_s

    def used() -> float:
        seconds = process_cpu_s(os.getpid())
        assert seconds is not None
        return seconds

    share = CpuShare({"this": os.getpid(), "gone": 2**22 + 1, "unknown": None})
    before = used()
    while used() - before < 0.1:
        sum(range(10_000))
    cores = share.cores()
    assert set(cores) == {"this", "machine"}  # a process that is gone is left out
    assert 0.0 < cores["this"] <= (os.cpu_count() or 1)
    assert cores["machine"] >= cores["this"] * 0.5
    assert share.line().startswith("CPU, cores: this ")
