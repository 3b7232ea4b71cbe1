"""Bearer tokens for outgoing requests: `TokenAuth` (requests) and `AsyncTokenAuth` (httpx).

Both twins drive one protocol core (`authbus.common._oauth`): client credentials with
client_secret_basic, token endpoint given or discovered (RFC 8414), one cached token per
auth object shared by every thread or task (exactly one token request when many need one
at once), renewal ahead of expiry, one retry with a new token on a 401. Outgoing requests
also carry `X-Request-ID` when a request id is set (`authbus.common._context`) and they
have none, so one id follows a call across services.
`RefreshTokenAuth` / `AsyncRefreshTokenAuth` do the same from a user's refresh token.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from typing import Any

import httpx
import requests
from requests.auth import AuthBase

from authbus.common._context import add_request_id
from authbus.common._errors import TokenError
from authbus.common._oauth import (
    ClientCredentialsGrant,
    GrantCore,
    HTTPCall,
    RefreshTokenGrant,
    TokenSet,
)
from authbus.common._transport import SyncTransport, async_client, requests_session

__all__ = [
    "AsyncRefreshTokenAuth",
    "AsyncTokenAuth",
    "RefreshTokenAuth",
    "TokenAuth",
    "TokenError",
    "TokenSet",
]

Clock = Callable[[], float]


# -- requests ---------------------------------------------------------------------------


class _SyncBearerAuth(AuthBase):
    """requests plumbing shared by `TokenAuth` and `RefreshTokenAuth`."""

    def __init__(self, core: GrantCore, transport: SyncTransport | None, timeout: float) -> None:
        self._core = core
        self._lock = threading.Lock()
        self._session = requests_session(transport)
        self._timeout = timeout

    @property
    def token_requests(self) -> int:
        """How many token responses this object has received (for tests and metrics)."""
        return self._core.token_requests

    def _send(self, call: HTTPCall) -> requests.Response:
        try:
            return self._session.request(
                call.method,
                call.url,
                headers=call.headers,
                data=call.data,
                timeout=self._timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise TokenError(
                "temporarily_unavailable", f"{call.url} is unreachable ({type(exc).__name__})"
            ) from exc

    def get_token(self) -> str:
        """A valid access token: the cached one, or a new one (one request for all threads).

        Example:
            headers = {"Authorization": f"Bearer {auth.get_token()}"}
        """
        token = self._core.current()
        if token is not None:
            return token
        with self._lock:
            token = self._core.current()  # another thread may have fetched it meanwhile
            if token is not None:
                return token
            metadata = self._core.metadata_call()
            if metadata is not None:
                response = self._send(metadata)
                self._core.accept_metadata(response.status_code, response.content)
            requested_at = self._core.clock()
            response = self._send(self._core.token_call())
            return self._core.accept_token_response(
                response.status_code, response.content, requested_at
            ).access_token

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self.get_token()
        r.headers["Authorization"] = f"Bearer {token}"
        add_request_id(r.headers)
        if isinstance(r.body, bytes | str | None):  # a stream or file cannot be resent
            r.hooks["response"].append(self._retry_on_401)
        return r

    def _retry_on_401(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        if response.status_code != 401:
            return response
        sent = response.request.headers.get("Authorization", "")
        self._core.invalidate(sent.removeprefix("Bearer "))
        token = self.get_token()
        response.content  # noqa: B018  # drain it so the connection can be reused
        response.close()
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry.hooks["response"] = [  # once only
            h for h in retry.hooks["response"] if h != self._retry_on_401
        ]
        connection: Any = response.connection
        second: requests.Response = connection.send(retry, **kwargs)
        second.history.append(response)
        second.request = retry
        return second

    def close(self) -> None:
        """Close the connection pool used for token requests."""
        self._session.close()


class TokenAuth(_SyncBearerAuth):
    """requests auth that sends a client-credentials access token and keeps it fresh.

    The token endpoint is `token_url`, or discovered from `{issuer}/.well-known/
    oauth-authorization-server`. The token is cached in this object and shared by every
    thread using it; it is renewed `leeway` seconds before expiry (not before half its
    lifetime). A 401 from the resource drops it and retries the request once. Token
    endpoint failures raise `TokenError` with the OAuth error code. `audience` (or
    `resource`, its RFC 8707 name; give one) asks for a token minted for that service: it is
    sent as `resource`, and the token service answers `invalid_target` for an audience it
    does not know. `transport` (a requests adapter or an httpx transport) carries the token
    requests, for tests.

    Example:
        session = requests.Session()
        session.auth = TokenAuth("user-service", secret, issuer="http://127.0.0.1:8082",
                                 scopes=["events:publish"])
        session.post(f"{event_url}/v1/channels/users/events", json=event)
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        token_url: str | None = None,
        issuer: str | None = None,
        scopes: Iterable[str] = (),
        audience: str | None = None,
        resource: str | None = None,
        leeway: float = 30.0,
        timeout: float = 10.0,
        transport: SyncTransport | None = None,
        clock: Clock = time.time,
    ) -> None:
        core = ClientCredentialsGrant(
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            issuer=issuer,
            scopes=scopes,
            audience=audience,
            resource=resource,
            leeway=leeway,
            clock=clock,
        )
        super().__init__(core, transport, timeout)


