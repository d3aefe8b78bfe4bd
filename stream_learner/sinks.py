"""Where outputs go: Kafka topics, or files / standard streams.

The Kafka sinks, one per client, live in :mod:`stream_learner.kafka`.

Outputs are addressed by role (``predictions``, ``dead_letters`` for unusable
input, ``learn_dead_letters`` for labels that cannot be learned, ``alerts`` for
drift alerts, ``metrics`` for metrics snapshots), so the service never names a
topic or a file. :class:`stream_learner.testing.MemorySink`
is the in-memory twin.

A dead letter keeps the original record bytes as its value and says why in
headers, in the spirit of Kafka Connect's ``__connect.errors.*`` headers (see
``docs/errors.md``). A value longer than ``limits.max_dead_letter_bytes`` is
cut to that length and says so in a header, so that a dead letter always fits
the dead-letter topic and a huge record cannot stall the stream.
"""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

from stream_learner.errors import InvalidRecord, SettingsError, os_reason
from stream_learner.settings import Settings
from stream_learner.sources import Record, worker_id

__all__ = [
    "DEAD_LETTER_SCHEMA_VERSION",
    "ROLES",
    "FileSink",
    "Header",
    "KeyPartitioner",
    "Sink",
    "cut_unfinished_line",
    "dead_letter",
    "dead_letter_headers",
    "local_outputs",
    "output_topics",
    "transactional_id",
]

log = logging.getLogger(__name__)

ROLES = ("predictions", "dead_letters", "learn_dead_letters", "alerts", "metrics")
DEAD_LETTER_SCHEMA_VERSION = 1
Header = tuple[str, bytes]
TRUNCATED_HEADER = "__stream_learner.errors.value.truncated.from"
#: The ``[local]`` setting (and flag) that names the file of each output role.
LOCAL_SETTING = {
    "predictions": "local.output / --output",
    "dead_letters": "local.dead_letters",
    "learn_dead_letters": "local.learn_dead_letters",
    "alerts": "local.alerts",
    "metrics": "local.metrics",
}


