"""Redirect URI rules: exact matching (RFC 9700 §4.1.3), loopback ports (RFC 8252 §7.3)."""

from __future__ import annotations

import pytest

from authbus.core.errors import ValidationFailed
from authbus.token.clients import redirect_uri_matches, validate_redirect_uri

REGISTERED = "https://app.example.com/callback"


def test_identical_uri_matches() -> None:
    assert redirect_uri_matches(REGISTERED, REGISTERED)


@pytest.mark.parametrize(
    "attempt",
    [
        "https://app.example.com/callback/extra",  # extra path
        "https://app.example.com/callback?x=1",  # extra query
        "https://APP.example.com/callback",  # case
        "https://app.example.com/Callback",
        "https://app.example.com@evil.example/callback",  # userinfo trick
        "https://evil.example@app.example.com/callback",
        "https://app.example.com/%63allback",  # encoded chars
        "https://app.example.com/callback/../callback",  # dot segments
        "https://app.example.com/x/../callback",
        "https://app.example.com:8443/callback",  # other port, not loopback
        "http://app.example.com/callback",  # downgrade
        "https://app.example.com/callback#frag",
        "https://app.example.com.evil.example/callback",
        "https://app.example.com/callback ",
        "",
    ],
)
def test_variations_do_not_match(attempt: str) -> None:
    assert not redirect_uri_matches(attempt, REGISTERED)


@pytest.mark.parametrize(
    "registered, attempt",
    [
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"),
        ("http://127.0.0.1:8000/cb", "http://127.0.0.1:9000/cb"),
        ("http://[::1]:8000/cb", "http://[::1]:1234/cb"),
    ],
)
def test_loopback_port_may_vary(registered: str, attempt: str) -> None:
    assert redirect_uri_matches(attempt, registered)


@pytest.mark.parametrize(
    "attempt",
    [
        "http://127.0.0.1:9000/cb/extra",
        "http://127.0.0.1:9000/cb?x=1",
        "http://127.0.0.2:9000/cb",
        "https://127.0.0.1:9000/cb",
        "http://evil@127.0.0.1:9000/cb",
        "http://127.0.0.1:9000@evil.example/cb",
        "http://127.0.0.1:9000/cb#x",
        "http://127.0.0.1:abc/cb",
        "http://localhost:9000/cb",
    ],
)
def test_loopback_other_parts_still_exact(attempt: str) -> None:
    assert not redirect_uri_matches(attempt, "http://127.0.0.1:8000/cb")


def test_localhost_is_exact_only() -> None:
    # RFC 8252 §8.3: "localhost" is not a loopback IP literal; no port freedom.
    assert not redirect_uri_matches("http://localhost:9/cb", "http://localhost:8/cb")


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/cb",
        "http://127.0.0.1:8000/cb",
        "http://localhost/cb",
        "http://[::1]/cb",
    ],
)
def test_registration_accepts(uri: str) -> None:
    assert validate_redirect_uri(uri) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "/relative/cb",
        "app.example.com/cb",
        "http://app.example.com/cb",
        "https://app.example.com/cb#frag",
        "https://user@app.example.com/cb",
        "javascript:alert(1)",
        "ftp://app.example.com/cb",
    ],
)
def test_registration_refuses(uri: str) -> None:
    with pytest.raises(ValidationFailed):
        validate_redirect_uri(uri)
