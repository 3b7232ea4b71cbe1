"""FastAPI security for resource servers: check bearer tokens, require scopes.

    from authbus.common.security import TokenValidator, Caller, requires

    app.state.token_validator = TokenValidator(
        issuer=settings.issuer,
        audiences=settings.accepted_audiences,
        jwks_url=f"{settings.token_url}/.well-known/jwks.json",
    )

    @app.get("/v1/orders")
    async def orders(caller: Caller = Depends(requires("orders:read"))): ...

This module imports FastAPI (an optional dependency: `pip install authbus[server]`);
the rest of `authbus.common` works without it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from authbus.common._errors import InvalidTokenError, TokenCheckUnavailable, TokenError
from authbus.common._login import BrowserLogin
from authbus.common._revocation import IntrospectionRevocationCheck, RedisRevocationCheck
from authbus.common._validator import Caller, RevocationCheck, TokenValidator

__all__ = [
    "BrowserLogin",
    "Caller",
    "IntrospectionRevocationCheck",
    "InvalidTokenError",
    "RedisRevocationCheck",
    "RevocationCheck",
    "TokenCheckUnavailable",
    "TokenValidator",
    "authenticate",
    "browser_login_router",
    "requires",
]

_bearer = HTTPBearer(auto_error=False, description="An access token from the token service")
_UNSAFE = re.compile(r'[^\x20-\x7e]|["\\]')


def _quoted(value: str) -> str:
    # RFC 6750 §3: error_description is a quoted-string of printable ASCII without " or \.
    return _UNSAFE.sub("", value)[:200]


def unauthorized(description: str, *, missing_token: bool = False) -> HTTPException:
    """The 401 of RFC 6750 §3.1, rendered as `{"error": "invalid_token", ...}`.

    A request with no token at all gets a bare `Bearer` challenge (RFC 6750 §3: no error
    code when the client did not try to authenticate).

    Example:
        raise unauthorized("the token has expired")
    """
    if missing_token:
        challenge = 'Bearer realm="authbus"'
    else:
        challenge = (
            f'Bearer realm="authbus", error="invalid_token", '
            f'error_description="{_quoted(description)}"'
        )
    return HTTPException(
        401,
        detail={"error": "invalid_token", "error_description": description},
        headers={"WWW-Authenticate": challenge},
    )


def insufficient_scope(required: tuple[str, ...], missing: list[str]) -> HTTPException:
    """The 403 of RFC 6750 §3.1 with the scopes the token lacks in `missing_scopes`.

    Example:
        raise insufficient_scope(("users:admin",), ["users:admin"])
    """
    description = "the token lacks the scope(s): " + " ".join(missing)
    return HTTPException(
        403,
        detail={
            "error": "insufficient_scope",
            "error_description": description,
            "missing_scopes": missing,
        },
        headers={
            "WWW-Authenticate": (
                f'Bearer realm="authbus", error="insufficient_scope", '
                f'scope="{_quoted(" ".join(required))}"'
            )
        },
    )


def unavailable(exc: TokenCheckUnavailable) -> HTTPException:
    """503 `temporarily_unavailable` with `Retry-After`: the token could not be checked."""
    return HTTPException(
        503,
        detail={"error": "temporarily_unavailable", "error_description": exc.description},
        headers={"Retry-After": str(exc.retry_after)},
    )


def _validator_of(request: Request) -> TokenValidator:
    validator = getattr(request.app.state, "token_validator", None)
    if not isinstance(validator, TokenValidator):
        raise RuntimeError("app.state.token_validator must be set to a TokenValidator")
    return validator


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Caller:
    """The `Caller` of the request's bearer token, or the matching HTTPException.

    With a `BrowserLogin` on the validator, the session cookie is accepted too and a
    browser without a (valid) one is redirected to sign in.

    Example:
        caller = await authenticate(request, await HTTPBearer(auto_error=False)(request))
    """
    validator = _validator_of(request)
    login = validator.browser_login
    token = credentials.credentials if credentials is not None else None
    from_cookie = False
    if token is None and login is not None:
        token = request.cookies.get(login.session_cookie) or None
        from_cookie = token is not None
        if token is None and _wants_html(request):
            raise _sign_in_redirect(login, request)
    if not token:
        raise unauthorized("a bearer token is required", missing_token=True)
    try:
        return await validator.validate(token)
    except InvalidTokenError as exc:
        if login is not None and from_cookie and _wants_html(request):
            raise _sign_in_redirect(login, request) from exc  # the session ran out
        raise unauthorized(exc.description) from exc
    except TokenCheckUnavailable as exc:
        raise unavailable(exc) from exc


def _wants_html(request: Request) -> bool:
    # Only a browser navigation may be redirected; API clients get the 401.
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def _cookie(
    name: str, value: str, *, path: str, max_age: int, secure: bool, http_only: bool = True
) -> str:
    parts = [f"{name}={value}", f"Path={path}", f"Max-Age={max_age}", "SameSite=Lax"]
    if http_only:
        parts.append("HttpOnly")
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def _sign_in_redirect(login: BrowserLogin, request: Request) -> HTTPException:
    query = f"?{request.url.query}" if request.url.query else ""
    location, state_cookie = login.start(request.url.path + query)
    return HTTPException(
        303,
        detail={"error": "login_required", "error_description": "sign in to continue"},
        headers={
            "Location": location,
            "Set-Cookie": _cookie(
                login.state_cookie,
                state_cookie,
                path=login.callback_path,
                max_age=login.state_max_age,
                secure=bool(login.cookie_secure),
            ),
            "Cache-Control": "no-store",
        },
    )


def browser_login_router(login: BrowserLogin) -> APIRouter:
    """The callback route of a `BrowserLogin`, mounted at the path of its `redirect_uri`.

    Exchanges the code (with the PKCE verifier kept in the signed state cookie), stores
    the access token in the session cookie and sends the browser back to where it was.

    Example:
        app.include_router(browser_login_router(login))
    """
    router = APIRouter()

    @router.get(login.callback_path, include_in_schema=False)
    async def sign_in_callback(request: Request) -> RedirectResponse:
        params = request.query_params
        if "error" in params:  # RFC 6749 §4.1.2.1: the user refused, or the server did
            raise HTTPException(
                403,
                detail={
                    "error": params["error"][:64],
                    "error_description": params.get("error_description", "sign-in failed")[:200],
                },
            )
        try:
            state = login.check_state(request.cookies.get(login.state_cookie), params.get("state"))
        except ValueError as exc:
            raise HTTPException(
                400, detail={"error": "invalid_request", "error_description": str(exc)}
            ) from exc
        code = params.get("code")
        if not code:
            raise HTTPException(
                400, detail={"error": "invalid_request", "error_description": "code is missing"}
            )
        try:
            tokens = await login.exchange(code, state)
        except TokenError as exc:
            if exc.error == "temporarily_unavailable":
                raise HTTPException(
                    503,
                    detail={"error": exc.error, "error_description": str(exc.description)},
                    headers={"Retry-After": "5"},
                ) from exc
            raise HTTPException(
                400, detail={"error": exc.error, "error_description": exc.description or ""}
            ) from exc
        expires_in = tokens.get("expires_in")
        max_age = int(expires_in) if isinstance(expires_in, int | float) else 3600
        response = RedirectResponse(state.return_to, status_code=303)
        response.headers.append(
            "Set-Cookie",
            _cookie(
                login.session_cookie,
                tokens["access_token"],
                path="/",
                max_age=max_age,
                secure=bool(login.cookie_secure),
            ),
        )
        response.headers.append(
            "Set-Cookie",
            _cookie(
                login.state_cookie,
                "",
                path=login.callback_path,
                max_age=0,
                secure=bool(login.cookie_secure),
            ),
        )
        response.headers["Cache-Control"] = "no-store"
        return response

    return router


def requires(*scopes: str) -> Callable[..., Awaitable[Caller]]:
    """A FastAPI dependency: a valid bearer token holding every one of `scopes`.

    Looks up the `TokenValidator` at `request.app.state.token_validator`. Answers 401
    `invalid_token` (with `WWW-Authenticate: Bearer ...`) for a missing or bad token, 403
    `insufficient_scope` with `missing_scopes`, 503 when the token cannot be checked.

    Example:
        @router.post("/v1/users")
        async def create(caller: Caller = Depends(requires("users:admin"))) -> ...:
            ...
    """
    required = tuple(dict.fromkeys(scopes))

    async def require_token(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> Caller:
        caller = await authenticate(request, credentials)
        missing = [s for s in required if s not in caller.scopes]
        if missing:
            raise insufficient_scope(required, missing)
        return caller

    return require_token
