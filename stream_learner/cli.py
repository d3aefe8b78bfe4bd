"""Command line: ``stream-learner run | check | checkpoints | replay | simulate``.

``replay`` runs history (files or a topic range) through the service and can
write a warm-start checkpoint (:mod:`stream_learner.backtest`); ``simulate``
publishes a sensor stream (:mod:`stream_learner.simulate`); see ``docs/replay.md``.

``stream-learner check --live [URL]`` probes a running worker's ``/healthz``
and ``/readyz`` (the container healthcheck); plain ``check`` validates the
settings, the model and the broker without starting.

Thin on purpose: parse arguments, load settings, build the edges, run. This is
the only module that configures logging or installs signal handlers.

Exit codes: 0 done; 1 a server or topic cannot be used (one line naming its
address); 2 the configuration is wrong (the message names the key and the
expected form).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from stream_learner import __version__, admin
from stream_learner.backtest import BacktestOptions, run_backtest
from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.drift_watch import make_watch
from stream_learner.errors import ModelConfigError, SettingsError, StreamLearnerError
from stream_learner.health import DEFAULT_TIMEOUT_S, metrics_url, probe
from stream_learner.metrics import Metrics, MetricsServer
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer
from stream_learner.replay import LabelDelay
from stream_learner.service import Service
from stream_learner.settings import Settings, load_settings
from stream_learner.simulate import FileWriter, KafkaWriter, SimulationPlan, publish, simulate
from stream_learner.sinks import FileSink, Sink, output_topics
from stream_learner.sources import FileSource, Source
from stream_learner.stores import CheckpointStore, LocalStore, RedisStore
from stream_learner.tasks import make_task

__all__ = ["build_edges", "main"]

log = logging.getLogger("stream_learner")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-learner",
        description="Score events with an online River model while it learns from labels.",
    )
    parser.add_argument("--version", action="version", version=f"stream-learner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the service (embedded default without -c)")
    check = sub.add_parser("check", help="validate settings, model and connectivity, then exit")
    for p in (run, check):
        p.add_argument("-c", "--config", help="TOML settings file (default: built-in defaults)")
    check.add_argument(
        "--live", nargs="?", const="", metavar="URL",
        help="probe a running worker's /healthz and /readyz instead; exit 0 only if ready "
        "(default URL: the [metrics] endpoint of the settings)",
    )
    check.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help=f"--live: seconds each request may take (default {DEFAULT_TIMEOUT_S:g})",
    )
    run.add_argument("--input", help="local transport: JSON Lines path, '-' or river:<Dataset>")
    run.add_argument("--output", help="local transport: predictions path or '-'")
    run.add_argument("--max-events", type=int, help="stop after this many input records")
    run.add_argument("--quiet", action="store_true", help="do not write predictions (local)")
    run.add_argument("--summary-json", help="also write the run summary as JSON to this path")
    _replay_parser(sub)
    _simulate_parser(sub)
    ckpt = sub.add_parser("checkpoints", help="list, show or roll back shard checkpoints")
    ckpt.add_argument("-c", "--config", help="TOML settings file (names the store)")
    ckpt.add_argument("action", choices=["list", "show", "rollback"])
    ckpt.add_argument("shard", nargs="?", help="shard name, e.g. events:0")
    ckpt.add_argument("id", nargs="?", type=int, help="checkpoint id (show: default newest)")
    return parser


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _replay_parser(sub: Any) -> None:
    p = sub.add_parser("replay", help="run history (files or a topic range) through the service")
    p.add_argument("-c", "--config", help="TOML settings file (default: built-in defaults)")
    p.add_argument("inputs", nargs="*", metavar="FILE",
                   help="JSON Lines or .csv files ('-': stdin); none: a range of kafka.events_topic")
    p.add_argument("--start", default="earliest", metavar="SPEC",
                   help="topic range start: earliest | OFFSET | P:OFFSET,... | @TIME (default earliest)")
    p.add_argument("--end", default="latest", metavar="SPEC",
                   help="topic range end, exclusive (default: the end when the replay starts)")
    p.add_argument("--partitions", type=_ints, default=(), metavar="P,...",
                   help="topic partitions to replay (default: all)")
    p.add_argument("--sort-by-ts", action="store_true", help="files: replay in event-time order")
    delay = p.add_mutually_exclusive_group()
    delay.add_argument("--label-delay", type=int, metavar="EVENTS",
                       help="re-emit each inline label as a label record this many events later")
    delay.add_argument("--label-ts-field", metavar="FIELD",
                       help="re-emit each inline label when event time reaches this field's time")
    p.add_argument("--output", help="predictions: JSON Lines path or '-' (local.output)")
    p.add_argument("--output-topic", default="", help="predictions to this Kafka topic instead")
    p.add_argument("--alerts", default="", help="drift alerts to this JSON Lines file")
    p.add_argument("--quiet", action="store_true", help="do not write predictions")
    p.add_argument("--max-events", type=int, help="stop after this many records")
    p.add_argument("--summary-json", help="also write the run summary as JSON to this path")
    p.add_argument("--checkpoint-to", metavar="STORE",
                   help="write a warm-start checkpoint: 'redis' ([checkpoint] settings) or a folder")
    p.add_argument("--resume-offset", type=int,
                   help="files: offset of <events_topic>:<--partition> the live worker starts at")
    p.add_argument("--partition", type=int, default=0,
                   help="files: the events partition the warm start is for (default 0)")


def _simulate_parser(sub: Any) -> None:
    p = sub.add_parser("simulate", help="publish a simulated sensor stream")
    p.add_argument("-c", "--config", help="TOML settings file (the [kafka] section is used)")
    p.add_argument("--source", default="agrawal",
                   help="agrawal | sea | sine | stagger | friedman | river:<Dataset> (default agrawal)")
    p.add_argument("--to", choices=["kafka", "file"], default="file",
                   help="kafka: kafka.events_topic; file: --output (default file)")
    p.add_argument("--output", dest="sim_output", default="-", help="file path or '-' (stdout)")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: at once)")
    p.add_argument("--count", type=int, default=0, help="events to publish (0: forever)")
    p.add_argument("--keys", type=int, default=10, help="number of sensors (default 10)")
    p.add_argument("--seed", type=int, default=42, help="seed of everything random (default 42)")
    p.add_argument("--label-delay", type=int, metavar="EVENTS",
                   help="labels as label records this many events later (default: inline)")
    p.add_argument("--drift-at", type=_ints, default=(), metavar="N,...",
                   help="event counts where the concept changes")
    p.add_argument("--drift-width", type=int, default=1, help="events per change (1: abrupt)")
    p.add_argument("--variants", type=_ints, default=(), metavar="V,...",
                   help="concept variant of each segment (default 0,1,2,...)")
    p.add_argument("--start-ts", default="", help="event time of the first event (epoch or ISO)")


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    local = {
        "input": getattr(args, "input", None),
        "output": getattr(args, "output", None),
        "quiet": True if getattr(args, "quiet", False) else None,
    }
    service = {"max_events": getattr(args, "max_events", None)}
    out = {
        section: {k: v for k, v in values.items() if v is not None}
        for section, values in {"local": local, "service": service}.items()
    }
    return {k: v for k, v in out.items() if v}


@contextlib.contextmanager
def _quiet_client_logs() -> Iterator[None]:
    """Keep the Kafka client's retry chatter out of the one-line start-up error."""
    client = logging.getLogger("kafka")
    level = client.level
    client.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        client.setLevel(level)


