"""Publish events to the event service: `EventPublisher` (requests) and its httpx async twin.

    from authbus.common import EventPublisher, TokenAuth

    publisher = EventPublisher("http://127.0.0.1:8083",
                               auth=TokenAuth("billing", secret, issuer=token_url,
                                              scopes=["events:publish"]))
    event = publisher.publish("orders", "order.placed", {"order_id": "42"},
                              aggregate_type="order", aggregate_id="42", expected_version=0,
                              idempotency_key="place-42")
    event.position   # its place in the log

Both twins share the request building and response parsing below; only the transport differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import requests

from authbus.common._context import add_request_id
from authbus.common._envelope import Event
from authbus.common._errors import AuthbusClientError

__all__ = ["AsyncEventPublisher", "EventPublisher", "PublishError"]

_OPTIONS = (
    "aggregate_type",
    "aggregate_id",
    "aggregate_version",
    "expected_version",
    "correlation_id",
    "causation_id",
)


class PublishError(AuthbusClientError):
    """The event service refused the event (`error` is its code) or could not be reached.

    A 409 on `expected_version` carries `current_version` in `details`.
    """

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status_code: int | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.error = error
        self.description = description
        self.status_code = status_code
        self.details = dict(details or {})
        super().__init__(f"{error}: {description}" if description else error)


def _request(
    base_url: str,
    channel: str,
    type_: str,
    data: Mapping[str, Any] | None,
    options: Mapping[str, Any],
) -> tuple[str, dict[str, Any], dict[str, str]]:
    unknown = set(options) - {*_OPTIONS, "idempotency_key"}
    if unknown:
        raise TypeError(f"unknown publish options: {sorted(unknown)}")
    body: dict[str, Any] = {"type": type_, "data": dict(data or {})}
    body.update({k: v for k, v in options.items() if k in _OPTIONS and v is not None})
    headers: dict[str, str] = {}
    if options.get("idempotency_key"):
        headers["Idempotency-Key"] = str(options["idempotency_key"])
    add_request_id(headers)  # the request id in flight, so the event service logs it too
    url = f"{base_url.rstrip('/')}/v1/channels/{quote(channel, safe='')}/events"
    return url, body, headers


def _result(status: int, payload: Any) -> Event:
    if status in (200, 201):
        return Event.model_validate(payload)
    body = payload if isinstance(payload, dict) else {}
    raise PublishError(
        str(body.get("error", "server_error")),
        body.get("error_description"),
        status_code=status,
        details=body,
    )


class EventPublisher:
    """Synchronous publisher over a `requests.Session` (pass `auth=TokenAuth(...)`)."""

    def __init__(
        self,
        event_url: str,
        *,
        auth: requests.auth.AuthBase | None = None,
        session: requests.Session | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.event_url = event_url
        self.session = session or requests.Session()
        if auth is not None:
            self.session.auth = auth
        self.timeout = timeout

    def publish(
        self, channel: str, type: str, data: Mapping[str, Any] | None = None, **options: Any
    ) -> Event:
        """Append one event to `channel`; returns it as stored (id, position...).

        Options: aggregate_type, aggregate_id, aggregate_version, expected_version,
        correlation_id, causation_id, idempotency_key.
        """
        url, body, headers = _request(self.event_url, channel, type, data, options)
        try:
            response = self.session.post(url, json=body, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise PublishError("temporarily_unavailable", str(exc)) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return _result(response.status_code, payload)

    def close(self) -> None:
        """Close the underlying session."""
        self.session.close()


class AsyncEventPublisher:
    """Asynchronous publisher over an `httpx.AsyncClient` (pass `auth=AsyncTokenAuth(...)`)."""

    def __init__(
        self,
        event_url: str,
        *,
        auth: httpx.Auth | None = None,
        client: httpx.AsyncClient | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.event_url = event_url
        self.client = client or httpx.AsyncClient(timeout=timeout)
        self.auth = auth

    async def publish(
        self, channel: str, type: str, data: Mapping[str, Any] | None = None, **options: Any
    ) -> Event:
        """Append one event to `channel`; same options as `EventPublisher.publish`."""
        url, body, headers = _request(self.event_url, channel, type, data, options)
        try:
            if self.auth is not None:
                response = await self.client.post(url, json=body, headers=headers, auth=self.auth)
            else:
                response = await self.client.post(url, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PublishError("temporarily_unavailable", str(exc)) from exc
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return _result(response.status_code, payload)

    async def aclose(self) -> None:
        """Close the underlying client."""
        await self.client.aclose()
