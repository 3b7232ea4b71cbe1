"""Injectable transports: run the client library against a mock or an in-process app.

`requests` and `httpx` have different plug points (adapters vs transports); so that a
test needs only one fake, `HTTPXAdapter` lets a `requests.Session` send through any
synchronous httpx transport (`httpx.MockTransport`, `httpx.WSGITransport`, ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

#: what `TokenAuth(transport=...)` takes for its token endpoint requests
SyncTransport = BaseAdapter | httpx.BaseTransport


class HTTPXAdapter(BaseAdapter):
    """A `requests` transport adapter that sends through an httpx transport.

    Example:
        >>> import httpx, requests
        >>> mock = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
        >>> session = requests.Session()
        >>> session.mount("http://", HTTPXAdapter(mock))
        >>> session.get("http://service.test/").json()
        {'ok': True}
    """

    def __init__(self, transport: httpx.BaseTransport) -> None:
        super().__init__()
        self.transport = transport

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | tuple[float, float] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send `request` through the httpx transport and read the whole response."""
        body = request.body
        if body is not None and not isinstance(body, bytes | str):
            body = b"".join(
                chunk if isinstance(chunk, bytes) else str(chunk).encode() for chunk in body
            )
        if isinstance(body, str):
            body = body.encode()
        outgoing = httpx.Request(
            request.method or "GET",
            request.url or "",
            headers=list(request.headers.items()),
            content=body,
        )
        try:
            incoming = self.transport.handle_request(outgoing)
        except httpx.TimeoutException as exc:  # requests' callers expect requests' errors
            raise requests.Timeout(str(exc), request=request) from exc
        except httpx.TransportError as exc:
            raise requests.ConnectionError(str(exc), request=request) from exc
        try:
            content = incoming.read()
        finally:
            incoming.close()
        return self._build_response(request, incoming, content)

    def _build_response(
        self, request: requests.PreparedRequest, incoming: httpx.Response, content: bytes
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = incoming.status_code
        response.headers = CaseInsensitiveDict(incoming.headers.items())
        response.encoding = get_encoding_from_headers(response.headers)
        response.reason = incoming.reason_phrase
        response.url = request.url or ""
        response.request = request
        response.connection = self  # type: ignore[assignment]  # duck-typed: .send()
        response._content = content
        return response

    def close(self) -> None:
        """Close the underlying httpx transport."""
        self.transport.close()


def requests_session(transport: SyncTransport | None = None) -> requests.Session:
    """A `requests.Session` whose http(s) requests go through `transport` when given.

    Example:
        session = requests_session(httpx.MockTransport(handler))
    """
    session = requests.Session()
    if transport is not None:
        adapter = transport if isinstance(transport, BaseAdapter) else HTTPXAdapter(transport)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return session


@asynccontextmanager
async def async_client(
    transport: httpx.AsyncBaseTransport | None, request_timeout: float
) -> AsyncIterator[httpx.AsyncClient]:
    """A short-lived `httpx.AsyncClient`; an injected `transport` is left open (its owner
    closes it), the default one is closed on exit.

    Example:
        async with async_client(None, request_timeout=5) as client:
            await client.get(url)
    """
    client = httpx.AsyncClient(transport=transport, timeout=request_timeout)
    try:
        yield client
    finally:
        if transport is None:
            await client.aclose()
