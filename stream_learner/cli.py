"""Command line: ``stream-learner run | check | checkpoints | replay | simulate | report``.

``replay`` runs history (files or a topic range) through the service and can
write a warm-start checkpoint (:mod:`stream_learner.backtest`); ``simulate``
publishes a sensor stream (:mod:`stream_learner.simulate`); see ``docs/replay.md``.
``report`` turns a finished run's files into one self-contained HTML page, the
live page's view of the run (:mod:`stream_learner.dashboard`, ``docs/dashboard.md``).

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
import dataclasses
import difflib
import errno
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from stream_learner import __version__, admin
from stream_learner.backtest import BacktestOptions, run_backtest
from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.dashboard import render_page
from stream_learner.dashboard.report import ReportInputs, build_report
from stream_learner.datasets import BUNDLED
from stream_learner.drift import make_watch
from stream_learner.errors import (
    CheckpointError,
    CheckpointFenced,
    ConnectionFailed,
    InvalidLabel,
    InvalidRecord,
    ModelConfigError,
    SettingsError,
    StreamLearnerError,
    os_reason,
)
from stream_learner.events import Codec, Origin
from stream_learner.guard import Guard, build_suspects
from stream_learner.health import DEFAULT_TIMEOUT_S, metrics_url, probe
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics, MetricsServer, try_listen
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer, shard_id
from stream_learner.replay import LabelDelay
from stream_learner.service import Service
from stream_learner.settings import MetricsSettings, Settings, load_settings, unknown_variables
from stream_learner.simulate import FileWriter, KafkaWriter, SimulationPlan, publish, simulate
from stream_learner.sinks import LOCAL_SETTING, FileSink, Sink, local_outputs, output_topics
from stream_learner.sources import FileSource, Source
from stream_learner.stores import CheckpointStore, LocalStore, RedisStore, redact_url
from stream_learner.summary import Summary
from stream_learner.tasks import make_task

__all__ = ["build_edges", "main"]

log = logging.getLogger("stream_learner")


def _sub(sub: Any, name: str, summary: str, description: str, examples: str) -> Any:
    """A subcommand whose ``--help`` says what it does and shows examples."""
    return sub.add_parser(
        name, help=summary, description=description,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stream-learner",
        description="Score events with an online River model while it learns from labels.",
        epilog="examples:\n  stream-learner run                      # the embedded default\n"
        "  stream-learner run -c config/kafka.toml # a worker of a consumer group\n"
        "  stream-learner COMMAND --help           # what each command does",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stream-learner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = _sub(
        sub, "run", "run the service (embedded default without -c)",
        "Score every event, learn every label, watch for drift. With the local transport\n"
        "(the default) events come from --input and predictions go to --output; with\n"
        "service.transport = 'kafka' the worker joins its consumer group and runs until\n"
        "stopped. Output files are overwritten unless --append. Ctrl-C finishes the\n"
        "current batch and exits 130; a second Ctrl-C exits at once.",
        """
stream-learner run                                   # river:WaterFlow to stdout
stream-learner run -c config/demo.toml --input events.jsonl --output predictions.jsonl
producer | stream-learner run -c config/demo.toml --input - --quiet
stream-learner run -c config/kafka.toml              # a Kafka worker""",
    )
    check = _sub(
        sub, "check", "validate settings, model and connectivity, then exit",
        "Validate the settings, build the model and try it on a sample record (the first\n"
        "records of the local input, else a made-up one), and reach the broker when the\n"
        "transport is kafka. With --live, probe a running worker's /healthz and /readyz.",
        """
stream-learner check -c config/demo.toml --input events.jsonl
stream-learner check -c config/kafka.toml
stream-learner check --live http://127.0.0.1:9108""",
    )
    for p in (run, check):
        p.add_argument("-c", "--config", help="TOML settings file (default: built-in defaults)")
        p.add_argument("--input", help="local transport: JSON Lines path, '-' or river:<Dataset>")
    check.add_argument(
        "--live", nargs="?", const="", metavar="URL",
        help="probe a running worker's /healthz and /readyz instead; exit 0 only if ready "
        "(default URL: the [metrics] endpoint of the settings)",
    )
    check.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help=f"--live: seconds each request may take (default {DEFAULT_TIMEOUT_S:g})",
    )
    shown = run.add_mutually_exclusive_group()  # --quiet would drop the file --output names
    shown.add_argument("--output", help="local transport: predictions path or '-'")
    run.add_argument("--append", action="store_true",
                     help="append to the output files instead of overwriting them")
    run.add_argument("--max-events", type=int, metavar="N",
                     help="stop after N input records (events and label records both count)")
    shown.add_argument("--quiet", action="store_true", help="do not write predictions (local)")
    run.add_argument("--summary-json", help="also write the run summary as JSON to this path")
    _replay_parser(sub)
    _simulate_parser(sub)
    _report_parser(sub)
    _checkpoints_parser(sub)
    return parser


