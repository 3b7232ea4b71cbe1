"""Properties over arbitrary input: the policies and cursors never fail unexpectedly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authbus.user.errors import InvalidCursor, InvalidUsername, WeakPassword
from authbus.user.policy import check_password, check_username
from authbus.user.service import decode_cursor, encode_cursor


@given(st.text(max_size=100))
def test_username_check_accepts_or_explains(name: str) -> None:
    try:
        assert check_username(name) == name
    except InvalidUsername as exc:
        assert exc.message.startswith("username:")


@given(st.text(max_size=200))
def test_password_check_accepts_or_explains(password: str) -> None:
    try:
        assert check_password(password) == password
    except WeakPassword as exc:
        assert exc.message.startswith("password:")


@given(st.text(max_size=64))
def test_cursor_round_trips(position: str) -> None:
    assert decode_cursor(encode_cursor(position)) == position


@given(st.text(max_size=80))
def test_any_cursor_decodes_or_is_invalid(cursor: str) -> None:
    try:
        decoded = decode_cursor(cursor)
    except InvalidCursor:
        return
    assert isinstance(decoded, str)


def test_surrogates_in_cursor_are_invalid() -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor("\ud800")
