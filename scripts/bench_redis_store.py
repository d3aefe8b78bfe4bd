#!/usr/bin/env python3
"""What the Redis store's checkpoint writes of per-key entries cost, and what the undo part costs.

The Redis checkpoint store (:class:`stream_learner.stores.RedisStore`) writes a
keyed checkpoint as one Lua script: for each changed entry it reads the old
one, writes it to the checkpoint's undo record (so that ``checkpoints
rollback`` can put it back), then writes the new one. On a shard of ``--keys``
entries of ``--entry-bytes``, checkpoints of ``--batch`` keys taken in turn,
two patterns, in two blocks each (the first ``keep`` checkpoints of a block,
which trim the other pattern's, are not timed):

- ``shipped``: :meth:`RedisStore.save` as it is;
- ``no-undo``: the same script with no undo record (each entry written over
  the old one): what the write would cost if rollback kept no old entries.

Per checkpoint: the wall time the worker waits for the write (what the loop
pauses for), the worker's CPU time (building and sending the command), and
the server's time in the script (``INFO commandstats``), in ms, medians.
With ``appendonly yes`` the server also writes what the script changed to its
append-only file before it answers: the wait includes that, and the server's
script time does not. The server's setting is printed with the results.

``--packing`` (no Redis needed) measures the step before the wire: the save
command of one checkpoint of ``--batch`` entries packed into the Redis
protocol three ways, each ``--rounds`` times in this process:

- ``hiredis, one call``: redis-py's own packer when hiredis is installed;
- ``hiredis, sliced``: :class:`stream_learner.stores.SlicedPacker`, what the
  store uses (hiredis, :data:`~stream_learner.stores.PACK_SLICE` arguments a call);
- ``python``: redis-py's pure-Python packer.

Each way runs in a fresh process: the CPU time to pack (the best round), and
the process's peak RSS during the first pack above what it held before (the
packed command included; the peak is reset through ``/proc/self/clear_refs``,
so Linux only).

Usage::

    python scripts/bench_redis_store.py [--redis URL] [--keys 100000] [--batch 6500]
    python scripts/bench_redis_store.py --packing [--batch 6500] [--entry-bytes 2400]
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source tree that is not installed
    sys.path.insert(0, str(ROOT))

from stream_learner import stores  # noqa: E402

#: the per-entry write of the compared script (the shipped one reads the old entry into
#: the undo record first)
_PUT_NO_UNDO = """local function put(k, v)
  redis.call('HSET', KEYS[5], k, v)
end"""

PATTERNS = ("shipped", "no-undo")


def no_undo_script() -> str:
    """The shipped save script with its per-entry write replaced by a plain ``HSET``."""
    script = stores._SAVE
    start = script.find("local function put(k, v)")
    end = script.find("\nend\n", start) + len("\nend")
    if start < 0 or "undokey" not in script[start:end]:
        raise SystemExit("the shipped save script no longer has the write this compares with")
    return script[:start] + _PUT_NO_UNDO + script[end:]


def _script_usec(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(int(v["usec"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def measure(url: str, keys: int, size: int, batch: int,
            rounds: int) -> tuple[dict[str, list[float]], str]:
    """Per pattern: ms per checkpoint (wait, worker CPU, server script), three values a
    round; and the server's ``appendonly``."""
    prefix = f"bench-redis-store-{uuid.uuid4().hex[:8]}"
    found: dict[str, list[float]] = {}
    store = stores.RedisStore(url, prefix=prefix)
    client = store._redis
    try:
        aof = str(client.config_get("appendonly").get("appendonly", "unknown"))
    except Exception:  # CONFIG may be refused to this user
        aof = "unknown"
    scripts = {"shipped": store._save, "no-undo": client.register_script(no_undo_script())}
    try:
        shard = "bench:0"
        epoch = store.claim(shard)
        value = os.urandom(size)
        for start in range(0, keys, batch):  # the shard's entries
            store.save(shard, epoch, b"head", {f"sensor-{i}": value
                                               for i in range(start, min(keys, start + batch))})
        position = 0
        for _ in range(2):  # two blocks of each pattern, one after the other
            for pattern in PATTERNS:
                store._save = scripts[pattern]
                # the first `keep` checkpoints of a block trim the other pattern's: not timed
                for timed in [False] * store.keep + [True] * max(1, rounds // 2):
                    changes = {f"sensor-{(position + j) % keys}": os.urandom(size)
                               for j in range(batch)}
                    position += batch
                    usec, t0, cpu0 = (_script_usec(client), time.perf_counter(),
                                      time.process_time())
                    store.save(shard, epoch, b"head", changes)
                    wait, cpu = time.perf_counter() - t0, time.process_time() - cpu0
                    if timed:
                        server = (_script_usec(client) - usec) / 1000
                        found.setdefault(pattern, []).extend([wait * 1000, cpu * 1000, server])
    finally:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        store.close()
    return found, aof


def report(found: dict[str, list[float]], batch: int, aof: str) -> str:
    lines = [f"checkpoints of {batch:,} entries, appendonly {aof}: ms per checkpoint (medians)"]
    for pattern, values in found.items():
        wait, cpu, server = (statistics.median(values[i::3]) for i in range(3))
        per_entry = wait / batch * 1000
        lines.append(f"{pattern}: wait {wait:.0f} ms, worker CPU {cpu:.0f} ms, "
                     f"server script {server:.0f} ms ({per_entry:.1f} µs of wait an entry)")
    return "\n".join(lines)


def _memory_kib() -> tuple[int, int]:
    """This process's (peak RSS, RSS) in KiB."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmHWM:", "VmRSS:")):
                found[line.split(":")[0]] = int(line.split()[1])
    return found["VmHWM"], found["VmRSS"]


def save_command(batch: int, size: int) -> tuple[Any, ...]:
    """The arguments of :meth:`RedisStore.save`'s command: ``batch`` entries of ``size`` B."""
    keys = [f"p:{{bench:0}}:{name}" for name in ("epoch", "seq", "index")]
    keys += ["p:shards", "p:{bench:0}:keys", "p:{bench:0}:scratch"]
    args: list[Any] = [1, os.urandom(size), 3, "p:{bench:0}:ckpt:", "bench:0",
                       "p:{bench:0}:undo:", -1, batch]
    for i in range(batch):
        args += (f"sensor-{i}", os.urandom(size))
    return ("EVALSHA", "0" * 40, len(keys), *keys, *args)


PACKERS = ("hiredis, one call", "hiredis, sliced", "python")


def _packer(way: str) -> Any:
    from redis._parsers.encoders import Encoder
    from redis.connection import HiredisRespSerializer, PythonRespSerializer

    if way == PACKERS[0]:
        return HiredisRespSerializer().pack
    if way == PACKERS[1]:
        return stores.SlicedPacker().pack
    encoder = Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]
    return PythonRespSerializer(6000, encoder.encode).pack