def _checkpoints_parser(sub: Any) -> None:
    ckpt = _sub(
        sub, "checkpoints", "list, show or roll back shard checkpoints",
        "Manage the checkpoints of the store the settings name ([checkpoint] store).",
        """
stream-learner checkpoints -c worker.toml list
stream-learner checkpoints -c worker.toml show events:0
stream-learner checkpoints -c worker.toml rollback events:0 41""",
    )
    ckpt.add_argument("-c", "--config", help="TOML settings file (names the store)")
    actions = ckpt.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, summary, description, example in (
        ("list", "list the kept checkpoints", "One line per kept checkpoint: shard, id, "
         "created, offsets, generation, size.", "list\nstream-learner checkpoints -c "
         "worker.toml list events:0"),
        ("show", "show one checkpoint's verified header", "The verified header of a "
         "checkpoint as JSON (the newest of the shard by default).", "show events:0 41"),
        ("rollback", "make an older checkpoint the newest", "Copy checkpoint ID of SHARD as "
         "its newest checkpoint; workers resume from it.\nStop the group's workers first.",
         "rollback events:0 41"),
    ):
        p = _sub(actions, name, summary, description,
                 f"stream-learner checkpoints -c worker.toml {example}")
        p.add_argument("-c", "--config", default=argparse.SUPPRESS,
                       help="TOML settings file (names the store)")
        p.add_argument("shard", nargs="?" if name == "list" else None,
                       help="shard name, e.g. events:0" + (" (default every shard)"
                                                           if name == "list" else ""))
        if name != "list":
            p.add_argument("id", nargs="?" if name == "show" else None, type=int,
                           help="checkpoint id" + (" (default newest)" if name == "show" else ""))


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _replay_parser(sub: Any) -> None:
    p = _sub(
        sub, "replay", "run history (files or a topic range) through the service",
        "Run recorded events through the same service loop as a live worker, as fast as\n"
        "they can be read: a backtest with the online metric, the drift points and,\n"
        "optionally, a warm-start checkpoint for a live worker (docs/replay.md).",
        """
stream-learner replay -c config/demo.toml history.jsonl --label-delay 50 --quiet
stream-learner replay -c config/kafka.toml --start @2026-01-01T00:00:00Z --alerts drift.jsonl
stream-learner replay -c worker.toml history.jsonl --checkpoint-to redis --resume-offset 0""",
    )
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
    shown = p.add_mutually_exclusive_group()  # --quiet would drop what --output names
    shown.add_argument("--output", help="predictions: JSON Lines path or '-' (local.output)")
    shown.add_argument("--output-topic", default="",
                       help="predictions to this Kafka topic instead")
    p.add_argument("--alerts", default="", help="drift alerts to this JSON Lines file")
    shown.add_argument("--quiet", action="store_true", help="do not write predictions")
    p.add_argument("--max-events", type=int,
                   help="stop after this many records (not with --checkpoint-to)")
    p.add_argument("--summary-json", help="also write the run summary as JSON to this path")
    p.add_argument("--checkpoint-to", metavar="STORE",
                   help="write a warm-start checkpoint: 'redis' ([checkpoint] settings) or a folder")
    p.add_argument("--resume-offset", type=int,
                   help="files: offset of <events_topic>:<--partition> the live worker starts at")
    p.add_argument("--partition", type=int, default=0,
                   help="files: the events partition the warm start is for (default 0)")


def _simulate_parser(sub: Any) -> None:
    p = _sub(
        sub, "simulate", "publish a simulated sensor stream",
        "Publish events from River's synthetic generators (or a bundled dataset) with\n"
        "concept drifts where asked and labels inline or some events late, to a JSON\n"
        "Lines file or to kafka.events_topic.",
        """
stream-learner simulate --count 20000 --keys 20 --drift-at 10000 --output events.jsonl
stream-learner simulate --rate 200 --label-delay 50 --to kafka -c config/kafka.toml
stream-learner simulate --rate 200 --to kafka --resume   # after a restart: ids go on""",
    )
    p.add_argument("-c", "--config", help="TOML settings file (the [kafka] section is used)")
    p.add_argument("--source", default="agrawal",
                   help="agrawal | sea | sine | stagger | friedman | river:<Dataset> (default agrawal)")
    p.add_argument("--to", choices=["kafka", "file"], default="file",
                   help="kafka: kafka.events_topic; file: --output (default file)")
    p.add_argument("--output", dest="sim_output", default="-", help="file path or '-' (stdout)")
    p.add_argument("--rate", type=_non_negative, default=0.0,
                   help="events per second (0: at once)")
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
    p.add_argument("--resume", action="store_true",
                   help="go on after the last event id already in the topic or --output file "
                   "(appended to), instead of starting again at id 0")


def _report_parser(sub: Any) -> None:
    p = _sub(
        sub, "report", "a finished run's files as one self-contained HTML page",
        "Draw the operator's page (docs/dashboard.md) from the files a local run wrote:\n"
        "throughput and latency, online metric, drift timeline, label delays, dead letters\n"
        "and models, in one HTML file that needs nothing from the network.",
        """
stream-learner report --metrics metrics.jsonl -o run.html
stream-learner report --metrics metrics.jsonl --predictions predictions.jsonl \\
    --labels events.jsonl --alerts alerts.jsonl --dead-letters dead-letters.jsonl -o run.html""",
    )
    p.add_argument("-c", "--config", help="TOML settings file (the [schema] field names)")
    p.add_argument("--metrics", required=True, metavar="FILE",
                   help="metrics snapshots (JSON Lines, local.metrics)")
    p.add_argument("--predictions", default="", metavar="FILE", help="predictions (local.output)")
    p.add_argument("--labels", default="", metavar="FILE",
                   help="the input with its label records, for label delays")
    p.add_argument("--alerts", default="", metavar="FILE", help="drift alerts (local.alerts)")
    p.add_argument("--dead-letters", default="", metavar="FILE", help="local.dead_letters")
    p.add_argument("--learn-dead-letters", default="", metavar="FILE",
                   help="local.learn_dead_letters")
    p.add_argument("--json", default="", metavar="FILE", help="also write the document as JSON")
    p.add_argument("-o", "--output", dest="report_output", required=True, metavar="FILE",
                   help="the HTML file to write")


