"""Shards and their recovery: when to checkpoint, and where to resume.

A :class:`Shard` is the state of one input partition: its learner and the
next offset to process of each input partition that feeds it.

The state protocol (``docs/state.md``) in terms of two frontiers:

- K, the output frontier: the consumer group's committed offsets. Outputs of
  every record before K are durable in Kafka.
- C, the state frontier: the offsets stored in the newest checkpoint. A
  checkpoint is taken only right after a commit, so C <= K always.

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.errors import (
    CheckpointError,
    CheckpointFenced,
    CheckpointRefused,
    ConnectionFailed,
)
from stream_learner.keyed_state import StoreSpill
from stream_learner.learner import Learner
from stream_learner.metrics import Metrics
from stream_learner.scopes import KeyedModels
from stream_learner.settings import CheckpointSettings
from stream_learner.sources import TopicPartition
from stream_learner.stores import CheckpointStore

_T = TypeVar("_T")

__all__ = ["Checkpointer", "NullCheckpointer", "ResumePlan", "Shard", "shard_id"]

log = logging.getLogger(__name__)


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

    def replaying(self, tp: TopicPartition, offset: int) -> bool:
        """True while ``offset`` is below the committed frontier of a restore."""
        return offset < self.replay_until.get(tp, -1)


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
    ) -> None:
        self.store = store
        self.codec = codec
        self.settings = settings
        self.metrics = metrics
        self._wall_clock = wall_clock
        self._clock = clock
        self._retry_at: dict[str, float] = {}
        #: bytes the last successful checkpoint sent to the store (keyed: with the parks since)
        self.last_written = 0
        #: keyed: models changed (written or promoted) by the last checkpoint; entry pickles
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
                    f"checkpoint {checkpoint_id} stored for shard {sid} belongs to {snap.shard}"
                )
            stored = snap.offsets
            rollback = bool(snap.header.get("resume_at_committed"))
            if rollback:
                stored = {tp: k if k is not None else stored.get(tp, 0) for tp, k in committed.items()}
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
        checkpoint were in the previous epoch's scratch map (the caller restores).
        """
        models = shard.learner.models
        if isinstance(models, KeyedModels) and (
            models.has_parked_changes or not isinstance(models.spill, StoreSpill)
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
            if k is not None and c > k:
                log.warning(
                    "shard %s: checkpoint offset %d of %s is past the committed offset %d "
                    "(offsets were reset?): resuming at the checkpoint so nothing is learned twice",
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
        deadline = self._clock() + self.settings.restore_timeout_s
        delay = 0.2
        while True:
            try:
                return action()
            except ConnectionFailed as exc:
                if self._clock() + delay > deadline:
                    raise ConnectionFailed(
                        f"{what}: store unreachable for {self.settings.restore_timeout_s:.0f}s: "
                        f"{exc}"
                    ) from exc
                log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, self.settings.max_backoff_s)

    # -- save -------------------------------------------------------------------------

    def due(self, shard: Shard, now: float) -> bool:
        """True when the shard has new state and its schedule (or a retry) is up."""
        if not shard.dirty or now < self._retry_at.get(shard.id, 0.0):
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
        t0 = self._clock()
        models = shard.learner.models
        spill = models.spill if isinstance(models, KeyedModels) else None
        try:
            if isinstance(models, KeyedModels) and isinstance(spill, StoreSpill):
                written = self._save_keyed(shard, models, spill)
            else:
                blob = self.codec.seal(shard.id, shard.position, shard.epoch, shard.learner,
                                       created_at=self._wall_clock())
                self.store.save(shard.id, shard.epoch, blob)
                written = len(blob)
        except CheckpointFenced:
            self.metrics.checkpoints.labels(result="fenced").inc()
            raise
        except (ConnectionFailed, CheckpointError) as exc:
            self._failed(shard.id, now, exc)
            return
        m = self.metrics
        m.checkpoint_seconds.observe(self._clock() - t0)
        m.checkpoint_bytes.labels(partition=shard.id.rsplit(":", 1)[1]).set(written)
        m.checkpoint_written.inc(written)
        m.checkpoints.labels(result="ok").inc()
        shard.saved_at = now
        shard.records_since_save = 0
        shard.dirty = False
        self.last_written = written
        self._retry_at.pop(shard.id, None)
        if self._backoff.pop(shard.id, None) is not None:
            log.info("checkpoint of %s saved again after failures", shard.id)

    def _save_keyed(self, shard: Shard, models: KeyedModels, spill: StoreSpill) -> int:
        """Head + changed entries + promoted parks in one atomic write; bytes sent."""
        payloads, promote = models.changes()
        payloads.update(spill.pending)
        promote = [key for key in promote if key not in spill.pending]
        seal = self.codec.seal_entry
        entries = {key: seal(shard.id, key, payload) for key, payload in payloads.items()}
        with models.head_view():
            blob = self.codec.seal(
                shard.id, shard.position, shard.epoch, shard.learner,
                created_at=self._wall_clock(),
                extra={"keyed": {"keys": models.n_keys, "entries": len(entries),
                                 "promoted": len(promote)}},
            )
        self.store.save(shard.id, shard.epoch, blob, entries, promote)
        models.committed()
        spill.pending.clear()
        self.last_changed = len(entries) + len(promote)
        self.last_entries = len(entries) + spill.n_parked_since
        self.last_entry_bytes = sum(map(len, entries.values())) + spill.bytes_parked
        spill.bytes_parked = spill.n_parked_since = 0
        return len(blob) + self.last_entry_bytes

    def _failed(self, sid: str, now: float, exc: Exception) -> None:
        delay = min(self._backoff.get(sid, 0.5) * 2, self.settings.max_backoff_s)
        self._backoff[sid] = delay
        self._retry_at[sid] = now + delay
        self.metrics.checkpoints.labels(result="error").inc()
        log.warning("checkpoint of %s failed (%s); serving on, retry in %.1fs", sid, exc, delay)

    def close(self) -> None:
        """Close the store."""
        self.store.close()
