"""The harness: topics, groups, Redis keys and the worker subprocesses of one run."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import math
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarking.clients import InputWatch, PredictionReader, collect, harness_client
from benchmarking.cpu import CpuShare, broker_pid
from benchmarking.results import Edges, Floor, LatencyRun, MaxRun
from benchmarking.workload import (
    CASES,
    LOAD_LEVELS,
    PARTITIONS,
    ROOT,
    SCRIPT,
    SENSORS,
    TOOL,
    Case,
    Plan,
    log,
    percentile,
    sensor,
)


def trace_summary(path: Path) -> str:
    """One line per step of a worker's trace: calls, wall and CPU seconds, slowest calls."""
    rows = [orjson.loads(line) for line in path.read_text().splitlines()]
    if not rows:
        return f"{path.name}: empty"
    start = rows[0][0]
    lines = [f"{path.name} ({rows[-1][0] - start:.1f} s):"]
    for label in sorted({r[1] for r in rows} - {"input_age"}):
        mine = [r for r in rows if r[1] == label]
        slow = sorted(mine, key=lambda r: -r[2])[:3]
        lines.append(
            f"  {label}: {len(mine):,} calls, {sum(r[2] for r in mine):.2f} s wall, "
            f"{sum(r[4] for r in mine):.2f} s CPU; slowest "
            + ", ".join(f"{r[2] * 1000:.1f} ms at {r[0] - start:.1f} s" for r in slow)
        )
    ages = [r for r in rows if r[1] == "input_age"]
    if ages:
        oldest = max(ages, key=lambda r: r[2])
        lines.append(f"  oldest first record of a poll: {oldest[2] * 1000:,.1f} ms at "
                     f"{oldest[0] - start:.1f} s")
    return "\n".join(lines)


