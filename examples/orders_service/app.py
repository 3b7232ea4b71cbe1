"""The orders service: protected endpoints, browser sign-in, events out and in.

Everything authbus-related comes from `authbus.common`:

- `requires("orders:read")` checks the bearer token (signature via the JWKS, issuer,
  audience, expiry, revocation via the token store in Redis) and the scope;
- `BrowserLogin` + `browser_login_router` send a browser without a token to the token
  service's `/authorize` with this service's client id (code + PKCE), and keep the token
  in a session cookie once the user signed in;
- `AsyncEventPublisher` with `AsyncTokenAuth` (this service's client credentials,
  scope `events:publish`) announces `order.created` on the channel `orders`;
- `EventSubscriber` on the channel `users` cancels a user's open orders when the
  account is disabled (or deleted).

    app = create_app(OrdersConfig.from_env())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authbus.common import (
    AsyncEventPublisher,
    AsyncTokenAuth,
    AuthbusClientError,
    BrowserLogin,
    Caller,
    Event,
    EventSubscriber,
    RedisRevocationCheck,
    TokenValidator,
    requires,
)
from authbus.common._context import request_id_var  # see README: the request id
from authbus.common.security import browser_login_router

from .config import OrdersConfig
from .store import AccountDisabled, Order, OrderStore

log = logging.getLogger("orders")

ORDERS_CHANNEL = "orders"
USERS_CHANNEL = "users"

# The caller of a request whose token holds the scope (401/403/redirect otherwise).
Reader = Annotated[Caller, Depends(requires("orders:read"))]
Writer = Annotated[Caller, Depends(requires("orders:write"))]


# -- events in ---------------------------------------------------------------------------


class CancelOrdersOfDisabledUsers(EventSubscriber):
    """Cancels a user's open orders when the user service disables or deletes the account.

    The user service announces `user.disabled` / `user.enabled` / `user.deleted`; a
    `user.updated` carrying `{"disabled": true}` (older producers) counts as disabling
    too. Each cancelled order is announced
    as `order.cancelled`. Redelivery is harmless: cancelling twice cancels nothing more,
    and the announcements carry an `Idempotency-Key`, so a retry (the event raised
    because the event service was down) re-announces without duplicates.
    """

    channel = USERS_CHANNEL
    name = "orders-service"  # every instance of this service shares the work

    def __init__(
        self, store: OrderStore, publisher: AsyncEventPublisher, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.store = store
        self.publisher = publisher

    async def process_event(self, event: Event) -> None:
        user_id = event.aggregate_id or str(event.data.get("id") or "")
        if not user_id or event.aggregate_type not in (None, "user"):
            return
        disabled = event.data.get("disabled")
        if event.type in ("user.disabled", "user.deleted") or (
            event.type == "user.updated" and disabled is True
        ):
            cancelled = self.store.cancel_orders_of(user_id, reason=event.type)
            log.info("user %s %s: cancelled %d open order(s)", user_id, event.type, len(cancelled))
            for order in self.store.orders_of(user_id):
                if order.status == "cancelled":  # again after a retry: deduplicated by key
                    await self.publisher.publish(
                        ORDERS_CHANNEL,
                        "order.cancelled",
                        {"order_id": order.id, "user_id": user_id, "reason": order.cancel_reason},
                        aggregate=("order", order.id),
                        causation_id=event.id,
                        idempotency_key=f"cancel-{order.id}",
                    )
        elif event.type == "user.enabled" or (event.type == "user.updated" and disabled is False):
            self.store.enable(user_id)


# -- HTTP --------------------------------------------------------------------------------


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item: str = Field(min_length=1, max_length=200)
    quantity: int = Field(default=1, ge=1, le=1000)


class OrderOut(BaseModel):
    id: str
    user_id: str
    item: str
    quantity: int
    status: str
    created_at: datetime
    cancel_reason: str | None = None

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(**asdict(order))


class OrderList(BaseModel):
    items: list[OrderOut]


class RequestIdMiddleware:
    """Takes `X-Request-ID` (or makes one) and echoes it; authbus.common's clients then
    send it on (here: with the `order.created` publish), so one id spans the services."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")[:128]
        rid = given or uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        token = request_id_var.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def _error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> HTTPException:
    return HTTPException(
        status, detail={"error": error, "error_description": description}, headers=headers
    )


