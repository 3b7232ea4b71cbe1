"""The OAuth 2.0 client protocol, without I/O: what to send, how to read the answer.

`TokenAuth` (requests) and `AsyncTokenAuth` (httpx) both drive a `GrantCore`; they only
differ in how the bytes travel, so the rules (client authentication, caching, renewal,
error mapping) live here once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from authbus.common._errors import TokenError

Clock = Callable[[], float]
METADATA_PATH = "/.well-known/oauth-authorization-server"
BEARER = "Bearer"


@dataclass(frozen=True, slots=True)
class TokenSet:
    """Tokens from one successful token response (RFC 6749 §5.1).

    `expires_at` is on the auth object's clock (None when the server did not say);
    `renew_at` is when a new token will be fetched ahead of expiry.

    Example:
        auth = RefreshTokenAuth("web", refresh_token, issuer=issuer,
                                on_tokens=lambda t: store(t.refresh_token))
    """

    access_token: str
    token_type: str
    expires_at: float | None
    renew_at: float | None
    scope: str | None
    refresh_token: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class HTTPCall:
    """One request to make: method, URL, headers and form body."""

    method: str
    url: str
    headers: dict[str, str]
    data: dict[str, str] | None = None


def basic_credentials(client_id: str, client_secret: str) -> str:
    """The `Authorization` value for client_secret_basic.

    RFC 6749 §2.3.1: id and secret are form-urlencoded *before* base64, so a secret with
    `:` or non-ASCII characters survives.

    >>> basic_credentials("a b", "s:t")
    'Basic YStiOnMlM0F0'
    """
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".replace("%20", "+")
    return "Basic " + base64.b64encode(raw.encode()).decode()


def renewal_time(obtained_at: float, lifetime: float, leeway: float) -> float:
    """When to fetch a new token: `leeway` seconds before expiry, but not before half of
    the lifetime has passed (a 40 s token with a 30 s leeway is renewed after 20 s, not 10).

    >>> renewal_time(0, 3600, 30), renewal_time(0, 40, 30)
    (3570.0, 20.0)
    """
    return float(obtained_at + max(lifetime - leeway, lifetime / 2))


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


class GrantCore:
    """Shared state of one token source: endpoint, credentials, the cached token.

    Subclasses say which grant they use (`grant_params`). Thread/task safety is the
    caller's job: the sync and async twins hold their own lock around `fetch`.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str | None,
        token_url: str | None,
        issuer: str | None,
        scopes: Iterable[str],
        audience: str | None,
        resource: str | None,
        leeway: float,
        clock: Clock,
    ) -> None:
        if token_url is None and issuer is None:
            raise ValueError("give token_url, or issuer to discover it (RFC 8414)")
        if audience and resource and audience != resource:
            # Both name the token's audience; the server takes one RFC 8707 `resource`.
            raise ValueError("audience and resource name the same thing; give one of them")
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_url = token_url
        self.issuer = issuer.rstrip("/") if issuer else None
        self.scopes = tuple(dict.fromkeys(scopes))
        self.audience = audience
        # `audience` is asked for as RFC 8707 `resource`: what the token service understands
        # (an `audience` form field, Auth0's dialect, would be ignored by it).
        self.resource = resource or audience
        self.leeway = leeway
        self.clock = clock
        self.tokens: TokenSet | None = None
        #: number of token responses received (for tests and metrics)
        self.token_requests = 0

    # -- discovery (RFC 8414) -------------------------------------------------------------

    def metadata_call(self) -> HTTPCall | None:
        """The metadata request to make first, or None when the endpoint is known."""
        if self.token_url is not None:
            return None
        return HTTPCall("GET", f"{self.issuer}{METADATA_PATH}", {"Accept": "application/json"})

    def accept_metadata(self, status: int, body: bytes) -> None:
        """Take `token_endpoint` from the metadata; raises `TokenError` when unusable."""
        doc = _json_object(body)
        if status != 200 or doc is None:
            raise TokenError(
                "temporarily_unavailable" if status >= 500 else "invalid_metadata",
                f"authorization server metadata answered {status}",
                status_code=status,
            )
        # RFC 8414 §3.3: the metadata must name the issuer we asked, or it is not trusted.
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer:
            raise TokenError("invalid_metadata", "the metadata issuer does not match")
        endpoint = doc.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise TokenError("invalid_metadata", "the metadata has no token_endpoint")
        self.token_url = endpoint

    # -- the token request ----------------------------------------------------------------

    def grant_params(self) -> dict[str, str]:
        """The grant-specific form fields (`grant_type`, ...)."""
        raise NotImplementedError

    def token_call(self) -> HTTPCall:
        """The token request (RFC 6749 §4.4.2 / §6)."""
        assert self.token_url is not None
        data = self.grant_params()
        if self.scopes:
            data["scope"] = " ".join(self.scopes)
        if self.resource:
            data["resource"] = self.resource  # RFC 8707 §2
        headers = {"Accept": "application/json"}
        if self.client_secret is not None:
            headers["Authorization"] = basic_credentials(self.client_id, self.client_secret)
        else:
            data["client_id"] = self.client_id  # public client, RFC 6749 §3.2.1
        return HTTPCall("POST", self.token_url, headers, data)

    def accept_token_response(self, status: int, body: bytes, requested_at: float) -> TokenSet:
        """Store and return the tokens, or raise `TokenError` with the server's error code."""
        self.token_requests += 1
        doc = _json_object(body)
        if status != 200:
            if doc is not None and isinstance(doc.get("error"), str):
                description = doc.get("error_description")
                uri = doc.get("error_uri")
                raise TokenError(
                    doc["error"],
                    description if isinstance(description, str) else None,
                    status_code=status,
                    error_uri=uri if isinstance(uri, str) else None,
                )
            raise TokenError(
                "temporarily_unavailable" if status >= 500 else "invalid_response",
                f"the token endpoint answered {status}",
                status_code=status,
            )
        if doc is None or not isinstance(doc.get("access_token"), str):
            raise TokenError("invalid_response", "the token response has no access_token")
        token_type = doc.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise TokenError("invalid_response", f"unsupported token_type {token_type!r}")
        expires_in = doc.get("expires_in")
        expires_at = renew_at = None
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            # measured from when we asked: the response may have been slow
            expires_at = requested_at + float(expires_in)
            renew_at = renewal_time(requested_at, float(expires_in), self.leeway)
        refresh = doc.get("refresh_token")
        scope = doc.get("scope")
        tokens = TokenSet(
            access_token=doc["access_token"],
            token_type=BEARER,
            expires_at=expires_at,
            renew_at=renew_at,
            scope=scope if isinstance(scope, str) else None,
            refresh_token=refresh if isinstance(refresh, str) else None,
            raw=doc,
        )
        self.tokens = tokens
        self.tokens_received(tokens)
        return tokens

    def tokens_received(self, tokens: TokenSet) -> None:
        """Hook for grants that keep state from a response (refresh token rotation)."""

    # -- the cache ------------------------------------------------------------------------

    def current(self) -> str | None:
        """The cached access token while it needs no renewal, else None."""
        tokens = self.tokens
        if tokens is None:
            return None
        if tokens.renew_at is not None and self.clock() >= tokens.renew_at:
            return None
        return tokens.access_token

    def invalidate(self, access_token: str) -> bool:
        """Forget `access_token` (the resource said 401); True when it was the cached one.

        A token already replaced by another thread's renewal is left alone, so a burst of
        401s causes one new token request, not one per request.
        """
        if self.tokens is not None and self.tokens.access_token == access_token:
            self.tokens = None
            return True
        return False


