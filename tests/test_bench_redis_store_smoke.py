"""scripts/bench_redis_store.py compares the shipped save with one that keeps no undo record,
on the real Redis (no timing is asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable

from stream_learner.stores import RedisStore
from tests.support.service import ROOT, load_script, service_env

SCRIPT = ROOT / "scripts" / "bench_redis_store.py"


def test_the_compared_save_differs_from_the_shipped_one_by_the_undo_record_only(
        redis_url: str, redis_prefixes: Callable[[str], str]) -> None:
    script = load_script("bench_redis_store")
    undo_keys = {}
    for pattern in ("shipped", "no-undo"):
        store = RedisStore(redis_url, prefix=redis_prefixes(pattern))
        try:
            if pattern == "no-undo":
                store._save = store._redis.register_script(script.no_undo_script())
            epoch = store.claim("s:0")
            store.save("s:0", epoch, b"head", {"a": b"1", "b": b"2"})
            store.save("s:0", epoch, b"head", {"a": b"3"})
            assert store.entry("s:0", "a") == b"3" and store.entry("s:0", "b") == b"2"
            undo_keys[pattern] = list(store._redis.scan_iter(match=f"{store.prefix}:*undo:*"))
        finally:
            store.close()
    assert len(undo_keys["shipped"]) == 2 and undo_keys["no-undo"] == []


def test_both_patterns_are_measured(redis_url: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--redis", redis_url, "--keys", "300", "--batch", "50",
         "--rounds", "2"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = re.findall(r"^(shipped|no-undo): wait (\d+) ms, worker CPU (\d+) ms, "
                       r"server script (\d+) ms \(([\d.]+) µs of wait an entry\)$", proc.stdout, re.M)
    assert [row[0] for row in found] == ["shipped", "no-undo"], proc.stdout
    assert all(float(row[-1]) > 0 for row in found)
    assert re.search(r"appendonly (yes|no|unknown)", proc.stdout)


def test_packing_is_measured_three_ways_without_redis() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--packing", "--batch", "600", "--entry-bytes", "100",
         "--rounds", "2"],
        env=service_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"of 600 entries \(0\.\d MB of arguments\)", proc.stdout), proc.stdout
    found = re.findall(r"^(.+): CPU ([\d.]+) ms \(best round\), peak RSS \+(\d+) MB \(first pack\)$",
                       proc.stdout, re.M)
    assert [row[0] for row in found] == ["hiredis, one call", "hiredis, sliced", "python"]


def test_the_packed_save_command_is_what_the_store_sends() -> None:
    """The measured command is the shipped save's: same packed bytes, sliced or not."""
    import hiredis

    script = load_script("bench_redis_store")
    command = script.save_command(700, 50)
    assert command[0] == "EVALSHA" and command[2] == 6 and len(command) == 3 + 6 + 8 + 2 * 700
    packed = {way: b"".join(script._packer(way)(*command)) for way in script.PACKERS}
    assert set(packed.values()) == {hiredis.pack_command(command)}
