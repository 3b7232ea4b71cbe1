"""The token service's app factory.

app = create_app(settings)                              # what `authbus serve token` runs
app = create_app(settings, user_transport=fake_users)   # tests: a fake user service
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, OperationalError

from authbus.common.security import TokenValidator
from authbus.core.app import build_app
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.errors import DependencyUnavailable
from authbus.core.redis import create_redis
from authbus.core.settings import Settings
from authbus.token.api import clients, login, oauth
from authbus.token.bootstrap import protected_client_ids
from authbus.token.clients import ClientRepository
from authbus.token.consistency import UserEventsSubscriber, UserGrantRevoker
from authbus.token.grants import AuthorizationServer
from authbus.token.issuer import IssuerConfig, TokenIssuer
from authbus.token.keys import (
    KeyReloader,
    MasterKeyError,
    count_plain_keys,
    ensure_signing_key,
    load_key_ring,
)
from authbus.token.metrics import TokenMetrics
from authbus.token.service import SelfTokenProvider, TokenService
from authbus.token.store import MemoryTokenStore, RedisTokenStore, TokenStore
from authbus.token.users import UserServiceClient

log = logging.getLogger("authbus.token.app")


def issuer_config(settings: Settings) -> IssuerConfig:
    """The issuer's lifetimes and names from the settings."""
    t = settings.token
    return IssuerConfig(
        issuer=settings.issuer,
        access_token_ttl_s=t.access_token_ttl_s,
        refresh_token_ttl_s=t.refresh_token_ttl_s,
        refresh_reuse_grace_s=t.refresh_reuse_grace_s,
        code_ttl_s=t.code_ttl_s,
        default_audience=t.default_audience,
        audiences=tuple(dict.fromkeys([t.default_audience, *settings.accepted_audiences])),
    )


def _master_key(settings: Settings) -> str | None:
    key = settings.token.master_key
    return key.get_secret_value() if key is not None else None


def create_app(
    settings: Settings,
    *,
    user_transport: httpx.AsyncBaseTransport | None = None,
    store: TokenStore | None = None,
    key_reload_interval_s: float | None = None,
) -> FastAPI:
    """The token service. `user_transport` replaces the HTTP transport to the user service;
    `store` replaces the token store (else Redis when configured, else in-process memory).

    Background tasks: the signing keys are re-read every `key_reload_interval_s` seconds
    (default: `settings.token.key_reload_interval_s`) and at once on an unknown kid; with
    Redis configured, the `users` channel is followed so a disabled, deleted or
    re-permissioned user loses every grant (`consistency`).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url("token"))
        sessionmaker = create_sessionmaker(engine)
        redis = create_redis(settings.redis_url) if settings.redis_url and store is None else None
        token_store: TokenStore
        if store is not None:
            token_store = store
        elif redis is not None:
            token_store = RedisTokenStore(redis, settings.redis_prefix)
        else:
            token_store = MemoryTokenStore()
        master_key = _master_key(settings)
        # Keys are held in memory (signing never touches the database) and reloaded.
        try:
            await ensure_signing_key(sessionmaker, settings.token.signing_alg, master_key)
            keys = await load_key_ring(sessionmaker, master_key)
        except MasterKeyError as exc:
            # Refuse to start rather than sign with keys we cannot open or seal.
            log.critical("the token service cannot start: %s", exc)
            await engine.dispose()
            raise
        if master_key is not None and (plain := await count_plain_keys(sessionmaker)):
            log.warning(
                "%d signing key(s) are stored unencrypted although a master key is set; "
                "`authbus keys reseal` encrypts them",
                plain,
            )
        interval_s = (
            key_reload_interval_s
            if key_reload_interval_s is not None
            else settings.token.key_reload_interval_s
        )
        reloader = KeyReloader(keys, sessionmaker, master_key, interval_s=interval_s)
        issuer = TokenIssuer(
            issuer_config(settings), token_store, keys, on_unknown_kid=reloader.reload_for_kid
        )
        clients = ClientRepository(sessionmaker, protected=protected_client_ids(settings))
        self_token = SelfTokenProvider(
            issuer, settings.token.client_id, settings.token.default_audience
        )
        users = UserServiceClient(settings.user_url, self_token, transport=user_transport)
        service = TokenService(
            clients=clients,
            store=token_store,
            keys=keys,
            issuer=issuer,
            server=AuthorizationServer(clients, issuer),
            users=users,
            sso_session_ttl_s=settings.token.sso_session_ttl_s,
        )
        app.state.token = service
        app.state.key_reloader = reloader
        tasks = [asyncio.create_task(reloader.run(), name="token-key-reloader")]
        subscriber: UserEventsSubscriber | None = None
        if settings.redis_url:
            subscriber = UserEventsSubscriber(
                UserGrantRevoker(token_store), settings.redis_url, prefix=settings.redis_prefix
            )
            tasks.append(asyncio.create_task(subscriber.serve(), name="token-user-events"))
        else:
            log.warning(
                "no Redis configured: user events are not followed, so a disabled or deleted "
                "user, or one whose permissions or password changed, keeps their tokens "
                "until they expire (set AUTHBUS_REDIS_URL)"
            )
        app.state.user_events = subscriber
        app.state.token_validator = TokenValidator(
            issuer=settings.issuer,
            audiences=[settings.token.default_audience, *settings.accepted_audiences],
            key_set=keys.key_set,
            revocation=_StoreRevocation(token_store),
        )

        async def check_database() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        app.state.readiness["database"] = check_database
        if redis is not None:
            app.state.readiness["redis"] = token_store.ping
        try:
            yield
        finally:
            if subscriber is not None:
                subscriber.stop()  # in-flight events finish; no new claims
            tasks[0].cancel()
            _done, pending = await asyncio.wait(tasks, timeout=35.0)
            for task in pending:
                log.warning("background task did not stop in time", extra={"task": task.get_name()})
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await service.aclose()
            await engine.dispose()

    app = build_app(
        "token",
        settings,
        lifespan=lifespan,
        description="OAuth2 authorization server: login, tokens, introspection, revocation.",
    )
    app.state.templates = Environment(
        loader=PackageLoader("authbus.token", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    app.state.token_metrics = TokenMetrics.register(app.state.metrics)
    app.include_router(login.router)
    app.include_router(oauth.router)
    app.include_router(clients.router)

    @app.exception_handler(RedisError)
    async def _redis_down(_request: Request, _exc: RedisError) -> Response:
        return _unavailable("the token store (Redis) is unavailable")

    @app.exception_handler(OperationalError)
    @app.exception_handler(DBAPIError)
    async def _db_down(_request: Request, _exc: Exception) -> Response:
        return _unavailable("the token database is unavailable")

    # A bare OSError (asyncpg's ConnectionRefusedError, ...) is mapped to a 503 by
    # `authbus.core.app` for every service.

    return app


def _unavailable(message: str) -> Response:
    exc = DependencyUnavailable(message)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


class _StoreRevocation:
    """Revocation check for the service's own admin endpoints: the jti must be active."""

    def __init__(self, store: TokenStore) -> None:
        self.store = store

    async def is_active(self, token: str, claims: object) -> bool:
        jti = claims.get("jti") if isinstance(claims, dict) else None
        return jti is not None and await self.store.access_token(str(jti)) is not None
