"""Shared fixtures: the real Kafka broker and Redis started by scripts/servers.sh.

Addresses come from STREAM_LEARNER_TEST_KAFKA / STREAM_LEARNER_TEST_REDIS
(scripts/test.sh exports them). Without them the integration tests are
skipped, unless STREAM_LEARNER_REQUIRE_SERVERS=1 (set by scripts/test.sh),
in which case they fail: CI never passes by skipping them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _server(var: str, what: str) -> str:
    value = os.environ.get(var)
    if value:
        return value
    message = f"{var} is not set: start {what} with scripts/servers.sh start"
    if os.environ.get("STREAM_LEARNER_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """host:port of the real broker."""
    return _server("STREAM_LEARNER_TEST_KAFKA", "Kafka")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """redis:// URL of the real Redis server."""
    return _server("STREAM_LEARNER_TEST_REDIS", "Redis")


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics on the real broker; delete them afterwards."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1, **configs: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics(
            [NewTopic(name, partitions, 1, topic_configs=configs or {})], timeout_ms=30000
        )
        created.append(name)
        return name

    yield make
    try:
        admin.delete_topics(created, timeout_ms=30000)
    finally:
        admin.close()


#: The Kafka clients every real-broker test of the service runs on (``kafka.client``).
KAFKA_CLIENTS = ("kafka-python", "confluent-kafka")

#: Set by the ``kafka_client`` fixture: the client the service under test uses.
CLIENT_VARIABLE = "STREAM_LEARNER_TEST_KAFKA_CLIENT"


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per Kafka client: services it starts use that ``kafka.client``."""
    monkeypatch.setenv(CLIENT_VARIABLE, request.param)
    return str(request.param)


def service_command(*args: str) -> list[str]:
    """Run this source tree's CLI (not whatever is installed) in a subprocess."""
    return [sys.executable, "-m", "stream_learner", *args]


def service_env(**overrides: str) -> dict[str, str]:
    """Environment for a service subprocess: this tree first on sys.path, plus settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STREAM_LEARNER_") or k.startswith("STREAM_LEARNER_TEST")
    }
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if os.environ.get(CLIENT_VARIABLE):
        env["STREAM_LEARNER_KAFKA__CLIENT"] = os.environ[CLIENT_VARIABLE]
    env.update({f"STREAM_LEARNER_{k.upper()}": v for k, v in overrides.items()})
    return env


def run_service(
    args: list[str], timeout: float = 300, **overrides: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion; fail the test with its stderr if it fails."""
    proc = subprocess.run(
        service_command(*args), env=service_env(**overrides), capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"stream-learner {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
        )
    return proc
