"""Errors an operator can act on: exit codes and one-line messages from the real CLI."""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tests.support.kafka import consume_all, produce
from tests.support.service import service_command, service_env

SECRET = "s3cret-value-never-logged"


def cli(*args: str, timeout: float = 60, **overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        service_command(*args), env=service_env(**overrides), capture_output=True, text=True,
        timeout=timeout, check=False,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_configuration_error_exits_2_naming_the_key() -> None:
    proc = cli("run", service__batch_siz="5")
    assert proc.returncode == 2
    assert "service.batch_siz: unknown key (did you mean 'batch_size'?)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_value_exits_2_with_the_expected_form() -> None:
    proc = cli("run", kafka__security_protocol="TLS")
    assert proc.returncode == 2
    assert "kafka.security_protocol" in proc.stderr and "'TLS'" in proc.stderr
    assert "SASL_SSL" in proc.stderr  # the accepted values are listed
    assert "Traceback" not in proc.stderr


def test_model_configuration_error_exits_2_in_one_line() -> None:
    proc = cli("check", model__pipeline='[{step = "os.system"}]')
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "configuration: unknown River class 'os.system'" in lines[0]


def test_unset_password_variable_exits_2_naming_the_variable() -> None:
    proc = cli(
        "check", service__transport="kafka", kafka__bootstrap_servers=f"127.0.0.1:{closed_port()}",
        kafka__sasl_mechanism="PLAIN", kafka__sasl_password_env="NOT_SET_ANYWHERE",
    )
    assert proc.returncode == 2
    assert "'NOT_SET_ANYWHERE', which is not set" in proc.stderr


def test_unreachable_broker_is_one_line_with_its_address_and_exit_1() -> None:
    address = f"127.0.0.1:{closed_port()}"
    for command in ("check", "run"):
        proc = cli(
            command, timeout=30, service__transport="kafka",
            kafka__bootstrap_servers=address, kafka__connect_timeout_s="1",
        )
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert f"cannot reach Kafka at {address}" in lines[0]
        assert "kafka.connect_timeout_s=1s" in lines[0]


def test_metrics_endpoint_listens_on_loopback_by_default(tmp_path: Path) -> None:
    proc = cli(
        "run", "--max-events", "5", "--quiet",
        metrics__enabled="true", metrics__port="0",
        local__dead_letters=str(tmp_path / "dlq.jsonl"),
        local__learn_dead_letters=str(tmp_path / "learn.jsonl"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "metrics on http://127.0.0.1:" in proc.stderr


@pytest.mark.parametrize("command", [
    ("run", "--max-events", "5", "--quiet"), ("check",),
])
def test_a_metrics_port_in_use_is_one_line_naming_the_setting_and_exits_2(
    tmp_path: Path, command: tuple[str, ...],
) -> None:
    with socket.socket() as holder:  # another process's server on the port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = cli(
            *command, metrics__enabled="true", metrics__port=str(port),
            local__dead_letters=str(tmp_path / "dlq.jsonl"),
            local__learn_dead_letters=str(tmp_path / "learn.jsonl"),
        )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, proc.stderr
    assert f"metrics.port {port} on metrics.host 127.0.0.1" in errors[0], errors[0]
    assert "address already in use" in errors[0]
    assert not (tmp_path / "dlq.jsonl").exists() or not (tmp_path / "dlq.jsonl").read_bytes()


def test_check_says_the_metrics_port_can_be_bound() -> None:
    proc = cli("check", metrics__enabled="true", metrics__port="0")
    assert proc.returncode == 0, proc.stderr
    assert "metrics endpoint can listen on 127.0.0.1:0" in proc.stdout


@pytest.mark.kafka
def test_missing_topic_is_one_line_naming_it(kafka_bootstrap: str) -> None:
    missing = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    proc = cli(
        "check", service__transport="kafka", kafka__bootstrap_servers=kafka_bootstrap,
        kafka__events_topic=missing, kafka__connect_timeout_s="5",
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"'{missing}'" in lines[0] and kafka_bootstrap in lines[0]
    assert "not found" in lines[0]


@pytest.mark.kafka
def test_secret_is_never_logged_nor_written(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    roles = ("events", "predictions", "dlq", "learn", "alerts", "metrics")
    topics = {role: make_topic(role) for role in roles}
    produce(kafka_bootstrap, topics["events"], [
        (0, b"k", b'{"id": 1, "features": {"x": 1.0}, "label": 2.0}'),
        (0, b"k", b"not json"),
        (0, b"k", b'{"id": 7, "label": 1.0}'),
        # two more events: the label for id 7 (never seen) expires to the learn dead letters
        (0, b"k", b'{"id": 2, "features": {"x": 2.0}, "label": 3.0}'),
        (0, b"k", b'{"id": 3, "features": {"x": 3.0}, "label": 4.0}'),
    ])
    summary = tmp_path / "summary.json"
    env = service_env(
        service__transport="kafka", service__log_level="DEBUG", service__max_events="5",
        service__idle_timeout_s="30", labels__early_max_age_events="1",
        kafka__bootstrap_servers=kafka_bootstrap, kafka__group_id=f"g-{uuid.uuid4().hex[:8]}",
        kafka__events_topic=topics["events"], kafka__predictions_topic=topics["predictions"],
        kafka__dead_letter_topic=topics["dlq"], kafka__learn_dead_letter_topic=topics["learn"],
        kafka__alerts_topic=topics["alerts"], kafka__metrics_topic=topics["metrics"],
        kafka__sasl_mechanism="PLAIN", kafka__sasl_username="svc",
        kafka__sasl_password_env="KAFKA_PASSWORD_FOR_TEST",
    )
    env["KAFKA_PASSWORD_FOR_TEST"] = SECRET
    # The broker is PLAINTEXT: the SASL options are built and handed to the client, unused.
    result = subprocess.run(
        service_command("run", "--summary-json", str(summary)), env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr  # the most talkative level was on
    assert SECRET not in result.stderr + result.stdout
    assert SECRET.encode() not in summary.read_bytes()
    outputs = [
        consume_all(kafka_bootstrap, topics["predictions"], 3, timeout_s=30),
        consume_all(kafka_bootstrap, topics["dlq"], 1, timeout_s=30),
        consume_all(kafka_bootstrap, topics["learn"], 1, timeout_s=30),
    ]
    assert [len(rows) for rows in outputs] == [3, 1, 1]
    for rows in outputs:
        for _p, _o, key, value, headers in rows:
            blob = (key or b"") + value + b"".join(k.encode() + v for k, v in headers)
            assert SECRET.encode() not in blob
    result_summary = orjson.loads(summary.read_bytes())
    assert (result_summary["records"], result_summary["labels_expired"]) == (5, 1)


@pytest.mark.parametrize("command", [("run",), ("check",), ("checkpoints", "list")])
def test_unset_redis_password_variable_exits_2_before_any_connection(
    command: tuple[str, ...],
) -> None:
    # a closed port: were the variable ignored, the worker would retry Redis for
    # checkpoint.restore_timeout_s and then exit 1
    proc = cli(
        *command, timeout=30, checkpoint__store="redis",
        checkpoint__redis_url=f"redis://127.0.0.1:{closed_port()}/0",
        checkpoint__redis_password_env="NOT_SET_ANYWHERE",
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "checkpoint.redis_password_env" in lines[0]
    assert "'NOT_SET_ANYWHERE', which is not set" in lines[0]


def test_check_refuses_what_run_would_refuse_of_the_checkpoint_store(
    redis_url: str, tmp_path: Path,
) -> None:
    # the runbook's "check -c from the same container" said ok to a worker that could not start
    redis = {"checkpoint__store": "redis", "checkpoint__key_prefix": "check-only"}
    down = cli("check", **redis, checkpoint__redis_url=f"redis://127.0.0.1:{closed_port()}/0",
               checkpoint_key="0123456789abcdef0123")
    assert down.returncode == 1, down.stderr
    assert "cannot reach Redis at redis://127.0.0.1:" in down.stderr
    assert "Traceback" not in down.stderr
    unsigned = cli("check", **redis, checkpoint__redis_url=redis_url)
    assert unsigned.returncode == 2, unsigned.stderr
    assert "needs a signing key" in unsigned.stderr
    ok = cli("check", **redis, checkpoint__redis_url=redis_url,
             checkpoint_key="0123456789abcdef0123")
    assert ok.returncode == 0, ok.stderr
    assert f"checkpoints signed, Redis reachable at {redis_url}" in ok.stdout
    (tmp_path / "file").write_text("not a folder")
    local = {"checkpoint__store": "local", "checkpoint_key": "0123456789abcdef0123"}
    blocked = cli("check", **local, checkpoint__directory=str(tmp_path / "file" / "ck"))
    assert blocked.returncode == 1, blocked.stderr
    assert f"checkpoint folder {tmp_path / 'file' / 'ck'}" in blocked.stderr
    fine = cli("check", **local, checkpoint__directory=str(tmp_path / "new" / "ck"))
    assert fine.returncode == 0, fine.stderr
    assert not (tmp_path / "new").exists()  # check writes nothing


def test_replay_without_files_and_no_broker_is_one_line_saying_why_it_needed_one() -> None:
    # on the local transport too: it printed the Kafka client's retries, line after line
    proc = cli("replay", "--quiet", timeout=30, kafka__bootstrap_servers=f"127.0.0.1:{closed_port()}",
               kafka__connect_timeout_s="1")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "cannot reach Kafka at" in lines[0]
    assert "replay without FILE reads kafka.events_topic" in lines[0]
