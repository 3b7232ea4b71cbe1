"""requires(): 401 / 403 / 503 through a tiny FastAPI app rendered like the services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI

from authbus.common.security import Caller, requires
from authbus.core.app import install_error_handlers
from tests.support.tokens import FakeClock, TokenMinter


@pytest.fixture
def minter() -> TokenMinter:
    return TokenMinter(clock=FakeClock())


def make_app(minter: TokenMinter, **validator_kw: object) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.state.token_validator = minter.validator(**validator_kw)

    @app.get("/me")
    async def me(caller: Caller = Depends(requires())) -> dict[str, object]:
        return {"sub": caller.subject, "scopes": sorted(caller.scopes)}

    @app.get("/admin")
    async def admin(
        caller: Caller = Depends(requires("users:admin", "users:verify")),
    ) -> dict[str, str]:
        return {"sub": caller.subject}

    return app


@pytest.fixture
async def client(minter: TokenMinter) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(make_app(minter))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_valid_token_reaches_the_endpoint(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    response = await client.get("/me", headers=bearer(minter.mint("u1", ["a", "b"])))
    assert response.status_code == 200
    assert response.json() == {"sub": "u1", "scopes": ["a", "b"]}


async def test_missing_token_is_401_with_bare_bearer_challenge(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/me")
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "error=" not in response.headers["www-authenticate"]  # RFC 6750 §3.1


async def test_non_bearer_scheme_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert response.status_code == 401


async def test_invalid_token_is_401_invalid_token(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    response = await client.get("/me", headers=bearer(minter.mint(ttl=-3600)))
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_token",
        "error_description": "the token has expired",
    }
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge
    assert 'error_description="the token has expired"' in challenge


async def test_forged_tokens_are_401(client: httpx.AsyncClient, minter: TokenMinter) -> None:
    for token in (minter.forge_unsigned(), minter.forge_hs256_with_public_key(), "garbage"):
        response = await client.get("/me", headers=bearer(token))
        assert response.status_code == 401, token


async def test_missing_scopes_is_403_listing_them(
    client: httpx.AsyncClient, minter: TokenMinter
) -> None:
    response = await client.get("/admin", headers=bearer(minter.mint(scopes=["users:verify"])))
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "insufficient_scope"
    assert body["missing_scopes"] == ["users:admin"]
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="users:admin users:verify"' in challenge


async def test_all_scopes_present_passes(client: httpx.AsyncClient, minter: TokenMinter) -> None:
    token = minter.mint(scopes=["users:admin", "users:verify", "x"])
    assert (await client.get("/admin", headers=bearer(token))).status_code == 200


async def test_unreachable_keys_are_503_with_retry_after(minter: TokenMinter) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    app = make_app(
        minter, jwks_url="http://token.test/jwks", key_set=None, transport=httpx.MockTransport(down)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app), base_url="http://svc.test"
    ) as c:
        response = await c.get("/me", headers=bearer(minter.mint()))
    assert response.status_code == 503
    assert response.json()["error"] == "temporarily_unavailable"
    assert int(response.headers["retry-after"]) > 0


async def test_missing_validator_is_a_configuration_error(minter: TokenMinter) -> None:
    app = make_app(minter)
    del app.state.token_validator
    transport = httpx.ASGITransport(app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc.test") as c:
        response = await c.get("/me", headers=bearer(minter.mint()))
    assert response.status_code == 500


async def test_openapi_declares_bearer_security(minter: TokenMinter) -> None:
    schema = make_app(minter).openapi()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
