"""Checkpoint stores: Redis, a local folder, and nothing.

A store keeps the last ``keep`` checkpoints of each shard, each one written
in one atomic operation, and refuses a write from a worker of an older
consumer-group generation than the newest one it has seen for that shard
(fencing a stale owner after a rebalance). It never interprets the bytes it
keeps: signing and verification are :mod:`stream_learner.checkpoint`'s job.

Redis keys, all of one shard under one hash tag so a cluster keeps them together::

    <prefix>:{<shard>}:generation   highest generation that claimed or wrote the shard
    <prefix>:{<shard>}:seq          last checkpoint id
    <prefix>:{<shard>}:index        sorted set of kept ids
    <prefix>:{<shard>}:ckpt:<id>    one checkpoint envelope
    <prefix>:shards                 set of shard names
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from stream_learner.errors import CheckpointError, CheckpointFenced, ConnectionFailed

__all__ = ["CheckpointStore", "LocalStore", "MemoryStore", "RedisStore", "redact_url"]


class CheckpointStore(Protocol):
    """Where checkpoint envelopes are kept."""

    def claim(self, shard: str, generation: int) -> None:
        """Record that ``generation`` owns ``shard``; raise :class:`CheckpointFenced` if older."""
        ...

    def save(self, shard: str, generation: int, blob: bytes) -> int:
        """Keep ``blob`` as the newest checkpoint of ``shard``; return its id."""
        ...

    def latest(self, shard: str) -> tuple[int, bytes] | None:
        """The newest checkpoint of ``shard`` (id, envelope), if any."""
        ...

    def generation(self, shard: str) -> int:
        """The newest generation that claimed or wrote ``shard`` (-1: none)."""
        ...

    def get(self, shard: str, checkpoint_id: int) -> bytes | None:
        """One kept checkpoint."""
        ...

    def ids(self, shard: str) -> list[int]:
        """Ids of the kept checkpoints of ``shard``, oldest first."""
        ...

    def shards(self) -> list[str]:
        """Every shard with checkpoints."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def redact_url(url: str) -> str:
    """``url`` without its password, for messages and logs.

    Examples
    --------
    >>> redact_url("rediss://app:s3cret@cache:6380/0")
    'rediss://app:***@cache:6380/0'
    """
    parts = urlsplit(url)
    query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query)
    netloc = parts.netloc
    if parts.password is not None:
        host = netloc.rsplit("@", 1)[1]
        netloc = (f"{parts.username}:***@" if parts.username else ":***@") + host
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class MemoryStore:
    """In-memory twin of the stores, for unit tests."""

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._data: dict[str, dict[int, bytes]] = {}
        self._generation: dict[str, int] = {}
        self._seq: dict[str, int] = {}

    def claim(self, shard: str, generation: int) -> None:
        """See :meth:`CheckpointStore.claim`."""
        self._fence(shard, generation)

    def _fence(self, shard: str, generation: int) -> None:
        newest = self._generation.get(shard, -1)
        if generation < newest:
            raise CheckpointFenced(
                f"shard {shard} belongs to generation {newest}; this worker has {generation}"
            )
        self._generation[shard] = generation

    def save(self, shard: str, generation: int, blob: bytes) -> int:
        """See :meth:`CheckpointStore.save`."""
        self._fence(shard, generation)
        seq = self._seq[shard] = self._seq.get(shard, 0) + 1
        kept = self._data.setdefault(shard, {})
        kept[seq] = blob
        for old in sorted(kept)[: -self.keep]:
            del kept[old]
        return seq

    def latest(self, shard: str) -> tuple[int, bytes] | None:
        """See :meth:`CheckpointStore.latest`."""
        kept = self._data.get(shard)
        if not kept:
            return None
        newest = max(kept)
        return newest, kept[newest]

    def get(self, shard: str, checkpoint_id: int) -> bytes | None:
        """See :meth:`CheckpointStore.get`."""
        return self._data.get(shard, {}).get(checkpoint_id)

    def generation(self, shard: str) -> int:
        """See :meth:`CheckpointStore.generation`."""
        return self._generation.get(shard, -1)

    def ids(self, shard: str) -> list[int]:
        """See :meth:`CheckpointStore.ids`."""
        return sorted(self._data.get(shard, {}))

    def shards(self) -> list[str]:
        """See :meth:`CheckpointStore.shards`."""
        return sorted(self._data)

    def close(self) -> None:
        """Nothing to release."""


