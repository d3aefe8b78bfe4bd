"""Shards and their recovery: when to checkpoint, and where to resume.

A :class:`Shard` is the state of one input partition: its learner and the
next offset to process of each input partition that feeds it.

The state protocol (``docs/state.md``) in terms of two frontiers:

- K, the output frontier: the consumer group's committed offsets. Outputs of
  every record before K are durable in Kafka.
- C, the state frontier: the offsets stored in the newest checkpoint. A
  checkpoint is written only once the outputs of every record before C are
  durable (acknowledged by the broker); their offsets may still be committed
  later, so after a crash C may be past K, never ahead of durable outputs.

At-least-once with partition-scoped shards on Kafka, :class:`AckedCheckpoints`
keeps the loop running at a checkpoint: it seals the due shards at once and
writes each one on a later loop turn, when the broker has acknowledged the
outputs sent before the seal. Exactly-once and keyed shards drain the commit
cycle and write at once (the service's blocking path).

:meth:`Checkpointer.plan` decides how to resume an assigned shard: from a
checkpoint (seek to C, re-process C..K without emitting, resume at K), from
the start of the log when a store is configured but holds nothing (the same
silent replay), or from a fresh model at K when checkpoints are disabled.
Planning claims a new epoch for the shard in the store (the fencing token
every later write of this owner carries).

Keyed shards (``model.scope = "key"``) are saved incrementally (the head plus
the models changed since the previous checkpoint, see
:mod:`stream_learner.keyed_state`) and restored lazily: the plan loads the
head, and each key's model is loaded the first time the key is seen.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from stream_learner.checkpoint import EnvelopeCodec, Snapshot
from stream_learner.commits import AckingSink, Pipelined
from stream_learner.errors import (
    CheckpointError,
    CheckpointFenced,
    CheckpointRefused,
    ConnectionFailed,
)
from stream_learner.keyed_state import StoreSpill, read_store
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.retrying import Backoff
from stream_learner.scopes import KeyedModels
from stream_learner.settings import CheckpointSettings
from stream_learner.sources import TopicPartition
from stream_learner.stores import CheckpointStore
from stream_learner.write_behind import KeyedWrite, WriteBehind

_T = TypeVar("_T")

__all__ = [
    "AckedCheckpoints",
    "Checkpointer",
    "NullCheckpointer",
    "ResumePlan",
    "Sealed",
    "Shard",
    "shard_id",
]

log = logging.getLogger(__name__)

#: wait before a failed checkpoint is tried again (then doubling, up to
#: ``checkpoint.max_backoff_s``); the shard keeps serving meanwhile
SAVE_FIRST_WAIT_S = 1.0


def shard_id(tp: TopicPartition) -> str:
    """The name of the shard of an events partition.

    Examples
    --------
    >>> shard_id(("events", 3))
    'events:3'
    """
    return f"{tp[0]}:{tp[1]}"


@dataclass
class Shard:
    """One input partition's state and position.

    ``position`` is the next offset to process per input partition;
    ``replay_until`` the committed offsets K below which records are
    re-processed silently after a restore.
    """

    id: str
    learner: Learner
    position: dict[TopicPartition, int] = field(default_factory=dict)
    replay_until: dict[TopicPartition, int] = field(default_factory=dict)
    records_since_save: int = 0
    saved_at: float = 0.0
    dirty: bool = False
    #: the fencing token this owner claimed from the store (-1: no store)
    epoch: int = -1
    #: a checkpoint is sealed and waits to be written (:class:`AckedCheckpoints`)
    sealed: bool = False


@dataclass(frozen=True)
class Sealed:
    """A shard's state serialised at one moment, not yet written to the store.

    ``at`` is the loop clock at the seal (the shard's ``saved_at`` once
    written), ``records`` the records it covers since the previous
    checkpoint, ``seconds`` the time sealing took.
    """

    shard: Shard
    blob: bytes
    at: float
    records: int
    seconds: float


@dataclass(frozen=True)
class ResumePlan:
    """How to resume one shard: its learner, where to seek, what to replay silently."""

    learner: Learner
    seek: dict[TopicPartition, int]
    replay_until: dict[TopicPartition, int]
    source: str
    epoch: int = -1
    #: checkpoint at once (an operator's rollback: make it a normal checkpoint at K, so that
    #: a later restore replays from there instead of applying the rollback again)
    save_now: bool = False


def _replay_frontier(
    seek: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]
) -> dict[TopicPartition, int]:
    """Committed offsets K of the partitions that resume below K (records to replay)."""
    return {
        tp: k for tp, k in committed.items() if k is not None and tp in seek and seek[tp] < k
    }


def _past(
    stored: Mapping[TopicPartition, int], committed: Mapping[TopicPartition, int | None]
) -> bool:
    """True when a checkpoint's offsets are past K on some partition.

    Examples
    --------
    >>> _past({("e", 0): 120}, {("e", 0): 100})
    True
    >>> _past({("e", 0): 100}, {("e", 0): 100, ("l", 0): None})
    False
    """
    return any(k is not None and stored.get(tp, 0) > k for tp, k in committed.items())


class NullCheckpointer:
    """Checkpoints disabled: state lives in memory only (a restart starts afresh)."""

    enabled = False

    def plan(
        self,
        sid: str,
        committed: Mapping[TopicPartition, int | None],
        beginning: Mapping[TopicPartition, int],
        new_learner: Callable[[], Learner],
    ) -> ResumePlan:
        """A fresh model that resumes at the committed offsets."""
        if any(offset for offset in committed.values()):
            log.warning(
                "shard %s resumes at committed offsets %s with a fresh model: checkpoints "
                "are disabled (checkpoint.store = none), so what was learned before is lost",
                sid, dict(committed),
            )
        return ResumePlan(new_learner(), {}, {}, "fresh")

    def reclaim(self, shard: Shard) -> bool:
        """Keep the in-memory state of a shard that comes back: always possible."""
        return True

    def save(self, shard: Shard, now: float) -> None:
        """Nothing to save."""

    def due(self, shard: Shard, now: float) -> bool:
        """Never due."""
        return False

    def settle(
        self, wait: bool, sids: Collection[str] | None = None
    ) -> list[tuple[Shard, CheckpointFenced]]:
        """No writes."""
        return []

    def close(self) -> None:
        """Nothing to release."""


class Checkpointer:
    """Saves shard state on schedule and plans restores from a store.

    Parameters
    ----------
    store
        Where envelopes are kept.
    codec
        Signs and verifies envelopes.
    settings
        Schedule and failure policies.
    metrics
        Checkpoint duration, size, age and failures are recorded here.
    wall_clock
        Seconds since the epoch, for ``created_at``.
    background
        Write keyed checkpoints in a background thread (see
        :mod:`stream_learner.write_behind`); by default when
        ``checkpoint.write_behind`` is on and the store allows it.
    """

    enabled = True

    def __init__(
        self,
        store: CheckpointStore,
        codec: EnvelopeCodec,
        settings: CheckpointSettings,
        metrics: Metrics,
        wall_clock: Callable[[], float],
        clock: Callable[[], float],
        exactly_once: bool = False,
        background: bool | None = None,
    ) -> None:
        self.store = store
        if background is None:
            background = settings.write_behind and store.background_writes
        self.writes = WriteBehind(store, background, clock)
        self.codec = codec
        self.settings = settings
        #: outputs and offsets commit in one transaction: a checkpoint past K is not used
        self.exactly_once = exactly_once
        self.metrics = metrics
        self._wall_clock = wall_clock
        self._clock = clock
        self._retry_at: dict[str, float] = {}
        #: bytes the last successful checkpoint sent to the store (keyed: with the parks since)
        self.last_written = 0
        #: keyed: models changed (written or promoted) by the last checkpoint; entries
        #: sent for it (with the parks since the one before) and their bytes
        self.last_changed = self.last_entries = self.last_entry_bytes = 0
        self._backoff: dict[str, float] = {}

    # -- restore ----------------------------------------------------------------------

    def plan(
        self,
        sid: str,
        committed: Mapping[TopicPartition, int | None],
        beginning: Mapping[TopicPartition, int],
        new_learner: Callable[[], Learner],
    ) -> ResumePlan:
        """Claim a new epoch for the shard and decide how to resume it."""
        self._forget(sid)
        started = self._clock()
        epoch = self._with_retries(lambda: self.store.claim(sid), f"claim {sid}")
        latest = self._with_retries(lambda: self.store.latest(sid), f"load {sid}")
        if latest is None:
            # No checkpoint: everything before K must be learned again, from the log start.
            seek = self._checked_offsets(
                sid, dict.fromkeys(beginning, 0), committed, beginning, only_committed=True
            )
            plan = ResumePlan(
                self._attached(new_learner(), sid, epoch), seek,
                _replay_frontier(seek, committed), "log start", epoch,
            )
        else:
            checkpoint_id, blob = latest
            snap = self.codec.open(blob)
            if snap.shard != sid:
                raise CheckpointRefused(
                    f"checkpoint {checkpoint_id} stored for shard {sid} belongs to "
                    f"{snap.shard}: two shards share one place in the store (with the local "
                    "store, input paths that differ only in characters a folder name cannot "
                    "hold, such as / and _); give one of them another checkpoint.directory "
                    "or checkpoint.key_prefix"
                )
            rollback = bool(snap.header.get("resume_at_committed"))
            if self.exactly_once and not rollback and _past(snap.offsets, committed):
                checkpoint_id, snap = self._at_or_before(sid, committed, checkpoint_id, snap)
            self._check_entries(sid, checkpoint_id, snap.header)
            stored = snap.offsets
            if rollback:  # at K; where nothing is committed, where the newest checkpoint was
                newest = {(t, p): o for t, p, o in snap.header.get("newest_offsets", ())}
                stored = {tp: k if k is not None else newest.get(tp, stored.get(tp, 0))
                          for tp, k in committed.items()}
            seek = self._checked_offsets(sid, stored, committed, beginning)
            plan = ResumePlan(
                self._attached(snap.state, sid, epoch),
                seek,
                _replay_frontier(seek, committed),
                f"checkpoint {checkpoint_id}" + (" (rollback)" if rollback else ""),
                epoch,
                save_now=rollback,
            )
            self.metrics.checkpoint_restore_seconds.observe(self._clock() - started)
        log.info(
            "shard %s: restore from %s, seek %s, silent replay up to %s",
            sid, plan.source, plan.seek, plan.replay_until,
        )
        return plan

    def _at_or_before(
        self, sid: str, committed: Mapping[TopicPartition, int | None], newest_id: int,
        newest: Snapshot,
    ) -> tuple[int, Snapshot]:
        """The newest checkpoint at or before K, when the newest one is past K (exactly-once).

        Outputs and offsets commit in one transaction, and a checkpoint is
        written only after its transaction committed, so C past K means that
        the broker lost a committed transaction (a single broker restarted while
        it commits was seen to keep the commit but lose its markers; the next
        abort then dropped its outputs), or that an operator moved the
        group's offsets back. Either way the outputs from K on are not in
        Kafka: an older checkpoint replayed silently up to K resumes exactly.
        Without one (the store kept none, or the shard has one model per key,
        whose entries are kept for the newest checkpoint only), the newest is
        used and the outputs between K and C stay missing (logged, counted).
        """
        self.metrics.recovery_alerts.labels(kind="checkpoint_past_committed").inc()
        older = None if "keyed" in newest.header else self._older_at_or_before(
            sid, committed, newest_id)
        if older is None:
            log.error(
                "ALERT shard %s: checkpoint %d (offsets %s) is past the committed offsets %s in "
                "exactly-once mode, and no older checkpoint is at or before them: resuming at "
                "the checkpoint; the outputs between the two are missing from Kafka (the broker "
                "lost a committed transaction, or the group's offsets were moved back)",
                sid, newest_id, newest.offsets, dict(committed),
            )
            return newest_id, newest
        log.warning(
            "shard %s: checkpoint %d (offsets %s) is past the committed offsets %s in "
            "exactly-once mode (the broker lost a committed transaction, or the group's offsets "
            "were moved back); restoring checkpoint %d, replayed silently up to them",
            sid, newest_id, newest.offsets, dict(committed), older[0],
        )
        return older

    def _older_at_or_before(
        self, sid: str, committed: Mapping[TopicPartition, int | None], newest_id: int
    ) -> tuple[int, Snapshot] | None:
        ids = self._with_retries(lambda: self.store.ids(sid), f"list {sid}")
        for checkpoint_id in sorted((i for i in ids if i < newest_id), reverse=True):
            blob = self._with_retries(partial(self.store.get, sid, checkpoint_id), f"load {sid}")
            if blob is None:
                continue
            try:
                snap = self.codec.open(blob)
            except CheckpointError as exc:
                log.warning("shard %s: checkpoint %d skipped: %s", sid, checkpoint_id, exc)
                continue
            if not _past(snap.offsets, committed):
                return checkpoint_id, snap
        return None

    def _check_entries(self, sid: str, checkpoint_id: int, header: dict[str, Any]) -> None:
        """A keyed checkpoint's models are all in the store (else they would start afresh).

        Raises
        ------
        CheckpointRefused
            The store holds fewer per-key entries than the checkpoint has keys:
            they were lost (evicted from Redis, a partial backup, a deleted file).
        """
        keyed = header.get("keyed")
        if keyed is None:
            return
        held = self._with_retries(lambda: self.store.n_entries(sid), f"count {sid}")
        if held < int(keyed["keys"]):
            raise CheckpointRefused(
                f"checkpoint {checkpoint_id} of shard {sid} has {keyed['keys']} per-key models "
                f"but the store holds {held} entries: the others were lost (evicted, a partial "
                "backup, a deleted file), and their keys would start afresh unnoticed; restore "
                "the store, or delete the shard's checkpoints to start every key afresh")

    def _attached(self, learner: Learner, sid: str, epoch: int) -> Learner:
        """A keyed learner parks in and loads from the store, as owner ``epoch``."""
        if isinstance(learner.models, KeyedModels):
            s = self.settings
            learner.models.attach(
                StoreSpill(self.store, self.codec, sid, epoch, s.restore_timeout_s,
                           s.max_backoff_s, self._clock)
            )
        return learner

    def reclaim(self, shard: Shard) -> bool:
        """Take a new epoch for a shard that comes back with its in-memory state current.

        False when that state cannot be kept: models parked since its last
        checkpoint (or promoted by a write that failed) were in the previous
        epoch's scratch map (the caller restores).
        """
        self._forget(shard.id)
        models = shard.learner.models
        if isinstance(models, KeyedModels) and (
            models.has_parked_changes or not isinstance(models.spill, StoreSpill)
            or models.spill.unpromoted
        ):
            return False
        shard.epoch = self._with_retries(lambda: self.store.claim(shard.id), f"claim {shard.id}")
        if isinstance(models, KeyedModels) and isinstance(models.spill, StoreSpill):
            models.spill.epoch = shard.epoch
        return True

    def _checked_offsets(
        self,
        sid: str,
        stored: Mapping[TopicPartition, int],
        committed: Mapping[TopicPartition, int | None],
        beginning: Mapping[TopicPartition, int],
        only_committed: bool = False,
    ) -> dict[TopicPartition, int]:
        seek: dict[TopicPartition, int] = {}
        for tp, start in beginning.items():
            c = stored.get(tp, start)
            k = committed.get(tp)
            if only_committed and not k:
                continue  # nothing was consumed yet: the consumer's reset policy applies
            if k is not None and c > k and not self.exactly_once:  # else _at_or_before said
                log.info(
                    "shard %s: checkpoint offset %d of %s is past the committed offset %d: "
                    "the worker stopped between a checkpoint and the offset commit after it "
                    "(or the group's offsets were moved back); resuming at the checkpoint, whose "
                    "outputs are durable, so nothing is learned or emitted twice",
                    sid, c, tp, k,
                )
            if c < start:
                self._offset_out_of_range(sid, tp, c, start)
                c = start
            seek[tp] = c
        return seek

    def _offset_out_of_range(self, sid: str, tp: TopicPartition, c: int, start: int) -> None:
        self.metrics.recovery_alerts.labels(kind="offset_out_of_range").inc()
        message = (
            f"shard {sid}: checkpoint offset {c} of {tp[0]}[{tp[1]}] is older than the log start "
            f"{start}: records {c}..{start - 1} were deleted by retention before they were "
            "checkpointed"
        )
        if self.settings.on_offset_out_of_range == "fail":
            raise CheckpointError(
                message + " (checkpoint.on_offset_out_of_range = fail; set it to "
                "replay_from_earliest to continue without them)"
            )
        log.error("ALERT %s; continuing from the log start", message)

    def _with_retries(self, action: Callable[[], _T], what: str) -> _T:
        s = self.settings
        return read_store(action, what, s.restore_timeout_s, s.max_backoff_s,
                          clock=self._clock, sleep=time.sleep, logger=log)

    # -- save -------------------------------------------------------------------------

    def due(self, shard: Shard, now: float) -> bool:
        """True when the shard has new state, none sealed, and its schedule (or a retry) is up."""
        if not shard.dirty or shard.sealed or now < self._retry_at.get(shard.id, 0.0):
            return False
        s = self.settings
        return shard.records_since_save >= s.every_events or now - shard.saved_at >= (
            s.every_seconds
        )

    def save(self, shard: Shard, now: float) -> None:
        """Checkpoint ``shard`` now; on a store failure, keep serving and retry later.

        Raises
        ------
        CheckpointFenced
            A newer epoch owns the shard: the caller must drop it.
        """
        models = shard.learner.models
        spill = models.spill if isinstance(models, KeyedModels) else None
        if not (isinstance(models, KeyedModels) and isinstance(spill, StoreSpill)):
            sealed = self.seal(shard, now)
            if sealed is not None:
                self.write(sealed, now)
            return
        self._settle(shard.id, wait=True)  # the shard's previous write, if still in flight
        t0 = self._clock()
        try:
            write = self._seal_keyed(shard, models, spill, now)
        except CheckpointError as exc:
            self._failed(shard.id, now, exc)
            return
        write.seconds = self._clock() - t0
        shard.records_since_save = 0
        shard.dirty = False
        shard.saved_at = now
        self.writes.submit(write)
        if not self.writes.background:
            self._settle(shard.id, wait=True)

    def seal(self, shard: Shard, now: float) -> Sealed | None:
        """Serialise a shard of one model now; it counts as clean until :meth:`write` fails.

        None when sealing failed (logged, retried with backoff like a failed write).
        """
        t0 = self._clock()
        try:
            blob = self.codec.seal(shard.id, shard.position, shard.epoch, shard.learner,
                                   created_at=self._wall_clock())
        except CheckpointError as exc:
            self._failed(shard.id, now, exc)
            return None
        sealed = Sealed(shard, blob, now, shard.records_since_save, self._clock() - t0)
        shard.records_since_save = 0
        shard.dirty = False
        return sealed

    def write(self, sealed: Sealed, now: float) -> None:
        """Write a sealed checkpoint; on a store failure its shard is dirty again (retried).

        Raises
        ------
        CheckpointFenced
            A newer epoch owns the shard: the caller must drop it.
        """
        shard = sealed.shard
        t0 = self._clock()
        try:
            self.store.save(shard.id, shard.epoch, sealed.blob)
        except CheckpointFenced:
            self.metrics.checkpoints.labels(result="fenced").inc()
            raise
        except (ConnectionFailed, CheckpointError) as exc:
            shard.records_since_save += sealed.records
            shard.dirty = True
            self._failed(shard.id, now, exc)
            return
        self._saved(shard, sealed.at, len(sealed.blob), sealed.seconds + self._clock() - t0)

    def _saved(self, shard: Shard, at: float, written: int, seconds: float) -> None:
        """Metrics and schedule after a checkpoint of the state at ``at`` was written."""
        m = self.metrics
        m.checkpoint_seconds.observe(seconds)
        m.checkpoint_bytes.labels(partition=shard.id.rsplit(":", 1)[1]).set(written)
        m.checkpoint_written.inc(written)
        m.checkpoints.labels(result="ok").inc()
        shard.saved_at = at
        self.last_written = written
        self._retry_at.pop(shard.id, None)
        if self._backoff.pop(shard.id, None) is not None:
            log.info("checkpoint of %s saved again after failures", shard.id)

    def _seal_keyed(
        self, shard: Shard, models: KeyedModels, spill: StoreSpill, now: float
    ) -> KeyedWrite:
        """Head + changed entries + promoted parks, sealed for one atomic write.

        The entries of a write that failed go again, under those changed since.
        """
        payloads, promote = models.changes()
        payloads.update(spill.pending)
        seal = self.codec.seal_entry
        entries = dict(spill.unwritten)
        entries.update((key, seal(shard.id, key, payload)) for key, payload in payloads.items())
        promoted = sorted(spill.unpromoted.union(promote).difference(entries))
        with models.head_view():
            blob = self.codec.seal(
                shard.id, shard.position, shard.epoch, shard.learner,
                created_at=self._wall_clock(),
                extra={"keyed": {"keys": models.n_keys, "entries": len(entries),
                                 "promoted": len(promoted)}},
            )
        models.committed()
        spill.pending.clear()
        spill.unwritten, spill.unpromoted = entries, set(promoted)
        write = KeyedWrite(shard, spill, shard.epoch, blob, entries, promoted, at=now,
                           records=shard.records_since_save, seconds=0.0,
                           parks=spill.n_parked_since, parked_bytes=spill.bytes_parked)
        spill.bytes_parked = spill.n_parked_since = 0
        return write

    def settle(
        self, wait: bool, sids: Collection[str] | None = None
    ) -> list[tuple[Shard, CheckpointFenced]]:
        """Settle the keyed writes that are done (all of them, if ``wait``).

        Each written one counts as a checkpoint; a failed one leaves its shard
        dirty and is retried with backoff. Returns the shards whose write a
        newer epoch refused: the caller drops them.
        """
        fenced = []
        for sid in self.writes.shards(sids):
            write = self.writes.take(sid, wait)
            if write is None:
                continue
            try:
                self._settled(write)
            except CheckpointFenced as exc:
                fenced.append((write.shard, exc))
        return fenced

    def _settle(self, sid: str, wait: bool) -> None:
        write = self.writes.take(sid, wait)
        if write is not None:
            self._settled(write)

    def _settled(self, write: KeyedWrite) -> None:
        """Account for a keyed write that is done.

        Raises
        ------
        CheckpointFenced
            A newer epoch owns the shard: the caller must drop it.
        """
        shard, spill, sid = write.shard, write.spill, write.shard.id
        exc = write.future.exception()
        if isinstance(exc, CheckpointFenced):
            self.metrics.checkpoints.labels(result="fenced").inc()
            raise exc
        if isinstance(exc, ConnectionFailed | CheckpointError):
            shard.records_since_save += write.records
            shard.dirty = True
            spill.n_parked_since += write.parks
            spill.bytes_parked += write.parked_bytes
            self._failed(sid, self._clock(), exc)  # its entries stay unwritten: sent again
            return
        if exc is not None:
            raise exc
        spill.unwritten, spill.unpromoted = {}, set()
        self.last_changed = len(write.entries) + len(write.promote)
        self.last_entries = len(write.entries) + write.parks
        self.last_entry_bytes = write.bytes - len(write.blob) + write.parked_bytes
        self._saved(shard, write.at, write.bytes + write.parked_bytes, write.seconds + write.wrote_s)

    def _forget(self, sid: str) -> None:
        """Settle the shard's write before its state is replaced (a restore, a new epoch)."""
        try:
            self._settle(sid, wait=True)
        except CheckpointFenced as exc:
            log.warning("shard %s: %s", sid, exc)

    def _failed(self, sid: str, now: float, exc: Exception) -> None:
        waits = Backoff(SAVE_FIRST_WAIT_S, self.settings.max_backoff_s)
        delay = self._backoff[sid] = waits.after(self._backoff.get(sid))
        self._retry_at[sid] = now + delay
        self.metrics.checkpoints.labels(result="error").inc()
        log.warning("checkpoint of %s failed (%s); serving on, retry in %.1fs", sid, exc, delay)

    def close(self) -> None:
        """Settle the writes in flight, then close the store."""
        for sid in self.writes.shards():
            self._forget(sid)
        self.writes.close()
        self.store.close()


