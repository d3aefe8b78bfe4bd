"""`stream-learner check --live`: the health command a container healthcheck runs."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from stream_learner.cli import main
from stream_learner.health import probe
from stream_learner.metrics import Metrics, MetricsServer


@pytest.fixture(scope="module")
def endpoint() -> Iterator[tuple[Metrics, str]]:
    """A metrics endpoint as a worker serves it, on a free loopback port."""
    metrics = Metrics()
    server = MetricsServer(metrics, "127.0.0.1", 0).start()
    yield metrics, f"http://127.0.0.1:{server.port}"
    server.close()


@pytest.fixture
def worker(endpoint: tuple[Metrics, str]) -> tuple[Metrics, str]:
    """The endpoint of a worker that is not ready yet."""
    endpoint[0].set_ready(False)
    return endpoint


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ready_worker_passes(worker: tuple[Metrics, str]) -> None:
    metrics, url = worker
    metrics.set_ready(True)
    result = probe(url)
    assert result.ok
    assert result.message == f"ready: {url}"


def test_worker_that_is_not_ready_fails(worker: tuple[Metrics, str]) -> None:
    _, url = worker
    result = probe(url)
    assert not result.ok
    assert result.message == f"not ready: {url}/readyz answered 503 (not ready)"


def test_nothing_listening_fails_with_the_address(closed_port: int) -> None:
    result = probe(f"127.0.0.1:{closed_port}", timeout_s=1.0)
    assert not result.ok
    assert result.message.startswith(f"unreachable: http://127.0.0.1:{closed_port}/healthz: ")


def test_a_server_that_never_answers_times_out() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        result = probe(f"http://127.0.0.1:{port}", timeout_s=0.2)
    assert not result.ok
    assert result.message == f"unreachable: http://127.0.0.1:{port}/healthz: timed out"


def test_cli_exit_codes_and_one_line_messages(
    worker: tuple[Metrics, str], capsys: pytest.CaptureFixture[str]
) -> None:
    metrics, url = worker
    assert main(["check", "--live", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"stream-learner: not ready: {url}/readyz answered 503 (not ready)\n"

    metrics.set_ready(True)
    assert main(["check", "--live", url + "/"]) == 0
    out, err = capsys.readouterr()
    assert out == f"ready: {url}\n"


def test_cli_live_without_url_uses_the_metrics_settings(
    worker: tuple[Metrics, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics, url = worker
    metrics.set_ready(True)
    port = url.rsplit(":", 1)[1]
    monkeypatch.setenv("STREAM_LEARNER_METRICS__HOST", "0.0.0.0")
    monkeypatch.setenv("STREAM_LEARNER_METRICS__PORT", port)
    assert main(["check", "--live"]) == 0
    assert capsys.readouterr().out == f"ready: http://127.0.0.1:{port}\n"


def test_plain_check_still_validates_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 0
    assert capsys.readouterr().out == (
        "ok: settings valid, model builds, sample record river:WaterFlow[0] scored and learned\n"
    )
