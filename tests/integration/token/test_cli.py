"""`authbus client ...` and `authbus keys ...` against a migrated token database."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade
from authbus.token.cli import client_app, keys_app
from authbus.token.clients import ClientRepository, hash_secret
from authbus.token.keys import ensure_signing_key, load_key_ring

M1, M2, NOT_M1 = (
    "tC03HJHhubeyO6NIRNKcHWOTlaZgDHnV7ifNBhbfBfI",
    "wqFxgvbU8joeSahP4yqoYZpyIkBf52_1_WznExVvrKQ",
    "yqYGVX4-dtfT0Dr25nQg-DXaQRI3GnxySbIsFguwDkM",
)


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> dict[str, str]:
    upgrade(database_url, "token")
    return {"AUTHBUS_DATA_DIR": str(tmp_path), "AUTHBUS_TOKEN__DATABASE_URL": database_url}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def secret_hash_of(database_url: str, client_id: str) -> str | None:
    async def read() -> str | None:
        engine = create_engine(database_url)
        try:
            client = await ClientRepository(create_sessionmaker(engine)).get(client_id)
            return client.secret_hash if client else None
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_client_create_shows_secret_once_and_list_never(
    runner: CliRunner, env: dict[str, str]
) -> None:
    args = ["create", "shop", "--redirect-uri", "https://shop.example.com/cb"]
    args += ["--scope", "orders:read orders:write", "--scope", "events:read", "--json"]
    created = runner.invoke(client_app, args, env=env)
    assert created.exit_code == 0, created.output
    body = json.loads(created.stdout)
    assert body["client_id"] == "shop"
    assert body["scopes"] == ["orders:read", "orders:write", "events:read"]
    secret = body["client_secret"]
    assert secret_hash_of(env["AUTHBUS_TOKEN__DATABASE_URL"], "shop") == hash_secret(secret)

    listed = runner.invoke(client_app, ["list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [c["client_id"] for c in json.loads(listed.stdout)["clients"]] == ["shop"]
    assert secret not in listed.output
    plain = runner.invoke(client_app, ["list"], env=env)
    assert "shop\tconfidential" in plain.stdout


def test_public_client_has_no_secret(runner: CliRunner, env: dict[str, str]) -> None:
    args = ["create", "spa", "--type", "public", "--redirect-uri", "http://127.0.0.1:5000/cb"]
    result = runner.invoke(client_app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "client_secret" not in result.output


@pytest.mark.parametrize(
    "uri",
    [
        "http://shop.example.com/cb",  # http only for loopback
        "https://shop.example.com/cb#frag",
        "/relative/cb",
        "https://user@shop.example.com/cb",
    ],
)
def test_redirect_uris_are_validated_like_the_api(
    runner: CliRunner, env: dict[str, str], uri: str
) -> None:
    result = runner.invoke(client_app, ["create", "bad", "--redirect-uri", uri], env=env)
    assert result.exit_code == 2
    assert "redirect" in result.output.lower()
    listed = runner.invoke(client_app, ["list", "--json"], env=env)
    assert json.loads(listed.stdout)["clients"] == []


def test_duplicate_client_is_refused(runner: CliRunner, env: dict[str, str]) -> None:
    args = ["create", "svc", "--grant-type", "client_credentials"]
    assert runner.invoke(client_app, args, env=env).exit_code == 0
    again = runner.invoke(client_app, args, env=env)
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_rotate_secret_replaces_the_old_one(runner: CliRunner, env: dict[str, str]) -> None:
    created = runner.invoke(
        client_app, ["create", "svc", "--grant-type", "client_credentials", "--json"], env=env
    )
    old = json.loads(created.stdout)["client_secret"]
    rotated = runner.invoke(client_app, ["rotate-secret", "svc", "--json"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = json.loads(rotated.stdout)["client_secret"]
    assert new != old
    assert secret_hash_of(env["AUTHBUS_TOKEN__DATABASE_URL"], "svc") == hash_secret(new)
    missing = runner.invoke(client_app, ["rotate-secret", "nobody"], env=env)
    assert missing.exit_code == 1


def test_delete_asks_then_deletes(runner: CliRunner, env: dict[str, str]) -> None:
    runner.invoke(client_app, ["create", "svc", "--grant-type", "client_credentials"], env=env)
    kept = runner.invoke(client_app, ["delete", "svc"], env=env, input="n\n")
    assert kept.exit_code == 1  # aborted
    assert secret_hash_of(env["AUTHBUS_TOKEN__DATABASE_URL"], "svc") is not None
    gone = runner.invoke(client_app, ["delete", "svc"], env=env, input="y\n")
    assert gone.exit_code == 0, gone.output
    assert secret_hash_of(env["AUTHBUS_TOKEN__DATABASE_URL"], "svc") is None
    assert runner.invoke(client_app, ["delete", "svc", "--yes"], env=env).exit_code == 1


def test_unmigrated_database_gives_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    env = {"AUTHBUS_TOKEN__DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    result = runner.invoke(client_app, ["list"], env=env)
    assert result.exit_code == 1
    assert "authbus migrate" in result.output


def keys_of(database_url: str, master_key: str | None = None) -> list[tuple[str, bool]]:
    async def read() -> list[tuple[str, bool]]:
        engine = create_engine(database_url)
        try:
            sessionmaker = create_sessionmaker(engine)
            await ensure_signing_key(sessionmaker, "ES256", master_key)
            ring = await load_key_ring(sessionmaker, master_key)
            return [(k.kid, k.retired_at is None) for k in ring.keys]
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_keys_rotate_and_list(runner: CliRunner, env: dict[str, str]) -> None:
    [(first, active)] = keys_of(env["AUTHBUS_TOKEN__DATABASE_URL"])
    assert active
    rotated = runner.invoke(keys_app, ["rotate", "--alg", "EdDSA"], env=env)
    assert rotated.exit_code == 0, rotated.output
    listed = json.loads(runner.invoke(keys_app, ["list", "--json"], env=env).stdout)["keys"]
    assert (listed[0]["kid"], listed[0]["state"]) == (first, "retired")
    assert listed[1]["alg"] == "EdDSA" and listed[1]["state"] == "active"
    assert listed[1]["kid"] in rotated.stdout
    assert listed[0]["not_after"] is not None
    plain = runner.invoke(keys_app, ["list"], env=env)
    assert f"{first}\tES256\tretired\tplain" in plain.stdout


def test_keys_reseal_encrypts_and_needs_the_right_old_key(
    runner: CliRunner, env: dict[str, str]
) -> None:
    url = env["AUTHBUS_TOKEN__DATABASE_URL"]
    [(kid, _)] = keys_of(url)
    sealed = runner.invoke(keys_app, ["reseal", "--new", M1], env=env)
    assert sealed.exit_code == 0, sealed.output
    assert keys_of(url, M1) == [(kid, True)]
    listed = json.loads(runner.invoke(keys_app, ["list", "--json"], env=env).stdout)["keys"]
    assert listed[0]["encrypted"] is True

    wrong = runner.invoke(keys_app, ["reseal", "--old", NOT_M1, "--new", M2], env=env)
    assert wrong.exit_code == 1
    assert keys_of(url, M1) == [(kid, True)]  # unchanged
    # The configured master key is the default --old; the new one may come from a prompt.
    prompted = runner.invoke(
        keys_app, ["reseal"], env={**env, "AUTHBUS_TOKEN__MASTER_KEY": M1}, input=f"{M2}\n{M2}\n"
    )
    assert prompted.exit_code == 0, prompted.output
    assert keys_of(url, M2) == [(kid, True)]
    # Rotating with an encrypted ring needs the master key to seal the new key.
    refused = runner.invoke(keys_app, ["rotate"], env=env)
    assert refused.exit_code == 1
    assert "no master key is configured" in refused.output
    assert len(keys_of(url, M2)) == 1  # nothing rotated
    env2 = {**env, "AUTHBUS_TOKEN__MASTER_KEY": M2}
    assert runner.invoke(keys_app, ["rotate"], env=env2).exit_code == 0
    assert len(keys_of(url, M2)) == 2
