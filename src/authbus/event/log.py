"""The event log: an append-only SQL table behind the `EventLog` port, plus an in-memory fake.

    log = SqlEventLog(sessionmaker)
    result = await log.append("orders", [NewEvent(type="order.placed", data={...})],
                              producer="shop")
    result.events[0].position

`authbus.event.memory_log.InMemoryEventLog` is the fake; both pass the same contract suite
(tests/contracts/event/test_log.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection, Select, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgres_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from authbus.common._envelope import Event
from authbus.core.db import SqlRunner
from authbus.event.appends import (
    AppendRequest,
    AppendResult,
    NewEvent,
    Versions,
    event_fields,
    event_row,
    request_hash,
)
from authbus.event.errors import IdempotencyKeyReused, LogUnavailable, VersionConflict
from authbus.event.group_commit import GroupCommit
from authbus.event.models import dead_letter_trims, events, idempotency_keys

T = TypeVar("T")

__all__ = [
    "AppendResult",
    "ChannelSummary",
    "EventLog",
    "NewEvent",
    "SqlEventLog",
    "Versions",
    "request_hash",
]


@dataclass(frozen=True)
class ChannelSummary:
    """A channel seen in the log."""

    channel: str
    events: int
    last_position: int


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


class SqlEventLog:
    """The log in SQL (SQLite or Postgres); see `EventLog`.

    Every operation is one unit of work on a `SqlRunner`; appends made at the same time
    share one (`GroupCommit`). `close()` releases the runner.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        bind = sessionmaker.kw.get("bind")
        if not isinstance(bind, AsyncEngine):
            raise TypeError("SqlEventLog needs a sessionmaker bound to an AsyncEngine")
        self.runner = SqlRunner(bind)
        self.group_commit = GroupCommit(
            self._run, version=_version, replay=_replay, alone=self._append_alone
        )

    async def close(self) -> None:
        """Finish the units of work under way and release the database threads."""
        await self.runner.close()

    async def _run(self, work: Callable[[Connection], T], *, write: bool = True) -> T:
        try:
            return await self.runner.run(work, write=write)
        except IntegrityError:
            raise
        except (OperationalError, DBAPIError, OSError, TimeoutError) as exc:
            raise LogUnavailable("the event database is unavailable") from exc

    async def append(
        self,
        channel: str,
        drafts: Sequence[NewEvent],
        *,
        producer: str | None = None,
        idempotency_key: str | None = None,
    ) -> AppendResult:
        """Append in one transaction; raises VersionConflict / IdempotencyKeyReused.

        Appends made at the same time share a transaction (`GroupCommit`); each still
        succeeds or fails on its own.
        """
        request = AppendRequest(
            channel, drafts, producer or "", idempotency_key, request_hash(channel, drafts)
        )
        return await self.group_commit.append(request)

    async def _append_alone(self, request: AppendRequest) -> AppendResult:
        """One append in its own transaction, retried on a concurrent writer's conflict."""
        for _ in range(3):
            try:
                return await self._run(partial(_append_once, request=request))
            except IntegrityError as exc:
                # A concurrent writer won: the same idempotency key, or an aggregate version.
                found = await self._run(partial(_explain_conflict, request=request), write=False)
                if isinstance(found, AppendResult):
                    return found
                if found is not None:
                    raise found from exc
        raise LogUnavailable("could not append after retries", retry_after=1)

    async def read_channel(
        self, channel: str, *, after: int = 0, limit: int = 100, upto: int | None = None
    ) -> list[Event]:
        """Events of `channel` after a position (up to `upto`), oldest first."""
        query = select(events).where(events.c.channel == channel, events.c.position > after)
        if upto is not None:
            query = query.where(events.c.position <= upto)
        return await self._events(query.order_by(events.c.position).limit(limit))

    async def count_channel(self, channel: str, *, after: int, upto: int) -> int:
        """Events of `channel` with `after` < position <= `upto`."""
        query = select(func.count()).where(
            events.c.channel == channel, events.c.position > after, events.c.position <= upto
        )
        return await self._scalar_int(query)

    async def last_position(self, channel: str) -> int:
        """The channel's highest position, 0 without events."""
        query = select(func.max(events.c.position)).where(events.c.channel == channel)
        return await self._scalar_int(query)

    async def events_at(self, positions: Sequence[int]) -> list[Event]:
        """The events at these positions, by position."""
        if not positions:
            return []
        return await self._run(partial(_by_positions, positions=positions), write=False)

    async def read_aggregate(
        self, aggregate_type: str, aggregate_id: str, *, after_version: int = 0, limit: int = 100
    ) -> list[Event]:
        """One aggregate's events by version."""
        query = (
            select(events)
            .where(
                events.c.aggregate_type == aggregate_type,
                events.c.aggregate_id == aggregate_id,
                events.c.aggregate_version > after_version,
            )
            .order_by(events.c.aggregate_version)
            .limit(limit)
        )
        return await self._events(query)

    async def aggregate_version(self, aggregate_type: str, aggregate_id: str) -> int:
        """The aggregate's current version, 0 without events."""
        return await self._run(
            lambda conn: _version(conn, aggregate_type, aggregate_id), write=False
        )

    async def undispatched(
        self, *, limit: int = 500, older_than: datetime | None = None
    ) -> list[Event]:
        """Events not yet fanned out, oldest first."""
        query = select(events).where(events.c.dispatched == False)  # noqa: E712
        if older_than is not None:
            query = query.where(events.c.created_at <= older_than)
        return await self._events(query.order_by(events.c.position).limit(limit))

    async def mark_dispatched(self, positions: Sequence[int]) -> None:
        """Record that these events reached Redis."""
        if not positions:
            return
        statement = update(events).where(events.c.position.in_(positions)).values(dispatched=True)
        await self._run(lambda conn: conn.execute(statement))

    async def channels(self) -> list[ChannelSummary]:
        """Channels with their event count and last position."""
        query = (
            select(events.c.channel, func.count(), func.max(events.c.position))
            .group_by(events.c.channel)
            .order_by(events.c.channel)
        )

        def work(conn: Connection) -> list[ChannelSummary]:
            return [ChannelSummary(r[0], int(r[1]), int(r[2])) for r in conn.execute(query)]

        return await self._run(work, write=False)

    async def expire_idempotency_keys(self, older_than: datetime) -> int:
        """Forget idempotency keys created before `older_than`."""
        statement = delete(idempotency_keys).where(idempotency_keys.c.created_at < older_than)
        return await self._run(lambda conn: int(conn.execute(statement).rowcount or 0))

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
        upsert = postgres_insert if self.runner.dialect == "postgresql" else sqlite_insert
        statement = (
            upsert(dead_letter_trims)
            .values(**values)
            .on_conflict_do_update(index_elements=["channel", "subscriber"], set_=increment)
        )
        await self._run(lambda conn: conn.execute(statement))

    async def dead_trimmed(self, channel: str) -> dict[str, int]:
        """Per subscriber of the channel: dead letters trimmed from Redis."""
        query = select(dead_letter_trims.c.subscriber, dead_letter_trims.c.trimmed).where(
            dead_letter_trims.c.channel == channel
        )
        return await self._run(
            lambda conn: {r[0]: int(r[1]) for r in conn.execute(query)}, write=False
        )

    async def ping(self) -> None:
        """SELECT 1."""
        await self._run(lambda conn: conn.execute(text("SELECT 1")), write=False)

    async def _events(self, query: Select[Any]) -> list[Event]:
        return await self._run(
            lambda conn: [_row_event(r) for r in conn.execute(query)], write=False
        )

    async def _scalar_int(self, query: Select[Any]) -> int:
        return await self._run(lambda conn: int(conn.scalar(query) or 0), write=False)


