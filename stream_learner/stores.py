"""Checkpoint stores: Redis, a local folder, and nothing.

A store keeps the last ``keep`` checkpoints of each shard, each one written
in one atomic operation. It never interprets the bytes it keeps: signing and
verification are :mod:`stream_learner.checkpoint`'s job.

Fencing. Every assignment of a shard takes a new *epoch* from the store
(:meth:`CheckpointStore.claim`: an atomic increment), and every write carries
the epoch of its writer and is checked against the newest one in the same
atomic step. A stale owner (a worker that lost the shard in a rebalance but
has not noticed yet) is refused with :class:`CheckpointFenced`, whatever Kafka
client it runs: the token lives in the store, not in the consumer group.

Keyed state (``model.scope = "key"``) is incremental: besides the checkpoint
envelopes (the *heads*, one per checkpoint, holding the shard's frontier and
everything but the per-key models), a shard has one map *key -> entry* (a
signed, encoded model slot: :mod:`stream_learner.slot_codec`). A checkpoint
writes its head, the entries changed since the previous one, and an *undo*
record (the previous value of each entry it replaced) in one atomic step;
:meth:`CheckpointStore.save` with ``revert_to`` applies the undo records of
the newer checkpoints (newest first) and drops them, which is how a keyed
shard is rolled back. Models parked out of memory between two checkpoints go
to a *scratch* map of the current epoch (:meth:`CheckpointStore.park`); a
checkpoint moves the ones it names (``promote``) into the entries and clears
the scratch map. A new epoch starts
with an empty scratch map: what a crashed owner parked is never read.

Redis keys, all of one shard under one hash tag so a cluster keeps them together::

    <prefix>:{<shard>}:epoch        newest epoch that claimed the shard
    <prefix>:{<shard>}:seq          last checkpoint id
    <prefix>:{<shard>}:index        sorted set of kept ids
    <prefix>:{<shard>}:ckpt:<id>    one checkpoint envelope (head)
    <prefix>:{<shard>}:keys         hash: key -> entry (keyed state)
    <prefix>:{<shard>}:undo:<id>    hash: key -> previous entry ("\\x00": none) of checkpoint id
    <prefix>:{<shard>}:scratch      hash: key -> entry parked since the last checkpoint
    <prefix>:shards                 set of shard names

The local folder keeps one folder per shard: ``epoch``, ``shard``, the heads
``<id>.ckpt`` (write, fsync, rename), ``keys.sqlite`` (entries and undo
records, SQLite with full synchronous commits), ``scratch-<epoch>.sqlite``
(not synced: it is thrown away at the next claim) and ``.run``, locked by the
run that holds the shard (:meth:`LocalStore.reserve`).
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import urlsplit, urlunsplit

from stream_learner.errors import CheckpointError, CheckpointFenced, ConnectionFailed, os_reason

__all__ = [
    "PACK_SLICE", "SQLITE_PAGE_SIZE", "CheckpointStore", "LocalStore", "MemoryStore", "RedisStore",
    "SlicedPacker", "redact_url",
]


class CheckpointStore(Protocol):
    """Where checkpoint envelopes and keyed entries are kept."""

    #: a keyed checkpoint's :meth:`save` may run in a background thread while the loop reads
    #: entries (see :mod:`stream_learner.write_behind`)
    background_writes: bool

    def claim(self, shard: str) -> int:
        """Take a new epoch for ``shard`` (atomically newer than any before) and return it."""
        ...

    def epoch(self, shard: str) -> int:
        """The newest epoch that claimed ``shard`` (-1: none)."""
        ...

    def save(
        self,
        shard: str,
        epoch: int,
        blob: bytes,
        entries: Mapping[str, bytes] | None = None,
        promote: Iterable[str] = (),
        revert_to: int | None = None,
    ) -> int:
        """Keep ``blob`` as the newest checkpoint of ``shard``; return its id.

        In the same atomic step: refuse (:class:`CheckpointFenced`) when a newer
        epoch claimed the shard; first undo the checkpoints newer than
        ``revert_to`` and drop them; write ``entries`` and the ``promote``-d
        scratch entries with their undo record; clear the scratch map.
        """
        ...

    def park(self, shard: str, epoch: int, items: Mapping[str, bytes]) -> None:
        """Keep ``items`` (key -> entry) in the scratch map of ``epoch`` in one write;
        :class:`CheckpointFenced` if a newer epoch claimed the shard."""
        ...

    def parked(self, shard: str, epoch: int, key: str) -> bytes | None:
        """An entry parked by ``epoch`` since the last checkpoint."""
        ...

    def entry(self, shard: str, key: str) -> bytes | None:
        """The checkpointed entry of ``key`` (as of the newest checkpoint)."""
        ...

    def fetch(
        self, shard: str, epoch: int, keys: Sequence[str], parked: Sequence[str]
    ) -> dict[str, bytes]:
        """In one round trip: the entries of ``keys`` and the scratch entries of ``parked``
        (those that exist)."""
        ...

    def n_entries(self, shard: str) -> int:
        """How many keys have an entry."""
        ...

    def latest(self, shard: str) -> tuple[int, bytes] | None:
        """The newest checkpoint of ``shard`` (id, envelope), if any."""
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
    """In-memory twin of the stores, for unit tests.

    Examples
    --------
    >>> store = MemoryStore()
    >>> old, new = store.claim("s"), store.claim("s")
    >>> store.save("s", new, b"head", {"k": b"v1"})
    1
    >>> store.save("s", old, b"stale")
    Traceback (most recent call last):
    ...
    stream_learner.errors.CheckpointFenced: shard s was claimed by epoch 2; this worker holds epoch 1
    >>> store.save("s", new, b"head2", {"k": b"v2"}), store.entry("s", "k")
    (2, b'v2')
    >>> store.save("s", new, b"rolled back", revert_to=1), store.entry("s", "k"), store.ids("s")
    (3, b'v1', [1, 3])
    """

    #: one thread: the tests of the pure core stay deterministic
    background_writes = False

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self._data: dict[str, dict[int, bytes]] = {}
        self._epoch: dict[str, int] = {}
        self._seq: dict[str, int] = {}
        self._entries: dict[str, dict[str, bytes]] = {}
        self._undo: dict[str, dict[int, dict[str, bytes | None]]] = {}
        self._scratch: dict[str, dict[str, bytes]] = {}

    def claim(self, shard: str) -> int:
        """See :meth:`CheckpointStore.claim`."""
        epoch = self._epoch[shard] = self._epoch.get(shard, 0) + 1
        self._scratch.pop(shard, None)
        return epoch

    def _fence(self, shard: str, epoch: int) -> None:
        newest = self._epoch.get(shard, -1)
        if epoch < newest:
            raise CheckpointFenced(shard, newest, epoch)
        self._epoch[shard] = epoch

    def save(
        self,
        shard: str,
        epoch: int,
        blob: bytes,
        entries: Mapping[str, bytes] | None = None,
        promote: Iterable[str] = (),
        revert_to: int | None = None,
    ) -> int:
        """See :meth:`CheckpointStore.save`."""
        self._fence(shard, epoch)
        kept = self._data.setdefault(shard, {})
        current = self._entries.setdefault(shard, {})
        undos = self._undo.setdefault(shard, {})
        if revert_to is not None:
            for newer in sorted((i for i in kept if i > revert_to), reverse=True):
                _apply_undo(current, undos.pop(newer, {}))
                del kept[newer]
        seq = self._seq[shard] = self._seq.get(shard, 0) + 1
        scratch = self._scratch.pop(shard, {})
        changes = dict(entries or {})
        changes.update({k: scratch[k] for k in promote if k in scratch})
        if changes:
            undos[seq] = {k: current.get(k) for k in changes}
            current.update(changes)
        kept[seq] = blob
        for old in sorted(kept)[: -self.keep]:
            del kept[old]
            undos.pop(old, None)
        return seq

    def park(self, shard: str, epoch: int, items: Mapping[str, bytes]) -> None:
        """See :meth:`CheckpointStore.park`."""
        self._fence(shard, epoch)
        self._scratch.setdefault(shard, {}).update(items)

    def parked(self, shard: str, epoch: int, key: str) -> bytes | None:
        """See :meth:`CheckpointStore.parked`."""
        if self._epoch.get(shard, -1) != epoch:
            return None
        return self._scratch.get(shard, {}).get(key)

    def entry(self, shard: str, key: str) -> bytes | None:
        """See :meth:`CheckpointStore.entry`."""
        return self._entries.get(shard, {}).get(key)

    def fetch(
        self, shard: str, epoch: int, keys: Sequence[str], parked: Sequence[str]
    ) -> dict[str, bytes]:
        """See :meth:`CheckpointStore.fetch`."""
        entries = self._entries.get(shard, {})
        scratch = self._scratch.get(shard, {}) if self._epoch.get(shard) == epoch else {}
        found = {k: entries[k] for k in keys if k in entries}
        found.update({k: scratch[k] for k in parked if k in scratch})
        return found

    def n_entries(self, shard: str) -> int:
        """See :meth:`CheckpointStore.n_entries`."""
        return len(self._entries.get(shard, {}))

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

    def epoch(self, shard: str) -> int:
        """See :meth:`CheckpointStore.epoch`."""
        return self._epoch.get(shard, -1)

    def ids(self, shard: str) -> list[int]:
        """See :meth:`CheckpointStore.ids`."""
        return sorted(self._data.get(shard, {}))

    def shards(self) -> list[str]:
        """See :meth:`CheckpointStore.shards`."""
        return sorted(self._data)

    def close(self) -> None:
        """Nothing to release."""


def _apply_undo(current: dict[str, bytes], undo: Mapping[str, bytes | None]) -> None:
    for key, old in undo.items():
        if old is None:
            current.pop(key, None)
        else:
            current[key] = old


_CLAIM = """
local epoch = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[2])
return epoch
"""

_PARK = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) < newest then return newest end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return -1
"""

