"""The user service's records: plain dataclasses shared by the service and its repositories."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


def utcnow() -> datetime:
    """Now, timezone-aware UTC (the only kind of datetime the service stores)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class User:
    """An account as stored, direct permissions and role names included.

    >>> u = User.new("alice", "argon2-hash", now=utcnow())
    >>> u.username_normalized
    'alice'
    """

    id: uuid.UUID
    username: str
    password_hash: str
    created_at: datetime
    updated_at: datetime
    email: str | None = None
    disabled: bool = False
    last_login_at: datetime | None = None
    permissions: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()

    @property
    def username_normalized(self) -> str:
        """The username as compared (lowercase)."""
        return normalize_username(self.username)

    @classmethod
    def new(
        cls,
        username: str,
        password_hash: str,
        *,
        now: datetime,
        email: str | None = None,
        permissions: frozenset[str] = frozenset(),
        roles: frozenset[str] = frozenset(),
    ) -> User:
        """A new user with a fresh id, created and updated `now`."""
        return cls(
            id=uuid.uuid4(),
            username=username,
            password_hash=password_hash,
            created_at=now,
            updated_at=now,
            email=email,
            permissions=permissions,
            roles=roles,
        )


def normalize_username(username: str) -> str:
    """The form usernames are compared in (case-insensitive)."""
    return username.lower()


@dataclass(frozen=True, slots=True)
class UserChanges:
    """A partial update of a user: fields left `None` stay as they are.

    `email` uses `clear_email=True` to set it to null (None already means "unchanged").
    """

    updated_at: datetime
    email: str | None = None
    clear_email: bool = False
    disabled: bool | None = None
    password_hash: str | None = None
    last_login_at: datetime | None = None
    permissions: frozenset[str] | None = None
    roles: frozenset[str] | None = None

    @property
    def announced(self) -> bool:
        """Whether other services may see the change (all but the login time stamp)."""
        return (
            self.email is not None
            or self.clear_email
            or self.disabled is not None
            or self.password_hash is not None
            or self.permissions is not None
            or self.roles is not None
        )


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of permissions."""

    name: str
    created_at: datetime
    updated_at: datetime
    description: str = ""
    permissions: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class UserFilter:
    """What `list_users` selects: all given conditions hold."""

    # Exact username, compared case-insensitively.
    username: str | None = None
    username_prefix: str | None = None
    # Held directly or through a role.
    permission: str | None = None
    disabled: bool | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One administrative change, written in the same transaction as the change itself."""

    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None


USERS_CHANNEL = "users"


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An event waiting in the outbox to be published on the event service."""

    id: int
    event_id: uuid.UUID
    channel: str
    type: str
    aggregate_type: str
    aggregate_id: str
    data: dict[str, Any]
    created_at: datetime
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class UserState:
    """A user as other services see it: the stored user and its effective permissions."""

    user: User
    effective_permissions: frozenset[str]


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """An event for other services, written to the outbox with the change it announces."""

    type: str
    aggregate_type: str
    aggregate_id: str
    data: dict[str, Any]
    channel: str = USERS_CHANNEL


# What the user service publishes on `users` (README: "Events").
USER_CREATED = "user.created"
USER_UPDATED = "user.updated"
USER_DISABLED = "user.disabled"
USER_ENABLED = "user.enabled"
USER_DELETED = "user.deleted"
USER_PERMISSIONS_CHANGED = "user.permissions_changed"
ROLE_CREATED = "role.created"
ROLE_UPDATED = "role.updated"
ROLE_DELETED = "role.deleted"


def _user_event(type: str, user: User, actor: str, **data: Any) -> DomainEvent:
    return DomainEvent(
        type=type,
        aggregate_type="user",
        aggregate_id=str(user.id),
        data={"id": str(user.id), "username": user.username, **data, "actor": actor},
    )


def user_events(
    before: UserState | None, after: UserState | None, *, actor: str
) -> list[DomainEvent]:
    """The events announcing that a user went from `before` to `after` (None: absent).

    Facts, not commands: one event per kind of change, none when nothing others can see
    changed (a login's re-hash, `updated_at`). `user.permissions_changed` is emitted when
    the effective permissions change, whether directly, through the user's roles or
    through a change of one of those roles; it carries the whole new set.

    >>> t = utcnow()
    >>> u = User.new("alice", "h", now=t)
    >>> [e.type for e in user_events(None, UserState(u, frozenset()), actor="admin")]
    ['user.created']
    >>> from dataclasses import replace
    >>> off = UserState(replace(u, disabled=True), frozenset())
    >>> [e.type for e in user_events(UserState(u, frozenset()), off, actor="admin")]
    ['user.disabled']
    """
    if after is None:
        if before is None:
            return []
        return [_user_event(USER_DELETED, before.user, actor)]
    new = after.user
    if before is None:
        return [
            _user_event(
                USER_CREATED,
                new,
                actor,
                email=new.email,
                disabled=new.disabled,
                permissions=sorted(after.effective_permissions),
                roles=sorted(new.roles),
            )
        ]
    old = before.user
    events = []
    changed = []
    if old.email != new.email:
        changed.append("email")
    if old.password_hash != new.password_hash:
        changed.append("password")
    if changed:
        events.append(_user_event(USER_UPDATED, new, actor, email=new.email, changed=changed))
    if old.disabled != new.disabled:
        events.append(_user_event(USER_DISABLED if new.disabled else USER_ENABLED, new, actor))
    if before.effective_permissions != after.effective_permissions:
        events.append(
            _user_event(
                USER_PERMISSIONS_CHANGED,
                new,
                actor,
                permissions=sorted(after.effective_permissions),
                added=sorted(after.effective_permissions - before.effective_permissions),
                removed=sorted(before.effective_permissions - after.effective_permissions),
                roles=sorted(new.roles),
            )
        )
    return events


def role_event(type: str, role: Role, *, actor: str) -> DomainEvent:
    """`role.created`, `role.updated` or `role.deleted` for `role` (its state after, or
    before a deletion). Members' own `user.permissions_changed` events go with it."""
    data: dict[str, Any] = {"name": role.name}
    if type != ROLE_DELETED:
        data |= {"description": role.description, "permissions": sorted(role.permissions)}
    return DomainEvent(
        type=type,
        aggregate_type="role",
        aggregate_id=role.name,
        data={**data, "actor": actor},
    )


def members_events(
    before: dict[uuid.UUID, UserState], after: dict[uuid.UUID, UserState], *, actor: str
) -> list[DomainEvent]:
    """`user_events` of every member a role change touched, ordered by username."""
    events: list[DomainEvent] = []
    for user_id in sorted(before, key=lambda i: before[i].user.username_normalized):
        if user_id in after:
            events.extend(user_events(before[user_id], after[user_id], actor=actor))
    return events