def _cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    local = {
        "input": getattr(args, "input", None),
        "output": getattr(args, "output", None),
        "quiet": True if getattr(args, "quiet", False) else None,
        "append": True if getattr(args, "append", False) else None,
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


def build_edges(
    settings: Settings, environ: dict[str, str], deferred: bool = False
) -> tuple[Source, Sink]:
    """The source and sink the settings ask for.

    ``deferred``: local output files are truncated only when the run starts
    (:meth:`FileSink.begin`), not when they are opened.
    """
    if settings.service.transport == "kafka":
        from stream_learner.kafka.factory import build_edges as kafka_edges

        with _quiet_client_logs():
            source: Source
            sink: Sink
            source, sink = kafka_edges(settings, environ, list(output_topics(settings).values()))
            return source, sink
    local = settings.local
    check_input(local.input)
    sink = FileSink(local_outputs(settings), append=local.append, deferred=deferred)
    return FileSource(local.input, resumable=settings.checkpoint.store != "none"), sink


def build_store(settings: Settings, environ: Mapping[str, str]) -> CheckpointStore | None:
    """The checkpoint store the settings ask for (``None`` when disabled)."""
    c = settings.checkpoint
    if c.store == "local":
        return LocalStore(c.directory, keep=c.keep)
    if c.store == "redis":
        password = c.redis_password(environ)
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
    return Checkpointer(store, codec, settings.checkpoint, metrics, time.time, time.monotonic,
                        exactly_once=settings.service.guarantee == "exactly_once")


class Interrupts:
    """SIGINT / SIGTERM: the first finishes the current batch, a second exits at once.

    An interrupt also ends a ``--input -`` run whose writer is idle: standard
    input is switched to ``/dev/null``, so the blocked read sees its end.
    ``exit_code`` is 130 after Ctrl-C (128 + SIGINT, the shell convention) and 0
    after SIGTERM, the normal way to stop a worker.
    """

    def __init__(self, stop: Callable[[], None], stdin_input: bool) -> None:
        self._stop = stop
        self._stdin_input = stdin_input
        self.received: int | None = None

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on."""
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            os.write(2, b"stream-learner: interrupted again: forced exit, the last outputs "
                        b"may be incomplete\n")
            os._exit(128 + signum)
        self.received = signum
        log.warning("interrupted (%s): finishing the current batch; interrupt again to force",
                    signal.Signals(signum).name)
        self._stop()
        if self._stdin_input:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, sys.stdin.fileno())
            os.close(null)

    @property
    def exit_code(self) -> int:
        """130 after SIGINT, 0 after SIGTERM or none."""
        return 128 + signal.SIGINT if self.received == signal.SIGINT else 0


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

#: Collections of the middle generation before a full one may run (Python's
#: default is 10; a full one also waits until the old generation has grown by a
#: quarter). Per-key models are long-lived and hold no reference cycles, and a
#: full collection walks every one of them: growing to 100,000 resident models
#: took 5 full collections with 10, 10.4 s in all and up to 3.1 s each (pauses
#: of the stream), and none with 100 (``scripts/bench_scale.py
#: --gc-old-threshold``). Cyclic garbage is still collected, later.
GC_OLD_THRESHOLD = 100


def settle_heap() -> None:
    """Collect start-up garbage, freeze what start-up left, and collect less often.

    Imports (River, SciPy, NumPy, the Kafka client) leave about 110,000
    long-lived objects, and every full collection walks them all: 55-60 ms on
    an idle process, 62 and 72 ms measured for full collections inside the loop
    at 5,000 events/s, each one a pause of the stream. After ``gc.freeze()`` a
    full collection walks only what the service allocated since (1.5 ms for the
    one seen inside the loop). Young collections run every
    :data:`GC_YOUNG_THRESHOLD` allocations, full ones after
    :data:`GC_OLD_THRESHOLD` collections of the middle generation. Called once,
    right before the loop starts.
    """
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, GC_OLD_THRESHOLD)


def check_input(location: str) -> None:
    """Fail in one line when ``local.input`` cannot be read (before anything starts).

    Examples
    --------
    >>> check_input("river:WaterFlo")
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: local.input (--input): no bundled River dataset 'WaterFlo' (did you mean 'WaterFlow'?); choose one of Bananas, ChickWeights, Phishing, TrumpApproval, WaterFlow
    """
    setting = "local.input (--input)"
    if location == "-":
        return
    if location.startswith("river:"):
        name = location.removeprefix("river:")
        if name not in BUNDLED:
            close = difflib.get_close_matches(name, list(BUNDLED), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(f"{setting}: no bundled River dataset {name!r}{hint}; "
                                f"choose one of {', '.join(sorted(BUNDLED))}")
        return
    check_readable(location, setting)


def check_readable(location: str, setting: str, kind: str = "JSON Lines file") -> None:
    """Fail in one line when the file ``location`` cannot be read.

    Examples
    --------
    >>> check_readable("/", "replay FILE", "JSON Lines or CSV file")
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: replay FILE: / is a folder, not a JSON Lines or CSV file
    """
    path = Path(location)
    if path.is_dir():
        raise SettingsError(f"{setting}: {location} is a folder, not a {kind}")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise SettingsError(f"{setting}: cannot read {location}: {os_reason(exc)}") from None


#: A file a command reads or writes: (the setting or flag that names it, its path).
NamedFile = tuple[str, str]


def _is_named_file(location: str) -> bool:
    """A path, not a standard stream (``-``), nothing (empty) or a bundled dataset."""
    return location not in ("", "-") and not location.startswith("river:")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file: equal once resolved, or :func:`os.path.samefile`.

    Examples
    --------
    >>> same_file("events.jsonl", "./logs/../events.jsonl")
    True
    """
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): not the same file
        return False