# KEYS: epoch, seq, index, shards, keys, scratch
# ARGV: epoch, blob, keep, ckpt prefix, shard, undo prefix, revert_to (-1: none),
#       number of entries, entries as key/value pairs, then the keys to promote
_SAVE = """
local newest = tonumber(redis.call('GET', KEYS[1]) or '-1')
local epoch = tonumber(ARGV[1])
if epoch < newest then return {-1, newest} end
if epoch > newest then redis.call('SET', KEYS[1], epoch) end
local revert = tonumber(ARGV[7])
if revert >= 0 then
  local newer = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. revert, '+inf')
  for i = #newer, 1, -1 do
    local undo = redis.call('HGETALL', ARGV[6] .. newer[i])
    for j = 1, #undo, 2 do
      if undo[j + 1] == '\\0' then
        redis.call('HDEL', KEYS[5], undo[j])
      else
        redis.call('HSET', KEYS[5], undo[j], string.sub(undo[j + 1], 2))
      end
    end
    redis.call('DEL', ARGV[6] .. newer[i], ARGV[4] .. newer[i])
    redis.call('ZREM', KEYS[3], newer[i])
  end
end
local id = redis.call('INCR', KEYS[2])
local undokey = ARGV[6] .. id
local function put(k, v)
  local old = redis.call('HGET', KEYS[5], k)
  if old then
    redis.call('HSETNX', undokey, k, '\\1' .. old)
  else
    redis.call('HSETNX', undokey, k, '\\0')
  end
  redis.call('HSET', KEYS[5], k, v)
end
local n = tonumber(ARGV[8])
for i = 9, 8 + 2 * n, 2 do put(ARGV[i], ARGV[i + 1]) end
for i = 9 + 2 * n, #ARGV do
  local v = redis.call('HGET', KEYS[6], ARGV[i])
  if v then put(ARGV[i], v) end
end
redis.call('DEL', KEYS[6])
redis.call('SET', ARGV[4] .. id, ARGV[2])
redis.call('ZADD', KEYS[3], id, id)
redis.call('SADD', KEYS[4], ARGV[5])
local keep = tonumber(ARGV[3])
local count = redis.call('ZCARD', KEYS[3])
if count > keep then
  local old = redis.call('ZRANGE', KEYS[3], 0, count - keep - 1)
  for _, o in ipairs(old) do redis.call('DEL', ARGV[4] .. o, ARGV[6] .. o) end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, count - keep - 1)
end
return {id, epoch}
"""


