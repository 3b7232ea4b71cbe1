"""The browser side of the authorization endpoint: sign-in, consent and sign-out pages.

Server-rendered, no JavaScript; CSRF by a double-submit cookie; an SSO cookie lets a second
authorization skip the form while the session lives.

The login form carries the authorization request in hidden fields: whatever comes back is
validated and checked with the user service as a new request, so editing it gains nothing.
The consent form carries only the handle of the request kept in the SSO session when it was
checked: the answer applies to that request, never to fields a user may have added.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from authbus.core.errors import AuthbusError
from authbus.token.api._http import (
    NO_STORE,
    cookie_name,
    metrics_of,
    read_form,
    read_query,
    secure_cookies,
    service_of,
    templates_of,
)
from authbus.token.errors import (
    AccessDenied,
    InsufficientRights,
    InvalidAuthorizationTarget,
    InvalidCredentials,
    InvalidRequest,
    TemporarilyUnavailable,
    TooManyAttempts,
    UserDisabled,
)
from authbus.token.grants import (
    AUTHORIZATION_PARAMS,
    AuthorizationRequest,
    RedirectError,
)
from authbus.token.service import Session

router = APIRouter()

CSRF_COOKIE = "authbus_csrf"
SSO_COOKIE = "authbus_sso"
# Pages: no framing (clickjacking), no caching, no referrer leaking the query string.
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
# The consent form's one request field: the handle of the request kept in the SSO session.
CONSENT_FIELD = "consent_request"
GENERIC_LOGIN_ERROR = "Invalid username or password."
CONSENT_GONE = (
    "This consent page has expired or was already answered. "
    "Go back to the application and start again."
)
UNAVAILABLE_ERROR = "Sign-in is temporarily unavailable. Please try again in a moment."


def _page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = templates_of(request).get_template(template).render(**context)
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _error_page(request: Request, exc: AuthbusError, status: int = 400) -> HTMLResponse:
    return _page(
        request,
        "error.html",
        status=status,
        title="This sign-in link is not valid",
        message=exc.message,
        code=exc.code,
    )


def _csrf_token(request: Request) -> str:
    existing = request.cookies.get(cookie_name(request, CSRF_COOKIE))
    if existing and 20 <= len(existing) <= 100:
        return existing
    return secrets.token_urlsafe(32)


def _set_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        cookie_name(request, CSRF_COOKIE),
        token,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
        path="/",
    )


def _csrf_ok(request: Request, form: Mapping[str, str]) -> bool:
    """Double-submit check: the hidden field must equal the cookie (constant time)."""
    cookie = request.cookies.get(cookie_name(request, CSRF_COOKIE)) or ""
    sent = form.get("csrf_token") or ""
    return bool(cookie) and hmac.compare_digest(cookie.encode(), sent.encode())


def _login_page(
    request: Request,
    auth: AuthorizationRequest,
    *,
    error: str | None = None,
    username: str = "",
    status: int = 200,
) -> HTMLResponse:
    csrf = _csrf_token(request)
    response = _page(
        request,
        "login.html",
        status=status,
        action=request.url.path,
        csrf_token=csrf,
        params=auth.form_fields(),
        client_name=auth.client.name,
        scopes=auth.scopes,
        error=error,
        username=username,
    )
    _set_csrf(request, response, csrf)
    return response


async def _consent_page(
    request: Request, auth: AuthorizationRequest, session: Session, cookie: str
) -> HTMLResponse:
    """Ask the signed-in user to allow `auth`, which was checked against `session`.

    The request is kept in the session; the form carries only its handle, so the answer
    applies to exactly what was checked (a form edited to name another scope, client,
    redirect URI, PKCE challenge, state or resource changes nothing).
    """
    handle, _ = await service_of(request).hold_for_consent(cookie, session, auth)
    csrf = _csrf_token(request)
    response = _page(
        request,
        "consent.html",
        action=request.url.path,
        csrf_token=csrf,
        params={CONSENT_FIELD: handle},
        client_name=auth.client.name,
        scopes=auth.scopes,
        username=session.username,
    )
    _set_csrf(request, response, csrf)
    return response


def _redirect(url: str) -> RedirectResponse:
    # 302 per RFC 6749 §4.1.2 (a 307 would re-POST the credentials to the client).
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


async def _validated(
    request: Request, params: Mapping[str, str]
) -> AuthorizationRequest | Response:
    try:
        return await service_of(request).server.validate_authorization_request(params)
    except InvalidAuthorizationTarget as exc:
        return _error_page(request, exc)
    except RedirectError as exc:
        return _redirect(exc.redirect_to)


async def _finish(request: Request, auth: AuthorizationRequest, session: Session) -> Response:
    """Approve the request for a signed-in user holding the scopes and having consented."""
    svc = service_of(request)
    url = await svc.server.approve(
        auth,
        subject=session.user_id,
        auth_time=session.auth_time,
        checked_at=session.checked_at,
    )
    if auth.response_type == "token":
        metrics_of(request).issued.labels("implicit").inc()
    return _redirect(url)


@router.get("/authorize", tags=["oauth"], summary="Authorization endpoint: the sign-in page")
async def authorize_get(request: Request) -> Response:
    """RFC 6749 §3.1: validates the client and redirect URI first, then shows the login form
    (or, with a live SSO session that covers the request, answers at once)."""
    try:
        params = read_query(request)
    except InvalidRequest as exc:
        return _error_page(request, exc)
    auth = await _validated(request, params)
    if isinstance(auth, Response):
        return auth
    svc = service_of(request)
    cookie = request.cookies.get(cookie_name(request, SSO_COOKIE))
    session = await svc.session(cookie)
    if cookie is not None and session is not None and session.holds(auth.scopes):
        if session.consented(auth.client, auth.scopes):
            return await _finish(request, auth, session)
        return await _consent_page(request, auth, session, cookie)
    return _login_page(request, auth)


@router.post("/authorize", tags=["oauth"], summary="Authorization endpoint: sign in / consent")
async def authorize_post(request: Request) -> Response:
    """The login form comes back here with the request in hidden fields (the login checks
    them all, as a new request); the consent form with the handle of the checked request."""
    try:
        form = await read_form(request)
    except InvalidRequest as exc:
        return _error_page(request, exc)
    if form.get("action") == "consent":
        return await _consent(request, form)
    params = {k: v for k, v in form.items() if k in AUTHORIZATION_PARAMS}
    auth = await _validated(request, params)
    if isinstance(auth, Response):
        return auth
    if not _csrf_ok(request, form):
        return _login_page(
            request, auth, error="Your session expired. Please sign in again.", status=400
        )
    return await _login(request, auth, form)


async def _consent(request: Request, form: Mapping[str, str]) -> Response:
    """The user's answer to a consent page: it applies to the request that page showed,
    kept in the SSO session when it was checked, never to request fields in the form."""
    svc = service_of(request)
    cookie = request.cookies.get(cookie_name(request, SSO_COOKIE))
    session = await svc.session(cookie)
    handle = form.get(CONSENT_FIELD, "")
    params = session.consent_request(handle, time.time()) if session is not None else None
    if cookie is None or session is None or params is None:
        # Signed out meanwhile, another user signed in, answered already, or a forged form.
        return _error_page(request, InvalidRequest(CONSENT_GONE))
    auth = await _validated(request, params)  # the client may have changed meanwhile
    if isinstance(auth, Response):
        await svc.answer_consent(cookie, session, handle)
        return auth
    if not _csrf_ok(request, form):
        return _error_page(request, InvalidRequest(CONSENT_GONE))
    if not session.holds(auth.scopes):
        # Never true for a page shown by this code (it checks first); kept as a last guard.
        await svc.answer_consent(cookie, session, handle)
        denied = AccessDenied("the user may not grant the requested access")
        return _redirect(auth.error_redirect(denied))
    if form.get("decision") != "allow":
        await svc.answer_consent(cookie, session, handle)
        return _redirect(auth.error_redirect(AccessDenied("the user denied the request")))
    session = await svc.answer_consent(cookie, session, handle, auth)
    return await _finish(request, auth, session)


async def _login(request: Request, auth: AuthorizationRequest, form: Mapping[str, str]) -> Response:
    svc = service_of(request)
    username = form.get("username", "")
    password = form.get("password", "")
    if not username or not password or len(username) > 200 or len(password) > 1024:
        return _login_page(request, auth, error=GENERIC_LOGIN_ERROR, username=username[:200])
    address = request.client.host if request.client else None
    try:
        user = await svc.verify_user(username, password, auth.scopes, address)
    except InvalidCredentials:
        # Same words for an unknown user and a wrong password (no account enumeration).
        return _login_page(request, auth, error=GENERIC_LOGIN_ERROR, username=username)
    except TooManyAttempts as exc:
        return _login_page(
            request,
            auth,
            error=f"Too many attempts. Try again in {exc.retry_after} seconds.",
            username=username,
            status=429,
        )
    except (UserDisabled, InsufficientRights):
        # DESIGN "Enough rights": a disabled user or missing scope -> access_denied.
        denied = AccessDenied("the user may not grant the requested access")
        return _redirect(auth.error_redirect(denied))
    except TemporarilyUnavailable as exc:
        # The user service is down: the user stays on our page (503, Retry-After) and can
        # sign in again once it is back, rather than being bounced to the client with
        # RFC 6749 §4.1.2.1 `temporarily_unavailable` and having to start over.
        page = _login_page(request, auth, error=UNAVAILABLE_ERROR, username=username, status=503)
        page.headers.update(exc.headers)
        return page
    # A fresh session id at every sign-in (no session fixation); the old one ends.
    await svc.end_session(request.cookies.get(cookie_name(request, SSO_COOKIE)))
    cookie, session = await svc.start_session(user)
    if session.consented(auth.client, auth.scopes):
        response = await _finish(request, auth, session)
    else:
        response = await _consent_page(request, auth, session, cookie)
    response.set_cookie(
        cookie_name(request, SSO_COOKIE),
        cookie,
        max_age=svc.sso_session_ttl_s,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(request),
        path="/",
    )
    return response


@router.get("/logout", tags=["oauth"], summary="Sign-out page")
async def logout_get(request: Request) -> Response:
    csrf = _csrf_token(request)
    response = _page(request, "logout.html", action=request.url.path, csrf_token=csrf)
    _set_csrf(request, response, csrf)
    return response


@router.post("/logout", tags=["oauth"], summary="End the SSO session")
async def logout_post(request: Request) -> Response:
    try:
        form = await read_form(request)
    except InvalidRequest as exc:
        return _error_page(request, exc)
    if not _csrf_ok(request, form):
        return _error_page(request, InvalidRequest("the sign-out form expired; reload it"))
    await service_of(request).end_session(request.cookies.get(cookie_name(request, SSO_COOKIE)))
    response = _page(request, "logout.html", signed_out=True)
    response.delete_cookie(
        cookie_name(request, SSO_COOKIE), path="/", secure=secure_cookies(request), httponly=True
    )
    return response
