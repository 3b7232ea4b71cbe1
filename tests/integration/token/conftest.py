"""A token service on a real database (SQLite; Postgres when configured) and a real token
store (the in-process dict and Redis), reached through httpx's ASGI transport, with a fake
user service implementing /v1/credentials/verify."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from authbus.core.migrate import upgrade_async
from authbus.core.settings import Settings, TokenSettings
from authbus.token.app import create_app
from authbus.token.clients import ClientSpec
from authbus.token.pkce import s256_challenge
from authbus.token.service import TokenService

ISSUER = "http://token.test"
VERIFIER = "x" * 64
CHALLENGE = s256_challenge(VERIFIER)
WEB_REDIRECT = "https://app.example.com/cb"


@dataclass
class FakeUser:
    id: str
    username: str
    password: str
    permissions: frozenset[str]
    disabled: bool = False


@dataclass
class FakeUserService:
    """Implements the verify contract of the brief; records the bearer tokens it saw."""

    users: dict[str, FakeUser] = field(default_factory=dict)
    tokens: list[str] = field(default_factory=list)
    down: bool = False
    throttled: bool = False

    def add(self, username: str, password: str, *perms: str, disabled: bool = False) -> None:
        self.users[username.lower()] = FakeUser(
            f"id-{username}", username, password, frozenset(perms), disabled
        )

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("user service down", request=request)
        assert request.url.path == "/v1/credentials/verify"
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return httpx.Response(401, json={"error": "invalid_token"})
        self.tokens.append(auth[7:])
        if self.throttled:
            return httpx.Response(
                429, json={"error": "too_many_attempts"}, headers={"Retry-After": "7"}
            )
        data = json.loads(request.content)
        user = self.users.get(str(data["username"]).lower())
        if user is None or user.password != data["password"]:
            return httpx.Response(401, json={"error": "invalid_credentials"})
        if user.disabled:
            return httpx.Response(403, json={"error": "user_disabled"})
        missing = sorted(set(data.get("scopes") or []) - user.permissions)
        if missing:
            return httpx.Response(
                403, json={"error": "insufficient_rights", "missing_scopes": missing}
            )
        return httpx.Response(
            200,
            json={
                "user": {
                    "id": user.id,
                    "username": user.username,
                    "email": None,
                    "disabled": False,
                    "permissions": sorted(user.permissions),
                    "roles": [],
                    "effective_permissions": sorted(user.permissions),
                }
            },
        )


@dataclass
class Env:
    """The running app, an HTTP client to it, and the secrets of its test clients."""

    app: FastAPI
    http: httpx.AsyncClient
    users: FakeUserService
    secrets: dict[str, str]
    settings: Settings

    @property
    def service(self) -> TokenService:
        svc: TokenService = self.app.state.token
        return svc

    def basic(self, client_id: str, secret: str | None = None) -> dict[str, str]:
        raw = f"{client_id}:{secret if secret is not None else self.secrets[client_id]}"
        return {"Authorization": "Basic " + base64.b64encode(raw.encode()).decode()}

    async def client_token(self, client_id: str = "admin", scope: str | None = None) -> str:
        form = {"grant_type": "client_credentials"}
        if scope:
            form["scope"] = scope
        resp = await self.http.post("/token", data=form, headers=self.basic(client_id))
        assert resp.status_code == 200, resp.text
        token: str = resp.json()["access_token"]
        return token


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def hidden_fields(html: str) -> dict[str, str]:
    import html as html_lib

    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html)
    return {k: html_lib.unescape(v) for k, v in fields}


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def fragment_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).fragment).items()}


def auth_params(**overrides: str) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": "web",
        "redirect_uri": WEB_REDIRECT,
        "scope": "orders:read",
        "state": "st-123",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v != ""}


async def submit_login(
    http: httpx.AsyncClient,
    params: Mapping[str, str],
    username: str = "alice",
    password: str = "alice-pw",
) -> httpx.Response:
    """GET the login page, then POST it back the way a browser would."""
    page = await http.get("/authorize", params=params)
    assert page.status_code == 200, page.text
    form = hidden_fields(page.text)
    form.update({"username": username, "password": password})
    return await http.post("/authorize", data=form)


def make_settings(tmp_path: Path, database_url: str, **extra: Any) -> Settings:
    token = TokenSettings(database_url=database_url, **extra.pop("token", {}))
    return Settings(
        data_dir=tmp_path,
        token_url=ISSUER,
        user_url="http://user.test",
        token=token,
        **extra,
    )


async def start_env(
    settings: Settings, users: FakeUserService, *, clients: bool = True, **app_options: Any
) -> AsyncIterator[Env]:
    """Run the app (migrations first); `clients=False` for a second replica of one DB."""
    await upgrade_async(settings.database_url("token"), "token")
    app = create_app(settings, user_transport=httpx.MockTransport(users.handle), **app_options)
    async with app.router.lifespan_context(app):
        svc: TokenService = app.state.token
        secrets: dict[str, str] = {}
        if not clients:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
                yield Env(app, http, users, secrets, settings)
            return
        specs = [
            ClientSpec(
                "web",
                "Web app",
                redirect_uris=(WEB_REDIRECT,),
                grant_types=("authorization_code", "refresh_token"),
                scopes=("orders:read", "orders:write"),
                first_party=True,
            ),
            ClientSpec(
                "thirdparty",
                "Third-party app",
                redirect_uris=("https://third.example.com/cb",),
                scopes=("orders:read",),
            ),
            ClientSpec(
                "spa",
                "SPA",
                type="public",
                redirect_uris=("https://spa.example.com/cb", "http://127.0.0.1/cb"),
                scopes=("orders:read",),
                allow_implicit=True,
                first_party=True,
            ),
            ClientSpec(
                "admin",
                "Admin",
                grant_types=("client_credentials",),
                scopes=("clients:admin", "events:read"),
            ),
            ClientSpec(
                "svc", "Service", grant_types=("client_credentials",), scopes=("events:read",)
            ),
        ]
        for spec in specs:
            _, secret = await svc.clients.create(spec)
            if secret:
                secrets[spec.client_id] = secret
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as http:
            yield Env(app, http, users, secrets, settings)


@pytest.fixture
def users() -> FakeUserService:
    fake = FakeUserService()
    fake.add("alice", "alice-pw", "orders:read", "orders:write")
    fake.add("bob", "bob-pw", "orders:read", disabled=True)
    fake.add("carol", "carol-pw")
    return fake


@pytest.fixture(params=["dict", "redis"])
def store_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings choosing the token store: the in-process dict (no Redis configured), or
    Redis (a flushed database and a prefix of this test's own)."""
    if request.param == "dict":
        return {}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "redis_prefix": request.getfixturevalue("redis_prefix"),
    }


@pytest.fixture
async def env(
    tmp_path: Path, database_url: str, users: FakeUserService, store_settings: dict[str, Any]
) -> AsyncIterator[Env]:
    """The token service on each store (dict, Redis) and each database (SQLite, Postgres)."""
    async for e in start_env(make_settings(tmp_path, database_url, **store_settings), users):
        yield e
