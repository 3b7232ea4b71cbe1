"""The in-memory `EventLog` fake: the same behaviour as the SQL log, for unit tests.

log = InMemoryEventLog()
await log.append("orders", [NewEvent(type="order.placed")])
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from authbus.common._envelope import Event, uuid7
from authbus.event.errors import IdempotencyKeyReused, VersionConflict
from authbus.event.log import AppendResult, ChannelSummary, NewEvent, Versions, request_hash

__all__ = ["InMemoryEventLog"]


class InMemoryEventLog:
    """The `EventLog` fake for unit tests: same behaviour, one process, no persistence."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._dispatched: set[int] = set()
        self._keys: dict[tuple[str, str], tuple[str, list[int]]] = {}
        self._lock = asyncio.Lock()
        self._trimmed: dict[tuple[str, str], int] = {}

    def _version(self, aggregate_type: str, aggregate_id: str) -> int:
        versions = [
            e.aggregate_version or 0
            for e in self._events
            if e.aggregate_type == aggregate_type and e.aggregate_id == aggregate_id
        ]
        return max(versions, default=0)

    async def append(
        self,
        channel: str,
        drafts: Sequence[NewEvent],
        *,
        producer: str | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """See `EventLog.append`."""
        owner = producer or ""
        digest = request_hash(channel, drafts)
        async with self._lock:
            if idempotency_key and (owner, idempotency_key) in self._keys:
                stored_digest, positions = self._keys[(owner, idempotency_key)]
                if stored_digest != digest:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different request"
                    )
                return AppendResult([e for e in self._events if e.position in positions], True)
            versions = Versions()
            taken = {
                (e.aggregate_type, e.aggregate_id, e.aggregate_version)
                for e in self._events
                if e.aggregate_version is not None
            }
            now = datetime.now(UTC)
            new: list[Event] = []
            next_position = (self._events[-1].position if self._events else 0) + 1
            for draft in drafts:
                stored = 0
                if draft.aggregate_type and draft.aggregate_id:
                    stored = self._version(draft.aggregate_type, draft.aggregate_id)
                version = versions.resolve(draft, stored)
                if version is not None:
                    slot = (draft.aggregate_type, draft.aggregate_id, version)
                    if slot in taken:
                        assert draft.aggregate_type and draft.aggregate_id
                        raise VersionConflict(
                            draft.aggregate_type,
                            draft.aggregate_id,
                            versions.current.get(
                                (draft.aggregate_type, draft.aggregate_id), stored
                            ),
                        )
                    taken.add(slot)
                new.append(
                    Event(
                        id=uuid7(),
                        position=next_position,
                        channel=channel,
                        type=draft.type,
                        data=draft.data,
                        aggregate_type=draft.aggregate_type,
                        aggregate_id=draft.aggregate_id,
                        aggregate_version=version,
                        correlation_id=draft.correlation_id,
                        causation_id=draft.causation_id,
                        producer=producer,
                        created_at=now,
                    )
                )
                next_position += 1
            self._events.extend(new)
            if idempotency_key:
                self._keys[(owner, idempotency_key)] = (digest, [e.position for e in new])
            return AppendResult(new)

    async def read_channel(
        self, channel: str, *, after: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[Event]:
        """See `EventLog.read_channel`."""
        found = [
            e
            for e in self._events
            if e.channel == channel and e.position > after and (upto is None or e.position <= upto)
        ]
        return found[:limit]

    async def count_channel(self, channel: str, *, after: int, upto: int) -> int:
        """See `EventLog.count_channel`."""
        return len(
            await self.read_channel(channel, after=after, upto=upto, limit=len(self._events))
        )

    async def last_position(self, channel: str) -> int:
        """See `EventLog.last_position`."""
        return max((e.position for e in self._events if e.channel == channel), default=0)

    async def events_at(self, positions: Sequence[int]) -> list[Event]:
        """See `EventLog.events_at`."""
        wanted = set(positions)
        return [e for e in self._events if e.position in wanted]

    async def read_aggregate(
        self, aggregate_type: str, aggregate_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        """See `EventLog.read_aggregate`."""
        found = [
            e
            for e in self._events
            if e.aggregate_type == aggregate_type
            and e.aggregate_id == aggregate_id
            and (e.aggregate_version or 0) > after_version
        ]
        return sorted(found, key=lambda e: e.aggregate_version or 0)[:limit]

    async def aggregate_version(self, aggregate_type: str, aggregate_id: str) -> int:
        """See `EventLog.aggregate_version`."""
        return self._version(aggregate_type, aggregate_id)

    async def undispatched(
        self, *, limit: int = 500, older_than: datetime | None = None
    ) -> list[Event]:
        """See `EventLog.undispatched`."""
        found = [
            e
            for e in self._events
            if e.position not in self._dispatched
            and (older_than is None or e.created_at <= older_than)
        ]
        return found[:limit]

    async def mark_dispatched(self, positions: Sequence[int]) -> None:
        """See `EventLog.mark_dispatched`."""
        self._dispatched.update(positions)

    async def channels(self) -> list[ChannelSummary]:
        """See `EventLog.channels`."""
        summary: dict[str, ChannelSummary] = {}
        for e in self._events:
            seen = summary.get(e.channel)
            count = seen.events + 1 if seen else 1
            summary[e.channel] = ChannelSummary(e.channel, count, e.position)
        return [summary[c] for c in sorted(summary)]

    async def expire_idempotency_keys(self, older_than: datetime) -> int:
        """See `EventLog.expire_idempotency_keys`."""
        created = {e.position: e.created_at for e in self._events}
        old = [
            k
            for k, (_digest, positions) in self._keys.items()
            if positions and created[positions[0]] < older_than
        ]
        for k in old:
            del self._keys[k]
        return len(old)

    async def record_dead_trimmed(self, channel: str, subscriber: str, count: int) -> None:
        """See `EventLog.record_dead_trimmed`."""
        if count > 0:
            key = (channel, subscriber)
            self._trimmed[key] = self._trimmed.get(key, 0) + count

    async def dead_trimmed(self, channel: str) -> dict[str, int]:
        """See `EventLog.dead_trimmed`."""
        return {s: n for (c, s), n in self._trimmed.items() if c == channel}

    async def ping(self) -> None:
        """Always reachable."""
