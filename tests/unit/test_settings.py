"""Settings: environment over YAML over defaults, and errors that name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from quietwire.keyagreement.settings import KeyAgreementSettings
from quietwire.relay.settings import RelaySettings
from quietwire.runtime.settings import SettingsError, load_settings
from quietwire.signaling.settings import SignalingSettings, UserAdminSettings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("QW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("QW_GRPC_INSECURE", "true")


@pytest.fixture
def cert_files(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "sip.pem", tmp_path / "sip.key"
    cert.write_text("not checked here")
    key.write_text("not checked here")
    return cert, key


def test_defaults() -> None:
    settings = load_settings(RelaySettings)
    assert settings.relay_port_min == 30000
    assert settings.grpc_port == 50053
    assert settings.grpc_tls is None


def test_environment_beats_yaml_beats_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "qw.yaml"
    config.write_text("grpc_port: 6000\nmetrics_port: 6001\nsip_domain: example.org\n")
    monkeypatch.setenv("QW_GRPC_PORT", "7000")
    settings = load_settings(KeyAgreementSettings, config)
    assert settings.grpc_port == 7000
    assert settings.metrics_port == 6001


def test_files_beat_yaml_and_the_environment_beats_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """QW_SECRETS_DIR: a file per setting, named like its variable (a mounted Secret)."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "QW_REDIS_PASSWORD").write_text("from-a-file\n")
    (secrets / "QW_METRICS_PORT").write_text("6100")
    (secrets / "QW_GRPC_PORT").write_text("6200")
    config = tmp_path / "qw.yaml"
    config.write_text("metrics_port: 6001\nredis_password: from-yaml\n")
    monkeypatch.setenv("QW_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("QW_GRPC_PORT", "7000")
    settings = load_settings(KeyAgreementSettings, config)
    assert settings.redis_password is not None
    assert settings.redis_password.get_secret_value() == "from-a-file"
    assert (settings.metrics_port, settings.grpc_port) == (6100, 7000)
    monkeypatch.setenv("QW_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="QW_SECRETS_DIR"):
        load_settings(KeyAgreementSettings)


@pytest.mark.parametrize(
    ("variable", "value", "cls"),
    [
        ("QW_SIP_PORT", "abc", SignalingSettings),
        ("QW_SIP_PORT", "70000", SignalingSettings),
        ("QW_GRPC_PORT", "-1", KeyAgreementSettings),
        ("QW_READY_FD", "1", RelaySettings),
        ("QW_READY_FD", "999999", RelaySettings),
        ("QW_METRICS_FD", "999999", SignalingSettings),
        ("QW_LOG_LEVEL", "loud", RelaySettings),
        ("QW_REDIS_URL", "http://example.org", RelaySettings),
        ("QW_RELAY_ADVERTISE", "not-an-ip", RelaySettings),
        ("QW_DRAIN_TIMEOUT", "-1", RelaySettings),
        ("QW_GRPC_BIND", "everywhere", RelaySettings),
        ("QW_SIP_MAX_TRANSACTIONS", "0", SignalingSettings),
        ("QW_SIP_MAX_TRANSACTIONS_PER_SOURCE", "0", SignalingSettings),
        ("QW_RECONCILE_EVERY", "0", KeyAgreementSettings),
        ("QW_RECONCILE_EVERY", "7200", KeyAgreementSettings),
    ],
)
def test_bad_value_names_the_setting(
    variable: str,
    value: str,
    cls: type[RelaySettings],
    monkeypatch: pytest.MonkeyPatch,
    cert_files: tuple[Path, Path],
) -> None:
    monkeypatch.setenv("QW_SIP_TLS_CERT", str(cert_files[0]))
    monkeypatch.setenv("QW_SIP_TLS_KEY", str(cert_files[1]))
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(cls)


def test_missing_required_file_is_named() -> None:
    with pytest.raises(SettingsError, match="QW_SIP_TLS_CERT") as caught:
        load_settings(SignalingSettings)
    assert "QW_SIP_TLS_KEY" in str(caught.value)


def test_grpc_tls_required_unless_insecure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QW_GRPC_INSECURE")
    with pytest.raises(SettingsError, match="QW_GRPC_TLS_CERT is required unless QW_GRPC_INSECURE"):
        load_settings(RelaySettings)


def test_relay_port_range_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QW_RELAY_PORT_MIN", "30001")
    with pytest.raises(SettingsError, match="QW_RELAY_PORT_MIN must be even"):
        load_settings(RelaySettings)
    monkeypatch.setenv("QW_RELAY_PORT_MIN", "30000")
    monkeypatch.setenv("QW_RELAY_PORT_MAX", "30001")
    with pytest.raises(SettingsError, match="at least two port pairs"):
        load_settings(RelaySettings)


def test_yaml_typo_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "qw.yaml"
    config.write_text("grpc_prot: 6000\n")
    with pytest.raises(SettingsError, match=r"unknown setting.*grpc_prot"):
        load_settings(RelaySettings, config)


@pytest.mark.parametrize("text", ["- a\n- b\n", "key: [unclosed\n"])
def test_yaml_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    config = tmp_path / "qw.yaml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=str(config)):
        load_settings(RelaySettings, config)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read config file"):
        load_settings(RelaySettings, tmp_path / "absent.yaml")


def test_yaml_values_of_other_services_are_allowed(tmp_path: Path) -> None:
    config = tmp_path / "qw.yaml"
    config.write_text("relay_port_min: 40000\nsip_domain: example.org\n")
    assert load_settings(UserAdminSettings, config).sip_domain == "example.org"


def test_redacted_hides_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QW_REDIS_URL", "redis://user:hunter22@redis.example:6379/0")
    monkeypatch.setenv("QW_REDIS_PASSWORD", "s3cret-pass")
    shown = str(load_settings(RelaySettings).redacted())
    assert "hunter22" not in shown
    assert "s3cret-pass" not in shown
    assert "redis://user:***@redis.example:6379/0" in shown
    assert "QW_RELAY_PORT_MIN" in shown


def test_secret_values_never_echoed_in_errors(tmp_path: Path) -> None:
    config = tmp_path / "qw.yaml"
    config.write_text("redis_password:\n  nested: topsecretvalue\n")
    with pytest.raises(SettingsError, match="QW_REDIS_PASSWORD") as caught:
        load_settings(RelaySettings, config)
    assert "topsecretvalue" not in str(caught.value)
