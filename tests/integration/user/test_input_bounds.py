"""Numbers beyond the database, flags that are not booleans, and lists too long for the
events that announce them: a 422 naming the field, nothing written, on SQLite and Postgres.
The largest change the API allows still reaches the event service's log."""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from authbus.core.migrate import upgrade_async
from authbus.core.settings import EventSettings, Settings
from authbus.user.app import create_app
from authbus.user.domain import OutboxEvent
from authbus.user.outbox import EventServicePublisher
from authbus.user.policy import (
    MAX_EFFECTIVE_PERMISSIONS,
    MAX_ROLE_PERMISSIONS,
    MAX_USER_PERMISSIONS,
    MAX_USER_ROLES,
)
from authbus.user.service import UserService
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter


def long_permissions(prefix: str, count: int, length: int = 200) -> list[str]:
    """`count` distinct permissions of `length` characters (the most the policy allows)."""
    return [f"{prefix}:{i:04d}:".ljust(length, "x") for i in range(count)]


async def written(app: FastAPI) -> tuple[int, int]:
    """(audit entries, outbox events) so far."""
    service: UserService = app.state.user_service
    audit = await service.list_audit(limit=200)
    return len(audit), len(await service.repository.pending_events(1000))


async def make_user(client: httpx.AsyncClient, admin: dict[str, str]) -> str:
    r = await client.post(
        "/v1/users", json={"username": "alice", "password": PASSWORD}, headers=admin
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


# ------------------------------------------------------------------ integers and booleans


@pytest.mark.parametrize("before", ["9223372036854775808", "99999999999999999999999"])
async def test_an_audit_position_beyond_the_database_is_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], before: str
) -> None:
    r = await client.get(f"/v1/audit?before={before}", headers=admin)
    assert r.status_code == 422, r.text
    assert "before" in r.json()["error_description"]


