"""Build and run the service in-process: settings in, sources and sinks as objects.

For notebooks, for users' own tests, and for programs that embed the worker.
The CLI's ``stream-learner run`` is this plus logging, signal handlers and
the metrics endpoint.

Examples
--------
>>> from stream_learner.testing import MemorySink, MemorySource
>>> sink = MemorySink()
>>> service = build_service(
...     {"model": {"name": "pumps"}},
...     source=MemorySource({("events", 0): [b'{"id": 1, "features": {"t": 2.0}, "label": 1.5}']}),
...     sink=sink,
... )
>>> service.run().predictions, sink.decoded("predictions")[0]["model"]["name"]
(1, 'pumps')
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.cli import build_edges, build_store
from stream_learner.drift import make_watch
from stream_learner.errors import SettingsError
from stream_learner.metrics import Metrics
from stream_learner.models import ModelSpec
from stream_learner.recovery import Checkpointer, NullCheckpointer
from stream_learner.service import Service
from stream_learner.settings import Settings, load_settings
from stream_learner.sinks import Sink
from stream_learner.sources import Source
from stream_learner.stores import CheckpointStore
from stream_learner.summary import Summary
from stream_learner.tasks import make_task

__all__ = ["build_service", "run", "settings_from"]


def settings_from(settings: Settings | Mapping[str, Any] | None) -> Settings:
    """A :class:`Settings` from itself, from nested values (as in the TOML file), or defaults.

    Values are validated like a settings file (a wrong key raises
    :class:`~stream_learner.errors.SettingsError` naming it); the process
    environment is not read.

    Examples
    --------
    >>> settings_from({"service": {"batch_size": 64}}).service.batch_size
    64
    >>> settings_from({"service": {"batch_siz": 64}})
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: invalid settings (given values):
      service.batch_siz: unknown key (did you mean 'batch_size'?)
    """
    if isinstance(settings, Settings):
        return settings
    return load_settings(None, env={}, overrides=dict(settings or {}),
                         overrides_from="given values")


def build_service(
    settings: Settings | Mapping[str, Any] | None = None,
    *,
    source: Source | None = None,
    sink: Sink | None = None,
    store: CheckpointStore | None = None,
    signing_key: bytes | str | None = None,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] | None = None,
) -> Service:
    """The service, ready to :meth:`~stream_learner.service.Service.run`.

    Parameters
    ----------
    settings
        A :class:`Settings`, nested values as in the TOML file, or ``None`` for the defaults.
    source, sink
        The edges (see :mod:`stream_learner.testing` for in-memory ones, or
        :class:`~stream_learner.sources.FileSource` / :class:`~stream_learner.sinks.FileSink`);
        each one not given is built from the settings as ``stream-learner run`` does
        (Kafka clients when ``service.transport = "kafka"``).
    store
        A checkpoint store (e.g. :class:`~stream_learner.stores.LocalStore`); ``None``:
        the ``[checkpoint]`` settings decide (``store = "none"`` by default). A store
        given here keeps as many checkpoints as it was made with (its own ``keep``),
        not ``checkpoint.keep``.
    signing_key
        The checkpoint signing key (16 bytes or more; text is taken as UTF-8); default:
        the environment variable ``checkpoint.key_env``.
    metrics
        Where measurements go (and what the live page shows); default: a new registry.
    environ
        Secrets (SASL, Redis, the signing key) by variable name; default: ``os.environ``.

    Raises
    ------
    SettingsError
        Wrong settings, or a checkpoint store without a signing key.
    """
    s = settings_from(settings)
    env = dict(os.environ if environ is None else environ)
    spec = ModelSpec.from_settings(s.model)
    make_watch(spec, make_task(spec.task, spec.build_metric()), s.drift)  # detectors fit the task
    metrics = metrics or Metrics()
    if source is None or sink is None:
        built_source, built_sink = build_edges(s, env)
        source = source or built_source
        sink = sink or built_sink
    store = store or build_store(s, env)
    checkpointer: Checkpointer | NullCheckpointer = NullCheckpointer()
    if store is not None:
        key = signing_key or env.get(s.checkpoint.key_env, "")
        if isinstance(key, str):  # as the environment gives it
            key = key.encode("utf-8")
        if len(key) < 16:
            raise SettingsError(
                "a checkpoint store needs a signing key of at least 16 bytes "
                f"(signing_key, or the environment variable {s.checkpoint.key_env})"
            )
        checkpointer = Checkpointer(store, EnvelopeCodec(key, spec.config_hash), s.checkpoint,
                                    metrics, time.time, time.monotonic,
                                    exactly_once=s.service.guarantee == "exactly_once")
    # the commit cycle is the one the edges support (commits.for_edges)
    return Service(s, spec, source, sink, metrics, checkpointer)


def run(
    settings: Settings | Mapping[str, Any] | None = None,
    *,
    source: Source | None = None,
    sink: Sink | None = None,
    store: CheckpointStore | None = None,
    signing_key: bytes | str | None = None,
    metrics: Metrics | None = None,
    environ: Mapping[str, str] | None = None,
) -> Summary:
    """Build the service, run it to the end of its input (or ``service.max_events``),
    close the edges and the store, and return the run's :class:`Summary`.

    Examples
    --------
    >>> from stream_learner.testing import MemorySink, MemorySource
    >>> run(source=MemorySource({("events", 0): [b"nope"]}), sink=MemorySink()).dead_letters
    1
    """
    service = build_service(settings, source=source, sink=sink, store=store,
                            signing_key=signing_key, metrics=metrics, environ=environ)
    try:
        return service.run(final=True)
    finally:
        service.sink.close()
        service.source.close()
        service.checkpointer.close()
