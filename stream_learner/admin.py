"""Operator commands on checkpoints: ``stream-learner checkpoints list | show | rollback``.

``rollback SHARD ID`` re-signs checkpoint ``ID`` as the newest checkpoint of
the shard, marked to resume at the group's committed offsets: what was
learned after checkpoint ``ID`` is discarded on purpose, and nothing is
re-learned. Stop the workers of the group first, so that a running owner does
not overwrite the rollback with its next checkpoint.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import orjson

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.errors import CheckpointError
from stream_learner.stores import CheckpointStore

__all__ = ["list_checkpoints", "rollback", "show_checkpoint"]


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def list_checkpoints(store: CheckpointStore, codec: EnvelopeCodec, shard: str | None) -> str:
    """One line per kept checkpoint: shard, id, created, offsets, generation, size."""
    lines = []
    for name in [shard] if shard else store.shards():
        for checkpoint_id in store.ids(name):
            blob = store.get(name, checkpoint_id)
            if blob is None:
                continue
            try:
                h = codec.read_header(blob)
            except CheckpointError as exc:
                lines.append(f"{name}\t{checkpoint_id}\tREFUSED: {exc}")
                continue
            offsets = ",".join(f"{t}[{p}]@{o}" for t, p, o in h["offsets"])
            lines.append(
                f"{name}\t{checkpoint_id}\t{_when(h['created_at'])}\t{offsets}\t"
                f"gen={h['generation']}\t{len(blob)}B"
                + ("\trollback" if h.get("resume_at_committed") else "")
            )
    return "\n".join(lines) if lines else "no checkpoints"


def show_checkpoint(
    store: CheckpointStore, codec: EnvelopeCodec, shard: str, checkpoint_id: int | None
) -> str:
    """The verified header of one checkpoint (the newest by default), as JSON."""
    blob = _blob(store, shard, checkpoint_id)
    header: dict[str, Any] = codec.read_header(blob)
    return orjson.dumps(header, option=orjson.OPT_INDENT_2).decode()


def rollback(
    store: CheckpointStore,
    codec: EnvelopeCodec,
    shard: str,
    checkpoint_id: int,
    now: Callable[[], float],
) -> int:
    """Make checkpoint ``checkpoint_id`` the newest, resuming at the committed offsets."""
    snap = codec.open(_blob(store, shard, checkpoint_id))
    blob = codec.seal(
        shard,
        snap.offsets,
        max(store.generation(shard), snap.generation),
        snap.state,
        created_at=now(),
        extra={"resume_at_committed": True, "rollback_of": checkpoint_id},
    )
    return store.save(shard, max(store.generation(shard), snap.generation), blob)


def _blob(store: CheckpointStore, shard: str, checkpoint_id: int | None) -> bytes:
    if checkpoint_id is None:
        latest = store.latest(shard)
        if latest is None:
            raise CheckpointError(f"shard {shard} has no checkpoints")
        return latest[1]
    blob = store.get(shard, checkpoint_id)
    if blob is None:
        raise CheckpointError(
            f"shard {shard} has no checkpoint {checkpoint_id} (kept: {store.ids(shard)})"
        )
    return blob
