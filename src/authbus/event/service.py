"""The publish rules: validate a request, append it to the log, then hand it to delivery.

service = EventService(log, dispatcher)
result = await service.publish("orders", [NewEvent(type="order.placed")], producer="shop")

Everything is checked before the log is touched, so a refused request writes nothing: a value
the log could not store (an integer above the SQL columns, text with a NUL) or could not give
back as JSON (NaN, a lone surrogate, nesting subscribers cannot parse) is a 422 naming the
field, never a 500 after the commit.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any

from authbus.common._envelope import valid_name
from authbus.core.errors import ValidationFailed
from authbus.event.delivery import Dispatcher
from authbus.event.log import AppendResult, EventLog, NewEvent

__all__ = [
    "MAX_BATCH",
    "MAX_DATA_DEPTH",
    "MAX_POSITION",
    "MAX_VERSION",
    "EventService",
    "check_data",
    "check_text",
    "control_character",
]

MAX_BATCH = 1000
# The largest integer a position column holds (Postgres bigint, SQLite INTEGER).
MAX_POSITION = 2**63 - 1
# Aggregate versions stay within I-JSON's exact integers (RFC 7493 §2.2), so every JSON client
# reads them back unchanged, and the next version (current + 1) can never overflow the column.
MAX_VERSION = 2**53 - 1
# Subscribers parse each delivery with pydantic, whose JSON parser refuses nesting near 200
# levels (envelope included): `data` nested deeper would be stored but never deliverable.
MAX_DATA_DEPTH = 64

# Event fields that are single-line identifiers (`type` has its own pattern in the API).
_TEXT_FIELDS = ("aggregate_type", "aggregate_id", "correlation_id", "causation_id")


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
        if idempotency_key is not None:
            check_text("Idempotency-Key", idempotency_key)
        for i, d in enumerate(drafts):
            _check(f"events[{i}]" if len(drafts) > 1 else "event", d)
        result = await self.log.append(
            channel, drafts, producer=producer, idempotency_key=idempotency_key
        )
        if not result.replayed:
            await self.dispatcher.after_commit(result.events)
            if self.on_published is not None:
                self.on_published(channel, len(result.events))
        return result


def _check(where: str, draft: NewEvent) -> None:
    if (draft.aggregate_type is None) != (draft.aggregate_id is None):
        raise ValidationFailed(f"{where}: aggregate_type and aggregate_id go together")
    versioned = draft.aggregate_version is not None or draft.expected_version is not None
    if versioned and draft.aggregate_type is None:
        raise ValidationFailed(f"{where}: a version needs aggregate_type and aggregate_id")
    if draft.aggregate_version is not None and not 1 <= draft.aggregate_version <= MAX_VERSION:
        raise ValidationFailed(f"{where}: aggregate_version: must be 1 to {MAX_VERSION}")
    if draft.expected_version is not None and not 0 <= draft.expected_version < MAX_VERSION:
        raise ValidationFailed(f"{where}: expected_version: must be 0 to {MAX_VERSION - 1}")
    if (
        draft.aggregate_version is not None
        and draft.expected_version is not None
        and draft.aggregate_version != draft.expected_version + 1
    ):
        raise ValidationFailed(f"{where}: aggregate_version must be expected_version + 1")
    for name in _TEXT_FIELDS:
        value = getattr(draft, name)
        if value is not None:
            check_text(f"{where}: {name}", value)
    check_data(f"{where}: data", draft.data)


def check_text(field: str, value: str) -> str:
    """`value` if it holds no control character (C0, DEL, C1) and no lone surrogate, else
    `ValidationFailed` naming `field`: Postgres text cannot hold a NUL, and a lone surrogate
    is not text at all (it cannot be encoded as UTF-8).

    >>> check_text("correlation_id", "order-42")
    'order-42'
    """
    if (c := control_character(value)) is not None:
        raise ValidationFailed(
            f"{field}: must not contain control characters (found U+{ord(c):04X})"
        )
    return value


def control_character(text: str) -> str | None:
    """The first control character (C0, DEL, C1) or lone surrogate in `text`, else None."""
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cs"):
            return c
    return None


def _is_text(value: str) -> bool:
    """False for a string holding a lone surrogate (which JSON's `\\ud800` escape can carry)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: str) -> str:
    return repr(key) if len(key) <= 40 else f"{key[:40]!r}..."


def check_data(field: str, data: dict[str, Any]) -> dict[str, Any]:
    """`data` if the log can store it and give it back as the same JSON, else
    `ValidationFailed` naming `field` and where inside it the fault is.

    Refused: NaN and infinite numbers (`NaN`, `Infinity`, or `1e400`, which parses as
    infinity) that JSON cannot express, lone surrogates in keys or strings, and nesting deeper
    than `MAX_DATA_DEPTH`. A NUL in a string is fine: the JSON column keeps its escape.

    >>> check_data("data", {"order": {"id": 42, "lines": [1.5, None]}})
    {'order': {'id': 42, 'lines': [1.5, None]}}
    """
    # Iterative, so a deep value costs no Python recursion.
    stack: list[tuple[Any, str, int]] = [(data, field, 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            if depth > MAX_DATA_DEPTH:
                raise ValidationFailed(f"{field}: nested deeper than {MAX_DATA_DEPTH} levels")
            for key, item in value.items():
                if not isinstance(key, str) or not _is_text(key):
                    raise ValidationFailed(
                        f"{path}: the key {_shown(str(key))} is not valid Unicode text "
                        "(a lone surrogate)"
                    )
                stack.append((item, f"{path}[{_shown(key)}]", depth + 1))
        elif isinstance(value, list):
            if depth > MAX_DATA_DEPTH:
                raise ValidationFailed(f"{field}: nested deeper than {MAX_DATA_DEPTH} levels")
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            if not _is_text(value):
                raise ValidationFailed(f"{path}: not valid Unicode text (a lone surrogate)")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationFailed(
                    f"{path}: {value} is not a JSON number (NaN and infinite numbers, or "
                    "numbers too large for a double such as 1e400, are refused)"
                )
        elif value is not None and not isinstance(value, int):  # bool is an int
            raise ValidationFailed(f"{path}: {type(value).__name__} is not a JSON value")
    return data
