"""Keyed checkpoints written behind the loop: sealed at once, sent by a background thread.

A keyed checkpoint (``model.scope = "key"``) sends the entries of every model
changed since the previous one. At 100,000 sensors and a checkpoint a second
that is thousands of entries, and on Redis the worker used to wait for the
server to run the save script and write its append-only file: about 0.3 s of
every second (``docs/benchmarks.md``). :class:`WriteBehind` lets the loop go
on: the checkpoint is sealed between two batches, as before (encoded and
signed, so it is a consistent state), and one background thread sends it
while the loop serves the next events.

What keeps it crash-exact (``docs/state.md``):

- The offsets of a keyed shard are committed before it is sealed, as before:
  a crash while a write is in flight restores the previous checkpoint and
  replays up to the committed offsets, as a crash just before a blocking
  write would.
- One write per shard is in flight: the next checkpoint of that shard waits
  for it, so the store sees the shard's checkpoints in order.
- Until a write is settled, a load of one of its models reads the sealed
  entry kept in memory (:attr:`StoreSpill.unwritten
  <stream_learner.keyed_state.StoreSpill.unwritten>`), never the older one
  in the store, and parks wait (the write empties the scratch map they go
  to).
- A failed write's entries stay there and go again with the next checkpoint
  (with the models changed since): nothing changed is ever skipped.
- Revocation, the end of a run and a restore of the shard wait for its write.

Only a store whose writes may run in another thread while the loop reads
from it says so (``background_writes``; :class:`~stream_learner.stores.RedisStore`
does). Other stores write at once, through the same steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stream_learner.stores import CheckpointStore

if TYPE_CHECKING:
    from stream_learner.keyed_state import StoreSpill
    from stream_learner.recovery import Shard

__all__ = ["KeyedWrite", "WriteBehind"]


@dataclass(eq=False)
class KeyedWrite:
    """One keyed checkpoint, sealed, on its way to the store.

    ``at`` is the loop clock at the seal, ``records`` the records it covers
    since the previous checkpoint, ``seconds`` the time sealing took;
    ``parks`` and ``parked_bytes`` the models parked (and their bytes) since
    the previous checkpoint.
    """

    shard: Shard
    spill: StoreSpill
    epoch: int
    blob: bytes
    entries: dict[str, bytes]
    promote: list[str]
    at: float
    records: int
    seconds: float
    parks: int = 0
    parked_bytes: int = 0
    #: seconds the store took, once written
    wrote_s: float = 0.0
    future: Future[int] = field(default_factory=Future)

    @property
    def bytes(self) -> int:
        """Bytes sent: the head and the entries."""
        return len(self.blob) + sum(map(len, self.entries.values()))


class WriteBehind:
    """Sends keyed checkpoints to the store, one in flight per shard.

    Parameters
    ----------
    store
        Where they go.
    background
        Send them in one background thread (the loop goes on); else at once,
        in the caller.
    clock
        Monotonic seconds (how long the store took).

    Examples
    --------
    At once, the write is done when :meth:`submit` returns; :meth:`take` hands
    it back, its future holding the checkpoint id (or the store's error):

    >>> from stream_learner.keyed_state import StoreSpill
    >>> from stream_learner.recovery import Shard
    >>> from stream_learner.stores import MemoryStore
    >>> store = MemoryStore()
    >>> writes = WriteBehind(store, background=False)
    >>> spill = StoreSpill(store, None, "events:0", store.claim("events:0"))
    >>> write = KeyedWrite(Shard("events:0", None), spill, spill.epoch, b"head",
    ...                    {"s1": b"entry"}, [], at=0.0, records=1, seconds=0.0)
    >>> writes.submit(write)
    >>> writes.take("events:0", wait=False).future.result()
    1
    >>> store.entry("events:0", "s1")
    b'entry'
    """

    def __init__(
        self,
        store: CheckpointStore,
        background: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.background = background
        self._clock = clock
        self._executor = (
            ThreadPoolExecutor(1, thread_name_prefix="stream-learner-checkpoint")
            if background else None
        )
        self._writes: dict[str, KeyedWrite] = {}

    def submit(self, write: KeyedWrite) -> None:
        """Send ``write``; the shard's previous write must have been taken."""
        sid = write.shard.id
        if sid in self._writes:
            raise RuntimeError(f"shard {sid}: a checkpoint write is still in flight")
        self._writes[sid] = write
        write.spill.write = write.future
        if self._executor is None:
            self._send(write)
        else:
            self._executor.submit(self._send, write)

    def _send(self, write: KeyedWrite) -> None:
        t0 = self._clock()
        try:
            checkpoint_id = self.store.save(
                write.shard.id, write.epoch, write.blob, write.entries, write.promote
            )
        except BaseException as exc:  # handed to the loop, which decides (retry, drop, stop)
            write.wrote_s = self._clock() - t0
            write.future.set_exception(exc)
        else:
            write.wrote_s = self._clock() - t0
            write.future.set_result(checkpoint_id)

    def take(self, sid: str, wait: bool) -> KeyedWrite | None:
        """The shard's write once it is done (waiting for it if ``wait``), else None."""
        write = self._writes.get(sid)
        if write is None or not (wait or write.future.done()):
            return None
        write.future.exception()  # waits
        del self._writes[sid]
        write.spill.write = None
        return write

    def shards(self, sids: Collection[str] | None = None) -> Iterator[str]:
        """The shards with a write not yet taken (of ``sids`` only, when given)."""
        return iter([sid for sid in self._writes if sids is None or sid in sids])

    def close(self) -> None:
        """Wait for the writes in flight and stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