def build_edges(settings: Settings, environ: dict[str, str]) -> tuple[Source, Sink]:
    """The source and sink the settings ask for."""
    if settings.service.transport == "kafka":
        from stream_learner.kafka.factory import build_edges as kafka_edges

        with _quiet_client_logs():
            source: Source
            sink: Sink
            source, sink = kafka_edges(settings, environ, list(output_topics(settings).values()))
            return source, sink
    local = settings.local
    targets = {
        "predictions": None if local.quiet else local.output,
        "dead_letters": local.dead_letters,
        "learn_dead_letters": local.learn_dead_letters,
        "alerts": local.alerts,
        "metrics": local.metrics,
    }
    return FileSource(local.input), FileSink(targets)


def build_store(settings: Settings, environ: Mapping[str, str]) -> CheckpointStore | None:
    """The checkpoint store the settings ask for (``None`` when disabled)."""
    c = settings.checkpoint
    if c.store == "local":
        return LocalStore(c.directory, keep=c.keep)
    if c.store == "redis":
        password = environ.get(c.redis_password_env) if c.redis_password_env else None
        prefix = c.key_prefix or f"stream-learner:{settings.kafka.group_id}"
        return RedisStore(
            c.redis_url, prefix, keep=c.keep, username=c.redis_username or None,
            password=password, timeout_s=c.timeout_s,
        )
    return None


