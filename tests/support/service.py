"""Run this source tree's CLI in a subprocess, as the tests' services run."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

#: The source tree (the folder holding ``stream_learner/`` and ``tests/``).
ROOT = Path(__file__).resolve().parents[2]

#: The Kafka clients every real-broker test of the service runs on (``kafka.client``).
KAFKA_CLIENTS = ("kafka-python", "confluent-kafka")

#: Set by the ``kafka_client`` fixture: the client the service under test uses.
CLIENT_VARIABLE = "STREAM_LEARNER_TEST_KAFKA_CLIENT"

def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a fresh module, registered under ``<name>_script`` (its
    dataclasses look their module up by name)."""
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def one_line_error(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a failed command (no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


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
