"""Options shared by both Kafka clients, written once and spelled for each client.

kafka-python takes keyword arguments (``bootstrap_servers``); librdkafka takes
a dict of dotted names (``bootstrap.servers``). Both come from the same
:class:`~stream_learner.settings.KafkaSettings`, so a setting means the same
thing whichever client ``kafka.client`` picks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stream_learner.errors import ConnectionFailed, SettingsError
from stream_learner.retrying import Backoff
from stream_learner.settings import KafkaSettings, Settings

__all__ = [
    "COMMIT_BACKOFF_S",
    "RECONNECT_BACKOFF_MAX_MS",
    "check_copartitioned",
    "check_topics",
    "isolation_level",
    "kafka_client_options",
    "librdkafka_options",
    "unreachable",
]

#: Longest wait between attempts to reconnect to a broker: a restarted broker is used again
#: within a second (the Java client's default), not after kafka-python's default of 30 s.
RECONNECT_BACKOFF_MAX_MS = 1000

#: First and longest wait between attempts of an offset commit (or, with confluent-kafka, a
#: transaction call) that failed retriably.
COMMIT_BACKOFF_S = Backoff(0.2, 5.0)


def _secret(environ: Mapping[str, str], setting: str, variable: str) -> str:
    try:
        return environ[variable]
    except KeyError:
        raise SettingsError(
            f"kafka.{setting} names the environment variable {variable!r}, which is not set "
            "(export it, or leave the setting empty)"
        ) from None


def kafka_client_options(settings: KafkaSettings, environ: Mapping[str, str]) -> dict[str, Any]:
    """Connection and security options of kafka-python's consumer, producer and admin.

    Secrets are read from the environment variable named in the settings, never
    from the settings file itself; a named variable that is not set is a
    :class:`~stream_learner.errors.SettingsError` (naming the variable, not its value).

    Examples
    --------
    >>> k = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
    ...                   sasl_username="svc", sasl_password_env="KAFKA_PASSWORD")
    >>> opts = kafka_client_options(k, {"KAFKA_PASSWORD": "s3cret"})
    >>> opts["security_protocol"], opts["sasl_plain_username"], opts["sasl_plain_password"]
    ('SASL_SSL', 'svc', 's3cret')
    """
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers.split(","),
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.sasl_mechanism:
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        if settings.sasl_password_env:
            opts["sasl_plain_password"] = _secret(
                environ, "sasl_password_env", settings.sasl_password_env
            )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        if getattr(settings, name):
            opts[name] = getattr(settings, name)
    if settings.ssl_password_env:
        opts["ssl_password"] = _secret(environ, "ssl_password_env", settings.ssl_password_env)
    return opts


#: kafka.* setting -> librdkafka property, for the SSL files.
_LIBRDKAFKA_SSL = {
    "ssl_cafile": "ssl.ca.location",
    "ssl_certfile": "ssl.certificate.location",
    "ssl_keyfile": "ssl.key.location",
}


def librdkafka_options(settings: KafkaSettings, environ: Mapping[str, str]) -> dict[str, Any]:
    """The same connection and security options, as librdkafka properties (confluent-kafka).

    Examples
    --------
    >>> k = KafkaSettings(bootstrap_servers="a:1,b:2", security_protocol="SASL_SSL",
    ...                   sasl_mechanism="SCRAM-SHA-512", sasl_username="svc",
    ...                   sasl_password_env="KAFKA_PASSWORD", ssl_cafile="/ca.pem")
    >>> opts = librdkafka_options(k, {"KAFKA_PASSWORD": "s3cret"})
    >>> opts["bootstrap.servers"], opts["sasl.mechanism"], opts["sasl.password"]
    ('a:1,b:2', 'SCRAM-SHA-512', 's3cret')
    >>> opts["security.protocol"], opts["ssl.ca.location"]
    ('sasl_ssl', '/ca.pem')
    """
    opts: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "security.protocol": settings.security_protocol.lower(),
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
    }
    if settings.sasl_mechanism:
        opts["sasl.mechanism"] = settings.sasl_mechanism
        opts["sasl.username"] = settings.sasl_username
        if settings.sasl_password_env:
            opts["sasl.password"] = _secret(
                environ, "sasl_password_env", settings.sasl_password_env
            )
    for name, prop in _LIBRDKAFKA_SSL.items():
        if getattr(settings, name):
            opts[prop] = getattr(settings, name)
    if settings.ssl_password_env:
        opts["ssl.key.password"] = _secret(environ, "ssl_password_env", settings.ssl_password_env)
    return opts


def isolation_level(settings: Settings) -> str:
    """``read_committed`` in exactly-once mode (outputs of aborted transactions are skipped).

    Examples
    --------
    >>> isolation_level(Settings())
    'read_uncommitted'
    """
    return "read_committed" if settings.service.guarantee == "exactly_once" else "read_uncommitted"


def unreachable(settings: KafkaSettings, exc: Exception) -> str:
    """One line saying which broker address could not be reached, and why."""
    detail = str(exc) or type(exc).__name__
    if not detail.startswith(type(exc).__name__):
        detail = f"{type(exc).__name__}: {detail}"
    return (
        f"cannot reach Kafka at {settings.bootstrap_servers} within "
        f"kafka.connect_timeout_s={settings.connect_timeout_s:g}s ({detail})"
    )


def check_topics(
    settings: KafkaSettings, counts: Mapping[str, int], inputs: list[str], required: list[str]
) -> None:
    """Fail with one line unless every topic exists and the input topics are co-partitioned.

    ``counts`` is the partition count of each topic found on the broker.

    Examples
    --------
    >>> check_topics(KafkaSettings(), {"events": 2}, ["events"], ["events", "predictions"])
    Traceback (most recent call last):
    ...
    stream_learner.errors.ConnectionFailed: topic 'predictions' not found on Kafka at 127.0.0.1:9092 (create it first)
    """
    missing = [t for t in dict.fromkeys([*inputs, *required]) if t not in counts]
    if missing:
        names = ", ".join(repr(t) for t in missing)
        raise ConnectionFailed(
            f"topic{'s' * (len(missing) > 1)} {names} not found on Kafka at "
            f"{settings.bootstrap_servers} (create {'them' if len(missing) > 1 else 'it'} first)"
        )
    if len(inputs) == 2:
        check_copartitioned((inputs[0], counts[inputs[0]]), (inputs[1], counts[inputs[1]]))


def check_copartitioned(events: tuple[str, int], labels: tuple[str, int]) -> None:
    """Fail unless the labels topic has as many partitions as the events topic.

    Examples
    --------
    >>> check_copartitioned(("events", 3), ("labels", 3))
    >>> check_copartitioned(("events", 3), ("labels", 2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stream_learner.errors.SettingsError: kafka.labels_topic 'labels' has 2 partitions but ...
    """
    if events[1] != labels[1]:
        raise SettingsError(
            f"kafka.labels_topic {labels[0]!r} has {labels[1]} partitions but "
            f"kafka.events_topic {events[0]!r} has {events[1]}: a labels topic must be "
            "co-partitioned with the events topic (same partition count, records keyed like "
            "their events) so that the label of an event is read by the worker that scored it"
        )