def check_apart(inputs: Sequence[NamedFile], outputs: Sequence[NamedFile]) -> None:
    """Fail in one line when an output is one of the input files (before anything is opened).

    Opening the output would empty the input before its first line is read.
    Standard streams (``-``), empty names and bundled datasets are no files.

    Examples
    --------
    >>> check_apart([("replay FILE", "a.jsonl")], [("--alerts", "./a.jsonl")])
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: --alerts ./a.jsonl is the file replay FILE a.jsonl reads: writing it would destroy the input; name another output file
    """
    for out_setting, out in outputs:
        for in_setting, in_ in inputs:
            if _is_named_file(out) and _is_named_file(in_) and same_file(out, in_):
                raise SettingsError(
                    f"{out_setting} {out} is the file {in_setting} {in_} reads: writing it "
                    "would destroy the input; name another output file")


def _local_outputs(settings: Settings) -> list[NamedFile]:
    """The local transport's output files, each with its setting."""
    return [(LOCAL_SETTING[role], path) for role, path in local_outputs(settings).items()
            if path]


def _check_run_apart(settings: Settings, summary_json: str | None) -> None:
    """``run`` and ``check``: no local output, nor the summary, is the local input."""
    if settings.service.transport != "local":
        return
    outputs = [*_local_outputs(settings), ("--summary-json", summary_json or "")]
    check_apart([("local.input (--input)", settings.local.input)], outputs)


def _check_replay_apart(settings: Settings, args: argparse.Namespace) -> None:
    """``replay``: no output file it writes is one of its history files."""
    outputs = [(setting, path) for setting, path in _local_outputs(settings)
               if setting not in (LOCAL_SETTING["alerts"], LOCAL_SETTING["metrics"])]
    if args.output_topic:
        outputs = [o for o in outputs if o[0] != LOCAL_SETTING["predictions"]]
    outputs += [("--alerts", args.alerts), ("--summary-json", args.summary_json or "")]
    check_apart([("replay FILE", path) for path in args.inputs], outputs)


@contextlib.contextmanager
def _writing(path: str, flag: str) -> Iterator[None]:
    """An output named by a flag that cannot be written is a one-line error (exit 2)."""
    try:
        yield
    except OSError as exc:
        raise SettingsError(f"{flag} {path}: cannot write: {os_reason(exc)}") from None


@contextlib.contextmanager
def _listening(settings: MetricsSettings) -> Iterator[None]:
    """A failure to listen on the metrics endpoint's address as a one-line error (exit 2).

    The message names ``metrics.port`` and ``metrics.host`` with their values,
    and says what to do when the port is taken.
    """
    try:
        yield
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = " (another process listens there: stop it, or choose another metrics.port)"
        raise SettingsError(
            f"metrics.port {settings.port} on metrics.host {settings.host}: cannot listen: "
            f"{os_reason(exc)}{hint}") from None


def _open_for_writing(path: str | None, flag: str) -> IO[bytes] | None:
    """Open an output named by a flag now, so a bad path fails before the first record."""
    if not path:
        return None
    with _writing(path, flag):
        return open(path, "wb")


def all_labels_rejected(summary: Summary) -> int:
    """Labels rejected in a run that learned none (0 when any label was learned)."""
    rejected = summary.learn_dead_letters - summary.labels_expired
    return rejected if summary.labels == 0 and rejected > 0 else 0


def _close_after_error(closers: Sequence[Callable[[], None]]) -> None:
    """Close everything after an error; a failure to close is logged, so the error stays
    the one the log and the exit line show."""
    for close in closers:
        try:
            close()
        except Exception as exc:
            log.warning("while stopping after an error: %s: %s", type(exc).__name__, exc)


class _Closing:
    """Closes what a run opened, in the order it was added.

    After an error, a failure to close is only logged (:func:`_close_after_error`),
    so the error stays the one the log and the exit line show.
    """

    def __init__(self) -> None:
        self._closers: list[Callable[[], None]] = []

    def add(self, close: Callable[[], None]) -> None:
        self._closers.append(close)

    def __enter__(self) -> _Closing:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: Any) -> None:
        if exc is not None:
            _close_after_error(self._closers)
            return
        for close in self._closers:
            close()


