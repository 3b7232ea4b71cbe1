"""What a valid username, password, permission, role name, email and label look like.

Passwords follow NIST SP 800-63B §5.1.1.2: at least 8 and at most 128 characters, any
characters (spaces and Unicode included), no composition rules, but not a commonly used
password nor the username itself. Every other text the service stores or looks up is
checked here too, so a value no backend can hold (a NUL byte, a lone surrogate) is a 422
that names the field, never a database error.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources

from authbus.user.errors import (
    InvalidEmail,
    InvalidField,
    InvalidPermission,
    InvalidRoleName,
    InvalidUsername,
    TooManyPermissions,
    TooManyRoles,
    WeakPassword,
)

USERNAME_MIN, USERNAME_MAX = 3, 64
PASSWORD_MIN, PASSWORD_MAX = 8, 128
PERMISSION_MAX = 200
DESCRIPTION_MAX = 4096
CLIENT_ADDRESS_MAX = 128

# How much a user and a role may hold. Every change is announced by an event that the outbox
# relays to the event service, whose body limit (1 MiB by default) an event must fit, or it
# is lost. A user holds at most 128 + 16 x 64 = 1152 permissions in all, and the largest
# event, `user.permissions_changed` from 1152 permissions to 1152 others, lists 3 x 1152 of
# them (the new set, the added, the removed), of up to 200 characters each: about 700 KiB.
MAX_USER_PERMISSIONS = 128
MAX_USER_ROLES = 16
MAX_ROLE_PERMISSIONS = 64
MAX_EFFECTIVE_PERMISSIONS = MAX_USER_PERMISSIONS + MAX_USER_ROLES * MAX_ROLE_PERMISSIONS
# Audit entry ids (and any integer a query compares with a bigint column).
MAX_SQL_INT = 2**63 - 1

_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_USERNAME_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]*")
# RFC 6749 §3.3 scope-token: printable ASCII except space, '"' and '\'.
_SCOPE_TOKEN_RE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")


def check_username(username: str) -> str:
    """The username if it is valid, else `InvalidUsername` saying what is wrong.

    >>> check_username("alice.smith")
    'alice.smith'
    """
    if not USERNAME_MIN <= len(username) <= USERNAME_MAX:
        raise InvalidUsername(f"username: must be {USERNAME_MIN} to {USERNAME_MAX} characters long")
    if not _USERNAME_RE.fullmatch(username):
        raise InvalidUsername(
            "username: may contain only letters A-Z a-z, digits, '.', '_' and '-', "
            "and must start with a letter or digit"
        )
    return username


def is_possible_username(name: str) -> bool:
    """Whether an account could have this name (the policy refuses every other)."""
    return USERNAME_MIN <= len(name) <= USERNAME_MAX and bool(_USERNAME_RE.fullmatch(name))


def check_username_prefix(prefix: str) -> str:
    """A prefix of a possible username (for filters), else `InvalidField`."""
    if len(prefix) > USERNAME_MAX or not _USERNAME_PREFIX_RE.fullmatch(prefix):
        raise InvalidField(
            f"username_prefix: must be up to {USERNAME_MAX} characters of the username "
            "alphabet (letters A-Z a-z, digits, '.', '_' and '-')"
        )
    return prefix


def check_role_name(name: str) -> str:
    """The role name if valid (same alphabet as usernames), else `InvalidRoleName`."""
    try:
        return check_username(name)
    except InvalidUsername as exc:
        raise InvalidRoleName(exc.message.replace("username:", "role name:")) from exc


def check_permissions(
    permissions: frozenset[str] | set[str] | list[str], *, field: str = "permission"
) -> frozenset[str]:
    """The permissions if each is an RFC 6749 scope token, else `InvalidPermission`."""
    for p in permissions:
        if len(p) > PERMISSION_MAX or not _SCOPE_TOKEN_RE.fullmatch(p):
            shown = repr(p) if len(p) <= PERMISSION_MAX else f"{p[:20]!r}... ({len(p)} characters)"
            raise InvalidPermission(
                f"{field} {shown}: must be 1 to {PERMISSION_MAX} printable ASCII characters "
                "without spaces, quotes or backslashes"
            )
    return frozenset(permissions)


def check_user_permission_count(permissions: frozenset[str] | set[str]) -> frozenset[str]:
    """The user's direct permissions if there are at most `MAX_USER_PERMISSIONS`, else
    `TooManyPermissions`."""
    if len(permissions) > MAX_USER_PERMISSIONS:
        raise TooManyPermissions(
            f"permissions: a user holds at most {MAX_USER_PERMISSIONS} direct permissions "
            f"(here {len(permissions)}); give the rest through roles"
        )
    return frozenset(permissions)


def check_role_count(roles: frozenset[str] | set[str]) -> frozenset[str]:
    """The user's roles if there are at most `MAX_USER_ROLES`, else `TooManyRoles`."""
    if len(roles) > MAX_USER_ROLES:
        raise TooManyRoles(
            f"roles: a user holds at most {MAX_USER_ROLES} roles (here {len(roles)})"
        )
    return frozenset(roles)


