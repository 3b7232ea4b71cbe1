"""The app factory every service builds on: errors, request ids, logs, metrics, health, and
the request body limit.

app = build_app("user", settings, lifespan=lifespan)
app.include_router(router)
app.state.readiness["database"] = check_database
"""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from authbus import __version__
from authbus.core.errors import AuthbusError, DependencyUnavailable, PayloadTooLarge
from authbus.core.logging import request_id_var
from authbus.core.metrics import CONTENT_TYPE_LATEST, Metrics
from authbus.core.request_context import client_address_var
from authbus.core.settings import ServiceSettings, Settings

log = logging.getLogger("authbus.http")

ReadinessCheck = Callable[[], Awaitable[None]]
REQUEST_ID_HEADER = "x-request-id"
# A caller's own request id is kept when it looks like one (a UUID, a hex or base64 token, a
# trace id); anything else (spaces, quotes, control characters, too long) is replaced. The
# gateway (deploy/gateway/nginx.conf) applies the same pattern.
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:+=/-]{1,128}$")


def accepted_request_id(value: bytes | None) -> str | None:
    """`value` as the request id when it is well-formed, else None (a new one is made)."""
    if value is None:
        return None
    text = value.decode("latin-1")
    return text if REQUEST_ID_PATTERN.fullmatch(text) else None


