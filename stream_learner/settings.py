"""One typed, frozen settings object: a TOML file plus ``STREAM_LEARNER_*`` overrides.

Every key has a default, and the defaults are the embedded default: events from
a sensor dataset bundled with River, predictions to stdout, no Kafka, no Redis.

Environment overrides take the form ``STREAM_LEARNER_<SECTION>__<KEY>=<value>``;
the value is read as a TOML value when it parses as one (``500``, ``true``,
``["a", "b"]``) and as a plain string otherwise.

Examples
--------
>>> s = load_settings(None, env={"STREAM_LEARNER_SERVICE__BATCH_SIZE": "64"})
>>> s.service.batch_size, s.model.task
(64, 'regression')
>>> load_settings(None, env={"STREAM_LEARNER_SERVICE__BATCH_SIZ": "64"})
Traceback (most recent call last):
...
stream_learner.errors.SettingsError: invalid settings (environment):
  service.batch_siz: unknown key (did you mean 'batch_size'?)
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stream_learner.client_options import check_options
from stream_learner.errors import SettingsError, os_reason

__all__ = [
    "ENV_PREFIX",
    "MODEL_ACTIONS",
    "SIGNALS",
    "CheckpointSettings",
    "DriftSettings",
    "FrozenMap",
    "KafkaSettings",
    "LabelSettings",
    "LimitSettings",
    "LocalSettings",
    "MetricsSettings",
    "ModelSettings",
    "SchemaSettings",
    "ServiceSettings",
    "Settings",
    "load_settings",
    "unknown_variables",
]

ENV_PREFIX = "STREAM_LEARNER_"
#: ``STREAM_LEARNER_*`` names that are not settings: the test and server scripts' own
#: variables (``scripts/test.sh``, ``scripts/servers.sh``) and docker-compose's ``.env``.
TOOL_VARIABLES = frozenset({
    "STREAM_LEARNER_KAFKA_LIBS", "STREAM_LEARNER_REQUIRE_SERVERS", "STREAM_LEARNER_SERVERS_DIR",
    "STREAM_LEARNER_KAFKA_PORT", "STREAM_LEARNER_REDIS_PORT", "STREAM_LEARNER_CONTROLLER_PORT",
    "STREAM_LEARNER_IMAGE", "STREAM_LEARNER_GROUP_ID",
})


class FrozenMap(Mapping[str, Any]):
    """A read-only, hashable mapping: how frozen settings hold TOML tables.

    Values are frozen too (tables become ``FrozenMap``, arrays tuples), so a
    settings object can be neither changed after validation nor made unhashable.

    Examples
    --------
    >>> m = freeze({"step": "linear_model.LinearRegression", "params": {"l2": [0.1]}})
    >>> m["params"]["l2"], hash(m) == hash(freeze(thaw(m)))
    ((0.1,), True)
    >>> m["step"] = "x"
    Traceback (most recent call last):
    ...
    TypeError: 'FrozenMap' object does not support item assignment
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[str, Any]) -> None:
        self._items = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> tuple[type[FrozenMap], tuple[dict[str, Any]]]:
        # the cached hash stays behind: string hashes differ from one process to the next
        return (FrozenMap, (self._items,))


