"""The measurements that combine harness runs: checkpoints, edges, peers, gap, profile."""

from __future__ import annotations

import importlib
import importlib.util
import pstats
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from benchmarking.harness import Bench, checkpoint_overrides, delete_redis_keys, redis_prefix
from benchmarking.results import BigRestore, CaseResult, Edges, MaxRun, Peer, Peers
from benchmarking.workload import (
    CASES,
    GAP_VARIANTS,
    NAIVE,
    PEER_RATES,
    QUIX,
    ROOT,
    Case,
    GapVariant,
    client_support,
    encoded_events,
    log,
    samples,
    service_peer,
)


def profile_linear(
    bench: Bench, values: Sequence[bytes], profiler: str, top: int, out: IO[str]
) -> None:
    """Profile the linear worker at maximum throughput through the broker.

    ``cprofile`` profiles the service loop's thread only (deterministic, with
    call counts); ``py-spy`` samples every thread of the worker process
    (the Kafka clients' I/O threads included), on CPU only.
    """
    path = Path(f"/tmp/stream-learner-bench-{bench.run_id}.{profiler}")
    key = "profile" if profiler == "cprofile" else "py_spy"
    run = bench.max_throughput(CASES[0], values, "profile", profile={key: str(path)})
    print(f"linear worker: {run.events_per_s:,.0f} events/s, "
          f"{run.cpu_s_per_m:,.1f} CPU s per million events (under {profiler})", file=out)
    for name, seconds in sorted(run.threads_cpu_s.items(), key=lambda kv: -kv[1]):
        print(f"  thread {name}: {seconds:.2f} CPU s over the whole run", file=out)
    if profiler == "cprofile":
        stats = pstats.Stats(str(path), stream=out)
        stats.sort_stats("cumulative").print_stats(top)
        stats.sort_stats("tottime").print_stats(top)
    else:
        print(summarize_collapsed(path.read_text(encoding="utf-8"), top), file=out)
    path.unlink()


