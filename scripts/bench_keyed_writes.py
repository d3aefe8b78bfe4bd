"""What saving changed models costs a fleet: the scale run with its entry writes replaced.

    python scripts/bench_keyed_writes.py [--sizes 100,100000] [--store redis|local]
        [--rounds 3] [--redis URL] [--min-events 100000] [--ways entries,waited,...]

An analysis of the keyed-state target of docs/benchmarks.md (100,000 sensors at
0.6x the rate of 100), not a measure of the service as shipped. Each run is
the worker of ``scripts/bench_scale.py`` (the real service, ``model.scope =
"key"``, 10 Friedman events per sensor, checkpoints every second, every model
in memory: ``max_resident`` 200,000), in a fresh process, with one of six
ways of writing the models changed since the last checkpoint:

``entries``
    the service as shipped: each changed model encoded and signed as an entry,
    one entry per model written with the checkpoint (on Redis, by a background
    thread while the loop serves on: ``checkpoint.write_behind``);
``waited``
    the same entries, the loop waiting for each write
    (``checkpoint.write_behind = false``; on the local store, which always
    writes at once, the same as ``entries``);
``records``
    each changed model written as a signed record of :data:`RECORD_BYTES`
    bytes instead of its entry, in the same atomic checkpoint write: what a
    per-key changelog of inputs (an event's record, about that size, instead
    of the model's state) would cost at best, with nothing spent on building
    the record and nothing on replaying it;
``nothing``
    no per-key write at all (the checkpoint writes its head only): what the
    service costs on this fleet when saving models is free;
``encoded``
    each changed model encoded and signed as shipped (right after its event
    or at the checkpoint), then dropped: the checkpoint writes its head only.
    Against ``entries``, what the store's write costs; against ``nothing``,
    what encoding costs;
``forked``
    the encoding moved out of the loop, as Redis saves its snapshots: at each
    checkpoint the worker forks, and the child (a copy-on-write snapshot of
    every model) encodes and signs the changed ones and hands the entries
    back through a pipe, read by a thread of the worker; the next checkpoint
    waits for the previous child. The entries are then dropped (the
    checkpoint writes its head only), so this is a lower bound of that
    design's cost. Its CPU per event includes the children's CPU.

A ``records``, ``nothing``, ``encoded`` or ``forked`` run leaves a store from
which no model can be restored: it measures cost, nothing else. Runs are
interleaved (each round runs every way at every size), and the table gives
each way's median CPU time per event (``time.process_time``, steadier than
wall time on a shared machine; with the children's for ``forked``) and
events/s at each size, and their ratios, largest fleet against smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

#: the size of a ``records`` write per changed model: about one event's JSON record
RECORD_BYTES = 200

#: the ways of writing changed models, in the order of the table
WAYS = ("entries", "waited", "records", "nothing", "encoded", "forked")

#: every model in memory: nothing is parked or loaded, only checkpoints write
MAX_RESIDENT = 200_000


def replace_writes(way: str) -> None:
    """Make the keyed scope write ``way`` (see the module) in this process."""
    from stream_learner.scopes import KeyedModels

    if way in ("entries", "waited"):
        return
    if way == "encoded":
        _encode_and_drop()
        return
    if way == "forked":
        _encode_in_a_child()
        return
    record = b"r" * RECORD_BYTES if way == "records" else None

    def changes(self: KeyedModels) -> tuple[dict[str, bytes], list[str]]:
        self._fresh = None
        written = {} if record is None else dict.fromkeys(self._dirty, record)
        return written, sorted(self._parked_dirty)

    KeyedModels.changes = changes  # type: ignore[method-assign]
    KeyedModels._encode_fresh = _no_entry_ahead  # type: ignore[method-assign]


def _no_entry_ahead(self: Any) -> None:
    """No entry written ahead, right after its event (the loop makes none in these ways)."""
    self._fresh = None


def _envelopes(spec_hash: str) -> Any:
    """The worker's entry signer (the scale benchmark's key)."""
    import bench_scale

    from stream_learner.checkpoint import EnvelopeCodec

    return EnvelopeCodec(bench_scale.KEY, spec_hash)


def _encode_and_drop() -> None:
    """``encoded``: the shipped encoding and signing, nothing written but the head."""
    from stream_learner.scopes import KeyedModels

    shipped = KeyedModels.changes

    def changes(self: KeyedModels) -> tuple[dict[str, bytes], list[str]]:
        payloads, promote = shipped(self)
        seal = _envelopes(self.spec.config_hash).seal_entry
        for key, payload in payloads.items():
            seal("shard", key, payload)
        return {}, promote

    KeyedModels.changes = changes  # type: ignore[method-assign]


#: the children of a ``forked`` run not yet waited for, and the threads reading their pipes
_CHILDREN: list[tuple[int, threading.Thread]] = []


def _encode_in_a_child() -> None:
    """``forked``: each checkpoint's changed models encoded and signed by a forked child."""
    from stream_learner.scopes import KeyedModels

    def changes(self: KeyedModels) -> tuple[dict[str, bytes], list[str]]:
        self._fresh = None
        _wait_for_children()  # one in flight, as one checkpoint write per shard
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: encode the snapshot, hand the entries back, leave
            status = 1  # a failure is the exit status, which the worker checks
            try:
                os.close(read)
                seal = _envelopes(self.spec.config_hash).seal_entry
                encode, resident = self.codec.encode, self._resident
                entries = {k: seal("shard", k, encode(resident[k])) for k in self._dirty}
                with os.fdopen(write, "wb") as pipe:
                    pipe.write(pickle.dumps(entries, protocol=pickle.HIGHEST_PROTOCOL))
                status = 0
            finally:
                os._exit(status)
        os.close(write)

        def receive() -> None:
            with os.fdopen(read, "rb") as pipe:
                received = pipe.read()
            if received:  # else the child failed: its status says so
                pickle.loads(received)

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        _CHILDREN.append((pid, thread))
        return {}, sorted(self._parked_dirty)

    KeyedModels.changes = changes  # type: ignore[method-assign]
    KeyedModels._encode_fresh = _no_entry_ahead  # type: ignore[method-assign]  # the child encodes


