"""Keyed state at fleet scale: one model per sensor, checkpoints every second.

    python scripts/bench_scale.py [--sizes 100,10000,100000,1000000] [--events-per-sensor 10]
        [--min-events 100000] [--stores redis,local,river] [--redis URL] [--max-resident 10000]
        [--gc-old-threshold N] [--results FILE] [--render FILE] [--write-docs]
    python scripts/bench_scale.py --key-cost [--keys 10000]

For each number of sensors and each store, a fresh worker process runs the
real :class:`~stream_learner.service.Service` with ``model.scope = "key"``
(the shipped model, ``StandardScaler | LinearRegression``, drift monitors on)
over ``sensors x events-per-sensor`` (at least ``--min-events``) Friedman
events (10 features, inline labels) from an in-process source, the sensors
taking turns (each event of a round goes to the next sensor), and checkpoints
every second to the store (Redis: ``--redis``, else
``STREAM_LEARNER_TEST_REDIS``; local: a tmp folder).
Outputs are counted and dropped, so the figures are the state's, not Kafka's.

Reported per run: events/s over the whole run and the worker's CPU time per
event (``time.process_time``: steadier than wall time on a shared machine);
the worker's peak RSS; per
checkpoint, the bytes sent to the store (head + changed entries + models
parked since the previous checkpoint) and the models changed (written or
promoted), with the mean entry size; the garbage collector's full collections
during the run and the longest (each one a pause of the stream); then a
second process restarts on the
same store (a fresh interpreter, as after a crash) and the time from the
start of its loop to its first prediction (restore of the shard's frontier
and of the one model that event needs; interpreter start and imports are not
counted). ``--write-docs`` writes the table between ``<!-- scale:begin -->``
and ``<!-- scale:end -->`` in docs/benchmarks.md, with the issue's targets
as ratios within the run. Runs made by several commands (e.g. fewer events per
sensor for the largest fleets) are gathered with ``--results FILE`` and
rendered with ``--render FILE --write-docs``, which names every command.
The peer, ``--stores river``: River's bare loop over the same events in a fresh
process, one model per sensor in a dict made by ``clone()`` on its first event,
with nothing stored (no checkpoint, drift monitor or output; every model stays
in memory, so it runs up to 100,000 sensors); it says what the model itself
costs at each fleet size, and the service's rows are read against it.
The targets read the rows of the shipped ``model.max_resident``; rows of
another (``--sizes 100,100000 --max-resident 200000``: every model in memory)
are compared with each other, 100,000 sensors against 100.

``--key-cost`` measures one key: memory, entry size, and the CPU time to
create it (with its first event), to save its entry and to load it.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
TOPIC = "scale-events"
KEY = b"bench-scale-signing-key-0123456789"
#: passes over the slots when --key-cost times a save and a load (the best is kept)
REPEAT = 5
#: the "store" of River's bare loop, the peer: no service, nothing stored
RIVER = "river"
#: River's bare loop keeps every model in memory (about 1 GB at 100,000 sensors)
RIVER_MAX_SENSORS = 100_000


# -- the worker process ---------------------------------------------------------------------


class FleetSource:
    """Friedman events of ``sensors`` sensors taking turns, made on the fly (one partition)."""

    def __init__(self, sensors: int, n_events: int, start: int = 0, seed: int = 7) -> None:
        self.sensors = sensors
        self.n_events = n_events
        self.position = start
        self.committed_offset: int | None = start or None
        self._rng = random.Random(seed + start)

    def _value(self, i: int) -> bytes:
        import math

        import orjson

        x = [self._rng.random() for _ in range(10)]
        y = (10 * math.sin(math.pi * x[0] * x[1]) + 20 * (x[2] - 0.5) ** 2 + 10 * x[3]
             + 5 * x[4] + self._rng.gauss(0, 1))
        return orjson.dumps({"id": i, "key": f"sensor-{i % self.sensors}", "ts": float(i),
                             "features": {f"x{j}": v for j, v in enumerate(x)}, "label": y})

    def subscribe(self, listener: Any) -> None:
        listener.on_assigned([(TOPIC, 0)])

    def poll(self, max_records: int, timeout_ms: int) -> list[Any]:
        from stream_learner.events import Origin
        from stream_learner.sources import Record

        stop = min(self.n_events, self.position + max_records)
        # keyed by sensor, as a producer keys a fleet's records
        out = [Record(self._value(i), b"sensor-%d" % (i % self.sensors), 0, Origin(TOPIC, 0, i))
               for i in range(self.position, stop)]
        self.position = stop
        return out

    def commit(self, offsets: Mapping[Any, int]) -> None:
        self.committed_offset = offsets.get((TOPIC, 0), self.committed_offset)

    @property
    def exhausted(self) -> bool:
        return self.position >= self.n_events

    def committed(self, partitions: Sequence[Any]) -> dict[Any, int | None]:
        return dict.fromkeys(partitions, self.committed_offset)

    def beginning(self, partitions: Sequence[Any]) -> dict[Any, int]:
        return dict.fromkeys(partitions, 0)

    def seek(self, partition: Any, offset: int) -> None:
        self.position = offset

    def generation(self) -> int:
        return 0

    def lag(self, positions: Mapping[Any, int]) -> dict[Any, int]:
        return {tp: max(0, self.n_events - p) for tp, p in positions.items()}

    def close(self) -> None:
        pass


class CountingSink:
    """Counts outputs; :attr:`first_at` is when the first prediction came."""

    def __init__(self) -> None:
        self.sent = 0
        self.first_at: float | None = None

    def send(self, role: str, key: bytes | None, value: bytes, headers: Any = ()) -> None:
        if role == "predictions" and self.first_at is None:
            self.first_at = time.perf_counter()
        self.sent += 1

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _store(kind: str, where: str) -> Any:
    from stream_learner.stores import LocalStore, RedisStore

    if kind == "local":
        return LocalStore(where, keep=3)
    url, prefix = where.rsplit("#", 1)
    return RedisStore(url, prefix, keep=3)


def river_loop(args: argparse.Namespace) -> dict[str, Any]:
    """River's bare loop over the same events, the peer of a keyed service run.

    What a user of River alone would write for a fleet: one model per key in a
    dict, made by ``clone()`` of the configured pipeline on the key's first
    event, each record parsed and its model asked to predict and to learn. No
    checkpoint, no drift monitor, no label join, no output: every figure of the
    service above this loop is what those cost. It runs with the service's
    garbage-collector settings (:func:`stream_learner.cli.settle_heap`), so it
    does not pay the full collections the service avoids. The CPU time spent in
    ``clone()`` is reported apart, so the model's own predict and learn can be
    read alone (``model_us_per_event``).
    """
    import orjson

    from stream_learner.cli import settle_heap
    from stream_learner.models import ModelSpec
    from stream_learner.settings import load_settings

    settings = load_settings(None, env={}, overrides={"model": {"scope": "key"}})
    prototype = ModelSpec.from_settings(settings.model).build()
    n_events = max(args.sensors * args.events_per_sensor, args.min_events)
    source = FleetSource(args.sensors, n_events)
    models: dict[bytes, Any] = {}
    clock = time.process_time
    settle_heap()
    full_gcs = _time_full_collections()
    creating = 0.0
    t0, cpu0 = time.perf_counter(), clock()
    while not source.exhausted:
        for record in source.poll(500, 0):
            event = orjson.loads(record.value)
            model = models.get(record.key)
            if model is None:
                c0 = clock()
                model = models[record.key] = prototype.clone()
                creating += clock() - c0
            x = event["features"]
            model.predict_one(x)
            model.learn_one(x, event["label"])
    elapsed, cpu = time.perf_counter() - t0, clock() - cpu0
    return {
        "events": n_events, "events_per_s": n_events / elapsed,
        "cpu_us_per_event": cpu / n_events * 1e6,
        "model_us_per_event": (cpu - creating) / n_events * 1e6,
        "clone_us": creating / max(1, len(models)) * 1e6,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "keys": len(models), "full_gcs": len(full_gcs), "full_gc_s": sum(full_gcs),
        "longest_full_gc_s": max(full_gcs, default=0.0),
    }


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One run (or one restart) in this process; the result as a dict."""
    if args.store == RIVER:
        return river_loop(args)
    from stream_learner.checkpoint import EnvelopeCodec
    from stream_learner.cli import settle_heap
    from stream_learner.metrics import Metrics
    from stream_learner.models import ModelSpec
    from stream_learner.recovery import Checkpointer
    from stream_learner.scopes import KeyedModels
    from stream_learner.service import Service
    from stream_learner.settings import load_settings

    settings = load_settings(None, env={}, overrides={
        "model": {"scope": "key", "max_resident": args.max_resident},
        "checkpoint": {"store": args.store, "every_seconds": args.every_seconds,
                       "every_events": 10**9, "write_behind": not args.blocking_writes},
        "kafka": {"events_topic": TOPIC},
    })
    spec = ModelSpec.from_settings(settings.model)
    store = _store(args.store, args.where)
    saves: list[tuple[int, int, int, int]] = []

    class Recording(Checkpointer):
        def _settled(self, write: Any) -> None:
            super()._settled(write)
            if write.future.exception() is None:
                saves.append((write.bytes + write.parked_bytes, self.last_changed,
                              self.last_entries, self.last_entry_bytes))

    metrics = Metrics()
    checkpointer = Recording(store, EnvelopeCodec(KEY, spec.config_hash), settings.checkpoint,
                             metrics, time.time, time.monotonic)
    n_events = max(args.sensors * args.events_per_sensor, args.min_events)
    restart = args.restart
    source = FleetSource(args.sensors, n_events + 1 if restart else n_events,
                         start=n_events if restart else 0)
    sink = CountingSink()
    service = Service(settings, spec, source, sink, metrics, checkpointer)
    settle_heap()
    if args.gc_old_threshold:  # another setting than the shipped one, to compare
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, args.gc_old_threshold)
    full_gcs = _time_full_collections()
    t0, cpu0 = time.perf_counter(), time.process_time()
    summary = service.run()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    store.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if restart:
        assert sink.first_at is not None and summary.replayed == 0, "the restart replayed records"
        return {"first_prediction_s": sink.first_at - t0, "rss_mb": rss_mb}
    # the last checkpoint (at exit) is not on the one-second schedule
    timed = saves[:-1] or saves
    changed = sum(c for _, c, _, _ in timed)
    mean_entry = sum(b for *_, b in timed) / max(1, sum(n for _, _, n, _ in timed))
    models = service.shards[(TOPIC, 0)].learner.models
    assert isinstance(models, KeyedModels)
    return {
        "events": summary.predictions, "events_per_s": summary.predictions / elapsed,
        "cpu_us_per_event": cpu / max(1, summary.predictions) * 1e6,
        "rss_mb": rss_mb, "checkpoints": len(timed),
        "bytes_per_checkpoint": sum(w for w, *_ in timed) / max(1, len(timed)),
        "changed_per_checkpoint": changed / max(1, len(timed)),
        "max_ratio": max((w / max(1, c) for w, c, _, _ in timed), default=0.0),
        "mean_entry_bytes": mean_entry,
        "resident": models.n_resident, "keys": models.n_keys,
        "gc_old_threshold": args.gc_old_threshold,
        "full_gcs": len(full_gcs), "full_gc_s": sum(full_gcs),
        "longest_full_gc_s": max(full_gcs, default=0.0),
    }


