"""Command line: ``stream-learner run | check``.

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
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from stream_learner import __version__, admin
from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.drift_watch import make_watch
from stream_learner.errors import ModelConfigError, SettingsError, StreamLearnerError
from stream_learner.health import DEFAULT_TIMEOUT_S, metrics_url, probe
from stream_learner.metrics import Metrics, MetricsServer
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer
from stream_learner.service import ExactlyOnce, Service
from stream_learner.settings import Settings, load_settings
from stream_learner.sinks import FileSink, KafkaSink, Sink, output_topics
from stream_learner.sources import FileSource, KafkaSource, Source
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
    ckpt = sub.add_parser("checkpoints", help="list, show or roll back shard checkpoints")
    ckpt.add_argument("-c", "--config", help="TOML settings file (names the store)")
    ckpt.add_argument("action", choices=["list", "show", "rollback"])
    ckpt.add_argument("shard", nargs="?", help="shard name, e.g. events:0")
    ckpt.add_argument("id", nargs="?", type=int, help="checkpoint id (show: default newest)")
    return parser


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
        eos = settings.service.guarantee == "exactly_once"
        with _quiet_client_logs():
            source = KafkaSource(settings, environ, list(output_topics(settings).values()))
            try:
                return source, KafkaSink(settings, environ, transactional=eos)
            except BaseException:
                source.close()
                raise
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


def _run(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    spec = _model_spec(settings)
    metrics = Metrics()
    server = None
    if settings.metrics.enabled:
        server = MetricsServer(metrics, settings.metrics.host, settings.metrics.port).start()
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    checkpointer = build_checkpointer(settings, spec, metrics, environ)
    source, sink = build_edges(settings, environ)
    committer = None
    eos = settings.service.guarantee == "exactly_once"
    if eos and isinstance(sink, KafkaSink) and isinstance(source, KafkaSource):
        committer = ExactlyOnce(source, sink)
    service = Service(settings, spec, source, sink, metrics, checkpointer, committer)
    _install_signal_handlers(service)
    try:
        summary = service.run()
    finally:
        sink.close()
        source.close()
        checkpointer.close()
        if server is not None:
            server.close()
    print(summary.render(), file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(summary.to_dict()))
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
        return _run(settings, environ, args)
    except (SettingsError, ModelConfigError) as exc:
        log.error("configuration: %s", exc)
        return 2
    except StreamLearnerError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
