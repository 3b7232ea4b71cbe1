"""What a user and a role may hold is bounded, whichever way a change comes (API, CLI,
import), so no event announcing it can exceed the event service's body limit."""

from __future__ import annotations

import json

import pytest

from authbus.user.domain import User, UserState, user_events, utcnow
from authbus.user.errors import InvalidField, TooManyPermissions, TooManyRoles
from authbus.user.importing import ImportRecord
from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.policy import (
    MAX_EFFECTIVE_PERMISSIONS,
    MAX_ROLE_PERMISSIONS,
    MAX_USER_PERMISSIONS,
    MAX_USER_ROLES,
    PERMISSION_MAX,
)
from authbus.user.service import UserService

PW = "correct horse battery staple"
BCRYPT = "$2b$12$" + "a" * 53
EVENT_BODY_LIMIT = 1024 * 1024  # the event service's default (AUTHBUS_EVENT__MAX_PAYLOAD_BYTES)


def perms(prefix: str, count: int) -> list[str]:
    return [f"{prefix}:{i:04d}:".ljust(PERMISSION_MAX, "x") for i in range(count)]


def test_the_largest_possible_user_event_is_well_under_the_event_body_limit() -> None:
    """An upper bound: a user at the most permissions there can be, changed to as many
    others, with the longest username, roles and actor (more than one change can do)."""
    now = utcnow()
    user = User.new(
        "u" * 64,
        "h",
        now=now,
        roles=frozenset(f"r{i}".ljust(64, "x") for i in range(MAX_USER_ROLES)),
    )
    before = UserState(user, frozenset(perms("old", MAX_EFFECTIVE_PERMISSIONS)))
    after = UserState(user, frozenset(perms("new", MAX_EFFECTIVE_PERMISSIONS)))
    [event] = user_events(before, after, actor="x" * 200)
    body = {
        "type": event.type,
        "data": event.data,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
    }
    # As the relay sends it (httpx: compact separators, UTF-8).
    size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    assert size < 0.75 * EVENT_BODY_LIMIT, size


async def test_granting_beyond_the_bound_is_refused(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    made = await service.create_user(
        username="alice", password=PW, actor="admin", permissions=perms("a", MAX_USER_PERMISSIONS)
    )
    outbox = len(repo.outbox)
    with pytest.raises(TooManyPermissions, match=f"at most {MAX_USER_PERMISSIONS} direct"):
        await service.grant_permissions(made.user.id, ["one:more"], actor="admin")
    assert (await service.get_user(made.user.id)).user.permissions == made.user.permissions
    assert len(repo.outbox) == outbox


async def test_too_many_roles_are_refused_at_creation_and_change(service: UserService) -> None:
    names = [f"role-{i}" for i in range(MAX_USER_ROLES + 1)]
    for name in names:
        await service.create_role(name, actor="admin")
    with pytest.raises(TooManyRoles, match=f"at most {MAX_USER_ROLES} roles"):
        await service.create_user(username="alice", password=PW, actor="admin", roles=names)
    made = await service.create_user(username="bob", password=PW, actor="admin")
    with pytest.raises(TooManyRoles):
        await service.set_roles(made.user.id, names, actor="admin")
    assert (await service.get_user(made.user.id)).user.roles == frozenset()


async def test_too_many_role_permissions_are_refused(service: UserService) -> None:
    too_many = perms("r", MAX_ROLE_PERMISSIONS + 1)
    with pytest.raises(TooManyPermissions, match=f"a role holds at most {MAX_ROLE_PERMISSIONS}"):
        await service.create_role("clerks", actor="admin", permissions=too_many)
    await service.create_role("clerks", actor="admin", permissions=too_many[:-1])
    with pytest.raises(TooManyPermissions):
        await service.update_role("clerks", actor="admin", permissions=too_many)
    assert len((await service.get_role("clerks")).permissions) == MAX_ROLE_PERMISSIONS


async def test_an_import_row_beyond_the_bounds_fails_alone(service: UserService) -> None:
    rows = [
        ImportRecord(
            1, "alice", BCRYPT, permissions=frozenset(perms("a", MAX_USER_PERMISSIONS + 1))
        ),
        ImportRecord(2, "bob", BCRYPT, roles=frozenset(f"r{i}" for i in range(MAX_USER_ROLES + 1))),
        ImportRecord(3, "carol", BCRYPT, permissions=frozenset(perms("c", MAX_USER_PERMISSIONS))),
    ]
    report = await service.import_users(rows, actor="admin")
    assert [(row, name) for row, name, _ in report.failed] == [(1, "alice"), (2, "bob")]
    assert f"at most {MAX_USER_PERMISSIONS}" in report.failed[0][2]
    assert f"at most {MAX_USER_ROLES}" in report.failed[1][2]
    assert report.created == [(3, "carol")]


@pytest.mark.parametrize("before", [0, -1, 2**63])
async def test_an_audit_position_out_of_range_is_refused(service: UserService, before: int) -> None:
    with pytest.raises(InvalidField, match=r"^before: "):
        await service.list_audit(before=before)


async def test_the_bounds_add_up_to_the_effective_bound() -> None:
    assert MAX_EFFECTIVE_PERMISSIONS == MAX_USER_PERMISSIONS + MAX_USER_ROLES * MAX_ROLE_PERMISSIONS