class AckedCheckpoints:
    """At-least-once checkpoints that do not stop the loop: seal now, write once acknowledged.

    It is the service's committer: it wraps the pipelined cycle and adds the
    checkpoints to it. :meth:`take` seals a due shard at once (the state is
    consistent between two batches) and remembers the sink's mark, the
    outputs sent so far. :meth:`commit` and :meth:`poll`, called on every loop
    turn, write each sealed checkpoint, oldest first, once the broker has
    acknowledged the outputs up to its mark: the outputs of every record
    before its offsets C are then durable, even if their offsets are not yet
    committed (a restore resumes at C when C is past K). :meth:`drain`
    (revocation, end of the run) waits for every acknowledgement, commits,
    then writes every sealed checkpoint; :meth:`salvage` (after an error)
    drops them. A crash with checkpoints sealed loses only those: the
    restore resumes from the previous checkpoint and replays up to K.

    Parameters
    ----------
    cycle
        The pipelined produce -> acknowledge -> commit cycle.
    sink
        The sink of ``cycle``: its marks and acknowledgements.
    checkpointer
        Seals and writes.
    on_fenced
        Called with a shard whose write a newer epoch refused (drop it).
    clock
        Monotonic seconds, as the service's (for retry times).
    """

    def __init__(
        self,
        cycle: Pipelined,
        sink: AckingSink,
        checkpointer: Checkpointer,
        on_fenced: Callable[[Shard, CheckpointFenced], None],
        clock: Callable[[], float],
    ) -> None:
        self._cycle = cycle
        self._sink = sink
        self._checkpointer = checkpointer
        self._on_fenced = on_fenced
        self._clock = clock
        self._sealed: deque[tuple[int, Sealed]] = deque()

    def take(self, shard: Shard, now: float) -> None:
        """Seal ``shard`` now; it is written once the outputs sent so far are acknowledged."""
        sealed = self._checkpointer.seal(shard, now)
        if sealed is not None:
            shard.sealed = True
            self._sealed.append((self._sink.mark(), sealed))

    @property
    def waiting(self) -> int:
        """Checkpoints sealed and not yet written."""
        return len(self._sealed)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The pipelined commit, then write what became durable."""
        self._cycle.commit(offsets)
        self._write_acknowledged()

    def poll(self) -> None:
        """The pipelined poll, then write what became durable."""
        self._cycle.poll()
        self._write_acknowledged()

    def drain(self) -> None:
        """Wait for every acknowledgement, commit synchronously, write every sealed checkpoint."""
        self._cycle.drain()
        while self._sealed:
            self._write(self._sealed.popleft()[1])

    def salvage(self, offsets: Mapping[TopicPartition, int]) -> None:
        """After an error: drop the sealed checkpoints, commit what is durable."""
        for _mark, sealed in self._sealed:
            sealed.shard.sealed = False
        self._sealed.clear()
        self._cycle.salvage(offsets)

    def _write_acknowledged(self) -> None:
        """Write the sealed checkpoints whose outputs the broker has acknowledged."""
        pending = self._sealed
        if not pending:
            return
        acked = self._sink.acknowledged()
        while pending and pending[0][0] <= acked:
            self._write(pending.popleft()[1])

    def _write(self, sealed: Sealed) -> None:
        """Write one sealed checkpoint; a fenced one goes to ``on_fenced``."""
        sealed.shard.sealed = False
        t0 = self._clock()
        try:
            self._checkpointer.write(sealed, t0)
        except CheckpointFenced as exc:
            self._on_fenced(sealed.shard, exc)
            return
        stage = self._checkpointer.metrics.stage_latency.labels(stage="checkpoint")
        stage.observe(sealed.seconds + self._clock() - t0)
