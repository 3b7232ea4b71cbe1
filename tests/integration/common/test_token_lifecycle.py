"""TokenAuth and AsyncTokenAuth against a real token service issuing real short-lived tokens.

The token service (SQLite + Redis) and a resource service protected by `requires()` run
under uvicorn on free ports. The token service counts the token requests it receives, so
"one token request for 50 callers at once" is checked where it matters: at the server.
Renewal, leeway and the 401 retry use tokens living 2 to 3 seconds; where a test needs to
be at an exact point of a token's life it moves the auth object's clock rather than
sleeping, so a loaded machine cannot make it flaky.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import uvicorn
from fastapi import Depends, FastAPI
from redis.asyncio import Redis
from starlette.types import ASGIApp, Receive, Scope, Send

from authbus.common import AsyncTokenAuth, RedisRevocationCheck, TokenAuth, TokenValidator
from authbus.common.security import Caller, requires
from authbus.core.app import install_error_handlers
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, TokenSettings
from authbus.token.app import create_app
from authbus.token.clients import ClientRepository, ClientSpec
from tests.conftest import free_port
from tests.integration.token.conftest import FakeUserService

SECRET = "a-secret-long-enough-for-the-tests"
CLIENTS = {"long": None, "short": 2, "three": 3}  # client id -> access token lifetime (s)


class CountTokenRequests:
    """ASGI middleware: how many `POST /token` the token service received."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.count = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/token":
            with self._lock:
                self.count += 1
        await self.app(scope, receive, send)


def resource_app(issuer: str, redis_url: str, prefix: str) -> FastAPI:
    """A service protected by authbus.common: tokens checked with the JWKS and Redis."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = Redis.from_url(redis_url)
        app.state.token_validator = TokenValidator(
            issuer=issuer,
            audiences=["authbus"],
            jwks_url=f"{issuer}/.well-known/jwks.json",
            revocation=RedisRevocationCheck(redis, prefix),
        )
        yield
        await app.state.token_validator.aclose()
        await redis.aclose()

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)

    @app.api_route("/whoami", methods=["GET", "POST"])
    async def whoami(caller: Caller = Depends(requires("events:read"))) -> dict[str, Any]:
        return {"client_id": caller.client_id, "jti": caller.claims["jti"]}

    return app


class Served:
    """An ASGI app under uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: ASGIApp, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@dataclass
class Live:
    issuer: str
    resource: str
    counter: CountTokenRequests

    def auth(self, client_id: str, **options: Any) -> TokenAuth:
        return TokenAuth(client_id, SECRET, issuer=self.issuer, scopes=["events:read"], **options)

    def async_auth(self, client_id: str, **options: Any) -> AsyncTokenAuth:
        return AsyncTokenAuth(
            client_id, SECRET, issuer=self.issuer, scopes=["events:read"], **options
        )

    def revoke(self, client_id: str, token: str) -> None:
        answer = httpx.post(
            f"{self.issuer}/revoke", data={"token": token}, auth=(client_id, SECRET), timeout=10
        )
        assert answer.status_code == 200, answer.text


async def _register_clients(settings: Settings) -> None:
    await upgrade_async(settings.database_url("token"), "token")
    engine = create_engine(settings.database_url("token"))
    try:
        repo = ClientRepository(create_sessionmaker(engine), cache_ttl_s=0)
        for client_id, ttl in CLIENTS.items():
            spec = ClientSpec(
                client_id,
                client_id,
                grant_types=("client_credentials",),
                scopes=("events:read",),
                access_token_ttl_s=ttl,
            )
            await repo.create(spec, secret=SECRET)
    finally:
        await engine.dispose()


@pytest.fixture
def live(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[Live]:
    token_port = free_port()
    issuer = f"http://127.0.0.1:{token_port}"
    settings = Settings(
        data_dir=tmp_path,
        token_url=issuer,
        user_url="http://user.test",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        token=TokenSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'token.db'}"),
    )
    asyncio.run(_register_clients(settings))
    counter = CountTokenRequests(
        create_app(settings, user_transport=httpx.MockTransport(FakeUserService().handle))
    )
    with (
        Served(counter, token_port),
        Served(resource_app(issuer, redis_url, redis_prefix)) as resource,
    ):
        yield Live(issuer, resource.url, counter)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


# -- one token request for many callers ------------------------------------------------


def test_fifty_threads_asking_at_once_cause_one_token_request(live: Live) -> None:
    auth = live.auth("long")
    start = threading.Barrier(50)
    answers: list[int] = []
    jtis: set[str] = set()
    lock = threading.Lock()

    def call() -> None:
        with requests.Session() as session:
            session.auth = auth
            start.wait()
            response = session.get(f"{live.resource}/whoami", timeout=30)
        with lock:
            answers.append(response.status_code)
            jtis.add(response.json().get("jti", ""))

    threads = [threading.Thread(target=call) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers == [200] * 50
    assert len(jtis) == 1  # every request carried the same token
    assert live.counter.count == 1
    assert auth.token_requests == 1
    auth.close()


async def test_fifty_tasks_asking_at_once_cause_one_token_request(live: Live) -> None:
    auth = live.async_auth("long")
    async with httpx.AsyncClient(auth=auth, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.get(f"{live.resource}/whoami") for _ in range(50))
        )
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.json()["jti"] for r in responses}) == 1
    assert live.counter.count == 1
    assert auth.token_requests == 1