class Sink(Protocol):
    """Accepts output records by role; durable after :meth:`flush` returns (or once acknowledged)."""

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Queue one record for ``role``."""
        ...

    def flush(self) -> None:
        """Block until every queued record is durable; raise if any failed."""
        ...

    def close(self) -> None:
        """Flush and release."""
        ...


def dead_letter_headers(record: Record, error: InvalidRecord, now: float) -> list[Header]:
    """Headers that explain a dead letter.

    Examples
    --------
    >>> from stream_learner.events import Origin
    >>> rec = Record(b"oops", None, 0, Origin("events", 3, 17))
    >>> headers = dict(dead_letter_headers(rec, InvalidRecord("not_json", "bad"), 1.5))
    >>> headers["__stream_learner.errors.offset"], headers["__stream_learner.errors.reason"]
    (b'17', b'not_json')
    """
    pairs = {
        "__stream_learner.errors.topic": record.origin.topic,
        "__stream_learner.errors.partition": str(record.origin.partition),
        "__stream_learner.errors.offset": str(record.origin.offset),
        "__stream_learner.errors.reason": error.reason,
        "__stream_learner.errors.exception.class.name": type(error).__name__,
        "__stream_learner.errors.exception.message": error.message,
        "__stream_learner.errors.timestamp": f"{now:.3f}",
        "__stream_learner.errors.schema.version": str(DEAD_LETTER_SCHEMA_VERSION),
    }
    return [(k, v.encode("utf-8")) for k, v in pairs.items()]


def dead_letter(
    record: Record, error: InvalidRecord, now: float, max_value_bytes: int
) -> tuple[bytes, list[Header]]:
    """Value and headers of the dead letter of ``record``.

    The value is the original bytes (empty for a tombstone), cut to
    ``max_value_bytes``; a cut value carries a header with the original length.

    Examples
    --------
    >>> from stream_learner.events import Origin
    >>> rec = Record(b"x" * 100, None, 0, Origin("events", 0, 5))
    >>> value, headers = dead_letter(rec, InvalidRecord("too_large", "big"), 0.0, 64)
    >>> len(value), dict(headers)[TRUNCATED_HEADER]
    (64, b'100')
    """
    value = record.value or b""
    headers = dead_letter_headers(record, error, now)
    if len(value) > max_value_bytes:
        headers.append((TRUNCATED_HEADER, str(len(value)).encode("ascii")))
        value = value[:max_value_bytes]
    return value, headers


def output_topics(settings: Settings) -> dict[str, str]:
    """The Kafka topic of each output role.

    Examples
    --------
    >>> output_topics(Settings())["learn_dead_letters"]
    'events.learn.dlq'
    """
    k = settings.kafka
    return {
        "predictions": k.predictions_topic,
        "dead_letters": k.dead_letter_topic,
        "learn_dead_letters": k.learn_dead_letter_topic,
        "alerts": k.alerts_topic,
        "metrics": k.metrics_topic,
    }


def local_outputs(settings: Settings) -> dict[str, str | None]:
    """The file of each output role under ``service.transport = "local"`` (``[local]``).

    Examples
    --------
    >>> local_outputs(Settings())
    {'predictions': '-', 'dead_letters': '-', 'learn_dead_letters': '-', 'alerts': '', 'metrics': ''}
    """
    local = settings.local
    return {
        "predictions": None if local.quiet else local.output,
        "dead_letters": local.dead_letters,
        "learn_dead_letters": local.learn_dead_letters,
        "alerts": local.alerts,
        "metrics": local.metrics,
    }


class FileSink:
    """JSON Lines per role; ``-`` means stdout (predictions) or stderr (others).

    Every file is opened when the sink is made, before the first record, so
    that a path that cannot be written fails the start in one line instead of
    the stream half-way. A file is truncated (``append=False``, the default) or
    appended to. With ``deferred=True`` the files are opened for appending and
    truncated only by :meth:`begin`, which the service calls once it has
    restored its state: a run that fails at start leaves the previous run's
    files as they were. A dead letter is written as one JSON object: the original
    bytes in ``value_base64`` (and as text in ``value`` when they are UTF-8),
    the record key, and the headers as an object.

    Examples
    --------
    >>> FileSink({"alerts": "/dev/null/alerts.jsonl"})
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: cannot write the alerts output (local.alerts) /dev/null/alerts.jsonl: a parent is a file, not a folder
    """

    def __init__(
        self, targets: Mapping[str, str | None], append: bool = False, deferred: bool = False
    ) -> None:
        self._targets = {role: target for role, target in targets.items() if target}
        self._files: dict[str, IO[bytes]] = {}
        self._truncate = not append and deferred
        #: the files are appended to (``append``), not truncated
        self.appends = append
        try:
            for role, target in self._targets.items():
                self._files[role] = self._open(role, target, append or deferred)
        except BaseException:
            self.close()
            raise

    def begin(self, keep: bool = False) -> None:
        """The run starts: truncate the files a deferred sink opened, unless ``keep``.

        ``keep`` (a run resuming from a checkpoint) appends to them instead:
        they hold the outputs of the records before the checkpoint. A file
        appended to first loses a last line without its newline (see
        :func:`cut_unfinished_line`).
        """
        truncate, self._truncate = self._truncate and not keep, False
        for role, handle in self._files.items():
            if handle in (sys.stdout.buffer, sys.stderr.buffer):
                continue
            if truncate:
                handle.truncate(0)
            elif keep or self.appends:
                cut_unfinished_line(self._targets[role], handle)

    def _handle(self, role: str) -> IO[bytes] | None:
        return self._files.get(role)

    @staticmethod
    def _open(role: str, target: str, append: bool) -> IO[bytes]:
        if target == "-":
            return sys.stdout.buffer if role == "predictions" else sys.stderr.buffer
        path = Path(target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return path.open("ab" if append else "wb")
        except OSError as exc:
            setting = LOCAL_SETTING.get(role, role)
            reason = os_reason(exc)
            if isinstance(exc, FileExistsError):  # from mkdir: a parent is a file
                reason = "a parent is a file, not a folder"
            raise SettingsError(
                f"cannot write the {role} output ({setting}) {target}: {reason}"
            ) from None

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Write one line to the role's file (roles without a target are dropped)."""
        handle = self._handle(role)
        if handle is None:
            return
        if headers:
            value = _wrap(key, value, headers)
        handle.write(value + b"\n")

    def flush(self) -> None:
        """Flush every file."""
        for handle in self._files.values():
            handle.flush()

    def close(self) -> None:
        """Flush, then close the files this sink opened."""
        try:
            self.flush()
        finally:
            for handle in self._files.values():
                if handle not in (sys.stdout.buffer, sys.stderr.buffer):
                    handle.close()


