"""The wire contracts: events and labels in, predictions out, with an orjson codec.

An input record is JSON, one object per record (see ``docs/contracts.md``)::

    {"id": "r-1042", "key": "pump-7", "ts": 1764115200.25,
     "features": {"temp": 71.2, "vibration": 0.013, "mode": "auto"}, "label": 1}

With ``[schema] features = ""`` a flat producer record is read as it is: every
field other than id, key, ts and label is a feature.

Decoding either returns an :class:`Event` (it has features) or a
:class:`Label` (a label-only record), or raises :class:`InvalidRecord` with a
stable reason code (every code is in :data:`REASONS` and ``docs/errors.md``).
An event whose inline label is unusable is still an event: it is scored, and
the label's error travels with it (:attr:`Event.label_error`) to the learn
dead-letter output. Nothing in this module touches a clock or the network.

Examples
--------
>>> codec = Codec(SchemaSettings(), LimitSettings(), task="classification")
>>> ev = codec.decode(b'{"id": 7, "key": "pump-7", "ts": 10.5, "features": {"t": 1.5}, "label": 1}',
...                   None, 0, Origin("events", 0, 42))
>>> ev.id, ev.key, ev.features, ev.label, ev.has_label
(7, 'pump-7', {'t': 1.5}, 1, True)
>>> codec.decode(b'{"id": 7, "features": []}', None, 0, Origin("events", 0, 43))
Traceback (most recent call last):
...
stream_learner.errors.InvalidRecord: features_not_object: field 'features' must be a JSON object ...
>>> ev = codec.decode(b'{"id": 8, "features": {"t": 2}, "label": 0.5}', None, 0,
...                   Origin("events", 0, 44))
>>> ev.has_label, ev.label_error.reason
(False, 'invalid_label')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from stream_learner.errors import InvalidLabel, InvalidRecord
from stream_learner.settings import LimitSettings, SchemaSettings

__all__ = [
    "INPUT_REASONS",
    "LEARN_REASONS",
    "REASONS",
    "Codec",
    "Event",
    "Label",
    "ModelInfo",
    "Origin",
    "Prediction",
    "encode_prediction",
    "parse_ts",
    "preview",
]

_SCALARS = (int, float, str, bool, type(None))
_INT64 = (-(2**63), 2**63 - 1)

#: Reason codes of records rejected before they reach a model (input dead letters).
INPUT_REASONS = (
    "empty",
    "too_large",
    "not_json",
    "not_object",
    "missing_id",
    "invalid_id",
    "invalid_key",
    "invalid_ts",
    "features_not_object",
    "too_many_features",
    "feature_not_scalar",
    "non_finite",
    "no_features",
    "model_rejected",
    "encode_failed",
    "unexpected_error",
    "stopped_worker",
)
#: Reason codes of labels that cannot be learned, or of predicted events the metric or the
#: drift monitors could not use (learn dead letters).
LEARN_REASONS = ("invalid_label", "unknown_id", "learn_failed", "metric_failed", "drift_failed")
#: Every reason code, as documented in ``docs/errors.md``.
REASONS = INPUT_REASONS + LEARN_REASONS

#: Exact types of a feature value that need no further check. Values come from
#: orjson, which never yields a non-finite float: it rejects NaN, Infinity and
#: numbers beyond a double (see ``Codec._load``).
_PLAIN = frozenset((int, float, str, bool, type(None)))
#: read once: these run per record
_PLAIN_SUPERSET = _PLAIN.issuperset
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

#: the largest magnitude of a feature or a regression label: the square of a larger
#: double overflows (past 1.3e154), and one such value makes a model's running sums
#: (a scaler's variance, a linear model's weights) infinite for good, every later
#: prediction NaN. No measurement comes near it; sensors' "no reading" sentinels
#: (the largest double, -1.8e308) do.
MAX_ABS_NUMBER = 1e150


def _moderate(values: Iterable[Any]) -> bool:
    """No float among ``values`` beyond :data:`MAX_ABS_NUMBER` (nor NaN).

    >>> _moderate([1.0, "on", None, 3]), _moderate([1.0, -1e160])
    (True, False)
    """
    for value in values:
        if type(value) is float and not -MAX_ABS_NUMBER <= value <= MAX_ABS_NUMBER:
            return False
    return True


class Origin(NamedTuple):
    """Where a record was read: topic (or file), partition and offset (or line number)."""

    topic: str
    partition: int
    offset: int


class Event(NamedTuple):
    """One input event: features to score, and possibly its label.

    Immutable, and a named tuple rather than a frozen dataclass: one is built
    per record, and a frozen dataclass's ``__init__`` costs three times as much.
    """

    id: str | int
    key: str
    ts: float
    features: dict[str, Any]
    label: Any
    has_label: bool
    origin: Origin
    #: Why the inline label cannot be learned (``has_label`` is then False), or None.
    label_error: InvalidLabel | None = None


@dataclass(frozen=True, slots=True)
class Label:
    """A label-only record: the ground truth for an event seen before (or soon)."""

    id: str | int
    key: str
    ts: float
    label: Any
    origin: Origin


class ModelInfo(NamedTuple):
    """The model that made a prediction; ``generation`` counts its replacements by a
    drift action (reset or promotion) and appears in the record once it is not 0."""

    name: str
    version: int
    n_learned: int
    generation: int = 0


class Prediction(NamedTuple):
    """One prediction record; ``fields`` holds the task-specific fields (e.g. ``proba``).

    ``label_error`` is not part of the record: it says why the event's inline
    label was not learned (the event is still predicted), or is None. A named
    tuple, like :class:`Event`, because one is built per event.
    """

    id: str | int
    key: str
    ts: float
    prediction: Any
    fields: dict[str, Any]
    model: ModelInfo
    origin: Origin
    label_error: InvalidLabel | None = None

    def to_dict(self, latency_ms: float | None = None) -> dict[str, Any]:
        """The JSON object of the prediction contract (``docs/contracts.md``)."""
        return _prediction_record(self, latency_ms)


def _prediction_record(prediction: Prediction, latency_ms: float | None) -> dict[str, Any]:
    """:meth:`Prediction.to_dict`, as a function: it runs for every event."""
    event_id, key, ts, value, fields, model_info, origin, _ = prediction
    name, version, n_learned, generation = model_info
    model: dict[str, Any] = {"name": name, "version": version, "n_learned": n_learned}
    if generation:
        model["generation"] = generation
    topic, partition, offset = origin
    out: dict[str, Any] = {
        "id": event_id,
        "key": key,
        "ts": ts,
        "prediction": value,
        **fields,
        "model": model,
        "source": {"topic": topic, "partition": partition, "offset": offset},
    }
    if latency_ms is not None:
        out["latency_ms"] = round(latency_ms, 3)
    return out


#: ``tuple.__new__``: builds a named tuple from a tuple of its fields without the Python
#: frame of the class's ``__new__`` (the same object; the hot path builds several per event)
_new = tuple.__new__


def _default(obj: Any) -> Any:
    # River returns numpy scalars from some models and bools as class keys.
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, datetime):
        return obj.timestamp()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def encode_prediction(prediction: Prediction, latency_ms: float | None = None) -> bytes:
    """Serialise a prediction to the JSON bytes of the prediction contract.

    Examples
    --------
    >>> p = Prediction("a", "k", 1.0, 0, {"proba": {0: 0.9, 1: 0.1}},
    ...                ModelInfo("m", 1, 5), Origin("events", 2, 7))
    >>> encode_prediction(p, 1.25)[:60]
    b'{"id":"a","key":"k","ts":1.0,"prediction":0,"proba":{"0":0.9'
    """
    return orjson.dumps(
        _prediction_record(prediction, latency_ms), default=_default, option=_NON_STR_KEYS
    )


_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS


#: event times a record may carry, in epoch seconds: years 1 to 9999, what ISO 8601 text can
#: say. Epoch milliseconds of any year since 1978 are beyond it: one such time would move
#: its partition's event-time clock thousands of years ahead and expire every label waiting
MIN_TS = -62135596800.0
MAX_TS = 253402300799.0


def parse_ts(value: Any) -> float:
    """Event time as epoch seconds, from a number or an ISO 8601 string (UTC if no offset).

    Examples
    --------
    >>> parse_ts(12.5), parse_ts("2026-01-01T00:00:00Z")
    (12.5, 1767225600.0)
    >>> parse_ts(1767225600000)
    Traceback (most recent call last):
    ...
    ValueError: 1767225600000 is not epoch seconds of a year from 1 to 9999 (epoch milliseconds? send seconds)
    >>> parse_ts("9999-12-31T23:59:59-12:00")
    Traceback (most recent call last):
    ...
    ValueError: '9999-12-31T23:59:59-12:00' is not a time of a year from 1 to 9999 in UTC
    """
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("time must be finite")
        if not MIN_TS <= value <= MAX_TS:
            raise ValueError(f"{value} is not epoch seconds of a year from 1 to 9999 "
                             "(epoch milliseconds? send seconds)")
        return float(value)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:  # no offset given: UTC, never the host's time zone
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
        if not MIN_TS <= seconds <= MAX_TS:  # an offset can carry it past the years numbers have
            raise ValueError(f"{value!r} is not a time of a year from 1 to 9999 in UTC")
        return seconds
    raise ValueError(f"expected epoch seconds or an ISO 8601 string, got {type(value).__name__}")


def _why(value: bytes, exc: orjson.JSONDecodeError) -> str:
    """What is wrong with bytes orjson refused: bytes that are not UTF-8 are said to be so
    (orjson reports them as surrogates, which they are not).

    Examples
    --------
    >>> _why(b'{"a": "\\xff"}', orjson.JSONDecodeError("str is not valid UTF-8", "", 0))
    'not UTF-8: invalid start byte 0xff at byte 7'
    """
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8: {bad.reason} 0x{value[bad.start]:02x} at byte {bad.start}"
    return str(exc)


def preview(value: Any, limit: int = 64) -> str:
    """A short text of producer data for error messages (never the whole value).

    Lists and objects are drawn only as far as ``limit`` characters reach,
    without recursion: a label nested 100,000 levels deep costs what a flat
    one costs, and never raises.

    Examples
    --------
    >>> preview("x" * 100, limit=10)
    "'xxxxxxx...(102 chars)"
    >>> preview({"a": [1, 2.5, None]})
    "{'a': [1, 2.5, None]}"
    >>> deep = []
    >>> for _ in range(100_000):
    ...     deep = [deep]
    >>> preview(deep, limit=12)
    '[[[[[[[[[[...(list of 1 item)'
    """
    if not isinstance(value, list | dict):
        text = _scalar_text(value)
        return text if len(text) <= limit else f"{text[: limit - 2]}...({len(text)} chars)"
    text, complete = _sketch(value, limit)
    if complete and len(text) <= limit:
        return text
    n = len(value)
    return f"{text[: limit - 2]}...({_kind(value)} of {n} item{'s' * (n != 1)})"


class _Piece(str):
    """Text already drawn, waiting on :func:`_sketch`'s stack."""


