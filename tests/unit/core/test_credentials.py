"""Preset secrets: placeholders and short values are refused before anything starts."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from authbus.core.credentials import (
    MIN_PRESET_LENGTH,
    WeakSecret,
    check_presets,
    generate_secret,
)
from authbus.core.settings import Settings, TokenSettings, UserSettings


def test_generated_presets_are_accepted() -> None:
    settings = Settings(
        admin_password=SecretStr(generate_secret()),
        admin_client_secret=SecretStr(generate_secret()),
        token=TokenSettings(
            client_secret=SecretStr(generate_secret()), master_key=SecretStr(generate_secret())
        ),
    )
    check_presets(settings)


def test_nothing_preset_is_fine_the_secrets_are_then_generated() -> None:
    check_presets(Settings())


def test_a_placeholder_is_refused_naming_the_variable() -> None:
    settings = Settings(token=TokenSettings(master_key=SecretStr("change-me")))
    with pytest.raises(WeakSecret) as caught:
        check_presets(settings)
    message = str(caught.value)
    assert "AUTHBUS_TOKEN__MASTER_KEY is still the placeholder from .env.example" in message
    assert "secrets.token_urlsafe(32)" in message  # says how to make a real one


def test_a_short_secret_is_refused_naming_the_variable_not_the_value() -> None:
    short = "x" * (MIN_PRESET_LENGTH - 1)
    settings = Settings(
        admin_password=SecretStr(generate_secret()),
        user=UserSettings(client_secret=SecretStr(short)),
        admin_client_secret=SecretStr("Change-Me-Admin"),
    )
    with pytest.raises(WeakSecret) as caught:
        check_presets(settings)
    message = str(caught.value)
    assert f"AUTHBUS_USER__CLIENT_SECRET has {len(short)} characters" in message
    assert "AUTHBUS_ADMIN_CLIENT_SECRET is still the placeholder" in message
    assert "AUTHBUS_ADMIN_PASSWORD" not in message
    assert short not in message


def test_a_placeholder_database_password_is_refused() -> None:
    url = "postgresql+asyncpg://authbus:change-me@postgres:5432/authbus_user"
    with pytest.raises(WeakSecret, match="password in AUTHBUS_USER__DATABASE_URL"):
        check_presets(Settings(user=UserSettings(database_url=url)))
    # A real one passes, whatever its length (the database's own rules apply to it).
    check_presets(
        Settings(user=UserSettings(database_url="postgresql+asyncpg://u:pw@db/authbus_user"))
    )
