"""Keyed state in the checkpoint store: parked models, lazy loads, incremental saves.

With ``model.scope = "key"`` and a checkpoint store, a shard's per-key models
live in the store (see :mod:`stream_learner.stores`): the checkpointed
*entries* (one signed, encoded slot per key, as of the newest checkpoint) and a
*scratch* map of the models parked since. :class:`StoreSpill` is the
:class:`~stream_learner.scopes.Spill` that reads and writes them for one
shard and one epoch, so a worker holds at most ``model.max_resident`` models
in memory and a restore loads a key's model the first time the key is seen.

Parks are sent :data:`PARK_BATCH` at a time, so parking costs a round trip
per batch, not per model. When the store cannot be reached, parked models
stay in memory (and go out with the next checkpoint); a model that must be loaded is retried with
backoff for ``checkpoint.restore_timeout_s`` (:func:`read_store`), then the error is raised.
While a checkpoint's write is in flight (:mod:`stream_learner.write_behind`),
parks stay in memory too, and its entries are read from memory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.errors import CheckpointError, ConnectionFailed
from stream_learner.retrying import Backoff, retry_call
from stream_learner.stores import CheckpointStore

__all__ = ["PARK_BATCH", "STORE_FIRST_WAIT_S", "StoreSpill", "read_store"]

#: parks sent to the store in one write (one round trip to Redis, one SQLite transaction)
PARK_BATCH = 256

#: first wait before a read of an unreachable store is made again (then doubling)
STORE_FIRST_WAIT_S = 0.2

log = logging.getLogger(__name__)

_T = TypeVar("_T")


def read_store(
    read: Callable[[], _T],
    what: str,
    timeout_s: float,
    max_backoff_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    logger: logging.Logger = log,
) -> _T:
    """``read()``, retried with doubling waits while the store is unreachable.

    The restore policy (``checkpoint.restore_timeout_s``, ``checkpoint.max_backoff_s``):
    only :class:`ConnectionFailed` is retried, from :data:`STORE_FIRST_WAIT_S` up to
    ``max_backoff_s`` between attempts, for ``timeout_s`` at most.

    Parameters
    ----------
    read
        The store call.
    what
        What it does, for the log lines and the error (e.g. ``"claim events:0"``).
    timeout_s, max_backoff_s
        How long to retry, and the longest wait between attempts.
    clock, sleep, logger
        Monotonic seconds, how to wait, and where each failure is logged.

    Raises
    ------
    ConnectionFailed
        Still unreachable after ``timeout_s``: names ``what`` and the last error.
    """
    try:
        return retry_call(
            read, what, lambda exc: isinstance(exc, ConnectionFailed),
            Backoff(STORE_FIRST_WAIT_S, max_backoff_s),
            give_up_after_s=timeout_s, clock=clock, sleep=sleep, log=logger,
        )
    except ConnectionFailed as exc:
        raise ConnectionFailed(
            f"{what}: store unreachable for {timeout_s:.0f}s: {exc}"
        ) from exc


class StoreSpill:
    """Parks and loads the models of one shard in the checkpoint store.

    Parameters
    ----------
    store, codec
        Where entries live, and how they are signed and verified.
    shard, epoch
        The shard, and the epoch its owner claimed (parks of a stale epoch are refused).
    timeout_s, max_backoff_s
        How long to retry a load while the store is unreachable.
    """

    def __init__(
        self,
        store: CheckpointStore,
        codec: EnvelopeCodec,
        shard: str,
        epoch: int,
        timeout_s: float = 60.0,
        max_backoff_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.codec = codec
        self.shard = shard
        self.epoch = epoch
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self._clock = clock
        #: parked models not yet sent (the next batch, or what the store could not take);
        #: the next checkpoint writes them as entries
        self.pending: dict[str, bytes] = {}
        #: entries read ahead by :meth:`prefetch` (None: the store has none)
        self.prefetched: dict[str, bytes | None] = {}
        #: the newest checkpoint's entries (signed) and the parked keys it promotes, until
        #: its write is settled; a failed write's go again with the next checkpoint
        self.unwritten: dict[str, bytes] = {}
        self.unpromoted: set[str] = set()
        #: the checkpoint write in flight: parks wait for it (it empties the scratch map)
        self.write: Future[Any] | None = None
        #: bytes sent to the store by parks since the last checkpoint, and how many parks
        self.bytes_parked = 0
        self.n_parked_since = 0
        self._parked_total = 0
        self._parks = 0

    def park(self, key: str, payload: bytes) -> None:
        """Keep ``payload``; every :data:`PARK_BATCH` parks go to the scratch map in one write."""
        self.pending[key] = payload
        if len(self.pending) >= PARK_BATCH:
            self.flush()

    def flush(self) -> None:
        """Send the pending parks to the store's scratch map (kept in memory if that fails,
        or while a checkpoint's write is in flight)."""
        if self.write is not None and not self.write.done():
            return
        seal = self.codec.seal_entry
        items = {key: seal(self.shard, key, payload) for key, payload in self.pending.items()}
        try:
            self.store.park(self.shard, self.epoch, items)
        except (ConnectionFailed, CheckpointError) as exc:
            if len(self.pending) <= PARK_BATCH:
                log.warning("shard %s: parked models stay in memory: %s", self.shard, exc)
            return
        self.bytes_parked += sum(map(len, items.values()))
        self.n_parked_since += len(items)
        self._parked_total += sum(map(len, self.pending.values()))
        self._parks += len(items)
        self.pending.clear()

    def prefetch(self, keys: Sequence[str], parked: Sequence[str]) -> None:
        """Read the entries of ``keys`` and the parks of ``parked`` in one round trip; the
        next :meth:`load` of each is served from memory (at most one batch is held)."""
        self.prefetched = dict.fromkeys([*keys, *parked])
        found = self._retry(lambda: self.store.fetch(self.shard, self.epoch, keys, parked))
        self.prefetched.update(found)

    def load(self, key: str, parked: bool) -> bytes | None:
        """The verified entry of ``key``, from where its newest one is.

        That is memory (a pending park), then the scratch map for a key
        ``parked`` since the newest checkpoint was sealed; else that
        checkpoint's entry while its write is not settled (:attr:`unwritten`,
        or the scratch map for a key it promotes), else the entries.
        """
        payload = self.pending.pop(key, None)
        if payload is not None:
            return payload
        read_ahead = key in self.prefetched
        ahead = self.prefetched.pop(key, None)
        if parked:
            blob = ahead if read_ahead else self._parked(key)
        elif key in self.unwritten:
            blob = self.unwritten[key]
        elif key in self.unpromoted:  # the scratch map, or the entries once promoted
            blob = self._parked(key)
            if blob is None:
                blob = self._retry(lambda: self.store.entry(self.shard, key))
        elif read_ahead:
            blob = ahead
        else:
            blob = self._retry(lambda: self.store.entry(self.shard, key))
        return None if blob is None else self.codec.open_entry(self.shard, key, blob)

    def _parked(self, key: str) -> bytes | None:
        return self._retry(lambda: self.store.parked(self.shard, self.epoch, key))

    def _retry(self, read: Callable[[], _T]) -> _T:
        return read_store(read, f"shard {self.shard}: loading a model", self.timeout_s,
                          self.max_backoff_s, clock=self._clock)

    def parked_bytes(self, n_parked: int) -> int:
        """Estimate: parked models times the mean size of those this process parked."""
        mean = self._parked_total / self._parks if self._parks else 0.0
        return int(mean * n_parked)
