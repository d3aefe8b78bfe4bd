#!/usr/bin/env python3
"""What the local store's entry writes cost, and what a cheaper write would gain.

The local checkpoint store (:class:`stream_learner.stores.LocalStore`) writes
each changed per-key entry with an undo copy of the old one (so that a crash
between the entries and the head, or a rollback, can put the old ones back),
and deletes the copies once no kept checkpoint needs them. Two measurements,
for docs/benchmarks.md (keyed state at fleet scale):

- the default: that write pattern (``shipped``: the undo copy, then the entry
  replaced in place by an upsert, on a file of ``SQLITE_PAGE_SIZE`` pages)
  against others, on a SQLite file of ``--keys`` entries of ``--entry-bytes``,
  with checkpoints of ``--batch`` keys taken in turn, ``keep`` 3:
  ``replace-4k`` (the write before 2026-12-02: ``INSERT OR REPLACE``, a
  delete and an insert, on SQLite's default 4 KB pages), ``update`` (``UPDATE``
  in place), ``undo-table`` (one undo table per checkpoint, dropped whole),
  ``versioned`` (no copy: a row per version, an old version deleted once no
  kept checkpoint needs it). CPU µs per entry.
- ``--worker``: the most any cheaper write could gain in the worker.
  ``scripts/bench_scale.py``'s worker runs with the entries replaced in place
  (no undo copy, no delete: not crash-safe, never shipped) and with the
  shipped store, alternately, each run in a fresh process.

Usage::

    python scripts/bench_local_store.py                      # the four write patterns
    python scripts/bench_local_store.py --worker --pairs 2   # shipped vs no undo, 2 pairs
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a source tree that is not installed
    sys.path.insert(0, str(ROOT))

from stream_learner.stores import SQLITE_PAGE_SIZE, LocalStore  # noqa: E402

KEEP = 3

Write = Callable[[sqlite3.Connection, int, dict[str, bytes]], None]


def _shipped(db: sqlite3.Connection, cid: int, changes: dict[str, bytes]) -> None:
    """LocalStore's own write (undo copies of the old entries, then the new ones), and its
    delete of the undo records no kept checkpoint needs."""
    LocalStore._replace_entries(db, cid, changes)
    if cid > KEEP:
        db.execute("DELETE FROM undo WHERE id <= ?", (cid - KEEP,))


def _replace_4k(db: sqlite3.Connection, cid: int, changes: dict[str, bytes]) -> None:
    """The store's write before 2026-12-02 (on a file of 4 KB pages, see :func:`_create`):
    the undo copies, then ``INSERT OR REPLACE`` (a delete and an insert per entry)."""
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO undo VALUES (?, ?, (SELECT blob FROM entries WHERE key = ?))",
                   [(cid, k, k) for k in changes])
    db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", changes.items())
    db.execute("COMMIT")
    if cid > KEEP:
        db.execute("DELETE FROM undo WHERE id <= ?", (cid - KEEP,))


def _update(db: sqlite3.Connection, cid: int, changes: dict[str, bytes]) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO undo VALUES (?, ?, (SELECT blob FROM entries WHERE key = ?))",
                   [(cid, k, k) for k in changes])
    db.executemany("UPDATE entries SET blob = ? WHERE key = ?",
                   [(v, k) for k, v in changes.items()])
    db.execute("COMMIT")
    if cid > KEEP:
        db.execute("DELETE FROM undo WHERE id <= ?", (cid - KEEP,))


def _undo_table(db: sqlite3.Connection, cid: int, changes: dict[str, bytes]) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.execute(f"CREATE TABLE undo_{cid} (key TEXT PRIMARY KEY, blob BLOB)")
    db.executemany(f"INSERT INTO undo_{cid} VALUES (?, (SELECT blob FROM entries WHERE key = ?))",
                   [(k, k) for k in changes])
    db.executemany("UPDATE entries SET blob = ? WHERE key = ?",
                   [(v, k) for k, v in changes.items()])
    db.execute("COMMIT")
    if cid > KEEP:
        db.execute(f"DROP TABLE undo_{cid - KEEP}")


def _versioned(db: sqlite3.Connection, cid: int, changes: dict[str, bytes]) -> None:
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO gone SELECT ?, key, MAX(id) FROM versions WHERE key = ?",
                   [(cid, k) for k in changes])
    db.executemany("INSERT INTO versions VALUES (?, ?, ?)",
                   [(k, cid, v) for k, v in changes.items()])
    db.execute("COMMIT")
    if cid > KEEP:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM versions WHERE (key, id) IN (SELECT key, old FROM gone "
                   "WHERE id <= ?)", (cid - KEEP,))
        db.execute("DELETE FROM gone WHERE id <= ?", (cid - KEEP,))
        db.execute("COMMIT")


WRITES: dict[str, Write] = {"shipped": _shipped, "replace-4k": _replace_4k, "update": _update,
                            "undo-table": _undo_table, "versioned": _versioned}
PATTERNS = tuple(WRITES)


def _create(db: sqlite3.Connection, pattern: str, keys: int, size: int) -> None:
    db.execute("PRAGMA synchronous = FULL")  # as LocalStore
    # the store's page size, but SQLite's default for the write it replaced
    db.execute(f"PRAGMA page_size = {4096 if pattern == 'replace-4k' else SQLITE_PAGE_SIZE}")
    if pattern == "versioned":
        db.execute("CREATE TABLE versions (key TEXT, id INTEGER, blob BLOB, PRIMARY KEY (key, id))")
        db.execute("CREATE TABLE gone (id INTEGER, key TEXT, old INTEGER)")
        rows: Any = ((f"sensor-{i}", 0, os.urandom(size)) for i in range(keys))
        insert = "INSERT INTO versions VALUES (?, ?, ?)"
    else:
        db.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, blob BLOB)")
        db.execute("CREATE TABLE undo (id INTEGER, key TEXT, blob BLOB, PRIMARY KEY (id, key))")
        rows = ((f"sensor-{i}", os.urandom(size)) for i in range(keys))
        insert = "INSERT INTO entries VALUES (?, ?)"
    db.execute("BEGIN")
    db.executemany(insert, rows)
    db.execute("COMMIT")


def measure_pattern(pattern: str, keys: int, size: int, batch: int, rounds: int) -> float:
    """CPU µs per entry written with ``pattern``, over ``rounds`` checkpoints of ``batch`` keys."""
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(Path(tmp) / "keys.sqlite", isolation_level=None)
        try:
            _create(db, pattern, keys, size)
            write, position, cpu = WRITES[pattern], 0, 0.0
            for cid in range(1, rounds + 1):
                changes = {f"sensor-{(position + j) % keys}": os.urandom(size)
                           for j in range(batch)}
                position += batch
                t0 = time.process_time()
                write(db, cid, changes)
                cpu += time.process_time() - t0
        finally:
            db.close()
    return cpu / (rounds * batch) * 1e6


# -- the worker with entries written in place ------------------------------------------------


def _no_undo_child(argv: Sequence[str]) -> None:
    """scripts/bench_scale.py's worker, with LocalStore writing entries in place."""

    def write_in_place(db: sqlite3.Connection, checkpoint_id: int,
                       changes: Mapping[str, bytes]) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?)", changes.items())
        db.execute("COMMIT")

    LocalStore._replace_entries = staticmethod(write_in_place)  # type: ignore[method-assign]
    sys.argv = [str(ROOT / "scripts" / "bench_scale.py"), *argv]
    runpy.run_path(sys.argv[0], run_name="__main__")


