"""A record that made the worker stop is dead-lettered when it comes again, not retried forever.

When an error escapes the handling of one record (a defect, or third-party
code that raises what it should not, e.g. ``SystemExit``), the worker writes
a small **marker** for that record: its partition, offset and a digest of its
bytes. The worker stops; a restarted worker re-reads the same record from the
committed offset, recognises it by offset *and* digest, and dead-letters it
(reason ``stopped_worker``) instead of crash-looping on it.

Markers live next to the checkpoints (``checkpoint.store``): files in the
``local`` folder, keys in ``redis``; with no store they live in memory and do
not survive a restart. The last :data:`KEEP` markers of each partition are
kept, so a record is recognised again by a later silent replay.

Examples
--------
>>> from stream_learner.events import Origin
>>> from stream_learner.sources import Record
>>> guard = Guard(MemorySuspects())
>>> poison = Record(b'{"id": 1}', None, 0, Origin("events", 0, 7))
>>> guard.remember(poison, RecursionError("maximum recursion depth exceeded"))
>>> guard.watch([("events", 0)])
>>> guard.recognise(poison).error
'RecursionError: maximum recursion depth exceeded'
>>> guard.recognise(poison._replace(value=b'{"id": 2}')) is None  # same offset, other bytes
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from stream_learner.errors import ConnectionFailed
from stream_learner.settings import Settings
from stream_learner.sources import Record, TopicPartition

__all__ = [
    "KEEP",
    "Guard",
    "LocalSuspects",
    "MemorySuspects",
    "RedisSuspects",
    "Suspect",
    "SuspectStore",
    "build_suspects",
    "digest",
]

log = logging.getLogger(__name__)

#: Markers kept per input partition (the oldest are dropped).
KEEP = 32


class Suspect(NamedTuple):
    """A record that made a worker stop: where it is, what it was, what it raised."""

    offset: int
    digest: str
    error: str


def digest(value: bytes | None) -> str:
    """A short SHA-256 digest of a record value (a tombstone has its own).

    Examples
    --------
    >>> digest(b"{}"), digest(None)
    ('44136fa355b3678a1146ad16f7e8649e', 'tombstone')
    """
    if value is None:
        return "tombstone"
    return hashlib.sha256(value).hexdigest()[:32]


class SuspectStore(Protocol):
    """Where markers are kept, per input partition."""

    def load(self, tp: TopicPartition) -> list[Suspect]:
        """The markers of ``tp``, oldest first."""
        ...

    def add(self, tp: TopicPartition, suspect: Suspect) -> None:
        """Keep ``suspect`` (and at most :data:`KEEP` markers of ``tp``)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class MemorySuspects:
    """Markers in memory: the twin for tests, and the store when checkpoints are off."""

    def __init__(self) -> None:
        self._data: dict[TopicPartition, list[Suspect]] = {}

    def load(self, tp: TopicPartition) -> list[Suspect]:
        """See :meth:`SuspectStore.load`."""
        return list(self._data.get(tp, []))

    def add(self, tp: TopicPartition, suspect: Suspect) -> None:
        """See :meth:`SuspectStore.add`."""
        self._data[tp] = [*self._data.get(tp, []), suspect][-KEEP:]

    def close(self) -> None:
        """Nothing to release."""


class LocalSuspects:
    """Markers as one JSON file per partition in ``<directory>/.suspects``."""

    def __init__(self, directory: str | Path) -> None:
        self.root = Path(directory) / ".suspects"

    def _path(self, tp: TopicPartition) -> Path:
        return self.root / re.sub(r"[^A-Za-z0-9._-]", "_", f"{tp[0]}-{tp[1]}.json")

    def load(self, tp: TopicPartition) -> list[Suspect]:
        """See :meth:`SuspectStore.load`."""
        path = self._path(tp)
        if not path.exists():
            return []
        return [Suspect(*row) for row in json.loads(path.read_bytes())]

    def add(self, tp: TopicPartition, suspect: Suspect) -> None:
        """See :meth:`SuspectStore.add` (write-then-rename: never half a file)."""
        rows = [*self.load(tp), suspect][-KEEP:]
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(tp)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps([list(row) for row in rows]))
        os.replace(tmp, path)

    def close(self) -> None:
        """Nothing to release."""


