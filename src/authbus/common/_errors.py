"""The errors of the client library, free of any web framework.

`TokenError` is what a client sees when the token service refuses it; `InvalidTokenError`
and `TokenCheckUnavailable` are what a resource server sees while checking a bearer token
(`authbus.common.security` turns them into 401 and 503 responses).
"""

from __future__ import annotations


class AuthbusClientError(Exception):
    """Base of every error raised by `authbus.common`.

    Example:
        >>> issubclass(TokenError, AuthbusClientError)
        True
    """


class TokenError(AuthbusClientError):
    """The token endpoint refused to issue a token (RFC 6749 §5.2), or could not be reached.

    `error` is the OAuth error code (`invalid_client`, `invalid_grant`, ...; a failure to
    reach the endpoint is reported as `temporarily_unavailable`), `description` the
    server's `error_description`, `status_code` the HTTP status when there was a response.

    Example:
        >>> err = TokenError("invalid_client", "unknown client", status_code=401)
        >>> (err.error, err.status_code)
        ('invalid_client', 401)
    """

    def __init__(
        self,
        error: str,
        description: str | None = None,
        *,
        status_code: int | None = None,
        error_uri: str | None = None,
    ) -> None:
        self.error = error
        self.description = description
        self.status_code = status_code
        self.error_uri = error_uri
        super().__init__(f"{error}: {description}" if description else error)


class InvalidTokenError(AuthbusClientError):
    """A bearer token failed validation: bad signature, expired, wrong audience, revoked...

    The message is safe to show to the caller (RFC 6750 §3 `error_description`).

    Example:
        >>> str(InvalidTokenError("the token has expired"))
        'the token has expired'
    """

    def __init__(self, description: str) -> None:
        self.description = description
        super().__init__(description)


class TokenCheckUnavailable(AuthbusClientError):
    """A token could not be checked because a dependency (JWKS, Redis, introspection) is down.

    This is not the caller's fault: answer 503 with `Retry-After`, never 401.

    Example:
        >>> TokenCheckUnavailable("JWKS unreachable", retry_after=5).retry_after
        5
    """

    def __init__(self, description: str, *, retry_after: int = 5) -> None:
        self.description = description
        self.retry_after = retry_after
        super().__init__(description)
