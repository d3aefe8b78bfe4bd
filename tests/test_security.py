"""Security: Kafka SASL/SSL pass-through, secrets only from the environment, no eval."""

from __future__ import annotations

import logging
import urllib.request

import pytest

from stream_learner.errors import ModelConfigError, SettingsError
from stream_learner.metrics import Metrics, MetricsServer
from stream_learner.models import ModelSpec, resolve_class
from stream_learner.settings import KafkaSettings, ModelSettings, Settings, load_settings
from stream_learner.sources import kafka_client_options

SECRET = "pa55-w0rd-that-must-not-leak"


def test_plaintext_options_carry_no_security_settings() -> None:
    opts = kafka_client_options(KafkaSettings(bootstrap_servers="a:1,b:2"), {})
    assert opts == {
        "bootstrap_servers": ["a:1", "b:2"],
        "client_id": "stream-learner",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_options_are_passed_through_with_the_password_from_the_environment() -> None:
    k = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="svc-learner",
        sasl_password_env="KAFKA_PASSWORD",
        ssl_cafile="/etc/ssl/ca.pem",
        ssl_certfile="/etc/ssl/client.pem",
        ssl_keyfile="/etc/ssl/client.key",
        ssl_password_env="KAFKA_KEY_PASSWORD",
    )
    opts = kafka_client_options(k, {"KAFKA_PASSWORD": SECRET, "KAFKA_KEY_PASSWORD": "k3y"})
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-256"
    assert opts["sasl_plain_username"] == "svc-learner"
    assert opts["sasl_plain_password"] == SECRET
    assert opts["ssl_cafile"] == "/etc/ssl/ca.pem"
    assert opts["ssl_certfile"] == "/etc/ssl/client.pem"
    assert opts["ssl_keyfile"] == "/etc/ssl/client.key"
    assert opts["ssl_password"] == "k3y"


def test_the_password_comes_only_from_the_named_variable() -> None:
    k = KafkaSettings(sasl_mechanism="PLAIN", sasl_username="u", sasl_password_env="MY_PW")
    environ = {"MY_PW": SECRET, "KAFKA_PASSWORD": "other", "STREAM_LEARNER_KAFKA__X": "y"}
    assert kafka_client_options(k, environ)["sasl_plain_password"] == SECRET
    no_env = KafkaSettings(sasl_mechanism="PLAIN", sasl_username="u")
    assert "sasl_plain_password" not in kafka_client_options(no_env, environ)


def test_a_named_variable_that_is_not_set_is_a_settings_error_naming_it() -> None:
    k = KafkaSettings(sasl_mechanism="PLAIN", sasl_password_env="MISSING_PW")
    with pytest.raises(SettingsError, match=r"kafka\.sasl_password_env names .*'MISSING_PW'"):
        kafka_client_options(k, {})
    k = KafkaSettings(ssl_password_env="MISSING_KEY_PW")
    with pytest.raises(SettingsError, match=r"kafka\.ssl_password_env"):
        kafka_client_options(k, {})


def test_a_password_cannot_be_written_into_the_settings() -> None:
    with pytest.raises(SettingsError, match="did you mean 'sasl_password_env'"):
        load_settings(None, env={}, overrides={"kafka": {"sasl_password": SECRET}})


def test_settings_repr_and_log_lines_hold_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "STREAM_LEARNER_KAFKA__SASL_MECHANISM": "PLAIN",
        "STREAM_LEARNER_KAFKA__SASL_PASSWORD_ENV": "KAFKA_PASSWORD",
        "KAFKA_PASSWORD": SECRET,
    }
    settings = load_settings(None, env=environ)
    assert kafka_client_options(settings.kafka, environ)["sasl_plain_password"] == SECRET
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("stream_learner").info("settings: %s / %r", settings, settings)
    for text in (repr(settings), str(settings), settings.model_dump_json(), caplog.text):
        assert "KAFKA_PASSWORD" in text  # the settings name the variable...
        assert SECRET not in text  # ...never its value


# -- no eval of configuration -----------------------------------------------------------

REFUSED = [
    "os.system",
    "__import__",
    "builtins.eval",
    "subprocess.Popen",
    "bandit.base.Counter",  # River imports collections.Counter: not a River class
    "compose.Pipeline.__init__",
    "compose.__builtins__",
    ".os.Path",
    "compose..Pipeline",
    "linear_model.LinearRegression; import os",
    "__import__('os').system('true')",
    "utils.math.dot",
    "",
]


@pytest.mark.parametrize("path", REFUSED)
def test_pipeline_steps_resolve_only_river_classes(path: str) -> None:
    with pytest.raises(ModelConfigError):
        resolve_class(path)
    with pytest.raises(ModelConfigError):
        ModelSpec.from_settings(ModelSettings(pipeline=({"step": path},)))


def test_nested_step_parameters_are_resolved_the_same_way() -> None:
    step = {"step": "linear_model.LinearRegression", "params": {"optimizer": {"step": "os.system"}}}
    with pytest.raises(ModelConfigError, match=r"os\.system"):
        ModelSpec.from_settings(ModelSettings(pipeline=(step,)))


@pytest.mark.parametrize("metric", ["os.system", "metrics.base.Metric.__init__", "eval"])
def test_metric_names_resolve_only_river_metrics(metric: str) -> None:
    with pytest.raises(ModelConfigError):
        ModelSpec.from_settings(ModelSettings(metric=metric))


def test_a_factory_that_fails_is_a_configuration_error() -> None:
    with pytest.raises(ModelConfigError, match=r"model\.factory 'os:system' failed"):
        ModelSpec.from_settings(ModelSettings(factory="os:system"))
    with pytest.raises(ModelConfigError, match=r"not a River base\.Regressor"):
        ModelSpec.from_settings(ModelSettings(factory="os:getcwd"))


# -- metrics endpoint bind address ----------------------------------------------------


def test_metrics_endpoint_binds_to_loopback_by_default() -> None:
    settings = Settings()
    assert settings.metrics.host == "127.0.0.1"
    server = MetricsServer(Metrics(), settings.metrics.host, 0).start()
    try:
        assert server.host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            assert r.read() == b"ok\n"
    finally:
        server.close()


def test_metrics_endpoint_binds_to_the_configured_address() -> None:
    settings = load_settings(None, env={"STREAM_LEARNER_METRICS__HOST": "0.0.0.0"})
    server = MetricsServer(Metrics(), settings.metrics.host, 0).start()
    try:
        assert server.host == "0.0.0.0"
    finally:
        server.close()
