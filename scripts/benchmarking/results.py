"""What one run measures, as plain values."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from benchmarking.workload import Bare, Case


@dataclass
class MaxRun:
    """The service at maximum throughput."""

    events_per_s: float
    cpu_s_per_m: float
    rss_mib: float
    records: int
    elapsed_s: float
    threads_cpu_s: dict[str, float] = field(default_factory=dict)
    state_metrics: dict[str, float] = field(default_factory=dict)
    #: from the call of ``Service.run`` (group join, restore) to the last commit
    since_run_s: float = math.nan
    #: from the start of the worker process (imports, clients, group join) to the last commit
    since_spawn_s: float = math.nan

    def state(self, name: str) -> float:
        """Sum of the state samples called ``stream_learner_<name>`` (any labels)."""
        full = f"stream_learner_{name}"
        return sum(v for k, v in self.state_metrics.items() if k.split("{")[0] == full)

    def state_max(self, name: str) -> float:
        """Largest of the state samples called ``stream_learner_<name>``."""
        full = f"stream_learner_{name}"
        return max((v for k, v in self.state_metrics.items() if k.split("{")[0] == full),
                   default=0.0)


@dataclass
class LatencyRun:
    """End-to-end latency at one constant input rate."""

    load: float
    rate: float
    received: int
    sent: int
    p50_ms: float
    p99_ms: float
    p999_ms: float
    late_share: float
    to_send_p50_ms: float = math.nan
    to_send_p99_ms: float = math.nan


@dataclass
class Floor:
    """Kafka's own one-hop end-to-end latency."""

    p50_ms: float
    p99_ms: float
    p999_ms: float
    avg_ms: float
    records: int
    record_bytes: int


@dataclass
class Edges:
    """The worker's Kafka edges alone: poll, one output per record, flush, commit."""

    client: str
    events_per_s: float
    cpu_us: float

    @property
    def wall_us(self) -> float:
        """Wall time per event."""
        return 1e6 / self.events_per_s


@dataclass
class BigRestore:
    """Restore of a state of at least 1 MiB, as ``scripts/bench_checkpoint.py`` measures it."""

    model: str
    events: int
    kib: float
    store: str
    restore_ms: float
    repeat: int


@dataclass
class CaseResult:
    """Everything measured for one model."""

    case: Case
    bare: Bare
    pending: str | None = None
    max: MaxRun | None = None
    latency: list[LatencyRun] = field(default_factory=list)
    checkpoint: MaxRun | str | None = None
    restore: MaxRun | str | None = None


@dataclass
class Peer:
    """One system of the peers comparison; ``note`` says why it was not measured.

    ``latency`` holds one run per rate and round: the systems take turns, round
    by round, so a slow moment of the shared machine falls on one round of each.
    """

    name: str
    max: MaxRun | None = None
    latency: list[LatencyRun] = field(default_factory=list)
    note: str | None = None

    def rounds(self, rate: float) -> list[LatencyRun]:
        """The latency runs at ``rate``, one per round, in order."""
        return [r for r in self.latency if r.rate == rate]

    def at(self, rate: float) -> LatencyRun | None:
        """The latency at ``rate`` over the rounds: median percentiles, records summed.

        Examples
        --------
        >>> runs = [LatencyRun(0.0, 2000.0, 10, 10, p50, p99, 20.0, 0.0)
        ...         for p50, p99 in ((9.0, 14.0), (8.0, 19.0), (10.0, 15.0))]
        >>> peer = Peer("x", latency=runs)
        >>> m = peer.at(2000.0)
        >>> m.p50_ms, m.p99_ms, m.received, peer.at(5000.0)
        (9.0, 15.0, 30, None)
        """
        runs = self.rounds(rate)
        if not runs:
            return None

        def median(name: str) -> float:
            return float(statistics.median(getattr(r, name) for r in runs))

        return LatencyRun(
            runs[0].load, rate, sum(r.received for r in runs), sum(r.sent for r in runs),
            median("p50_ms"), median("p99_ms"), median("p999_ms"), median("late_share"),
            median("to_send_p50_ms"), median("to_send_p99_ms"),
        )


@dataclass
class Peers:
    """The service (one row per Kafka client), the Quix Streams app and the naive loop."""

    events: int
    checkpoints: str
    systems: dict[str, Peer] = field(default_factory=dict)
    #: seconds of each latency phase (one rate, one round)
    phase_s: float = 6.0