#: arguments hiredis packs in one call; a longer command (a keyed checkpoint's thousands
#: of entries) is packed in slices of this many (see :class:`SlicedPacker`)
PACK_SLICE = 256


class SlicedPacker:
    """Packs Redis commands with hiredis, a long one in slices of :data:`PACK_SLICE` arguments.

    redis-py packs a command with hiredis in one call when hiredis is installed:
    one step in C, so a checkpoint written in the background does not take turns
    with the loop for the interpreter once per entry. For one command of
    thousands of entries that call holds about four times the command's bytes
    at its peak (a checkpoint of 6,500 entries, 14.9 MB, raised the process's
    peak RSS by 60 MB: ``scripts/bench_redis_store.py --packing``), and the
    worker's peak RSS with it. Packed in slices, the command is the same bytes
    on the wire, sent as one chunk per slice, and the peak is the packed copy
    (16 MB there), at half the CPU.

    Examples
    --------
    >>> import hiredis
    >>> args = ("EVALSHA", "f00", 1, "k", *(b"v%d" % i for i in range(600)))
    >>> chunks = SlicedPacker().pack(*args)
    >>> len(chunks), b"".join(chunks) == hiredis.pack_command(args)
    (4, True)
    """

    def __init__(self) -> None:
        import hiredis  # with redis-py, as the store imports it: only when Redis is used

        self._pack: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command

    def pack(self, *args: Any) -> list[bytes | memoryview]:
        """The command ``args`` in the Redis protocol, as chunks to send in order."""
        if isinstance(args[0], str):  # "CONFIG GET": redis-py's split of a command's words
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        args = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
        try:
            if len(args) <= PACK_SLICE:
                return [self._pack(args)]
            chunks: list[bytes | memoryview] = [b"*%d\r\n" % len(args)]
            for start in range(0, len(args), PACK_SLICE):
                packed = self._pack(args[start : start + PACK_SLICE])
                # each slice comes as a command of its own: its "*<n>\r\n" header is dropped
                chunks.append(memoryview(packed)[packed.index(b"\r\n") + 2 :])
        except TypeError as exc:  # an argument of a type hiredis does not pack
            from redis.exceptions import DataError

            raise DataError(str(exc)) from exc
        return chunks


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

    #: its connection pool is thread-safe: a save runs on a connection of its own
    background_writes = True

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
            command_packer=SlicedPacker(),
        )
        self._save = self._redis.register_script(_SAVE)
        self._claim = self._redis.register_script(_CLAIM)
        self._park = self._redis.register_script(_PARK)

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

    def claim(self, shard: str) -> int:
        """See :meth:`CheckpointStore.claim`."""
        keys = [self._key(shard, "epoch"), self._key(shard, "scratch")]
        with self._errors():
            return int(self._claim(keys=keys))

    def save(
        self,
        shard: str,
        epoch: int,
        blob: bytes,
        entries: Mapping[str, bytes] | None = None,
        promote: Iterable[str] = (),
        revert_to: int | None = None,
    ) -> int:
        """See :meth:`CheckpointStore.save`."""
        keys = [
            self._key(shard, "epoch"),
            self._key(shard, "seq"),
            self._key(shard, "index"),
            f"{self.prefix}:shards",
            self._key(shard, "keys"),
            self._key(shard, "scratch"),
        ]
        entries = entries or {}
        args: list[Any] = [
            epoch, blob, self.keep, self._key(shard, "ckpt:"), shard, self._key(shard, "undo:"),
            -1 if revert_to is None else revert_to, len(entries),
        ]
        for key, value in entries.items():
            args += (key, value)
        args.extend(promote)
        with self._errors():
            checkpoint_id, newest = self._save(keys=keys, args=args)
        if int(checkpoint_id) < 0:
            raise CheckpointFenced(shard, int(newest), epoch)
        return int(checkpoint_id)

    def park(self, shard: str, epoch: int, items: Mapping[str, bytes]) -> None:
        """See :meth:`CheckpointStore.park`."""
        keys = [self._key(shard, "epoch"), self._key(shard, "scratch")]
        args: list[Any] = [epoch]
        for key, blob in items.items():
            args += (key, blob)
        with self._errors():
            newest = int(self._park(keys=keys, args=args))
        if newest >= 0:
            raise CheckpointFenced(shard, newest, epoch)

    def parked(self, shard: str, epoch: int, key: str) -> bytes | None:
        """See :meth:`CheckpointStore.parked` (a new epoch's claim emptied the map)."""
        with self._errors():
            value = self._redis.hget(self._key(shard, "scratch"), key)
        return value if isinstance(value, bytes) else None

    def entry(self, shard: str, key: str) -> bytes | None:
        """See :meth:`CheckpointStore.entry`."""
        with self._errors():
            value = self._redis.hget(self._key(shard, "keys"), key)
        return value if isinstance(value, bytes) else None

    def fetch(
        self, shard: str, epoch: int, keys: Sequence[str], parked: Sequence[str]
    ) -> dict[str, bytes]:
        """See :meth:`CheckpointStore.fetch` (one pipelined round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        if keys:
            pipe.hmget(self._key(shard, "keys"), list(keys))
        if parked:
            pipe.hmget(self._key(shard, "scratch"), list(parked))
        with self._errors():
            replies = pipe.execute()
        found: dict[str, bytes] = {}
        for names, values in zip([n for n in (keys, parked) if n], replies, strict=True):
            found.update((k, v) for k, v in zip(names, values, strict=True) if v is not None)
        return found

    def n_entries(self, shard: str) -> int:
        """See :meth:`CheckpointStore.n_entries`."""
        with self._errors():
            return int(self._redis.hlen(self._key(shard, "keys")))

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

    def epoch(self, shard: str) -> int:
        """See :meth:`CheckpointStore.epoch`."""
        with self._errors():
            value = self._redis.get(self._key(shard, "epoch"))
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


#: page size of the SQLite files made by :class:`LocalStore`: an entry (about 2.4 KB for
#: the shipped model) takes most of a 4 KB page, so each write touched a page of its own;
#: 16 KB pages hold six. A file made with another size keeps it.
SQLITE_PAGE_SIZE = 16384

# An entry replaced in place: INSERT OR REPLACE deletes the row and inserts a new one
# (a new rowid, its index entry moved), about twice the work for the same result.
_PUT = "INSERT INTO {} VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET blob = excluded.blob"
_PUT_ENTRY, _PUT_SCRATCH = _PUT.format("entries"), _PUT.format("scratch")


class LocalStore:
    """Checkpoints as files in a folder; atomic by write-then-rename, fenced under a lock.

    Keyed entries and their undo records live in ``keys.sqlite``, written in one
    transaction before the head that names them. A crash between the two leaves
    undo records newer than the newest head: the next claim or save (under the
    shard's lock) applies and drops them, so the entries always match a head.
    """

    #: SQLite connections stay in the thread that opened them
    background_writes = False

    def __init__(self, directory: str | Path, keep: int = 3) -> None:
        self.root = Path(directory)
        self.keep = keep
        self._db: dict[str, sqlite3.Connection] = {}
        self._scratch: dict[tuple[str, int], sqlite3.Connection] = {}
        self._reserved: list[TextIO] = []

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
        except (OSError, sqlite3.Error) as exc:
            raise CheckpointError(f"checkpoint folder {folder}: {exc}") from exc

    def reserve(self, shard: str) -> None:
        """Hold ``shard`` for this process until :meth:`close`: one run at a time on it.

        An exclusive lock on the shard folder's ``.run`` file, which holds the
        process id of the run. The system releases it when the process ends,
        however it ends, so a crashed run never leaves the shard held.

        Raises
        ------
        CheckpointError
            Another process holds the shard, or its folder cannot be written.
        """
        folder = self._dir(shard)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = (folder / ".run").open("a+")
        except OSError as exc:
            raise CheckpointError(f"checkpoint folder {folder}: {os_reason(exc)}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if not isinstance(exc, BlockingIOError):
                raise CheckpointError(f"checkpoint folder {folder}: {os_reason(exc)}") from exc
            raise CheckpointError(
                f"checkpoint folder {self.root} is in use by another run (process "
                f"{holder or 'unknown'}) on shard {shard}: one run at a time on a shard's "
                "checkpoints; wait for it to end, or give this run another checkpoint.directory"
            ) from None
        handle.truncate(0)
        handle.write(str(os.getpid()))
        handle.flush()
        self._reserved.append(handle)

    def _keys_db(self, shard: str, create: bool = True) -> sqlite3.Connection | None:
        db = self._db.get(shard)
        if db is None:
            path = self._dir(shard) / "keys.sqlite"
            if not create and not path.exists():
                return None
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA synchronous = FULL")
            db.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")  # a new file only
            db.execute("CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, blob BLOB)")
            db.execute("CREATE TABLE IF NOT EXISTS undo (id INTEGER, key TEXT, blob BLOB, "
                       "PRIMARY KEY (id, key))")
            self._db[shard] = db
        return db

    def _scratch_db(self, shard: str, epoch: int) -> sqlite3.Connection:
        db = self._scratch.get((shard, epoch))
        if db is None:
            folder = self._dir(shard)
            folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(folder / f"scratch-{epoch}.sqlite", isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA synchronous = OFF")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
            db.execute("CREATE TABLE IF NOT EXISTS scratch (key TEXT PRIMARY KEY, blob BLOB)")
            self._scratch[(shard, epoch)] = db
        return db

    def _current_epoch(self, folder: Path) -> int:
        path = folder / "epoch"
        return int(path.read_text()) if path.exists() else -1

    def _fence(self, folder: Path, shard: str, epoch: int) -> None:
        newest = self._current_epoch(folder)
        if epoch < newest:
            raise CheckpointFenced(shard, newest, epoch)
        if epoch > newest:
            _atomic_write(folder / "epoch", str(epoch).encode())

    def _recover(self, shard: str, above: int) -> None:
        """Apply and drop the undo records of checkpoints newer than ``above`` (newest first)."""
        db = self._keys_db(shard, create=False)
        if db is None:
            return
        rows = db.execute("SELECT id, key, blob FROM undo WHERE id > ? ORDER BY id DESC",
                          (above,)).fetchall()
        if not rows:
            return
        db.execute("BEGIN IMMEDIATE")
        for _id, key, blob in rows:
            if blob is None:
                db.execute("DELETE FROM entries WHERE key = ?", (key,))
            else:
                db.execute(_PUT_ENTRY, (key, blob))
        db.execute("DELETE FROM undo WHERE id > ?", (above,))
        db.execute("COMMIT")

    def claim(self, shard: str) -> int:
        """See :meth:`CheckpointStore.claim`."""
        with self._locked(shard) as folder:
            epoch = max(self._current_epoch(folder), 0) + 1
            _atomic_write(folder / "epoch", str(epoch).encode())
            ids = self.ids(shard)
            self._recover(shard, ids[-1] if ids else 0)
            for stale in folder.glob("scratch-*.sqlite"):
                stale.unlink()
            return epoch

    def save(
        self,
        shard: str,
        epoch: int,
        blob: bytes,
        entries: Mapping[str, bytes] | None = None,
        promote: Iterable[str] = (),
        revert_to: int | None = None,
    ) -> int:
        """See :meth:`CheckpointStore.save`."""
        with self._locked(shard) as folder:
            self._fence(folder, shard, epoch)
            if not (folder / "shard").exists():
                _atomic_write(folder / "shard", shard.encode("utf-8"))
            ids = self.ids(shard)
            seq_path = folder / "seq"
            seq = max(ids[-1] if ids else 0, int(seq_path.read_text()) if seq_path.exists() else 0)
            if revert_to is not None:
                for newer in reversed([i for i in ids if i > revert_to]):
                    (folder / f"{newer:012d}.ckpt").unlink()
                _atomic_write(seq_path, str(seq).encode())
                ids = [i for i in ids if i <= revert_to]
            self._recover(shard, ids[-1] if ids else 0)
            checkpoint_id = seq + 1
            self._write_entries(shard, epoch, checkpoint_id, entries or {}, list(promote))
            _atomic_write(folder / f"{checkpoint_id:012d}.ckpt", blob)
            kept = self.ids(shard)
            for old in kept[: -self.keep]:
                (folder / f"{old:012d}.ckpt").unlink()
            if len(kept) > self.keep and (db := self._keys_db(shard, create=False)) is not None:
                db.execute("DELETE FROM undo WHERE id <= ?", (kept[-self.keep - 1],))
            return checkpoint_id

    def _write_entries(
        self, shard: str, epoch: int, checkpoint_id: int, entries: Mapping[str, bytes],
        promote: list[str],
    ) -> None:
        changes = dict(entries)
        if promote:
            scratch = self._scratch_db(shard, epoch)
            for key in promote:
                row = scratch.execute("SELECT blob FROM scratch WHERE key = ?", (key,)).fetchone()
                if row is not None:
                    changes[key] = row[0]
            scratch.execute("DELETE FROM scratch")
        if not changes:
            return
        db = self._keys_db(shard)
        assert db is not None
        self._replace_entries(db, checkpoint_id, changes)

    @staticmethod
    def _replace_entries(db: sqlite3.Connection, checkpoint_id: int,
                         changes: Mapping[str, bytes]) -> None:
        """``changes`` as the entries, each replaced one copied to the undo records first
        (one transaction)."""
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO undo VALUES (?, ?, (SELECT blob FROM entries WHERE key = ?))",
                [(checkpoint_id, key, key) for key in changes],
            )
            db.executemany(_PUT_ENTRY, changes.items())
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def park(self, shard: str, epoch: int, items: Mapping[str, bytes]) -> None:
        """See :meth:`CheckpointStore.park`.

        Each epoch has its own scratch file, which only its owner reads, so the
        epoch check here (without the lock) only tells a stale owner early.
        """
        try:
            newest = self._current_epoch(self._dir(shard))
            if epoch < newest:
                raise CheckpointFenced(shard, newest, epoch)
            db = self._scratch_db(shard, epoch)
            db.execute("BEGIN")
            db.executemany(_PUT_SCRATCH, items.items())
            db.execute("COMMIT")
        except (OSError, sqlite3.Error) as exc:
            raise CheckpointError(f"checkpoint folder {self._dir(shard)}: {exc}") from exc

    def parked(self, shard: str, epoch: int, key: str) -> bytes | None:
        """See :meth:`CheckpointStore.parked`."""
        row = self._scratch_db(shard, epoch).execute(
            "SELECT blob FROM scratch WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def entry(self, shard: str, key: str) -> bytes | None:
        """See :meth:`CheckpointStore.entry`."""
        db = self._keys_db(shard, create=False)
        if db is None:
            return None
        row = db.execute("SELECT blob FROM entries WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def fetch(
        self, shard: str, epoch: int, keys: Sequence[str], parked: Sequence[str]
    ) -> dict[str, bytes]:
        """See :meth:`CheckpointStore.fetch`."""
        found: dict[str, bytes] = {}
        db = self._keys_db(shard, create=False)
        for conn, table, names in (
            (db, "entries", keys), (self._scratch_db(shard, epoch) if parked else None,
                                    "scratch", parked),
        ):
            if conn is None:
                continue
            for i in range(0, len(names), 500):
                chunk = list(names[i : i + 500])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT key, blob FROM {table} WHERE key IN ({marks})", chunk
                ).fetchall()
                found.update((k, bytes(v)) for k, v in rows)
        return found

    def n_entries(self, shard: str) -> int:
        """See :meth:`CheckpointStore.n_entries`."""
        db = self._keys_db(shard, create=False)
        return 0 if db is None else int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

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

    def epoch(self, shard: str) -> int:
        """See :meth:`CheckpointStore.epoch`."""
        return self._current_epoch(self._dir(shard))

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
        """Close the SQLite connections."""
        for db in [*self._db.values(), *self._scratch.values()]:
            db.close()
        self._db.clear()
        self._scratch.clear()
        for handle in self._reserved:
            handle.close()  # releases its lock
        self._reserved.clear()


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
