"""A private Kafka broker or Redis server for tests that stop and restart one mid-stream.

The shared servers (``STREAM_LEARNER_TEST_KAFKA`` / ``STREAM_LEARNER_TEST_REDIS``)
are used by every other test, so they are never restarted. A
:class:`PrivateServer` runs ``scripts/servers.sh start|stop kafka|redis`` with
its own ports and state folder (a tmp dir), and reuses the Kafka jars already
downloaded for the shared broker (``STREAM_LEARNER_KAFKA_LIBS``, else the
folder next to ``STREAM_LEARNER_TEST_KAFKA_PID_FILE``, else this tree's
``.servers``); only when none is complete does ``servers.sh`` fetch them.

Restarting is SIGTERM, then start again with the same data folder: no
re-format, so topics, committed offsets and Redis keys survive.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.support.service import ROOT

__all__ = ["PrivateServer", "kafka_libs"]

SCRIPT = ROOT / "scripts" / "servers.sh"


def kafka_libs() -> Path | None:
    """A folder of complete Kafka jars to reuse, if there is one."""
    candidates = []
    if os.environ.get("STREAM_LEARNER_KAFKA_LIBS"):
        candidates.append(Path(os.environ["STREAM_LEARNER_KAFKA_LIBS"]))
    if os.environ.get("STREAM_LEARNER_TEST_KAFKA_PID_FILE"):
        candidates.append(Path(os.environ["STREAM_LEARNER_TEST_KAFKA_PID_FILE"]).parent / "libs")
    candidates.append(ROOT / ".servers" / "kafka" / "libs")
    return next((c for c in candidates if (c / ".complete").is_file()), None)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there, else a port the OS picks."""
    if _port_free(preferred):
        return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    """True when something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class PrivateServer:
    """One private ``kafka`` or ``redis`` server driven by ``scripts/servers.sh``."""

    def __init__(self, kind: str, state: Path) -> None:
        assert kind in ("kafka", "redis")
        self.kind = kind
        self.state = state
        self.env = {
            k: v for k, v in os.environ.items()
            if not k.startswith("STREAM_LEARNER_TEST") and k != "STREAM_LEARNER_KAFKA_LIBS"
        }
        self.env["STREAM_LEARNER_SERVERS_DIR"] = str(state)
        if kind == "kafka":
            self.port = free_port(29092)
            controller = free_port(29093)
            if controller == self.port:
                controller = free_port(0)
            self.env["STREAM_LEARNER_KAFKA_PORT"] = str(self.port)
            self.env["STREAM_LEARNER_CONTROLLER_PORT"] = str(controller)
            libs = kafka_libs()
            if libs is not None:
                self.env["STREAM_LEARNER_KAFKA_LIBS"] = str(libs)
            self.address = f"127.0.0.1:{self.port}"
        else:
            self.port = free_port(26379)
            self.env["STREAM_LEARNER_REDIS_PORT"] = str(self.port)
            self.address = f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available(kind: str) -> str | None:
        """Why this kind of server cannot be started here (``None``: it can)."""
        needed = ["java"] if kind == "kafka" else ["redis-server"]
        if kind == "kafka" and kafka_libs() is None:
            needed.append("mvn")
        missing = [tool for tool in needed if shutil.which(tool) is None]
        return f"{', '.join(missing)} not installed" if missing else None

    def _script(self, action: str) -> None:
        proc = subprocess.run(
            ["bash", str(SCRIPT), action, self.kind], env=self.env, capture_output=True,
            text=True, timeout=600, check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"servers.sh {action} {self.kind} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
            )

    def start(self) -> None:
        """Start (the first time: format) and wait until it answers."""
        self._script("start")

    def stop(self) -> None:
        """SIGTERM and wait until the process is gone."""
        self._script("stop")
        deadline = time.monotonic() + 30
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def abort_open_transactions(self, topics: dict[str, int]) -> list[str]:
        """What docs/state.md tells an operator to do about a transaction left open.

        ``kafka-transactions.sh describe-producers`` on each partition of ``topics``
        (name -> partitions), and ``abort`` at each open transaction's start
        offset. Returns the partitions aborted, as ``topic[partition]@offset``.
        """
        assert self.kind == "kafka"
        aborted = []
        for topic, count in topics.items():
            for partition in range(count):
                where = ["--topic", topic, "--partition", str(partition)]
                for start in self._open_transactions(where):
                    aborted.append(f"{topic}[{partition}]@{start}" + self._abort(where, start))
        return aborted

    def _open_transactions(self, where: list[str]) -> set[str]:
        """Start offsets of the transactions open on one partition (``describe-producers``)."""
        rows = self._transactions("describe-producers", *where).splitlines()[1:]
        return {cols[-1] for row in rows if (cols := row.split()) and cols[-1].isdigit()}

    def _abort(self, where: list[str], start: str) -> str:
        """``abort`` one open transaction, as an operator would (docs/state.md): when the
        command fails, describe again; the transaction must have ended meanwhile (no longer
        listed), else the failure stands."""
        try:
            self._transactions("abort", *where, "--start-offset", start)
            return ""
        except subprocess.CalledProcessError as exc:
            if start in self._open_transactions(where):
                raise AssertionError(f"abort {where} at {start} failed and the transaction is "
                                     f"still open:\n{exc.stdout}\n{exc.stderr}") from exc
            return " (it ended before the abort)"

    def _transactions(self, *args: str) -> str:
        libs = self.env.get("STREAM_LEARNER_KAFKA_LIBS") or str(self.state / "kafka" / "libs")
        proc = subprocess.run(
            ["java", "-cp", f"{libs}/*", "org.apache.kafka.tools.TransactionsCommand",
             "--bootstrap-server", self.address, *args],
            capture_output=True, text=True, timeout=120, check=True,
        )
        return proc.stdout

    @property
    def up(self) -> bool:
        """True when it accepts connections."""
        return port_open(self.port)