def build_codec(settings: Settings, spec: ModelSpec, environ: Mapping[str, str]) -> EnvelopeCodec:
    """The envelope codec, keyed from the environment variable ``checkpoint.key_env``."""
    name = settings.checkpoint.key_env
    key = environ.get(name, "").encode("utf-8")
    if len(key) < 16:
        raise SettingsError(
            f"checkpoint.store = {settings.checkpoint.store!r} needs a signing key of at least "
            f"16 bytes in the environment variable {name} (checkpoint.key_env)"
        )
    return EnvelopeCodec(key, spec.config_hash)


def build_checkpointer(
    settings: Settings, spec: ModelSpec, metrics: Metrics, environ: Mapping[str, str]
) -> Checkpointer | NullCheckpointer:
    """Checkpointing as configured; a null object when ``checkpoint.store = none``."""
    store = build_store(settings, environ)
    if store is None:
        return NullCheckpointer()
    codec = build_codec(settings, spec, environ)
    return Checkpointer(store, codec, settings.checkpoint, metrics, time.time, time.monotonic)


def _install_signal_handlers(service: Service) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        service.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _model_spec(settings: Settings) -> ModelSpec:
    """The model spec, with the ``[drift]`` detectors checked against it."""
    spec = ModelSpec.from_settings(settings.model)
    make_watch(spec, make_task(spec.task, spec.build_metric()), settings.drift)
    return spec


#: Allocations between two young collections (Python's default is 700). The loop
#: allocates a few dozen short-lived objects per event and frees nearly all of
#: them by reference counting, so young collections find little; with 10,000 the
#: linear worker did 5 to 17 % more events/s through the broker in three paired runs.
GC_YOUNG_THRESHOLD = 10_000


