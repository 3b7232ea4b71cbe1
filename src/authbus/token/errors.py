"""OAuth error codes (RFC 6749 §4.1.2.1, §5.2; RFC 7009; RFC 8707) as `AuthbusError`s.

`OAuthError`s carry the RFC code as their stable `code`; the api layer renders them as JSON
(token endpoint) or as redirect parameters (authorization endpoint).
"""

from __future__ import annotations

from typing import Any

from authbus.core.errors import AuthbusError, DependencyUnavailable


class OAuthError(AuthbusError):
    """An RFC 6749 error: `code` is the `error` value."""

    status_code = 400
    code = "invalid_request"


class InvalidRequest(OAuthError):
    code = "invalid_request"


class InvalidClient(OAuthError):
    """RFC 6749 §5.2: failed client authentication -> 401 with WWW-Authenticate."""

    status_code = 401
    code = "invalid_client"

    def __init__(self, message: str = "client authentication failed", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("WWW-Authenticate", 'Basic realm="authbus", charset="UTF-8"')


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class UnauthorizedClient(OAuthError):
    code = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    code = "unsupported_grant_type"


class UnsupportedResponseType(OAuthError):
    code = "unsupported_response_type"


class InvalidScope(OAuthError):
    code = "invalid_scope"


class InvalidTarget(OAuthError):
    """RFC 8707 §2: the requested resource is not acceptable."""

    code = "invalid_target"


class AccessDenied(OAuthError):
    status_code = 403
    code = "access_denied"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 §2.2.1."""

    code = "unsupported_token_type"


class TemporarilyUnavailable(DependencyUnavailable):
    """RFC 6749 §4.1.2.1 `temporarily_unavailable`: a dependency (user service, Redis) is down."""

    code = "temporarily_unavailable"


class InvalidAuthorizationTarget(AuthbusError):
    """The client is unknown or the redirect URI does not match: show a page, never redirect.

    RFC 6749 §4.1.2.1: if the redirection URI or client identifier is invalid, the server
    must not redirect the user-agent to it.
    """

    status_code = 400
    code = "invalid_request"


class InvalidCredentials(AuthbusError):
    """The user service said the username/password pair is wrong (or the user does not exist)."""

    status_code = 401
    code = "invalid_credentials"


class UserDisabled(AuthbusError):
    status_code = 403
    code = "user_disabled"


class InsufficientRights(AuthbusError):
    """The user lacks some requested scope (`missing` names them)."""

    status_code = 403
    code = "insufficient_rights"

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message, extra={"missing_scopes": missing})
        self.missing = missing


class TooManyAttempts(AuthbusError):
    status_code = 429
    code = "too_many_attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})
        self.retry_after = retry_after