class RedisSuspects:
    """Markers in a Redis list per partition, ``<prefix>:suspects:<topic>:<partition>``."""

    def __init__(
        self,
        url: str,
        prefix: str,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        import redis

        from stream_learner.stores import redact_url

        self.url = redact_url(url)
        self.prefix = prefix
        self._redis = redis.Redis.from_url(
            url, username=username or None, password=password or None,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        )

    def _key(self, tp: TopicPartition) -> str:
        return f"{self.prefix}:suspects:{tp[0]}:{tp[1]}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.RedisError as exc:
            raise ConnectionFailed(
                f"cannot reach Redis at {self.url}: {type(exc).__name__}: {exc}"
            ) from exc

    def load(self, tp: TopicPartition) -> list[Suspect]:
        """See :meth:`SuspectStore.load`."""
        with self._errors():
            rows: list[Any] = self._redis.lrange(self._key(tp), 0, -1)
        return [Suspect(*json.loads(row)) for row in rows]

    def add(self, tp: TopicPartition, suspect: Suspect) -> None:
        """See :meth:`SuspectStore.add` (append and trim in one transaction)."""
        key = self._key(tp)
        with self._errors():
            pipe = self._redis.pipeline(transaction=True)
            pipe.rpush(key, json.dumps(list(suspect)))
            pipe.ltrim(key, -KEEP, -1)
            pipe.execute()

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


class Guard:
    """Remembers the record a worker stopped on, and recognises it when it comes again.

    Parameters
    ----------
    store
        Where markers are kept.
    """

    def __init__(self, store: SuspectStore) -> None:
        self.store = store
        #: Markers of the watched partitions by offset; empty in normal operation, so the
        #: loop asks :meth:`recognise` only when it is not.
        self.suspects: dict[TopicPartition, dict[int, Suspect]] = {}

    def watch(self, partitions: Iterable[TopicPartition]) -> None:
        """Load the markers of newly owned partitions.

        A store that cannot be read is logged and skipped: the guard is a
        safety net, and an unreachable Redis is handled (retried, reported) by
        the checkpoints.
        """
        for tp in partitions:
            try:
                found = {s.offset: s for s in self.store.load(tp)}
            except Exception as exc:  # reported; the worker goes on without these markers
                log.warning(
                    "%s[%d]: cannot read the markers of records that stopped a worker (%s); "
                    "such a record would stop this worker again", tp[0], tp[1], exc,
                )
                continue
            if found:
                self.suspects[tp] = found
                log.warning(
                    "%s[%d]: records at offsets %s made a worker stop before; they are "
                    "dead-lettered (reason stopped_worker) if they come again",
                    tp[0], tp[1], sorted(found),
                )
            else:
                self.suspects.pop(tp, None)

    def recognise(self, record: Record) -> Suspect | None:
        """The marker of ``record`` when it made a worker stop before, else None."""
        topic, partition, offset = record.origin
        suspect = self.suspects.get((topic, partition), {}).get(offset)
        if suspect is None or suspect.digest != digest(record.value):
            return None
        return suspect

    def remember(self, record: Record, error: BaseException) -> None:
        """Write the marker of ``record``, which made the worker stop with ``error``.

        Never raises: the worker is already stopping, and the error that
        stops it must stay the one the log and the exit line show.
        """
        topic, partition, offset = record.origin
        text = f"{type(error).__name__}: {error}"[:500]
        suspect = Suspect(offset, digest(record.value), text)
        try:
            self.store.add((topic, partition), suspect)
        except Exception as exc:  # reported; the original error goes on
            log.error("cannot keep the marker of %s[%d]@%d: %s", topic, partition, offset, exc)
        else:
            self.suspects.setdefault((topic, partition), {})[offset] = suspect

    def close(self) -> None:
        """Release the store."""
        self.store.close()


def build_suspects(settings: Settings, environ: Mapping[str, str]) -> SuspectStore:
    """The marker store next to the checkpoints of ``checkpoint.store`` (memory for none)."""
    c = settings.checkpoint
    if c.store == "local":
        return LocalSuspects(c.directory)
    if c.store == "redis":
        password = c.redis_password(environ)
        prefix = c.key_prefix or f"stream-learner:{settings.kafka.group_id}"
        return RedisSuspects(c.redis_url, prefix, c.redis_username, password, c.timeout_s)
    return MemorySuspects()
