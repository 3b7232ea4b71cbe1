"""The user service's errors, each with a stable machine-readable `code`.

They subclass the shared `authbus.core.errors` classes, which fix the HTTP status, so the
domain code raises them without knowing about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from authbus.core.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
)


class InvalidCredentials(Unauthorized):
    """Unknown username or wrong password: one message for both, so neither is revealed."""

    code = "invalid_credentials"

    def __init__(self, message: str = "invalid username or password", **kw: Any) -> None:
        super().__init__(message, **kw)


class InsufficientRights(Forbidden):
    """The user lacks some of the requested scopes (listed in `missing_scopes`)."""

    code = "insufficient_rights"

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing = sorted(set(missing))
        super().__init__(
            "the user does not hold every requested scope",
            extra={"missing_scopes": self.missing},
        )


class UserDisabled(Forbidden):
    """The account exists and the password was right, but the account is disabled."""

    code = "user_disabled"

    def __init__(self, message: str = "the account is disabled") -> None:
        super().__init__(message)


class UsernameTaken(Conflict):
    """Another account has this username (compared case-insensitively)."""

    code = "username_taken"

    def __init__(self, username: str) -> None:
        super().__init__(f"the username {username!r} is taken")


class UserNotFound(NotFound):
    """No user with this id (or the token belongs to a client, not a user)."""

    code = "user_not_found"

    def __init__(self, message: str = "no such user") -> None:
        super().__init__(message)


class RoleNotFound(NotFound):
    """Some named roles do not exist (listed in `roles`)."""

    code = "role_not_found"

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(f"no such role: {', '.join(self.names)}", extra={"roles": self.names})


class RoleExists(Conflict):
    """A role of this name exists already."""

    code = "role_exists"

    def __init__(self, name: str) -> None:
        super().__init__(f"the role {name!r} exists already")


class InvalidUsername(ValidationFailed):
    """The username breaks the rules of `authbus.user.policy.check_username`."""

    code = "invalid_username"


class WeakPassword(ValidationFailed):
    """The password breaks the policy (NIST SP 800-63B §5.1.1.2)."""

    code = "weak_password"


class InvalidPermission(ValidationFailed):
    """A permission is not an RFC 6749 scope token."""

    code = "invalid_permission"


class InvalidRoleName(ValidationFailed):
    """The role name breaks the naming rules (as usernames)."""

    code = "invalid_role_name"


class InvalidCursor(ValidationFailed):
    """The page cursor was not issued by this service."""

    code = "invalid_cursor"

    def __init__(self) -> None:
        super().__init__("the cursor is not one this service issued")


class TooManyAttempts(TooManyRequests):
    """Too many failed verifications for this (username, client address); retry later."""

    code = "too_many_attempts"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(
            f"too many failed attempts; retry in {self.retry_after} s",
            headers={"Retry-After": str(self.retry_after)},
        )


class IncorrectPassword(Forbidden):
    """The current password given to change one's own password is wrong."""

    code = "invalid_current_password"

    def __init__(self) -> None:
        super().__init__("the current password is wrong")


class InvalidField(ValidationFailed):
    """A text field is too long or holds characters no stored text may hold."""

    code = "invalid_field"


class InvalidEmail(ValidationFailed):
    """The email address is not plausible."""

    code = "invalid_email"


class InvalidPasswordHash(ValidationFailed):
    """An imported password hash is not a bcrypt or argon2id hash this service can verify."""

    code = "invalid_password_hash"


class InvalidImportFile(ValidationFailed):
    """A user import file cannot be read (format, encoding, missing columns)."""

    code = "invalid_import_file"


class TooManyPermissions(ValidationFailed):
    """More permissions than a user or a role may hold (`authbus.user.policy` bounds, which
    keep every event announcing a change under the event service's body limit)."""

    code = "too_many_permissions"


class TooManyRoles(ValidationFailed):
    """More roles than a user may hold (see `TooManyPermissions`)."""

    code = "too_many_roles"
