"""The event service app: `create_app(settings)` builds everything in the lifespan.

app = create_app(Settings())                      # what `authbus serve event` runs
app = create_app(settings, token_validator=minter.validator())   # tests
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from authbus.common._revocation import RedisRevocationCheck
from authbus.common._scripts import AsyncRedis
from authbus.common._validator import TokenValidator
from authbus.core.app import build_app
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.redis import create_redis
from authbus.core.settings import Settings
from authbus.event.api import router
from authbus.event.dead_letters import DeadLetterBound
from authbus.event.delivery import Dispatcher, Fanout
from authbus.event.log import EventLog, SqlEventLog
from authbus.event.metrics import DeliveryMetrics
from authbus.event.service import EventService
from authbus.event.subscriptions import Subscriptions

__all__ = ["create_app"]

# A retried publish must come within a day to get the first result back (Stripe keeps 24 h).
IDEMPOTENCY_TTL = timedelta(hours=24)
HOUSEKEEPING_INTERVAL_S = 600.0


async def _housekeeping(log: EventLog, stop: asyncio.Event) -> None:
    """Expire old idempotency keys every few minutes, until `stop` is set."""
    while not stop.is_set():
        try:
            await log.expire_idempotency_keys(datetime.now(UTC) - IDEMPOTENCY_TTL)
        except Exception as exc:
            logging.getLogger("authbus.event").warning(
                "idempotency key expiry failed", extra={"error": repr(exc)}
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HOUSEKEEPING_INTERVAL_S)


def create_app(
    settings: Settings,
    *,
    token_validator: TokenValidator | None = None,
    event_log: EventLog | None = None,
    redis: AsyncRedis | None = None,
) -> FastAPI:
    """The event service. Injections replace what the lifespan would build (tests).

    Without `token_validator`, tokens are checked against the token service's JWKS, with
    revocation looked up in Redis when Redis is configured.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = None
        log = event_log
        if log is None:
            engine = create_engine(settings.database_url("event"))
            log = SqlEventLog(create_sessionmaker(engine))
        client: AsyncRedis | None = redis
        own_redis = client is None and settings.redis_url is not None
        if own_redis and settings.redis_url:
            client = create_redis(settings.redis_url, decode_responses=True)
        if token_validator is None:
            app.state.token_validator = TokenValidator(
                issuer=settings.issuer,
                audiences=settings.accepted_audiences,
                jwks_url=f"{settings.token_url.rstrip('/')}/.well-known/jwks.json",
                revocation=(
                    RedisRevocationCheck(client, settings.redis_prefix)
                    if client is not None
                    else None
                ),
            )
        metrics = app.state.metrics
        published = metrics.counter(
            "authbus_events_published", "Events appended to the log", ["channel"]
        )
        event_settings = settings.event
        fanout = Fanout(
            client, settings.redis_prefix, max_waiting=event_settings.max_waiting_per_subscriber
        )
        deferred = metrics.counter(
            "authbus_event_fanout_deferred",
            "Events whose fan-out was left to the dispatcher (Redis down or backlog)",
            [],
        )
        dispatched = metrics.counter(
            "authbus_event_dispatched", "Events fanned out by the dispatcher from the log", []
        )
        redispatched = metrics.counter(
            "authbus_event_redispatched",
            "Events fanned out again after Redis restarted or failed over (run_id changed)",
            [],
        )
        dispatcher = Dispatcher(
            log,
            fanout,
            interval=event_settings.dispatch_interval_s,
            on_deferred=deferred.inc,
            on_dispatched=dispatched.inc,
            on_redispatched=redispatched.inc,
        )
        app.state.event_log = log
        app.state.dispatcher = dispatcher
        subscriptions = Subscriptions(
            client,
            settings.redis_prefix,
            log,
            stale_after_s=event_settings.subscriber_stale_after_s,
            max_waiting=event_settings.max_waiting_per_subscriber,
            catch_up=dispatcher.catch_up,
        )
        app.state.subscriptions = subscriptions
        lag = DeliveryMetrics(metrics.registry, subscriptions, log)
        app.state.delivery_metrics = lag

        def on_published(channel: str, count: int) -> None:
            published.labels(channel).inc(count)
            lag.saw_channel(channel)

        app.state.event_service = EventService(log, dispatcher, on_published=on_published)
        app.state.readiness["database"] = log.ping
        if client is not None:
            redis_client = client

            async def redis_ready() -> None:
                await redis_client.ping()

            app.state.readiness["redis"] = redis_ready
        task = asyncio.create_task(dispatcher.run(), name="event-dispatcher")
        app.state.dispatcher_task = task
        stop_housekeeping = asyncio.Event()
        housekeeping = asyncio.create_task(_housekeeping(log, stop_housekeeping))
        # Delivery lag on /metrics needs Redis; without it there is no delivery to watch.
        lag_task = None
        if client is not None:
            bound = DeadLetterBound(
                client, settings.redis_prefix, log, max_dead=event_settings.max_dead_per_subscriber
            )
            app.state.dead_letter_bound = bound

            async def trim_dead_lists(channels: list[str]) -> None:
                for channel in channels:
                    await bound.trim_channel(channel)

            lag_task = asyncio.create_task(
                lag.run(stop_housekeeping, upkeep=trim_dead_lists), name="event-delivery-metrics"
            )
        try:
            yield
        finally:
            dispatcher.stop()
            stop_housekeeping.set()
            await housekeeping
            if lag_task is not None:
                await lag_task
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            if own_redis and client is not None:
                await client.aclose()
            if isinstance(log, SqlEventLog):
                await log.close()
            if engine is not None:
                await engine.dispose()

    # build_app refuses bodies above `settings.event.max_payload_bytes` (413 payload_too_large).
    app = build_app(
        "event",
        settings,
        lifespan=lifespan,
        description="Event log with at-least-once fan-out to subscribing services.",
    )
    if token_validator is not None:
        app.state.token_validator = token_validator
    app.include_router(router)
    return app
