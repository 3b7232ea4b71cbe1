"""Settings: environment names, derived URLs, the generated reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from authbus.core.settings import ServiceSettings, Settings
from authbus.core.settings_reference import render

ROOT = Path(__file__).resolve().parents[3]


def test_the_committed_configuration_reference_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == render(), (
        "docs/configuration.md is stale: run `authbus config --reference > docs/configuration.md`"
    )


def test_every_setting_is_described() -> None:
    for model in (Settings, *ServiceSettings.__subclasses__()):
        for name, field in model.model_fields.items():
            if name not in ("user", "token", "event"):
                assert field.description, f"{model.__name__}.{name} has no description"


def test_nested_variables_and_urls_that_follow_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_TOKEN__PORT", "9182")
    monkeypatch.setenv("AUTHBUS_USER__DATABASE_URL", "postgresql+asyncpg://u@h/db")
    settings = Settings()
    assert settings.token.port == 9182
    assert settings.token_url == "http://127.0.0.1:9182"
    assert settings.issuer == "http://127.0.0.1:9182"
    assert settings.database_url("user") == "postgresql+asyncpg://u@h/db"
    assert settings.database_url("event").endswith("/var/event.db")


def test_an_explicit_url_and_issuer_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_TOKEN__PORT", "9182")
    monkeypatch.setenv("AUTHBUS_TOKEN_URL", "http://token:8082")
    monkeypatch.setenv("AUTHBUS_ISSUER_URL", "https://login.example.com/")
    settings = Settings()
    assert settings.token_url == "http://token:8082"
    assert settings.issuer == "https://login.example.com"


def test_secrets_are_masked_in_dumps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_TOKEN__CLIENT_SECRET", "s3cret-value")
    dumped = Settings().model_dump_json()
    assert "s3cret-value" not in dumped


def test_forwarded_allow_ips_takes_addresses_and_networks() -> None:
    assert Settings().forwarded_allow_ips is None
    assert Settings(forwarded_allow_ips="").forwarded_allow_ips is None
    value = Settings(forwarded_allow_ips=" 172.30.81.10, 10.0.0.0/8 ,::1").forwarded_allow_ips
    assert value == "172.30.81.10,10.0.0.0/8,::1"
    assert Settings(forwarded_allow_ips="*").forwarded_allow_ips == "*"


@pytest.mark.parametrize("value", ["gateway", "172.30.81.10,gateway", "10.0.0.0/33"])
def test_forwarded_allow_ips_refuses_what_is_not_an_address(value: str) -> None:
    # uvicorn would take a host name as a literal that never matches: trust nobody, silently.
    with pytest.raises(ValueError, match="not an IP address or network"):
        Settings(forwarded_allow_ips=value)


def test_each_service_has_a_body_limit() -> None:
    settings = Settings()
    assert settings.user.body_limit_bytes == settings.user.max_body_bytes == 1024 * 1024
    assert settings.token.body_limit_bytes == settings.token.max_body_bytes == 1024 * 1024
    # The event service keeps its own, older name.
    assert settings.event.body_limit_bytes == settings.event.max_payload_bytes == 1024 * 1024