class ClientCredentialsGrant(GrantCore):
    """RFC 6749 §4.4: a confidential client asks for a token for itself."""

    def grant_params(self) -> dict[str, str]:
        return {"grant_type": "client_credentials"}


class RefreshTokenGrant(GrantCore):
    """RFC 6749 §6: exchange a refresh token (from a user login) for a new access token.

    Rotated refresh tokens replace the old one; `on_tokens` is told so the caller can
    persist it.
    """

    def __init__(
        self,
        *,
        refresh_token: str,
        access_token: str | None,
        expires_at: float | None,
        on_tokens: Callable[[TokenSet], None] | None,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.refresh_token = refresh_token
        self.on_tokens = on_tokens
        if access_token is not None:
            renew_at = None
            if expires_at is not None:
                now = self.clock()
                renew_at = renewal_time(now, max(expires_at - now, 0.0), self.leeway)
            self.tokens = TokenSet(access_token, BEARER, expires_at, renew_at, None, None, {})

    def grant_params(self) -> dict[str, str]:
        return {"grant_type": "refresh_token", "refresh_token": self.refresh_token}

    def tokens_received(self, tokens: TokenSet) -> None:
        if tokens.refresh_token:
            self.refresh_token = tokens.refresh_token
        if self.on_tokens is not None:
            self.on_tokens(tokens)
