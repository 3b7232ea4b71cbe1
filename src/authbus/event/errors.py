"""The event service's errors, each with a stable `error` code (mapped to HTTP by core.app)."""

from __future__ import annotations

from authbus.core.errors import Conflict, DependencyUnavailable, NotFound, PayloadTooLarge


class VersionConflict(Conflict):
    """`expected_version` (or an explicit `aggregate_version`) lost the race: 409."""

    code = "version_conflict"

    def __init__(self, aggregate_type: str, aggregate_id: str, current_version: int) -> None:
        super().__init__(
            f"aggregate {aggregate_type}/{aggregate_id} is at version {current_version}",
            extra={"current_version": current_version},
        )
        self.current_version = current_version


class IdempotencyKeyReused(Conflict):
    """The same Idempotency-Key came with a different request body: 409."""

    code = "idempotency_key_reused"


class EventTooLarge(PayloadTooLarge):
    """The request body is above `event.max_payload_bytes`: 413."""

    code = "payload_too_large"


class SubscriberNotFound(NotFound):
    """No such subscriber on the channel: 404."""

    code = "subscriber_not_found"


class LogUnavailable(DependencyUnavailable):
    """The event database is down: 503 with Retry-After."""

    code = "temporarily_unavailable"


class DeliveryUnavailable(DependencyUnavailable):
    """Redis is down or not configured, for operations that need it (stats, dead letters)."""

    code = "delivery_unavailable"