def summarize_collapsed(text: str, top: int) -> str:
    r"""Inclusive and self shares per function from py-spy's collapsed stacks.

    Start-up (imports) is left out, so shares are of the samples taken while
    the worker ran.

    Examples
    --------
    >>> print(summarize_collapsed("main (a.py:1);f (a.py:5) 3\nmain (a.py:1);g (b.py:2) 1", 2))
    samples: 4
     incl %  self %  function
      100.0     0.0  main (a.py)
       75.0    75.0  f (a.py)
    """
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or "_find_and_load" in stack:
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count
    lines = [f"samples: {total}", " incl %  self %  function"]
    ranked = sorted(inclusive.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    for frame, count in ranked:
        share, self_share = 100.0 * count / total, 100.0 * own.get(frame, 0) / total
        lines.append(f"{share:7.1f} {self_share:7.1f}  {frame}")
    return "\n".join(lines)


def measure_edges(bench: Bench, pool: Sequence[tuple[dict[str, Any], Any]],
                  skip: Sequence[str]) -> list[Edges]:
    """The Kafka edges alone: kafka-python (the service's), and confluent-kafka if installed."""
    if "edges" in skip:
        return []
    values = encoded_events(pool, True)
    clients = ["kafka-python"]
    if importlib.util.find_spec("confluent_kafka") is not None:
        clients.append("confluent-kafka")
    out = []
    for client in clients:
        log(f"Kafka edges alone ({client}): poll, one output per record, flush, commit")
        out.append(bench.edges(values, client))
        log(f"{client}: {out[-1].events_per_s:,.0f} events/s, {out[-1].cpu_us:.1f} CPU µs/event")
    return out


BIG_MODEL = "forest (ARFClassifier, 3 trees)"
BIG_EVENTS = 1500  # about 1.6 MiB of state


def measure_big_restore(redis_url: str | None, repeat: int = 5) -> BigRestore:
    """Seal a >= 1 MiB learner and restore it (read, verify, unpickle) from Redis, else a folder.

    The benchmark's own models stay far below 1 MiB, so the restore target is
    checked on an adaptive random forest with ``bench_checkpoint``'s method.
    """
    import tempfile

    path = ROOT / "scripts" / "bench_checkpoint.py"
    spec = importlib.util.spec_from_file_location("bench_checkpoint_script", path)
    assert spec is not None and spec.loader is not None
    bc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bc)
    from stream_learner.checkpoint import EnvelopeCodec
    from stream_learner.stores import CheckpointStore, LocalStore, RedisStore

    learner, config_hash = bc.trained(bc.MODELS[BIG_MODEL][0], BIG_EVENTS)
    codec = EnvelopeCodec(secrets.token_bytes(32), config_hash)
    prefix = redis_prefix(f"big-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory() as tmp:
        store: CheckpointStore
        if redis_url:
            store, where = RedisStore(redis_url, prefix), "Redis"
        else:
            store, where = LocalStore(Path(tmp), keep=2), "a local folder"
        try:
            result = bc.measure(store, codec, learner, BIG_EVENTS, repeat)
        finally:
            store.close()
            if redis_url:
                delete_redis_keys(redis_url, prefix)
    return BigRestore(BIG_MODEL, BIG_EVENTS, result["bytes"] / 1024.0, where,
                      result["restore_ms"], repeat)


def measure_peers(
    bench: Bench, pool: Sequence[tuple[dict[str, Any], Any]], clients: Sequence[str],
    skip: Sequence[str], rounds: int = 1,
) -> Peers:
    """The linear case through the service (each client), a Quix Streams app and a naive loop.

    Every system reads the same pre-produced topic with its own consumer group
    (maximum throughput), then, except the naive loop, is fed at each rate of
    ``PEER_RATES`` (latency at a downstream consumer), ``rounds`` times, the
    systems taking turns. The service runs as configured for the targets:
    drift on, Redis checkpoints every second.
    """
    case = CASES[0]
    values = encoded_events(pool, case.labelled)
    checkpoints, extra = _peer_checkpoints(bench)
    peers = Peers(len(values), checkpoints, phase_s=bench.plan.phase_s)
    events = bench.topic("peers-events")
    bench.produce(events, values)
    runs = _service_runs(peers, clients, extra) + _app_runs(peers)
    _peers_max(bench, peers, runs, values, events)
    if "latency" not in skip:
        for number in range(1, rounds + 1):
            if rounds > 1:
                log(f"peers: latency round {number} of {rounds}")
            _peers_latency(bench, peers, runs, number)
    return peers


PeerRun = tuple[str, Mapping[str, Any] | None]
"""A system of the comparison: its key, and the service's settings (None for a peer app)."""


def _peer_checkpoints(bench: Bench) -> tuple[str, dict[str, Any]]:
    """How the service checkpoints in the comparison, and the settings that say so."""
    overrides = checkpoint_overrides(bench.args.redis, bench.run_id)
    if isinstance(overrides, str):
        return overrides, {}
    bench.used_redis = True
    return "Redis, every 1 s", dict(overrides)


def _service_runs(peers: Peers, clients: Sequence[str], extra: dict[str, Any]) -> list[PeerRun]:
    """The service once per Kafka client it accepts; a refused client is a row that says so."""
    from stream_learner.settings import KafkaSettings

    runs: list[PeerRun] = []
    for client in clients:
        key = service_peer(client)
        peers.systems[key] = Peer(f"stream-learner, {client} client")
        why = client_support(client)
        if why is not None:
            log(f"skipping the service on {client}: {why}")
            peers.systems[key].note = f"skipped: {why}"
            continue
        kafka = {"client": client} if "client" in KafkaSettings.model_fields else {}
        own = {**extra, "kafka": kafka}
        if isinstance(extra.get("checkpoint"), dict):  # each client's shards, not the other's
            section = extra["checkpoint"]
            own["checkpoint"] = {**section, "key_prefix": f"{section['key_prefix']}:{key}"}
        runs.append((key, own))
    return runs


def _app_runs(peers: Peers) -> list[PeerRun]:
    """The Quix Streams app (when installed) and the naive loop."""
    runs: list[PeerRun] = []
    for role, title in ((QUIX, "Quix Streams app"), (NAIVE, "naive kafka-python loop")):
        peers.systems[role] = Peer(title)
        if role == QUIX and importlib.util.find_spec("quixstreams") is None:
            log("skipping the Quix Streams app: quixstreams is not installed (the bench extra)")
            peers.systems[role].note = "skipped: quixstreams not installed"
            continue
        runs.append((role, None))
    return runs


def _peers_max(
    bench: Bench, peers: Peers, runs: Sequence[PeerRun], values: Sequence[bytes], events: str,
) -> None:
    """Each system's maximum throughput over the same pre-produced topic."""
    for key, settings in runs:
        log(f"peers: {peers.systems[key].name} at maximum throughput")
        what = f"peers-{key.replace(':', '-')}"
        if settings is None:
            run = bench.peer_max(key, events, len(values), what)
        else:
            run = bench.max_throughput(CASES[0], values, what, extra=settings, events=events)
        peers.systems[key].max = run
        log(f"{peers.systems[key].name}: {run.events_per_s:,.0f} events/s")


def _peers_latency(bench: Bench, peers: Peers, runs: Sequence[PeerRun], number: int = 1) -> None:
    """Round ``number``: each system but the naive loop fed at every rate of ``PEER_RATES``.

    Each round has its own topics and groups (a fresh worker, nothing restored).
    """
    case = CASES[0]
    levels = [(0.0, rate) for rate in PEER_RATES]
    for key, settings in runs:
        if key == NAIVE:
            continue
        what = f"peers-{key.replace(':', '-')}-latency" + (f"-{number}" if number > 1 else "")
        lat_events = bench.topic(f"{what}-events")
        if settings is None:
            cfg = bench.peer_config(what, lat_events, None)
            worker, predictions = bench.start_worker(cfg, role=key), cfg["predictions"]
        else:
            worker_cfg = bench.worker_settings(case, lat_events, what)
            for section, values_ in settings.items():
                worker_cfg[section] = {**worker_cfg.get(section, {}), **values_}
            worker = bench.start_worker({"settings": worker_cfg})
            predictions = worker_cfg["kafka"]["predictions_topic"]
        peers.systems[key].latency += bench.drive(case, lat_events, predictions, worker, levels,
                                                  peers.systems[key].name)


def measure_gap(bench: Bench, repeat: int) -> list[tuple[GapVariant, list[MaxRun]]]:
    """The linear worker's throughput under each of ``GAP_VARIANTS``, ``repeat`` rounds.

    Rounds are interleaved (every variant once, then again) so that a busy
    moment of the machine does not land on one variant only.
    """
    case = CASES[0]
    log(f"gap: {len(GAP_VARIANTS)} setups, {repeat} round(s)")
    pool = samples(max(v.events for v in GAP_VARIANTS))
    overrides = checkpoint_overrides(bench.args.redis, bench.run_id)
    runs: dict[GapVariant, list[MaxRun]] = {v: [] for v in GAP_VARIANTS}
    for round_ in range(repeat):
        for i, v in enumerate(GAP_VARIANTS):
            if v.checkpoints and isinstance(overrides, str):
                log(f"gap: skipping {v.name!r}: {overrides}")
                continue
            drop = list(pool[0][0])[v.features:]
            part = [({k: x[k] for k in x if k not in drop}, y) for x, y in pool[: v.events]]
            values = encoded_events(part, True, v.sensors)
            extra: dict[str, Any] = {}
            if v.checkpoints and not isinstance(overrides, str):
                extra.update(overrides)
                bench.used_redis = True
            if not v.drift:
                extra["drift"] = {"enabled": False}
            run = bench.max_throughput(case, values, f"gap-{round_}-{i}", extra=extra,
                                       sensors=v.sensors, live=v.live)
            runs[v].append(run)
            log(f"gap: {v.name}: {run.events_per_s:,.0f} events/s from the first record, "
                f"{run.records / run.since_run_s:,.0f} from the start of the loop, "
                f"{run.records / run.since_spawn_s:,.0f} from the start of the process; "
                f"{run.cpu_s_per_m:,.1f} CPU µs per event")
    return [(v, rs) for v, rs in runs.items() if rs]


def measure_checkpoints(
    bench: Bench, case: Case, values: Sequence[bytes], overrides: Mapping[str, Any],
    result: CaseResult,
) -> None:
    """Throughput with a checkpoint every second, then a second worker's restore."""
    what = f"{case.name}-ckpt"
    bench.used_redis = True
    try:
        result.checkpoint = bench.max_throughput(case, values, what, extra=overrides)
    except Exception as exc:
        result.checkpoint = result.restore = f"not measured: checkpoint run failed ({exc!s:.300})"
        return
    # A second worker of the same group restores what the first one saved, then idles out.
    events = f"bench-{bench.run_id}-{what}-events"
    settings = bench.worker_settings(case, events, f"{what}-restore", idle_timeout_s=2.0)
    settings["kafka"]["group_id"] = bench.group(what)
    for section, values_ in overrides.items():
        settings[section] = {**settings.get(section, {}), **values_}
    try:
        restored = bench.worker_result(bench.start_worker({"settings": settings}), timeout=120)
        result.restore = MaxRun(0.0, 0.0, restored["maxrss_kib"] / 1024.0, 0, 0.0,
                                state_metrics=restored["state_metrics"])
    except Exception as exc:
        result.restore = f"not measured: restore run failed ({exc!s:.300})"
