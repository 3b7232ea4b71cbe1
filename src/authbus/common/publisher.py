"""Publish events to the event service: `EventPublisher` (requests) and its httpx async twin.

    from authbus.common import EventPublisher, TokenAuth

    publisher = EventPublisher("http://127.0.0.1:8083",
                               auth=TokenAuth("billing", secret, issuer=token_url,
                                              scopes=["events:publish"]))
    event = publisher.publish("orders", "order.placed", {"order_id": "42"},
                              aggregate=("order", "42"), expected_version=0)
    event.position   # its place in the log

Every call carries an `Idempotency-Key` (the caller's, or a fresh UUID per call), and
transient failures (connection errors, timeouts, 408, 429, 5xx) are retried with that same
key, so a retry after a lost response returns the stored event instead of a second one.
Both twins share the request building, the retry budget and the response parsing below;
only the transport and the sleep differ.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
import requests
from pydantic import ValidationError

from authbus.common._backoff import Backoff, parse_retry_after
from authbus.common._context import add_request_id
from authbus.common._envelope import Event
from authbus.common._errors import AuthbusClientError, TokenError
from authbus.common._transport import SyncTransport, requests_session

__all__ = ["Aggregate", "AsyncEventPublisher", "EventPublisher", "NewEvent", "PublishError"]

log = logging.getLogger("authbus.publisher")

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Answers worth another try with the same key: the server may not have seen the request,
# or may recover (RFC 9110 §15.5.9 408, RFC 6585 §4 429, and every 5xx).
_TRANSIENT_STATUS = frozenset({408, 429})
# Transport failures after which the request may or may not have arrived: retried with the
# same key. Others (a malformed URL, an unsupported scheme) are raised as they are.
_REQUESTS_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_HTTPX_TRANSIENT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The aggregate an event belongs to: its type and id (a tuple `(type, id)` works too).

    Example:
        publisher.publish("orders", "order.paid", {}, aggregate=Aggregate("order", "42"),
                          expected_version=1)
    """

    type: str
    id: str


AggregateRef = Aggregate | tuple[str, str]


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event of `publish_batch`: the same fields as the arguments of `publish`.

    Example:
        publisher.publish_batch("orders", [
            NewEvent("order.placed", {"id": "42"}, aggregate=("order", "42"),
                     expected_version=0),
            NewEvent("order.paid", {"id": "42"}, aggregate=("order", "42")),
        ])
    """

    type: str
    data: Mapping[str, Any] = field(default_factory=dict)
    aggregate: AggregateRef | None = None
    expected_version: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON object the event service's publish endpoint takes."""
        body: dict[str, Any] = {"type": self.type, "data": dict(self.data)}
        if self.aggregate is not None:
            aggregate = _aggregate(self.aggregate)
            body["aggregate_type"] = aggregate.type
            body["aggregate_id"] = aggregate.id
        if self.expected_version is not None:
            if self.aggregate is None:
                raise ValueError("expected_version needs aggregate=(type, id)")
            body["expected_version"] = self.expected_version
        if self.correlation_id is not None:
            body["correlation_id"] = self.correlation_id
        if self.causation_id is not None:
            body["causation_id"] = self.causation_id
        return body


def _aggregate(value: AggregateRef) -> Aggregate:
    if isinstance(value, Aggregate):
        return value
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(part, str) and part for part in value)
    ):
        return Aggregate(value[0], value[1])
    raise TypeError(f"aggregate must be Aggregate(type, id) or a (type, id) tuple, not {value!r}")


