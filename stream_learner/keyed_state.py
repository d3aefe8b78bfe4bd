"""Keyed state in the checkpoint store: parked models, lazy loads, incremental saves.

With ``model.scope = "key"`` and a checkpoint store, a shard's per-key models
live in the store (see :mod:`stream_learner.stores`): the checkpointed
*entries* (one signed pickle per key, as of the newest checkpoint) and a
*scratch* map of the models parked since. :class:`StoreSpill` is the
:class:`~stream_learner.scopes.Spill` that reads and writes them for one
shard and one epoch, so a worker holds at most ``model.max_resident`` models
in memory and a restore loads a key's model the first time the key is seen.

When the store cannot be reached, a parked model stays in memory (and goes
out with the next checkpoint); a model that must be loaded is retried with
backoff for ``checkpoint.restore_timeout_s``, then the error is raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.errors import CheckpointError, ConnectionFailed
from stream_learner.stores import CheckpointStore

__all__ = ["StoreSpill"]

log = logging.getLogger(__name__)


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
        #: parked models the store refused or could not take (sent with the next checkpoint)
        self.overflow: dict[str, bytes] = {}
        #: bytes sent to the store by parks since the last checkpoint
        self.bytes_parked = 0
        self._parked_total = 0
        self._parks = 0

    def park(self, key: str, payload: bytes) -> None:
        """Seal ``payload`` and keep it in the store's scratch map (memory if that fails)."""
        blob = self.codec.seal_entry(self.shard, key, payload)
        self.overflow.pop(key, None)
        try:
            self.store.park(self.shard, self.epoch, key, blob)
        except (ConnectionFailed, CheckpointError) as exc:
            if not self.overflow:
                log.warning("shard %s: parking models in memory: %s", self.shard, exc)
            self.overflow[key] = payload
            return
        self.bytes_parked += len(blob)
        self._parked_total += len(payload)
        self._parks += 1

    def load(self, key: str, parked: bool) -> bytes | None:
        """The verified pickle of ``key``: from memory, the scratch map or the entries."""
        payload = self.overflow.pop(key, None)
        if payload is not None:
            return payload
        if parked:
            blob = self._retry(lambda: self.store.parked(self.shard, self.epoch, key))
        else:
            blob = self._retry(lambda: self.store.entry(self.shard, key))
        return None if blob is None else self.codec.open_entry(self.shard, key, blob)

    def _retry(self, read: Callable[[], bytes | None]) -> bytes | None:
        deadline = self._clock() + self.timeout_s
        delay = 0.2
        while True:
            try:
                return read()
            except ConnectionFailed as exc:
                if self._clock() + delay > deadline:
                    raise
                log.warning("shard %s: loading a model: %s; retrying in %.1fs",
                            self.shard, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)

    def parked_bytes(self, n_parked: int) -> int:
        """Estimate: parked models times the mean size of those this process parked."""
        mean = self._parked_total / self._parks if self._parks else 0.0
        return int(mean * n_parked) + sum(len(p) for p in self.overflow.values())