# -- renewal and leeway ----------------------------------------------------------------


def test_token_shorter_than_the_leeway_is_reused_then_renewed_at_half_life(live: Live) -> None:
    auth = live.auth("short", leeway=30)  # the token lives 2 s, far less than the leeway
    first = auth.get_token()
    claims = _claims(first)
    assert claims["exp"] - claims["iat"] == 2
    # Not renewed on every use (what `exp - leeway` alone would do) ...
    for _ in range(5):
        assert auth.get_token() == first
    assert live.counter.count == 1
    # ... but once half its life has passed, while it is still valid.
    time.sleep(1.2)
    second = auth.get_token()
    assert second != first
    assert live.counter.count == 2
    with requests.Session() as session:
        session.auth = auth
        assert (
            session.get(f"{live.resource}/whoami", timeout=10).json()["jti"]
            == _claims(second)["jti"]
        )
    auth.close()


def test_token_is_renewed_a_leeway_before_expiry_not_earlier(live: Live) -> None:
    offset = [0.0]
    auth = live.auth("three", leeway=1, clock=lambda: time.time() + offset[0])
    first = auth.get_token()  # lives 3 s: renewal due at max(3 - 1, 3 / 2) = 2 s
    offset[0] = 1.7  # past half-life, before exp - leeway
    assert auth.get_token() == first
    offset[0] = 2.1
    second = auth.get_token()
    assert second != first
    assert live.counter.count == 2
    auth.close()


async def test_async_token_shorter_than_the_leeway_is_renewed_at_half_life(live: Live) -> None:
    offset = [0.0]
    auth = live.async_auth("short", leeway=30, clock=lambda: time.time() + offset[0])
    first = await auth.get_token()
    offset[0] = 0.9
    assert await auth.get_token() == first
    offset[0] = 1.1
    assert await auth.get_token() != first
    assert live.counter.count == 2


# -- a 401 from the resource -----------------------------------------------------------


def test_revoked_token_gets_401_then_a_new_token_and_one_retry(live: Live) -> None:
    auth = live.auth("long")
    with requests.Session() as session:
        session.auth = auth
        first = session.post(f"{live.resource}/whoami", json={"n": 1}, timeout=10)
        assert first.status_code == 200
        live.revoke("long", auth.get_token())
        again = session.post(f"{live.resource}/whoami", json={"n": 2}, timeout=10)
    assert again.status_code == 200, again.text
    assert [r.status_code for r in again.history] == [401]
    assert again.json()["jti"] != first.json()["jti"]
    assert again.request.body == b'{"n": 2}'  # the body was sent again
    assert live.counter.count == 2
    auth.close()


def test_a_token_that_expired_unnoticed_is_replaced_after_the_401(live: Live) -> None:
    # The client's clock stands still (say, a suspended laptop): it believes its 2 s token
    # is fresh; the resource sees it expired (its jti left the token store).
    frozen = time.time()
    auth = live.auth("short", clock=lambda: frozen)
    with requests.Session() as session:
        session.auth = auth
        first = session.get(f"{live.resource}/whoami", timeout=10)
        assert first.status_code == 200
        time.sleep(2.5)
        again = session.get(f"{live.resource}/whoami", timeout=10)
    assert again.status_code == 200, again.text
    assert [r.status_code for r in again.history] == [401]
    assert live.counter.count == 2
    auth.close()


async def test_async_revoked_token_gets_a_new_token_and_one_retry(live: Live) -> None:
    auth = live.async_auth("long")
    async with httpx.AsyncClient(auth=auth, timeout=10) as client:
        first = await client.post(f"{live.resource}/whoami", json={"n": 1})
        assert first.status_code == 200
        live.revoke("long", await auth.get_token())
        again = await client.post(f"{live.resource}/whoami", json={"n": 2})
    assert again.status_code == 200, again.text
    assert again.json()["jti"] != first.json()["jti"]
    assert live.counter.count == 2


async def test_a_second_401_is_returned_not_retried_again(live: Live) -> None:
    auth = live.async_auth("long")
    async with httpx.AsyncClient(auth=auth, timeout=10) as client:
        assert (await client.get(f"{live.resource}/whoami")).status_code == 200
        # Every token of this client is refused from now on (it lost the scope's owner).
        live.revoke("long", await auth.get_token())
        original = live.revoke

        def revoke_each_new_token(request: httpx.Request) -> None:
            token = request.headers["authorization"].removeprefix("Bearer ")
            original("long", token)

        client.event_hooks["request"] = [_async(revoke_each_new_token)]
        refused = await client.get(f"{live.resource}/whoami")
    assert refused.status_code == 401
    assert live.counter.count == 2  # one renewal, not a loop


def _async(hook: Any) -> Any:
    async def run(request: httpx.Request) -> None:
        await asyncio.to_thread(hook, request)

    return run
