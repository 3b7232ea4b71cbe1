"""The user service's rules, against the in-memory repository."""

from __future__ import annotations

import asyncio
import uuid

import bcrypt
import pytest

from authbus.core.errors import DependencyUnavailable
from authbus.user.domain import UserFilter
from authbus.user.errors import (
    IncorrectPassword,
    InsufficientRights,
    InvalidCredentials,
    InvalidCursor,
    InvalidPermission,
    InvalidUsername,
    RoleExists,
    RoleNotFound,
    TooManyAttempts,
    UserDisabled,
    UsernameTaken,
    UserNotFound,
    WeakPassword,
)
from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.passwords import PasswordHasher
from authbus.user.service import UserPage, UserProfile, UserService
from tests.unit.user.conftest import FakeClock

PW = "correct horse battery staple"


async def make(service: UserService, name: str = "alice", **kw: object) -> UserProfile:
    return await service.create_user(username=name, password=PW, actor="admin", **kw)  # type: ignore[arg-type]


# -- creating --------------------------------------------------------------------------------


async def test_created_user_has_a_hash_not_the_password(service: UserService) -> None:
    p = await make(service, email="alice@example.com", permissions=["orders:read"])
    assert p.user.username == "alice"
    assert p.user.password_hash.startswith("$argon2id$")
    assert PW not in p.user.password_hash
    assert p.effective_permissions == {"orders:read"}
    assert (await service.get_user(p.user.id)).user == p.user


