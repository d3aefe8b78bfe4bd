"""Pass-through Kafka client options: ``[kafka.consumer_options]`` and ``[kafka.producer_options]``.

Tuning a client (compression, fetch and batch sizes, buffers, timeouts) needs
no new setting of ours: these two tables are handed to the Kafka client as
they are. Names may be written in kafka-python's spelling (``fetch_max_bytes``)
or librdkafka's (``"fetch.max.bytes"``, quoted in TOML, since a bare dotted key
is a nested table); :func:`client_options` returns them in the spelling of the
client that will receive them.

The Kafka clients are built with them in :mod:`stream_learner.kafka.factory`,
over the service's own configuration; a name or value the client itself
refuses stops the start with one line naming the table (exit code 2).

Options the service must own are refused when the settings are read
(:func:`check_options`), in either spelling: what decides the consumer group,
partition assignment, offsets and commits, the delivery guarantee
(acknowledgements, idempotence, transactions, isolation), how records are
(de)serialised, and the connection and its security, which have settings of
their own (secrets come from the environment, never from a settings file).

Examples
--------
>>> check_options("producer", {"compression_type": "lz4", "batch.size": 65536})
>>> check_options("consumer", {"enable.auto.commit": True})
Traceback (most recent call last):
...
ValueError: enable.auto.commit: the service commits offsets itself, only once the outputs are durable
>>> spelled({"compression_type": "lz4", "batch.size": 65536}, "confluent-kafka")
{'compression.type': 'lz4', 'batch.size': 65536}
>>> spelled({"compression_type": "lz4", "batch.size": 65536}, "kafka-python")
{'compression_type': 'lz4', 'batch_size': 65536}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from stream_learner.settings import KafkaSettings

__all__ = ["DENIED", "Client", "Role", "check_options", "client_options", "spelled"]

Client = Literal["kafka-python", "confluent-kafka"]
Role = Literal["consumer", "producer"]

_COMMITS = "the service commits offsets itself, only once the outputs are durable"
_GUARANTEE = "the delivery guarantee is service.guarantee (at_least_once or exactly_once)"
_BYTES = "the service reads and writes raw bytes and does its own decoding"
_SECURITY = "set it in [kafka] (security_protocol, sasl_*, ssl_*; secrets from the environment)"

_BOTH: dict[str, str] = {
    "bootstrap.servers": "set kafka.bootstrap_servers",
    "client.id": "set kafka.client_id",
    "security.protocol": _SECURITY,
}
#: Options the service owns, by role, in librdkafka's dotted spelling, with the reason.
DENIED: dict[str, dict[str, str]] = {
    "consumer": {
        **_BOTH,
        "group.id": "set kafka.group_id",
        "group.instance.id": "set kafka.static_membership (it uses service.worker_id)",
        "enable.auto.commit": _COMMITS,
        "auto.commit.interval.ms": _COMMITS,
        "enable.auto.offset.store": _COMMITS,
        "auto.offset.reset": "set kafka.auto_offset_reset",
        "isolation.level": "the service reads committed records when service.guarantee is "
        "exactly_once",
        "session.timeout.ms": "set kafka.session_timeout_ms",
        "key.deserializer": _BYTES,
        "value.deserializer": _BYTES,
        "enable.partition.eof": "the service detects the end of its input itself",
        "partition.assignment.strategy": "partition p of the events and labels topics must go "
        "to the same worker: the service uses the range assignor",
        "group.protocol": "partition p of the events and labels topics must go to the same "
        "worker: the service uses the classic protocol with the range assignor",
        "max.poll.records": "set service.batch_size",
    },
    "producer": {
        **_BOTH,
        "transactional.id": "exactly_once derives it from kafka.group_id and service.worker_id",
        "transaction.timeout.ms": "set kafka.transaction_timeout_ms",
        "enable.idempotence": _GUARANTEE,
        "acks": _GUARANTEE + "; outputs count as durable only when every in-sync replica has them",
        "request.required.acks": _GUARANTEE,
        "max.in.flight.requests.per.connection": _GUARANTEE + "; it keeps outputs in order",
        "max.in.flight": _GUARANTEE + "; it keeps outputs in order",
        "retries": _GUARANTEE,
        "linger.ms": "set kafka.linger_ms",
        "key.serializer": _BYTES,
        "value.serializer": _BYTES,
    },
}
_DENIED_PREFIXES = {"sasl.": _SECURITY, "ssl.": _SECURITY}


def _dotted(name: str) -> str:
    return name.strip().lower().replace("_", ".")


def check_options(role: Role, options: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first option that is refused, and why.

    An option must be a string, number or boolean, given once (not in both
    spellings), and not one the service owns (:data:`DENIED`).
    """
    seen: dict[str, str] = {}
    for name, value in options.items():
        dotted = _dotted(name)
        if isinstance(value, Mapping):
            raise ValueError(
                f"{name}: a table, not a value; quote a dotted option name "
                f'("{name}.{next(iter(value), "...")}" = ...)'
            )
        if not isinstance(value, str | int | float | bool):
            raise ValueError(f"{name}: expected a string, number or boolean, got {value!r}")
        if dotted in seen:
            raise ValueError(f"{name}: given twice (also as {seen[dotted]})")
        seen[dotted] = name
        reason = DENIED[role].get(dotted) or next(
            (why for prefix, why in _DENIED_PREFIXES.items() if dotted.startswith(prefix)), None
        )
        if reason is not None:
            raise ValueError(f"{name}: {reason}")


def spelled(options: Mapping[str, Any], client: Client) -> dict[str, Any]:
    """``options`` with each name in ``client``'s spelling (snake_case or dotted)."""
    if client == "kafka-python":
        return {_dotted(name).replace(".", "_"): value for name, value in options.items()}
    return {_dotted(name): value for name, value in options.items()}


def client_options(kafka: KafkaSettings, client: Client, role: Role) -> dict[str, Any]:
    """The pass-through options for a ``role`` client of the ``client`` library.

    Merge them over the service's configuration of the client
    (``{**service_config, **client_options(...)}``): they override its
    defaults (e.g. the producer's ``batch_size``), and cannot override what
    it owns, since the settings refuse those options.

    Examples
    --------
    >>> from stream_learner.settings import KafkaSettings
    >>> k = KafkaSettings(producer_options={"compression.type": "zstd"},
    ...                   consumer_options={"fetch_max_bytes": 1048576})
    >>> client_options(k, "kafka-python", "producer"), client_options(k, "confluent-kafka", "consumer")
    ({'compression_type': 'zstd'}, {'fetch.max.bytes': 1048576})
    """
    table = kafka.consumer_options if role == "consumer" else kafka.producer_options
    return spelled(table, client)
