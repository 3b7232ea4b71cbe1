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


def event_of(audit: AuditEntry) -> dict[str, Any]:
    """The event announcing an audited change (every audited change is one).

    >>> event_of(AuditEntry(at=utcnow(), actor="admin", action="user.deleted",
    ...                     target_type="user", target_id="42"))["type"]
    'user.deleted'
    """
    key = "id" if audit.target_type == "user" else "name"
    return {
        "channel": USERS_CHANNEL,
        "type": audit.action,
        "aggregate_type": audit.target_type,
        "aggregate_id": audit.target_id,
        "data": {key: audit.target_id, "actor": audit.actor, **audit.details},
    }