def _undo_records(folder: str) -> int:
    """Undo records a local store left in ``folder`` (none when entries went in place)."""
    total = 0
    for path in Path(folder).glob("*/keys.sqlite"):
        with sqlite3.connect(path) as db:
            total += int(db.execute("SELECT COUNT(*) FROM undo").fetchone()[0])
    return total


def worker_pair(sensors: int, events_per_sensor: int) -> dict[str, tuple[float, int]]:
    """CPU µs per event of the shipped store and of entries in place, one run each, and
    the undo records each left (the check that the second wrote none)."""
    out: dict[str, tuple[float, int]] = {}
    for mode in ("shipped", "no-undo"):
        with tempfile.TemporaryDirectory() as tmp:
            args = ["--child", "--sensors", str(sensors), "--store", "local", "--where", tmp,
                    "--events-per-sensor", str(events_per_sensor), "--max-resident", "10000",
                    "--every-seconds", "1", "--min-events", "0"]
            cmd = ([sys.executable, __file__, "--no-undo-child", *args] if mode == "no-undo"
                   else [sys.executable, str(ROOT / "scripts" / "bench_scale.py"), *args])
            proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            out[mode] = (float(result["cpu_us_per_event"]), _undo_records(tmp))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--no-undo-child"]:
        _no_undo_child(args_in[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--entry-bytes", type=int, default=2_365)
    parser.add_argument("--batch", type=int, default=2_000, help="keys per checkpoint")
    parser.add_argument("--rounds", type=int, default=25, help="checkpoints per pattern")
    parser.add_argument("--worker", action="store_true",
                        help="the worker: shipped store against entries written in place")
    parser.add_argument("--sensors", type=int, default=100_000)
    parser.add_argument("--events-per-sensor", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args(args_in)
    if args.worker:
        for i in range(args.pairs):
            (shipped, undo), (in_place, none) = worker_pair(
                args.sensors, args.events_per_sensor).values()
            print(f"pair {i + 1}: shipped {shipped:.0f} µs, entries in place {in_place:.0f} µs "
                  f"of CPU an event (undo records left: {undo} and {none})", flush=True)
        return 0
    for pattern in PATTERNS:
        us = measure_pattern(pattern, args.keys, args.entry_bytes, args.batch, args.rounds)
        print(f"{pattern}: {us:.1f} µs of CPU per entry", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
