"""The subprocess roles that ``scripts/benchmark.py --role ...`` runs.

The service worker, the edges-only loop, the Quix Streams app, the naive loop and
the open-loop load producer; the harness starts each with ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from benchmarking.clients import LoadProducer, paced_send
from benchmarking.workload import CASES, build_model, samples


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _threads_cpu_seconds() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name (Linux only)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            out[thread.name] = (int(fields[11]) + int(fields[12])) / tick
    return out


class TimedSource:
    """Wraps a source and notes when the first record came; delegates everything else."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.first_at: float | None = None
        self.first_cpu = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def poll(self, max_records: int, timeout_ms: int) -> list[Any]:
        """Poll the inner source; remember when the first record came."""
        records: list[Any] = self.inner.poll(max_records, timeout_ms)
        if records and self.first_at is None:
            self.first_at = time.perf_counter()
            self.first_cpu = _cpu_seconds()
        return records

    @property
    def exhausted(self) -> bool:
        """As the inner source."""
        return bool(self.inner.exhausted)


class Trace:
    """Per-call wall times of the loop's steps (poll, process, commit, drain, checkpoint)."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, str, float, int, float]] = []

    def wrap(self, obj: Any, name: str, label: str) -> None:
        """Time every call of ``obj.name``.

        Rows: start, label, wall seconds, records of a list result (else -1), CPU
        seconds of the calling thread.
        """
        inner = getattr(obj, name)
        rows, clock, cpu = self.rows, time.perf_counter, time.thread_time

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0, c0 = clock(), cpu()
            out = inner(*args, **kwargs)
            rows.append((t0, label, clock() - t0, len(out) if isinstance(out, list) else -1,
                         cpu() - c0))
            if label == "poll" and out:  # how old the first and last record were (CreateTime)
                now = time.time()
                rows.append((t0, "input_age", now - out[0].timestamp_ms / 1000.0, len(out),
                             now - out[-1].timestamp_ms / 1000.0))
            return out

        setattr(obj, name, timed)

    def dump(self, path: str) -> None:
        """Write the rows as JSON lines."""
        with open(path, "w") as f:
            for row in self.rows:
                f.write(orjson.dumps(row).decode() + "\n")


def worker_main(cfg: dict[str, Any]) -> None:
    """Run the service as the CLI wires it; print one ``RESULT`` JSON line."""
    from stream_learner import cli
    from stream_learner.metrics import Metrics
    from stream_learner.models import ModelSpec
    from stream_learner.service import Service
    from stream_learner.settings import load_settings

    environ = dict(os.environ)
    settings = load_settings(None, env={}, overrides=cfg["settings"])
    spec = ModelSpec.from_settings(settings.model)
    metrics = Metrics()
    extra: list[Any] = []
    build_checkpointer = getattr(cli, "build_checkpointer", None)
    if build_checkpointer is not None:
        extra.append(build_checkpointer(settings, spec, metrics, environ))
    inner, sink = cli.build_edges(settings, environ)
    source = TimedSource(inner)
    service = Service(settings, spec, source, sink, metrics, *extra)
    signal.signal(signal.SIGTERM, lambda _s, _f: service.stop())
    trace = Trace() if cfg.get("trace") else None
    if trace is not None:
        trace.wrap(source, "poll", "poll")
        trace.wrap(service, "process_batch", "process")
        for step in ("commit", "poll", "drain"):
            trace.wrap(service.committer, step, f"commit.{step}")
        trace.wrap(sink, "flush", "flush")
        for part in extra:
            trace.wrap(part, "save", "checkpoint")
    cli.settle_heap()
    profiler = cProfile.Profile() if cfg.get("profile") else None
    if profiler is not None:
        profiler.enable()
    run_started = time.perf_counter()
    summary = service.run()
    end, end_cpu = time.perf_counter(), _cpu_seconds()
    threads_cpu = _threads_cpu_seconds()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(cfg["profile"])
    if trace is not None:
        trace.dump(cfg["trace"])
    sink.close()
    source.close()
    for part in extra:
        part.close()
    first = source.first_at if source.first_at is not None else end
    result = {
        "records": summary.records,
        "predictions": summary.predictions,
        "dead_letters": summary.dead_letters,
        "elapsed_s": end - first,
        "since_run_s": end - run_started,
        "end_wall": time.time(),
        "cpu_s": end_cpu - source.first_cpu if source.first_at is not None else 0.0,
        "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "threads_cpu_s": threads_cpu,
        "state_metrics": _state_metrics(metrics),
    }
    print("RESULT " + orjson.dumps(result).decode(), flush=True)


PREDICTION_SHAPE = {
    "id": 12345, "key": "sensor-7", "ts": 12345.0, "prediction": 1,
    "proba": {"0": 0.0712, "1": 0.9288},
    "model": {"name": "bench-linear", "version": 1, "n_learned": 12345, "generation": 0},
    "source": {"topic": "bench-0123abcd-linear-max-events", "partition": 1, "offset": 4115},
    "latency_ms": 1.234,
}


class _NoRestore:
    """A partition listener with nothing to restore (the edges-only loop keeps no state)."""

    def on_assigned(self, partitions: Sequence[Any]) -> None:
        """Nothing to do."""

    def on_revoked(self, partitions: Sequence[Any]) -> None:
        """Nothing to do."""


def edges_main(cfg: dict[str, Any]) -> None:
    """The worker's Kafka edges with nothing between them; print one ``RESULT`` line.

    Per poll batch, as the service does: poll, one prediction-sized record per
    input record, then flush and commit (``kafka-python``: the project's own
    source, sink and commit strategy). No decoding, no model, no metrics: what is
    left is the Kafka client's own cost per event.
    """
    from stream_learner.settings import load_settings

    settings = load_settings(None, env={}, overrides=cfg["settings"])
    value = orjson.dumps(PREDICTION_SHAPE)
    n = int(settings.service.max_events)
    loop = _ck_edges if cfg["edges"] == "confluent-kafka" else _kafka_python_edges
    first, first_cpu, end, end_cpu = loop(settings, n, value)
    result = {"records": n, "elapsed_s": end - first, "cpu_s": end_cpu - first_cpu,
              "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    print("RESULT " + orjson.dumps(result).decode(), flush=True)


def _kafka_python_edges(settings: Any, n: int, value: bytes) -> tuple[float, float, float, float]:
    """Consume ``n`` records and answer each through the project's Kafka source and sink.

    Returns wall and CPU seconds at the first record and after the last commit.
    """
    from stream_learner import cli
    from stream_learner.commits import AtLeastOnce

    source, sink = cli.build_edges(settings, dict(os.environ))
    committer = AtLeastOnce(source, sink)
    source.subscribe(_NoRestore())
    batch, timeout = settings.service.batch_size, settings.service.poll_timeout_ms
    done, first, first_cpu = 0, 0.0, 0.0
    while done < n:
        records = source.poll(min(batch, n - done), timeout)
        if records and not done:
            first, first_cpu = time.perf_counter(), _cpu_seconds()
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            sink.send("predictions", record.key, value)
            offsets[(record.origin.topic, record.origin.partition)] = record.origin.offset + 1
        committer.commit(offsets)
        done += len(records)
    end, end_cpu = time.perf_counter(), _cpu_seconds()
    sink.close()
    source.close()
    return first, first_cpu, end, end_cpu


def _ck_edges(settings: Any, n: int, value: bytes) -> tuple[float, float, float, float]:
    """The same loop with confluent-kafka (librdkafka), configured like the worker's client."""
    from confluent_kafka import Consumer, Producer

    k = settings.kafka
    consumer = Consumer({
        "bootstrap.servers": k.bootstrap_servers, "group.id": k.group_id,
        "auto.offset.reset": k.auto_offset_reset, "enable.auto.commit": False,
        "partition.assignment.strategy": "range",
    })
    producer = Producer({
        "bootstrap.servers": k.bootstrap_servers, "acks": "all", "enable.idempotence": True,
        "linger.ms": k.linger_ms, "batch.size": 256 * 1024,
    })
    consumer.subscribe([k.events_topic])
    batch, timeout = settings.service.batch_size, settings.service.poll_timeout_ms / 1000.0
    done, first, first_cpu = 0, 0.0, 0.0
    while done < n:
        messages = consumer.consume(min(batch, n - done), timeout)
        if messages and not done:
            first, first_cpu = time.perf_counter(), _cpu_seconds()
        for message in messages:
            if message.error() is not None:
                raise RuntimeError(f"confluent-kafka: {message.error()}")
            producer.produce(k.predictions_topic, value=value, key=message.key())
        if messages:
            if producer.flush(30) != 0:
                raise RuntimeError("confluent-kafka: records left unsent after 30 s")
            consumer.commit(asynchronous=False)
        done += len(messages)
    end, end_cpu = time.perf_counter(), _cpu_seconds()
    consumer.close()
    return first, first_cpu, end, end_cpu


