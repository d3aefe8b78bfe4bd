"""Settings: embedded defaults, TOML file, STREAM_LEARNER_* overrides, errors, frozenness."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest

from stream_learner.errors import SettingsError, StreamLearnerError
from stream_learner.settings import (
    ENV_PREFIX,
    SchemaSettings,
    Settings,
    load_settings,
)
from tests.support.service import ROOT

CONFIG = """
[service]
transport = "kafka"
batch_size = 250
log_level = "DEBUG"

[kafka]
bootstrap_servers = "broker-1:9092,broker-2:9092"
events_topic = "sensor-events"

[schema]
features = ""
key = "sensor_id"
label = "target"

[model]
name = "phishing"
version = 3
task = "classification"
metric = "metrics.LogLoss"
seed = 7

[[model.pipeline]]
step = "preprocessing.StandardScaler"

[[model.pipeline]]
step = "linear_model.LogisticRegression"
params = { optimizer = { step = "optim.SGD", params = { lr = 0.05 } } }

[limits]
max_features = 12
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "stream-learner.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def env(**values: str) -> dict[str, str]:
    """A fake environment: SECTION__KEY=value becomes STREAM_LEARNER_SECTION__KEY=value."""
    return {f"{ENV_PREFIX}{name}": value for name, value in values.items()}


# -- defaults ---------------------------------------------------------------------------


def test_defaults_are_the_embedded_default():
    s = load_settings(None, env={})
    assert s == Settings()
    assert s.service.transport == "local"
    assert s.local.input == "river:WaterFlow"
    assert s.local.output == "-"
    assert s.checkpoint.store == "none"
    assert s.metrics.enabled is False
    assert s.model.task == "regression"
    assert [step["step"] for step in s.model.pipeline] == [
        "preprocessing.StandardScaler",
        "linear_model.LinearRegression",
    ]
    assert s.schema_ == SchemaSettings()
    assert s.schema_.features == "features"


def test_unrelated_environment_variables_are_ignored():
    s = load_settings(
        None,
        env={
            "PATH": "/usr/bin",
            "STREAM_LEARNER_NO_DOUBLE_UNDERSCORE": "1",
            "OTHER_SERVICE__BATCH_SIZE": "3",
        },
    )
    assert s == Settings()


# -- TOML file ----------------------------------------------------------------------------


def test_toml_file_is_read(config_file):
    s = load_settings(config_file, env={})
    assert s.service.transport == "kafka"
    assert s.service.batch_size == 250
    assert s.service.log_level == "DEBUG"
    assert s.service.poll_timeout_ms == 100  # not in the file: default kept
    assert s.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert s.kafka.events_topic == "sensor-events"
    assert s.kafka.group_id == "stream-learner"
    assert s.schema_.features == ""
    assert s.schema_.key == "sensor_id"
    assert s.schema_.label == "target"
    assert s.schema_.id == "id"
    assert s.model.task == "classification"
    assert s.model.version == 3
    assert s.model.seed == 7
    assert s.model.pipeline[1] == {
        "step": "linear_model.LogisticRegression",
        "params": {"optimizer": {"step": "optim.SGD", "params": {"lr": 0.05}}},
    }
    assert s.limits.max_features == 12


def test_path_may_be_a_string(config_file):
    assert load_settings(str(config_file), env={}) == load_settings(config_file, env={})