class RequestContextMiddleware:
    """Request id (a well-formed `X-Request-ID`, else a new one), one log line and metrics
    per request, and a complete 500 for an unhandled error.

    The error is answered here, inside the request's context, rather than by Starlette's
    ServerErrorMiddleware: that one runs after the request id is gone and re-raises, so the
    server logged the error a second time and closed the keep-alive connection.
    """

    def __init__(self, app: ASGIApp, service: str, metrics: Metrics) -> None:
        self.app = app
        self.service = service
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for k, v in scope.get("headers", ()):
            if k == b"x-request-id":
                given = v
                break
        rid = accepted_request_id(given) or uuid.uuid4().hex
        token = request_id_var.set(rid)
        client = scope.get("client")
        address_token = client_address_var.set(client[0] if client else None)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if response_started:
                # Part of a response is out: nothing to add. Returning without completing it
                # makes the server close the connection, which tells the client.
                log.exception("unhandled error after the response started", exc_info=exc)
            else:
                await _server_error(exc)(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.labels(self.service, method, path, str(status)).inc()
            self.metrics.latency.labels(self.service, method, path).observe(elapsed)
            if path not in ("/healthz", "/readyz", "/metrics"):
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)
            client_address_var.reset(address_token)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodySizeLimit:
    """Refuses a request body above `max_bytes` with a 413 in the error shape: before reading
    anything when Content-Length announces it, and as soon as a body without one (chunked)
    passes it.

    Starlette's own RequestBodyLimitMiddleware is not used: it answers in plain text, and its
    error, raised inside the app, reaches handlers that turn any failure to read a body into
    a 400 (`authbus.token.api._http.read_form`).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Response:
        err = PayloadTooLarge(f"the request body is above {self.max_bytes} bytes")
        return JSONResponse(err.body(), status_code=err.status_code, headers=err.headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            # Answered before the first receive(), so a client sending `Expect: 100-continue`
            # is never asked for the body; uvicorn discards what comes anyway.
            await self._too_large()(scope, receive, send)
            return
        received = 0
        refused = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not response_started:
                        await self._too_large()(scope, receive, send)
                    # To the app the client is gone: it stops reading, and what it would
                    # answer is dropped (send_unless_refused).
                    return {"type": "http.disconnect"}
            return message

        async def send_unless_refused(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        await self.app(scope, limited_receive, send_unless_refused)


def _unparsed_body(exc: RequestValidationError) -> bool:
    """Whether validation failed because the body was never parsed as JSON: FastAPI hands
    the raw bytes to the model when the Content-Type is not JSON (or missing)."""
    return any(
        tuple(e.get("loc", ())) == ("body",) and isinstance(e.get("input"), bytes | bytearray)
        for e in exc.errors()
    )


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "malformed JSON body"
    parts = []
    for e in errors[:10]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {e.get('msg')}" if loc else str(e.get("msg")))
    return 422, "; ".join(parts) or "invalid request"


def _unparsable_body(exc: StarletteHTTPException) -> str | None:
    """What was wrong with a body FastAPI could not decode, when `exc` is its generic
    "There was an error parsing the body" (raised from the decoder's own error)."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None or isinstance(cause, StarletteHTTPException):
        return None
    if isinstance(cause, UnicodeDecodeError):
        return "malformed JSON body: it is not valid UTF-8"
    if isinstance(cause, RecursionError):
        return "malformed JSON body: nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        # CPython refuses to convert integers of more than 4300 digits (CVE-2020-10735).
        return "malformed JSON body: a number has too many digits"
    if isinstance(cause, ValueError):
        return "malformed JSON body"
    return None


# The `error` code of an HTTPException raised by Starlette or FastAPI themselves.
_HTTP_ERROR_CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthbusError)
    async def _authbus_error(_request: Request, exc: AuthbusError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        if _unparsed_body(exc):
            # RFC 9110 §15.5.16: the body is in a format the endpoint does not take.
            return JSONResponse(
                {
                    "error": "unsupported_media_type",
                    "error_description": "the body must be JSON, sent with "
                    "Content-Type: application/json",
                },
                status_code=415,
            )
        status, message = _validation_message(exc)
        code = "invalid_request" if status == 400 else "validation_error"
        return JSONResponse({"error": code, "error_description": message}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        # authbus.common.security raises HTTPException with an OAuth-shaped dict as detail.
        if isinstance(exc.detail, dict) and "error" in exc.detail:
            body: dict[str, Any] = exc.detail
        elif (malformed := _unparsable_body(exc)) is not None:
            body = {"error": "invalid_request", "error_description": malformed}
        else:
            code = _HTTP_ERROR_CODES.get(exc.status_code, "error")
            body = {"error": code, "error_description": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(OSError)
    async def _connection_failed(_request: Request, exc: OSError) -> Response:
        # A dependency's socket failed below its client library's own errors (asyncpg raises
        # ConnectionRefusedError unwrapped; asyncio raises a bare OSError when every address
        # failed): a 503 with Retry-After, like DependencyUnavailable, not a 500.
        if not is_connection_failure(exc):
            return _server_error(exc)
        log.warning("a dependency is unreachable", extra={"error": type(exc).__name__})
        unavailable = DependencyUnavailable("a service this one depends on is unreachable")
        return JSONResponse(
            unavailable.body(), status_code=unavailable.status_code, headers=unavailable.headers
        )

    # Unhandled errors are answered by RequestContextMiddleware, inside the request's
    # context; this handler (Starlette's ServerErrorMiddleware) is left for errors of the
    # outermost layers only.
    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        return _server_error(exc)


def is_connection_failure(exc: OSError) -> bool:
    """Whether `exc` is a network failure (refused, reset, timed out, unresolvable host, or
    asyncio's bare OSError for "connect call failed") rather than a file-system error."""
    if isinstance(exc, ConnectionError | TimeoutError | socket.gaierror | socket.herror):
        return True
    return type(exc) is OSError


def _server_error(exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return JSONResponse(
        {
            "error": "server_error",
            "error_description": "internal error",
            "request_id": request_id_var.get(),
        },
        status_code=500,
    )


def build_app(
    service: str,
    settings: Settings,
    *,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]] | None = None,
    description: str = "",
) -> FastAPI:
    """A FastAPI app with the behaviour every authbus service shares."""
    app = FastAPI(
        title=f"authbus {service} service",
        version=__version__,
        description=description,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.service = service
    app.state.readiness = {}
    metrics = Metrics(service)
    app.state.metrics = metrics
    install_error_handlers(app)
    service_settings: ServiceSettings = getattr(settings, service)
    app.add_middleware(BodySizeLimit, max_bytes=service_settings.body_limit_bytes)
    # Added last, so outermost: the request id, the log line and the metrics cover the 413s.
    app.add_middleware(RequestContextMiddleware, service=service, metrics=metrics)

    @app.get("/healthz", tags=["health"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="The service's database and Redis answer")
    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        ok = True
        for name, check in request.app.state.readiness.items():
            try:
                await check()
                checks[name] = "ok"
            except Exception as exc:
                ok = False
                checks[name] = f"unavailable: {type(exc).__name__}"
        body = {"status": "ready" if ok else "unavailable", "checks": checks}
        headers = {} if ok else {"Retry-After": "5"}
        return JSONResponse(body, status_code=200 if ok else 503, headers=headers)

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    async def metrics_endpoint(request: Request) -> Response:
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
