"""Operator commands on checkpoints: ``stream-learner checkpoints list | show | rollback``.

``rollback SHARD ID`` re-signs checkpoint ``ID`` as the newest checkpoint of
the shard, marked to resume at the group's committed offsets: what was
learned after checkpoint ``ID`` is discarded on purpose, and nothing is
re-learned. The rollback claims a new epoch for the shard, so a worker still
running as its owner is fenced (its next checkpoint is refused and it drops
the shard; a run on the local transport stops); stop the workers of the group
first all the same.

A keyed shard (``model.scope = "key"``) is rolled back with its per-key
entries: the undo records of the checkpoints after ``ID`` are applied, newest
first, in the same atomic write, and those checkpoints are dropped (they no
longer match the entries).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from stream_learner.checkpoint import EnvelopeCodec
from stream_learner.errors import CheckpointError
from stream_learner.stores import CheckpointStore

__all__ = ["list_checkpoints", "rollback", "show_checkpoint"]


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def list_checkpoints(store: CheckpointStore, codec: EnvelopeCodec, shard: str | None) -> str:
    """One line per kept checkpoint: shard, id, created, offsets, epoch, size (keyed: keys),
    and ``NOT RESTORABLE: why`` when a worker of this build and model configuration would
    refuse it."""
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
                f"epoch={h['epoch']}\t{len(blob)}B"
                + (f"\tkeys={h['keyed']['keys']} changed={_changed(h)}" if "keyed" in h else "")
                + ("\trollback" if h.get("resume_at_committed") else "")
                + (f"\tNOT RESTORABLE: {why}" if (why := codec.refusal(h)) else "")
            )
    return "\n".join(lines) if lines else "no checkpoints"


def show_checkpoint(
    store: CheckpointStore, codec: EnvelopeCodec, shard: str, checkpoint_id: int | None
) -> str:
    """The verified header of one checkpoint (the newest by default), as JSON, with
    ``restorable`` (would a worker of this build and model configuration restore it) and,
    when not, ``refused`` (why)."""
    blob = _blob(store, shard, checkpoint_id)
    header: dict[str, Any] = codec.read_header(blob)
    why = codec.refusal(header)
    header["restorable"] = why is None
    if why is not None:
        header["refused"] = why
    return orjson.dumps(header, option=orjson.OPT_INDENT_2).decode()


def rollback(
    store: CheckpointStore,
    codec: EnvelopeCodec,
    shard: str,
    checkpoint_id: int,
    now: Callable[[], float],
) -> int:
    """Make checkpoint ``checkpoint_id`` the newest, resuming at the committed offsets.

    The offsets of the newest checkpoint before the rollback go with it: where
    a partition has no committed offset (the local transport has none), the
    next owner resumes there, after the records already processed, instead of
    at checkpoint ``checkpoint_id``'s own offsets, which would process (and
    output) them again.
    """
    snap = codec.open(_blob(store, shard, checkpoint_id))
    newest = _newest_offsets(store, codec, shard)
    epoch = store.claim(shard)
    extra: dict[str, Any] = {"resume_at_committed": True, "rollback_of": checkpoint_id}
    if newest:
        extra["newest_offsets"] = newest
    keyed = "keyed" in snap.header
    if keyed:
        extra["keyed"] = {**snap.header["keyed"], "entries": 0, "promoted": 0}
    blob = codec.seal(shard, snap.offsets, epoch, snap.state, created_at=now(), extra=extra)
    return store.save(shard, epoch, blob, revert_to=checkpoint_id if keyed else None)


def _newest_offsets(
    store: CheckpointStore, codec: EnvelopeCodec, shard: str
) -> list[list[Any]]:
    """``[topic, partition, offset]`` of the newest checkpoint (none if it does not verify)."""
    latest = store.latest(shard)
    if latest is None:
        return []
    try:
        offsets: list[list[Any]] = codec.read_header(latest[1])["offsets"]
    except CheckpointError:  # the newest may be why the operator rolls back
        return []
    return offsets


def _changed(header: Mapping[str, Any]) -> int:
    k = header["keyed"]
    return int(k["entries"]) + int(k["promoted"])


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
