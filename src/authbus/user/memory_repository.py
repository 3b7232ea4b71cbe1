"""`UserRepository` in memory: the fake the unit tests use (one process, no persistence)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from authbus.core.errors import DependencyUnavailable
from authbus.user.domain import (
    ROLE_CREATED,
    ROLE_DELETED,
    ROLE_UPDATED,
    AuditEntry,
    DomainEvent,
    OutboxEvent,
    Role,
    User,
    UserChanges,
    UserFilter,
    UserState,
    members_events,
    normalize_username,
    role_event,
    user_events,
)
from authbus.user.errors import RoleExists, RoleNotFound, UsernameTaken


class InMemoryUserRepository:
    """`UserRepository` in a dict: the fake for unit tests (one process, no persistence)."""

    def __init__(self) -> None:
        self.users: dict[uuid.UUID, User] = {}
        self.roles: dict[str, Role] = {}
        self.audit: list[AuditEntry] = []
        self.outbox: list[OutboxEvent] = []
        self.published_at: dict[int, datetime] = {}
        self.given_up: set[int] = set()
        # Tests flip this to simulate an outage.
        self.available = True

    def _check(self) -> None:
        if not self.available:
            raise DependencyUnavailable("the user database is unavailable")

    def _record(self, audit: AuditEntry, events: list[DomainEvent]) -> None:
        self.audit.append(replace(audit, id=len(self.audit) + 1))
        for e in events:
            self.outbox.append(
                OutboxEvent(
                    id=max((o.id for o in self.outbox), default=0) + 1,
                    event_id=uuid.uuid4(),
                    channel=e.channel,
                    type=e.type,
                    aggregate_type=e.aggregate_type,
                    aggregate_id=e.aggregate_id,
                    data=e.data,
                    created_at=audit.at,
                )
            )

    def _state(self, user: User) -> UserState:
        perms = [self.roles[r].permissions for r in user.roles if r in self.roles]
        return UserState(user, user.permissions.union(*perms))

    def _states(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, UserState]:
        return {i: self._state(self.users[i]) for i in ids if i in self.users}

    def _members(self, role_name: str) -> list[uuid.UUID]:
        return [u.id for u in self.users.values() if role_name in u.roles]

    def _require_roles(self, names: Iterable[str]) -> None:
        if missing := set(names) - self.roles.keys():
            raise RoleNotFound(missing)

    async def add_user(self, user: User, *, audit: AuditEntry | None = None) -> None:
        self._check()
        if await self.find_user(user.username) is not None:
            raise UsernameTaken(user.username)
        self._require_roles(user.roles)
        self.users[user.id] = user
        if audit is not None:
            self._record(audit, user_events(None, self._state(user), actor=audit.actor))

    async def add_users(self, users: Sequence[tuple[User, AuditEntry | None]]) -> None:
        self._check()
        names: set[str] = set()
        for u, _ in users:
            if u.username_normalized in names or await self.find_user(u.username) is not None:
                raise UsernameTaken(u.username)
            names.add(u.username_normalized)
            self._require_roles(u.roles)
        for u, audit in users:
            self.users[u.id] = u
            if audit is not None:
                self._record(audit, user_events(None, self._state(u), actor=audit.actor))

    async def get_user(self, user_id: uuid.UUID) -> User | None:
        self._check()
        return self.users.get(user_id)

    async def find_user(self, username: str) -> User | None:
        self._check()
        wanted = normalize_username(username)
        return next((u for u in self.users.values() if u.username_normalized == wanted), None)

    async def find_password_hash(self, username: str) -> tuple[uuid.UUID, str] | None:
        user = await self.find_user(username)
        return None if user is None else (user.id, user.password_hash)

    async def list_users(self, *, where: UserFilter, after: str | None, limit: int) -> list[User]:
        self._check()
        chosen = []
        for u in sorted(self.users.values(), key=lambda u: u.username_normalized):
            if after is not None and u.username_normalized <= after:
                continue
            if where.username is not None and u.username_normalized != normalize_username(
                where.username
            ):
                continue
            if where.username_prefix and not u.username_normalized.startswith(
                normalize_username(where.username_prefix)
            ):
                continue
            if where.disabled is not None and u.disabled != where.disabled:
                continue
            if (
                where.permission is not None
                and where.permission not in u.permissions
                and not any(
                    where.permission in self.roles[r].permissions
                    for r in u.roles
                    if r in self.roles
                )
            ):
                continue
            chosen.append(u)
            if len(chosen) == limit:
                break
        return chosen

    async def update_user(
        self, user_id: uuid.UUID, changes: UserChanges, *, audit: AuditEntry | None = None
    ) -> User | None:
        self._check()
        user = self.users.get(user_id)
        if user is None:
            return None
        if changes.roles is not None:
            self._require_roles(changes.roles)
        before = self._state(user)
        email = None if changes.clear_email else (changes.email or user.email)
        user = replace(
            user,
            updated_at=changes.updated_at,
            email=email,
            disabled=user.disabled if changes.disabled is None else changes.disabled,
            password_hash=changes.password_hash or user.password_hash,
            last_login_at=changes.last_login_at or user.last_login_at,
            permissions=user.permissions if changes.permissions is None else changes.permissions,
            roles=user.roles if changes.roles is None else changes.roles,
        )
        self.users[user_id] = user
        if audit is not None:
            announced = changes.announced
            self._record(
                audit,
                user_events(before, self._state(user), actor=audit.actor) if announced else [],
            )
        return user

    async def delete_user(self, user_id: uuid.UUID, *, audit: AuditEntry | None = None) -> bool:
        self._check()
        user = self.users.pop(user_id, None)
        if user is None:
            return False
        if audit is not None:
            self._record(audit, user_events(self._state(user), None, actor=audit.actor))
        return True

    async def add_role(self, role: Role, *, audit: AuditEntry | None = None) -> None:
        self._check()
        if role.name in self.roles:
            raise RoleExists(role.name)
        self.roles[role.name] = role
        if audit is not None:
            self._record(audit, [role_event(ROLE_CREATED, role, actor=audit.actor)])

    async def get_roles(self, names: Iterable[str]) -> list[Role]:
        self._check()
        return [self.roles[n] for n in sorted(set(names)) if n in self.roles]

    async def list_roles(self) -> list[Role]:
        self._check()
        return [self.roles[n] for n in sorted(self.roles)]

    async def update_role(self, role: Role, *, audit: AuditEntry | None = None) -> bool:
        self._check()
        old = self.roles.get(role.name)
        if old is None:
            return False
        members = self._members(role.name)
        before = self._states(members)
        self.roles[role.name] = replace(role, created_at=old.created_at)
        if audit is not None:
            self._record(
                audit,
                [
                    role_event(ROLE_UPDATED, self.roles[role.name], actor=audit.actor),
                    *members_events(before, self._states(members), actor=audit.actor),
                ],
            )
        return True

    async def delete_role(self, name: str, *, audit: AuditEntry | None = None) -> bool:
        self._check()
        members = self._members(name)
        before = self._states(members)
        role = self.roles.pop(name, None)
        if role is None:
            return False
        for uid in members:
            u = self.users[uid]
            self.users[uid] = replace(u, roles=u.roles - {name})
        if audit is not None:
            self._record(
                audit,
                [
                    role_event(ROLE_DELETED, role, actor=audit.actor),
                    *members_events(before, self._states(members), actor=audit.actor),
                ],
            )
        return True

    async def list_audit(
        self, *, before: int | None, limit: int, target_id: str | None = None
    ) -> list[AuditEntry]:
        self._check()
        entries = [
            a
            for a in reversed(self.audit)
            if (before is None or (a.id or 0) < before)
            and (target_id is None or a.target_id == target_id)
        ]
        return entries[:limit]

    async def add_audit(self, audit: AuditEntry) -> None:
        self._check()
        self._record(audit, [])

    async def ping(self) -> None:
        self._check()

    async def pending_events(self, limit: int) -> list[OutboxEvent]:
        self._check()
        done = self.published_at.keys() | self.given_up
        return [e for e in self.outbox if e.id not in done][:limit]

    async def mark_published(self, ids: Sequence[int], at: datetime) -> None:
        self._check()
        self.published_at.update(dict.fromkeys(ids, at))

    async def mark_failed(self, id: int, error: str, at: datetime, *, final: bool) -> None:
        self._check()
        self.outbox = [
            replace(e, attempts=e.attempts + 1) if e.id == id else e for e in self.outbox
        ]
        if final:
            self.given_up.add(id)

    async def prune_outbox(self, published_before: datetime) -> int:
        self._check()
        old = {
            e.id
            for e in self.outbox
            if e.id in self.published_at and self.published_at[e.id] < published_before
        }
        self.outbox = [e for e in self.outbox if e.id not in old]
        return len(old)
