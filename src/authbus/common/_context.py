"""The request id of the request in flight, shared by the services and the client library.

The services' middleware (`authbus.core.app`) sets `request_id_var` from the incoming
`X-Request-ID` (or a fresh id); `TokenAuth`, `AsyncTokenAuth` and the event publishers
send it on with their outgoing requests, so one id follows a call across services.
It lives here, not in `authbus.core`, because `common` imports nothing from the services.

    token = request_id_var.set("7f3c...")
    try:
        session.get(url)          # carries X-Request-ID: 7f3c...
    finally:
        request_id_var.reset(token)
"""

from __future__ import annotations

import contextvars
from collections.abc import MutableMapping

__all__ = ["REQUEST_ID_HEADER", "add_request_id", "current_request_id", "request_id_var"]

REQUEST_ID_HEADER = "X-Request-ID"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "authbus_request_id", default=None
)


def current_request_id() -> str | None:
    """The id of the request this code runs for, or None outside of one."""
    return request_id_var.get()


def add_request_id(headers: MutableMapping[str, str]) -> None:
    """Set `X-Request-ID` to the current id when one is set and `headers` has none.

    `headers` must compare names case-insensitively (requests' and httpx's headers do).

    >>> from requests.structures import CaseInsensitiveDict
    >>> h = CaseInsensitiveDict(); t = request_id_var.set("r1"); add_request_id(h)
    >>> request_id_var.reset(t); h["x-request-id"]
    'r1'
    """
    rid = request_id_var.get()
    if rid and REQUEST_ID_HEADER not in headers:
        headers[REQUEST_ID_HEADER] = rid