_SAVE = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '-1')
local gen = tonumber(ARGV[1])
if gen < newest then return {-1, newest} end
redis.call('SET', KEYS[1], gen)
local id = redis.call('INCR', KEYS[2])
redis.call('SET', ARGV[4] .. id, ARGV[2])
redis.call('ZADD', KEYS[3], id, id)
redis.call('SADD', KEYS[4], ARGV[5])
local keep = tonumber(ARGV[3])
local n = redis.call('ZCARD', KEYS[3])
if n > keep then
  local old = redis.call('ZRANGE', KEYS[3], 0, n - keep - 1)
  for _, o in ipairs(old) do redis.call('DEL', ARGV[4] .. o) end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - keep - 1)
end
return {id, gen}
"""

_CLAIM = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '-1')
local gen = tonumber(ARGV[1])
if gen < newest then return newest end
redis.call('SET', KEYS[1], gen)
return gen
"""


class RedisStore:
    """Checkpoints in Redis; each save is one Lua script (atomic, fenced, trimmed).

    Parameters
    ----------
    url
        ``redis://`` or ``rediss://`` (TLS) URL.
    prefix
        Key prefix, e.g. ``stream-learner:<group>``; lets an ACL user be limited to it.
    keep
        Checkpoints kept per shard.
    username, password
        Credentials (the password comes from the environment, never the settings file).
    timeout_s
        Socket timeout; a slow Redis fails a save instead of stalling the stream.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        keep: int = 3,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.url = redact_url(url)
        self.prefix = prefix
        self.keep = keep
        # No client-side retries: a save is not idempotent, the service retries with backoff.
        self._redis = redis.Redis.from_url(
            url,
            username=username or None,
            password=password or None,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self._save = self._redis.register_script(_SAVE)
        self._claim = self._redis.register_script(_CLAIM)

    def _key(self, shard: str, name: str) -> str:
        return f"{self.prefix}:{{{shard}}}:{name}"

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import redis

        try:
            yield
        except redis.AuthenticationError as exc:
            raise ConnectionFailed(f"Redis at {self.url} refused the credentials: {exc}") from exc
        except redis.RedisError as exc:
            raise ConnectionFailed(
                f"cannot reach Redis at {self.url}: {type(exc).__name__}: {exc}"
            ) from exc

    def ping(self) -> None:
        """Check the connection; raise :class:`ConnectionFailed` naming the address."""
        with self._errors():
            self._redis.ping()

    def claim(self, shard: str, generation: int) -> None:
        """See :meth:`CheckpointStore.claim`."""
        with self._errors():
            newest = int(self._claim(keys=[self._key(shard, "generation")], args=[generation]))
        if newest > generation:
            raise CheckpointFenced(
                f"shard {shard} belongs to generation {newest}; this worker has {generation}"
            )

    def save(self, shard: str, generation: int, blob: bytes) -> int:
        """See :meth:`CheckpointStore.save`."""
        keys = [
            self._key(shard, "generation"),
            self._key(shard, "seq"),
            self._key(shard, "index"),
            f"{self.prefix}:shards",
        ]
        args: list[Any] = [generation, blob, self.keep, self._key(shard, "ckpt:"), shard]
        with self._errors():
            checkpoint_id, newest = self._save(keys=keys, args=args)
        if int(checkpoint_id) < 0:
            raise CheckpointFenced(
                f"shard {shard} belongs to generation {int(newest)}; this worker has {generation}"
            )
        return int(checkpoint_id)

    def latest(self, shard: str) -> tuple[int, bytes] | None:
        """See :meth:`CheckpointStore.latest`."""
        for checkpoint_id in reversed(self.ids(shard)):
            blob = self.get(shard, checkpoint_id)
            if blob is not None:
                return checkpoint_id, blob
        return None

    def get(self, shard: str, checkpoint_id: int) -> bytes | None:
        """See :meth:`CheckpointStore.get`."""
        with self._errors():
            value = self._redis.get(self._key(shard, f"ckpt:{checkpoint_id}"))
        return value if isinstance(value, bytes) else None

    def generation(self, shard: str) -> int:
        """See :meth:`CheckpointStore.generation`."""
        with self._errors():
            value = self._redis.get(self._key(shard, "generation"))
        return int(value) if isinstance(value, bytes | str | int) else -1

    def ids(self, shard: str) -> list[int]:
        """See :meth:`CheckpointStore.ids`."""
        with self._errors():
            raw: list[bytes] = self._redis.zrange(self._key(shard, "index"), 0, -1)  # type: ignore[assignment]
        return sorted(int(i) for i in raw)

    def shards(self) -> list[str]:
        """See :meth:`CheckpointStore.shards`."""
        with self._errors():
            raw = self._redis.smembers(f"{self.prefix}:shards")
        return sorted(s.decode() if isinstance(s, bytes) else str(s) for s in raw)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()


class LocalStore:
    """Checkpoints as files in a folder; atomic by write-then-rename, fenced by a lock."""

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.root = Path(directory)
        self.keep = keep

    def _dir(self, shard: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", shard)
        return self.root / safe

    @contextmanager
    def _locked(self, shard: str) -> Iterator[Path]:
        folder = self._dir(shard)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                yield folder
        except OSError as exc:
            raise CheckpointError(f"checkpoint folder {folder}: {exc}") from exc

    def _fence(self, folder: Path, shard: str, generation: int) -> None:
        path = folder / "generation"
        newest = int(path.read_text()) if path.exists() else -1
        if generation < newest:
            raise CheckpointFenced(
                f"shard {shard} belongs to generation {newest}; this worker has {generation}"
            )
        _atomic_write(path, str(generation).encode())

    def claim(self, shard: str, generation: int) -> None:
        """See :meth:`CheckpointStore.claim`."""
        with self._locked(shard) as folder:
            self._fence(folder, shard, generation)

    def save(self, shard: str, generation: int, blob: bytes) -> int:
        """See :meth:`CheckpointStore.save`."""
        with self._locked(shard) as folder:
            self._fence(folder, shard, generation)
            if not (folder / "shard").exists():
                _atomic_write(folder / "shard", shard.encode("utf-8"))
            ids = self.ids(shard)
            checkpoint_id = (ids[-1] if ids else 0) + 1
            _atomic_write(folder / f"{checkpoint_id:012d}.ckpt", blob)
            for old in self.ids(shard)[: -self.keep]:
                (folder / f"{old:012d}.ckpt").unlink()
            return checkpoint_id

    def latest(self, shard: str) -> tuple[int, bytes] | None:
        """See :meth:`CheckpointStore.latest`."""
        ids = self.ids(shard)
        if not ids:
            return None
        blob = self.get(shard, ids[-1])
        return None if blob is None else (ids[-1], blob)

    def get(self, shard: str, checkpoint_id: int) -> bytes | None:
        """See :meth:`CheckpointStore.get`."""
        path = self._dir(shard) / f"{checkpoint_id:012d}.ckpt"
        return path.read_bytes() if path.exists() else None

    def generation(self, shard: str) -> int:
        """See :meth:`CheckpointStore.generation`."""
        path = self._dir(shard) / "generation"
        return int(path.read_text()) if path.exists() else -1

    def ids(self, shard: str) -> list[int]:
        """See :meth:`CheckpointStore.ids`."""
        folder = self._dir(shard)
        if not folder.is_dir():
            return []
        return sorted(int(p.stem) for p in folder.glob("*.ckpt"))

    def shards(self) -> list[str]:
        """See :meth:`CheckpointStore.shards`."""
        if not self.root.is_dir():
            return []
        return sorted(p.read_text() for p in self.root.glob("*/shard"))

    def close(self) -> None:
        """Nothing to release."""


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def store_options(environ: Mapping[str, str], password_env: str) -> str | None:
    """The Redis password from the named environment variable (``None`` if unset)."""
    return environ.get(password_env) if password_env else None
