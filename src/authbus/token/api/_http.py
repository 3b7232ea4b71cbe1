"""Request helpers shared by the token service's routers (forms, cookies, JSON errors)."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse
from jinja2 import Environment

from authbus.core.errors import AuthbusError
from authbus.core.settings import Settings
from authbus.token.errors import InvalidRequest
from authbus.token.metrics import TokenMetrics
from authbus.token.service import TokenService

# RFC 6749 §5.1: token responses must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
BUILTIN_SCOPES = (
    "users:admin",
    "users:verify",
    "clients:admin",
    "events:publish",
    "events:read",
    "events:admin",
)


def service_of(request: Request) -> TokenService:
    svc: TokenService = request.app.state.token
    return svc


def metrics_of(request: Request) -> TokenMetrics:
    metrics: TokenMetrics = request.app.state.token_metrics
    return metrics


def templates_of(request: Request) -> Environment:
    env: Environment = request.app.state.templates
    return env


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def secure_cookies(request: Request) -> bool:
    return settings_of(request).issuer.startswith("https://") or request.url.scheme == "https"


def cookie_name(request: Request, name: str) -> str:
    """Cookie name; on https with the `__Host-` prefix, so no sibling host can set it."""
    return f"__Host-{name}" if secure_cookies(request) else name


async def read_form(request: Request) -> dict[str, str]:
    """The form-encoded body as single values (RFC 6749 §3.1: no repeated parameters)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise InvalidRequest("the body must be application/x-www-form-urlencoded")
    try:
        # The sign-in form, the largest, has under 20 fields; no OAuth request uploads files.
        form = await request.form(max_fields=50, max_files=0)
    except Exception as exc:  # python-multipart raises several types for malformed bodies
        raise InvalidRequest("malformed form body") from exc
    out: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise InvalidRequest("file uploads are not accepted")
        if key in out:
            raise InvalidRequest(f"parameter {key!r} is repeated")
        if value != "":  # RFC 6749 §3.1: empty parameters are treated as omitted
            out[key] = value
    return out


def read_query(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key in out:
            raise InvalidRequest(f"parameter {key!r} is repeated")
        if value != "":
            out[key] = value
    return out


def oauth_json(exc: AuthbusError) -> JSONResponse:
    headers = {**exc.headers, **NO_STORE}
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=headers)
