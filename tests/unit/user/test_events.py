"""The domain events the user service announces on `users`, as other services see them."""

from __future__ import annotations

import uuid

import pytest

from authbus.common._envelope import Event
from authbus.token.consistency import revoked_user_id
from authbus.user.domain import OutboxEvent, utcnow
from authbus.user.errors import RoleNotFound, WeakPassword
from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.service import UserProfile, UserService

PW = "correct horse battery staple"


async def make(service: UserService, name: str = "alice", **kw: object) -> UserProfile:
    return await service.create_user(username=name, password=PW, actor="admin", **kw)  # type: ignore[arg-type]


async def drain(repo: InMemoryUserRepository) -> list[OutboxEvent]:
    """The pending events, marked published so the next drain sees only new ones."""
    events = await repo.pending_events(1000)
    await repo.mark_published([e.id for e in events], utcnow())
    return events


def types(events: list[OutboxEvent]) -> list[tuple[str, str]]:
    return [(e.type, e.aggregate_id) for e in events]


async def test_direct_permission_changes_carry_the_new_effective_set(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    await service.create_role("sales", actor="admin", permissions=["orders:read"])
    p = await make(service, roles=["sales"])
    uid = str(p.user.id)
    await drain(repo)
    await service.grant_permissions(p.user.id, ["crm:write"], actor="admin")
    (event,) = await drain(repo)
    assert (event.type, event.aggregate_id) == ("user.permissions_changed", uid)
    assert event.data == {
        "id": uid,
        "username": "alice",
        "permissions": ["crm:write", "orders:read"],
        "added": ["crm:write"],
        "removed": [],
        "roles": ["sales"],
        "actor": "admin",
    }
    await service.set_roles(p.user.id, [], actor="admin")
    (event,) = await drain(repo)
    assert event.data["permissions"] == ["crm:write"] and event.data["removed"] == ["orders:read"]


async def test_changes_that_leave_the_effective_set_alone_announce_nothing(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    await service.create_role("sales", actor="admin", permissions=["orders:read"])
    p = await make(service, permissions=["orders:read"])
    await drain(repo)
    # Granted already: no write at all.
    await service.grant_permissions(p.user.id, ["orders:read"], actor="admin")
    # A role that adds nothing new: audited, not announced.
    await service.set_roles(p.user.id, ["sales"], actor="admin")
    assert await drain(repo) == []
    assert (await service.list_audit(limit=1))[0].action == "user.roles_set"


async def test_a_role_change_announces_every_member_whose_rights_move(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    await service.create_role("sales", actor="admin", permissions=["orders:read"])
    members = [await make(service, name, roles=["sales"]) for name in ("carol", "bob", "alice")]
    outsider = await make(service, "dave")
    await drain(repo)
    await service.update_role("sales", actor="admin", permissions=["crm:read"])
    events = await drain(repo)
    by_name = sorted(members, key=lambda m: m.user.username)
    assert types(events) == [("role.updated", "sales")] + [
        ("user.permissions_changed", str(m.user.id)) for m in by_name
    ]
    assert all(e.data["permissions"] == ["crm:read"] for e in events[1:])
    assert str(outsider.user.id) not in {e.aggregate_id for e in events}
    # A description change moves nobody's rights.
    await service.update_role("sales", actor="admin", description="the sales team")
    assert types(await drain(repo)) == [("role.updated", "sales")]
    await service.delete_role("sales", actor="admin")
    events = await drain(repo)
    assert types(events)[0] == ("role.deleted", "sales")
    assert [e.data["removed"] for e in events[1:]] == [["crm:read"]] * 3


async def test_account_changes_have_their_own_event_types(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    p = await make(service, email="a@example.com")
    uid = p.user.id
    await service.update_user(uid, actor="admin", disabled=True)
    await service.update_user(uid, actor="admin", disabled=False, email="new@example.com")
    await service.reset_password(uid, "reset by the admin", actor="admin")
    await service.change_password(uid, "reset by the admin", "changed by alice")
    await service.delete_user(uid, actor="admin")
    events = await drain(repo)
    assert [e.type for e in events] == [
        "user.created",
        "user.disabled",
        "user.updated",
        "user.enabled",
        "user.updated",
        "user.updated",
        "user.deleted",
    ]
    assert events[0].data["email"] == "a@example.com" and events[0].data["permissions"] == []
    assert events[2].data["changed"] == ["email"]
    assert events[4].data["changed"] == ["password"] and events[5].data["actor"] == str(uid)
    assert all(e.data["id"] == str(uid) and e.data["username"] == "alice" for e in events)


async def test_refused_changes_and_logins_announce_nothing(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    p = await make(service)
    await drain(repo)
    with pytest.raises(RoleNotFound):
        await service.set_roles(p.user.id, ["ghost"], actor="admin")
    with pytest.raises(WeakPassword):
        await service.reset_password(p.user.id, "short", actor="admin")
    await service.verify_credentials("alice", PW)
    assert await drain(repo) == []


@pytest.mark.parametrize(
    ("change", "revokes"),
    [
        ("disable", True),
        ("delete", True),
        ("revoke_permission", True),
        ("role_loses_permission", True),
        ("enable", False),
        ("email", False),
    ],
)
async def test_the_token_service_reads_our_events(
    service: UserService, repo: InMemoryUserRepository, change: str, revokes: bool
) -> None:
    """What `authbus.token.consistency` makes of each event the user service writes."""
    await service.create_role("sales", actor="admin", permissions=["orders:read"])
    p = await make(service, permissions=["crm:read"], roles=["sales"])
    uid = p.user.id
    if change == "enable":
        await service.update_user(uid, actor="admin", disabled=True)
    await drain(repo)
    match change:
        case "disable":
            await service.update_user(uid, actor="admin", disabled=True)
        case "enable":
            await service.update_user(uid, actor="admin", disabled=False)
        case "delete":
            await service.delete_user(uid, actor="admin")
        case "revoke_permission":
            await service.revoke_permissions(uid, ["crm:read"], actor="admin")
        case "role_loses_permission":
            await service.update_role("sales", actor="admin", permissions=[])
        case "email":
            await service.update_user(uid, actor="admin", email="a@example.com")
    revoked = {
        revoked_user_id(
            Event(
                id=str(uuid.uuid4()),
                position=e.id,
                channel=e.channel,
                type=e.type,
                data=e.data,
                aggregate_type=e.aggregate_type,
                aggregate_id=e.aggregate_id,
            )
        )
        for e in await drain(repo)
    } - {None}
    assert revoked == ({str(uid)} if revokes else set())