def freeze(value: Any) -> Any:
    """``value`` with every table made a :class:`FrozenMap` and every array a tuple."""
    if isinstance(value, Mapping):
        return FrozenMap({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The plain dicts and lists :func:`freeze` was given (for dumps and hashes)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


_FREEZE = AfterValidator(freeze)
_THAW = PlainSerializer(thaw, return_type=dict[str, Any])
#: A TOML table (a pipeline step), frozen once validated.
Table = Annotated[Mapping[str, Any], _FREEZE, _THAW]
#: A table of numbers (detector parameters), frozen once validated.
Numbers = Annotated[Mapping[str, float | int], _FREEZE, _THAW]


class _Section(BaseModel):
    # strict: no silent coercion (``true`` is not the integer 1); TOML and the
    # environment parser already give numbers, booleans and strings their types.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class ServiceSettings(_Section):
    """How the worker runs."""

    transport: Literal["local", "kafka"] = Field(
        "local",
        description="`local`: JSON Lines files / stdin / stdout; `kafka`: a consumer group.",
    )
    batch_size: int = Field(500, ge=1, description="Most records handled per poll batch.")
    poll_timeout_ms: int = Field(100, ge=0, description="How long one poll waits for records.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    max_events: int = Field(
        0, ge=0, description="Stop after this many input records (0: run until the input ends)."
    )
    idle_timeout_s: float = Field(
        0.0, ge=0, description="Kafka: stop after this long without records (0: never stop)."
    )
    guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="`exactly_once`: outputs and offsets in one Kafka transaction "
        "(downstream reads with isolation.level=read_committed).",
    )
    worker_id: str = Field(
        "",
        description="Stable name of this worker (default: host name); the transactional id "
        "is `<group_id>-<worker_id>`.",
    )


class KafkaSettings(_Section):
    """Kafka connection, topics and client security. Secrets come from the environment."""

    client: Literal["kafka-python", "confluent-kafka"] = Field(
        "kafka-python",
        description="Kafka client library: `kafka-python` (pure Python) or `confluent-kafka` "
        "(librdkafka, faster; `pip install stream-learner[confluent]`). Same guarantees.",
    )
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    group_id: str = Field("stream-learner", min_length=1, description="Consumer group id.")
    client_id: str = Field("stream-learner", description="Client id shown in broker logs.")
    events_topic: str = Field("events", min_length=1, description="Topic of input events.")
    predictions_topic: str = Field("predictions", min_length=1, description="Prediction records.")
    dead_letter_topic: str = Field("events.dlq", min_length=1, description="Unusable input.")
    learn_dead_letter_topic: str = Field(
        "events.learn.dlq", min_length=1, description="Labels that cannot be learned."
    )
    alerts_topic: str = Field(
        "alerts", min_length=1, description="Drift alert records (docs/drift.md)."
    )
    metrics_topic: str = Field(
        "metrics", min_length=1, description="Periodic metrics snapshot records."
    )
    labels_topic: str = Field(
        "",
        description="Topic of label records, co-partitioned with the events topic (same "
        "partition count, same keys); empty: labels come only on the events topic.",
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group with no committed offset starts."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: str = Field("", description="e.g. PLAIN, SCRAM-SHA-256 (empty: none).")
    sasl_username: str = Field("", description="SASL user name.")
    sasl_password_env: str = Field(
        "", description="Name of the environment variable that holds the SASL password."
    )
    ssl_cafile: str = Field("", description="CA bundle for SSL (path).")
    ssl_certfile: str = Field("", description="Client certificate for SSL (path).")
    ssl_keyfile: str = Field("", description="Client key for SSL (path).")
    ssl_password_env: str = Field(
        "", description="Name of the environment variable that holds the SSL key password."
    )
    linger_ms: int = Field(
        5,
        ge=0,
        description="Producer batching delay: outputs wait at most this long to share a request "
        "with later ones (nothing waits for them: acknowledgements are collected as they come).",
    )
    commit_interval_ms: int = Field(
        100,
        ge=0,
        description="How often offsets are committed: at-least-once, asynchronously, up to the "
        "records whose outputs are acknowledged; exactly_once, the transaction holding the "
        "outputs and offsets (it may span several poll batches). 0: after every batch.",
    )
    session_timeout_ms: int = Field(10000, ge=1000, description="Consumer group session timeout.")
    static_membership: bool = Field(
        False,
        description="Join with group.instance.id = service.worker_id, so a restarted worker "
        "gets its partitions back at once, without a rebalance (KIP-345).",
    )
    transaction_timeout_ms: int = Field(
        10000,
        ge=1000,
        description="exactly_once: broker aborts a transaction left open this long. A worker "
        "killed mid-transaction and restarted under another `service.worker_id` holds back "
        "read_committed readers and its own offset fetch this long (docs/state.md).",
    )
    connect_timeout_s: float = Field(
        30.0, gt=0, description="How long to wait for the broker at start before failing."
    )
    consumer_options: Table = Field(
        FrozenMap({}),
        description="Passed to the Kafka consumer as they are, e.g. `fetch_max_bytes` or "
        "`\"fetch.max.bytes\"` (either spelling; quote dotted names). Options the service "
        "owns (group, offsets, commits, isolation, security, ...) are refused: the list and "
        "the reasons are in stream_learner/client_options.py.",
    )
    producer_options: Table = Field(
        FrozenMap({}),
        description="Passed to the Kafka producer as they are, e.g. `compression_type = "
        "\"lz4\"` or `batch_size`. Options the service owns (acks, idempotence, "
        "transactions, linger, security, ...) are refused.",
    )

    @field_validator("consumer_options", "producer_options")
    @classmethod
    def _pass_through(cls, value: Mapping[str, Any], info: ValidationInfo) -> Mapping[str, Any]:
        check_options("consumer" if info.field_name == "consumer_options" else "producer", value)
        return value


class LocalSettings(_Section):
    """The embedded default: files or standard streams instead of Kafka."""

    input: str = Field(
        "river:WaterFlow",
        description="JSON Lines path, `-` for stdin, or `river:<Dataset>` for a bundled River "
        "dataset.",
    )
    output: str = Field("-", description="Predictions: JSON Lines path or `-` for stdout.")
    dead_letters: str = Field(
        "-", description="Dead letters: JSON Lines path or `-` for stderr."
    )
    learn_dead_letters: str = Field(
        "-",
        description="Labels that cannot be learned: JSON Lines path or `-` for stderr.",
    )
    alerts: str = Field(
        "",
        description="Drift alerts: JSON Lines path, `-` for stderr, empty: none (alerts are "
        "logged either way).",
    )
    metrics: str = Field(
        "",
        description="Metrics snapshots: JSON Lines path, `-` for stderr, empty: none.",
    )
    quiet: bool = Field(False, description="Do not write predictions (summary only).")
    append: bool = Field(
        False, description="Append to the output files instead of overwriting them."
    )


class SchemaSettings(_Section):
    """Field names of the event contract; set `features = ""` for flat producer records."""

    id: str = Field("id", min_length=1, description="Field holding the event id.")
    key: str = Field("key", min_length=1, description="Entity id field (default: record key).")
    ts: str = Field("ts", min_length=1, description="Event time field (default: record time).")
    features: str = Field(
        "features", description="Object of features; empty: every other field is a feature."
    )
    label: str = Field("label", min_length=1, description="Label field (optional in a record).")


class ModelSettings(_Section):
    """The River model: a declarative pipeline, or a `module:function` factory."""

    name: str = Field("water-flow-regressor", min_length=1, description="Model name in outputs.")
    version: int = Field(1, ge=0, description="Model version in outputs.")
    task: Literal["classification", "regression", "anomaly", "forecasting"] = Field(
        "regression", description="Task kind (see docs/tasks.md)."
    )
    metric: str = Field(
        "",
        description="Online metric, e.g. `metrics.MAE` (empty: Accuracy, MAE, ROCAUC or MAE "
        "by task).",
    )
    scope: Literal["partition", "key"] = Field(
        "partition",
        description="`partition`: one model per input partition; `key`: one model per key, "
        "created from the pipeline on the key's first event (forecasting is always per key).",
    )
    max_resident: int = Field(
        10_000,
        ge=1,
        description="Scope `key`: most per-key models kept in memory per partition; the least "
        "recently used ones are parked (in the checkpoint store when there is one, else encoded "
        "in memory) until their key returns.",
    )
    horizon: int = Field(
        1, ge=1, le=10_000, description="Forecasting: steps ahead in each `forecast` list."
    )
    anomaly_threshold: float | None = Field(
        None,
        description="Anomaly: `is_anomaly` when the score is at least this (wraps the detector "
        "in anomaly.ThresholdFilter); unset when the pipeline ends in a filter.",
    )
    anomaly_quantile: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Anomaly: `is_anomaly` when the score is at least this running quantile of "
        "past scores (wraps the detector in anomaly.QuantileFilter).",
    )
    pipeline: tuple[Table, ...] = Field(
        (
            {"step": "preprocessing.StandardScaler"},
            {"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}},
        ),
        description="Steps `{step = \"module.Class\", params = {...}}`, chained with `|`.",
        strict=False,  # TOML arrays arrive as lists
        validate_default=True,  # the default steps are frozen too
    )
    factory: str = Field(
        "",
        description="`package.module:function` returning a River estimator (overrides pipeline).",
    )
    seed: int = Field(42, description="Seed passed to steps that take a `seed` parameter.")


class LabelSettings(_Section):
    """How labels reach the learner."""

    inline: bool = Field(
        True,
        description="Learn labels carried by the event itself (false: such an event waits "
        "for a label record like any other).",
    )
    pending_max_count: int = Field(
        100_000,
        ge=1,
        description="Most predictions per partition waiting for their label; the oldest expire "
        "first.",
    )
    pending_max_age_events: int = Field(
        0,
        ge=0,
        description="A prediction waits for its label at most this many later events of its "
        "partition (0: no limit).",
    )
    pending_max_age_s: float = Field(
        86_400.0,
        ge=0,
        description="A prediction waits for its label at most this many seconds of event time "
        "(the largest `ts` its partition has seen; 0: no limit).",
    )
    early_max_count: int = Field(
        10_000,
        ge=1,
        description="Most labels per partition waiting for their event; the oldest expire first.",
    )
    early_max_age_events: int = Field(
        10_000,
        ge=0,
        description="A label waits for its event at most this many events of its partition "
        "(0: no limit).",
    )
    early_max_age_s: float = Field(
        3_600.0,
        ge=0,
        description="A label waits for its event at most this many seconds of event time "
        "(0: no limit).",
    )


class LimitSettings(_Section):
    """Limits on input records; records beyond them become dead letters."""

    max_record_bytes: int = Field(1_048_576, ge=64, description="Largest accepted record.")
    max_features: int = Field(1000, ge=1, description="Most features in one event.")
    max_id_length: int = Field(256, ge=1, description="Longest accepted id or key.")
    max_dead_letter_bytes: int = Field(
        1_000_000,
        ge=64,
        description="Largest value copied into a dead letter; longer ones are cut (and say so).",
    )


class MetricsSettings(_Section):
    """The HTTP endpoint with /metrics, /healthz and /readyz."""

    enabled: bool = Field(False, description="Serve the metrics endpoint.")
    host: str = Field("127.0.0.1", description="Bind address (loopback by default).")
    port: int = Field(9108, ge=0, le=65535, description="Port (0: any free port).")
    memory_interval_s: float = Field(
        10.0,
        ge=0,
        description="Least seconds between two estimates of the resident models' memory "
        "(walking every model is costly; 0: at every commit).",
    )
    snapshot_interval_s: float = Field(
        60.0,
        ge=0,
        description="Seconds between two metrics snapshot records on the `metrics` output "
        "(0: none).",
    )
    lag_interval_s: float = Field(
        1.0, ge=0, description="Least seconds between two consumer lag measurements."
    )


Detector = Literal["adwin", "page_hinkley", "kswin"]
ErrorDetector = Literal["adwin", "page_hinkley", "kswin", "ddm", "eddm", "hddm_a", "hddm_w"]
#: Error detectors of 0/1 streams (River's ``drift.binary``): classification and anomaly only.
BINARY_ERROR_DETECTORS: tuple[str, ...] = ("ddm", "eddm", "hddm_a", "hddm_w")
Signal = Literal["error", "feature", "prediction", "schema"]
#: The signals a drift monitor can watch (the ``signal`` label of the drift metrics;
#: alerts about an action the service took carry the signal ``model``).
SIGNALS: tuple[str, ...] = get_args(Signal)
#: The actions of those ``model`` alerts (the ``action`` label of
#: ``stream_learner_model_actions_total``): a reset, the end of a reset's trial, and a
#: challenger's decision.
MODEL_ACTIONS: tuple[str, ...] = ("reset", "reset_undone", "reset_kept", "promoted",
                                  "champion_kept")


class DriftSettings(_Section):
    """Drift monitors, the alert lifecycle and what to do on drift (see docs/drift.md)."""

    enabled: bool = Field(True, description="Monitor drift and emit alerts.")
    signals: tuple[Signal, ...] = Field(
        ("error", "prediction", "schema"),
        description="Signals to monitor: `error` (when labels arrive), `feature` (each numeric "
        "feature: two detectors per feature per event, so opt-in), `prediction` (prediction or "
        "anomaly score), `schema` (the feature set).",
        strict=False,
    )
    detector: Detector = Field(
        "adwin", description="River detector of the continuous signals (drift.ADWIN, ...)."
    )
    params: Numbers = Field(
        default_factory=lambda: FrozenMap({}),
        description="Parameters of `detector` on the prediction and feature signals, e.g. "
        "`{delta = 0.002}` (empty: ADWIN delta 0.0002, calibrated on docs/drift.md's suite; "
        "River's defaults for the others).",
    )
    warning_params: Numbers = Field(
        default_factory=lambda: FrozenMap({}),
        description="Parameters of the looser twin of `error_detector` that raises warnings "
        "on the error (empty: ADWIN delta 0.01 and clock 8, PageHinkley threshold 25, KSWIN "
        "alpha 0.05).",
    )
    error_detector: ErrorDetector = Field(
        "adwin",
        description="Detector of the error stream; `ddm`, `eddm`, `hddm_a` and `hddm_w` "
        "(binary: classification and anomaly only) have their own warning zone.",
    )
    error_params: Numbers = Field(
        default_factory=lambda: FrozenMap({}),
        description="Parameters of `error_detector` (empty: ADWIN delta 0.002, River's "
        "defaults for the others).",
    )
    cooldown_events: int = Field(
        500,
        ge=0,
        description="After a drift alert, a monitor stays silent for this many of its updates "
        "(detections still count), except for the error getting worse than at that alert.",
    )
    warmup_labels: int = Field(
        500,
        ge=0,
        description="After start, restore, reset and promotion, monitors raise nothing until "
        "the model has learned this many labels (or seen this many events while no label "
        "comes); a replaced model gets fresh monitors.",
    )
    blind_pages_after_events: int = Field(
        2000,
        ge=0,
        description="Prediction, feature and schema changes cannot see the error: they are "
        "warnings while labels come, and drifts once no label has come for this many events "
        "(labels absent or late beyond it). 0: always drifts.",
    )
    resolve_after_events: int = Field(
        1000,
        ge=1,
        description="A warning or drift is resolved after this many updates of its monitor "
        "without a new warning or drift.",
    )
    max_features: int = Field(
        100, ge=0, description="Most numeric features monitored per model (the first seen)."
    )
    schema_grace_events: int = Field(
        100,
        ge=0,
        description="Events whose feature set is learned before new, missing or retyped "
        "features raise alerts.",
    )
    action: Literal["alert", "reset", "challenger"] = Field(
        "alert",
        description="On confirmed drift: `alert` only; `reset` the model to a fresh one; "
        "`challenger`: promote the model trained since the warning when it is better.",
    )
    reset_replay_labels: int = Field(
        1000,
        ge=0,
        description="`reset`: of the last this many labelled events (kept per model while "
        "`action = \"reset\"`), the fresh model first learns those since the error rose. "
        "0: a fresh model that knows nothing.",
    )
    reset_trial_labels: int = Field(
        1000,
        ge=0,
        description="`reset`: the replaced model keeps learning beside the fresh one for this "
        "many labels and comes back when it scores better on the last half of them by "
        "`challenger_margin` (the reset is undone). 0, or no label for "
        "`blind_pages_after_events`: a reset is final.",
    )
    action_signals: tuple[Signal, ...] = Field(
        ("error",), description="Signals whose confirmed drift triggers `action`.", strict=False
    )
    challenger_labels: int = Field(
        500,
        ge=1,
        description="After the drift, the challenger learns this many labels before the "
        "comparison.",
    )
    challenger_recent_labels: int = Field(
        250,
        ge=1,
        description="The models are compared on the last this many of those labels (at most "
        "`challenger_labels`).",
    )
    challenger_margin: float = Field(
        0.05,
        ge=0,
        description="The challenger replaces the champion when its metric is better by this "
        "share of the champion's.",
    )


class CheckpointSettings(_Section):
    """Where and how often shard state is saved (see docs/state.md)."""

    store: Literal["none", "local", "redis"] = Field(
        "none", description="`none`: state lives only in memory; `local`: a folder; `redis`."
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="`redis://` or `rediss://` (TLS) URL, no password."
    )
    redis_username: str = Field("", description="Redis ACL user (empty: default user).")
    redis_password_env: str = Field(
        "", description="Name of the environment variable holding the Redis password."
    )
    key_prefix: str = Field(
        "", description="Redis key prefix (empty: `stream-learner:<kafka.group_id>`)."
    )
    directory: str = Field("checkpoints", description="Folder of the `local` store.")
    keep: int = Field(
        3, ge=1, description="Checkpoints kept per shard, all reachable by a rollback."
    )
    every_events: int = Field(10000, ge=1, description="Checkpoint a shard after this many records.")
    every_seconds: float = Field(30.0, gt=0, description="... or after this many seconds.")
    key_env: str = Field(
        "STREAM_LEARNER_CHECKPOINT_KEY",
        description="Environment variable holding the HMAC signing key (16+ bytes).",
    )
    on_offset_out_of_range: Literal["fail", "replay_from_earliest"] = Field(
        "fail",
        description="When a checkpoint's offset is older than the log start: stop with an "
        "alert, or continue from the earliest offset still in the log with an alert.",
    )
    restore_timeout_s: float = Field(
        60.0, gt=0, description="How long to retry an unreachable store at restore before failing."
    )
    max_backoff_s: float = Field(
        30.0, gt=0, description="Longest wait between retries of a failed checkpoint."
    )
    timeout_s: float = Field(5.0, gt=0, description="Redis socket timeout.")
    write_behind: bool = Field(
        True,
        description="Per-key models on Redis: write each checkpoint in a background thread "
        "while the loop serves on (false: the loop waits for the write).",
    )

    def redis_password(self, environ: Mapping[str, str]) -> str | None:
        """The Redis password from the variable ``redis_password_env`` names (None: no password).

        Raises
        ------
        SettingsError
            The setting names a variable that is not set: never a silent empty password.

        Examples
        --------
        >>> CheckpointSettings(redis_password_env="PW").redis_password({"PW": "s3cret"})
        's3cret'
        >>> CheckpointSettings().redis_password({}) is None
        True
        """
        name = self.redis_password_env
        if not name:
            return None
        try:
            return environ[name]
        except KeyError:
            raise SettingsError(
                f"checkpoint.redis_password_env names the environment variable {name!r}, "
                "which is not set (export it, or leave the setting empty)"
            ) from None


class Settings(_Section):
    """Everything the service reads at start, as one frozen object."""

    service: ServiceSettings = ServiceSettings()
    kafka: KafkaSettings = KafkaSettings()
    local: LocalSettings = LocalSettings()
    schema_: SchemaSettings = Field(SchemaSettings(), alias="schema")
    model: ModelSettings = ModelSettings()
    labels: LabelSettings = LabelSettings()
    limits: LimitSettings = LimitSettings()
    metrics: MetricsSettings = MetricsSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    drift: DriftSettings = DriftSettings()

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, strict=True)

    @field_validator("model")
    @classmethod
    def _model_has_a_source(cls, value: ModelSettings) -> ModelSettings:
        if not value.factory and not value.pipeline:
            raise ValueError("set either model.pipeline (a list of steps) or model.factory")
        if value.anomaly_threshold is not None and value.anomaly_quantile is not None:
            raise ValueError("set model.anomaly_threshold or model.anomaly_quantile, not both")
        explicit_scope = "scope" in value.model_fields_set
        if value.task == "forecasting" and explicit_scope and value.scope != "key":
            raise ValueError("forecasting keeps one model per key: set model.scope = 'key'")
        return value

    @model_validator(mode="after")
    def _binary_error_detector(self) -> Settings:
        binary = ("classification", "anomaly")
        if self.drift.error_detector in BINARY_ERROR_DETECTORS and self.model.task not in binary:
            raise ValueError(
                f"drift.error_detector = {self.drift.error_detector!r} needs a 0/1 error "
                f"stream (classification or anomaly), not {self.model.task!r}"
            )
        return self


def _parse_env_value(raw: str) -> Any:
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SettingsError(f"{name}: {'.'.join(path[:-1])} is a value, not a section")
        if isinstance(node.get(path[-1]), dict):
            raise SettingsError(f"{name}: {'.'.join(path)} is a section, not a value")
        node[path[-1]] = _parse_env_value(raw)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) or model.model_fields.get(f"{part}_")
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [f.alias or name for name, f in model.model_fields.items()]


