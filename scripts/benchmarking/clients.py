"""The harness's own Kafka clients: the open-loop load producer and the prediction reader."""

from __future__ import annotations

import importlib
import importlib.util
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from benchmarking.workload import PARTITIONS, event, percentile, sensor


def harness_client(choice: str) -> str:
    """The client of the load producer and the latency consumer.

    ``auto`` picks confluent-kafka when it is installed: it needs about a tenth
    of kafka-python's CPU per record, which on a small machine is CPU the
    worker and the broker keep. The worker always uses the service's client.
    """
    if choice != "auto":
        return choice
    found = importlib.util.find_spec("confluent_kafka") is not None
    return "confluent-kafka" if found else "kafka-python"


#: The load producer batches as producers do by default (librdkafka since 1.5 and the Java
#: client since Kafka 4.0 wait up to 5 ms). Sending each record in a request of its own
#: (0 ms) cost the broker half a core at 5,000 events/s on the 2-core machine, and the
#: events then reached every reader of their topic hundreds of milliseconds late: the
#: latency runs measured the load producer, not the system under test (docs/benchmarks.md).
LOAD_LINGER_MS = 5


class LoadProducer:
    """Sends records with kafka-python or confluent-kafka, batched for ``LOAD_LINGER_MS``."""

    def __init__(self, bootstrap: str, client: str) -> None:
        self.client = client
        if client == "confluent-kafka":
            from confluent_kafka import Producer

            self._ck = Producer({"bootstrap.servers": bootstrap, "acks": 1,
                                 "linger.ms": LOAD_LINGER_MS,
                                 "client.id": "benchmark-load"})
        else:
            from kafka import KafkaProducer

            self._kp = KafkaProducer(bootstrap_servers=[bootstrap], acks=1,
                                     linger_ms=LOAD_LINGER_MS,
                                     client_id="benchmark-load")

    def send(self, topic: str, value: bytes, key: bytes, partition: int) -> None:
        """Queue one record for ``partition``."""
        if self.client == "confluent-kafka":
            self._ck.produce(topic, value=value, key=key, partition=partition)
            self._ck.poll(0)  # serve delivery reports so the queue stays short
        else:
            self._kp.send(topic, value=value, key=key, partition=partition)

    def flush(self) -> None:
        """Wait until every record sent is acknowledged."""
        if self.client == "confluent-kafka":
            self._ck.flush(60)
        else:
            self._kp.flush()

    def close(self) -> None:
        """Flush and release the client."""
        if self.client == "confluent-kafka":
            self._ck.flush(60)
        else:
            self._kp.close()