class RefreshTokenAuth(_SyncBearerAuth):
    """requests auth for a user's tokens: renews the access token with the refresh token.

    Give the tokens from the login (`access_token`, `expires_at` on `clock`, optional);
    rotated refresh tokens are kept and passed to `on_tokens` so you can store them. A
    refused refresh (`invalid_grant`: expired or revoked) raises `TokenError`: the user
    must log in again. `client_secret=None` for a public client.

    Example:
        auth = RefreshTokenAuth("web", refresh_token, issuer=issuer,
                                on_tokens=lambda t: save(t.refresh_token))
        requests.get(f"{user_url}/v1/users/me", auth=auth)
    """

    def __init__(
        self,
        client_id: str,
        refresh_token: str,
        *,
        client_secret: str | None = None,
        access_token: str | None = None,
        expires_at: float | None = None,
        on_tokens: Callable[[TokenSet], None] | None = None,
        token_url: str | None = None,
        issuer: str | None = None,
        scopes: Iterable[str] = (),
        leeway: float = 30.0,
        timeout: float = 10.0,
        transport: SyncTransport | None = None,
        clock: Clock = time.time,
    ) -> None:
        core = RefreshTokenGrant(
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=expires_at,
            on_tokens=on_tokens,
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            issuer=issuer,
            scopes=scopes,
            audience=None,
            resource=None,
            leeway=leeway,
            clock=clock,
        )
        super().__init__(core, transport, timeout)

    @property
    def refresh_token(self) -> str:
        """The current (possibly rotated) refresh token."""
        core = self._core
        assert isinstance(core, RefreshTokenGrant)
        return core.refresh_token


# -- httpx ------------------------------------------------------------------------------