def _describe(error: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc)
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _known_keys(loc), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"  {key}: unknown key{hint}"
    return f"  {key}: {error['msg']} (got {error.get('input')!r})"


def load_settings(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    overrides_from: str = "command line",
) -> Settings:
    """Read settings from a TOML file (or defaults) and ``STREAM_LEARNER_*`` variables.

    Parameters
    ----------
    path
        A TOML file, or ``None`` for the built-in defaults (the embedded default).
    env
        Environment to read overrides from; ``os.environ`` when ``None``.
    overrides
        Nested values that win over file and environment (command-line flags).
    overrides_from
        Where ``overrides`` come from, as an error message names it.

    Raises
    ------
    SettingsError
        Naming every wrong key and the form it expects.
    """
    data: dict[str, Any] = {}
    origin = "environment"
    if path is not None:
        origin = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"settings file not found: {path}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{path} is not valid TOML: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise SettingsError(f"{path} is not UTF-8 text, as TOML must be: {exc}") from None
        except IsADirectoryError:
            raise SettingsError(f"settings file {path} is a folder, not a TOML file") from None
        except OSError as exc:
            raise SettingsError(f"settings file {path}: cannot read: {os_reason(exc)}") from None
    from_env = _env_overrides(os.environ if env is None else env)
    if from_env:
        origin = f"{origin} + environment" if path is not None else "environment"
    if overrides:
        origin = (f"{origin} + {overrides_from}" if path is not None or from_env
                  else overrides_from)
    try:
        return Settings.model_validate(_merge(_merge(data, from_env), overrides or {}))
    except ValidationError as exc:
        lines = "\n".join(_describe(e) for e in exc.errors())
        raise SettingsError(f"invalid settings ({origin}):\n{lines}") from None


