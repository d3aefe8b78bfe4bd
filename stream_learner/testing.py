"""In-memory twins of the edges, for unit tests (ours and users').

:class:`MemorySource` serves records from lists, one partition each;
:class:`MemorySink` keeps what was sent, per role, and what was flushed.

Examples
--------
>>> from stream_learner.models import ModelSpec
>>> from stream_learner.service import Service
>>> from stream_learner.settings import Settings
>>> src = MemorySource({("events", 0): [
...     b'{"id": 1, "features": {"x": 1.0}, "label": 2.0}', b'nope']})
>>> sink = MemorySink()
>>> settings = Settings()
>>> summary = Service(settings, ModelSpec.from_settings(settings.model), src, sink).run()
>>> summary.predictions, summary.dead_letters, src.committed_offsets
(1, 1, {('events', 0): 2})
>>> sink.values("dead_letters")
[b'nope']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from stream_learner.events import Origin
from stream_learner.sinks import Header
from stream_learner.sources import PartitionListener, Record, TopicPartition

__all__ = ["MemorySink", "MemorySource"]


class MemorySource:
    """Records from in-memory lists; each ``(topic, partition)`` is assigned at subscribe.

    Parameters
    ----------
    partitions
        Raw record values (or ready :class:`Record` objects) per partition.
    """

    def __init__(self, partitions: Mapping[TopicPartition, Iterable[bytes | Record]]) -> None:
        self._records: dict[TopicPartition, list[Record]] = {}
        for (topic, partition), values in partitions.items():
            self._records[(topic, partition)] = [
                v if isinstance(v, Record) else Record(v, None, 0, Origin(topic, partition, i))
                for i, v in enumerate(values)
            ]
        self._position = {tp: 0 for tp in self._records}
        self.committed_offsets: dict[TopicPartition, int] = {}

    def subscribe(self, listener: PartitionListener) -> None:
        """Assign every partition at once."""
        listener.on_assigned(sorted(self._records))

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Up to ``max_records``: each partition's next records in order, the partitions one
        after the other (a batch drains the first before it takes from the next)."""
        out: list[Record] = []
        for tp, records in self._records.items():
            start = self._position[tp]
            take = records[start : start + max(0, max_records - len(out))]
            self._position[tp] = start + len(take)
            out.extend(take)
        return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Remember the committed offsets."""
        self.committed_offsets.update(offsets)

    @property
    def exhausted(self) -> bool:
        """True when every partition was read to its end."""
        return all(self._position[tp] >= len(r) for tp, r in self._records.items())

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """What :meth:`commit` recorded."""
        return {tp: self.committed_offsets.get(tp) for tp in partitions}

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Lists start at offset 0."""
        return dict.fromkeys(partitions, 0)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""
        self._position[partition] = offset

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Records in each list after ``position``."""
        return {tp: max(0, len(self._records[tp]) - pos) for tp, pos in positions.items()}

    def close(self) -> None:
        """Nothing to release."""


class MemorySink:
    """Keeps every record sent, by role; :attr:`flushed` counts durable ones."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, tuple[Header, ...]]] = []
        self.flushed = 0
        self.closed = False

    def send(
        self, role: str, key: bytes | None, value: bytes, headers: Sequence[Header] = ()
    ) -> None:
        """Keep the record."""
        self.sent.append((role, key, value, tuple(headers)))

    def flush(self) -> None:
        """Everything sent so far counts as durable."""
        self.flushed = len(self.sent)

    def close(self) -> None:
        """Flush and mark closed."""
        self.flush()
        self.closed = True

    def values(self, role: str) -> list[bytes]:
        """Values sent for ``role``, in order."""
        return [value for r, _k, value, _h in self.sent if r == role]

    def decoded(self, role: str) -> list[Any]:
        """JSON-decoded values sent for ``role``."""
        return [orjson.loads(v) for v in self.values(role)]
