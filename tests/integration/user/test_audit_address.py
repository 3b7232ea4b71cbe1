"""Audit entries record from where a change came: the address of the request that made it."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from authbus.user.service import UserService
from tests.integration.user.conftest import PASSWORD


async def test_admin_changes_record_the_client_address(app: FastAPI, admin: dict[str, str]) -> None:
    transport = httpx.ASGITransport(app=app, client=("10.9.8.7", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as client:
        made = await client.post(
            "/v1/users", json={"username": "alice", "password": PASSWORD}, headers=admin
        )
        assert made.status_code == 201, made.text
        user_id = made.json()["id"]
        changed = await client.put(
            f"/v1/users/{user_id}/permissions", json={"permissions": ["orders:read"]}, headers=admin
        )
        assert changed.status_code == 200, changed.text
        disabled = await client.patch(
            f"/v1/users/{user_id}", json={"disabled": True}, headers=admin
        )
        assert disabled.status_code == 200, disabled.text

    service: UserService = app.state.user_service
    entries = await service.list_audit(limit=50, target_id=user_id)
    assert {e.action for e in entries} >= {"user.created", "user.permissions_set"}
    assert all(e.details.get("client_address") == "10.9.8.7" for e in entries), [
        (e.action, e.details) for e in entries
    ]


async def test_a_change_made_outside_a_request_records_no_address(app: FastAPI) -> None:
    service: UserService = app.state.user_service
    made = await service.create_user(username="bob", password=PASSWORD, actor="cli")
    [entry] = await service.list_audit(limit=5, target_id=str(made.user.id))
    assert "client_address" not in entry.details
