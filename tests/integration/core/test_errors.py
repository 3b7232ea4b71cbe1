"""Error answers over a real uvicorn: bodies FastAPI cannot decode, bodies that are not JSON,
and unhandled errors (a complete 500 carrying the request id, logged once, on a connection
that stays usable)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from authbus.core.app import build_app
from authbus.core.logging import JsonFormatter
from authbus.core.settings import Settings
from tests.integration.core.conftest import RawConnection, Served

JSON = ("Content-Type", "application/json")


class Item(BaseModel):
    name: str
    count: int = 0


def make_app(tmp_path: Path) -> FastAPI:
    app = build_app("user", Settings(data_dir=tmp_path))

    @app.post("/items")
    async def create(item: Item) -> dict[str, str]:
        return {"name": item.name}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"status": "ok"}

    return app


class JsonLines(logging.Handler):
    """The log lines as the services write them (formatted where they are emitted, so with
    the request id of the request in flight)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter("user"))
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, Any]]]:
    handler = JsonLines()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path)
    with Served(make_app(tmp_path), settings) as served:
        yield served


@pytest.fixture
def conn(served: Served) -> Iterator[RawConnection]:
    with served.connect() as conn:
        yield conn


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"name": "caf\xe9"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"name": "x", "count": ' + b"1" * 5000 + b"}", "too many digits"),
        (b'{"name": ', ""),
    ],
    ids=["invalid-utf8", "deep-nesting", "huge-integer", "truncated"],
)
def test_an_undecodable_json_body_is_a_400_invalid_request(
    conn: RawConnection, body: bytes, why: str
) -> None:
    answer = conn.request("POST", "/items", body, [JSON])
    assert answer.status == 400
    data = answer.json()
    assert data["error"] == "invalid_request"
    assert data["error_description"].startswith("malformed JSON body")
    assert why in data["error_description"]
    # The connection is still good for the next request.
    assert conn.request("GET", "/ok").status == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_sent_as_another_media_type_is_a_415(
    conn: RawConnection, content_type: str | None
) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    answer = conn.request("POST", "/items", b'{"name": "x"}', headers)
    assert answer.status == 415
    assert answer.json()["error"] == "unsupported_media_type"
    assert "application/json" in answer.json()["error_description"]


def test_a_valid_body_is_still_accepted_and_a_wrong_one_is_a_422(conn: RawConnection) -> None:
    assert conn.request("POST", "/items", b'{"name": "x"}', [JSON]).json() == {"name": "x"}
    answer = conn.request("POST", "/items", b'{"count": 1}', [JSON])
    assert answer.status == 422
    assert answer.json()["error"] == "validation_error"
    assert "name" in answer.json()["error_description"]


def test_an_unhandled_error_is_a_500_carrying_the_request_id(conn: RawConnection) -> None:
    answer = conn.request("GET", "/boom", headers=[("X-Request-ID", "trace-500-1")])
    assert answer.status == 500
    assert answer.json() == {
        "error": "server_error",
        "error_description": "internal error",
        "request_id": "trace-500-1",
    }
    assert answer.headers["x-request-id"] == "trace-500-1"


def test_a_500_without_a_given_request_id_carries_the_generated_one(conn: RawConnection) -> None:
    answer = conn.request("GET", "/boom")
    assert answer.status == 500
    rid = answer.json()["request_id"]
    assert rid and rid == answer.headers["x-request-id"]


def test_the_connection_stays_usable_after_a_500(conn: RawConnection) -> None:
    answer = conn.request("GET", "/boom")
    assert answer.status == 500
    assert answer.headers.get("connection", "").lower() != "close"
    # The same keep-alive connection serves the next request.
    again = conn.request("GET", "/ok")
    assert (again.status, again.json()) == (200, {"status": "ok"})


def test_an_unhandled_error_is_logged_once_with_its_traceback_and_request_id(
    conn: RawConnection, log_lines: list[dict[str, Any]]
) -> None:
    assert conn.request("GET", "/boom", headers=[("X-Request-ID", "trace-500-2")]).status == 500
    conn.request("GET", "/ok")  # the first request's log lines are all written by now
    errors = [line for line in log_lines if "exc" in line or line["level"] == "error"]
    assert len(errors) == 1, errors
    assert errors[0]["logger"] == "authbus.http"
    assert errors[0]["request_id"] == "trace-500-2"
    assert "RuntimeError: a bug" in errors[0]["exc"]