def test_missing_file_is_a_settings_error(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SettingsError, match="not found") as info:
        load_settings(missing, env={})
    assert str(missing) in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_invalid_toml_is_a_settings_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[service\nbatch_size = = 3\n", encoding="utf-8")
    with pytest.raises(SettingsError, match="not valid TOML") as info:
        load_settings(path, env={})
    assert str(path) in str(info.value)


def test_settings_error_is_a_stream_learner_error():
    assert issubclass(SettingsError, StreamLearnerError)


# -- environment overrides ----------------------------------------------------------------


def test_env_integer_override():
    s = load_settings(None, env=env(SERVICE__BATCH_SIZE="64"))
    assert s.service.batch_size == 64
    assert isinstance(s.service.batch_size, int)


def test_env_boolean_override():
    s = load_settings(None, env=env(LOCAL__QUIET="true", METRICS__ENABLED="true"))
    assert s.local.quiet is True
    assert s.metrics.enabled is True


def test_env_plain_string_override():
    s = load_settings(None, env=env(KAFKA__BOOTSTRAP_SERVERS="kafka-0.internal:9093"))
    assert s.kafka.bootstrap_servers == "kafka-0.internal:9093"


def test_env_quoted_toml_string_keeps_digits_as_a_string():
    s = load_settings(None, env=env(KAFKA__GROUP_ID='"1234"'))
    assert s.kafka.group_id == "1234"


def test_env_float_and_array_values_are_toml_typed():
    s = load_settings(
        None,
        env=env(
            SERVICE__IDLE_TIMEOUT_S="2.5",
            MODEL__PIPELINE='[{step = "linear_model.LinearRegression"}]',
        ),
    )
    assert s.service.idle_timeout_s == 2.5
    assert s.model.pipeline == ({"step": "linear_model.LinearRegression"},)


def test_env_empty_string_sets_flat_schema():
    s = load_settings(None, env=env(SCHEMA__FEATURES='""'))
    assert s.schema_.features == ""


def test_env_overrides_the_file(config_file):
    s = load_settings(config_file, env=env(SERVICE__BATCH_SIZE="9", SCHEMA__KEY="device"))
    assert s.service.batch_size == 9
    assert s.schema_.key == "device"
    # the rest of the file still applies
    assert s.service.transport == "kafka"
    assert s.schema_.label == "target"


def test_env_key_names_are_case_insensitive_after_prefix():
    s = load_settings(None, env={"STREAM_LEARNER_service__Batch_Size": "77"})
    assert s.service.batch_size == 77


def test_overrides_win_over_env_and_file(config_file):
    s = load_settings(
        config_file,
        env=env(SERVICE__BATCH_SIZE="9", SERVICE__MAX_EVENTS="5"),
        overrides={"service": {"batch_size": 3}},
    )
    assert s.service.batch_size == 3
    assert s.service.max_events == 5  # env value not in overrides: kept
    assert s.service.transport == "kafka"  # file value: kept


# -- errors -------------------------------------------------------------------------------


def test_unknown_key_names_the_key_and_suggests_the_close_match():
    with pytest.raises(SettingsError) as info:
        load_settings(None, env=env(SERVICE__BATCH_SIZ="64"))
    msg = str(info.value)
    assert "service.batch_siz" in msg
    assert "unknown key" in msg
    assert "did you mean 'batch_size'?" in msg
    assert "(environment)" in msg


def test_unknown_key_in_aliased_schema_section_suggests_a_match(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[schema]\nlabell = "y"\n', encoding="utf-8")
    with pytest.raises(SettingsError) as info:
        load_settings(path, env={})
    msg = str(info.value)
    assert "schema.labell: unknown key (did you mean 'label'?)" in msg
    assert str(path) in msg


def test_unknown_section_suggests_a_section():
    with pytest.raises(SettingsError, match=r"servise: unknown key \(did you mean 'service'\?\)"):
        load_settings(None, overrides={"servise": {"batch_size": 1}}, env={})


def test_unknown_key_without_close_match_has_no_suggestion():
    with pytest.raises(SettingsError) as info:
        load_settings(None, env=env(SERVICE__ZZZZZZZZ="1"))
    msg = str(info.value)
    assert "service.zzzzzzzz: unknown key" in msg
    assert "did you mean" not in msg


def test_wrong_type_names_the_key_and_the_value():
    with pytest.raises(SettingsError) as info:
        load_settings(None, env=env(SERVICE__BATCH_SIZE="lots"))
    msg = str(info.value)
    assert "service.batch_size" in msg
    assert "(got 'lots')" in msg


def test_out_of_range_value_names_the_key_and_the_value():
    with pytest.raises(SettingsError) as info:
        load_settings(None, env=env(METRICS__PORT="70000"))
    msg = str(info.value)
    assert "metrics.port" in msg
    assert "70000" in msg


def test_literal_value_outside_choices_is_refused(config_file):
    with pytest.raises(SettingsError) as info:
        load_settings(config_file, env=env(SERVICE__TRANSPORT="carrier-pigeon"))
    msg = str(info.value)
    assert "service.transport" in msg
    assert "carrier-pigeon" in msg
    assert f"({config_file} + environment)" in msg


def test_every_wrong_key_is_reported_at_once():
    with pytest.raises(SettingsError) as info:
        load_settings(None, env=env(SERVICE__BATCH_SIZE="0", KAFKA__GROUPID="g"))
    msg = str(info.value)
    assert "service.batch_size" in msg
    assert "kafka.groupid: unknown key (did you mean 'group_id'?)" in msg


def test_model_needs_a_pipeline_or_a_factory():
    with pytest.raises(SettingsError, match=r"model\.pipeline"):
        load_settings(None, env=env(MODEL__PIPELINE="[]"))
    s = load_settings(None, env=env(MODEL__PIPELINE="[]", MODEL__FACTORY="pkg.mod:make"))
    assert s.model.factory == "pkg.mod:make"


def test_numeric_looking_env_value_is_read_as_toml_for_a_string_key():
    # Documented rule: values that parse as TOML are TOML-typed, so an unquoted
    # number is an integer and a string field refuses it (quote it: '"1234"').
    with pytest.raises(SettingsError, match=r"kafka.group_id: .*\(got 1234\)"):
        load_settings(None, env=env(KAFKA__GROUP_ID="1234"))


# -- frozen -------------------------------------------------------------------------------


def test_settings_are_frozen():
    s = load_settings(None, env={})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.service.batch_size = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        s.model = s.model  # type: ignore[misc]
    assert s.service.batch_size == 500


def test_sections_forbid_unknown_attributes_at_construction():
    with pytest.raises(pydantic.ValidationError):
        SchemaSettings(feature="")  # type: ignore[call-arg]


def test_conflicting_env_names_give_settings_error():
    with pytest.raises(SettingsError):
        load_settings(None, env=env(SERVICE__BATCH_SIZE="64", SERVICE__BATCH_SIZE__EXTRA="1"))


def test_boolean_is_not_accepted_for_an_integer_key():
    with pytest.raises(SettingsError, match=r"service\.batch_size"):
        load_settings(None, env=env(SERVICE__BATCH_SIZE="true"))


def test_pipeline_steps_are_immutable_too():
    def fresh() -> Settings:
        steps = [{"step": "linear_model.LinearRegression", "params": {"intercept_lr": 0.1}}]
        return load_settings(None, env={}, overrides={"model": {"pipeline": steps}})

    s = fresh()
    with pytest.raises(TypeError):
        s.model.pipeline[0]["params"]["intercept_lr"] = 99.0
    assert hash(s) == hash(fresh())
    defaults = load_settings(None, env={})
    with pytest.raises(TypeError):
        defaults.model.pipeline[1]["params"]["intercept_lr"] = 99.0
    assert hash(defaults) == hash(pickle.loads(pickle.dumps(defaults)))  # as in checkpoints


def test_frozen_tables_hash_alike_after_a_pickle_crosses_processes(tmp_path: Path) -> None:
    # checkpoints carry the settings to another process, where strings hash differently
    s = load_settings(None, env={})
    hash(s)  # caches each table's hash in this process
    blob = tmp_path / "settings.pickle"
    blob.write_bytes(pickle.dumps(s))
    code = (
        "import pickle, sys\n"
        "from stream_learner.settings import load_settings\n"
        "old = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "fresh = load_settings(None, env={})\n"
        "print(old == fresh and hash(old) == hash(fresh) and len({old, fresh}) == 1)\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, str(blob)], env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"