class _AsyncBearerAuth(httpx.Auth):
    """httpx plumbing shared by `AsyncTokenAuth` and `AsyncRefreshTokenAuth`."""

    def __init__(
        self, core: GrantCore, transport: httpx.AsyncBaseTransport | None, timeout: float
    ) -> None:
        self._core = core
        self._transport = transport
        self._timeout = timeout
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def token_requests(self) -> int:
        """How many token responses this object has received (for tests and metrics)."""
        return self._core.token_requests

    def _get_lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to one event loop; make a new one if used from another.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def _send(self, client: httpx.AsyncClient, call: HTTPCall) -> httpx.Response:
        try:
            return await client.request(call.method, call.url, headers=call.headers, data=call.data)
        except httpx.HTTPError as exc:
            raise TokenError(
                "temporarily_unavailable", f"{call.url} is unreachable ({type(exc).__name__})"
            ) from exc

    async def get_token(self) -> str:
        """A valid access token: the cached one, or a new one (one request for all tasks).

        Example:
            headers = {"Authorization": f"Bearer {await auth.get_token()}"}
        """
        token = self._core.current()
        if token is not None:
            return token
        async with self._get_lock():
            token = self._core.current()  # another task may have fetched it meanwhile
            if token is not None:
                return token
            async with async_client(self._transport, self._timeout) as client:
                metadata = self._core.metadata_call()
                if metadata is not None:
                    response = await self._send(client, metadata)
                    self._core.accept_metadata(response.status_code, response.content)
                requested_at = self._core.clock()
                response = await self._send(client, self._core.token_call())
            return self._core.accept_token_response(
                response.status_code, response.content, requested_at
            ).access_token

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Add the bearer token (and X-Request-ID); on a 401 get a new one and resend once."""
        token = await self.get_token()
        request.headers["Authorization"] = f"Bearer {token}"
        add_request_id(request.headers)
        replayable = _replayable(request)  # decided before sending consumes a stream
        response = yield request
        if response.status_code != 401 or not replayable:
            return
        self._core.invalidate(token)
        request.headers["Authorization"] = f"Bearer {await self.get_token()}"
        yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        """Not supported: use `TokenAuth` with requests, or an `httpx.AsyncClient`."""
        raise RuntimeError(f"{type(self).__name__} needs an httpx.AsyncClient")
        yield request  # pragma: no cover  # makes this a generator, as httpx expects


def _replayable(request: httpx.Request) -> bool:
    try:
        request.content  # noqa: B018  # raises for a streamed body that was not read
    except httpx.RequestNotRead:
        return False
    return True


class AsyncTokenAuth(_AsyncBearerAuth):
    """httpx auth (for `httpx.AsyncClient`) that sends a client-credentials access token.

    The async twin of `TokenAuth`, with the same options (`audience` is sent as RFC 8707
    `resource`); `transport` is an httpx async transport for the token requests (e.g.
    `httpx.ASGITransport(token_app)` in tests).
    One token request serves every task that needs a token at the same time.

    Example:
        auth = AsyncTokenAuth("user-service", secret, issuer="http://127.0.0.1:8082",
                              scopes=["events:publish"])
        async with httpx.AsyncClient(auth=auth) as client:
            await client.post(f"{event_url}/v1/channels/users/events", json=event)
    """

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        token_url: str | None = None,
        issuer: str | None = None,
        scopes: Iterable[str] = (),
        audience: str | None = None,
        resource: str | None = None,
        leeway: float = 30.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.time,
    ) -> None:
        core = ClientCredentialsGrant(
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            issuer=issuer,
            scopes=scopes,
            audience=audience,
            resource=resource,
            leeway=leeway,
            clock=clock,
        )
        super().__init__(core, transport, timeout)


class AsyncRefreshTokenAuth(_AsyncBearerAuth):
    """The httpx twin of `RefreshTokenAuth`: a user's tokens, renewed by refresh token.

    Example:
        auth = AsyncRefreshTokenAuth("web", refresh_token, issuer=issuer)
        async with httpx.AsyncClient(auth=auth) as client:
            me = (await client.get(f"{user_url}/v1/users/me")).json()
    """

    def __init__(
        self,
        client_id: str,
        refresh_token: str,
        *,
        client_secret: str | None = None,
        access_token: str | None = None,
        expires_at: float | None = None,
        on_tokens: Callable[[TokenSet], None] | None = None,
        token_url: str | None = None,
        issuer: str | None = None,
        scopes: Iterable[str] = (),
        leeway: float = 30.0,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Clock = time.time,
    ) -> None:
        core = RefreshTokenGrant(
            refresh_token=refresh_token,
            access_token=access_token,
            expires_at=expires_at,
            on_tokens=on_tokens,
            client_id=client_id,
            client_secret=client_secret,
            token_url=token_url,
            issuer=issuer,
            scopes=scopes,
            audience=None,
            resource=None,
            leeway=leeway,
            clock=clock,
        )
        super().__init__(core, transport, timeout)

    @property
    def refresh_token(self) -> str:
        """The current (possibly rotated) refresh token."""
        core = self._core
        assert isinstance(core, RefreshTokenGrant)
        return core.refresh_token
