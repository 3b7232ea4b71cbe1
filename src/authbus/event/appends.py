"""What an append is made of: the drafts, the result, the digest of a request, and how the
aggregate versions of one append are resolved. Shared by the SQL log, its group commit and
the in-memory fake.

    draft = NewEvent(type="order.placed", aggregate_type="order", aggregate_id="42",
                     expected_version=0)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from authbus.common._envelope import Event, uuid7
from authbus.event.errors import VersionConflict

__all__ = [
    "AppendRequest",
    "AppendResult",
    "NewEvent",
    "Versions",
    "event_fields",
    "event_row",
    "request_hash",
]


@dataclass(frozen=True)
class NewEvent:
    """An event to append. With `expected_version` the aggregate must be at that version
    (0: no events yet) and the event gets the next one; with `aggregate_version` that exact
    version; with neither, an aggregate event gets the next version."""

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    aggregate_version: int | None = None
    expected_version: int | None = None
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class AppendResult:
    """What an append stored; `replayed` when an Idempotency-Key returned an earlier result."""

    events: list[Event]
    replayed: bool = False


@dataclass(frozen=True)
class AppendRequest:
    """One append as the log receives it: the drafts, the producer ("" when anonymous), its
    Idempotency-Key and the digest of the request (`request_hash`)."""

    channel: str
    drafts: Sequence[NewEvent]
    producer: str
    idempotency_key: str | None
    digest: str


def event_row(
    request: AppendRequest, draft: NewEvent, version: int | None, now: datetime
) -> dict[str, Any]:
    """The `events` row of one draft (a new UUIDv7 id; the position comes from the insert)."""
    return {
        "id": uuid7(),
        "channel": request.channel,
        "type": draft.type,
        "data": draft.data,
        "aggregate_type": draft.aggregate_type,
        "aggregate_id": draft.aggregate_id,
        "aggregate_version": version,
        "correlation_id": draft.correlation_id,
        "causation_id": draft.causation_id,
        "producer": request.producer or None,
        "created_at": now,
        "dispatched": False,
    }


def event_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The `Event` fields of a row (all but its position, given apart)."""
    return {k: v for k, v in row.items() if k != "dispatched"}


def request_hash(channel: str, drafts: Sequence[NewEvent]) -> str:
    """A digest of a publish request, to tell a retry from a different request on one key."""
    body = json.dumps(
        [channel, [d.__dict__ for d in drafts]], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


class Versions:
    """Resolves aggregate versions within one append (earlier drafts of a batch count)."""

    def __init__(self) -> None:
        self.current: dict[tuple[str, str], int] = {}

    def resolve(self, draft: NewEvent, stored: int) -> int | None:
        if draft.aggregate_type is None or draft.aggregate_id is None:
            return None
        key = (draft.aggregate_type, draft.aggregate_id)
        current = self.current.get(key, stored)
        if draft.expected_version is not None:
            if draft.expected_version != current:
                raise VersionConflict(key[0], key[1], current)
            version = current + 1
        elif draft.aggregate_version is not None:
            version = draft.aggregate_version
        else:
            version = current + 1
        self.current[key] = max(current, version)
        return version