def _scalar_text(value: Any) -> str:
    try:
        return repr(value)
    except ValueError:  # an integer beyond the interpreter's digit limit
        return f"<integer of about {int(value.bit_length() * 0.30103)} digits>"


def _sketch(value: list[Any] | dict[Any, Any], limit: int) -> tuple[str, bool]:
    """Draw ``value`` until ``limit`` characters; True when it was drawn whole."""
    out: list[str] = []
    size = 0
    stack: list[Any] = [value]
    while stack and size <= limit:
        item = stack.pop()
        if isinstance(item, _Piece):
            piece = str(item)
        elif isinstance(item, list | dict):
            close = "]" if isinstance(item, list) else "}"
            entries: list[Any] = []
            for i, entry in enumerate(item.items() if isinstance(item, dict) else item):
                if i >= limit:  # each entry draws at least one character: enough to fill it
                    entries.append(_Piece(", ..."))
                    break
                if i:
                    entries.append(_Piece(", "))
                if isinstance(item, dict):
                    entries.extend((_Piece(f"{_scalar_text(entry[0])}: "), entry[1]))
                else:
                    entries.append(entry)
            stack.append(_Piece(close))
            stack.extend(reversed(entries))
            piece = "[" if close == "]" else "{"
        else:
            piece = _scalar_text(item[: limit + 2] if isinstance(item, str) else item)
        out.append(piece)
        size += len(piece)
    return "".join(out), not stack


