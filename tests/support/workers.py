"""Run stream-learner workers as real processes, and check their outputs."""

from __future__ import annotations

import itertools
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from river import datasets

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.datasets import sample_to_event
from stream_learner.learner import Learner
from stream_learner.models import ModelSpec
from stream_learner.settings import ModelSettings
from stream_learner.stores import RedisStore
from tests.support.kafka import Deliveries
from tests.support.service import service_command, service_env

CHECKPOINT_KEY = "k" * 32

MODEL = ModelSettings(
    name="agrawal-clf",
    task="classification",
    pipeline=(
        {"step": "preprocessing.StandardScaler"},
        {"step": "linear_model.LogisticRegression"},
    ),
)

MODEL_TOML = """
[model]
name = "agrawal-clf"
task = "classification"

[[model.pipeline]]
step = "preprocessing.StandardScaler"

[[model.pipeline]]
step = "linear_model.LogisticRegression"
"""


def labelled_events(n: int, partitions: int, sensors: int = 12) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) for ``n`` labelled Agrawal events over ``sensors`` keys."""
    out = []
    stream = datasets.synth.Agrawal(classification_function=2, seed=11)
    for i, (x, y) in enumerate(itertools.islice(stream, n)):
        sensor = i % sensors
        event = sample_to_event(i, f"sensor-{sensor}", x, y)
        out.append((sensor % partitions, event["key"].encode(), orjson.dumps(event)))
    return out


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """A worker config file: Kafka transport, the test model, plus ``extra`` TOML."""
    path = tmp_path / "worker.toml"
    path.write_text('[service]\ntransport = "kafka"\nbatch_size = 50\n' + extra + MODEL_TOML)
    return path


class Worker:
    """One ``stream-learner run`` process."""

    def __init__(self, config: Path, log: Path, **settings: str) -> None:
        self.log_path = log
        self._log = log.open("ab")
        self._log_start = self._log.tell()  # workers may share a log: this one's part starts here
        env = service_env(**settings)
        env["STREAM_LEARNER_CHECKPOINT_KEY"] = CHECKPOINT_KEY
        self.proc = subprocess.Popen(
            service_command("run", "-c", str(config)), env=env,
            stdout=subprocess.DEVNULL, stderr=self._log,
        )

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no checkpoint."""
        self.proc.kill()
        self.proc.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait for the graceful exit."""
        self.proc.terminate()
        return self.wait(timeout)

    def wait(self, timeout: float = 120) -> int:
        """Wait for the process to end by itself."""
        code = self.proc.wait(timeout)
        self._log.close()
        return code

    def log(self) -> str:
        """What the worker wrote to stderr."""
        with self.log_path.open("rb") as handle:
            handle.seek(self._log_start)
            return handle.read().decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 60.0) -> None:
        """Block until ``pattern`` (a regular expression) appears in the worker's log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log()):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited before logging {pattern!r}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker did not log {pattern!r} in {timeout}s:\n{self.log()[-3000:]}")


