"""Persistence of users, roles, the audit log and the outbox: the `UserRepository` port.

Two implementations pass the same contract suite
(tests/integration/user/test_repository_contract.py): `SqlUserRepository` (SQLite and
Postgres, `authbus.user.sql_repository`) and `InMemoryUserRepository` (the fake for unit
tests, `authbus.user.memory_repository`). Every audited write commits in one transaction
with its audit line and the domain events it causes (`authbus.user.domain.user_events`;
for a role change, one `user.permissions_changed` per member whose effective permissions
moved), computed from the state inside that transaction. The events wait in the outbox
(published later by `authbus.user.outbox.OutboxRelay`), so a change is never stored
without its audit line and its events, nor the reverse.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from authbus.user.domain import (
    AuditEntry,
    OutboxEvent,
    Role,
    User,
    UserChanges,
    UserFilter,
)


class UserRepository(Protocol):
    """Where users, roles, audit entries and outbox events live."""

    async def add_user(self, user: User, *, audit: AuditEntry | None = None) -> None:
        """Store a new user; `UsernameTaken` on a case-insensitive clash, `RoleNotFound`."""

    async def add_users(self, users: Sequence[tuple[User, AuditEntry | None]]) -> None:
        """Store several new users in one transaction: all of them, or none (`add_user`'s
        errors, for the first user that fails)."""

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        """The user with this id, or None."""

    async def find_user(self, username: str) -> User | None:
        """The user with this username, compared case-insensitively, or None."""

    async def find_password_hash(self, username: str) -> tuple[uuid.UUID, str] | None:
        """(id, password hash) of the user with this username, or None.

        One lookup whether or not the user exists, so a login's time does not tell.
        """

    async def list_users(self, *, where: UserFilter, after: str | None, limit: int) -> list[User]:
        """Up to `limit` users ordered by normalized username, those after `after` only."""

    async def update_user(
        self, user_id: uuid.UUID, changes: UserChanges, *, audit: AuditEntry | None = None
    ) -> User | None:
        """Apply `changes`; the updated user, or None if there is no such user."""

    async def delete_user(self, user_id: uuid.UUID, *, audit: AuditEntry | None = None) -> bool:
        """Delete the user; False if there was none."""

    async def add_role(self, role: Role, *, audit: AuditEntry | None = None) -> None:
        """Store a new role; `RoleExists` if the name is taken."""

    async def get_roles(self, names: Iterable[str]) -> list[Role]:
        """The roles among `names` that exist (any order)."""

    async def list_roles(self) -> list[Role]:
        """Every role, ordered by name."""

    async def update_role(
        self,
        role: Role,
        *,
        audit: AuditEntry | None = None,
    ) -> bool:
        """Replace the role's description and permissions; False if there is no such role."""

    async def delete_role(self, name: str, *, audit: AuditEntry | None = None) -> bool:
        """Delete the role (members lose it); False if there was none."""

    async def list_audit(
        self, *, before: int | None, limit: int, target_id: str | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first, with ids below `before` only."""

    async def add_audit(self, audit: AuditEntry) -> None:
        """Record an audit entry that goes with no stored change (a login attempt)."""

    async def pending_events(self, limit: int) -> list[OutboxEvent]:
        """Outbox events neither published nor given up on, oldest first."""

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        """Record that these outbox events reached the event service."""

    async def mark_failed(self, id: int, error: str, at: datetime, *, final: bool) -> None:
        """Count a failed publish; `final` gives the event up (it stays, for inspection)."""

    async def prune_outbox(self, published_before: datetime) -> int:
        """Delete events published before the given time; how many were deleted."""

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""
