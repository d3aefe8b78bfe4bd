"""Every exception stream_learner raises, in one tree.

Third-party errors (kafka-python, redis-py, pydantic, pickle) are caught at the
edge that calls them and re-raised as one of these, with the original chained
as ``__cause__``::

    StreamLearnerError
    ├── SettingsError          a configuration key is missing, unknown or malformed
    ├── ModelConfigError       the [model] section cannot be built into a River model
    ├── InvalidRecord          one input record is unusable (becomes a dead letter)
    │   └── InvalidLabel       a label record cannot be learned (learn dead-letter topic)
    ├── CheckpointError        a checkpoint cannot be written or read
    │   ├── CheckpointRefused  a checkpoint failed verification or does not match this build
    │   └── CheckpointFenced   a newer owner of the shard exists; this worker must not write
    ├── ConnectionFailed       a broker or Redis cannot be reached (message names the address)
    ├── ModelFailing           the model raised on many records in a row: not about one record
    └── RecordStoppedWorker    an error escaped the handling of one record (a defect)

Only :class:`InvalidRecord` is expected in normal operation: the service turns
it into a dead letter and a metric and carries on. Which failures are about
one record and which stop the worker: ``docs/errors.md``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointError",
    "CheckpointFenced",
    "CheckpointRefused",
    "ConnectionFailed",
    "InvalidLabel",
    "InvalidRecord",
    "ModelConfigError",
    "ModelFailing",
    "RecordStoppedWorker",
    "SettingsError",
    "StreamLearnerError",
    "os_reason",
]


def os_reason(exc: OSError) -> str:
    """What an operating-system error says, for a one-line message.

    Examples
    --------
    >>> os_reason(FileNotFoundError(2, "No such file or directory"))
    'no such file or directory'
    """
    return (exc.strerror or str(exc)).lower()


class StreamLearnerError(Exception):
    """Base class of every error raised by stream_learner."""


class SettingsError(StreamLearnerError):
    """A setting is missing, unknown or of the wrong form; the message names the key."""


class ModelConfigError(StreamLearnerError):
    """The model configuration cannot be turned into a River estimator."""


class InvalidRecord(StreamLearnerError):
    """One input record cannot be used.

    Parameters
    ----------
    reason
        A stable, machine-readable code (see ``docs/errors.md``), e.g. ``"not_json"``.
    message
        A human explanation that tells the producer what to fix.

    Examples
    --------
    >>> err = InvalidRecord("missing_id", "field 'id' is required")
    >>> err.reason, str(err)
    ('missing_id', "missing_id: field 'id' is required")
    """

    #: what the learner did with the record before refusing it, when that is not nothing
    #: (a :data:`~stream_learner.learner.Outcome`: label entries that expired, labels
    #: learned, alerts raised); set by :meth:`~stream_learner.learner.Learner.process`
    outcome: Any = None

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class InvalidLabel(InvalidRecord):
    """A label that cannot be learned: wrong type for the task, or an unknown id."""


class CheckpointError(StreamLearnerError):
    """A checkpoint could not be written or read."""


class CheckpointRefused(CheckpointError):
    """A checkpoint failed its signature check or was made by an incompatible build."""


class CheckpointFenced(CheckpointError):
    """A newer owner claimed the shard; this worker's write was refused.

    Every store raises it through this constructor, so the message is the same
    whichever store refused the write.

    Parameters
    ----------
    shard
        The shard written to.
    newest
        The newest epoch that claimed the shard.
    epoch
        The epoch this worker holds (older than ``newest``).

    Examples
    --------
    >>> err = CheckpointFenced("events:0", 3, 2)
    >>> err.shard, err.newest, err.epoch
    ('events:0', 3, 2)
    >>> str(err)
    'shard events:0 was claimed by epoch 3; this worker holds epoch 2'
    """

    def __init__(self, shard: str, newest: int, epoch: int) -> None:
        super().__init__(
            f"shard {shard} was claimed by epoch {newest}; this worker holds epoch {epoch}"
        )
        self.shard = shard
        self.newest = newest
        self.epoch = epoch


class ConnectionFailed(StreamLearnerError):
    """A server (Kafka broker, Redis) could not be reached; the message names its address."""


class ModelFailing(StreamLearnerError):
    """The model raised on every one of many consecutive records: its configuration, not the data."""


class RecordStoppedWorker(StreamLearnerError):
    """An error escaped the handling of one record; the original is chained as ``__cause__``.

    The worker stops and leaves a marker (:mod:`stream_learner.guard`), so a
    restarted worker dead-letters that record instead of stopping on it again.
    """