def create_app(config: OrdersConfig) -> FastAPI:
    """The orders service. Clients and the subscriber are made in the lifespan.

    Example:
        uvicorn.run(create_app(OrdersConfig.from_env()), host="127.0.0.1", port=8090)
    """
    store = OrderStore()
    login = BrowserLogin(
        authorize_url=f"{config.issuer_url}/authorize",  # where the browser goes
        token_url=f"{config.token_url}/token",
        client_id=config.client_id,
        client_secret=config.client_secret,
        redirect_uri=config.callback_url,
        secret_key=config.cookie_secret,
        scopes=["orders:read"],
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = aioredis.Redis.from_url(config.redis_url, socket_connect_timeout=2)
        validator = TokenValidator(
            issuer=config.issuer_url,
            audiences=[config.audience],
            jwks_url=f"{config.token_url}/.well-known/jwks.json",
            revocation=RedisRevocationCheck(redis, config.redis_prefix),
            browser_login=login,
        )
        publisher = AsyncEventPublisher(
            config.event_url,
            auth=AsyncTokenAuth(
                config.client_id,
                config.client_secret,
                token_url=f"{config.token_url}/token",
                scopes=["events:publish"],
            ),
        )
        subscriber = CancelOrdersOfDisabledUsers(
            store,
            publisher,
            config.redis_url,
            prefix=config.redis_prefix,
            poll_interval=2.0,
            stop_timeout=15.0,  # in-flight events get this long on shutdown
        )
        consuming = asyncio.create_task(subscriber.serve(), name="orders-users-subscriber")
        app.state.token_validator = validator
        app.state.redis = redis
        app.state.publisher = publisher
        app.state.subscriber = subscriber
        try:
            yield
        finally:
            subscriber.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consuming, subscriber.stop_timeout + 5)
            await publisher.aclose()
            await validator.aclose()
            await redis.aclose()

    app = FastAPI(title="orders (authbus example)", lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware)
    app.state.store = store
    app.include_router(browser_login_router(login))

    @app.exception_handler(StarletteHTTPException)
    async def oauth_shaped_errors(_request: Request, exc: StarletteHTTPException) -> Response:
        # authbus.common.security puts {"error": ..., "error_description": ...} in detail.
        if isinstance(exc.detail, dict):
            body: dict[str, Any] = exc.detail
        else:
            body = {"error": "error", "error_description": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_errors(_request: Request, exc: RequestValidationError) -> Response:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body')}: {e.get('msg')}"
            for e in exc.errors()[:5]
        )
        return JSONResponse(
            {"error": "validation_error", "error_description": where or "invalid request"},
            status_code=422,
        )

    @app.get("/orders", response_model=OrderList)
    async def list_orders(caller: Reader) -> OrderList:
        """The caller's orders (a browser without a token is sent to sign in)."""
        return OrderList(items=[OrderOut.of(o) for o in store.orders_of(caller.subject)])

    @app.get("/orders/{order_id}", response_model=OrderOut)
    async def get_order(order_id: str, caller: Reader) -> OrderOut:
        order = store.get(order_id)
        if order is None or order.user_id != caller.subject:
            raise _error(404, "not_found", "no such order")
        return OrderOut.of(order)

    @app.post("/orders", response_model=OrderOut, status_code=201)
    async def place_order(body: OrderIn, caller: Writer, request: Request) -> OrderOut:
        """Place an order and announce `order.created` on the channel `orders`.

        Order of writes: the order is stored, then published; if the publish fails the
        order is discarded and the client gets 503 (nobody else has seen it yet).
        """
        try:
            order = store.place(caller.subject, body.item, body.quantity)
        except AccountDisabled as exc:
            raise _error(403, "account_disabled", "this account is disabled") from exc
        publisher: AsyncEventPublisher = request.app.state.publisher
        try:
            await publisher.publish(
                ORDERS_CHANNEL,
                "order.created",
                {
                    "order_id": order.id,
                    "user_id": order.user_id,
                    "item": order.item,
                    "quantity": order.quantity,
                },
                aggregate=("order", order.id),
                correlation_id=request_id_var.get(),
                idempotency_key=order.id,
            )
        except AuthbusClientError as exc:  # PublishError, or TokenError: our credentials
            store.discard(order.id)
            log.warning("order.created not published", extra={"error": repr(exc)})
            raise _error(
                503,
                "temporarily_unavailable",
                "the order could not be announced; try again",
                headers={"Retry-After": "5"},
            ) from exc
        return OrderOut.of(order)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        """Ready when what serving needs answers: Redis (revocation checks, events) and the
        subscriber is registered and listening. /healthz only says the process is alive."""
        state = request.app.state
        subscriber: CancelOrdersOfDisabledUsers | None = getattr(state, "subscriber", None)
        listening = subscriber is not None and subscriber.ready.is_set()
        try:
            redis_ok = bool(await asyncio.wait_for(state.redis.ping(), 1.0))
        except Exception:  # any failure to answer in time means not ready
            redis_ok = False
        ready = listening and redis_ok
        return JSONResponse(
            {
                "status": "ok" if ready else "unavailable",
                "subscriber": listening,
                "redis": redis_ok,
            },
            status_code=200 if ready else 503,
            headers=None if ready else {"Retry-After": "5"},
        )

    return app