def cut_unfinished_line(target: str, handle: IO[bytes], chunk: int = 65536) -> int:
    r"""Cut the end of an output file after its last newline; the bytes cut.

    A worker killed while writing a line leaves its first part at the end of
    the file. Its record came after the last checkpoint (the outputs before one
    are flushed before it is written), so the resumed run writes it again;
    appending after the part would instead join the two into one line no
    reader can parse. Logged as a warning.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b'{"id": 1}\n{"id": 2}\n{"id"')
    >>> with open(f.name, "ab") as handle:
    ...     cut_unfinished_line(f.name, handle)
    5
    >>> open(f.name, "rb").read()
    b'{"id": 1}\n{"id": 2}\n'
    >>> import os; os.unlink(f.name)
    """
    handle.flush()
    with open(target, "rb") as reader:
        end = reader.seek(0, 2)
        keep = end
        while keep > 0:
            start = max(0, keep - chunk)
            reader.seek(start)
            newline = reader.read(keep - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            keep = start
    if keep == end:
        return 0
    handle.truncate(keep)
    log.warning("%s: cut a last line of %d bytes left unfinished by an earlier run (stopped "
                "while writing it): its record is written again", target, end - keep)
    return end - keep


def _wrap(key: bytes | None, value: bytes, headers: Sequence[Header]) -> bytes:
    doc: dict[str, Any] = {
        "schema_version": DEAD_LETTER_SCHEMA_VERSION,
        "key": key.decode("utf-8", "replace") if key is not None else None,
        "value_base64": base64.b64encode(value).decode("ascii"),
        "headers": {k: v.decode("utf-8", "replace") for k, v in headers},
    }
    try:
        doc["value"] = value.decode("utf-8")
    except UnicodeDecodeError:
        doc["value"] = None
    return orjson.dumps(doc)


class KeyPartitioner:
    """The partition of a record key, as Kafka's default partitioner picks it, cached per key.

    ``murmur2(key) & 0x7fffffff`` modulo the number of partitions, the same
    choice as the Java client and kafka-python's ``DefaultPartitioner``, so
    that records keyed alike stay co-partitioned.

    Examples
    --------
    >>> by_key = KeyPartitioner({0, 1, 2})
    >>> by_key(b"pump-7"), by_key(b"pump-7"), by_key(b"sensor-1")
    (0, 0, 1)
    """

    #: Keys remembered before the cache starts over (entity ids can be many).
    MAX_KEYS = 100_000

    def __init__(self, partitions: Iterable[int]) -> None:
        self._partitions = sorted(partitions)
        self._cache: dict[bytes, int] = {}

    def update(self, partitions: Iterable[int]) -> None:
        """Start over when the topic's partitions changed."""
        current = sorted(partitions)
        if current != self._partitions:
            self._partitions = current
            self._cache.clear()

    def __call__(self, key: bytes) -> int:
        found = self._cache.get(key)
        if found is None:
            from kafka.partitioner.default import murmur2

            if len(self._cache) >= self.MAX_KEYS:
                self._cache.clear()
            index = (murmur2(key) & 0x7FFFFFFF) % len(self._partitions)
            found = self._cache[key] = self._partitions[index]
        return found


def transactional_id(settings: Settings) -> str:
    """``<group_id>-<worker_id>``: stable across restarts of one worker, so a restarted
    worker aborts its previous incarnation's open transaction at once."""
    return f"{settings.kafka.group_id}-{worker_id(settings)}"
