"""Who used the machine's CPU during a latency phase: the worker, the broker, the harness.

Read from ``/proc`` (Linux), so a phase's line in the log says how busy the
shared cores were and which process took them; elsewhere nothing is measured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

PROC = Path("/proc")


def process_cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of process ``pid`` (every thread), None if unknown."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the machine since boot, every core; None if unknown."""
    try:
        values = [int(v) for v in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = values[3] + values[4]  # idle and iowait
    return (sum(values) - idle) / tick, sum(values) / tick


def broker_pid() -> int | None:
    """The local Kafka broker's process (a JVM running ``kafka.Kafka``), if there is one."""
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"java" in cmdline and b"kafka.Kafka" in cmdline:
            return int(entry.name)
    return None


class CpuShare:
    """CPU used by named processes (and by the whole machine) between two instants.

    Parameters
    ----------
    pids
        Role name -> process id; a role whose process is gone is left out.
    """

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {role: pid for role, pid in pids.items() if pid is not None}
        self.start()

    def start(self) -> None:
        """Begin a measurement."""
        self._t0 = time.monotonic()
        self._cpu0 = {role: process_cpu_s(pid) for role, pid in self.pids.items()}
        self._machine0 = machine_busy_s()

    def cores(self) -> dict[str, float]:
        """Cores used per role since :meth:`start` (``machine``: every process, every core)."""
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        out: dict[str, float] = {}
        for role, pid in self.pids.items():
            before, after = self._cpu0.get(role), process_cpu_s(pid)
            if before is not None and after is not None:
                out[role] = (after - before) / elapsed
        now = machine_busy_s()
        if self._machine0 is not None and now is not None:
            out["machine"] = (now[0] - self._machine0[0]) / elapsed
        return out

    def line(self) -> str:
        """The cores of :meth:`cores` as one log line (empty when nothing was measured).

        Examples
        --------
        >>> share = CpuShare({"this process": os.getpid()})
        >>> line = share.line()
        >>> line == "" or line.startswith("CPU, cores:")
        True
        """
        cores = self.cores()
        if not cores:
            return ""
        parts = ", ".join(f"{role} {value:.2f}" for role, value in cores.items())
        return f"CPU, cores: {parts} (of {os.cpu_count()})"
