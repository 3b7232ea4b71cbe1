"""requests-oauthlib's `BackendApplicationClient` (the client credentials grant, as its
documentation shows it) against a live token service, then RFC 7662 introspection and
RFC 7009 revocation with plain `requests`, as a resource server written in any language
would call them."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import uvicorn
from oauthlib.oauth2 import BackendApplicationClient
from oauthlib.oauth2.rfc6749.errors import InvalidClientError
from requests_oauthlib import OAuth2Session

from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.migrate import upgrade
from authbus.token.app import create_app
from authbus.token.clients import ClientRepository, ClientSpec
from tests.conftest import free_port

from .conftest import FakeUserService, make_settings

BACKEND_SCOPES = ("events:read", "events:publish")


@dataclass
class Live:
    url: str
    secrets: dict[str, str]

    @property
    def backend(self) -> tuple[str, str]:
        return ("backend", self.secrets["backend"])

    @property
    def resource_server(self) -> tuple[str, str]:
        return ("orders-api", self.secrets["orders-api"])


async def _create_clients(database_url: str) -> dict[str, str]:
    engine = create_engine(database_url)
    try:
        repo = ClientRepository(create_sessionmaker(engine))
        out: dict[str, str] = {}
        for spec in (
            ClientSpec(
                "backend", "Backend", grant_types=("client_credentials",), scopes=BACKEND_SCOPES
            ),
            # A resource server: it only introspects the tokens it is shown.
            ClientSpec("orders-api", "Orders API", grant_types=("client_credentials",)),
        ):
            _, secret = await repo.create(spec)
            assert secret is not None
            out[spec.client_id] = secret
        return out
    finally:
        await engine.dispose()


@pytest.fixture
def live(tmp_path: Path, database_url: str, store_settings: dict[str, Any]) -> Iterator[Live]:
    """The token service under uvicorn on a free loopback port, on each store (dict, Redis)
    and each database (SQLite, Postgres)."""
    port = free_port()
    settings = make_settings(tmp_path, database_url, **store_settings)
    settings = settings.model_copy(update={"token_url": f"http://127.0.0.1:{port}"})
    upgrade(database_url, "token")
    client_secrets = asyncio.run(_create_clients(database_url))
    app = create_app(settings, user_transport=httpx.MockTransport(FakeUserService().handle))
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{port}", client_secrets)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(autouse=True)
def _plain_http_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # oauthlib refuses http:// token endpoints unless told the transport is a test one.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")


def introspect(live: Live, token: str) -> dict[str, Any]:
    resp = requests.post(
        f"{live.url}/introspect", data={"token": token}, auth=live.resource_server, timeout=10
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = resp.json()
    return body


@pytest.mark.parametrize("include_client_id", [False, True], ids=["basic", "post"])
def test_backend_application_token_is_introspected_revoked_and_then_inactive(
    live: Live, include_client_id: bool
) -> None:
    with OAuth2Session(client=BackendApplicationClient(client_id="backend")) as session:
        # include_client_id=False: client_secret_basic; True: client_secret_post.
        token = session.fetch_token(
            f"{live.url}/token",
            client_id="backend",
            client_secret=live.secrets["backend"],
            include_client_id=include_client_id,
            timeout=10,
        )
    assert token["token_type"] == "Bearer"
    assert set(token["scope"]) == set(BACKEND_SCOPES)
    assert token["expires_in"] > 0
    assert "refresh_token" not in token  # RFC 6749 §4.4.3
    access = token["access_token"]

    before = introspect(live, access)
    assert before["active"] is True
    assert before["client_id"] == "backend"
    assert set(before["scope"].split()) == set(BACKEND_SCOPES)
    assert before["exp"] > time.time()

    revoked = requests.post(
        f"{live.url}/revoke",
        data={"token": access, "token_type_hint": "access_token"},
        auth=live.backend,
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text

    assert introspect(live, access) == {"active": False}


def test_revoking_one_token_leaves_the_client_able_to_get_another(live: Live) -> None:
    with OAuth2Session(client=BackendApplicationClient(client_id="backend")) as session:
        first = session.fetch_token(
            f"{live.url}/token", client_id="backend", client_secret=live.secrets["backend"]
        )
        requests.post(
            f"{live.url}/revoke",
            data={"token": first["access_token"]},
            auth=live.backend,
            timeout=10,
        ).raise_for_status()
        second = session.fetch_token(
            f"{live.url}/token", client_id="backend", client_secret=live.secrets["backend"]
        )
    assert second["access_token"] != first["access_token"]
    assert introspect(live, first["access_token"]) == {"active": False}
    assert introspect(live, second["access_token"])["active"] is True


def test_backend_application_with_a_wrong_secret_gets_invalid_client(live: Live) -> None:
    with (
        OAuth2Session(client=BackendApplicationClient(client_id="backend")) as session,
        pytest.raises(InvalidClientError),
    ):
        session.fetch_token(
            f"{live.url}/token", client_id="backend", client_secret="not-the-secret"
        )