def _time_full_collections() -> list[float]:
    """From now on, the wall time of each full collection of the garbage collector (a pause
    of the stream; the list fills as they happen)."""
    pauses: list[float] = []
    started: list[float] = []

    def timer(phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                started.append(time.perf_counter())
            elif started:
                pauses.append(time.perf_counter() - started.pop())

    gc.callbacks.append(timer)
    return pauses


# -- what one key costs -----------------------------------------------------------------------


def key_cost(keys: int = 10_000, events: int = 10) -> dict[str, float]:
    """What one key costs: creating its model and its first event (prototype copy vs a
    build from the settings), its memory (traced allocations) and entry size once it has
    seen ``events`` events, and the CPU time to save its entry (flat encoding + sign) and to
    load it (verify + decode into a recycled shell), the two things a key pays per
    checkpoint and per return; the same two for a slot pickled whole, for comparison."""
    import pickle
    import tracemalloc

    from stream_learner.checkpoint import EnvelopeCodec
    from stream_learner.events import Codec, Origin
    from stream_learner.learner import Learner
    from stream_learner.models import ModelSpec
    from stream_learner.scopes import KeyedModels
    from stream_learner.settings import load_settings

    settings = load_settings(None, env={}, overrides={"model": {"scope": "key",
                                                                "max_resident": keys}})
    spec = ModelSpec.from_settings(settings.model)
    x = {f"x{j}": 0.5 for j in range(10)}
    models = KeyedModels(spec, keys)
    t0 = time.process_time()
    for i in range(keys):
        model = models.get(f"k{i}").model
        model.predict_one(x)
        model.learn_one(x, 1.0)
    copy_us = (time.process_time() - t0) / keys * 1e6
    t0 = time.process_time()
    for _ in range(keys):
        model = spec.build()
        model.predict_one(x)
        model.learn_one(x, 1.0)
    build_us = (time.process_time() - t0) / keys * 1e6
    learner = Learner(spec, settings.labels, settings.drift)
    codec = Codec(settings.schema_, settings.limits, spec.task)
    source = FleetSource(keys, keys * events)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(keys * events):
        record = source._value(i)
        learner.process(codec.decode(record, None, 0, Origin(TOPIC, 0, i)))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    resident = learner.models
    assert isinstance(resident, KeyedModels)
    slots = list(itertools.islice(resident.resident(), 1000))
    envelopes = EnvelopeCodec(KEY, spec.config_hash)
    slot_codec = resident.codec

    def entries(encode: Any, decode: Any) -> tuple[list[bytes], float, float]:
        """Sealed entries of ``slots``, and the CPU µs per slot to save and to load one
        (the best of ``REPEAT`` passes: the least disturbed by other work on the machine)."""
        save = load = math.inf
        for _ in range(REPEAT):
            t0 = time.process_time()
            blobs = [envelopes.seal_entry("s", "k", encode(slot)) for slot in slots]
            t1 = time.process_time()
            for blob in blobs:
                decode(envelopes.open_entry("s", "k", blob))
            t2 = time.process_time()
            save, load = min(save, t1 - t0), min(load, t2 - t1)
        return blobs, save / len(slots) * 1e6, load / len(slots) * 1e6

    # each load writes into the shell the previous one left, as parks do
    blobs, save_us, load_us = entries(
        slot_codec.encode, lambda e: slot_codec.recycle(slot_codec.decode(e)))
    pickles, pickle_save_us, pickle_load_us = entries(
        lambda slot: pickle.dumps(slot, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads)
    return {"keys": keys, "events_per_key": events, "create_copy_us": copy_us,
            "create_build_us": build_us, "memory_bytes_per_key": (after - before) / keys,
            "entry_bytes": sum(map(len, blobs)) / len(blobs), "save_entry_us": save_us,
            "load_entry_us": load_us, "pickle_entry_bytes": sum(map(len, pickles)) / len(pickles),
            "pickle_save_us": pickle_save_us, "pickle_load_us": pickle_load_us}


# -- the harness ------------------------------------------------------------------------------


def _child(args: argparse.Namespace, sensors: int, store: str, where: str,
           restart: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--sensors", str(sensors), "--store", store,
           "--where", where, "--events-per-sensor", str(args.events_per_sensor),
           "--max-resident", str(args.max_resident), "--every-seconds", str(args.every_seconds),
           "--min-events", str(args.min_events)]
    if args.gc_old_threshold:
        cmd += ["--gc-old-threshold", str(args.gc_old_threshold)]
    if args.blocking_writes:
        cmd.append("--blocking-writes")
    if restart:
        cmd.append("--restart")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _drop_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
    finally:
        client.close()


def run_case(args: argparse.Namespace, sensors: int, store: str) -> dict[str, Any]:
    """One size on one store: the run, then a restart on what it left (the peer, which
    stores nothing, has nothing to restart from)."""
    result = (_child(args, sensors, store, "", restart=False) if store == RIVER
              else _run_and_restart(args, sensors, store))
    result.update(sensors=sensors, store=store, max_resident=args.max_resident,
                  events_per_sensor=args.events_per_sensor, min_events=args.min_events)
    return result


def _run_and_restart(args: argparse.Namespace, sensors: int, store: str) -> dict[str, Any]:
    """The service's run on a fresh store, then its restart on what the run left."""
    with tempfile.TemporaryDirectory() as tmp:
        if store == "local":
            where = tmp
        else:
            prefix = f"bench-scale-{uuid.uuid4().hex[:8]}"
            where = f"{args.redis}#{prefix}"
        try:
            result = _child(args, sensors, store, where, restart=False)
            result.update(restart=_child(args, sensors, store, where, restart=True))
        finally:
            if store == "redis":
                _drop_redis(args.redis, prefix)
    return result


def _commands(results: Sequence[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """The command lines that made ``results`` (one per events-per-sensor setting)."""
    groups: dict[tuple[int, int, int, int], list[dict[str, Any]]] = {}
    for r in results:
        eps, low = r.get("events_per_sensor", args.events_per_sensor), r.get("min_events",
                                                                            args.min_events)
        groups.setdefault((eps, low, r["max_resident"], r.get("gc_old_threshold", 0)),
                          []).append(r)
    out = []
    for (eps, low, resident, gc_old), rows in groups.items():
        sizes = ",".join(str(s) for s in sorted({r["sensors"] for r in rows}))
        stores = ",".join(sorted({r["store"] for r in rows}))
        floor = f" --min-events {low}" if low != 100_000 else ""
        collect = f" --gc-old-threshold {gc_old}" if gc_old else ""
        out.append(f"`python scripts/bench_scale.py --sizes {sizes} --events-per-sensor {eps}"
                   f"{floor} --max-resident {resident} --stores {stores}{collect}`")
    return out


def render(results: Sequence[dict[str, Any]], args: argparse.Namespace, when: str) -> str:
    """The docs section: the table, the targets as ratios, how to rerun."""
    commands = _commands(results, args)
    how = commands[0][:-1] + " --write-docs`" if len(commands) == 1 else (
        "; then ".join(c[:-1] + " --results scale.jsonl`" for c in commands)
        + "; then `python scripts/bench_scale.py --render scale.jsonl --write-docs`")
    lines = [
        BEGIN,
        "## Keyed state at fleet scale",
        "",
        f"{how} ({when}). One model per sensor (`model.scope = \"key\"`, the "
        "shipped `StandardScaler | LinearRegression`, drift on), the events per sensor "
        "of the table's column (at least 100,000 events per run unless the command says "
        "otherwise, so small fleets get more per sensor), Friedman features with inline "
        "labels, the sensors taking turns, checkpoints every second; an in-process source "
        "and a counting sink (no Kafka), each run in a fresh process. Rows of River's bare "
        "loop: the peer, the same events through River alone (one model per sensor in a "
        "dict, made by `clone()`; nothing stored, no drift monitor, no output). The machine "
        "was shared "
        "with other work while it ran (its load changed between rows), so read the figures "
        "as ratios between rows of one store, CPU time per event "
        "first, not as absolute rates.",
        "",
        "| sensors | events / sensor | store | max_resident | events/s | CPU / event "
        "| peak RSS | checkpoints "
        "| bytes / checkpoint | models changed / checkpoint | mean entry "
        "| restart to first prediction | full collections (longest) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_table_row(r) for r in results]
    lines += ["", "Targets (ratios between rows of one store; "
              + ("each store's rows come from one run" if len(commands) == 1 else
                 "the commands above ran on the same machine within the same hour")
              + "):", ""]
    lines += _targets(results)
    short = sorted({r["sensors"] for r in results if r["events"] / r["sensors"] < 10})
    if short:
        lines += ["", "Rows with fewer than 10 events per sensor ("
                  + ", ".join(f"{n:,}" for n in short) + " sensors) were run so to fit the "
                  "time the shared machine allowed: their CPU per event still has every event "
                  "after a sensor's first load that sensor's model and save it at the next "
                  "checkpoint (the steady state of a fleet beyond `max_resident`), and a row "
                  "with one event per sensor measures memory and creation only."]
    lines += ["", END]
    return "\n".join(lines)


def _table_row(r: dict[str, Any]) -> str:
    """One run as a row of the table (River's bare loop: nothing stored, so no state columns)."""
    head = (f"| {r['sensors']:,} | {r['events'] / r['sensors']:,.4g} | "
            + ("River's bare loop | - | " if r["store"] == RIVER else
               f"{r['store']} | {r['max_resident']:,} | ")
            + f"{r['events_per_s']:,.0f} | {r.get('cpu_us_per_event', float('nan')):,.0f} µs | "
            f"{r['rss_mb']:,.0f} MB | ")
    if r["store"] == RIVER:
        return head + f"- | - | - | - | - | {_pauses(r)} |"
    return head + (
        f"{r['checkpoints']} | "
        f"{r['bytes_per_checkpoint'] / 1024:,.0f} KiB | {r['changed_per_checkpoint']:,.0f} | "
        f"{r['mean_entry_bytes']:,.0f} B | "
        f"{r['restart']['first_prediction_s'] * 1000:,.0f} ms | {_pauses(r)} |")


def _pauses(r: dict[str, Any]) -> str:
    """A run's full collections and the longest one (runs recorded before they were timed: -)."""
    if "full_gcs" not in r:
        return "-"
    return f"{r['full_gcs']} ({r['longest_full_gc_s'] * 1000:,.0f} ms)" if r["full_gcs"] else "0"


def _targets(results: Sequence[dict[str, Any]]) -> list[str]:
    """The targets, read on the rows of the shipped ``max_resident``; then the other rows."""
    from stream_learner.settings import ModelSettings

    shipped = ModelSettings().max_resident
    out = []
    by = {(r["sensors"], r["store"]): r for r in results if r["max_resident"] == shipped}
    for store in sorted({r["store"] for r in results} - {RIVER}):
        small, big = by.get((100, store)), by.get((100_000, store))
        ten, million = by.get((10_000, store)), by.get((1_000_000, store))
        if small and big:
            ratio = big["events_per_s"] / small["events_per_s"]
            out.append(f"- {store}: throughput at 100,000 sensors / at 100 sensors = "
                       f"{ratio:.2f} (target >= 0.6: {'met' if ratio >= 0.6 else 'missed'})")
            if "cpu_us_per_event" in small and "cpu_us_per_event" in big:
                cpu = small["cpu_us_per_event"] / big["cpu_us_per_event"]
                out.append(
                    f"  - in CPU time (steadier than wall time on a shared machine): "
                    f"{small['cpu_us_per_event']:,.0f} µs an event at 100 sensors, "
                    f"{big['cpu_us_per_event']:,.0f} µs at 100,000, a ratio of {cpu:.2f} "
                    f"({'met' if cpu >= 0.6 else 'missed'})")
            out.append(
                "  - why: beyond max_resident every event of a sensor fleet taking turns "
                "finds its model out of memory, so it pays one entry load (verify + decode) "
                "and one entry save (encode + sign) of its changed model, written right after "
                "its event, plus the store's read and write of its entry; at 100 sensors a "
                f"checkpoint saves the same {small['changed_per_checkpoint']:,.0f} models "
                "whatever the rate, at 100,000 each event's model once (about "
                f"{big['changed_per_checkpoint']:,.0f} a checkpoint here); "
                "`--key-cost` measures the two per-key costs (docs/tasks.md)"
            )
        if ten and big:
            ratio = big["rss_mb"] / ten["rss_mb"]
            out.append(f"- {store}: peak RSS at 100,000 sensors / at 10,000 (max_resident "
                       f"{big['max_resident']:,}) = {ratio:.2f}")
        if small and not big:
            out.append(f"- {store}: throughput at 100,000 sensors: not measured in this run")
        if not million:
            out.append(f"- {store}: peak RSS at 1,000,000 sensors: not measured in this run "
                       "(10,000,000 events; `--sizes 10000,1000000`)")
        if ten and million:
            ratio = million["rss_mb"] / ten["rss_mb"]
            per = million["events"] / million["sensors"]
            out.append(f"- {store}: peak RSS at 1,000,000 sensors / at 10,000 = {ratio:.2f} "
                       f"(target <= 1.5: {'met' if ratio <= 1.5 else 'missed'}"
                       + (f"; {per:,.4g} event{'' if per == 1 else 's'} per sensor, for RSS only"
                          if per < 10 else "")
                       + ")")
        if big:
            ms = big["restart"]["first_prediction_s"] * 1000
            out.append(f"- {store}: restart to first prediction at 100,000 sensors = {ms:,.0f} ms "
                       f"(target <= 1,000 ms: {'met' if ms <= 1000 else 'missed'})")
        worst = max((r["max_ratio"] / max(1.0, r["mean_entry_bytes"])
                     for r in results if r["store"] == store and r["mean_entry_bytes"]),
                    default=0.0)
        out.append(f"- {store}: largest (bytes written / models changed) over any checkpoint, "
                   f"in mean entry sizes = {worst:.2f} (target <= 2, plus the head)")
    return out + _resident(results, shipped) + _peer(results, shipped)


def _resident(results: Sequence[dict[str, Any]], shipped: int) -> list[str]:
    """The rows of another ``max_resident`` (every model in memory), 100,000 sensors against 100."""
    out = []
    by = {(r["sensors"], r["store"], r["max_resident"]): r for r in results
          if r["max_resident"] != shipped}
    for (sensors, store, resident), big in sorted(by.items()):
        small = by.get((100, store, resident))
        if sensors != 100_000 or small is None or "cpu_us_per_event" not in big:
            continue
        ratio = small["cpu_us_per_event"] / big["cpu_us_per_event"]
        out.append(
            f"- {store}, max_resident {resident:,} (every model in memory, nothing loaded or "
            f"parked): CPU per event {small['cpu_us_per_event']:,.0f} µs at 100 sensors, "
            f"{big['cpu_us_per_event']:,.0f} µs at 100,000, a ratio of {ratio:.2f}; peak RSS "
            f"{big['rss_mb']:,.0f} MB. What remains: every changed model is encoded (right "
            "after its event, while hot) and written at the next checkpoint (about "
            f"{big['changed_per_checkpoint']:,.0f} a second), and an event finds its model in "
            "cold memory")
    return out


def _peer(results: Sequence[dict[str, Any]], shipped: int) -> list[str]:
    """River's bare loop at 100 and 100,000 sensors, next to the service's rows of each store."""
    peer = {r["sensors"]: r for r in results if r["store"] == RIVER}
    small, big = peer.get(100), peer.get(100_000)
    if not (small and big):
        return []
    ratio = small["cpu_us_per_event"] / big["cpu_us_per_event"]
    alone = small["model_us_per_event"] / big["model_us_per_event"]
    out = [
        f"- River's bare loop (no service: one model per sensor in a dict, made by `clone()`; "
        f"no checkpoint, drift monitor or output): CPU per event {small['cpu_us_per_event']:,.0f}"
        f" µs at 100 sensors, {big['cpu_us_per_event']:,.0f} µs at 100,000, a ratio of "
        f"{ratio:.2f}; `clone()` costs {big['clone_us']:,.0f} µs a sensor. Its model's "
        f"predict and learn alone (creation left out): {small['model_us_per_event']:,.0f} µs "
        f"at 100 sensors, {big['model_us_per_event']:,.0f} µs at 100,000, a ratio of "
        f"{alone:.2f}: the same work on 100,000 models in memory instead of 100"]
    service = {(r["sensors"], r["store"], r["max_resident"]): r for r in results
               if r["store"] != RIVER and "cpu_us_per_event" in r}
    for (sensors, store, resident), row in sorted(service.items()):
        if sensors in peer and sensors in (100, 100_000):
            out.append(
                f"  - the service at {sensors:,} sensors, {store}, max_resident {resident:,}"
                f"{' (shipped)' if resident == shipped else ''}: "
                f"{row['cpu_us_per_event']:,.0f} µs an event, "
                f"{row['cpu_us_per_event'] / peer[sensors]['cpu_us_per_event']:.2f}x "
                "River's bare loop")
    return out


def write_docs(section: str) -> None:
    """Replace the scale section of docs/benchmarks.md, or append it at the end."""
    text = DOCS.read_text()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[100, 10_000, 100_000, 1_000_000])
    parser.add_argument("--events-per-sensor", type=int, default=10)
    parser.add_argument("--stores", default="redis,local,river",
                        help="redis, local, and river: River's bare loop, the peer "
                             f"(up to {RIVER_MAX_SENSORS:,} sensors: it keeps every model)")
    parser.add_argument("--redis", default=os.environ.get("STREAM_LEARNER_TEST_REDIS", ""))
    parser.add_argument("--min-events", type=int, default=100_000,
                        help="events per run at least (small fleets get more per sensor)")
    parser.add_argument("--max-resident", type=int, default=10_000)
    parser.add_argument("--every-seconds", type=float, default=1.0)
    parser.add_argument("--blocking-writes", action="store_true",
                        help="checkpoint.write_behind = false: the loop waits for each write")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--key-cost", action="store_true",
                        help="measure what one key costs (docs/tasks.md), run nothing else")
    parser.add_argument("--keys", type=int, default=10_000, help="keys measured by --key-cost")
    parser.add_argument("--results", default="",
                        help="also append each result to this JSON Lines file")
    parser.add_argument("--render", default="",
                        help="render the results of this JSON Lines file, run nothing")
    parser.add_argument("--gc-old-threshold", type=int, default=0,
                        help="collections of the middle generation before a full one "
                             "(default: the service's, cli.GC_OLD_THRESHOLD; 10 is Python's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--restart", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sensors", type=int, default=100, help=argparse.SUPPRESS)
    parser.add_argument("--store", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--where", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(worker(args)))
        return 0
    if args.key_cost:
        print(json.dumps(key_cost(args.keys)))
        return 0
    stores = [s for s in args.stores.split(",") if s != "redis" or args.redis]
    results = []
    if args.render:
        results = [json.loads(line) for line in Path(args.render).read_text().splitlines()]
        args.sizes = sorted({r["sensors"] for r in results})
    else:
        for sensors in args.sizes:
            for store in stores:
                if store == RIVER and sensors > RIVER_MAX_SENSORS:
                    print(f"River's bare loop keeps every model in memory: skipped at "
                          f"{sensors:,} sensors", file=sys.stderr)
                    continue
                result = run_case(args, sensors, store)
                results.append(result)
                print(json.dumps(result), flush=True)
                if args.results:
                    with open(args.results, "a") as out:
                        out.write(json.dumps(result) + "\n")
    section = render(results, args, time.strftime("%Y-%m-%d", time.gmtime()))
    print(section)
    if args.write_docs:
        write_docs(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