async def test_the_largest_audit_position_pages_from_the_newest(
    client: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    await make_user(client, admin)
    r = await client.get(f"/v1/audit?before={2**63 - 1}", headers=admin)
    assert r.status_code == 200, r.text
    assert [e["action"] for e in r.json()["items"]] == ["user.created"]


@pytest.mark.parametrize("flag", ["yes", "true", "false", 1, 0, "1", None], ids=repr)
async def test_disabled_must_be_a_json_boolean(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI, flag: Any
) -> None:
    user_id = await make_user(client, admin)
    before = await written(app)

    r = await client.patch(f"/v1/users/{user_id}", json={"disabled": flag}, headers=admin)

    if flag is None:  # null: "leave it as it is"
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 422, r.text
        assert "disabled" in r.json()["error_description"]
    assert (await client.get(f"/v1/users/{user_id}", headers=admin)).json()["disabled"] is False
    assert await written(app) == before


async def test_disabled_true_disables(client: httpx.AsyncClient, admin: dict[str, str]) -> None:
    user_id = await make_user(client, admin)
    r = await client.patch(f"/v1/users/{user_id}", json={"disabled": True}, headers=admin)
    assert r.status_code == 200 and r.json()["disabled"] is True


# ------------------------------------------------------------------ lists and their events


async def test_more_direct_permissions_than_an_event_can_carry_are_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    user_id = await make_user(client, admin)
    before = await written(app)

    huge = await client.put(
        f"/v1/users/{user_id}/permissions",
        json={"permissions": long_permissions("p", 1000, 192)},
        headers=admin,
    )
    one_over = await client.put(
        f"/v1/users/{user_id}/permissions",
        json={"permissions": long_permissions("p", MAX_USER_PERMISSIONS + 1)},
        headers=admin,
    )
    created = await client.post(
        "/v1/users",
        json={
            "username": "bob",
            "password": PASSWORD,
            "permissions": long_permissions("p", MAX_USER_PERMISSIONS + 1),
        },
        headers=admin,
    )

    for r in (huge, one_over, created):
        assert r.status_code == 422, r.text
        assert r.json()["error_description"].startswith("permissions:")
        assert str(MAX_USER_PERMISSIONS) in r.json()["error_description"]
    user = (await client.get(f"/v1/users/{user_id}", headers=admin)).json()
    assert user["permissions"] == []
    assert await written(app) == before


async def test_more_roles_than_an_event_can_carry_are_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    user_id = await make_user(client, admin)
    names = [f"role-{i}" for i in range(MAX_USER_ROLES + 1)]
    for name in names:
        await client.post("/v1/roles", json={"name": name}, headers=admin)
    before = await written(app)

    r = await client.put(f"/v1/users/{user_id}/roles", json={"roles": names}, headers=admin)

    assert r.status_code == 422, r.text
    assert r.json()["error_description"].startswith("roles:")
    assert str(MAX_USER_ROLES) in r.json()["error_description"]
    assert await written(app) == before


async def test_more_role_permissions_than_an_event_can_carry_are_a_422(
    client: httpx.AsyncClient, admin: dict[str, str], app: FastAPI
) -> None:
    too_many = long_permissions("r", MAX_ROLE_PERMISSIONS + 1)
    await client.post("/v1/roles", json={"name": "clerks"}, headers=admin)
    before = await written(app)

    made = await client.post(
        "/v1/roles", json={"name": "desk", "permissions": too_many}, headers=admin
    )
    patched = await client.patch("/v1/roles/clerks", json={"permissions": too_many}, headers=admin)

    for r in (made, patched):
        assert r.status_code == 422, r.text
        assert r.json()["error_description"].startswith("permissions:")
        assert str(MAX_ROLE_PERMISSIONS) in r.json()["error_description"]
    assert (await client.get("/v1/roles/clerks", headers=admin)).json()["permissions"] == []
    assert await written(app) == before


async def test_the_bounds_are_in_the_api_schema(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    for model, field, bound in [
        ("PermissionsIn", "permissions", MAX_USER_PERMISSIONS),
        ("RolesIn", "roles", MAX_USER_ROLES),
        ("UserCreate", "permissions", MAX_USER_PERMISSIONS),
        ("UserCreate", "roles", MAX_USER_ROLES),
        ("RoleCreate", "permissions", MAX_ROLE_PERMISSIONS),
    ]:
        prop = schemas[model]["properties"][field]
        assert prop["maxItems"] == bound
        assert f"at most {bound}" in prop["description"]
        assert f"at most {MAX_EFFECTIVE_PERMISSIONS} permissions in all" in prop["description"]


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


async def test_the_largest_permission_change_reaches_the_event_log(
    settings: Settings, minter: TokenMinter, admin: dict[str, str], tmp_path: Path
) -> None:
    """Every bound at its limit, with permissions of the longest kind, then a change of all
    roles at once: the largest `user.permissions_changed` the API can cause, published to an
    event service with its default body limit."""
    from authbus.event.app import create_app as create_event_app

    event_url = f"sqlite+aiosqlite:///{tmp_path / 'event.db'}"
    await upgrade_async(event_url, "event")
    event_settings = settings.model_copy(
        update={"event": EventSettings(database_url=event_url), "redis_url": None}
    )
    assert event_settings.event.max_payload_bytes == 1024 * 1024
    event_app = create_event_app(event_settings, token_validator=minter.validator())
    token = minter.mint("user-service", ["events:publish"], client_id="user-service")
    reader = {"Authorization": f"Bearer {minter.mint('reader', ['events:read'])}"}
    refused: list[BaseException] = []

    async with event_app.router.lifespan_context(event_app):
        publisher = EventServicePublisher(
            "http://event.test", _Bearer(token), transport=httpx.ASGITransport(app=event_app)
        )

        async def publish(event: OutboxEvent) -> None:
            try:
                await publisher(event)
            except BaseException as exc:
                refused.append(exc)
                raise

        user_app = create_app(settings, token_validator=minter.validator(), event_publisher=publish)
        async with user_app.router.lifespan_context(user_app):
            transport = httpx.ASGITransport(app=user_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
                for group in ("a", "b"):
                    for i in range(MAX_USER_ROLES):
                        r = await c.post(
                            "/v1/roles",
                            json={
                                "name": f"{group}-role-{i}",
                                "permissions": long_permissions(
                                    f"{group}{i}", MAX_ROLE_PERMISSIONS
                                ),
                            },
                            headers=admin,
                        )
                        assert r.status_code == 201, r.text
                r = await c.post(
                    "/v1/users",
                    json={
                        "username": "alice",
                        "password": PASSWORD,
                        "permissions": long_permissions("direct", MAX_USER_PERMISSIONS),
                        "roles": [f"a-role-{i}" for i in range(MAX_USER_ROLES)],
                    },
                    headers=admin,
                )
                assert r.status_code == 201, r.text
                assert len(r.json()["effective_permissions"]) == MAX_EFFECTIVE_PERMISSIONS
                swapped = await c.put(
                    f"/v1/users/{r.json()['id']}/roles",
                    json={"roles": [f"b-role-{i}" for i in range(MAX_USER_ROLES)]},
                    headers=admin,
                )
                assert swapped.status_code == 200, swapped.text
            relay = user_app.state.outbox_relay
            for _ in range(500):
                if not await relay.repository.pending_events(100):
                    break
                await asyncio.sleep(0.02)
        await publisher.aclose()

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=event_app), base_url="http://event.test"
        ) as ev:
            page = (await ev.get("/v1/channels/users/events?limit=1000", headers=reader)).json()

    assert refused == []
    changed = [e for e in page["events"] if e["type"] == "user.permissions_changed"]
    assert len(changed) == 1
    data = changed[0]["data"]
    assert len(data["permissions"]) == MAX_EFFECTIVE_PERMISSIONS
    assert len(data["added"]) == len(data["removed"]) == MAX_USER_ROLES * MAX_ROLE_PERMISSIONS
