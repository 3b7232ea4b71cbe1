"""The user service's app factory.

    app = create_app(Settings())            # what `authbus serve user` runs
    app = create_app(settings, token_validator=minter.validator())   # tests

The lifespan builds the engine, the repository, the hasher, the Redis client used to check
token revocation (when `redis_url` is set) and the outbox relay (when the service has its
client secret); it does not run migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from authbus.common.security import RedisRevocationCheck, TokenValidator
from authbus.common.token_auth import AsyncTokenAuth
from authbus.core.app import build_app
from authbus.core.credentials import service_client_secret
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.redis import create_redis
from authbus.core.settings import Settings
from authbus.user.api import LOGIN_OUTCOMES, router
from authbus.user.outbox import EventServicePublisher, OutboxRelay, Publish
from authbus.user.passwords import PasswordHasher
from authbus.user.repository import UserRepository
from authbus.user.service import UserService
from authbus.user.sql_repository import SqlUserRepository
from authbus.user.throttle import LoginThrottle

log = logging.getLogger("authbus.user")

# How often the outbox is polled for events to relay (changes also wake it at once).
RELAY_INTERVAL_S = 1.0


def create_app(
    settings: Settings,
    *,
    token_validator: TokenValidator | None = None,
    repository: UserRepository | None = None,
    event_publisher: Publish | None = None,
) -> FastAPI:
    """The user service. The keyword arguments replace the defaults (tests).

    `event_publisher` receives the outbox's events; by default they go to the event
    service with the service's own client credentials (no relay when it has none).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            repo = repository
            if repo is None:
                engine = create_engine(settings.database_url("user"))
                stack.push_async_callback(engine.dispose)
                repo = SqlUserRepository(create_sessionmaker(engine))
            app.state.readiness["database"] = repo.ping

            validator = token_validator
            if validator is None:
                validator = _default_validator(app, settings, stack)
            app.state.token_validator = validator

            hasher = PasswordHasher.from_settings(settings.user)
            # The dummy hash for unknown usernames is made now, not on the first login.
            await hasher.warm_up()
            u = settings.user
            throttle = LoginThrottle(
                free_attempts=u.throttle_free_attempts,
                base_delay_s=u.throttle_base_delay_s,
                max_delay_s=u.throttle_max_delay_s,
            )
            relay: OutboxRelay | None = None
            publish = event_publisher or _default_publisher(settings, stack)
            if publish is not None:
                relay = OutboxRelay(repo, publish, interval_s=RELAY_INTERVAL_S)
                task = asyncio.create_task(relay.run(), name="user-outbox-relay")
                stack.push_async_callback(_cancel, task)
            app.state.outbox_relay = relay
            app.state.user_service = UserService(
                repo, hasher, throttle=throttle, on_change=relay.wake if relay else None
            )
            yield

    app = build_app(
        "user",
        settings,
        lifespan=lifespan,
        description="Accounts, password checks, permissions and roles.",
    )
    logins = app.state.metrics.counter(
        "authbus_user_logins",
        "Credential verifications (logins) by outcome: " + ", ".join(LOGIN_OUTCOMES),
        ["outcome"],
    )
    for outcome in LOGIN_OUTCOMES:
        # Every outcome is exported from the start, at 0, so rates and alerts have a series.
        logins.labels(outcome)
    app.state.login_outcomes = logins
    app.include_router(router)
    return app


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _default_publisher(settings: Settings, stack: AsyncExitStack) -> Publish | None:
    """Publishes to the event service as `user-service` (scope events:publish)."""
    secret = service_client_secret(settings, "user")
    if secret is None:
        log.warning(
            "no client secret for %s: user events stay in the outbox until one is configured",
            settings.user.client_id,
        )
        return None
    auth = AsyncTokenAuth(
        settings.user.client_id, secret, issuer=settings.issuer, scopes=["events:publish"]
    )
    publisher = EventServicePublisher(settings.event_url, auth)
    stack.push_async_callback(publisher.aclose)
    return publisher


def _default_validator(app: FastAPI, settings: Settings, stack: AsyncExitStack) -> TokenValidator:
    """Tokens checked against the token service's JWKS; revocation through Redis if set."""
    revocation: RedisRevocationCheck | None = None
    if settings.redis_url:
        redis = create_redis(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        revocation = RedisRevocationCheck(redis, settings.redis_prefix)

        async def ping_redis() -> None:
            await redis.ping()

        app.state.readiness["redis"] = ping_redis
    else:
        log.warning("no redis_url: revoked access tokens stay valid here until they expire")
    validator = TokenValidator(
        issuer=settings.issuer,
        audiences=settings.accepted_audiences,
        jwks_url=f"{settings.token_url.rstrip('/')}/.well-known/jwks.json",
        revocation=revocation,
    )
    close = getattr(validator, "aclose", None)
    if close is not None:
        stack.push_async_callback(close)
    return validator
