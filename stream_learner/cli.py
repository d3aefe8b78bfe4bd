"""Command line: ``stream-learner run | check``.

``stream-learner check --live [URL]`` probes a running worker's ``/healthz``
and ``/readyz`` (the container healthcheck); plain ``check`` validates the
settings, the model and the broker without starting.

Thin on purpose: parse arguments, load settings, build the edges, run. This is
the only module that configures logging or installs signal handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from stream_learner import __version__
from stream_learner.errors import StreamLearnerError
from stream_learner.health import DEFAULT_TIMEOUT_S, metrics_url, probe
from stream_learner.metrics import Metrics, MetricsServer
from stream_learner.models import ModelSpec
from stream_learner.service import Service
from stream_learner.settings import Settings, load_settings
from stream_learner.sinks import FileSink, KafkaSink, Sink
from stream_learner.sources import FileSource, KafkaSource, Source

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


def build_edges(settings: Settings, environ: dict[str, str]) -> tuple[Source, Sink]:
    """The source and sink the settings ask for."""
    if settings.service.transport == "kafka":
        return KafkaSource(settings, environ), KafkaSink(settings, environ)
    local = settings.local
    targets = {
        "predictions": None if local.quiet else local.output,
        "dead_letters": local.dead_letters,
    }
    return FileSource(local.input), FileSink(targets)


def _install_signal_handlers(service: Service) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s: finishing the current batch", signal.Signals(signum).name)
        service.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _run(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    spec = ModelSpec.from_settings(settings.model)
    metrics = Metrics()
    server = None
    if settings.metrics.enabled:
        server = MetricsServer(metrics, settings.metrics.host, settings.metrics.port).start()
        log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
    source, sink = build_edges(settings, environ)
    service = Service(settings, spec, source, sink, metrics)
    _install_signal_handlers(service)
    try:
        summary = service.run()
    finally:
        sink.close()
        source.close()
        if server is not None:
            server.close()
    print(summary.render(), file=sys.stderr)
    if args.summary_json:
        Path(args.summary_json).write_bytes(orjson.dumps(summary.to_dict()))
    return 0


def _check(settings: Settings, environ: dict[str, str]) -> int:
    ModelSpec.from_settings(settings.model)
    if settings.service.transport == "kafka":
        source, sink = build_edges(settings, environ)
        sink.close()
        source.close()
    print("ok: settings valid, model builds" + (
        f", Kafka reachable at {settings.kafka.bootstrap_servers}"
        if settings.service.transport == "kafka" else ""
    ))
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
        return _run(settings, environ, args)
    except StreamLearnerError as exc:
        log.error("%s", exc)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
