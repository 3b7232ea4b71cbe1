"""The event envelope both sides of delivery share: the `Event` model and delivery items.

A delivery item is the string stored in the Redis lists: `f"{attempt}:{event_json}"`. The
attempt comes first so a requeued delivery (attempt + 1) is a different string, and a late
ack of the old one removes nothing (DESIGN.md "Events").

    item = format_delivery(event, attempt=1)     # '1:{"id":"0192…","position":7,…}'
    delivery = parse_delivery(item)              # Delivery(event=…, attempt=1, raw=item)
"""

from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NAME_PATTERN",
    "Delivery",
    "Event",
    "InvalidDelivery",
    "format_delivery",
    "parse_delivery",
    "uuid7",
    "valid_name",
]

# Channel and subscriber names end up inside Redis keys and the `{channel}` hash tag, so
# braces, colons and whitespace are excluded.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)


def valid_name(name: str) -> bool:
    """True when `name` may be used as a channel or subscriber name."""
    return bool(_NAME_RE.match(name))


def uuid7() -> str:
    """A UUIDv7 (RFC 9562 §5.7): 48-bit Unix milliseconds then random bits, time-sortable."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & ((1 << 62) - 1)  # rand_b, 62 bits
    return str(uuid.UUID(int=value))


class Event(BaseModel):
    """One stored event, as the log returns it and as subscribers receive it.

    `position` is global across channels and increases with every append.

    Example:
        async def process_event(self, event: Event) -> None:
            if event.type == "order.placed" and event.aggregate_version == 1:
                await reserve_stock(event.data["order_id"], causation=event.id)
    """

    model_config = ConfigDict(frozen=True)

    id: str
    position: int
    channel: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    aggregate_version: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None
    producer: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


class InvalidDelivery(ValueError):
    """A delivery item that is not `<attempt>:<event json>` (a poison message)."""


class Delivery(BaseModel):
    """An event as one subscriber instance received it: the event, its attempt, the raw item."""

    model_config = ConfigDict(frozen=True)

    event: Event
    attempt: int
    raw: str


def format_delivery(event: Event, attempt: int = 1) -> str:
    """The list item for `event` at `attempt` (1 for the first delivery)."""
    return f"{attempt}:{event.model_dump_json()}"


def parse_delivery(raw: str | bytes) -> Delivery:
    """Parse a list item; raises `InvalidDelivery` when it is malformed."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    head, sep, body = text.partition(":")
    if not sep or not head.isdigit():
        raise InvalidDelivery("delivery item does not start with '<attempt>:'")
    try:
        event = Event.model_validate_json(body)
    except ValueError as exc:
        raise InvalidDelivery(f"delivery item holds no valid event: {exc}") from exc
    return Delivery(event=event, attempt=int(head), raw=text)
