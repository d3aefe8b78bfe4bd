"""The README's "Running on Kafka" commands, run as written against the real broker and Redis
(topic names, group and key prefix made unique through the environment)."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.kafka import consume_all, produce
from tests.support.service import ROOT, service_command, service_env

CONFIG = "config/kafka.toml"
ROLES = ("events", "predictions", "dead_letter", "learn_dead_letter", "alerts", "metrics")


def readme_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Running on Kafka", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("#")[0].strip() for line in block.group(1).splitlines()]


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    names = {role: f"readme-{role}-{uuid.uuid4().hex[:8]}" for role in ROLES}
    yield names
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="tests-admin")
    try:
        made = set(admin.list_topics()) & set(names.values())
        if made:
            admin.delete_topics(sorted(made), timeout_ms=30000)
    finally:
        admin.close()


def test_the_readme_kafka_commands_create_topics_check_and_run_with_redis_state(
    kafka_bootstrap: str, redis_url: str, redis_prefixes: Callable[[str], str],
    topics: dict[str, str],
) -> None:
    commands = readme_block()
    assert "python scripts/create_topics.py -c config/kafka.toml --partitions 6" in commands
    assert f"stream-learner check -c {CONFIG}" in commands
    assert f"stream-learner run -c {CONFIG}" in commands
    exported = set(re.findall(r"^export (\w+)=", "\n".join(commands), re.M))
    assert {"STREAM_LEARNER_KAFKA__BOOTSTRAP_SERVERS", "STREAM_LEARNER_CHECKPOINT__REDIS_URL",
            "STREAM_LEARNER_CHECKPOINT_KEY"} <= exported
    prefix = redis_prefixes("readme")
    env = service_env(
        kafka__bootstrap_servers=kafka_bootstrap, checkpoint__redis_url=redis_url,
        checkpoint_key=uuid.uuid4().hex, checkpoint__key_prefix=prefix,
        kafka__group_id=f"readme-{uuid.uuid4().hex[:8]}", metrics__enabled="false",
        **{f"kafka__{role}_topic": name for role, name in topics.items()},
    )

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(list(argv), env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=180, check=False)

    created = run(sys.executable, "scripts/create_topics.py", "-c", CONFIG, "--partitions", "2")
    assert created.returncode == 0, created.stderr
    assert f"topic {topics['events']}: 2 partitions (created)" in created.stdout
    assert f"topic {topics['dead_letter']}: 1 partitions (created)" in created.stdout
    again = run(sys.executable, "scripts/create_topics.py", "-c", CONFIG, "--partitions", "2")
    assert f"topic {topics['events']}: 2 partitions (exists)" in again.stdout
    check = run(*service_command("check", "-c", CONFIG))
    assert check.returncode == 0, check.stderr
    assert f"Redis reachable at {redis_url}" in check.stdout
    events = [(i % 2, f"pump-{i % 4}".encode(), orjson.dumps(
        {"id": i, "key": f"pump-{i % 4}", "features": {"temp": 60.0 + i % 7, "vibration": 0.1},
         "label": i % 3 == 0})) for i in range(200)]
    produce(kafka_bootstrap, topics["events"], events)
    worker = run(*service_command("run", "-c", CONFIG), "--max-events", "200")
    assert worker.returncode == 0, worker.stderr
    assert len(consume_all(kafka_bootstrap, topics["predictions"], 200)) == 200
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys(f"{prefix}:*"), "no checkpoint in Redis"
    finally:
        client.close()


def test_create_topics_plans_what_the_worker_checks_at_start() -> None:
    # the same topics as the compose stack's script, for the settings' names
    script = (ROOT / "config" / "compose" / "create-topics.sh").read_text()
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from create_topics import planned
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    from stream_learner.settings import load_settings

    settings = load_settings(Path(ROOT / CONFIG), env={})
    plan = planned(settings, 6)
    assert set(plan) == {"events", "predictions", "events.dlq", "events.learn.dlq", "alerts",
                         "metrics"}
    for topic, (count, configs) in plan.items():
        line = next(line for line in script.splitlines()
                    if re.match(rf'create "\$\{{\w+:-{re.escape(topic)}\}}"', line))
        assert (count == 1) == (' 1' in line), line
        for key, value in configs.items():
            assert f"{key}={value}" in line, line
