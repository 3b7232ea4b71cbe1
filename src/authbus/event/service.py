"""The publish rules: validate a request, append it to the log, then hand it to delivery.

service = EventService(log, dispatcher)
result = await service.publish("orders", [NewEvent(type="order.placed")], producer="shop")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from authbus.common._envelope import valid_name
from authbus.core.errors import ValidationFailed
from authbus.event.delivery import Dispatcher
from authbus.event.log import AppendResult, EventLog, NewEvent

__all__ = ["EventService"]

MAX_BATCH = 1000


class EventService:
    """Publishing: the log first (durable), then fan-out (or the dispatcher, later)."""

    def __init__(
        self,
        event_log: EventLog,
        dispatcher: Dispatcher,
        *,
        on_published: Callable[[str, int], None] | None = None,
    ) -> None:
        self.log = event_log
        self.dispatcher = dispatcher
        self.on_published = on_published

    async def publish(
        self,
        channel: str,
        drafts: Sequence[NewEvent],
        *,
        producer: str | None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append `drafts` atomically and fan them out with one script call."""
        if not valid_name(channel):
            raise ValidationFailed("channel: must be 1-128 of letters, digits, '.', '_', '-'")
        if not drafts:
            raise ValidationFailed("events: at least one event is required")
        if len(drafts) > MAX_BATCH:
            raise ValidationFailed(f"events: at most {MAX_BATCH} events per request")
        for i, d in enumerate(drafts):
            _check(i, d)
        result = await self.log.append(
            channel, drafts, producer=producer, idempotency_key=idempotency_key
        )
        if not result.replayed:
            await self.dispatcher.after_commit(result.events)
            if self.on_published is not None:
                self.on_published(channel, len(result.events))
        return result


def _check(index: int, draft: NewEvent) -> None:
    where = f"events[{index}]" if index else "event"
    if (draft.aggregate_type is None) != (draft.aggregate_id is None):
        raise ValidationFailed(f"{where}: aggregate_type and aggregate_id go together")
    versioned = draft.aggregate_version is not None or draft.expected_version is not None
    if versioned and draft.aggregate_type is None:
        raise ValidationFailed(f"{where}: a version needs aggregate_type and aggregate_id")
    if (
        draft.aggregate_version is not None
        and draft.expected_version is not None
        and draft.aggregate_version != draft.expected_version + 1
    ):
        raise ValidationFailed(f"{where}: aggregate_version must be expected_version + 1")
