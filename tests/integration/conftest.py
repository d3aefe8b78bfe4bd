"""Real-broker tests: each runs once per Kafka client; private servers for tests that
restart Kafka or Redis mid-stream (see tests/support/private_servers.py).

They run where the shared servers run (the same skip / fail rule as the other
integration tests), on ports and a state folder of their own, and are stopped
at the end of the module that used them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.private_servers import PrivateServer


@pytest.fixture(autouse=True)
def _every_kafka_client(kafka_client: str) -> str:
    """Every test here runs once per Kafka client (see ``tests/conftest.py``)."""
    return kafka_client


def _private(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    why = PrivateServer.available(kind)
    if why:
        message = f"cannot start a private {kind}: {why}"
        if os.environ.get("STREAM_LEARNER_REQUIRE_SERVERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    server = PrivateServer(kind, tmp_path_factory.mktemp(f"private-{kind}"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def private_kafka(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    """A broker of this module's own, which its tests may stop and start again."""
    yield from _private("kafka", tmp_path_factory)


@pytest.fixture(scope="module")
def private_redis(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServer]:
    """A Redis server of this module's own, which its tests may stop and start again."""
    yield from _private("redis", tmp_path_factory)