def _check_classification_label(label: Any) -> None:
    if not isinstance(label, str | int | bool):
        raise InvalidLabel(
            "invalid_label",
            "a classification label must be a string, integer or boolean, got "
            f"{_kind(label)} {preview(label)}",
        )


def _check_regression_label(label: Any) -> None:
    if (isinstance(label, bool) or not isinstance(label, int | float)
            or not -MAX_ABS_NUMBER <= label <= MAX_ABS_NUMBER):
        raise InvalidLabel(
            "invalid_label",
            f"a regression label must be a finite number within +/-{MAX_ABS_NUMBER:g}, got "
            f"{_kind(label)} {preview(label)}",
        )


def _check_anomaly_label(label: Any) -> None:
    if label not in (0, 1) or isinstance(label, float):
        raise InvalidLabel(
            "invalid_label",
            f"an anomaly label must be true/false or 1/0 (1: anomaly), got {preview(label)}",
        )


LABEL_CHECKS: dict[str, Callable[[Any], None]] = {
    "classification": _check_classification_label,
    "regression": _check_regression_label,
    "anomaly": _check_anomaly_label,
    "forecasting": _check_regression_label,
}

#: Exact label types each task's check accepts whatever the value (no anomaly entry:
#: its check looks at the value).
PLAIN_LABELS: dict[str, frozenset[type]] = {
    "classification": frozenset((str, int, bool)),
    "regression": frozenset((int,)),  # a float is checked against MAX_ABS_NUMBER
    "forecasting": frozenset((int,)),
}