def _run(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    spec = _model_spec(settings)
    metrics = Metrics()
    _check_run_apart(settings, args.summary_json)
    with _Closing() as closing:
        summary_file = _open_for_writing(args.summary_json, "--summary-json")
        source, sink = build_edges(settings, environ, deferred=True)
        closing.add(sink.close)  # outputs first
        closing.add(source.close)
        checkpointer = build_checkpointer(settings, spec, metrics, environ)
        closing.add(checkpointer.close)
        reserve_input(settings, checkpointer)
        guard = Guard(build_suspects(settings, environ))
        closing.add(guard.close)
        if summary_file is not None:
            closing.add(summary_file.close)
        if settings.metrics.enabled:
            with _listening(settings.metrics):
                server = MetricsServer(metrics, settings.metrics.host, settings.metrics.port)
            server.start()
            closing.add(server.close)
            log.info("metrics on http://%s:%d/metrics", settings.metrics.host, server.port)
        metrics.set_info(spec)
        service = Service(settings, spec, source, sink, metrics, checkpointer, guard=guard)
        local_stdin = settings.service.transport == "local" and settings.local.input == "-"
        interrupts = Interrupts(service.stop, local_stdin)
        interrupts.install()
        settle_heap()
        try:
            summary = service.run(on_start=lambda: _begin_outputs(source, sink), final=True)
        except CheckpointFenced as exc:
            if settings.service.transport != "local":
                raise
            raise CheckpointError(taken_over(settings, exc)) from exc
    print(summary.render(), file=sys.stderr)
    if summary_file is not None:
        Path(summary_file.name).write_bytes(orjson.dumps(summary.to_dict()))
    if interrupts.exit_code:
        print(f"stream-learner: interrupted; exit {interrupts.exit_code}", file=sys.stderr)
        return interrupts.exit_code
    rejected = all_labels_rejected(summary)
    if rejected:
        log.error(
            "configuration: every label was rejected (%d to the learn dead letters, none "
            "learned): the labels do not fit model.task = %r or the model's parameters; "
            "the learn dead letters (%s) say why", rejected, spec.task,
            settings.local.learn_dead_letters or "none kept"
            if settings.service.transport == "local" else settings.kafka.learn_dead_letter_topic,
        )
        return 2
    return 0


def reserve_input(settings: Settings, checkpointer: Checkpointer | NullCheckpointer) -> None:
    """Local transport and store: hold the input's shard, so a second run on it stops at start.

    Fencing alone lets a second run take the shard over while the first is
    still reading: both score the lines between the takeover and the first
    run's next checkpoint.

    Raises
    ------
    CheckpointError
        Another run holds the shard (see :meth:`LocalStore.reserve`).
    """
    if settings.service.transport == "local" and isinstance(checkpointer, Checkpointer):
        store = checkpointer.store
        if isinstance(store, LocalStore):
            store.reserve(shard_id((settings.local.input, 0)))


def taken_over(settings: Settings, exc: CheckpointFenced) -> str:
    """Why a run on the local transport stops when its checkpoint is refused as stale.

    Its input is one shard that one run reads: a newer epoch of that shard is
    another run on the same checkpoints (or a ``checkpoints rollback``).

    Examples
    --------
    >>> from stream_learner.settings import CheckpointSettings, LocalSettings
    >>> s = Settings(checkpoint=CheckpointSettings(store="local", directory="ck"),
    ...              local=LocalSettings(input="in.jsonl"))
    >>> taken_over(s, CheckpointFenced("in.jsonl:0", 2, 1))
    'another run took over checkpoint folder ck for input in.jsonl: this run stops without writing more outputs (shard in.jsonl:0 was claimed by epoch 2; this worker holds epoch 1); one run at a time on an input and its checkpoints'
    """
    c = settings.checkpoint
    where = (f"checkpoint folder {c.directory}" if c.store == "local"
             else f"the checkpoints in {redact_url(c.redis_url)}")
    return (f"another run took over {where} for input {settings.local.input}: this run stops "
            f"without writing more outputs ({exc}); one run at a time on an input and its "
            "checkpoints")


def _begin_outputs(source: Source, sink: Sink) -> None:
    """The state is restored: truncate the local output files, or append to them when the
    run resumes from a checkpoint (they hold the outputs of the lines before it)."""
    if not isinstance(sink, FileSink) or not isinstance(source, FileSource):
        return
    if source.resumed_at and not sink.appends:
        log.info("resuming %s at line %d: the output files are appended to",
                 source.location, source.resumed_at)
    sink.begin(keep=bool(source.resumed_at))


def _check_history(inputs: Sequence[str]) -> None:
    """Every history file readable, and all of one kind, before anything starts."""
    for path in inputs:
        if path != "-":
            check_readable(path, "replay FILE", "JSON Lines or CSV file")
    csv = [path for path in inputs if path.lower().endswith(".csv")]
    if csv and len(csv) < len(inputs):
        raise SettingsError(
            f"replay FILE: {csv[0]} is CSV but {next(p for p in inputs if p not in csv)} is not: "
            "the files of one replay are one partition read with one [schema], so replay CSV "
            "and JSON Lines files apart")


def _in_place(path: Path) -> bool:
    """True when ``path`` is written in place: a link, or not a regular file (a device
    such as ``/dev/stdout``, a pipe), which a rename would replace instead of write to."""
    return path.is_symlink() or (path.exists() and not path.is_file())


def _scratch(path: Path) -> Path:
    """The temporary file beside ``path`` that :func:`_write_whole` renames onto it."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def _check_whole_write(location: str, flag: str) -> None:
    """Fail in one line, before the first record, when ``location`` cannot be written.

    The file itself is not touched (neither created nor emptied): it keeps the
    previous run's content until :func:`_write_whole` replaces it.
    """
    path = Path(location)
    if path.is_dir():
        raise SettingsError(f"{flag} {location}: cannot write: it is a folder")
    with _writing(location, flag):
        if _in_place(path):
            open(path, "ab").close()
            return
        probe = _scratch(path)
        probe.touch()
        probe.unlink()


def _write_whole(location: str, flag: str, data: bytes) -> None:
    """Write ``data`` to ``location`` whole or not at all: to a temporary file beside it,
    then renamed onto it (in place for a link or a device, see :func:`_in_place`)."""
    path = Path(location)
    with _writing(location, flag):
        if _in_place(path):
            path.write_bytes(data)
            return
        scratch = _scratch(path)
        try:
            scratch.write_bytes(data)
            os.replace(scratch, path)
        finally:
            scratch.unlink(missing_ok=True)


def _warm_start_kind(target: str) -> str:
    """What ``--checkpoint-to TARGET`` writes to, for messages.

    Examples
    --------
    >>> _warm_start_kind("redis"), _warm_start_kind("ck")
    ('the Redis store of the [checkpoint] settings', 'a local folder store')
    """
    return "the Redis store of the [checkpoint] settings" if target == "redis" else (
        "a local folder store")


def _warm_start_codec(
    settings: Settings, spec: ModelSpec, environ: Mapping[str, str], target: str
) -> EnvelopeCodec:
    """The codec that signs ``--checkpoint-to``'s checkpoints: the live workers' key.

    Raises
    ------
    SettingsError
        The key is missing or too short; the message names ``--checkpoint-to``, not
        ``checkpoint.store`` (which a replay does not use).
    """
    try:
        return build_codec(settings, spec, environ)
    except SettingsError:
        name = settings.checkpoint.key_env
        raise SettingsError(
            f"--checkpoint-to {target} ({_warm_start_kind(target)}) needs the signing key of "
            f"the live workers, at least 16 bytes, in the environment variable {name} "
            f"(checkpoint.key_env): export {name}=..."
        ) from None


def _warm_start_store(
    settings: Settings, environ: Mapping[str, str], target: str
) -> CheckpointStore:
    """The store ``--checkpoint-to`` names: ``redis`` ([checkpoint] settings) or a folder."""
    c = settings.checkpoint
    if target != "redis":
        return LocalStore(target, keep=c.keep)
    redis = settings.model_copy(update={"checkpoint": c.model_copy(update={"store": "redis"})})
    store = build_store(redis, environ)
    assert store is not None
    return store


def _refuse_a_capped_warm_start(settings: Settings, args: argparse.Namespace) -> None:
    """Refuse ``--checkpoint-to`` with ``service.max_events`` before anything runs.

    A warm-start checkpoint is written only when the replay read its whole input,
    so ``--max-events`` can only take effect by leaving the user without one, after
    the whole run (stdin and a topic range cannot be counted at start). Either it
    does nothing or it fails: the combination is refused, whatever the input.

    Raises
    ------
    SettingsError
        ``service.max_events`` is set (by ``--max-events`` or the settings).
    """
    cap = settings.service.max_events
    if not cap:
        return
    given = (f"--max-events {cap}" if args.max_events else
             f"service.max_events = {cap} (from the settings; --max-events 0 lifts it)")
    raise SettingsError(
        f"{given} with --checkpoint-to {args.checkpoint_to}: a warm-start checkpoint is written "
        "only for a replay that reads its whole input, and one stopped by --max-events writes "
        "none; drop --max-events, or shorten the input itself (--end for a topic range)"
    )


def _replay(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    spec = ModelSpec.from_settings(settings.model)
    _check_history(args.inputs)
    _check_replay_apart(settings, args)
    options = BacktestOptions(
        inputs=tuple(args.inputs), start=args.start, end=args.end, partitions=args.partitions,
        sort_by_ts=args.sort_by_ts,
        label_delay=LabelDelay(events=args.label_delay, field=args.label_ts_field),
        output_topic=args.output_topic, alerts=args.alerts,
        resume_offset=args.resume_offset, partition=args.partition,
    )
    store = codec = None
    if args.checkpoint_to:
        _refuse_a_capped_warm_start(settings, args)
        codec = _warm_start_codec(settings, spec, environ, args.checkpoint_to)
        store = _warm_start_store(settings, environ, args.checkpoint_to)
    if args.summary_json:
        _check_whole_write(args.summary_json, "--summary-json")
    interrupts: Interrupts | None = None

    def started(stop: Callable[[], None]) -> None:
        # from here on Ctrl-C finishes the batch and keeps the partial result, as in `run`
        nonlocal interrupts
        interrupts = Interrupts(stop, stdin_input="-" in options.inputs)
        interrupts.install()

    try:
        with _quiet_client_logs():
            result = run_backtest(settings, spec, environ, options, store, codec,
                                  on_start=started)
    except ConnectionFailed as exc:
        if options.inputs:
            raise
        raise ConnectionFailed(f"{exc} (replay without FILE reads kafka.events_topic; give "
                               "history files to replay files)") from None
    finally:
        if store is not None:
            store.close()
    print(result.render(), file=sys.stderr)
    if args.summary_json:
        _write_whole(args.summary_json, "--summary-json", orjson.dumps(
            {**result.summary.to_dict(), "drift_points": result.drift.points,
             "checkpoints": result.checkpoints}))
    if not result.stopped:
        return 0
    # unlike a worker's, a backtest's SIGTERM is no normal end: 128 + the signal, as shells do
    received = interrupts.received if interrupts is not None else None
    code = 128 + (received or signal.SIGINT)
    unwritten = "; no warm-start checkpoint was written" if args.checkpoint_to else ""
    print(f"stream-learner: interrupted before the end of the input{unwritten}; exit {code}",
          file=sys.stderr)
    return code


def _simulate(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    from stream_learner.events import parse_ts

    extra: dict[str, Any] = {}
    if args.resume and (args.source.startswith("river:") or (
            args.to == "file" and args.sim_output == "-")):
        raise SettingsError("--resume needs a synthetic generator (not a bundled dataset) and "
                            "a place to read back: --to kafka, or --output FILE")
    if args.start_ts:
        text = args.start_ts
        try:
            extra["start_ts"] = parse_ts(float(text) if text.replace(".", "").isdigit() else text)
        except (InvalidRecord, ValueError, TypeError) as exc:
            raise SettingsError(f"--start-ts {text!r}: expected epoch seconds or an ISO 8601 "
                                f"time, e.g. 2026-01-01T00:00:00Z ({exc})") from None
    plan = SimulationPlan(
        source=args.source, count=args.count, keys=args.keys, seed=args.seed,
        label_delay=args.label_delay, drift_at=args.drift_at, drift_width=args.drift_width,
        variants=args.variants, **extra,
    )
    if args.to == "kafka":
        with _quiet_client_logs():
            topic = KafkaWriter(settings.kafka, environ, settings.kafka.events_topic)
            last = topic.last_id() if args.resume else None
        writer: FileWriter | KafkaWriter = topic
        where = f"topic {settings.kafka.events_topic!r}"
    else:
        with _writing(args.sim_output, "--output"):  # to resume, it is read first
            last = FileWriter.last_id(args.sim_output) if args.resume else None
            writer = FileWriter(args.sim_output, append=args.resume)
        where = args.sim_output
    if args.resume:
        plan = dataclasses.replace(plan, first_id=0 if last is None else last + 1)
        print(f"resuming after event id {last} in {where}" if last is not None else
              f"nothing to resume in {where}: starting at event id 0", file=sys.stderr)
    stopping: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, _frame: stopping.append(signum))
    stats = publish(simulate(plan), writer, args.rate, should_stop=lambda: bool(stopping))
    print(stats.render(), file=sys.stderr)
    return 128 + signal.SIGINT if stopping[:1] == [signal.SIGINT] else 0


#: Records of the local input that ``check`` runs through a fresh model at most.
SAMPLE_RECORDS = 1000


def _sample(settings: Settings, task: str) -> tuple[str, list[bytes]]:
    """Where the sample comes from, and its records: the local input, else a made-up event."""
    local = settings.local
    if settings.service.transport == "local" and local.input != "-":
        check_input(local.input)
        source = FileSource(local.input)
        source.subscribe(None)
        try:
            return local.input, [r.value or b"" for r in source.poll(SAMPLE_RECORDS, 0)]
        finally:
            source.close()
    schema = settings.schema_
    features = {"x": 1.0}
    event: dict[str, Any] = {schema.id: 0, schema.key: "sample", schema.ts: 0.0}
    event.update({schema.features: features} if schema.features else features)
    label = {"classification": True, "regression": 1.0, "forecasting": 1.0}.get(task)
    if label is not None:
        event[schema.label] = label
    return "a made-up event", [orjson.dumps(event)]


def try_on_sample(settings: Settings, spec: ModelSpec) -> str:
    """Score and learn the first records of the input with a fresh model.

    Returns what was tried; raises :class:`ModelConfigError` when the model
    cannot score an event or learn a label of the sample, or when no record of
    the sample is an event the ``[schema]`` settings can read.
    """
    where, values = _sample(settings, spec.task)
    codec = Codec(settings.schema_, settings.limits, spec.task)
    learner = Learner(spec, settings.labels)
    first_error: InvalidRecord | None = None
    scored = 0
    for i, value in enumerate(values):
        at = f"sample record {where}[{i}]" if where != "a made-up event" else "a made-up event"
        try:
            item = codec.decode(value, None, 0, Origin(where, 0, i))
            prediction = learner.process(item)[0]
        except InvalidLabel as exc:
            raise ModelConfigError(f"{at}: {exc} (check model.task and the model)") from None
        except InvalidRecord as exc:
            if exc.reason == "model_rejected":
                raise ModelConfigError(f"{at}: {exc}") from None
            first_error = first_error or exc
            continue
        if prediction is not None:
            scored += 1
            if prediction.label_error is not None:
                raise ModelConfigError(
                    f"{at}: {prediction.label_error} (check model.task and the model)")
        if scored and (learner.n_learned or spec.task == "anomaly"):
            return f"{at} scored and learned"
    if not values:
        raise SettingsError(f"{where} is empty: nothing to try the model on")
    if not scored:
        raise ModelConfigError(
            f"no record of the first {len(values)} of {where} is an event the [schema] "
            f"settings can read (first: {first_error})")
    return f"{scored} events of {where} scored (no label among the first {len(values)} records)"


#: ``report`` inputs that need not exist: a run without dead letters may have written none.
_REPORT_MAY_BE_MISSING = ("--dead-letters", "--learn-dead-letters")


def _report_inputs(args: argparse.Namespace) -> list[NamedFile]:
    """The files ``report`` reads, each with its flag."""
    return [("--metrics", args.metrics), ("--predictions", args.predictions),
            ("--labels", args.labels), ("--alerts", args.alerts),
            ("--dead-letters", args.dead_letters),
            ("--learn-dead-letters", args.learn_dead_letters)]


def _report(settings: Settings, args: argparse.Namespace) -> int:
    check_apart(_report_inputs(args), [("--output", args.report_output), ("--json", args.json)])
    inputs = ReportInputs(args.metrics, args.predictions, args.labels, args.alerts,
                          args.dead_letters, args.learn_dead_letters)
    for flag, path in _report_inputs(args):
        if path and flag not in _REPORT_MAY_BE_MISSING:
            check_readable(path, f"report {flag}")
    document = build_report(inputs, settings.schema_)
    with _writing(args.report_output, "--output"):
        Path(args.report_output).write_text(render_page(document), encoding="utf-8")
    if args.json:
        with _writing(args.json, "--json"):
            Path(args.json).write_bytes(orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS))
    print(f"report of {document['totals']['records']} records, {len(document['series'])} "
          f"snapshots, {len(document['alerts'])} alerts: {args.report_output}", file=sys.stderr)
    return 0


def _check(settings: Settings, environ: dict[str, str]) -> int:
    spec = _model_spec(settings)
    _check_run_apart(settings, None)
    tried = try_on_sample(settings, spec)
    if settings.service.transport == "kafka":
        source, sink = build_edges(settings, environ)
        sink.close()
        source.close()
    print("ok: settings valid, model builds, " + tried + (
        f", Kafka reachable at {settings.kafka.bootstrap_servers}"
        if settings.service.transport == "kafka" else ""
    ) + _check_metrics(settings.metrics) + _check_store(settings, spec, environ))
    return 0


def _check_metrics(settings: MetricsSettings) -> str:
    """What ``run`` needs of the metrics endpoint at start: its address can be bound."""
    if not settings.enabled:
        return ""
    with _listening(settings):
        try_listen(settings.host, settings.port)
    return f", metrics endpoint can listen on {settings.host}:{settings.port}"


def _check_store(settings: Settings, spec: ModelSpec, environ: dict[str, str]) -> str:
    """What ``run`` needs of the checkpoint store at start: its signing key, its password
    variable and the store itself (Redis answers; the folder can be written)."""
    c = settings.checkpoint
    store = build_store(settings, environ)
    if store is None:
        return ""
    try:
        build_codec(settings, spec, environ)
        if isinstance(store, RedisStore):
            store.ping()
            return f", checkpoints signed, Redis reachable at {c.redis_url}"
        folder = Path(c.directory).absolute()
        existing = next(p for p in (folder, *folder.parents) if p.exists())
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise CheckpointError(f"checkpoint folder {c.directory}: {existing} cannot be "
                                  "written (checkpoint.directory)")
        return f", checkpoints signed, to be written in {c.directory}"
    finally:
        store.close()


def _checkpoints(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
    store = build_store(settings, environ)
    if store is None:
        raise SettingsError("checkpoint.store is 'none': there are no checkpoints to manage")
    codec = build_codec(settings, ModelSpec.from_settings(settings.model), environ)
    try:
        if args.action == "list":
            print(admin.list_checkpoints(store, codec, args.shard))
        elif args.action == "show":
            print(admin.show_checkpoint(store, codec, args.shard, args.id))
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


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``... | head``): stop quietly, like a shell tool.

    Standard output is pointed at ``/dev/null`` so that the interpreter's last
    flush at exit cannot fail again.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, sys.stdout.fileno())
    os.close(null)
    return 128 + signal.SIGPIPE


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
    for warning in unknown_variables(settings, environ):
        log.warning("%s", warning)
    try:
        return _command(settings, environ, args)
    except (SettingsError, ModelConfigError) as exc:
        log.error("configuration: %s", exc)
        return 2
    except StreamLearnerError as exc:
        log.error("%s", exc)
        return 1
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print("stream-learner: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _command(settings: Settings, environ: dict[str, str], args: argparse.Namespace) -> int:
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
    if args.command == "report":
        return _report(settings, args)
    return _run(settings, environ, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
