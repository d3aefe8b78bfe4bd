"""Where records come from: a Kafka consumer-group member, or a file / stdin.

Both sit behind :class:`Source` (the Kafka sources, one per client, live in
:mod:`stream_learner.kafka`); :class:`stream_learner.testing.MemorySource`
is the in-memory twin. A source tells its :class:`PartitionListener` which
partitions it owns (a file is one partition, assigned at once), hands out
batches of :class:`Record`, and commits the next offsets to read once the
service has made their outputs durable.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

import orjson

from stream_learner.datasets import dataset_records
from stream_learner.errors import CheckpointRefused
from stream_learner.events import Origin
from stream_learner.kafka.options import kafka_client_options
from stream_learner.settings import Settings

__all__ = [
    "JSON_SPACE",
    "FileSource",
    "FiniteInput",
    "PartitionListener",
    "Record",
    "Source",
    "TopicPartition",
    "kafka_client_options",
    "worker_id",
]

log = logging.getLogger(__name__)

#: JSON's white space: a line of only these is blank (skipped, not a record); any other
#: byte, a form feed or a vertical tab included, makes the line a record
JSON_SPACE = b" \t\r\n"

#: (topic, partition): one input partition, the unit of state (a shard).
TopicPartition = tuple[str, int]


class Record(NamedTuple):
    """One raw input record, before decoding.

    Immutable; a named tuple because one is built per input record and a
    tuple is the cheapest immutable object Python builds.
    """

    value: bytes | None
    key: bytes | None
    timestamp_ms: int
    origin: Origin


class PartitionListener(Protocol):
    """Told when partitions are assigned to or taken from this worker."""

    def on_assigned(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions now owned: build or restore their shards."""
        ...

    def on_revoked(self, partitions: Sequence[TopicPartition]) -> None:
        """Partitions about to be taken: flush, commit, release their shards."""
        ...