def _peer_prediction(ev: Mapping[str, Any], proba: Mapping[Any, float]) -> dict[str, Any]:
    """What a peer emits per event: enough for a downstream consumer (id, ts) and a user."""
    label = max(proba, key=proba.__getitem__) if proba else None
    return {"id": ev["id"], "key": ev["key"], "ts": ev["ts"], "prediction": label,
            "proba": {str(k): v for k, v in proba.items()}}


def quix_main(cfg: dict[str, Any]) -> None:
    """A Quix Streams app doing the service's work: predict then learn, one model per partition.

    The model is the linear case's, built as the service builds it; it lives in
    plain Python memory (no Quix state store: a River model is not what RocksDB
    state is for, and the obvious app keeps it in memory). Quix's own defaults
    otherwise (JSON serdes, a commit every 5 s); its outputs carry the time they
    leave the app (Quix would copy the input's), as the service's carry the time
    of their send, for the "up to the worker's send" figures. With ``max_events`` the app
    stops once it has processed that many events; without, at SIGTERM. Prints
    one ``RESULT`` line.
    """
    from quixstreams import Application, message_context

    case = CASES[0]
    n = int(cfg.get("max_events") or 0)
    app = Application(broker_address=cfg["bootstrap"], consumer_group=cfg["group"],
                      auto_offset_reset="earliest", loglevel="WARNING",
                      auto_create_topics=False, use_changelog_topics=False)
    events = app.topic(cfg["events"], value_deserializer="json")
    predictions = app.topic(cfg["predictions"], value_serializer="json")
    models: dict[int, Any] = {}
    first: list[float] = []

    def score(ev: dict[str, Any]) -> dict[str, Any]:
        if not first:
            first.extend((time.perf_counter(), _cpu_seconds()))
        partition = message_context().partition
        model = models.get(partition)
        if model is None:
            model = models[partition] = build_model(case)
        x = ev["features"]
        proba = model.predict_proba_one(x)
        model.learn_one(x, ev["label"])
        return _peer_prediction(ev, proba)

    sdf = app.dataframe(events).apply(score)
    # Quix gives an output the input's timestamp; stamp it when it leaves the app instead,
    # as a producer that sets no timestamp does, so "up to the worker's send" means the same
    sdf = sdf.set_timestamp(lambda _value, _key, _ts, _headers: int(time.time() * 1000))
    sdf.to_topic(predictions)
    app.run(count=n, collect=False)
    end, end_cpu = time.perf_counter(), _cpu_seconds()
    _print_peer_result(n, first, end, end_cpu)