class PublishError(AuthbusClientError):
    """The event service refused the event, or could not be reached within the retry budget.

    `error` is the service's code (`version_conflict`, `validation_error`,
    `idempotency_key_reused`, ...; `temporarily_unavailable` when unreachable),
    `status_code` the HTTP status (None without a response), `details` the whole error
    body, `attempts` how many requests were made. A 409 `version_conflict` carries the
    aggregate's `current_version`.

    Example:
        try:
            publisher.publish("orders", "order.paid", {}, aggregate=("order", "42"),
                              expected_version=3)
        except PublishError as exc:
            if exc.error == "version_conflict":
                reload_and_retry(exc.current_version)
    """

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status_code: int | None = None,
        details: Mapping[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        self.error = error
        self.description = description
        self.status_code = status_code
        self.details = dict(details or {})
        self.attempts = attempts
        super().__init__(f"{error}: {description}" if description else error)

    @property
    def current_version(self) -> int | None:
        """The aggregate's version on a `version_conflict`, else None."""
        value = self.details.get("current_version")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def transient(self) -> bool:
        """True when the failure may pass by itself (unreachable, 408, 429, 5xx)."""
        status = self.status_code
        return status is None or status in _TRANSIENT_STATUS or status >= 500


# -- shared by both twins ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Call:
    url: str
    body: dict[str, Any]
    headers: dict[str, str]
    channel: str
    batch: bool


def _call(
    base_url: str,
    channel: str,
    body: dict[str, Any],
    idempotency_key: str | None,
    *,
    batch: bool,
) -> _Call:
    # One key per call, kept across its retries: the server answers a repeat with the
    # first result (DESIGN.md "Events", Idempotency-Key).
    key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
    if not key or len(key) > 200:
        raise ValueError("idempotency_key must be 1 to 200 characters")
    headers = {IDEMPOTENCY_HEADER: key}
    add_request_id(headers)  # the request id in flight, so the event service logs it too
    path = f"/v1/channels/{quote(channel, safe='')}/events" + ("/batch" if batch else "")
    return _Call(base_url.rstrip("/") + path, body, headers, channel, batch)


def _single(
    type_: str,
    data: Mapping[str, Any] | None,
    aggregate: AggregateRef | None,
    expected_version: int | None,
    correlation_id: str | None,
    causation_id: str | None,
) -> dict[str, Any]:
    draft = NewEvent(type_, data or {}, aggregate, expected_version, correlation_id, causation_id)
    return draft.body()


def _batch(events: Sequence[NewEvent]) -> dict[str, Any]:
    if not events:
        raise ValueError("publish_batch needs at least one event")
    return {"events": [e.body() for e in events]}


def _payload(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return None


def _refusal(status: int, payload: Any, attempts: int) -> PublishError:
    body = payload if isinstance(payload, dict) else {}
    description = body.get("error_description")
    return PublishError(
        str(body.get("error") or ("server_error" if status >= 500 else "invalid_request")),
        description if isinstance(description, str) else f"the event service answered {status}",
        status_code=status,
        details=body,
        attempts=attempts,
    )


def _stored(call: _Call, payload: Any, attempts: int) -> list[Event]:
    try:
        if call.batch:
            return [Event.model_validate(e) for e in payload["events"]]
        return [Event.model_validate(payload)]
    except (ValidationError, TypeError, KeyError) as exc:
        raise PublishError(
            "invalid_response",
            f"the event service answered an unreadable body: {exc}",
            attempts=attempts,
        ) from exc


class _RetryBudget:
    """How long one call may keep trying: `max_attempts` requests, none started after
    `deadline_s`; the delay is the server's Retry-After, else full-jitter backoff."""

    def __init__(self, publisher: _PublisherOptions) -> None:
        self.options = publisher
        self.attempts = 1
        self.deadline = publisher._clock() + publisher.retry_deadline_s
        self.backoff = Backoff(publisher.backoff_s, publisher.max_backoff_s, rng=publisher._rng)

    def next_delay(self, retry_after: float | None) -> float | None:
        """Seconds to wait before the next attempt, or None: give up now."""
        if self.attempts >= self.options.max_attempts:
            return None
        delay = self.backoff.next_delay() if retry_after is None else retry_after
        if self.options._clock() + delay > self.deadline:
            return None
        self.attempts += 1
        return delay


class _PublisherOptions:
    """The retry settings and test seams both twins take."""

    def __init__(
        self,
        event_url: str,
        *,
        timeout: float,
        max_attempts: int,
        retry_deadline_s: float,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.event_url = event_url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_deadline_s = retry_deadline_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._clock: Callable[[], float] = time.monotonic
        self._rng: random.Random | None = None  # seeded in tests: reproducible jitter

    def _log_retry(self, call: _Call, attempt: int, delay: float, error: Exception) -> None:
        log.warning(
            "publish failed; retrying with the same idempotency key",
            extra={
                "channel": call.channel,
                "attempt": attempt,
                "retry_in_s": round(delay, 3),
                "error": str(error),
            },
        )


def _transient_status(status: int) -> bool:
    return status in _TRANSIENT_STATUS or status >= 500


def _answer(call: _Call, status: int, content: bytes, attempts: int) -> list[Event] | PublishError:
    """The stored events of a success; the failure of a transient refusal (to retry with
    the same key); raises the failure of a final one."""
    payload = _payload(content)
    if status in (200, 201):
        return _stored(call, payload, attempts)
    failure = _refusal(status, payload, attempts)
    if not _transient_status(status):
        raise failure
    return failure


def _unreachable(call: _Call, exc: Exception, attempts: int) -> PublishError:
    failure = PublishError(
        "temporarily_unavailable",
        f"{call.url} is unreachable ({type(exc).__name__})",
        attempts=attempts,
    )
    failure.__cause__ = exc
    return failure


# -- requests ----------------------------------------------------------------------------


class EventPublisher(_PublisherOptions):
    """Synchronous publisher over a `requests.Session`; pass `auth=TokenAuth(...)`.

    Each call is retried on transient failures, up to `max_attempts` requests and no retry
    starting after `retry_deadline_s`, waiting the server's `Retry-After` or a full-jitter
    backoff (`backoff_s` doubling up to `max_backoff_s`); every retry of a call sends the
    same `Idempotency-Key`, so it never stores an event twice. Refusals (4xx) raise
    `PublishError` at once. Give `session` to reuse yours (its `auth` is kept; giving
    `auth` too is an error when the session already has one) or `transport` (a requests
    adapter or an httpx transport) for tests.

    Example:
        publisher = EventPublisher("http://127.0.0.1:8083", auth=TokenAuth(
            "billing", secret, issuer="http://127.0.0.1:8082", scopes=["events:publish"]))
        event = publisher.publish("orders", "order.placed", {"order_id": "42"},
                                  aggregate=("order", "42"), expected_version=0)
    """

    def __init__(
        self,
        event_url: str,
        *,
        auth: requests.auth.AuthBase | None = None,
        session: requests.Session | None = None,
        transport: SyncTransport | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        retry_deadline_s: float = 30.0,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        super().__init__(
            event_url,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_deadline_s=retry_deadline_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )
        if session is not None and transport is not None:
            raise ValueError("give session or transport, not both")
        if session is not None and auth is not None and session.auth is not None:
            raise ValueError("the session already has an auth; do not pass auth= as well")
        self._owns_session = session is None
        self.session = session if session is not None else requests_session(transport)
        self.auth = auth  # sent per request: a caller's session is never changed
        self._sleep: Callable[[float], None] = time.sleep

    def publish(
        self,
        channel: str,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        aggregate: AggregateRef | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Event:
        """Append one event to `channel`; returns it as stored (id, position, version).

        `aggregate=(type, id)` ties it to an aggregate; `expected_version` (the version
        you read, 0 for a new aggregate) makes the append fail with a 409
        `version_conflict` when someone else wrote first.

        Example:
            publisher.publish("orders", "order.placed", {"id": "42"},
                              aggregate=("order", "42"), expected_version=0)
        """
        body = _single(type, data, aggregate, expected_version, correlation_id, causation_id)
        call = _call(self.event_url, channel, body, idempotency_key, batch=False)
        return self._send(call)[0]

    def publish_batch(
        self, channel: str, events: Sequence[NewEvent], *, idempotency_key: str | None = None
    ) -> list[Event]:
        """Append `events` to `channel` in one transaction (all or none), in order.

        Example:
            publisher.publish_batch("orders", [NewEvent("order.placed", {"id": "1"}),
                                               NewEvent("order.placed", {"id": "2"})])
        """
        call = _call(self.event_url, channel, _batch(events), idempotency_key, batch=True)
        return self._send(call)

    def _send(self, call: _Call) -> list[Event]:
        budget = _RetryBudget(self)
        while True:
            failure: AuthbusClientError
            retry_after: float | None = None
            try:
                response = self.session.post(
                    call.url,
                    json=call.body,
                    headers=call.headers,
                    timeout=self.timeout,
                    auth=self.auth,
                )
            except _REQUESTS_TRANSIENT as exc:
                failure = _unreachable(call, exc, budget.attempts)
            except TokenError as exc:  # raised by TokenAuth: the token service, not us
                if exc.error != "temporarily_unavailable":
                    raise
                failure = exc
            else:
                answer = _answer(call, response.status_code, response.content, budget.attempts)
                if isinstance(answer, list):
                    return answer
                failure = answer
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = budget.next_delay(retry_after)
            if delay is None:
                raise failure
            self._log_retry(call, budget.attempts - 1, delay, failure)
            self._sleep(delay)

    def close(self) -> None:
        """Close the session this publisher made (a session you passed stays open)."""
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# -- httpx -------------------------------------------------------------------------------


class AsyncEventPublisher(_PublisherOptions):
    """Asynchronous publisher over an `httpx.AsyncClient`; pass `auth=AsyncTokenAuth(...)`.

    The twin of `EventPublisher`, with the same retries, idempotency and errors. Give
    `client` to reuse yours (giving `auth` too is an error when it already has one) or
    `transport` (e.g. `httpx.ASGITransport(app=event_app)` in tests).

    Example:
        async with AsyncEventPublisher("http://127.0.0.1:8083", auth=AsyncTokenAuth(
                "billing", secret, issuer=token_url, scopes=["events:publish"])) as publisher:
            event = await publisher.publish("orders", "order.placed", {"order_id": "42"},
                                            aggregate=("order", "42"))
    """

    def __init__(
        self,
        event_url: str,
        *,
        auth: httpx.Auth | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        retry_deadline_s: float = 30.0,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
    ) -> None:
        super().__init__(
            event_url,
            timeout=timeout,
            max_attempts=max_attempts,
            retry_deadline_s=retry_deadline_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )
        if client is not None and transport is not None:
            raise ValueError("give client or transport, not both")
        if client is not None and auth is not None and client.auth is not None:
            raise ValueError("the client already has an auth; do not pass auth= as well")
        self._owns_client = client is None
        self.client = client or httpx.AsyncClient(timeout=timeout, transport=transport)
        self.auth = auth
        self._sleep: Callable[[float], Any] = asyncio.sleep

    async def publish(
        self,
        channel: str,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        aggregate: AggregateRef | None = None,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
    ) -> Event:
        """Append one event to `channel`; the same arguments as `EventPublisher.publish`.

        Example:
            await publisher.publish("orders", "order.placed", {"id": "42"},
                                    aggregate=("order", "42"), expected_version=0)
        """
        body = _single(type, data, aggregate, expected_version, correlation_id, causation_id)
        call = _call(self.event_url, channel, body, idempotency_key, batch=False)
        return (await self._send(call))[0]

    async def publish_batch(
        self, channel: str, events: Sequence[NewEvent], *, idempotency_key: str | None = None
    ) -> list[Event]:
        """Append `events` to `channel` in one transaction (all or none), in order.

        Example:
            await publisher.publish_batch("orders", [NewEvent("order.placed", {"id": "1"})])
        """
        call = _call(self.event_url, channel, _batch(events), idempotency_key, batch=True)
        return await self._send(call)

    async def _send(self, call: _Call) -> list[Event]:
        budget = _RetryBudget(self)
        while True:
            failure: AuthbusClientError
            retry_after: float | None = None
            try:
                response = await self._post(call)
            except _HTTPX_TRANSIENT as exc:
                failure = _unreachable(call, exc, budget.attempts)
            except TokenError as exc:  # raised by AsyncTokenAuth: the token service
                if exc.error != "temporarily_unavailable":
                    raise
                failure = exc
            else:
                answer = _answer(call, response.status_code, response.content, budget.attempts)
                if isinstance(answer, list):
                    return answer
                failure = answer
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = budget.next_delay(retry_after)
            if delay is None:
                raise failure
            self._log_retry(call, budget.attempts - 1, delay, failure)
            await self._sleep(delay)

    async def _post(self, call: _Call) -> httpx.Response:
        if self.auth is None:  # the client's own auth, if any
            return await self.client.post(
                call.url, json=call.body, headers=call.headers, timeout=self.timeout
            )
        return await self.client.post(
            call.url, json=call.body, headers=call.headers, timeout=self.timeout, auth=self.auth
        )

    async def aclose(self) -> None:
        """Close the client this publisher made (a client you passed stays open)."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
