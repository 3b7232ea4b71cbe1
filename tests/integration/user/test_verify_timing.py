"""POST /v1/credentials/verify does the same work for unknown users and wrong passwords.

The time of an answer is what it costs to compute, so the test compares the work itself
rather than a wall clock (no timed assertions, DESIGN.md "Tests"): the same number of
argon2 verifications with the same cost parameters, the same SQL statements in the same
order, and the same answer, byte for byte. Real argon2 and a real database (SQLite, and
Postgres when configured) do the work.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import extract_parameters
from fastapi import FastAPI
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy import event
from sqlalchemy.engine import Engine

from authbus.core.settings import Settings, UserSettings
from authbus.user.app import create_app
from tests.integration.user.conftest import PASSWORD
from tests.support.tokens import TokenMinter


@dataclass
class Work:
    """What one request made the service do."""

    # (memory KiB, time cost, parallelism) of each argon2 hash verified.
    verifications: list[tuple[int, int, int]] = field(default_factory=list)
    # Each SQL statement, with literals and placeholders blurred.
    statements: list[str] = field(default_factory=list)


class WorkRecorder:
    """Records argon2 verifications and SQL statements while `current` is set."""

    def __init__(self) -> None:
        self.current: Work | None = None

    def on_verify(self, hash: str | bytes) -> None:
        if self.current is not None:
            p = extract_parameters(hash.decode() if isinstance(hash, bytes) else hash)
            self.current.verifications.append((p.memory_cost, p.time_cost, p.parallelism))

    def on_statement(self, statement: str) -> None:
        if self.current is not None:
            # Parameters differ by value (the username tried), never by shape.
            shape = re.sub(r"\$\d+|\?|'[^']*'|\d+", "_", " ".join(statement.split()))
            self.current.statements.append(shape)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[WorkRecorder]:
    rec = WorkRecorder()
    real_verify = Argon2Hasher.verify

    def counting_verify(self: Argon2Hasher, password: str | bytes, hash: str | bytes) -> bool:
        rec.on_verify(hash)
        return real_verify(self, password, hash)

    monkeypatch.setattr(Argon2Hasher, "verify", counting_verify)

    def before_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        rec.on_statement(statement)

    event.listen(Engine, "before_cursor_execute", before_execute)
    yield rec
    event.remove(Engine, "before_cursor_execute", before_execute)


@pytest.fixture
def timing_settings(migrated_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        redis_url=None,
        user=UserSettings(
            database_url=migrated_url,
            # Parameters of their own, so a dummy hash made any other way would show.
            argon2_memory_kib=2048,
            argon2_time_cost=3,
            # Every attempt here fails by design; none may be throttled.
            throttle_free_attempts=1_000,
        ),
    )


@pytest.fixture
async def timing_client(
    timing_settings: Settings, minter: TokenMinter
) -> AsyncIterator[httpx.AsyncClient]:
    app: FastAPI = create_app(timing_settings, token_validator=minter.validator())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://user.test") as c:
            yield c


async def test_unknown_user_and_wrong_password_do_the_same_work(
    timing_client: httpx.AsyncClient,
    admin: dict[str, str],
    verifier: dict[str, str],
    recorder: WorkRecorder,
) -> None:
    r = await timing_client.post(
        "/v1/users",
        json={"username": "alice", "password": PASSWORD, "permissions": ["orders:read"]},
        headers=admin,
    )
    assert r.status_code == 201, r.text

    async def attempt(username: str, password: str) -> tuple[Work, httpx.Response]:
        recorder.current = work = Work()
        response = await timing_client.post(
            "/v1/credentials/verify",
            json={"username": username, "password": password},
            headers=verifier,
        )
        recorder.current = None
        return work, response

    # Names of other lengths and letter cases too: nothing may depend on them.
    unknown = [await attempt(name, "not the password") for name in ("nobody", "ALICE2", "zz")]
    wrong = [await attempt(name, "not the password") for name in ("alice", "ALICE", "Alice")]
    right_work, right = await attempt("alice", PASSWORD)
    assert right.status_code == 200

    # One verification each, at the configured cost: the unknown user's is the dummy hash.
    for work, _ in unknown + wrong:
        assert work.verifications == [(2048, 3, 1)]
    assert right_work.verifications == [(2048, 3, 1)]
    # The same statements, in the same order (one hash lookup, one audit line).
    reference = wrong[0][0].statements
    assert reference and any("INSERT" in s.upper() for s in reference)
    for work, _ in unknown + wrong:
        assert work.statements == reference
    # The same answer, word for word.
    assert {(r.status_code, r.content) for _, r in unknown + wrong} == {
        (401, b'{"error":"invalid_credentials","error_description":"invalid username or password"}')
    }
    assert {r.headers.get("www-authenticate") for _, r in unknown + wrong} == {
        wrong[0][1].headers.get("www-authenticate")
    }


async def test_the_dummy_hash_follows_the_configured_cost(
    timing_client: httpx.AsyncClient, verifier: dict[str, str], recorder: WorkRecorder
) -> None:
    """Made at startup with the current parameters, not a stored constant."""
    recorder.current = work = Work()
    await timing_client.post(
        "/v1/credentials/verify",
        json={"username": "nobody", "password": "whatever it is"},
        headers=verifier,
    )
    assert work.verifications == [(2048, 3, 1)]
