"""One exception hierarchy for all services, mapped to HTTP in one place.

Services raise `AuthbusError` subclasses from their domain code (no FastAPI below `api`);
`install_error_handlers(app)` turns them into `{"error": code, "error_description": message}`,
the RFC 6749 §5.2 shape, which the non-OAuth endpoints use too for one client-side parser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class AuthbusError(Exception):
    """Base of every expected failure; `code` is stable and machine-readable."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "invalid_request"

    def __init__(
        self,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.message, **self.extra}


class InvalidRequest(AuthbusError):
    status_code = 400
    code = "invalid_request"


class ValidationFailed(AuthbusError):
    status_code = 422
    code = "validation_error"


class Unauthorized(AuthbusError):
    status_code = 401
    code = "invalid_token"

    def __init__(self, message: str = "a valid bearer token is required", **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault(
            "WWW-Authenticate", f'Bearer error="{self.code}", error_description="{message}"'
        )


class Forbidden(AuthbusError):
    status_code = 403
    code = "insufficient_scope"


class NotFound(AuthbusError):
    status_code = 404
    code = "not_found"


class Conflict(AuthbusError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AuthbusError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(AuthbusError):
    status_code = 429
    code = "too_many_requests"


class DependencyUnavailable(AuthbusError):
    """A dependency (database, Redis, a peer service) is down: 503 with Retry-After."""

    status_code = 503
    code = "temporarily_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.headers.setdefault("Retry-After", str(retry_after))
