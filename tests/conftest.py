"""Shared fixtures: the real Kafka broker and Redis started by scripts/servers.sh.

Addresses come from STREAM_LEARNER_TEST_KAFKA / STREAM_LEARNER_TEST_REDIS
(scripts/test.sh exports them). Without them the integration tests are
skipped, unless STREAM_LEARNER_REQUIRE_SERVERS=1 (set by scripts/test.sh),
in which case they fail: CI never passes by skipping them.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.page import BROWSER_ARGS, CHROMIUM, browser_unavailable
from tests.support.redis_keys import drop_redis_prefixes
from tests.support.service import CLIENT_VARIABLE, KAFKA_CLIENTS

# A shell without job control starts a background command (`scripts/test.sh &`, a CI
# runner's step) with SIGINT ignored, and every process the tests start inherits that:
# a `stream-learner replay` child then never sees the Ctrl-C a test sends it (Python
# keeps an inherited "ignore"). The tests' children get SIGINT as a terminal gives it.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


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
def redis_prefixes(redis_url: str) -> Iterator[Callable[[str], str]]:
    """Unique checkpoint key prefixes on the real Redis; their keys are deleted afterwards.

    The Redis of scripts/servers.sh keeps its data from one run to the next, so
    keys left behind would pile up on a developer's machine run after run.
    """
    made: list[str] = []

    def make(kind: str) -> str:
        made.append(f"{kind}-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    drop_redis_prefixes(redis_url, made)


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


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per Kafka client: services it starts use that ``kafka.client``."""
    monkeypatch.setenv(CLIENT_VARIABLE, request.param)
    return str(request.param)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium of the system (never a downloaded one)."""
    why = browser_unavailable()
    if why:
        if os.environ.get("STREAM_LEARNER_REQUIRE_SERVERS") == "1":
            pytest.fail(why)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chrome = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            yield chrome
        finally:
            chrome.close()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (scripts/test.sh), tests that share a fixture
    wider than one test but narrower than the session run on one worker, so it is built
    once: a private server, a browser, a built wheel, a module's reference run.

    The group is the module and those fixtures, so a module's tests on different ones (its
    private broker, its private Redis) still run side by side. Without xdist the mark does
    nothing.
    """
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:
            continue
        shared = sorted(
            name for name, defs in info.name2fixturedefs.items()
            if defs and defs[-1].scope in ("module", "class", "package")
        )
        if shared:
            group = f"{item.path.stem}-{'+'.join(shared)}"
            item.add_marker(pytest.mark.xdist_group(group))
            if getattr(config.option, "loadgroup", False):
                _suffix_group(item, group)


def _suffix_group(item: pytest.Item, group: str) -> None:
    """Put ``@group`` at the end of the node id, which is how xdist's scheduler reads groups.

    xdist 3.8 does it by setting ``Item._nodeid``, which pytest 9.2's structured node ids
    no longer read (pytest-xdist issue 1386): tests would be spread as if unmarked. Where
    the structured id exists, it is set here the way the proposed fix does.
    """
    if "@" in item.nodeid or not hasattr(item, "_id"):
        return
    from _pytest.nodeid import NodeId

    # the whole id after the path as one name, so that the suffix stays last (after any
    # [params]): the scheduler reads a group only after the last "]"
    path, _, rest = item.nodeid.partition("::")
    item._id = NodeId(path=path, names=(f"{rest}@{group}",))