def naive_main(cfg: dict[str, Any]) -> None:
    """The loop a first attempt writes with kafka-python: json, one send per event, no commits.

    Stops after ``max_events`` events and a final flush; prints one ``RESULT`` line.
    """
    import json

    from kafka import KafkaConsumer, KafkaProducer

    case = CASES[0]
    n = int(cfg["max_events"])
    consumer = KafkaConsumer(cfg["events"], bootstrap_servers=[cfg["bootstrap"]],
                             group_id=cfg["group"], auto_offset_reset="earliest",
                             enable_auto_commit=False)
    producer = KafkaProducer(bootstrap_servers=[cfg["bootstrap"]])
    models: dict[int, Any] = {}
    first: list[float] = []
    done = 0
    for record in consumer:
        if not first:
            first.extend((time.perf_counter(), _cpu_seconds()))
        model = models.get(record.partition)
        if model is None:
            model = models[record.partition] = build_model(case)
        ev = json.loads(record.value)
        x = ev["features"]
        proba = model.predict_proba_one(x)
        model.learn_one(x, ev["label"])
        producer.send(cfg["predictions"], key=record.key,
                      value=json.dumps(_peer_prediction(ev, proba)).encode())
        done += 1
        if done >= n:
            break
    producer.flush()
    end, end_cpu = time.perf_counter(), _cpu_seconds()
    producer.close()
    consumer.close()
    _print_peer_result(done, first, end, end_cpu)


def _print_peer_result(n: int, first: Sequence[float], end: float, end_cpu: float) -> None:
    start, start_cpu = first if first else (end, end_cpu)
    result = {"records": n, "predictions": n, "elapsed_s": end - start,
              "cpu_s": end_cpu - start_cpu,
              "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              "threads_cpu_s": {}, "state_metrics": {}}
    print("RESULT " + orjson.dumps(result).decode(), flush=True)


def _state_metrics(metrics: Any) -> dict[str, float]:
    """Checkpoint and restore samples (sums, counts, gauges) of the worker's registry."""
    out: dict[str, float] = {}
    for family in metrics.registry.collect():
        if "checkpoint" not in family.name and "restore" not in family.name:
            continue
        for sample in family.samples:
            if sample.name.endswith(("_bucket", "_created")):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return out


def producer_main(bootstrap: str, client: str) -> None:
    """Serve paced-send commands read from stdin, one JSON line each; answer on stdout."""
    pool = samples(20000)
    producer = LoadProducer(bootstrap, client)
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = orjson.loads(line)
        print(orjson.dumps(paced_send(producer, pool, cmd)).decode(), flush=True)
    producer.close()