def check_role_permission_count(permissions: frozenset[str] | set[str]) -> frozenset[str]:
    """A role's permissions if there are at most `MAX_ROLE_PERMISSIONS`, else
    `TooManyPermissions`."""
    if len(permissions) > MAX_ROLE_PERMISSIONS:
        raise TooManyPermissions(
            f"permissions: a role holds at most {MAX_ROLE_PERMISSIONS} permissions "
            f"(here {len(permissions)})"
        )
    return frozenset(permissions)


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of commonly used passwords, lowercased (read once)."""
    text = resources.files("authbus.user").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def check_password(password: str, *, username: str | None = None, field: str = "password") -> str:
    """The password if the policy accepts it, else `WeakPassword` saying why (naming `field`,
    the request field the password came in).

    >>> check_password("correct horse battery staple")
    'correct horse battery staple'
    """
    # NIST counts characters after Unicode normalization (NFKC), not bytes.
    length = len(unicodedata.normalize("NFKC", password))
    if length < PASSWORD_MIN:
        raise WeakPassword(f"{field}: must be at least {PASSWORD_MIN} characters long")
    if length > PASSWORD_MAX:
        raise WeakPassword(f"{field}: must be at most {PASSWORD_MAX} characters long")
    folded = password.lower()
    if folded in common_passwords():
        raise WeakPassword(
            f"{field}: this is a commonly used password and easy to guess; choose another"
        )
    if username is not None and folded == username.lower():
        raise WeakPassword(f"{field}: must not be the username")
    return password


EMAIL_MAX = 320
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


def check_email(email: str) -> str:
    """A plausible address (one '@', no spaces or control characters; delivery is what
    really proves it)."""
    if len(email) > EMAIL_MAX:
        raise InvalidEmail(f"email: must be at most {EMAIL_MAX} characters long")
    if _bad_character(email, multiline=False) is not None or not _EMAIL_RE.fullmatch(email):
        raise InvalidEmail(f"email: {email!r} is not an email address")
    return email


def _bad_character(text: str, *, multiline: bool) -> str | None:
    """The first character no stored text may hold: a control character (C0, DEL, C1;
    tab and line breaks allowed in `multiline` text) or a lone surrogate (not text at all:
    it cannot be encoded, so no database can store it)."""
    for c in text:
        kind = unicodedata.category(c)
        if kind == "Cs" or (kind == "Cc" and not (multiline and c in "\t\n\r")):
            return c
    return None


def check_text(field: str, value: str, *, max_length: int, multiline: bool = False) -> str:
    """`value` if it is at most `max_length` characters of plain text, else `InvalidField`
    naming `field` (control characters and lone surrogates are refused; tabs and line
    breaks only when `multiline`).

    >>> check_text("description", "Order desk", max_length=100)
    'Order desk'
    """
    if len(value) > max_length:
        raise InvalidField(f"{field}: must be at most {max_length} characters long")
    if (c := _bad_character(value, multiline=multiline)) is not None:
        raise InvalidField(f"{field}: must not contain control characters (found U+{ord(c):04X})")
    return value


def loggable(text: str, limit: int) -> str:
    """`text` with control characters and lone surrogates escaped, cut to `limit` characters:
    what may go into an audit row of an attempt whose input the policy refused.

    >>> loggable("bob\x00", 20)
    'bob\\x00'
    """
    out = "".join(
        c.encode("unicode_escape", "backslashreplace").decode("ascii")
        if _bad_character(c, multiline=False) is not None
        else c
        for c in text
    )
    return out if len(out) <= limit else out[: limit - 1] + "\u2026"