def _settings_name(name: str) -> str | None:
    """``STREAM_LEARNER_SECTION__KEY`` for a name that misses the double underscore."""
    rest = name[len(ENV_PREFIX) :].lower()
    for section, field in Settings.model_fields.items():
        head = (field.alias or section) + "_"
        annotation = field.annotation
        if rest.startswith(head) and isinstance(annotation, type):
            key = rest[len(head) :]
            if key in getattr(annotation, "model_fields", {}):
                return f"{ENV_PREFIX}{(field.alias or section).upper()}__{key.upper()}"
    return None


def unknown_variables(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """Warnings for ``STREAM_LEARNER_*`` variables that neither set nor feed a setting.

    A variable without ``__`` is used only when a ``*_env`` setting names it
    (a secret), or by the project's scripts; any other is a likely typo.

    Examples
    --------
    >>> env = {"STREAM_LEARNER_SERVICE_BATCH_SIZE": "5", "STREAM_LEARNER_CHECKPOINT_KEY": "k"}
    >>> unknown_variables(Settings(), env)
    ['STREAM_LEARNER_SERVICE_BATCH_SIZE matches no setting and is ignored (did you mean STREAM_LEARNER_SERVICE__BATCH_SIZE?)']
    """
    named = {
        settings.kafka.sasl_password_env, settings.kafka.ssl_password_env,
        settings.checkpoint.redis_password_env, settings.checkpoint.key_env,
    }
    out = []
    for name in sorted(env):
        if (
            not name.startswith(ENV_PREFIX) or "__" in name or name in named
            or name in TOOL_VARIABLES or name.startswith(ENV_PREFIX + "TEST")
        ):
            continue
        meant = _settings_name(name)
        hint = f" (did you mean {meant}?)" if meant else (
            " (settings are STREAM_LEARNER_<SECTION>__<KEY>; a secret is read only from the "
            "variable a *_env setting names)"
        )
        out.append(f"{name} matches no setting and is ignored{hint}")
    return out
