"""The command line: the benchmark's main role, or one of its subprocess roles."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tomllib
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from benchmarking.clients import harness_client
from benchmarking.harness import Bench, checkpoint_overrides
from benchmarking.measure import (
    measure_big_restore,
    measure_checkpoints,
    measure_edges,
    measure_gap,
    measure_peers,
    profile_linear,
)
from benchmarking.report import DOC, machine, render, render_gap, write_doc
from benchmarking.results import CaseResult, Floor
from benchmarking.workers import edges_main, naive_main, producer_main, quix_main, worker_main
from benchmarking.workload import (
    CASES,
    CLIENTS,
    NAIVE,
    QUIX,
    ROOT,
    Case,
    Plan,
    bare_loop,
    encoded_events,
    log,
    samples,
    service_support,
)

#: Rounds of the peers' latency phases: a p99 over one 6-second phase on the shared
#: machine moved by several milliseconds between identical runs (docs/benchmarks.md).
LATENCY_ROUNDS = 3

DESCRIPTION = (
    "Benchmark: River's ceiling, the service's throughput, latency and cost, on the real broker."
)


def run(args: argparse.Namespace) -> int:
    """The benchmark's main role."""
    plan = Plan.make(args.quick)
    if args.events:
        plan = dataclasses.replace(plan, n_events=args.events)
    cases = [c for c in CASES if c.name in args.models]
    pool = samples(plan.n_events)
    info = machine()
    if args.bare_only:
        return _bare_only(cases, pool)
    if not args.bootstrap:
        log("no broker: set STREAM_LEARNER_TEST_KAFKA or pass --bootstrap")
        return 2
    bench = Bench(args, plan)
    info["client of the load producer and latency consumer"] = bench.harness
    try:
        if args.gap:
            print(render_gap(measure_gap(bench, args.gap)))
            return 0
        if args.profile:
            profile_linear(bench, encoded_events(pool, True), args.profiler, args.profile_top,
                           sys.stdout)
            return 0
        results = [_measure_case(bench, case, pool, args) for case in cases]
        peers = None
        if "peers" not in args.skip:
            rounds = args.latency_rounds or (1 if args.quick else LATENCY_ROUNDS)
            peers = measure_peers(bench, pool, args.clients, args.skip, rounds)
        edges = measure_edges(bench, pool, args.skip)
        big = None if "checkpoint" in args.skip else measure_big_restore(args.redis)
        floor = _measure_floor(bench, pool, args.skip)
    finally:
        bench.close()
    info["load average at end (1, 5, 15 min)"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    block = render(results, floor, info, plan, args.quick, edges, big, peers)
    print(block)
    if not args.no_write:
        write_doc(block)
        log(f"wrote {DOC.relative_to(ROOT)}")
    return 0


def _bare_only(cases: Sequence[Case], pool: Sequence[tuple[dict[str, Any], Any]]) -> int:
    """``--bare-only``: River's bare loop of each case, one line each; no broker."""
    for case in cases:
        bare = bare_loop(case, encoded_events(pool, case.labelled))
        print(f"{case.name}: bare {bare.events_per_s:,.0f} events/s, "
              f"p99 {bare.p99_us:,.1f} µs, model {bare.model_kib:,.0f} KiB")
    return 0


def _measure_case(
    bench: Bench, case: Case, pool: Sequence[tuple[dict[str, Any], Any]],
    args: argparse.Namespace,
) -> CaseResult:
    """Bare loop, service maximum, latency and checkpoints of one model."""
    values = encoded_events(pool, case.labelled)
    log(f"{case.name}: bare River loop over {len(values):,} events")
    result = CaseResult(case, bare_loop(case, values))
    result.pending = service_support(case)
    if result.pending:
        return result
    log(f"{case.name}: service at maximum throughput")
    result.max = bench.max_throughput(case, values, f"{case.name}-max")
    # The ceiling is the better of two bare runs around the service run, so that
    # a busy moment during one bare run cannot flatter the ratio.
    again = bare_loop(case, values)
    if again.events_per_s > result.bare.events_per_s:
        result.bare = again
    threads = ", ".join(f"{name} {cpu:.2f} s" for name, cpu in
                        sorted(result.max.threads_cpu_s.items(), key=lambda kv: -kv[1]))
    log(f"{case.name}: {result.max.events_per_s:,.0f} events/s, "
        f"{result.max.cpu_s_per_m:,.1f} CPU s per million events (threads: {threads})")
    if "latency" not in args.skip:
        log(f"{case.name}: latency at fixed rates")
        result.latency = bench.latency(case, result.max.events_per_s)
    overrides = checkpoint_overrides(args.redis, bench.run_id)
    if isinstance(overrides, str):
        result.checkpoint = result.restore = overrides
    elif case.name in ("linear", "tree") and "checkpoint" not in args.skip:
        log(f"{case.name}: checkpoints every second, then a restore")
        measure_checkpoints(bench, case, values, overrides, result)
    return result


def _measure_floor(
    bench: Bench, pool: Sequence[tuple[dict[str, Any], Any]], skip: Sequence[str],
) -> Floor | str:
    """Kafka's own latency floor for records of the events' median size, unless skipped."""
    if "floor" in skip:
        return "skipped"
    log("Kafka's end-to-end latency floor")
    sizes = sorted(len(v) for v in encoded_events(pool[:1000], True))
    return bench.floor(sizes[len(sizes) // 2])


def parse_sets(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``SECTION.KEY=VALUE`` items as nested settings overrides.

    Examples
    --------
    >>> parse_sets(["kafka.linger_ms=50", "service.batch_size=1000", "kafka.client_id=x"])
    {'kafka': {'linger_ms': 50, 'client_id': 'x'}, 'service': {'batch_size': 1000}}
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        name, equals, raw = item.partition("=")
        section, _dot, key = name.partition(".")
        if not (section and key and equals):
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE")
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(section, {})[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the benchmark, or one of its subprocess roles."""
    args = build_parser().parse_args(argv)
    args.overrides = parse_sets(args.set)
    if args.role in ROLES:
        ROLES[args.role](orjson.loads(args.config))
        return 0
    if args.role == "producer":
        producer_main(args.bootstrap, harness_client(args.harness))
        return 0
    return run(args)


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "worker": worker_main, "edges": edges_main, QUIX: quix_main, NAIVE: naive_main,
}
"""The subprocess roles that read their configuration from ``--config`` (JSON)."""


def build_parser() -> argparse.ArgumentParser:
    """The command line: the documented options and the hidden ``--role``/``--config``."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--quick", action="store_true", help="smaller samples (about 1 minute)")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    parser.add_argument("--bare-only", action="store_true", help="River's bare loop only")
    parser.add_argument("--profile", action="store_true", help="profile the linear worker")
    parser.add_argument("--profiler", choices=["cprofile", "py-spy"], default="cprofile",
                        help="with --profile: cProfile (loop thread) or py-spy (every thread)")
    parser.add_argument("--profile-top", type=int, default=30, help="functions to list")
    parser.add_argument("--models", nargs="+", default=[c.name for c in CASES],
                        choices=[c.name for c in CASES])
    parser.add_argument("--bootstrap", default=os.environ.get("STREAM_LEARNER_TEST_KAFKA"))
    parser.add_argument("--redis", default=os.environ.get("STREAM_LEARNER_TEST_REDIS"))
    parser.add_argument("--kafka-libs", help="folder of the Kafka jars (kafka-tools included)")
    parser.add_argument("--events", type=int, help="events of the max-throughput runs")
    parser.add_argument("--skip", nargs="+", default=[],
                        choices=["latency", "floor", "checkpoint", "edges", "peers"],
                        help="leave parts out (for quick experiments)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a worker setting, e.g. kafka.linger_ms=50 (value read as TOML)")
    parser.add_argument("--gap", type=int, default=0, metavar="ROUNDS",
                        help="only the throughput-gap experiment (GAP_VARIANTS), this many "
                        "interleaved rounds; prints a table, writes nothing")
    parser.add_argument("--latency-rounds", type=int, default=0, metavar="N",
                        help="rounds of the peers' latency phases, the systems taking turns; "
                        f"the figures are medians over the rounds (default {LATENCY_ROUNDS}, "
                        "1 with --quick)")
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS),
                        help="Kafka clients of the service in the peers comparison; a client "
                        "the installed service refuses is skipped (default: both)")
    parser.add_argument("--role", choices=["main", "worker", "edges", "producer", QUIX, NAIVE],
                        default="main", help=argparse.SUPPRESS)
    parser.add_argument(
        "--harness", choices=["auto", "kafka-python", "confluent-kafka"], default="auto",
        help="client of the load producer and latency consumer (auto: confluent-kafka when "
        "installed); the worker always uses the service's own client",
    )
    parser.add_argument("--trace", metavar="DIR",
                        help="each service worker writes the wall time of every poll, batch, "
                        "commit step, flush and checkpoint to DIR/<group>.jsonl")
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser
