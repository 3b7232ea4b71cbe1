"""HTTP request and response bodies of the user service (pydantic)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from authbus.user.domain import AuditEntry, Role
from authbus.user.policy import (
    MAX_EFFECTIVE_PERMISSIONS,
    MAX_ROLE_PERMISSIONS,
    MAX_USER_PERMISSIONS,
    MAX_USER_ROLES,
)
from authbus.user.service import UserProfile

# Generous caps: the domain policy gives the precise message; these only stop absurd bodies.
_NAME = Field(max_length=1024)
_SECRET = Field(max_length=4096)

# The bounds on what a user and a role hold (`authbus.user.policy`), in the schema's words.
_WHY = (
    f"so a user holds at most {MAX_EFFECTIVE_PERMISSIONS} permissions in all and every event "
    "announcing a change fits the event service's body limit"
)
USER_PERMISSIONS = (
    f"The user's direct permissions (RFC 6749 scope tokens of up to 200 characters), at most "
    f"{MAX_USER_PERMISSIONS}, {_WHY}."
)
USER_ROLES = f"The user's roles, at most {MAX_USER_ROLES}, {_WHY}."
ROLE_PERMISSIONS = (
    f"The role's permissions (RFC 6749 scope tokens of up to 200 characters), at most "
    f"{MAX_ROLE_PERMISSIONS}, {_WHY}."
)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserCreate(_In):
    """POST /v1/users."""

    username: str = _NAME
    password: str = _SECRET
    email: str | None = Field(default=None, max_length=1024)
    permissions: list[str] = Field(
        default_factory=list, max_length=MAX_USER_PERMISSIONS, description=USER_PERMISSIONS
    )
    roles: list[str] = Field(
        default_factory=list, max_length=MAX_USER_ROLES, description=USER_ROLES
    )


class UserPatch(_In):
    """PATCH /v1/users/{id}: only the fields present change (`email: null` clears it)."""

    email: str | None = Field(default=None, max_length=1024)
    # Strict: "yes", 1 or "false" are refused rather than read as a flag.
    disabled: StrictBool | None = None


class PermissionsIn(_In):
    """PUT /v1/users/{id}/permissions: the complete set of direct permissions."""

    permissions: list[str] = Field(max_length=MAX_USER_PERMISSIONS, description=USER_PERMISSIONS)


class RolesIn(_In):
    """PUT /v1/users/{id}/roles: the complete set of roles."""

    roles: list[str] = Field(max_length=MAX_USER_ROLES, description=USER_ROLES)


class PasswordChange(_In):
    """PUT /v1/users/me/password."""

    current_password: str = _SECRET
    new_password: str = _SECRET


class PasswordReset(_In):
    """PUT /v1/users/{id}/password (administrators)."""

    password: str = _SECRET


class UserOut(BaseModel):
    """A user as the API shows it (never the password hash)."""

    id: uuid.UUID
    username: str
    email: str | None
    disabled: bool
    permissions: list[str]
    roles: list[str]
    effective_permissions: list[str]
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, profile: UserProfile) -> UserOut:
        """The API view of a user and its effective permissions."""
        u = profile.user
        return cls(
            id=u.id,
            username=u.username,
            email=u.email,
            disabled=u.disabled,
            permissions=sorted(u.permissions),
            roles=sorted(u.roles),
            effective_permissions=sorted(profile.effective_permissions),
            created_at=u.created_at,
            updated_at=u.updated_at,
            last_login_at=u.last_login_at,
        )


class UserList(BaseModel):
    """GET /v1/users: one page; `next_cursor` is None on the last."""

    items: list[UserOut]
    next_cursor: str | None


class VerifyRequest(_In):
    """POST /v1/credentials/verify (the token service, scope users:verify)."""

    username: str = _NAME
    password: str = _SECRET
    scopes: list[str] = Field(default_factory=list, max_length=1000)
    client_address: str | None = Field(default=None, max_length=128)


class VerifyResponse(BaseModel):
    """POST /v1/credentials/verify, 200."""

    user: UserOut


class RoleCreate(_In):
    """POST /v1/roles."""

    name: str = _NAME
    description: str = Field(default="", max_length=4096)
    permissions: list[str] = Field(
        default_factory=list, max_length=MAX_ROLE_PERMISSIONS, description=ROLE_PERMISSIONS
    )


class RolePatch(_In):
    """PATCH /v1/roles/{name}: only the fields given change."""

    description: str | None = Field(default=None, max_length=4096)
    permissions: list[str] | None = Field(
        default=None, max_length=MAX_ROLE_PERMISSIONS, description=ROLE_PERMISSIONS
    )


class RoleOut(BaseModel):
    """A role as the API shows it."""

    name: str
    description: str
    permissions: list[str]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, role: Role) -> RoleOut:
        """The API view of a role."""
        return cls(
            name=role.name,
            description=role.description,
            permissions=sorted(role.permissions),
            created_at=role.created_at,
            updated_at=role.updated_at,
        )


class RoleList(BaseModel):
    """GET /v1/roles."""

    items: list[RoleOut]


class AuditOut(BaseModel):
    """One audit entry."""

    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditOut:
        """The API view of an audit entry."""
        return cls(
            id=entry.id or 0,
            at=entry.at,
            actor=entry.actor,
            action=entry.action,
            target_type=entry.target_type,
            target_id=entry.target_id,
            details=entry.details,
        )


class AuditPage(BaseModel):
    """GET /v1/audit: newest first."""

    items: list[AuditOut]
    # Pass as `before` for the next (older) page; None when this page is the last.
    next_before: int | None