# -- units of work (run by `SqlRunner`, in one transaction each) ------------------------------


def _version(conn: Connection, aggregate_type: str, aggregate_id: str) -> int:
    found = conn.scalar(
        select(func.max(events.c.aggregate_version)).where(
            events.c.aggregate_type == aggregate_type, events.c.aggregate_id == aggregate_id
        )
    )
    return int(found or 0)


def _by_positions(conn: Connection, positions: Sequence[int]) -> list[Event]:
    rows = conn.execute(
        select(events).where(events.c.position.in_(positions)).order_by(events.c.position)
    )
    return [_row_event(r) for r in rows]


def _replay(conn: Connection, producer: str, key: str, digest: str) -> AppendResult | None:
    """The stored result of an earlier append with this key, or None; `IdempotencyKeyReused`
    when the key was used for another request."""
    row = conn.execute(
        select(idempotency_keys).where(
            idempotency_keys.c.producer == producer, idempotency_keys.c.key == key
        )
    ).first()
    if row is None:
        return None
    if row.request_hash != digest:
        raise IdempotencyKeyReused("this Idempotency-Key was used with a different request")
    return AppendResult(_by_positions(conn, row.positions), replayed=True)


def _explain_conflict(
    conn: Connection, request: AppendRequest
) -> AppendResult | VersionConflict | None:
    """After a unique-index conflict: the replay of the key that won, the version conflict,
    or None (retry)."""
    if request.idempotency_key:
        replay = _replay(conn, request.producer, request.idempotency_key, request.digest)
        if replay is not None:
            return replay
    for d in request.drafts:
        versioned = d.expected_version is not None or d.aggregate_version is not None
        if d.aggregate_type and d.aggregate_id and versioned:
            current = _version(conn, d.aggregate_type, d.aggregate_id)
            return VersionConflict(d.aggregate_type, d.aggregate_id, current)
    return None


def _append_once(conn: Connection, request: AppendRequest) -> AppendResult:
    if request.idempotency_key:
        replay = _replay(conn, request.producer, request.idempotency_key, request.digest)
        if replay is not None:
            return replay
    versions = Versions()
    now = datetime.now(UTC)
    stored: list[Event] = []
    for draft in request.drafts:
        current = 0
        if draft.aggregate_type and draft.aggregate_id:
            key = (draft.aggregate_type, draft.aggregate_id)
            if key not in versions.current:
                current = _version(conn, *key)
        row = event_row(request, draft, versions.resolve(draft, current), now)
        position = conn.scalar(events.insert().values(**row).returning(events.c.position))
        assert position is not None
        stored.append(Event(position=position, **event_fields(row)))
    if request.idempotency_key:
        conn.execute(
            idempotency_keys.insert().values(
                producer=request.producer,
                key=request.idempotency_key,
                request_hash=request.digest,
                positions=[e.position for e in stored],
                created_at=now,
            )
        )
    return AppendResult(stored)