async def test_usernames_are_unique_ignoring_case(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    await make(service, "Alice")
    with pytest.raises(UsernameTaken):
        await make(service, "alice")
    assert len(repo.users) == 1


@pytest.mark.parametrize(
    ("username", "password", "error"),
    [
        ("al", PW, InvalidUsername),
        ("-alice", PW, InvalidUsername),
        ("alice", "short", WeakPassword),
        ("alice", "password123", WeakPassword),
        ("alice12345", "alice12345", WeakPassword),
    ],
)
async def test_invalid_input_writes_nothing(
    service: UserService,
    repo: InMemoryUserRepository,
    username: str,
    password: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error):
        await service.create_user(username=username, password=password, actor="admin")
    assert repo.users == {} and repo.audit == []


async def test_invalid_permission_is_rejected(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    with pytest.raises(InvalidPermission):
        await make(service, permissions=["has space"])
    assert repo.users == {}


async def test_unknown_role_is_rejected(service: UserService, repo: InMemoryUserRepository) -> None:
    with pytest.raises(RoleNotFound) as exc:
        await make(service, roles=["ghosts"])
    assert exc.value.names == ["ghosts"]
    assert repo.users == {}


async def test_get_unknown_user(service: UserService) -> None:
    with pytest.raises(UserNotFound):
        await service.get_user(uuid.uuid4())


# -- permissions and roles -------------------------------------------------------------------


async def test_effective_permissions_are_direct_plus_roles(service: UserService) -> None:
    await service.create_role("sales", actor="admin", permissions=["orders:read", "crm:read"])
    p = await make(service, permissions=["orders:write"], roles=["sales"])
    assert p.effective_permissions == {"orders:write", "orders:read", "crm:read"}
    assert await service.effective_permissions(p.user) == p.effective_permissions


async def test_changing_a_role_changes_members_rights(service: UserService) -> None:
    await service.create_role("sales", actor="admin", permissions=["orders:read"])
    p = await make(service, roles=["sales"])
    await service.update_role("sales", actor="admin", permissions=["orders:read", "crm:write"])
    assert (await service.get_user(p.user.id)).effective_permissions == {"orders:read", "crm:write"}
    await service.delete_role("sales", actor="admin")
    again = await service.get_user(p.user.id)
    assert again.effective_permissions == set() and again.user.roles == set()


async def test_role_name_clash_and_unknown_role(service: UserService) -> None:
    await service.create_role("sales", actor="admin")
    with pytest.raises(RoleExists):
        await service.create_role("sales", actor="admin")
    with pytest.raises(RoleNotFound):
        await service.update_role("nope", actor="admin", description="x")
    with pytest.raises(RoleNotFound):
        await service.delete_role("nope", actor="admin")


async def test_set_permissions_and_roles_replace(service: UserService) -> None:
    await service.create_role("ops", actor="admin", permissions=["events:read"])
    p = await make(service, permissions=["a:b"])
    p = await service.set_permissions(p.user.id, ["c:d"], actor="admin")
    assert p.user.permissions == {"c:d"}
    p = await service.set_roles(p.user.id, ["ops"], actor="admin")
    assert p.effective_permissions == {"c:d", "events:read"}
    with pytest.raises(UserNotFound):
        await service.set_permissions(uuid.uuid4(), ["x:y"], actor="admin")


# -- verifying credentials -------------------------------------------------------------------


async def test_right_password_and_scopes_give_the_user(service: UserService) -> None:
    p = await make(service, permissions=["orders:read"])
    got = await service.verify_credentials("ALICE", PW, ["orders:read"], "10.0.0.1")
    assert got.user.id == p.user.id
    assert got.user.last_login_at is not None


async def test_unknown_user_and_wrong_password_fail_alike(service: UserService) -> None:
    await make(service)
    with pytest.raises(InvalidCredentials) as unknown:
        await service.verify_credentials("nobody", PW)
    with pytest.raises(InvalidCredentials) as wrong:
        await service.verify_credentials("alice", "not the password")
    assert unknown.value.body() == wrong.value.body()


async def test_unknown_user_still_costs_a_hash_verification(
    repo: InMemoryUserRepository, throttle: object
) -> None:
    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        async def verify_dummy(self, password: str) -> None:
            calls.append(password)
            await super().verify_dummy(password)

    hasher = CountingHasher(memory_kib=1024, time_cost=1, parallelism=1)
    service = UserService(repo, hasher, throttle=throttle)  # type: ignore[arg-type]
    with pytest.raises(InvalidCredentials):
        await service.verify_credentials("nobody", PW)
    assert calls == [PW]


async def test_disabled_user_is_told_only_after_the_right_password(service: UserService) -> None:
    p = await make(service)
    await service.update_user(p.user.id, actor="admin", disabled=True)
    with pytest.raises(InvalidCredentials):
        await service.verify_credentials("alice", "wrong password!")
    with pytest.raises(UserDisabled):
        await service.verify_credentials("alice", PW)


async def test_missing_scopes_are_listed(service: UserService) -> None:
    await make(service, permissions=["orders:read"])
    with pytest.raises(InsufficientRights) as exc:
        await service.verify_credentials("alice", PW, ["orders:read", "orders:write", "a:b"])
    assert exc.value.missing == ["a:b", "orders:write"]
    assert exc.value.body()["missing_scopes"] == ["a:b", "orders:write"]


async def test_bcrypt_hash_is_upgraded_at_login(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    p = await make(service)
    from dataclasses import replace

    legacy = bcrypt.hashpw(PW.encode(), bcrypt.gensalt(4)).decode()
    repo.users[p.user.id] = replace(p.user, password_hash=legacy)
    await service.verify_credentials("alice", PW)
    assert repo.users[p.user.id].password_hash.startswith("$argon2id$")


async def test_failed_attempts_are_throttled_then_reset(
    service: UserService, clock: FakeClock
) -> None:
    await make(service)
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await service.verify_credentials("alice", "wrong password!", client_address="1.2.3.4")
    with pytest.raises(TooManyAttempts) as exc:
        # Even the right password waits: the lock is checked before the password.
        await service.verify_credentials("alice", PW, client_address="1.2.3.4")
    assert exc.value.retry_after == 1 and exc.value.headers["Retry-After"] == "1"
    # The owner elsewhere is not locked out.
    await service.verify_credentials("alice", PW, client_address="5.6.7.8")
    clock.advance(1)
    await service.verify_credentials("alice", PW, client_address="1.2.3.4")
    with pytest.raises(InvalidCredentials):
        await service.verify_credentials("alice", "wrong password!", client_address="1.2.3.4")


async def test_a_burst_of_parallel_guesses_is_cut_off(service: UserService) -> None:
    await make(service)
    results = await asyncio.gather(
        *(
            service.verify_credentials("alice", f"wrong guess {i}", client_address="1.2.3.4")
            for i in range(20)
        ),
        return_exceptions=True,
    )
    kinds = [type(r).__name__ for r in results]
    # Three free attempts run; the rest are refused before any password work.
    assert kinds.count("InvalidCredentials") == 3
    assert kinds.count("TooManyAttempts") == 17


async def test_an_outage_is_not_counted_as_a_failed_attempt(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    await make(service)
    repo.available = False
    for _ in range(10):
        with pytest.raises(DependencyUnavailable):
            await service.verify_credentials("alice", PW, client_address="1.2.3.4")
    repo.available = True
    await service.verify_credentials("alice", PW, client_address="1.2.3.4")


async def test_unknown_usernames_are_throttled_too(service: UserService) -> None:
    for _ in range(4):
        with pytest.raises(InvalidCredentials):
            await service.verify_credentials("nobody", PW, client_address="1.2.3.4")
    with pytest.raises(TooManyAttempts):
        await service.verify_credentials("nobody", PW, client_address="1.2.3.4")


# -- updating, deleting, passwords -----------------------------------------------------------


async def test_update_email_and_disabled(service: UserService) -> None:
    p = await make(service, email="a@example.com")
    p = await service.update_user(p.user.id, actor="admin", email="b@example.com")
    assert p.user.email == "b@example.com"
    p = await service.update_user(p.user.id, actor="admin", clear_email=True, disabled=True)
    assert p.user.email is None and p.user.disabled


async def test_empty_update_writes_nothing(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    p = await make(service)
    assert (await service.update_user(p.user.id, actor="admin")).user == p.user
    assert len(repo.audit) == 1
    with pytest.raises(UserNotFound):
        await service.update_user(uuid.uuid4(), actor="admin")


async def test_delete_user(service: UserService) -> None:
    p = await make(service)
    await service.delete_user(p.user.id, actor="admin")
    with pytest.raises(UserNotFound):
        await service.delete_user(p.user.id, actor="admin")
    with pytest.raises(InvalidCredentials):
        await service.verify_credentials("alice", PW)


async def test_change_password_needs_the_current_one(service: UserService) -> None:
    p = await make(service)
    with pytest.raises(IncorrectPassword):
        await service.change_password(p.user.id, "wrong password!", "new long passphrase")
    with pytest.raises(WeakPassword):
        await service.change_password(p.user.id, PW, "password1")
    await service.change_password(p.user.id, PW, "new long passphrase")
    await service.verify_credentials("alice", "new long passphrase")
    with pytest.raises(InvalidCredentials):
        await service.verify_credentials("alice", PW)


async def test_admin_password_reset(service: UserService) -> None:
    p = await make(service)
    await service.reset_password(p.user.id, "reset by the admin", actor="admin")
    await service.verify_credentials("alice", "reset by the admin")
    with pytest.raises(UserNotFound):
        await service.reset_password(uuid.uuid4(), "reset by the admin", actor="admin")


async def test_changes_are_audited_without_secrets(service: UserService) -> None:
    p = await make(service)
    await service.reset_password(p.user.id, "reset by the admin", actor="root")
    entries = await service.list_audit()
    assert [e.action for e in entries] == ["user.password_reset", "user.created"]
    assert entries[0].actor == "root" and entries[0].target_id == str(p.user.id)
    assert "reset by the admin" not in repr(entries) and PW not in repr(entries)


# -- listing ---------------------------------------------------------------------------------


async def test_pages_follow_username_order(service: UserService) -> None:
    for name in ["dave", "Carol", "bob", "alice", "erin"]:
        await make(service, name)
    page = await service.list_users(limit=2)
    seen = [p.user.username for p in page.items]
    while page.next_cursor:
        page = await service.list_users(limit=2, cursor=page.next_cursor)
        seen += [p.user.username for p in page.items]
    assert seen == ["alice", "bob", "Carol", "dave", "erin"]


async def test_filters(service: UserService) -> None:
    await service.create_role("ops", actor="admin", permissions=["events:read"])
    a = await make(service, "alice", permissions=["events:read"])
    await make(service, "alan", roles=["ops"])
    await make(service, "bob")
    await service.update_user(a.user.id, actor="admin", disabled=True)

    def names(page: UserPage) -> list[str]:
        return [p.user.username for p in page.items]

    assert names(await service.list_users(where=UserFilter(username_prefix="AL"))) == [
        "alan",
        "alice",
    ]
    assert names(await service.list_users(where=UserFilter(permission="events:read"))) == [
        "alan",
        "alice",
    ]
    assert names(await service.list_users(where=UserFilter(disabled=False))) == ["alan", "bob"]


async def test_bad_cursor(service: UserService) -> None:
    with pytest.raises(InvalidCursor):
        await service.list_users(cursor="%%%")
    with pytest.raises(InvalidCursor):
        await service.list_users(cursor="bm90LWEtY3Vyc29y")


async def test_outage_is_a_dependency_error(
    service: UserService, repo: InMemoryUserRepository
) -> None:
    repo.available = False
    with pytest.raises(DependencyUnavailable):
        await service.verify_credentials("alice", PW)
