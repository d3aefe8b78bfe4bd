"""stream_learner: online River models that learn while they serve Kafka events.

The public surface is small: settings, the service and its edges, and a
function that builds and runs it in-process (:mod:`stream_learner.api`):

>>> from stream_learner import MemorySink, MemorySource, run
>>> run({"model": {"name": "m"}}, source=MemorySource({("events", 0): [b"nope"]}),
...     sink=MemorySink()).dead_letters
1

Names are imported on first use, so ``import stream_learner`` stays light.
See README.md and docs/.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("stream-learner")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from stream_learner.api import build_service, run, settings_from
    from stream_learner.metrics import Metrics, MetricsServer
    from stream_learner.service import Service
    from stream_learner.settings import Settings, load_settings
    from stream_learner.sinks import FileSink, Sink
    from stream_learner.sources import FileSource, Source
    from stream_learner.stores import CheckpointStore, LocalStore, RedisStore
    from stream_learner.summary import Summary
    from stream_learner.testing import MemorySink, MemorySource

#: public name -> the module that defines it
_WHERE = {
    "build_service": "api", "run": "api", "settings_from": "api",
    "Settings": "settings", "load_settings": "settings",
    "Service": "service", "Summary": "summary",
    "Source": "sources", "FileSource": "sources", "Sink": "sinks", "FileSink": "sinks",
    "MemorySource": "testing", "MemorySink": "testing",
    "CheckpointStore": "stores", "LocalStore": "stores", "RedisStore": "stores",
    "Metrics": "metrics", "MetricsServer": "metrics",
}

__all__ = [
    "CheckpointStore",
    "FileSink",
    "FileSource",
    "LocalStore",
    "MemorySink",
    "MemorySource",
    "Metrics",
    "MetricsServer",
    "RedisStore",
    "Service",
    "Settings",
    "Sink",
    "Source",
    "Summary",
    "__version__",
    "build_service",
    "load_settings",
    "run",
    "settings_from",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'stream_learner' has no attribute {name!r}")
    value = getattr(import_module(f"stream_learner.{module}"), name)
    globals()[name] = value
    return value
