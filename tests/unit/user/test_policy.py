"""Username, password, permission and email rules."""

from __future__ import annotations

import pytest

from authbus.user.errors import (
    InvalidEmail,
    InvalidPermission,
    InvalidRoleName,
    InvalidUsername,
    WeakPassword,
)
from authbus.user.policy import (
    check_email,
    check_password,
    check_permissions,
    check_role_name,
    check_username,
    common_passwords,
)


@pytest.mark.parametrize("name", ["bob", "Alice", "a.b-c_d", "0day", "x" * 64, "user.name-01"])
def test_valid_usernames_are_accepted(name: str) -> None:
    assert check_username(name) == name


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("ab", "3 to 64"),
        ("x" * 65, "3 to 64"),
        (".alice", "start with a letter or digit"),
        ("_alice", "start with a letter or digit"),
        ("al ice", "may contain only"),
        ("alice@example", "may contain only"),
        ("élodie", "may contain only"),
        ("", "3 to 64"),
    ],
)
def test_invalid_usernames_say_what_is_wrong(name: str, says: str) -> None:
    with pytest.raises(InvalidUsername) as exc:
        check_username(name)
    assert says in exc.value.message
    assert exc.value.status_code == 422
    assert exc.value.code == "invalid_username"


def test_role_names_follow_the_username_alphabet() -> None:
    assert check_role_name("billing-admins") == "billing-admins"
    with pytest.raises(InvalidRoleName, match="role name"):
        check_role_name("no spaces here")


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "Tr0ub4dor&3x",
        "パスワードは長いです",
        "        x       ",
        "a" * 128,
    ],
)
def test_any_characters_of_acceptable_length_pass(password: str) -> None:
    assert check_password(password) == password


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short", "at least 8"),
        ("1234567", "at least 8"),
        ("a" * 129, "at most 128"),
        ("password", "commonly used"),
        ("Password1", "commonly used"),
        ("qwerty123", "commonly used"),
        ("12345678", "commonly used"),
        ("iloveyou", "commonly used"),
        ("P@ssw0rd", "commonly used"),
        ("summer2024", "commonly used"),
    ],
)
def test_weak_passwords_are_rejected_with_a_reason(password: str, says: str) -> None:
    with pytest.raises(WeakPassword) as exc:
        check_password(password)
    assert says in exc.value.message
    assert exc.value.code == "weak_password"


def test_password_equal_to_username_is_rejected() -> None:
    with pytest.raises(WeakPassword, match="username"):
        check_password("Margaret-Hamilton", username="margaret-hamilton")


def test_common_password_list_is_shipped_and_substantial() -> None:
    common = common_passwords()
    assert len(common) > 3000
    for top in ("123456", "password", "123456789", "qwerty", "password1", "abc123", "111111"):
        assert top in common
    assert all(p == p.lower() for p in common)


def test_permissions_must_be_scope_tokens() -> None:
    assert check_permissions(["orders:read", "users:admin"]) == {"orders:read", "users:admin"}
    for bad in ["", "with space", 'quote"', "back\\slash", "x" * 201, "tab\t"]:
        with pytest.raises(InvalidPermission):
            check_permissions([bad])


def test_email_must_look_like_one() -> None:
    assert check_email("alice@example.com") == "alice@example.com"
    for bad in ["alice", "a@b@c", "a b@c.d", "@", "x" * 400 + "@a.b"]:
        with pytest.raises(InvalidEmail):
            check_email(bad)