class PredictionReader:
    """Reads the predictions topic from its start: (value, CreateTime ms) of each record."""

    def __init__(self, bootstrap: str, topic: str, client: str) -> None:
        self.client = client
        if client == "confluent-kafka":
            from confluent_kafka import OFFSET_BEGINNING, Consumer
            from confluent_kafka import TopicPartition as CkTP

            self._ck = Consumer({
                "bootstrap.servers": bootstrap, "group.id": f"benchmark-latency-{uuid.uuid4()}",
                "enable.auto.commit": False, "client.id": "benchmark-latency",
                "fetch.wait.max.ms": 100,
            })
            self._ck.assign([CkTP(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        else:
            from kafka import KafkaConsumer
            from kafka.structs import TopicPartition

            self._kp = KafkaConsumer(
                bootstrap_servers=[bootstrap], group_id=None, enable_auto_commit=False,
                client_id="benchmark-latency", fetch_max_wait_ms=100,
            )
            self._kp.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
            self._kp.seek_to_beginning()

    def poll(self, timeout_s: float) -> list[tuple[bytes, int]]:
        """The records that arrived, waiting up to ``timeout_s`` for the first."""
        if self.client == "confluent-kafka":
            # consume() waits for its whole count or the timeout: wait for one record,
            # then take what is already queued without waiting
            first = self._ck.poll(timeout_s)
            messages = [] if first is None else [first, *self._ck.consume(1000, 0)]
            out = []
            for m in messages:
                if m.error() is not None:
                    raise RuntimeError(f"confluent-kafka: {m.error()}")
                value = m.value()
                if value is not None:  # predictions are never tombstones
                    out.append((value, m.timestamp()[1]))
            return out
        batches = self._kp.poll(timeout_ms=int(timeout_s * 1000))
        return [(r.value, r.timestamp) for records in batches.values() for r in records]

    def close(self) -> None:
        """Release the client."""
        if self.client == "confluent-kafka":
            self._ck.close()
        else:
            self._kp.close()


class InputWatch:
    """How late the events reach an independent reader of their topic, phase by phase.

    A second :class:`PredictionReader`, on the events topic, in a thread of its
    own: the age of each record on arrival (receipt time minus its CreateTime,
    set when the load producer sent it). When it is high, the records were
    late at the broker for every reader, not only in the worker's poll loop.
    """

    def __init__(self, bootstrap: str, topic: str, client: str) -> None:
        self._reader = PredictionReader(bootstrap, topic, client)
        self._ages: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="input watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            records = self._reader.poll(0.2)
            now = time.time()
            with self._lock:
                self._ages.extend(now - created_ms / 1000.0 for _value, created_ms in records)

    def restart(self) -> None:
        """Forget the ages seen so far (a new phase begins)."""
        with self._lock:
            self._ages = []

    def line(self) -> str:
        """p50 and p99 of the ages since :meth:`restart`, as one log line."""
        with self._lock:
            ages = sorted(self._ages)
        if not ages:
            return "events reached an independent reader: none seen"
        p50, p99 = percentile(ages, 0.5) * 1000.0, percentile(ages, 0.99) * 1000.0
        return (f"events reached an independent reader of their topic: p50 {p50:,.1f} ms, "
                f"p99 {p99:,.1f} ms after they were sent ({len(ages):,} records)")

    def close(self) -> None:
        """Stop the thread and release the reader."""
        self._stop.set()
        self._thread.join(5)
        self._reader.close()


def paced_send(
    producer: LoadProducer, pool: Sequence[tuple[dict[str, Any], Any]], cmd: Mapping[str, Any]
) -> dict[str, Any]:
    """Send ``n`` events at ``rate``/s on a schedule fixed in advance.

    Event ``k`` is due at ``t_start + k / rate`` and carries that time as its
    ``ts``; when the producer falls behind it sends at once, without skipping
    or re-basing the schedule.
    """
    n, rate, first, topic = int(cmd["n"]), float(cmd["rate"]), int(cmd["first_id"]), cmd["topic"]
    pending: list[tuple[int, bytes, bytes]] = []
    for i in range(first, first + n):
        x, y = pool[i % len(pool)]
        partition, key = sensor(i)
        doc = event(i, x, y, bool(cmd["labelled"]), 0.0)
        del doc["ts"]
        pending.append((partition, key.encode(), orjson.dumps(doc)[1:]))
    send, now_fn, sleep = producer.send, time.time, time.sleep
    start = now_fn() + 0.2
    late = 0
    max_lag = 0.0
    for k, (partition, key_bytes, tail) in enumerate(pending):
        due = start + k / rate
        now = now_fn()
        if now < due:
            sleep(due - now)
        else:
            lag = now - due
            late += lag > 0.001
            max_lag = max(max_lag, lag)
        send(topic, value=b'{"ts":' + repr(due).encode() + b"," + tail, key=key_bytes,
             partition=partition)
    producer.flush()
    return {"sent": n, "late_share": late / n if n else 0.0, "max_lag_ms": max_lag * 1000.0}


def collect(
    consumer: PredictionReader, first: int, n: int, deadline: float
) -> tuple[list[float], list[float]]:
    """Latencies (s) of predictions ``first`` .. ``first + n - 1``.

    The first list is receipt time minus ``ts`` (the scheduled send time); the
    second is the part of it before the worker handed the prediction to its
    producer (the prediction record's CreateTime, in ms).
    """
    latencies: list[float] = []
    to_worker_send: list[float] = []
    end = first + n
    while len(latencies) < n and time.time() < deadline:
        records = consumer.poll(0.05)
        received = time.time()
        for value, create_ms in records:
            doc = orjson.loads(value)
            if first <= doc["id"] < end:
                latencies.append(received - doc["ts"])
                to_worker_send.append(create_ms / 1000.0 - doc["ts"])
    return latencies, to_worker_send
