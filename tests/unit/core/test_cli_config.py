"""`authbus config`: the effective configuration, secrets masked."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from authbus.cli import cli


def test_config_masks_secrets_and_database_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHBUS_TOKEN__CLIENT_SECRET", "s3cret-value")
    monkeypatch.setenv("AUTHBUS_USER__DATABASE_URL", "postgresql+asyncpg://svc:pw123@db/users")
    monkeypatch.setenv("AUTHBUS_REDIS_URL", "redis://:redispw@cache:6379/0")
    result = CliRunner().invoke(cli, ["config"])
    assert result.exit_code == 0, result.output
    assert "s3cret-value" not in result.output
    assert "pw123" not in result.output and "redispw" not in result.output
    data = json.loads(result.output)
    assert data["user"]["database_url"] == "postgresql+asyncpg://svc:***@db/users"
    assert data["token"]["client_secret"] == "**********"
