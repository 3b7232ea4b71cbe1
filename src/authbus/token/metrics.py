"""The token service's own Prometheus figures, next to the HTTP ones every service reports.

    metrics = TokenMetrics.register(app.state.metrics)
    metrics.issued.labels("client_credentials").inc()
    metrics.errors.labels("invalid_grant").inc()

Label values are bounded: grant types come from the supported set (only a success counts),
error codes from the RFC 6749 §5.2 / RFC 8707 list.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter

from authbus.core.metrics import Metrics


@dataclass(frozen=True)
class TokenMetrics:
    """Tokens issued by grant type; token endpoint errors by RFC error code."""

    issued: Counter
    errors: Counter

    @classmethod
    def register(cls, metrics: Metrics) -> TokenMetrics:
        return cls(
            issued=metrics.counter(
                "authbus_tokens_issued",
                "Access tokens issued, by grant type (implicit included)",
                ["grant_type"],
            ),
            errors=metrics.counter(
                "authbus_token_endpoint_errors",
                "Token endpoint error responses, by RFC 6749 error code",
                ["error"],
            ),
        )
