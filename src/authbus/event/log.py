"""The event log: an append-only SQL table behind the `EventLog` port, plus an in-memory fake.

    log = SqlEventLog(sessionmaker)
    result = await log.append("orders", [NewEvent(type="order.placed", data={...})],
                              producer="shop")
    result.events[0].position

`authbus.event.memory_log.InMemoryEventLog` is the fake; both pass the same contract suite
(tests/contracts/event/test_log.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authbus.common._envelope import Event, uuid7
from authbus.event.errors import IdempotencyKeyReused, LogUnavailable, VersionConflict
from authbus.event.models import dead_letter_trims, events, idempotency_keys

__all__ = [
    "AppendResult",
    "ChannelSummary",
    "EventLog",
    "NewEvent",
    "SqlEventLog",
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
class ChannelSummary:
    """A channel seen in the log."""

    channel: str
    events: int
    last_position: int


def request_hash(channel: str, drafts: Sequence[NewEvent]) -> str:
    """A digest of a publish request, to tell a retry from a different request on one key."""
    body = json.dumps(
        [channel, [d.__dict__ for d in drafts]], sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(body.encode()).hexdigest()


class EventLog(Protocol):
    """The port: append, read back, and track what was fanned out."""

    async def append(
        self,
        channel: str,
        drafts: Sequence[NewEvent],
        *,
        producer: str | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append `drafts` to `channel` in one transaction (all or none)."""
        ...

    async def read_channel(
        self, channel: str, *, after: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[Event]:
        """Events of `channel` with position > `after` (and <= `upto`), oldest first."""
        ...

    async def count_channel(self, channel: str, *, after: int, upto: int) -> int:
        """How many events of `channel` have `after` < position <= `upto` (committed now)."""
        ...

    async def last_position(self, channel: str) -> int:
        """The highest position of `channel` (0 when it has no events)."""
        ...

    async def events_at(self, positions: Sequence[int]) -> list[Event]:
        """The events at `positions`, by position (unknown positions are left out)."""
        ...

    async def read_aggregate(
        self, aggregate_type: str, aggregate_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        """The audit trail of one aggregate, by version."""
        ...

    async def aggregate_version(self, aggregate_type: str, aggregate_id: str) -> int:
        """The aggregate's current version (0 when it has no events)."""
        ...

    async def undispatched(
        self, *, limit: int = 500, older_than: datetime | None = None
    ) -> list[Event]:
        """Events not yet fanned out, oldest first."""
        ...

    async def mark_dispatched(self, positions: Sequence[int]) -> None:
        """Record that these events reached Redis."""
        ...

    async def channels(self) -> list[ChannelSummary]:
        """Every channel in the log with its event count and last position."""
        ...

    async def expire_idempotency_keys(self, older_than: datetime) -> int:
        """Forget idempotency keys created before `older_than`; returns how many."""
        ...

    async def record_dead_trimmed(self, channel: str, subscriber: str, count: int) -> None:
        """Add `count` to the dead letters of `subscriber` trimmed from Redis."""
        ...

    async def dead_trimmed(self, channel: str) -> dict[str, int]:
        """Per subscriber of `channel`: how many dead letters were trimmed from Redis."""
        ...

    async def ping(self) -> None:
        """Raise when the store is unreachable."""
        ...


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every one we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _row_event(row: Any) -> Event:
    return Event(
        id=row.id,
        position=row.position,
        channel=row.channel,
        type=row.type,
        data=row.data,
        aggregate_type=row.aggregate_type,
        aggregate_id=row.aggregate_id,
        aggregate_version=row.aggregate_version,
        correlation_id=row.correlation_id,
        causation_id=row.causation_id,
        producer=row.producer,
        created_at=_aware(row.created_at),
    )


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


class SqlEventLog:
    """The log in SQL (SQLite or Postgres); see `EventLog`."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.sessionmaker = sessionmaker

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.sessionmaker() as session:
                yield session
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
            raise LogUnavailable("the event database is unavailable") from exc

    async def _version(self, session: AsyncSession, aggregate_type: str, aggregate_id: str) -> int:
        found = await session.scalar(
            select(func.max(events.c.aggregate_version)).where(
                events.c.aggregate_type == aggregate_type, events.c.aggregate_id == aggregate_id
            )
        )
        return int(found or 0)

    async def _by_positions(self, session: AsyncSession, positions: Sequence[int]) -> list[Event]:
        rows = await session.execute(
            select(events).where(events.c.position.in_(positions)).order_by(events.c.position)
        )
        return [_row_event(r) for r in rows]

    async def _replay(
        self, session: AsyncSession, producer: str, key: str, digest: str
    ) -> AppendResult | None:
        row = (
            await session.execute(
                select(idempotency_keys).where(
                    idempotency_keys.c.producer == producer, idempotency_keys.c.key == key
                )
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != digest:
            raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
        return AppendResult(await self._by_positions(session, row.positions), replayed=True)

    async def append(
        self,
        channel: str,
        drafts: Sequence[NewEvent],
        *,
        producer: str | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append in one transaction; raises VersionConflict / IdempotencyKeyReused."""
        owner = producer or ""
        digest = request_hash(channel, drafts)
        for _ in range(3):
            try:
                return await self._append_once(channel, drafts, owner, idempotency_key, digest)
            except IntegrityError as exc:
                # A concurrent writer won: the same idempotency key, or an aggregate version.
                async with self._session() as session:
                    if idempotency_key:
                        replay = await self._replay(session, owner, idempotency_key, digest)
                        if replay is not None:
                            return replay
                    for d in drafts:
                        if (
                            d.aggregate_type
                            and d.aggregate_id
                            and (d.expected_version is not None or d.aggregate_version is not None)
                        ):
                            current = await self._version(session, d.aggregate_type, d.aggregate_id)
                            raise VersionConflict(
                                d.aggregate_type, d.aggregate_id, current
                            ) from exc
        raise LogUnavailable("could not append after retries", retry_after=1)

    async def _append_once(
        self,
        channel: str,
        drafts: Sequence[NewEvent],
        producer: str,
        idempotency_key: str | None,
        digest: str,
    ) -> AppendResult:
        async with self._session() as session, session.begin():
            if idempotency_key:
                replay = await self._replay(session, producer, idempotency_key, digest)
                if replay is not None:
                    return replay
            versions = Versions()
            now = datetime.now(UTC)
            stored: list[Event] = []
            for draft in drafts:
                current = 0
                if draft.aggregate_type and draft.aggregate_id:
                    key = (draft.aggregate_type, draft.aggregate_id)
                    if key not in versions.current:
                        current = await self._version(session, *key)
                version = versions.resolve(draft, current)
                values = {
                    "id": uuid7(),
                    "channel": channel,
                    "type": draft.type,
                    "data": draft.data,
                    "aggregate_type": draft.aggregate_type,
                    "aggregate_id": draft.aggregate_id,
                    "aggregate_version": version,
                    "correlation_id": draft.correlation_id,
                    "causation_id": draft.causation_id,
                    "producer": producer or None,
                    "created_at": now,
                    "dispatched": False,
                }
                position = await session.scalar(
                    events.insert().values(**values).returning(events.c.position)
                )
                assert position is not None
                values.pop("dispatched")
                stored.append(Event(position=position, **values))
            if idempotency_key:
                await session.execute(
                    idempotency_keys.insert().values(
                        producer=producer,
                        key=idempotency_key,
                        request_hash=digest,
                        positions=[e.position for e in stored],
                        created_at=now,
                    )
                )
            return AppendResult(stored)

    async def read_channel(
        self, channel: str, *, after: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[Event]:
        """Events of `channel` after a position (up to `upto`), oldest first."""
        query = select(events).where(events.c.channel == channel, events.c.position > after)
        if upto is not None:
            query = query.where(events.c.position <= upto)
        async with self._session() as session:
            rows = await session.execute(query.order_by(events.c.position).limit(limit))
            return [_row_event(r) for r in rows]

    async def count_channel(self, channel: str, *, after: int, upto: int) -> int:
        """Events of `channel` with `after` < position <= `upto`."""
        async with self._session() as session:
            found = await session.scalar(
                select(func.count()).where(
                    events.c.channel == channel,
                    events.c.position > after,
                    events.c.position <= upto,
                )
            )
            return int(found or 0)

    async def last_position(self, channel: str) -> int:
        """The channel's highest position, 0 without events."""
        async with self._session() as session:
            found = await session.scalar(
                select(func.max(events.c.position)).where(events.c.channel == channel)
            )
            return int(found or 0)

    async def events_at(self, positions: Sequence[int]) -> list[Event]:
        """The events at these positions, by position."""
        if not positions:
            return []
        async with self._session() as session:
            return await self._by_positions(session, positions)

    async def read_aggregate(
        self, aggregate_type: str, aggregate_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        """One aggregate's events by version."""
        async with self._session() as session:
            rows = await session.execute(
                select(events)
                .where(
                    events.c.aggregate_type == aggregate_type,
                    events.c.aggregate_id == aggregate_id,
                    events.c.aggregate_version > after_version,
                )
                .order_by(events.c.aggregate_version)
                .limit(limit)
            )
            return [_row_event(r) for r in rows]

    async def aggregate_version(self, aggregate_type: str, aggregate_id: str) -> int:
        """The aggregate's current version, 0 without events."""
        async with self._session() as session:
            return await self._version(session, aggregate_type, aggregate_id)

    async def undispatched(
        self, *, limit: int = 500, older_than: datetime | None = None
    ) -> list[Event]:
        """Events not yet fanned out, oldest first."""
        query = select(events).where(events.c.dispatched == False)  # noqa: E712
        if older_than is not None:
            query = query.where(events.c.created_at <= older_than)
        async with self._session() as session:
            rows = await session.execute(query.order_by(events.c.position).limit(limit))
            return [_row_event(r) for r in rows]

    async def mark_dispatched(self, positions: Sequence[int]) -> None:
        """Record that these events reached Redis."""
        if not positions:
            return
        async with self._session() as session, session.begin():
            await session.execute(
                update(events).where(events.c.position.in_(positions)).values(dispatched=True)
            )

    async def channels(self) -> list[ChannelSummary]:
        """Channels with their event count and last position."""
        async with self._session() as session:
            rows = await session.execute(
                select(events.c.channel, func.count(), func.max(events.c.position))
                .group_by(events.c.channel)
                .order_by(events.c.channel)
            )
            return [ChannelSummary(r[0], int(r[1]), int(r[2])) for r in rows]

    async def expire_idempotency_keys(self, older_than: datetime) -> int:
        """Forget idempotency keys created before `older_than`."""
        async with self._session() as session, session.begin():
            result = await session.execute(
                delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    async def record_dead_trimmed(self, channel: str, subscriber: str, count: int) -> None:
        """Add `count` to the subscriber's trimmed dead letters (one upsert)."""
        if count <= 0:
            return
        now = datetime.now(UTC)
        values = {
            "channel": channel,
            "subscriber": subscriber,
            "trimmed": count,
            "last_trimmed_at": now,
        }
        increment = {"trimmed": dead_letter_trims.c.trimmed + count, "last_trimmed_at": now}
        keys = ["channel", "subscriber"]
        async with self._session() as session, session.begin():
            if session.get_bind().dialect.name == "postgresql":
                stmt: Any = (
                    postgres_insert(dead_letter_trims)
                    .values(**values)
                    .on_conflict_do_update(index_elements=keys, set_=increment)
                )
            else:
                stmt = (
                    sqlite_insert(dead_letter_trims)
                    .values(**values)
                    .on_conflict_do_update(index_elements=keys, set_=increment)
                )
            await session.execute(stmt)

    async def dead_trimmed(self, channel: str) -> dict[str, int]:
        """Per subscriber of the channel: dead letters trimmed from Redis."""
        async with self._session() as session:
            rows = await session.execute(
                select(dead_letter_trims.c.subscriber, dead_letter_trims.c.trimmed).where(
                    dead_letter_trims.c.channel == channel
                )
            )
            return {r[0]: int(r[1]) for r in rows}

    async def ping(self) -> None:
        """SELECT 1."""
        async with self._session() as session:
            await session.execute(text("SELECT 1"))