class PacedProducer(threading.Thread):
    """Sends records evenly over some seconds; :meth:`join` fails if any was not stored."""

    def __init__(
        self, bootstrap: str, topic: str, records: Sequence[tuple[int, bytes, bytes]],
        seconds: float,
    ) -> None:
        super().__init__(daemon=True)
        self.deliveries = Deliveries(bootstrap)
        self._topic, self._records, self._seconds = topic, records, seconds
        self.failure: Exception | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            step = self._seconds / max(1, len(self._records))
            for i, (partition, key, value) in enumerate(self._records):
                delay = start + i * step - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.deliveries.send(self._topic, partition, key, value)
            self.deliveries.finish()
        except Exception as exc:  # raised again by join, in the test's thread
            self.failure = exc

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread; fail when the input did not land as sent, or in time."""
        super().join(timeout)
        if self.failure is not None:
            raise self.failure
        assert not self.is_alive(), f"the input was still being sent after {timeout}s"


def paced_producer(
    bootstrap: str, topic: str, records: Sequence[tuple[int, bytes, bytes]], seconds: float
) -> PacedProducer:
    """Send ``records`` evenly over ``seconds`` from a background thread."""
    thread = PacedProducer(bootstrap, topic, records, seconds)
    thread.start()
    return thread


def reference(
    records: Sequence[tuple[int, bytes, bytes]], partitions: int
) -> tuple[dict[tuple[int, int], Any], dict[int, Learner]]:
    """River's own loop per partition: prediction per (partition, offset) and final learners.

    Offsets follow production order within each partition (the producer sends in order).
    """
    from stream_learner.events import Codec, Origin
    from stream_learner.settings import LimitSettings, SchemaSettings

    spec = ModelSpec.from_settings(MODEL)
    codec = Codec(SchemaSettings(), LimitSettings(), spec.task)
    learners = {p: Learner(spec) for p in range(partitions)}
    next_offset = dict.fromkeys(range(partitions), 0)
    out: dict[tuple[int, int], Any] = {}
    for partition, key, value in records:
        offset = next_offset[partition]
        next_offset[partition] += 1
        item = codec.decode(value, key, 0, Origin("events", partition, offset))
        prediction = learners[partition].process(item)[0]
        assert prediction is not None
        out[(partition, offset)] = orjson.loads(orjson.dumps(
            {"prediction": prediction.prediction, **prediction.fields},
            option=orjson.OPT_NON_STR_KEYS,
        ))
    return out, learners


def probe_set(n: int = 50) -> Iterator[dict[str, Any]]:
    """Feature dicts the final models are compared on."""
    for i, (x, _y) in enumerate(datasets.synth.Agrawal(classification_function=2, seed=99)):
        if i >= n:
            return
        yield sample_to_event(i, "probe", x, None)["features"]


# -- crash and rebalance runs of worker processes on the real broker and Redis -------------


def worker_settings(
    bootstrap: str, redis_url: str, topics: dict[str, str], prefix: str, **extra: str
) -> dict[str, str]:
    """Settings of a worker on ``topics``: group and checkpoint prefix ``prefix``, Redis store.

    Checkpoints every 300 events or 0.5 s, so a SIGKILL lands after some; ``extra``
    adds or overrides settings.
    """
    return {
        "kafka__bootstrap_servers": bootstrap,
        "kafka__events_topic": topics["events"],
        "kafka__predictions_topic": topics["predictions"],
        "kafka__dead_letter_topic": topics["dlq"],
        "kafka__learn_dead_letter_topic": topics["learn_dlq"],
        "kafka__alerts_topic": topics["alerts"],
        "kafka__metrics_topic": topics["metrics"],
        "kafka__group_id": prefix,
        "kafka__session_timeout_ms": "6000",
        "checkpoint__store": "redis",
        "checkpoint__redis_url": redis_url,
        "checkpoint__key_prefix": prefix,
        "checkpoint__every_events": "300",
        "checkpoint__every_seconds": "0.5",
        **extra,
    }


def worker_topics(make_topic: Callable[..., str], partitions: int = 2) -> dict[str, str]:
    """A worker's topics (by role), made with the ``make_topic`` fixture."""
    return {
        "events": make_topic("events", partitions),
        "predictions": make_topic("predictions", partitions),
        "dlq": make_topic("dlq", 1),
        "learn_dlq": make_topic("learn-dlq", 1),
        "alerts": make_topic("alerts", 1),
        "metrics": make_topic("metrics", 1),
    }


def final_models_equal_reference(
    redis_url: str, prefix: str, topic: str, learners: dict[int, Any]
) -> None:
    """Fail unless each partition's last checkpoint holds its reference learner's state."""
    store = RedisStore(redis_url, prefix)
    codec = EnvelopeCodec(CHECKPOINT_KEY.encode(), ModelSpec.from_settings(MODEL).config_hash)
    try:
        for partition, expected in learners.items():
            latest = store.latest(f"{topic}:{partition}")
            assert latest is not None, f"no checkpoint for partition {partition}"
            snap = codec.open(latest[1])
            assert snap.offsets == {(topic, partition): expected.n_predicted}
            got = snap.state
            assert got.n_learned == expected.n_learned
            for x in probe_set():
                assert got.model.predict_proba_one(x) == expected.model.predict_proba_one(x)
    finally:
        store.close()


def check_predictions(
    rows: list[tuple[int, int, Any, bytes, Any]], expected: dict[tuple[int, int], Any],
    exactly_once: bool,
) -> None:
    """Fail unless every event has its reference prediction (and, ``exactly_once``, one only)."""
    seen: dict[tuple[int, int], int] = {}
    for _p, _o, _k, value, _h in rows:
        record = orjson.loads(value)
        where = (record["source"]["partition"], record["source"]["offset"])
        got = {"prediction": record["prediction"], "proba": record["proba"]}
        assert got == expected[where], f"prediction for {where} differs from the uninterrupted run"
        seen[where] = seen.get(where, 0) + 1
    missing = set(expected) - set(seen)
    assert not missing, f"{len(missing)} events have no prediction, e.g. {sorted(missing)[:5]}"
    if exactly_once:
        duplicated = {w: n for w, n in seen.items() if n > 1}
        assert not duplicated, f"{len(duplicated)} events predicted more than once"
