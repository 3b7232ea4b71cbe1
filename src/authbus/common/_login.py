"""Browser sign-in for resource servers: authorization code + PKCE, without a framework.

A browser that asks for an HTML page without a token is sent to the token service's
`/authorize` (RFC 6749 §4.1, PKCE S256 per RFC 7636); `state` and the code verifier ride
in a short-lived HMAC-signed cookie. The callback exchanges the code and keeps the access
token in an HttpOnly session cookie. `authbus.common.security` wires this into FastAPI.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from authbus.common._errors import TokenError
from authbus.common._oauth import basic_credentials
from authbus.common._transport import async_client


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pkce_pair() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair (RFC 7636 §4.1, §4.2)."""
    verifier = secrets.token_urlsafe(48)  # 64 chars, inside the 43..128 range
    challenge = _b64(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge


def safe_return_path(path: str) -> str:
    """`path` when it is a local path, else "/": the callback must not be an open redirect.

    >>> safe_return_path("/orders?x=1"), safe_return_path("//evil.test/"), safe_return_path("http://e")
    ('/orders?x=1', '/', '/')
    """
    if not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@dataclass
class LoginState:
    """What the signed state cookie carries between the redirect and the callback."""

    state: str
    verifier: str
    return_to: str
    issued_at: float


@dataclass
class BrowserLogin:
    """Send browsers without a token to the token service's sign-in page.

    Configure the `TokenValidator` with it and mount the callback router:

    Example:
        login = BrowserLogin(
            authorize_url="http://127.0.0.1:8082/authorize",
            token_url="http://127.0.0.1:8082/token",
            client_id="orders-web",
            redirect_uri="http://127.0.0.1:9000/auth/callback",
            secret_key=settings.cookie_secret,
            scopes=["orders:read"],
        )
        app.state.token_validator = TokenValidator(..., browser_login=login)
        app.include_router(browser_login_router(login))   # from authbus.common.security

    A GET asking for `text/html` without a bearer token is redirected (303) to
    `authorize_url` with this client's id, `state` and an S256 PKCE challenge; the
    callback at `redirect_uri` exchanges the code and sets the `session_cookie`
    (HttpOnly, SameSite=Lax) holding the access token, then returns to the first page.
    SameSite=Lax keeps other sites from sending the cookie with their POSTs (CSRF); when
    the token expires the browser signs in again (the SSO cookie of the token service
    usually makes that invisible). Refresh tokens are not kept.
    """

    authorize_url: str
    token_url: str
    client_id: str
    redirect_uri: str
    secret_key: str
    scopes: Iterable[str] = ()
    client_secret: str | None = None
    session_cookie: str = "authbus_session"
    state_cookie: str = "authbus_login"
    state_max_age: int = 600
    cookie_secure: bool | None = None
    timeout: float = 10.0
    transport: httpx.AsyncBaseTransport | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        if len(self.secret_key) < 16:
            raise ValueError("secret_key must be at least 16 characters")
        self.scopes = tuple(self.scopes)
        parts = urlsplit(self.redirect_uri)
        if not parts.scheme or not parts.netloc:
            raise ValueError("redirect_uri must be an absolute URL")
        if self.cookie_secure is None:
            self.cookie_secure = parts.scheme == "https"

    @property
    def callback_path(self) -> str:
        """The path of `redirect_uri`, where the callback route is mounted."""
        return urlsplit(self.redirect_uri).path or "/"

    # -- the signed state cookie ----------------------------------------------------------

    def _sign(self, payload: bytes) -> str:
        mac = hmac.new(self.secret_key.encode(), payload, hashlib.sha256).digest()
        return f"{_b64(payload)}.{_b64(mac)}"

    def _unsign(self, value: str) -> bytes | None:
        body, _, mac = value.partition(".")
        try:
            payload = _unb64(body)
            given = _unb64(mac)
        except ValueError:
            return None
        expected = hmac.new(self.secret_key.encode(), payload, hashlib.sha256).digest()
        return payload if hmac.compare_digest(given, expected) else None

    # -- the two legs ---------------------------------------------------------------------

    def start(self, return_to: str) -> tuple[str, str]:
        """Begin a sign-in: (URL to redirect the browser to, value of the state cookie)."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(24)
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        if self.scopes:
            params["scope"] = " ".join(self.scopes)
        cookie = {"s": state, "v": verifier, "r": safe_return_path(return_to), "t": self.clock()}
        separator = "&" if "?" in self.authorize_url else "?"
        return (
            f"{self.authorize_url}{separator}{urlencode(params)}",
            self._sign(json.dumps(cookie, separators=(",", ":")).encode()),
        )

    def check_state(self, cookie: str | None, state: str | None) -> LoginState:
        """The login this callback belongs to; raises `ValueError` for a forged or stale one.

        RFC 6749 §10.12: the `state` must match what this browser was given (CSRF).
        """
        if not cookie or not state:
            raise ValueError("the sign-in was not started here or its cookie is gone")
        payload = self._unsign(cookie)
        if payload is None:
            raise ValueError("the sign-in cookie is not valid")
        try:
            data: dict[str, Any] = json.loads(payload)
            login = LoginState(str(data["s"]), str(data["v"]), str(data["r"]), float(data["t"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError("the sign-in cookie is not valid") from exc
        if self.clock() - login.issued_at > self.state_max_age:
            raise ValueError("the sign-in took too long; please start again")
        if not hmac.compare_digest(login.state.encode(), state.encode()):
            raise ValueError("the sign-in state does not match")
        login.return_to = safe_return_path(login.return_to)
        return login

    async def exchange(self, code: str, login: LoginState) -> dict[str, Any]:
        """Trade the authorization code for tokens (RFC 6749 §4.1.3, with the verifier)."""
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self.redirect_uri,
            "code_verifier": login.verifier,
        }
        headers = {"Accept": "application/json"}
        if self.client_secret is not None:
            headers["Authorization"] = basic_credentials(self.client_id, self.client_secret)
        else:
            data["client_id"] = self.client_id
        try:
            async with async_client(self.transport, self.timeout) as c:
                response = await c.post(self.token_url, data=data, headers=headers)
        except httpx.HTTPError as exc:
            raise TokenError("temporarily_unavailable", "the token service is unreachable") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TokenError(
                "invalid_response", f"the token endpoint answered {response.status_code}"
            )
        if response.status_code != 200 or not isinstance(body.get("access_token"), str):
            description = body.get("error_description")
            raise TokenError(
                str(body.get("error", "invalid_response")),
                description if isinstance(description, str) else None,
                status_code=response.status_code,
            )
        return body
