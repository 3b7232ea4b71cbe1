"""The request body limit every service shares (authbus.core.app.BodySizeLimit), over a real
uvicorn: a Content-Length above the limit is refused before a byte of the body is read, and
a chunked body is cut off as soon as it passes the limit; both are a 413 in the error shape."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from authbus.core.migrate import upgrade_async
from authbus.core.settings import EventSettings, Settings, TokenSettings, UserSettings
from authbus.event.app import create_app as create_event_app
from authbus.event.memory_log import InMemoryEventLog
from authbus.token.app import create_app as create_token_app
from authbus.user.app import create_app as create_user_app
from tests.integration.core.conftest import RawConnection, Served
from tests.support.tokens import TokenMinter

MIB = 1024 * 1024
HUGE = 300 * MIB  # announced, never sent
JSON = ("Content-Type", "application/json")
FORM = ("Content-Type", "application/x-www-form-urlencoded")


def sqlite_url(tmp_path: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter()


def user_settings(tmp_path: Path, **user: object) -> Settings:
    url = sqlite_url(tmp_path, "user")
    asyncio.run(upgrade_async(url, "user"))
    return Settings(
        data_dir=tmp_path,
        user=UserSettings(database_url=url, argon2_memory_kib=1024, argon2_time_cost=1, **user),
    )


def user_app(settings: Settings, minter: TokenMinter) -> FastAPI:
    return create_user_app(settings, token_validator=minter.validator())


def token_app(tmp_path: Path) -> tuple[FastAPI, Settings]:
    url = sqlite_url(tmp_path, "token")
    asyncio.run(upgrade_async(url, "token"))
    settings = Settings(data_dir=tmp_path, token=TokenSettings(database_url=url))
    no_users = httpx.MockTransport(lambda request: httpx.Response(503))
    return create_token_app(settings, user_transport=no_users), settings


def event_app(tmp_path: Path, minter: TokenMinter) -> tuple[FastAPI, Settings]:
    settings = Settings(data_dir=tmp_path, event=EventSettings())
    app = create_event_app(
        settings, token_validator=minter.validator(), event_log=InMemoryEventLog()
    )
    return app, settings


@pytest.fixture
def user_service(tmp_path: Path, minter: TokenMinter) -> Iterator[Served]:
    settings = user_settings(tmp_path)
    with Served(user_app(settings, minter), settings) as served:
        yield served


@pytest.fixture
def token_service(tmp_path: Path) -> Iterator[Served]:
    app, settings = token_app(tmp_path)
    with Served(app, settings) as served:
        yield served


@pytest.fixture
def event_service(tmp_path: Path, minter: TokenMinter) -> Iterator[Served]:
    app, settings = event_app(tmp_path, minter)
    with Served(app, settings) as served:
        yield served


def bearer(minter: TokenMinter, *scopes: str) -> tuple[str, str]:
    return ("Authorization", f"Bearer {minter.mint('authbus-admin', list(scopes))}")


def announce_huge_body(conn: RawConnection, path: str, *headers: tuple[str, str]) -> None:
    """The head of a request announcing 300 MB; the body never comes. A server that waited
    for it would not answer within the connection's timeout."""
    conn.sock.settimeout(5)
    conn.send_head("POST", path, [*headers, ("Content-Length", str(HUGE))])


def send_chunked(
    conn: RawConnection, path: str, size: int, *headers: tuple[str, str], filler: bytes = b"a"
) -> None:
    """`size` bytes of a chunked body, without the last chunk: a server that read the whole
    body before answering would wait for ever."""
    conn.sock.settimeout(5)
    conn.send_head("POST", path, [*headers, ("Transfer-Encoding", "chunked")])
    chunk = filler * (64 * 1024 // len(filler))
    sent = 0
    while sent < size:
        piece = chunk[: size - sent]
        try:
            conn.send_chunk(piece)
        except OSError:
            break  # the server answered and stopped reading: what follows tells
        sent += len(piece)


def assert_too_large(conn: RawConnection, limit: int) -> None:
    answer = conn.read_response()
    assert answer.status == 413, answer.body[:300]
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "error": "payload_too_large",
        "error_description": f"the request body is above {limit} bytes",
    }
    assert answer.headers.get("x-request-id")


# -- the user service ---------------------------------------------------------------------


def test_user_service_refuses_a_huge_content_length_before_reading(
    user_service: Served, minter: TokenMinter
) -> None:
    with user_service.connect() as conn:
        announce_huge_body(conn, "/v1/users", JSON, bearer(minter, "users:admin"))
        assert_too_large(conn, MIB)


def test_user_service_cuts_off_a_chunked_body_past_the_limit(
    user_service: Served, minter: TokenMinter
) -> None:
    with user_service.connect() as conn:
        send_chunked(conn, "/v1/users", 2 * MIB, JSON, bearer(minter, "users:admin"))
        assert_too_large(conn, MIB)


def test_user_service_takes_bodies_under_the_limit(
    user_service: Served, minter: TokenMinter
) -> None:
    body = b'{"username": "alice", "password": "correct horse battery staple"}'
    with user_service.connect() as conn:
        answer = conn.request("POST", "/v1/users", body, [JSON, bearer(minter, "users:admin")])
        assert answer.status == 201, answer.body


def test_the_user_limit_is_a_setting(tmp_path: Path, minter: TokenMinter) -> None:
    settings = user_settings(tmp_path, max_body_bytes=1000)
    body = b'{"username": "alice", "password": "' + b"p" * 2000 + b'"}'
    with Served(user_app(settings, minter), settings) as served, served.connect() as conn:
        conn.send_head(
            "POST",
            "/v1/users",
            [JSON, bearer(minter, "users:admin"), ("Content-Length", str(len(body)))],
        )
        conn.sock.sendall(body)
        assert_too_large(conn, 1000)


# -- the token service --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/token", "/authorize"])
def test_token_service_refuses_a_huge_form_before_reading(token_service: Served, path: str) -> None:
    with token_service.connect() as conn:
        announce_huge_body(conn, path, FORM)
        assert_too_large(conn, MIB)


@pytest.mark.parametrize("path", ["/token", "/authorize"])
def test_token_service_cuts_off_a_chunked_form_past_the_limit(
    token_service: Served, path: str
) -> None:
    with token_service.connect() as conn:
        # Fields of 64 KiB: the form bounds (50 fields, 1 MiB a field) stay far.
        send_chunked(conn, path, 2 * MIB, FORM, filler=b"a=" + b"b" * (64 * 1024 - 3) + b"&")
        assert_too_large(conn, MIB)


def test_token_service_takes_forms_under_the_limit(token_service: Served) -> None:
    with token_service.connect() as conn:
        answer = conn.request("POST", "/token", b"grant_type=client_credentials", [FORM])
        assert answer.status == 401  # no client credentials: the form was read and judged
        assert answer.json()["error"] == "invalid_client"


# -- the event service keeps its own setting and error --------------------------------------


def test_event_service_refuses_a_content_length_above_max_payload_bytes(
    event_service: Served, minter: TokenMinter
) -> None:
    with event_service.connect() as conn:
        announce_huge_body(
            conn, "/v1/channels/orders/events", JSON, bearer(minter, "events:publish")
        )
        assert_too_large(conn, 1024 * 1024)


def test_event_service_cuts_off_a_chunked_body_past_max_payload_bytes(
    event_service: Served, minter: TokenMinter
) -> None:
    with event_service.connect() as conn:
        send_chunked(
            conn, "/v1/channels/orders/events", 2 * MIB, JSON, bearer(minter, "events:publish")
        )
        assert_too_large(conn, 1024 * 1024)