class Bench:
    """Topics, groups and subprocesses of one run; cleans up after itself."""

    def __init__(self, args: argparse.Namespace, plan: Plan) -> None:
        from kafka.admin import KafkaAdminClient

        self.args = args
        self.plan = plan
        self.bootstrap: str = args.bootstrap
        self.run_id = uuid.uuid4().hex[:8]
        self.admin = KafkaAdminClient(bootstrap_servers=[self.bootstrap], client_id="benchmark")
        self.topics: list[str] = []
        self.children: list[subprocess.Popen[str]] = []
        self._producer: subprocess.Popen[str] | None = None
        self.used_redis = False
        self.harness = harness_client(args.harness)
        self._traces: dict[int, Path] = {}

    # resources

    def topic(self, what: str, partitions: int = PARTITIONS) -> str:
        """Create a topic unique to this run."""
        from kafka.admin import NewTopic

        name = f"bench-{self.run_id}-{what}"
        self.admin.create_topics([NewTopic(name, partitions, 1)], timeout_ms=30000)
        self.topics.append(name)
        return name

    def group(self, what: str) -> str:
        """A consumer group id unique to this run."""
        return f"bench-{self.run_id}-{what}"

    def close(self) -> None:
        """Stop our subprocesses and delete our topics."""
        for child in self.children:
            if child.poll() is None:
                child.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(10)
                if child.poll() is None:
                    child.kill()
        if self.topics:
            with contextlib.suppress(Exception):
                self.admin.delete_topics(self.topics, timeout_ms=30000)
        self.admin.close()
        if self.used_redis and self.args.redis:
            with contextlib.suppress(Exception):
                delete_redis_keys(self.args.redis, redis_prefix(self.run_id))

    # helpers

    def worker_settings(self, case: Case, events: str, what: str, **service: Any) -> dict[str, Any]:
        """Settings overrides of a worker reading ``events`` (plus any ``--set``)."""
        settings: dict[str, Any] = {
            "service": {"transport": "kafka", "log_level": "WARNING", **service},
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "group_id": self.group(what),
                "client_id": "benchmark-worker",
                "events_topic": events,
                "predictions_topic": self.topic(f"{what}-predictions"),
                "dead_letter_topic": self.topic(f"{what}-dlq", 1),
                "learn_dead_letter_topic": self.topic(f"{what}-learn-dlq", 1),
                "alerts_topic": self.topic(f"{what}-alerts", 1),
                "metrics_topic": self.topic(f"{what}-metrics", 1),
            },
            "model": case.model_settings(),
        }
        for section, values in self.args.overrides.items():
            settings[section] = {**settings.get(section, {}), **values}
        return settings

    def start_worker(
        self, cfg: Mapping[str, Any], role: str = "worker", **extra: Any
    ) -> subprocess.Popen[str]:
        """A worker subprocess running this script's ``worker`` (or ``edges``) role."""
        trace_dir = getattr(self.args, "trace", None)
        if trace_dir and role == "worker":
            Path(trace_dir).mkdir(parents=True, exist_ok=True)
            group = cfg["settings"]["kafka"]["group_id"]
            extra = {**extra, "trace": str(Path(trace_dir) / f"{group}.jsonl")}
        cmd = [sys.executable, str(SCRIPT), "--role", role,
               "--config", orjson.dumps({**cfg, **extra}).decode()]
        if cfg.get("py_spy"):
            # every thread, on-CPU samples only, as collapsed stacks
            cmd = ["py-spy", "record", "--threads", "--rate", "250", "--format", "raw",
                   "--output", str(cfg["py_spy"]), "--", *cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.children.append(proc)
        if "trace" in extra:
            self._traces[proc.pid] = Path(extra["trace"])
        return proc

    def log_trace(self, proc: subprocess.Popen[str]) -> None:
        """With ``--trace``: summarise the trace the worker ``proc`` wrote (if any)."""
        path = self._traces.pop(proc.pid, None)
        if path is not None and path.exists():
            log(trace_summary(path))

    @staticmethod
    def worker_result(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        """Wait for a worker and parse its ``RESULT`` line."""
        out, err = proc.communicate(timeout=timeout)
        for line in out.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = orjson.loads(line[7:])
                return result
        raise RuntimeError(f"worker exited {proc.returncode} without a result:\n{err[-3000:]}")

    def produce(self, topic: str, values: Sequence[bytes], sensors: int = SENSORS) -> None:
        """Write ``values`` (event ``i`` to its sensor's partition) as fast as possible."""
        from kafka import KafkaProducer

        producer = KafkaProducer(
            bootstrap_servers=[self.bootstrap], acks=1, linger_ms=20, batch_size=512 * 1024,
            client_id="benchmark-preload",
        )
        for i, value in enumerate(values):
            partition, key = sensor(i, sensors)
            producer.send(topic, value=value, key=key.encode(), partition=partition)
        producer.flush()
        producer.close()

    def producer(self) -> subprocess.Popen[str]:
        """The long-lived open-loop producer subprocess."""
        if self._producer is None:
            cmd = [sys.executable, str(SCRIPT), "--role", "producer",
                   "--bootstrap", self.bootstrap, "--harness", self.harness]
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.children.append(proc)
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError("the load producer did not start")
            self._producer = proc
        return self._producer

    # measurements

    def max_throughput(
        self,
        case: Case,
        values: Sequence[bytes],
        what: str,
        extra: Mapping[str, Any] | None = None,
        profile: Mapping[str, Any] | None = None,
        events: str | None = None,
        sensors: int = SENSORS,
        live: bool = False,
    ) -> MaxRun:
        """Pre-produce ``values`` (unless ``events`` has them), then let a worker consume them.

        With ``live`` the worker starts first and the events are produced while it reads.
        """
        if events is None:
            events = self.topic(f"{what}-events")
            if not live:
                self.produce(events, values, sensors)
        settings = self.worker_settings(case, events, what, max_events=len(values))
        for section, values_ in (extra or {}).items():
            settings[section] = {**settings.get(section, {}), **values_}
        cfg: dict[str, Any] = {"settings": settings}
        cfg.update(profile or {})
        spawned = time.time()
        worker = self.start_worker(cfg)
        if live:
            self.produce(events, values, sensors)
        result = self.worker_result(worker, timeout=600)
        self.log_trace(worker)
        if result["records"] != len(values):
            raise RuntimeError(f"worker read {result['records']} of {len(values)} events")
        return max_run(result, spawned)

    def edges(self, values: Sequence[bytes], client: str) -> Edges:
        """Pre-produce ``values``, then run the edges-only loop of ``client`` over them."""
        what = f"edges-{client}"
        events = self.topic(f"{what}-events")
        self.produce(events, values)
        settings = self.worker_settings(CASES[0], events, what, max_events=len(values))
        proc = self.start_worker({"settings": settings}, role="edges", edges=client)
        result = self.worker_result(proc, timeout=600)
        return Edges(
            client=client,
            events_per_s=result["records"] / result["elapsed_s"],
            cpu_us=result["cpu_s"] / result["records"] * 1e6,
        )

    def latency(self, case: Case, max_rate: float) -> list[LatencyRun]:
        """Drive one worker at each load level; latency from scheduled send to receipt."""
        what = f"{case.name}-latency"
        events = self.topic(f"{what}-events")
        settings = self.worker_settings(case, events, what)
        worker = self.start_worker({"settings": settings})
        levels = [(load, max(50.0, load * max_rate)) for load in LOAD_LEVELS]
        return self.drive(case, events, settings["kafka"]["predictions_topic"], worker, levels,
                          case.name)

    def drive(
        self, case: Case, events: str, predictions: str, worker: subprocess.Popen[str],
        levels: Sequence[tuple[float, float]], name: str,
    ) -> list[LatencyRun]:
        """Feed ``worker`` at each (load, rate) of ``levels``; stop it with SIGTERM at the end.

        Latency runs from each event's scheduled send time to the moment a
        consumer of ``predictions`` receives its prediction.
        """
        consumer = PredictionReader(self.bootstrap, predictions, self.harness)
        producer = self.producer()
        next_id = 0
        cpu = CpuShare({"worker": worker.pid, "broker": broker_pid(),
                        "load producer": producer.pid, "readers (this process)": os.getpid()})
        watch = InputWatch(self.bootstrap, events, self.harness)

        def phase(rate: float, n: int, deadline_s: float) -> tuple[list[float], dict[str, Any]]:
            nonlocal next_id
            first = next_id
            next_id += n
            assert producer.stdin is not None and producer.stdout is not None
            cmd = {"topic": events, "rate": rate, "n": n, "first_id": first,
                   "labelled": case.labelled}
            producer.stdin.write(orjson.dumps(cmd).decode() + "\n")
            producer.stdin.flush()
            latencies, to_send = collect(consumer, first, n, time.time() + n / rate + deadline_s)
            report: dict[str, Any] = orjson.loads(producer.stdout.readline())
            report["to_send"] = sorted(to_send)
            return latencies, report

        try:
            # Warm-up: the worker joins the group and every client connects.
            phase(200.0, self.plan.warmup_events, 90.0)
            runs = []
            for load, rate in levels:
                n = max(100, int(rate * self.plan.phase_s))
                cpu.start()
                watch.restart()
                latencies, report = phase(rate, n, 30.0)
                runs.append(latency_run(load, rate, n, latencies, report))
                log_latency(name, runs[-1], report)
                log(f"  {watch.line()}")
                if share := cpu.line():
                    log(f"  {share}")
                time.sleep(0.5)
        finally:
            consumer.close()
            watch.close()
            worker.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                self.worker_result(worker, timeout=60)
            self.log_trace(worker)
        return runs

    def peer_config(self, what: str, events: str, max_events: int | None) -> dict[str, Any]:
        """Topics and group of a peer (Quix app or naive loop) reading ``events``."""
        return {"bootstrap": self.bootstrap, "group": self.group(what), "events": events,
                "predictions": self.topic(f"{what}-predictions"), "max_events": max_events}

    def peer_max(self, role: str, events: str, n: int, what: str) -> MaxRun:
        """A peer (``quix`` or ``naive`` role) consuming the ``n`` events already in ``events``."""
        cfg = self.peer_config(what, events, n)
        result = self.worker_result(self.start_worker(cfg, role=role), timeout=600)
        if result["records"] != n:
            raise RuntimeError(f"{role} read {result['records']} of {n} events")
        return MaxRun(events_per_s=n / result["elapsed_s"],
                      cpu_s_per_m=result["cpu_s"] / n * 1e6,
                      rss_mib=result["maxrss_kib"] / 1024.0, records=n,
                      elapsed_s=result["elapsed_s"])

    def floor(self, record_bytes: int) -> Floor | str:
        """Kafka's EndToEndLatency tool on this broker."""
        libs = kafka_libs(self.args.kafka_libs)
        if libs is None:
            return "not measured: Kafka jars with kafka-tools not found (set --kafka-libs)"
        topic = self.topic("floor", 1)
        cmd = ["java", "-Xms128m", "-Xmx256m", "-cp", f"{libs}/*", TOOL,
               "--bootstrap-server", self.bootstrap, "--topic", topic,
               "--num-records", str(self.plan.floor_records), "--producer-acks", "all",
               "--record-size", str(record_bytes), "--record-key-size", "9"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        pct = re.search(r"Percentiles: 50th = (\S+), 99th = (\S+), 99\.9th = (\S+)", proc.stdout)
        avg = re.search(r"Avg latency: (\S+) ms", proc.stdout)
        if proc.returncode != 0 or pct is None or avg is None:
            return f"not measured: {TOOL} failed: {(proc.stderr or proc.stdout)[-300:]}"
        p50, p99, p999 = (float(v) for v in pct.groups())
        return Floor(p50, p99, p999, float(avg.group(1)), self.plan.floor_records, record_bytes)


def max_run(result: Mapping[str, Any], spawned: float) -> MaxRun:
    """A worker's ``RESULT`` as a :class:`MaxRun` (``spawned``: wall time of its start)."""
    return MaxRun(
        events_per_s=result["records"] / result["elapsed_s"],
        cpu_s_per_m=result["cpu_s"] / result["records"] * 1e6,
        rss_mib=result["maxrss_kib"] / 1024.0,
        records=result["records"],
        elapsed_s=result["elapsed_s"],
        threads_cpu_s=result["threads_cpu_s"],
        state_metrics=result["state_metrics"],
        since_run_s=result.get("since_run_s", math.nan),
        since_spawn_s=result.get("end_wall", math.nan) - spawned,
    )


def latency_run(
    load: float, rate: float, sent: int, latencies: Sequence[float], report: Mapping[str, Any],
) -> LatencyRun:
    """One load level: the received predictions' latencies and the producer's report."""
    ordered = sorted(latencies)
    return LatencyRun(
        load=load, rate=rate, received=len(ordered), sent=sent,
        p50_ms=percentile(ordered, 0.5) * 1000.0,
        p99_ms=percentile(ordered, 0.99) * 1000.0,
        p999_ms=percentile(ordered, 0.999) * 1000.0,
        late_share=float(report["late_share"]),
        to_send_p50_ms=percentile(report["to_send"], 0.5) * 1000.0,
        to_send_p99_ms=percentile(report["to_send"], 0.99) * 1000.0,
    )


def log_latency(name: str, run: LatencyRun, report: Mapping[str, Any]) -> None:
    """Progress line of one load level."""
    log(f"{name} at {run.rate:,.0f}/s: p50 {run.p50_ms:,.1f} ms, "
        f"p99 {run.p99_ms:,.1f} ms; up to the worker's send: p50 "
        f"{run.to_send_p50_ms:,.1f} ms, p99 {run.to_send_p99_ms:,.1f} ms; "
        f"producer late (>1 ms) {report['late_share']:.1%}, "
        f"max lag {report['max_lag_ms']:,.1f} ms")

def kafka_libs(given: str | None) -> Path | None:
    """The Kafka jars (with kafka-tools); fetched like scripts/servers.sh when missing."""
    env = os.environ.get("STREAM_LEARNER_KAFKA_LIBS")
    libs = Path(given or env or ROOT / ".servers/kafka/libs")
    if any(libs.glob("kafka-tools-*.jar")):
        return libs
    if given or env:
        return None
    libs.mkdir(parents=True, exist_ok=True)
    fetch = ["mvn", "-B", "-q", "-f", str(ROOT / "scripts/kafka-pom.xml"),
             "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={libs}"]
    subprocess.run(fetch, check=False, timeout=600)
    return libs if any(libs.glob("kafka-tools-*.jar")) else None


CHECKPOINTS_PENDING = "pending: checkpoints not implemented"


def checkpoint_overrides(redis_url: str | None, run_id: str) -> dict[str, Any] | str:
    """Settings for "a checkpoint every second" (or why they cannot be made yet).

    Checkpoints go to Redis under a key prefix of this run (deleted at the end),
    signed with a throwaway key when the environment has none.
    """
    found = importlib.util.find_spec("stream_learner.checkpoint")
    if found is None or not str(found.origin).startswith(str(ROOT / "stream_learner")):
        return CHECKPOINTS_PENDING
    from stream_learner.settings import CheckpointSettings

    fields = CheckpointSettings.model_fields
    if "every_seconds" not in fields:
        return "pending: no time-based checkpoint setting"
    if not redis_url:
        return "not measured: no Redis (set STREAM_LEARNER_TEST_REDIS or --redis)"
    section: dict[str, Any] = {
        "store": "redis", "redis_url": redis_url, "every_seconds": 1.0,
        "key_prefix": redis_prefix(run_id),
    }
    if "every_events" in fields:
        section["every_events"] = 10**9  # time is the only trigger
    key_env = fields["key_env"].default if "key_env" in fields else None
    if key_env and len(os.environ.get(key_env, "")) < 16:
        os.environ[key_env] = secrets.token_hex(24)  # inherited by the workers only
    return {"checkpoint": section}


def redis_prefix(run_id: str) -> str:
    """Redis key prefix of this run's checkpoints."""
    return f"stream-learner-bench:{run_id}"


def delete_redis_keys(redis_url: str, prefix: str) -> None:
    """Delete this run's checkpoints."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
