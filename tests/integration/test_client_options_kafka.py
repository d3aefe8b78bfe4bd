"""Pass-through client options reach the Kafka client the worker runs on.

``[kafka.producer_options]`` and ``[kafka.consumer_options]`` are handed to the
client as they are (in its own spelling): a value the client refuses stops the
start with one line naming the table (exit 2), and accepted ones leave the
stream exact. Runs once per client (see ``conftest.py``).
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.kafka import consume_all, produce
from tests.support.service import run_service, service_command, service_env

pytestmark = pytest.mark.kafka

N_EVENTS = 300


def _topics(make_topic: Any, kafka_bootstrap: str) -> dict[str, str]:
    return {
        "kafka__bootstrap_servers": kafka_bootstrap,
        "kafka__events_topic": make_topic("events", 1),
        "kafka__predictions_topic": make_topic("predictions", 1),
        "kafka__dead_letter_topic": make_topic("dlq", 1),
        "kafka__learn_dead_letter_topic": make_topic("learn-dlq", 1),
        "kafka__alerts_topic": make_topic("alerts", 1),
        "kafka__metrics_topic": make_topic("metrics", 1),
        "kafka__group_id": f"g-{uuid.uuid4().hex[:8]}",
    }


def _config(tmp_path: Path, producer: str, consumer: str) -> Path:
    path = tmp_path / "worker.toml"
    path.write_text(
        '[service]\ntransport = "kafka"\n\n'
        '[model]\ntask = "classification"\n\n'
        '[[model.pipeline]]\nstep = "preprocessing.StandardScaler"\n\n'
        '[[model.pipeline]]\nstep = "linear_model.LogisticRegression"\n\n'
        f"[kafka.producer_options]\n{producer}\n\n[kafka.consumer_options]\n{consumer}\n"
    )
    return path


def test_a_value_the_client_refuses_stops_the_start_in_one_line(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, kafka_client: str
) -> None:
    config = _config(tmp_path, '"compression.type" = "no-such-codec"', "")
    proc = subprocess.run(
        service_command("run", "-c", str(config)),
        env=service_env(**_topics(make_topic, kafka_bootstrap), service__idle_timeout_s="5"),
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "kafka.producer_options: the client refused them" in proc.stderr
    assert "no-such-codec" in proc.stderr and "Traceback" not in proc.stderr


def test_accepted_options_keep_one_prediction_per_event(
    kafka_bootstrap: str, make_topic: Any, tmp_path: Path, kafka_client: str
) -> None:
    topics = _topics(make_topic, kafka_bootstrap)
    events = [
        (0, b"k", orjson.dumps({"id": i, "key": "k", "features": {"x": float(i % 7)}, "label": i % 2}))
        for i in range(N_EVENTS)
    ]
    produce(kafka_bootstrap, topics["kafka__events_topic"], events)
    # kafka-python's spelling for one, librdkafka's for the other: each reaches its client
    config = _config(tmp_path, 'compression_type = "gzip"', '"fetch.max.bytes" = 1048576')
    run_service(
        ["run", "-c", str(config)], **topics,
        service__max_events=str(N_EVENTS), service__idle_timeout_s="60",
    )
    rows = consume_all(kafka_bootstrap, topics["kafka__predictions_topic"], N_EVENTS)
    assert sorted(orjson.loads(r[3])["id"] for r in rows) == list(range(N_EVENTS))
