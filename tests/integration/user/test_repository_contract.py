"""One contract for every `UserRepository`: SQLite, Postgres and the in-memory fake.

The abstract class holds the tests; each subclass only says how to make a repository.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade_async
from authbus.user.domain import AuditEntry, Role, User, UserChanges, UserFilter
from authbus.user.errors import RoleExists, RoleNotFound, UsernameTaken
from authbus.user.memory_repository import InMemoryUserRepository
from authbus.user.repository import UserRepository
from authbus.user.sql_repository import SqlUserRepository

T0 = datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC)


def user(name: str, **kw: object) -> User:
    return User.new(name, "$argon2id$fake", now=T0, **kw)  # type: ignore[arg-type]


def role(name: str, *perms: str) -> Role:
    return Role(name=name, created_at=T0, updated_at=T0, permissions=frozenset(perms))


def audit(action: str, target: str = "t") -> AuditEntry:
    return AuditEntry(at=T0, actor="admin", action=action, target_type="user", target_id=target)


class RepositoryContract:
    """Behaviour every `UserRepository` must show."""

    @pytest.fixture
    async def repo(self) -> AsyncIterator[UserRepository]:
        raise NotImplementedError
        yield

    async def test_add_and_get(self, repo: UserRepository) -> None:
        u = user("Alice", email="a@example.com", permissions=frozenset({"x:y"}))
        await repo.add_user(u)
        got = await repo.get_user(u.id)
        assert got == u
        assert got is not None and got.created_at == T0 and got.created_at.tzinfo is not None
        assert await repo.get_user(uuid.uuid4()) is None

    async def test_find_ignores_case(self, repo: UserRepository) -> None:
        u = user("Alice")
        await repo.add_user(u)
        for name in ("alice", "ALICE", "Alice"):
            found = await repo.find_user(name)
            assert found is not None and found.id == u.id and found.username == "Alice"
        assert await repo.find_user("bob") is None

    async def test_username_clash_ignoring_case(self, repo: UserRepository) -> None:
        await repo.add_user(user("Alice"), audit=audit("first"))
        with pytest.raises(UsernameTaken):
            await repo.add_user(user("alice"), audit=audit("second"))
        assert [a.action for a in await repo.list_audit(before=None, limit=10)] == ["first"]

    async def test_unknown_role_writes_nothing(self, repo: UserRepository) -> None:
        u = user("alice", roles=frozenset({"ghost"}))
        with pytest.raises(RoleNotFound):
            await repo.add_user(u, audit=audit("x"))
        assert await repo.get_user(u.id) is None
        assert await repo.list_audit(before=None, limit=10) == []

    async def test_update_fields(self, repo: UserRepository) -> None:
        await repo.add_role(role("ops", "events:read"))
        u = user("alice", email="a@example.com", permissions=frozenset({"a:b"}))
        await repo.add_user(u)
        later = T0 + timedelta(hours=1)
        got = await repo.update_user(
            u.id,
            UserChanges(
                updated_at=later,
                disabled=True,
                password_hash="new-hash",
                last_login_at=later,
                permissions=frozenset({"c:d", "e:f"}),
                roles=frozenset({"ops"}),
            ),
            audit=audit("updated"),
        )
        assert got is not None
        assert got.disabled and got.password_hash == "new-hash" and got.email == "a@example.com"
        assert got.last_login_at == later and got.updated_at == later and got.created_at == T0
        assert got.permissions == {"c:d", "e:f"} and got.roles == {"ops"}
        assert await repo.get_user(u.id) == got
        cleared = await repo.update_user(u.id, UserChanges(updated_at=later, clear_email=True))
        assert cleared is not None and cleared.email is None and cleared.roles == {"ops"}

    async def test_update_unknown_user_or_role(self, repo: UserRepository) -> None:
        assert await repo.update_user(uuid.uuid4(), UserChanges(updated_at=T0)) is None
        u = user("alice")
        await repo.add_user(u)
        with pytest.raises(RoleNotFound):
            await repo.update_user(
                u.id, UserChanges(updated_at=T0, roles=frozenset({"ghost"}), disabled=True)
            )
        again = await repo.get_user(u.id)
        assert again is not None and not again.disabled

    async def test_delete_user(self, repo: UserRepository) -> None:
        await repo.add_role(role("ops", "events:read"))
        u = user("alice", permissions=frozenset({"a:b"}), roles=frozenset({"ops"}))
        await repo.add_user(u)
        assert await repo.delete_user(u.id, audit=audit("deleted"))
        assert await repo.get_user(u.id) is None
        assert not await repo.delete_user(u.id, audit=audit("again"))
        assert [a.action for a in await repo.list_audit(before=None, limit=10)] == ["deleted"]
        # The name is free again.
        await repo.add_user(user("ALICE"))

    async def test_list_pages_and_filters(self, repo: UserRepository) -> None:
        await repo.add_role(role("ops", "events:read"))
        for name in ["dave", "Carol", "bob", "alice", "al_x", "alfa"]:
            await repo.add_user(
                user(
                    name,
                    permissions=frozenset({"events:read"}) if name == "bob" else frozenset(),
                    roles=frozenset({"ops"}) if name == "dave" else frozenset(),
                )
            )
        every = UserFilter()
        first = await repo.list_users(where=every, after=None, limit=3)
        assert [u.username for u in first] == ["al_x", "alfa", "alice"]
        rest = await repo.list_users(where=every, after="alice", limit=10)
        assert [u.username for u in rest] == ["bob", "Carol", "dave"]
        # '_' is a literal in the prefix, not a LIKE wildcard.
        pre = await repo.list_users(where=UserFilter(username_prefix="AL_"), after=None, limit=10)
        assert [u.username for u in pre] == ["al_x"]
        exact = await repo.list_users(where=UserFilter(username="CAROL"), after=None, limit=10)
        assert [u.username for u in exact] == ["Carol"]
        perm = await repo.list_users(
            where=UserFilter(permission="events:read"), after=None, limit=10
        )
        assert [u.username for u in perm] == ["bob", "dave"]
        carol = await repo.find_user("carol")
        assert carol is not None
        await repo.update_user(carol.id, UserChanges(updated_at=T0, disabled=True))
        dis = await repo.list_users(where=UserFilter(disabled=True), after=None, limit=10)
        assert [u.username for u in dis] == ["Carol"]

    async def test_roles(self, repo: UserRepository) -> None:
        await repo.add_role(role("ops", "events:read", "events:admin"), audit=audit("r1", "ops"))
        await repo.add_role(role("billing"))
        with pytest.raises(RoleExists):
            await repo.add_role(role("ops"))
        assert [r.name for r in await repo.list_roles()] == ["billing", "ops"]
        got = await repo.get_roles(["ops", "ghost"])
        assert len(got) == 1 and got[0].permissions == {"events:read", "events:admin"}
        changed = Role(
            name="ops",
            created_at=T0,
            updated_at=T0 + timedelta(minutes=1),
            description="operators",
            permissions=frozenset({"x:y"}),
        )
        assert await repo.update_role(changed)
        assert (await repo.get_roles(["ops"]))[0] == changed
        assert not await repo.update_role(role("ghost"))

    async def test_deleting_a_role_removes_it_from_members(self, repo: UserRepository) -> None:
        await repo.add_role(role("ops", "events:read"))
        u = user("alice", roles=frozenset({"ops"}))
        await repo.add_user(u)
        assert await repo.delete_role("ops")
        assert not await repo.delete_role("ops")
        got = await repo.get_user(u.id)
        assert got is not None and got.roles == set()

    async def test_audit_is_newest_first_and_pages(self, repo: UserRepository) -> None:
        for i in range(5):
            await repo.add_role(role(f"r{i}"), audit=audit(f"a{i}", f"r{i}"))
        page = await repo.list_audit(before=None, limit=2)
        assert [a.action for a in page] == ["a4", "a3"]
        assert page[1].id is not None
        older = await repo.list_audit(before=page[1].id, limit=10)
        assert [a.action for a in older] == ["a2", "a1", "a0"]
        only = await repo.list_audit(before=None, limit=10, target_id="r1")
        assert [a.action for a in only] == ["a1"]

    async def test_ping(self, repo: UserRepository) -> None:
        await repo.ping()

    async def test_every_audited_change_leaves_its_domain_events(
        self, repo: UserRepository
    ) -> None:
        await repo.add_role(role("ops", "events:read"))  # no audit entry, no event
        u = user("alice", email="a@example.com", permissions=frozenset({"a:b"}))
        await repo.add_user(u, audit=audit("user.created", str(u.id)))
        later = T0 + timedelta(minutes=1)
        await repo.update_user(
            u.id,
            UserChanges(updated_at=later, disabled=True, roles=frozenset({"ops"})),
            audit=audit("user.changed", str(u.id)),
        )
        await repo.update_user(
            u.id,
            UserChanges(updated_at=later, disabled=False, password_hash="new", clear_email=True),
            audit=audit("user.changed", str(u.id)),
        )
        # A login's time stamp is audited but announces nothing; unaudited writes neither.
        await repo.update_user(
            u.id, UserChanges(updated_at=later, last_login_at=later), audit=audit("login")
        )
        await repo.update_user(u.id, UserChanges(updated_at=later, password_hash="rehashed"))
        await repo.delete_user(u.id, audit=audit("user.deleted", str(u.id)))
        pending = await repo.pending_events(20)
        assert [(e.channel, e.type, e.aggregate_type, e.aggregate_id) for e in pending] == [
            ("users", t, "user", str(u.id))
            for t in [
                "user.created",
                "user.disabled",
                "user.permissions_changed",
                "user.updated",
                "user.enabled",
                "user.deleted",
            ]
        ]
        ident = {"id": str(u.id), "username": "alice", "actor": "admin"}
        assert [e.data for e in pending] == [
            {
                **ident,
                "email": "a@example.com",
                "disabled": False,
                "permissions": ["a:b"],
                "roles": [],
            },
            ident,
            {
                **ident,
                "permissions": ["a:b", "events:read"],
                "added": ["events:read"],
                "removed": [],
                "roles": ["ops"],
            },
            {**ident, "email": None, "changed": ["email", "password"]},
            ident,
            ident,
        ]
        assert len({e.event_id for e in pending}) == len(pending)
        assert [a.action for a in await repo.list_audit(before=None, limit=10)][1] == "login"

    async def test_a_role_change_announces_each_member_it_changes(
        self, repo: UserRepository
    ) -> None:
        await repo.add_role(role("ops", "events:read"))
        await repo.add_role(role("other", "x:y"))
        bob = user("bob", roles=frozenset({"ops"}))
        alice = user("alice", roles=frozenset({"ops", "other"}))
        # Holds the new permission already: its effective permissions do not change.
        carol = user("carol", permissions=frozenset({"events:admin"}), roles=frozenset({"ops"}))
        outsider = user("dave", roles=frozenset({"other"}))
        for u in (bob, alice, carol, outsider):
            await repo.add_user(u)
        changed = Role(
            name="ops",
            created_at=T0,
            updated_at=T0,
            permissions=frozenset({"events:read", "events:admin"}),
        )
        assert await repo.update_role(changed, audit=audit("role.updated", "ops"))
        pending = await repo.pending_events(20)
        assert [(e.type, e.aggregate_id) for e in pending] == [
            ("role.updated", "ops"),
            ("user.permissions_changed", str(alice.id)),
            ("user.permissions_changed", str(bob.id)),
        ]
        assert pending[0].data == {
            "name": "ops",
            "description": "",
            "permissions": ["events:admin", "events:read"],
            "actor": "admin",
        }
        assert pending[1].data["permissions"] == ["events:admin", "events:read", "x:y"]
        assert pending[2].data == {
            "id": str(bob.id),
            "username": "bob",
            "permissions": ["events:admin", "events:read"],
            "added": ["events:admin"],
            "removed": [],
            "roles": ["ops"],
            "actor": "admin",
        }
        await repo.mark_published([e.id for e in pending], T0)

        assert await repo.delete_role("ops", audit=audit("role.deleted", "ops"))
        pending = await repo.pending_events(20)
        assert [(e.type, e.aggregate_id) for e in pending] == [
            ("role.deleted", "ops"),
            ("user.permissions_changed", str(alice.id)),
            ("user.permissions_changed", str(bob.id)),
            ("user.permissions_changed", str(carol.id)),
        ]
        assert pending[0].data == {"name": "ops", "actor": "admin"}
        assert pending[2].data["permissions"] == [] and pending[2].data["roles"] == []
        assert pending[3].data["permissions"] == ["events:admin"]
        assert pending[3].data["removed"] == ["events:read"]

    async def test_a_failed_change_leaves_no_event(self, repo: UserRepository) -> None:
        u = user("alice")
        await repo.add_user(u)
        with pytest.raises(RoleNotFound):
            await repo.update_user(
                u.id,
                UserChanges(updated_at=T0, roles=frozenset({"ghost"}), disabled=True),
                audit=audit("x"),
            )
        with pytest.raises(UsernameTaken):
            await repo.add_user(user("ALICE"), audit=audit("y"))
        assert not await repo.update_role(role("ghost"), audit=audit("z"))
        assert not await repo.delete_role("ghost", audit=audit("z"))
        assert await repo.pending_events(10) == []
        assert await repo.list_audit(before=None, limit=10) == []

    async def test_outbox_events_leave_pending_when_published_or_given_up(
        self, repo: UserRepository
    ) -> None:
        for i in range(3):
            await repo.add_role(role(f"r{i}"), audit=audit("role.created", f"r{i}"))
        first, second, third = await repo.pending_events(10)
        await repo.mark_published([first.id], T0)
        await repo.mark_failed(second.id, "503 unavailable", T0, final=False)
        await repo.mark_failed(third.id, "422 refused", T0, final=True)
        pending = await repo.pending_events(10)
        assert [(e.id, e.attempts) for e in pending] == [(second.id, 1)]
        assert len(await repo.pending_events(0)) == 0

    async def test_published_events_are_pruned_after_retention(self, repo: UserRepository) -> None:
        for i in range(3):
            await repo.add_role(role(f"r{i}"), audit=audit("role.created", f"r{i}"))
        first, second, third = await repo.pending_events(10)
        await repo.mark_published([first.id], T0)
        await repo.mark_published([second.id], T0 + timedelta(days=2))
        assert await repo.prune_outbox(T0 + timedelta(days=1)) == 1
        # Pending events are never pruned, whatever their age.
        assert await repo.prune_outbox(T0 + timedelta(days=30)) == 1
        assert [e.id for e in await repo.pending_events(10)] == [third.id]


class TestSqlRepository(RepositoryContract):
    """SQLite, and Postgres when AUTHBUS_TEST_POSTGRES_URL is set (`database_url`)."""

    @pytest.fixture
    async def repo(self, database_url: str) -> AsyncIterator[UserRepository]:
        await upgrade_async(database_url, "user")
        engine = create_engine(database_url)
        yield SqlUserRepository(create_sessionmaker(engine))
        await engine.dispose()


class TestInMemoryRepository(RepositoryContract):
    @pytest.fixture
    async def repo(self) -> AsyncIterator[UserRepository]:
        yield InMemoryUserRepository()
