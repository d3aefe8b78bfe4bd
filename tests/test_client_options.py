"""Pass-through Kafka client options: accepted in either spelling, refused when the service
owns them, and handed out in the spelling of the client that receives them."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_learner.client_options import DENIED, check_options, client_options
from stream_learner.errors import SettingsError
from stream_learner.settings import load_settings


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_tables_from_toml_reach_each_client_in_its_spelling(tmp_path: Path) -> None:
    path = _toml(tmp_path, """
[kafka.consumer_options]
fetch_max_bytes = 1048576
"max.partition.fetch.bytes" = 262144

[kafka.producer_options]
compression_type = "lz4"
"batch.size" = 65536
""")
    kafka = load_settings(path, env={}).kafka
    assert client_options(kafka, "kafka-python", "consumer") == {
        "fetch_max_bytes": 1048576, "max_partition_fetch_bytes": 262144}
    assert client_options(kafka, "confluent-kafka", "consumer") == {
        "fetch.max.bytes": 1048576, "max.partition.fetch.bytes": 262144}
    assert client_options(kafka, "kafka-python", "producer") == {
        "compression_type": "lz4", "batch_size": 65536}
    assert client_options(kafka, "confluent-kafka", "producer") == {
        "compression.type": "lz4", "batch.size": 65536}


def test_environment_overrides_a_pass_through_option() -> None:
    kafka = load_settings(None, env={
        "STREAM_LEARNER_KAFKA__PRODUCER_OPTIONS__COMPRESSION_TYPE": "zstd"}).kafka
    assert client_options(kafka, "confluent-kafka", "producer") == {"compression.type": "zstd"}
    assert client_options(kafka, "kafka-python", "consumer") == {}


@pytest.mark.parametrize(("role", "name"), [
    ("consumer", "group.id"), ("consumer", "group_id"), ("consumer", "enable.auto.commit"),
    ("consumer", "enable_auto_commit"), ("consumer", "auto_offset_reset"),
    ("consumer", "isolation.level"), ("consumer", "isolation_level"),
    ("consumer", "group_instance_id"), ("consumer", "enable.auto.offset.store"),
    ("producer", "transactional.id"), ("producer", "transactional_id"),
    ("producer", "enable.idempotence"), ("producer", "enable_idempotence"), ("producer", "acks"),
    ("producer", "max_in_flight_requests_per_connection"), ("producer", "linger.ms"),
    ("producer", "sasl.password"), ("consumer", "sasl_plain_password"), ("producer", "ssl_cafile"),
    ("consumer", "bootstrap_servers"), ("producer", "Security.Protocol"),
    ("consumer", "partition_assignment_strategy"), ("consumer", "group.protocol"),
    ("consumer", "max_poll_records"),
])
def test_options_the_service_owns_are_refused_in_both_spellings(
    tmp_path: Path, role: str, name: str
) -> None:
    path = _toml(tmp_path, f'[kafka.{role}_options]\n"{name}" = "x"\n')
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    message = str(info.value)
    assert f"kafka.{role}_options" in message and name in message


def test_every_denied_name_is_refused_in_snake_case_too() -> None:
    for role, names in DENIED.items():
        for dotted in names:
            for name in (dotted, dotted.replace(".", "_")):
                with pytest.raises(ValueError, match="^" + name.replace(".", r"\.")):
                    check_options(role, {name: 1})  # type: ignore[arg-type]


def test_producer_only_options_are_allowed_for_a_consumer_and_back() -> None:
    check_options("consumer", {"compression.type": "lz4"})
    check_options("producer", {"fetch.max.bytes": 1})


def test_bare_dotted_key_nested_value_and_duplicates_are_explained(tmp_path: Path) -> None:
    path = _toml(tmp_path, "[kafka.consumer_options]\nfetch.max.bytes = 1\n")
    with pytest.raises(SettingsError, match="quote a dotted option name"):
        load_settings(path, env={})
    with pytest.raises(ValueError, match="given twice"):
        check_options("consumer", {"fetch.max.bytes": 1, "fetch_max_bytes": 2})
    with pytest.raises(ValueError, match="expected a string, number or boolean"):
        check_options("producer", {"batch_size": [1, 2]})
