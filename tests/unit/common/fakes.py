"""A fake token endpoint and resource server as httpx handlers (sync and async)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx

ISSUER = "http://token.test"
TOKEN_URL = f"{ISSUER}/token"
RESOURCE_URL = "http://resource.test/v1/things"


class FakeTokenEndpoint:
    """Issues `tok-1`, `tok-2`, ... for client `svc` / secret `s3cret:x`; counts requests."""

    client_id = "svc"
    client_secret = "s3cret:x"

    def __init__(self, *, expires_in: int | None = 300, delay: float = 0.0) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.token_requests = 0
        self.metadata_requests = 0
        self.forms: list[dict[str, str]] = []
        self.error: tuple[int, dict[str, Any]] | None = None
        self.refresh_tokens = {"rt-1"}
        self._lock = threading.Lock()

    def _authenticated(self, request: httpx.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.startswith("Basic "):
            raw = base64.b64decode(header[6:]).decode()
            cid, _, secret = raw.partition(":")
            cid = unquote(cid.replace("+", " "))
            secret = unquote(secret.replace("+", " "))
            return cid == self.client_id and secret == self.client_secret
        return form.get("client_id") == "public-web"

    def respond(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/oauth-authorization-server":
            self.metadata_requests += 1
            return httpx.Response(200, json={"issuer": ISSUER, "token_endpoint": TOKEN_URL})
        assert request.url.path == "/token", request.url
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        with self._lock:
            self.token_requests += 1
            n = self.token_requests
            self.forms.append(form)
        if self.error is not None:
            return httpx.Response(self.error[0], json=self.error[1])
        if not self._authenticated(request, form):
            return httpx.Response(
                401, json={"error": "invalid_client", "error_description": "bad credentials"}
            )
        body: dict[str, Any] = {"access_token": f"tok-{n}", "token_type": "Bearer"}
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return httpx.Response(
                    400, json={"error": "invalid_grant", "error_description": "revoked"}
                )
            self.refresh_tokens = {f"rt-{n + 1}"}  # rotation
            body["refresh_token"] = f"rt-{n + 1}"
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        if "scope" in form:
            body["scope"] = form["scope"]
        return httpx.Response(200, json=body)

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            time.sleep(self.delay)
        return self.respond(request)

    async def async_handler(self, request: httpx.Request) -> httpx.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.respond(request)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.async_handler)


class FakeResource:
    """Answers 200 with the token it saw, or 401 for tokens in `rejected`."""

    def __init__(self) -> None:
        self.rejected: set[str] = set()
        self.seen: list[tuple[str, bytes]] = []

    def respond(self, request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        body = request.read()
        self.seen.append((token, body))
        if token in self.rejected:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return httpx.Response(200, json={"token": token, "body": body.decode()})


def routing(
    token: Callable[[httpx.Request], Any], resource: Callable[[httpx.Request], Any]
) -> Callable[[httpx.Request], Any]:
    """One handler serving both hosts."""

    def handle(request: httpx.Request) -> Any:
        return token(request) if request.url.host == "token.test" else resource(request)

    return handle