#: Tasks whose every record is an event: a record without features is an
#: observation of its key's series (forecasting), not a label record.
OBSERVATION_TASKS = frozenset({"forecasting"})


class Codec:
    """Decode and validate input records according to the ``[schema]`` and ``[limits]``.

    Parameters
    ----------
    schema
        Field names of id, key, ts, features and label.
    limits
        Size limits; a record beyond them is rejected.
    task
        Decides which label types are valid.
    """

    def __init__(self, schema: SchemaSettings, limits: LimitSettings, task: str) -> None:
        self.schema = schema
        self.limits = limits
        self._check_label = LABEL_CHECKS[task]
        #: exact label types that ``_check_label`` always accepts (orjson floats are finite)
        self._plain_labels = PLAIN_LABELS.get(task, frozenset())
        self._observations = task in OBSERVATION_TASKS
        self._reserved = {schema.id, schema.key, schema.ts, schema.label}
        # read once: decode runs per record
        self._names = (schema.id, schema.key, schema.ts, schema.label, schema.features)
        self._max_id = limits.max_id_length
        self._max_features = limits.max_features
        self._max_bytes = limits.max_record_bytes

    def decode(
        self, value: bytes | None, record_key: bytes | None, record_ts_ms: int, origin: Origin
    ) -> Event | Label:
        """Turn one record into an :class:`Event` or a :class:`Label`.

        Common well-formed values are accepted by cheap exact-type checks; any
        other value goes through the full validation, which alone decides what
        is rejected and with which message.

        Raises
        ------
        InvalidRecord
            With a reason code from ``docs/errors.md``.
        """
        if value is not None and len(value) <= self._max_bytes:  # _load, inline: per record
            try:
                obj = _loads(value)
            except _JSONDecodeError:
                obj = self._load(value)
            if type(obj) is not dict:
                obj = self._load(value)
        else:
            obj = self._load(value)
        id_name, key_name, ts_name, label_name, features_name = self._names
        max_id = self._max_id
        event_id: Any = obj.get(id_name)
        kind = type(event_id)
        if not (
            (kind is int and _INT64[0] <= event_id <= _INT64[1])
            or (kind is str and 0 < len(event_id) <= max_id)
        ):
            event_id = self._id(event_id, id_name)
        key = obj.get(key_name)
        if not (type(key) is str and len(key) <= max_id):
            key = self._key(key, record_key)
        ts = obj.get(ts_name)
        if type(ts) is not float or not MIN_TS <= ts <= MAX_TS:  # orjson's floats are finite
            ts = self._ts(ts, record_ts_ms)
        label = obj.get(label_name)
        has_label = label is not None
        features = obj.get(features_name) if features_name else None
        if not (
            # a cheap pre-check: every feature (at most the limit) of an exact JSON scalar
            # type; False only means "validate in full" (_features), never "invalid"
            type(features) is dict
            and len(features) <= self._max_features
            and _PLAIN_SUPERSET(map(type, features.values()))
            and _moderate(features.values())
        ):
            features = self._features(obj)
        if features is None and self._observations and has_label:
            features = {}
        if features is None:
            if not has_label:
                raise InvalidRecord(
                    "no_features", f"record has neither '{features_name or 'features'}' nor a label"
                )
            self._check_label(label)
            return Label(event_id, key, ts, label, origin)
        label_error = None
        if has_label and type(label) not in self._plain_labels:
            try:
                self._check_label(label)
            except InvalidLabel as error:
                label_error, has_label = error, False
        return _new(Event, (event_id, key, ts, features, label, has_label, origin, label_error))

    def _load(self, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise InvalidRecord("empty", "record has no value (tombstone)")
        if len(value) > self.limits.max_record_bytes:
            raise InvalidRecord(
                "too_large",
                f"record is {len(value)} bytes, over limits.max_record_bytes="
                f"{self.limits.max_record_bytes}",
            )
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            if "infinity" in str(exc):
                # Valid JSON syntax, but beyond a double (e.g. 1e999).
                raise InvalidRecord(
                    "non_finite", f"a number is too large for a 64-bit float ({exc})"
                ) from None
            raise InvalidRecord("not_json", f"record is not valid UTF-8 JSON ({_why(value, exc)})"
                                ) from None
        if not isinstance(obj, dict):
            raise InvalidRecord("not_object", f"record must be a JSON object, got {_kind(obj)}")
        return obj

    def _id(self, value: Any, field: str) -> str | int:
        if value is None:
            raise InvalidRecord("missing_id", f"field '{field}' is required (string or integer)")
        if isinstance(value, bool) or not isinstance(value, str | int):
            # orjson reads an integer beyond 64 bits as a float
            big = isinstance(value, float) and value.is_integer() and abs(value) >= 2.0**63
            hint = " (an integer beyond 64 bits: send it as a string)" * big
            raise InvalidRecord(
                "invalid_id",
                f"field '{field}' must be a string or integer, got {_kind(value)}{hint}",
            )
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            raise InvalidRecord(
                "invalid_id", f"field '{field}' is an integer beyond 64 bits: send it as a string"
            )
        if isinstance(value, str) and not 0 < len(value) <= self.limits.max_id_length:
            raise InvalidRecord(
                "invalid_id",
                f"field '{field}' must have 1 to {self.limits.max_id_length} characters",
            )
        return value

    def _key(self, value: Any, record_key: bytes | None) -> str:
        if value is None:
            if record_key is None:
                return ""
            try:
                value = record_key.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRecord("invalid_key", "record key is not UTF-8") from None
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or len(value) > self.limits.max_id_length:
            raise InvalidRecord(
                "invalid_key",
                f"field '{self.schema.key}' must be a string of at most "
                f"{self.limits.max_id_length} characters or an integer, got {_kind(value)}",
            )
        return value

    def _ts(self, value: Any, record_ts_ms: int) -> float:
        if value is None:
            return record_ts_ms / 1000.0
        try:
            return parse_ts(value)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidRecord("invalid_ts", f"field '{self.schema.ts}': {exc}") from None

    def _features(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        name = self.schema.features
        if name:
            features = obj.get(name)
            if features is None:
                return None
            if not isinstance(features, dict):
                raise InvalidRecord(
                    "features_not_object",
                    f"field '{name}' must be a JSON object of name -> number | string | bool "
                    f"| null, got {_kind(features)}",
                )
        else:
            features = {k: v for k, v in obj.items() if k not in self._reserved}
            if not features:
                return None
        if len(features) > self.limits.max_features:
            raise InvalidRecord(
                "too_many_features",
                f"{len(features)} features, over limits.max_features={self.limits.max_features}",
            )
        for fname, fvalue in features.items():
            if not isinstance(fvalue, _SCALARS):
                raise InvalidRecord(
                    "feature_not_scalar",
                    f"feature '{fname}' must be a number, string, bool or null, "
                    f"got {_kind(fvalue)}",
                )
            if isinstance(fvalue, float) and not math.isfinite(fvalue):
                raise InvalidRecord("non_finite", f"feature '{fname}' is not a finite number")
            if isinstance(fvalue, float) and not _moderate((fvalue,)):
                raise InvalidRecord(
                    "non_finite",
                    f"feature '{fname}' is {fvalue:g}, beyond +/-{MAX_ABS_NUMBER:g}: its square "
                    "overflows a 64-bit float, and would make the model's sums infinite",
                )
        return features


def _kind(value: Any) -> str:
    return {
        dict: "object",
        list: "list",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