def _wait_for_children() -> None:
    """Wait for the children of a ``forked`` run (a failed one stops the run)."""
    while _CHILDREN:
        pid, thread = _CHILDREN.pop()
        thread.join()
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"the child encoding a checkpoint failed (status {status})")


def child(way: str, sensors: int, store: str, where: str, min_events: int) -> dict[str, Any]:
    """One run of the scale worker with ``way`` (in this process)."""
    import bench_scale

    replace_writes(way)
    args = argparse.Namespace(
        sensors=sensors, store=store, where=where, events_per_sensor=10,
        max_resident=MAX_RESIDENT, every_seconds=1.0, min_events=min_events,
        restart=False, gc_old_threshold=0, blocking_writes=way == "waited")
    result: dict[str, Any] = bench_scale.worker(args)
    _wait_for_children()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    children_us = (children.ru_utime + children.ru_stime) / max(1, result["events"]) * 1e6
    result["children_cpu_us_per_event"] = children_us
    result["cpu_us_per_event"] += children_us
    return result


def run(way: str, sensors: int, store: str, redis_url: str, min_events: int) -> dict[str, Any]:
    """One run in a fresh process, on a fresh store (dropped after)."""
    import bench_scale

    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"bench-writes-{uuid.uuid4().hex[:8]}"
        where = tmp if store == "local" else f"{redis_url}#{prefix}"
        cmd = [sys.executable, __file__, "--child", way, "--sensors", str(sensors),
               "--store", store, "--where", where, "--min-events", str(min_events)]
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        finally:
            if store == "redis":
                bench_scale._drop_redis(redis_url, prefix)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(way=way, sensors=sensors, store=store)
    return result


def table(results: Sequence[dict[str, Any]], sizes: Sequence[int], ways: Sequence[str]) -> str:
    """Medians per way and size, and the ratios of the largest fleet to the smallest."""
    small, large = sizes[0], sizes[-1]
    head = (f"| writes of changed models | CPU / event at {small:,} | at {large:,} | ratio "
            f"| events/s at {small:,} | at {large:,} | ratio | bytes / checkpoint at {large:,} |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for way in ways:
        rows = {n: [r for r in results if r["way"] == way and r["sensors"] == n] for n in sizes}
        cpu = {n: statistics.median(r["cpu_us_per_event"] for r in rows[n]) for n in sizes}
        rate = {n: statistics.median(r["events_per_s"] for r in rows[n]) for n in sizes}
        written = statistics.median(r["bytes_per_checkpoint"] for r in rows[large])
        lines.append(
            f"| {way} | {cpu[small]:.0f} µs | {cpu[large]:.0f} µs | {cpu[small] / cpu[large]:.2f} "
            f"| {rate[small]:,.0f} | {rate[large]:,.0f} | {rate[large] / rate[small]:.2f} "
            f"| {written / 1024:,.0f} KiB |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: sorted(int(v) for v in s.split(",")),
                        default=[100, 100_000])
    parser.add_argument("--store", choices=["redis", "local"], default="redis")
    parser.add_argument("--redis", default=os.environ.get("STREAM_LEARNER_TEST_REDIS", ""))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-events", type=int, default=100_000,
                        help="events per run at least (small fleets get more per sensor)")
    parser.add_argument("--ways", type=lambda s: s.split(","), default=list(WAYS),
                        help=f"which ways to run (default: all of {','.join(WAYS)})")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--sensors", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--where", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.sensors, args.store, args.where,
                               args.min_events)))
        return 0
    if args.store == "redis" and not args.redis:
        parser.error("--store redis needs --redis URL (or STREAM_LEARNER_TEST_REDIS)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not args.ways or any(way not in WAYS for way in args.ways):
        parser.error(f"--ways: a comma-separated choice of {', '.join(WAYS)}")
    if any(n > MAX_RESIDENT for n in args.sizes):
        parser.error(f"every model stays in memory: at most {MAX_RESIDENT:,} sensors")
    results = []
    for round_ in range(1, args.rounds + 1):
        for way in args.ways:
            for sensors in args.sizes:
                result = run(way, sensors, args.store, args.redis, args.min_events)
                results.append(result)
                print(f"round {round_}: {way} {sensors:,} sensors: "
                      f"{result['cpu_us_per_event']:.1f} µs, "
                      f"{result['events_per_s']:,.0f} events/s", file=sys.stderr, flush=True)
    print(table(results, args.sizes, args.ways))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
