"""Relay of the transactional outbox to the event service (channel `users`).

Every audited change writes its domain events into the `outbox` table in the same transaction
(see `repository`), so no change is lost between the database and the event service. This
relay publishes pending events in order, marks them published, and retries with backoff
while the event service is down. Each publish carries the outbox row's `event_id` as
`Idempotency-Key`, so a crash between publish and mark (or two relaying instances) still
yields one event. Guarantee: at-least-once delivery to the log, deduplicated by key.

    relay = OutboxRelay(repository, EventServicePublisher(event_url, auth))
    task = asyncio.create_task(relay.run())
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import httpx

from authbus.user.domain import OutboxEvent, utcnow
from authbus.user.repository import UserRepository

log = logging.getLogger("authbus.user.outbox")

Publish = Callable[[OutboxEvent], Awaitable[None]]

# Answers that a retry cannot fix: the event itself is refused.
_PERMANENT = frozenset({400, 404, 409, 413, 422})


class PublishRejected(Exception):
    """The event service refused the event for good (retrying would not help)."""


class EventTooLarge(PublishRejected):
    """The event service answered 413: the event is above its body limit.

    A bug, not bad luck: the bounds of `authbus.user.policy` keep every user event well under
    the default limit, so either they fail to, or `AUTHBUS_EVENT__MAX_PAYLOAD_BYTES` was set
    below what they allow.
    """

    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail)
        self.size = size


class EventServicePublisher:
    """Publishes outbox events over the event service's REST API.

    `auth` is an httpx auth holding a token with `events:publish` (in the service:
    `AsyncTokenAuth("user-service", secret, issuer=..., scopes=["events:publish"])`).
    """

    def __init__(
        self,
        event_url: str,
        auth: httpx.Auth,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=event_url.rstrip("/"), auth=auth, transport=transport, timeout=timeout
        )

    async def __call__(self, event: OutboxEvent) -> None:
        """Publish `event`; `PublishRejected` (`EventTooLarge` for a 413) when refused for
        good, other errors to retry."""
        body = {
            "type": event.type,
            "data": event.data,
            "aggregate_type": event.aggregate_type,
            "aggregate_id": event.aggregate_id,
        }
        response = await self._client.post(
            f"/v1/channels/{event.channel}/events",
            json=body,
            headers={"Idempotency-Key": str(event.event_id)},
        )
        if response.is_success:
            return
        detail = f"{response.status_code} {response.text[:500]}"
        if response.status_code == 413:
            # As httpx encodes it, so the log says how far above the limit it was.
            sent = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            raise EventTooLarge(detail, len(sent.encode()))
        if response.status_code in _PERMANENT:
            raise PublishRejected(detail)
        raise RuntimeError(f"event service answered {detail}")

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


class OutboxRelay:
    """Moves pending outbox events to the event service, in order, until stopped."""

    def __init__(
        self,
        repository: UserRepository,
        publish: Publish,
        *,
        interval_s: float = 1.0,
        batch: int = 100,
        max_backoff_s: float = 60.0,
        retention: timedelta = timedelta(days=7),
        prune_every_s: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.repository = repository
        self.publish = publish
        self.interval_s = interval_s
        self.batch = batch
        self.max_backoff_s = max_backoff_s
        self.retention = retention
        self.prune_every_s = prune_every_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._next_prune = 0.0

    def wake(self) -> None:
        """Relay now rather than at the next tick (after a change was committed)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish what is pending; the number published. Raises when a publish must retry.

        Stops at the first retryable failure so events keep their order; an event refused
        for good is marked failed (kept for inspection) and the relay moves on.
        """
        published = 0
        for event in await self.repository.pending_events(self.batch):
            try:
                await self.publish(event)
            except EventTooLarge as exc:
                # Never expected: loud, with what it takes to find the change that made it.
                log.error(
                    "BUG: a user event is too large for the event service and is not "
                    "published (it stays in the outbox, failed). The user service's bounds "
                    "should keep every event under the default limit: check "
                    "AUTHBUS_EVENT__MAX_PAYLOAD_BYTES, or report the change that made it",
                    extra={
                        "event_id": str(event.event_id),
                        "event_type": event.type,
                        "aggregate": f"{event.aggregate_type}/{event.aggregate_id}",
                        "size_bytes": exc.size,
                        "error": str(exc),
                    },
                )
                await self.repository.mark_failed(event.id, str(exc), self._clock(), final=True)
                continue
            except PublishRejected as exc:
                log.error(
                    "event refused, giving up",
                    extra={
                        "event_id": str(event.event_id),
                        "event_type": event.type,
                        "error": str(exc),
                    },
                )
                await self.repository.mark_failed(event.id, str(exc), self._clock(), final=True)
                continue
            except Exception as exc:
                await self.repository.mark_failed(
                    event.id, f"{type(exc).__name__}: {exc}", self._clock(), final=False
                )
                raise
            await self.repository.mark_published([event.id], self._clock())
            published += 1
        return published

    async def prune(self) -> int:
        """Delete events published longer ago than `retention` (the outbox stays small;
        the event service's log is the lasting record)."""
        return await self.repository.prune_outbox(self._clock() - self.retention)

    async def run(self) -> None:
        """Relay forever (cancel the task to stop), backing off while publishing fails."""
        failures = 0
        while True:
            # Cleared before relaying: a wake() during the relay triggers another round.
            self._wake.clear()
            delay = self.interval_s
            try:
                await self.relay_once()
                failures = 0
                if time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + self.prune_every_s
                    await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # DependencyUnavailable, HTTP errors: all retried
                failures += 1
                delay = min(self.interval_s * 2 ** min(failures, 16), self.max_backoff_s)
                log.warning(
                    "outbox relay failed, retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": delay},
                )
            # asyncio.timeout rather than wait_for: no inner task that could outlive a cancel.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
