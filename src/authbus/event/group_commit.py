"""Group commit: the appends waiting at one moment share one transaction and one INSERT.

Committed one by one, small appends queue for the database's write lock (SQLite has a single
writer; Postgres flushes its WAL at every commit) and pay a transaction each. Here every
append is queued; one task takes all that are waiting, checks each one's Idempotency-Key and
aggregate versions against the log and against the appends before it in the group, inserts
the rows of all that passed with one statement, records their keys, and commits once. An
append whose check fails gets its own error and writes nothing; the others commit. When the
group's insert or commit hits a conflict its checks could not see (another process wrote the
same key or aggregate version meanwhile), each append of the group is retried on its own, so
one conflict never fails an unrelated append.

    group = GroupCommit(run, version=_version, replay=_replay, alone=append_alone)
    result = await group.append(AppendRequest("orders", drafts, "shop", None, digest))
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, insert
from sqlalchemy.exc import IntegrityError

from authbus.common._envelope import Event
from authbus.event.appends import AppendRequest, AppendResult, Versions, event_fields, event_row
from authbus.event.errors import IdempotencyKeyReused, LogUnavailable, VersionConflict
from authbus.event.models import events, idempotency_keys

__all__ = ["GroupCommit"]

log = logging.getLogger("authbus.event.log")

T = TypeVar("T")
# Runs a unit of work in one transaction (`SqlEventLog._run`).
Run = Callable[[Callable[[Connection], Any]], Awaitable[Any]]
VersionOf = Callable[[Connection, str, str], int]
ReplayOf = Callable[[Connection, str, str, str], AppendResult | None]


class _Unordered(Exception):
    """The positions of an append's rows did not follow its drafts (never committed)."""


@dataclass
class _Pending:
    request: AppendRequest
    future: asyncio.Future[AppendResult]
    rows: list[dict[str, Any]] = field(default_factory=list)
    # Set when the append is settled without rows of its own: a result or an error.
    verdict: AppendResult | Exception | None = None
    # An earlier append of the group with the same producer and key (and request).
    replay_of: _Pending | None = None
    events: list[Event] = field(default_factory=list)


@dataclass
class _Checks:
    """What the appends before in the group hold: aggregate versions and keys."""

    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    keys: dict[tuple[str, str], _Pending] = field(default_factory=dict)


class GroupCommit:
    """Queues appends and commits what is waiting as one transaction (see the module)."""

    def __init__(
        self,
        run: Run,
        *,
        version: VersionOf,
        replay: ReplayOf,
        alone: Callable[[AppendRequest], Awaitable[AppendResult]],
        max_events: int = 2000,
    ) -> None:
        self._run = run
        self._version = version
        self._replay = replay
        self._alone = alone
        self.max_events = max_events
        self._queue: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None
        # Groups committed and appends they held (their ratio is the mean group size).
        self.groups = 0
        self.appends = 0

    async def append(self, request: AppendRequest) -> AppendResult:
        """Queue `request` and wait for its result or its error."""
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="event-log-group-commit")
        # Shielded: a client that goes away does not cancel the group it is part of.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._queue:
            group: list[_Pending] = []
            size = 0
            while self._queue and (not group or size < self.max_events):
                pending = self._queue.pop(0)
                group.append(pending)
                size += len(pending.request.drafts)
            try:
                await self._commit(group)
            finally:
                for pending in group:  # cut off (shutdown): nobody waits forever
                    if not pending.future.done():
                        pending.future.set_exception(LogUnavailable("the append was cut off"))

    async def _commit(self, group: list[_Pending]) -> None:
        try:
            await self._run(lambda conn: self._write(conn, group))
        except (IntegrityError, _Unordered):
            # A conflict the checks could not see: another process wrote meanwhile.
            log.info("group commit conflicted; appending one by one", extra={"n": len(group)})
            for pending in group:
                await self._settle_alone(pending)
            return
        except Exception as exc:
            for pending in group:
                pending.future.set_exception(exc)
            return
        self.groups += 1
        self.appends += len(group)
        for pending in group:
            if isinstance(pending.verdict, Exception):
                pending.future.set_exception(pending.verdict)
            elif pending.verdict is not None:
                pending.future.set_result(pending.verdict)
            elif pending.replay_of is not None:
                pending.future.set_result(AppendResult(pending.replay_of.events, replayed=True))
            else:
                pending.future.set_result(AppendResult(pending.events))

    async def _settle_alone(self, pending: _Pending) -> None:
        try:
            result = await self._alone(pending.request)
        except Exception as exc:
            pending.future.set_exception(exc)
        else:
            pending.future.set_result(result)

    # -- the unit of work (in the database thread or greenlet) ----------------------------

    def _write(self, conn: Connection, group: list[_Pending]) -> None:
        now = datetime.now(UTC)
        checks = _Checks()
        for pending in group:
            pending.rows, pending.verdict, pending.replay_of, pending.events = [], None, None, []
            self._check(conn, pending, checks, now)
        writers = [p for p in group if p.rows]
        if not writers:
            return
        positions = _insert_events(conn, [row for p in writers for row in p.rows])
        for pending in writers:
            pending.events = [
                Event(position=positions[row["id"]], **event_fields(row)) for row in pending.rows
            ]
            ordered = [e.position for e in pending.events]
            if ordered != sorted(ordered):
                # Positions follow the order of the drafts; never commit otherwise.
                raise _Unordered(f"{len(ordered)} event(s) on {pending.request.channel!r}")
        keyed = [
            {
                "producer": p.request.producer,
                "key": p.request.idempotency_key,
                "request_hash": p.request.digest,
                "positions": [e.position for e in p.events],
                "created_at": now,
            }
            for p in writers
            if p.request.idempotency_key
        ]
        if keyed:
            conn.execute(insert(idempotency_keys), keyed)

    def _check(self, conn: Connection, pending: _Pending, checks: _Checks, now: datetime) -> None:
        """Settle `pending` now (a replay, an error) or give it the rows it will insert."""
        request = pending.request
        key = request.idempotency_key
        if key:
            earlier = checks.keys.get((request.producer, key))
            if earlier is not None:
                if earlier.request.digest != request.digest:
                    pending.verdict = IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different request"
                    )
                else:
                    pending.replay_of = earlier
                return
            try:
                pending.verdict = self._replay(conn, request.producer, key, request.digest)
            except IdempotencyKeyReused as exc:
                pending.verdict = exc
            if pending.verdict is not None:
                return
        versions = Versions()
        versions.current = dict(checks.versions)
        rows = []
        try:
            for draft in request.drafts:
                stored = 0
                if draft.aggregate_type and draft.aggregate_id:
                    aggregate = (draft.aggregate_type, draft.aggregate_id)
                    if aggregate not in versions.current:
                        stored = self._version(conn, *aggregate)
                rows.append(event_row(request, draft, versions.resolve(draft, stored), now))
        except VersionConflict as exc:  # this append only
            pending.verdict = exc
            return
        checks.versions = versions.current
        if key:
            checks.keys[(request.producer, key)] = pending
        pending.rows = rows


def _insert_events(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert `rows` in one statement (SQLAlchemy's insertmanyvalues); their positions by id.

    SQLite numbers the rows of a multi-row VALUES in order; on Postgres the rows are sorted by
    their parameter order before the sequence numbers them.
    """
    ordered = conn.dialect.name == "postgresql"
    statement = insert(events).returning(
        events.c.id, events.c.position, sort_by_parameter_order=ordered
    )
    return {row.id: int(row.position) for row in conn.execute(statement, rows)}