def settle_heap() -> None:
    """Collect start-up garbage, freeze what start-up left, and collect the young less often.

    Imports (River, SciPy, NumPy, the Kafka client) leave about 110,000
    long-lived objects, and every full collection walks them all: 55-60 ms on
    an idle process, 62 and 72 ms measured for full collections inside the loop
    at 5,000 events/s, each one a pause of the stream. After ``gc.freeze()`` a
    full collection walks only what the service allocated since (1.5 ms for the
    one seen inside the loop). Called once, right before the loop starts.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def _close_after_error(closers: Sequence[Callable[[], None]]) -> None:
    """Close everything after an error; a failure to close is logged, so the error stays
    the one the log and the exit line show."""
    for close in closers:
        try:
            close()
        except Exception as exc:
            log.warning("while stopping after an error: %s: %s", type(exc).__name__, exc)


def _run(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    spec = _model_spec(settings)
    metrics = Metrics()
    server = None
    if settings.metrics.enabled:
        server = MetricsServer(metrics, settings.metrics.host, settings.metrics.port).start()
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    checkpointer = build_checkpointer(settings, spec, metrics, environ)
    source, sink = build_edges(settings, environ)
    service = Service(settings, spec, source, sink, metrics, checkpointer)
    _install_signal_handlers(service)
    settle_heap()
    closers = [sink.close, source.close, checkpointer.close]
    if server is not None:
        closers.append(server.close)
    try:
        summary = service.run()
    except BaseException:
        _close_after_error(closers)
        raise
    for close in closers:
        close()
    print(summary.render(), file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(summary.to_dict()))
    return 0


def _replay(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    spec = ModelSpec.from_settings(settings.model)
    options = BacktestOptions(
        inputs=tuple(args.inputs), start=args.start, end=args.end, partitions=args.partitions,
        sort_by_ts=args.sort_by_ts,
        label_delay=LabelDelay(events=args.label_delay, field=args.label_ts_field),
        output_topic=args.output_topic, alerts=args.alerts,
        resume_offset=args.resume_offset, partition=args.partition,
    )
    store = codec = None
    if args.checkpoint_to:
        c = settings.checkpoint
        if args.checkpoint_to == "redis":
            store = build_store(settings.model_copy(update={
                "checkpoint": c.model_copy(update={"store": "redis"})}), environ)
        else:
            store = LocalStore(args.checkpoint_to, keep=c.keep)
        codec = build_codec(settings, spec, environ)
    try:
        result = run_backtest(settings, spec, environ, options, store, codec)
    finally:
        if store is not None:
            store.close()
    print(result.render(), file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(
            {**result.summary.to_dict(), "drift_points": result.drift.alerts,
             "checkpoints": result.checkpoints}))
    return 0


def _simulate(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    from stream_learner.events import parse_ts

    extra = {"start_ts": parse_ts(float(args.start_ts) if args.start_ts.replace(".", "").isdigit()
                                  else args.start_ts)} if args.start_ts else {}
    plan = SimulationPlan(
        source=args.source, count=args.count, keys=args.keys, seed=args.seed,
        label_delay=args.label_delay, drift_at=args.drift_at, drift_width=args.drift_width,
        variants=args.variants, **extra,
    )
    if args.to == "kafka":
        with _quiet_client_logs():
            writer: FileWriter | KafkaWriter = KafkaWriter(
                settings.kafka, environ, settings.kafka.events_topic)
    else:
        writer = FileWriter(args.sim_output)
    stopping: list[bool] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    stats = publish(simulate(plan), writer, args.rate, should_stop=lambda: bool(stopping))
    print(stats.render(), file=sys.stderr)
    return 0


def _check(settings: Settings, environ: dict[str, str]) -> int:
    _model_spec(settings)
    if settings.service.transport == "kafka":
        source, sink = build_edges(settings, environ)
        sink.close()
        source.close()
    print("ok: settings valid, model builds" + (
        f", Kafka reachable at {settings.kafka.bootstrap_servers}"
        if settings.service.transport == "kafka" else ""
    ))
    return 0


def _checkpoints(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    store = build_store(settings, environ)
    if store is None:
        raise SettingsError("checkpoint.store is 'none': there are no checkpoints to manage")
    codec = build_codec(settings, ModelSpec.from_settings(settings.model), environ)
    try:
        if args.action == "list":
            print(admin.list_checkpoints(store, codec, args.shard))
        elif args.shard is None:
            raise SettingsError(f"checkpoints {args.action} needs a shard, e.g. events:0")
        elif args.action == "show":
            print(admin.show_checkpoint(store, codec, args.shard, args.id))
        elif args.id is None:
            raise SettingsError("checkpoints rollback needs a shard and a checkpoint id")
        else:
            new_id = admin.rollback(store, codec, args.shard, args.id, time.time)
            print(f"shard {args.shard}: checkpoint {args.id} is now checkpoint {new_id}; "
                  "workers resume from it at the committed offsets")
    finally:
        store.close()
    return 0


def _check_live(url: str, timeout_s: float) -> int:
    result = probe(url, timeout_s)
    print(result.message if result.ok else f"stream-learner: {result.message}",
          file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stream-learner`` console script."""
    args = _parser().parse_args(argv)
    environ = dict(os.environ)
    try:
        settings = load_settings(args.config, environ, _cli_overrides(args))
    except StreamLearnerError as exc:
        print(f"stream-learner: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.service.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        if args.command == "check" and args.live is not None:
            return _check_live(args.live or metrics_url(settings.metrics), args.timeout)
        if args.command == "check":
            return _check(settings, environ)
        if args.command == "checkpoints":
            return _checkpoints(settings, environ, args)
        if args.command == "replay":
            return _replay(settings, environ, args)
        if args.command == "simulate":
            return _simulate(settings, environ, args)
        return _run(settings, environ, args)
    except (SettingsError, ModelConfigError) as exc:
        log.error("configuration: %s", exc)
        return 2
    except StreamLearnerError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