class Source(Protocol):
    """A stream of records split into partitions."""

    def subscribe(self, listener: PartitionListener) -> None:
        """Start reading; partition changes are reported to ``listener``."""
        ...

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """Up to ``max_records`` records; empty when none came within ``timeout_ms``."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record ``offsets`` (the next offset to read, per partition) as done."""
        ...

    @property
    def exhausted(self) -> bool:
        """True when a finite input has been read to its end."""
        ...

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The committed offsets K (``None``: nothing committed yet)."""
        ...

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The oldest offset still in the log of each partition."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Read ``partition`` from ``offset`` on."""
        ...

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Records between each partition's ``position`` (next to process) and its end."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class FiniteInput:
    """The parts of :class:`Source` shared by inputs that are read once, without a group.

    Nothing is committed (positions live in checkpoints), every offset is still
    there, and there is no live end to lag behind.
    """

    _exhausted: bool = False

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Nothing to record: positions live in checkpoints."""

    @property
    def exhausted(self) -> bool:
        """True once the input ended."""
        return self._exhausted

    def committed(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int | None]:
        """No committed offsets: a checkpoint alone says where to resume."""
        return dict.fromkeys(partitions)

    def beginning(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Offsets start at 0 and every one is still there."""
        return dict.fromkeys(partitions, 0)

    def lag(self, positions: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """No live end to lag behind: always 0."""
        return dict.fromkeys(positions, 0)


class FileSource(FiniteInput):
    """JSON Lines from a file, stdin (``-``) or a bundled River dataset (``river:Name``).

    The whole input is partition 0 of a "topic" named after the input; the
    offset of a record is its line number, counting from 0.

    With ``resumable`` (a checkpoint store keeps the run's position), a last
    line without a newline that is not valid JSON is taken for a line still
    being written: it is not read (a warning names it), so the input ends
    before it and a later run on the grown input reads it whole. Otherwise it
    is read as any line, and becomes a ``not_json`` dead letter.

    Examples
    --------
    >>> src = FileSource("river:WaterFlow")
    >>> src.subscribe(None)
    >>> [tuple(r.origin) for r in src.poll(2, 0)]
    [('river:WaterFlow', 0, 0), ('river:WaterFlow', 0, 1)]
    """

    def __init__(self, location: str, resumable: bool = False) -> None:
        self.location = location
        self.resumable = resumable
        self._lines: Iterator[bytes] = iter(())
        self._handle: BinaryIO | None = None
        self._offset = 0
        self._exhausted = False
        #: the line of the last :meth:`seek` (a run resuming from a checkpoint: > 0)
        self.resumed_at = 0

    def subscribe(self, listener: PartitionListener | None) -> None:
        """Open the input and report its single partition."""
        self._open()
        if listener is not None:
            listener.on_assigned([(self.location, 0)])

    def _open(self) -> None:
        self.close()
        self._offset = 0
        if self.location.startswith("river:"):
            self._lines = dataset_records(self.location.removeprefix("river:"))
        elif self.location == "-":
            self._lines = self._whole_lines(sys.stdin.buffer)
        else:
            path = Path(self.location)
            if not path.is_file():
                raise FileNotFoundError(f"input file not found: {path}")
            self._handle = path.open("rb")
            self._lines = self._whole_lines(self._handle)

    def _whole_lines(self, lines: Iterable[bytes]) -> Iterator[bytes]:
        """``lines`` without their line ends, up to a last line still being written."""
        for line in lines:
            if line[-1:] != b"\n" and self._unfinished(line):  # only the last line lacks one
                return
            yield line.rstrip(b"\r\n")

    def _unfinished(self, line: bytes) -> bool:
        """True (with a warning) when ``line``, the last one, is to be left for the next run.

        A line before the one a checkpoint resumes at was read by an earlier run:
        it is skipped whatever it holds.
        """
        if not self.resumable or self._offset < self.resumed_at or not line.strip(JSON_SPACE):
            return False
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("the last line of %s (line %d) has no newline and is not valid JSON: "
                        "left for the next run", self.location, self._offset)
            return True
        return False

    def poll(self, max_records: int, timeout_ms: int) -> list[Record]:
        """The next ``max_records`` lines (blank lines are skipped but keep their number)."""
        out = []
        read = 0
        for line in islice(self._lines, max_records):
            read += 1
            if line.strip(JSON_SPACE):  # a blank line: JSON white space only
                out.append(Record(line, None, 0, Origin(self.location, 0, self._offset)))
            self._offset += 1
        if read < max_records:
            self._exhausted = True
        return out

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Skip to line ``offset`` (re-opening the input to go back, when it is a file).

        Standard input cannot be read again: a seek forward before its first
        line (a run resuming from a checkpoint) numbers that line ``offset``,
        so the new stream continues the one the checkpoint was made from.

        Raises
        ------
        CheckpointRefused
            The input ends before line ``offset``: it cannot be the input a
            checkpoint at that line was made from.
        """
        self.resumed_at = offset
        if offset < self._offset:
            if self.location == "-":
                raise ValueError("cannot seek backwards on stdin")
            self._open()
        if self.location == "-" and self._offset == 0:
            if offset:
                log.info("standard input continues the stream at line %d of its checkpoint: "
                         "its first line is line %d", offset, offset)
            self._offset = offset
            return
        for _ in islice(self._lines, offset - self._offset):
            self._offset += 1
        if self._offset < offset:
            raise CheckpointRefused(
                f"input {self.location} has {self._offset} lines, but its checkpoint resumes "
                f"at line {offset}: it is not the input the checkpoint was made from (the "
                "checkpoints of a local input are named after its --input path: use another "
                "checkpoint.directory for another input)"
            )

    def close(self) -> None:
        """Close the file, if one was opened."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def worker_id(settings: Settings) -> str:
    """This worker's stable name: ``service.worker_id``, else the host name."""
    return settings.service.worker_id or socket.gethostname()