def pack_once(way: str, batch: int, size: int, rounds: int) -> dict[str, float]:
    """In this process: the peak RSS of the first pack above the RSS before it (MB; later
    rounds reuse what the first one freed), and the best CPU time of ``rounds`` packs (ms)."""
    command, pack = save_command(batch, size), _packer(way)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # the peak RSS starts again from the RSS now
    before = _memory_kib()[1]
    cpu = math.inf
    for i in range(rounds):
        t0 = time.process_time()
        packed = pack(*command)
        cpu = min(cpu, time.process_time() - t0)
        if i == 0:
            peak = (_memory_kib()[0] - before) / 1024
        del packed
    payload = sum(len(a) for a in command if isinstance(a, bytes)) / 2**20
    return {"payload_mb": payload, "cpu_ms": cpu * 1000, "peak_mb": peak}


def packing(batch: int, size: int, rounds: int) -> list[tuple[str, float, float, float]]:
    """Per way of packing one save command, each in a fresh process: (way, payload MB,
    best CPU ms, peak MB above the RSS before packing)."""
    found = []
    for way in PACKERS:
        out = subprocess.run(
            [sys.executable, __file__, "--pack-way", way, "--batch", str(batch),
             "--entry-bytes", str(size), "--rounds", str(rounds)],
            check=True, capture_output=True, text=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        found.append((way, got["payload_mb"], got["cpu_ms"], got["peak_mb"]))
    return found


def report_packing(found: list[tuple[str, float, float, float]], batch: int) -> str:
    lines = [f"packing the save command of one checkpoint of {batch:,} entries "
             f"({found[0][1]:.1f} MB of arguments), each way in a fresh process"]
    lines += [f"{way}: CPU {cpu:.1f} ms (best round), peak RSS +{peak:.0f} MB (first pack)"
              for way, _, cpu, peak in found]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default=os.environ.get("STREAM_LEARNER_TEST_REDIS", ""))
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--entry-bytes", type=int, default=2_400)
    parser.add_argument("--batch", type=int, default=6_500, help="entries per checkpoint")
    parser.add_argument("--rounds", type=int, default=6,
                        help="timed checkpoints per pattern (--packing: packs per way)")
    parser.add_argument("--packing", action="store_true",
                        help="measure packing the save command instead (no Redis needed)")
    parser.add_argument("--pack-way", choices=PACKERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pack_way:
        print(json.dumps(pack_once(args.pack_way, args.batch, args.entry_bytes, args.rounds)))
        return 0
    if args.packing:
        print(report_packing(packing(args.batch, args.entry_bytes, args.rounds), args.batch))
        return 0
    if not args.redis:
        parser.error("needs --redis URL (or STREAM_LEARNER_TEST_REDIS)")
    found, aof = measure(args.redis, args.keys, args.entry_bytes, args.batch, args.rounds)
    print(report(found, args.batch, aof))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
