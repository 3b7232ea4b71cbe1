"""What a valid username, password, permission and role name look like.

Passwords follow NIST SP 800-63B §5.1.1.2: at least 8 and at most 128 characters, any
characters (spaces and Unicode included), no composition rules, but not a commonly used
password nor the username itself.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources

from authbus.user.errors import (
    InvalidEmail,
    InvalidPermission,
    InvalidRoleName,
    InvalidUsername,
    WeakPassword,
)

USERNAME_MIN, USERNAME_MAX = 3, 64
PASSWORD_MIN, PASSWORD_MAX = 8, 128
PERMISSION_MAX = 200

_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
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


def check_role_name(name: str) -> str:
    """The role name if valid (same alphabet as usernames), else `InvalidRoleName`."""
    try:
        return check_username(name)
    except InvalidUsername as exc:
        raise InvalidRoleName(exc.message.replace("username:", "role name:")) from exc


def check_permissions(permissions: frozenset[str] | set[str] | list[str]) -> frozenset[str]:
    """The permissions if each is an RFC 6749 scope token, else `InvalidPermission`."""
    for p in permissions:
        if len(p) > PERMISSION_MAX or not _SCOPE_TOKEN_RE.fullmatch(p):
            raise InvalidPermission(
                f"permission {p!r}: must be 1 to {PERMISSION_MAX} printable ASCII characters "
                "without spaces, quotes or backslashes"
            )
    return frozenset(permissions)


@cache
def common_passwords() -> frozenset[str]:
    """The shipped list of commonly used passwords, lowercased (read once)."""
    text = resources.files("authbus.user").joinpath("common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def check_password(password: str, *, username: str | None = None) -> str:
    """The password if the policy accepts it, else `WeakPassword` saying why.

    >>> check_password("correct horse battery staple")
    'correct horse battery staple'
    """
    # NIST counts characters after Unicode normalization (NFKC), not bytes.
    length = len(unicodedata.normalize("NFKC", password))
    if length < PASSWORD_MIN:
        raise WeakPassword(f"password: must be at least {PASSWORD_MIN} characters long")
    if length > PASSWORD_MAX:
        raise WeakPassword(f"password: must be at most {PASSWORD_MAX} characters long")
    folded = password.lower()
    if folded in common_passwords():
        raise WeakPassword(
            "password: this is a commonly used password and easy to guess; choose another"
        )
    if username is not None and folded == username.lower():
        raise WeakPassword("password: must not be the username")
    return password


EMAIL_MAX = 320
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")


def check_email(email: str) -> str:
    """A plausible address (one '@', no spaces; delivery is what really proves it)."""
    if len(email) > EMAIL_MAX or not _EMAIL_RE.fullmatch(email):
        raise InvalidEmail(f"email: {email!r} is not an email address")
    return email
