"""Delivery from the log to Redis: fan-out after commit, the dispatcher, lagging catch-up.

Order of writes (DESIGN.md "Events"): the SQL commit first, then one fan-out script call.
If Redis is down the event stays `dispatched = false` in the log and the `Dispatcher`
delivers it once Redis is back, so every committed event reaches every subscriber at least
once. While a backlog exists, new publishes go through the dispatcher too, so events of this
process reach Redis in log order.

    fanout = Fanout(redis, "ab")
    dispatcher = Dispatcher(log, fanout, interval=1.0)
    await dispatcher.after_commit(events)      # in the publish path
    asyncio.create_task(dispatcher.run())      # in the lifespan

Subscriber administration (subscribe, stats, dead letters) is in `subscriptions.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import groupby

from redis.exceptions import RedisError

from authbus.common._envelope import Event, format_delivery
from authbus.common._scripts import AsyncRedis, DeliveryOps
from authbus.event.log import EventLog

__all__ = ["Dispatcher", "Fanout"]

log = logging.getLogger("authbus.event.delivery")

_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class Fanout:
    """Pushes committed events into every subscriber's published list (one script per channel)."""

    def __init__(
        self, client: AsyncRedis | None, prefix: str, *, max_waiting: int = 0, timeout: float = 2.0
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.max_waiting = max_waiting
        self.timeout = timeout
        # Channels where fan-out skipped a lagging subscriber: the dispatcher's catch-up list.
        self.lagging_channels: set[str] = set()

    async def deliver(self, events: Sequence[Event]) -> bool:
        """Fan `events` out; False (and nothing raised) when Redis is absent or unreachable."""
        if self.client is None:
            return False
        try:
            for channel, batch in groupby(events, key=lambda e: e.channel):
                batch_events = list(batch)
                ops = DeliveryOps(self.client, self.prefix, channel)
                _delivered, skipped = await asyncio.wait_for(
                    ops.fanout(
                        [format_delivery(e) for e in batch_events],
                        first_position=batch_events[0].position,
                        max_waiting=self.max_waiting,
                    ),
                    self.timeout,
                )
                if skipped:
                    self.lagging_channels.add(channel)
        except _REDIS_DOWN as exc:
            log.warning("fan-out failed; the dispatcher will retry", extra={"error": repr(exc)})
            return False
        return True


class Dispatcher:
    """Fans out what the log holds as undispatched: after a Redis outage, or a crash between
    commit and fan-out. `grace_s` keeps it off events whose inline fan-out is under way."""

    def __init__(
        self,
        event_log: EventLog,
        fanout: Fanout,
        *,
        interval: float = 1.0,
        grace_s: float = 5.0,
        batch: int = 500,
        on_deferred: Callable[[int], None] | None = None,
        on_dispatched: Callable[[int], None] | None = None,
        catch_up_interval: float = 5.0,
        full_scan_interval: float = 300.0,
    ) -> None:
        self.log = event_log
        self.on_deferred = on_deferred
        self.on_dispatched = on_dispatched
        self.fanout = fanout
        self.interval = interval
        self.grace_s = grace_s
        self.batch = batch
        # True while this process knows of undispatched events: new publishes queue behind.
        self.backlog = False
        self.dispatched_total = 0
        self._wake = asyncio.Event()
        # One pass at a time, or two passes would fan the same events out twice.
        self._pass = asyncio.Lock()
        self._stopped = False
        self.catch_up_interval = catch_up_interval
        self._last_catch_up = 0.0
        self.full_scan_interval = full_scan_interval
        self._last_full_scan = float("-inf")

    async def after_commit(self, events: Sequence[Event]) -> bool:
        """The publish path: fan out now, or leave the events to the dispatcher. Never raises."""
        if not self.backlog and await self.fanout.deliver(events):
            with contextlib.suppress(Exception):
                # Failing here only means a duplicate fan-out later (at-least-once).
                await self.log.mark_dispatched([e.position for e in events])
            return True
        self.backlog = True
        self._wake.set()
        if self.on_deferred is not None:
            self.on_deferred(len(events))
        return False

    async def run_once(self) -> int:
        """Dispatch one batch of undispatched events; returns how many reached Redis."""
        async with self._pass:
            return await self._dispatch_batch()

    async def _dispatch_batch(self) -> int:
        # In backlog mode this process has stopped inline fan-out, so no grace is needed.
        older_than = None if self.backlog else datetime.now(UTC) - timedelta(seconds=self.grace_s)
        pending = await self.log.undispatched(limit=self.batch, older_than=older_than)
        if not pending:
            self.backlog = False
            return 0
        if not await self.fanout.deliver(pending):
            self.backlog = True
            return 0
        await self.log.mark_dispatched([e.position for e in pending])
        self.dispatched_total += len(pending)
        if self.on_dispatched is not None:
            self.on_dispatched(len(pending))
        log.info("dispatched events from the log", extra={"count": len(pending)})
        return len(pending)

    async def catch_up_lagging(self) -> int:
        """Feed lagging subscribers from the log, one batch each; returns events pushed.

        A subscriber whose list hit `max_waiting` is marked lagging and skipped by fan-out;
        once its list is below half the bound it gets the missed events from the log, in
        order, until it has caught up (then fan-out resumes for it).
        """
        client = self.fanout.client
        if client is None:
            return 0
        channels = set(self.fanout.lagging_channels)
        if time.monotonic() - self._last_full_scan >= self.full_scan_interval:
            # Marks left by another instance or before a restart: look at every channel,
            # rarely, since listing the log's channels scans the table.
            self._last_full_scan = time.monotonic()
            channels.update(c.channel for c in await self.log.channels())
        pushed = 0
        for channel in sorted(channels):
            ops = DeliveryOps(client, self.fanout.prefix, channel)
            marks = await ops.lagging()
            if not marks:
                self.fanout.lagging_channels.discard(channel)
            for name, mark in marks.items():
                room = self.fanout.max_waiting // 2 or self.batch
                if await client.llen(ops.keys.published(name)) >= room:
                    continue
                pushed += await self._catch_up_one(ops, channel, name, mark)
        return pushed

    async def _catch_up_one(self, ops: DeliveryOps, channel: str, name: str, mark: int) -> int:
        batch = await self.log.read_channel(channel, after=mark - 1, limit=self.batch)
        if batch:
            items = [format_delivery(e) for e in batch]
            done = await ops.catch_up(
                name, mark=mark, next_mark=batch[-1].position + 1, items=items
            )
            return done or 0
        if await ops.catch_up(name, mark=mark, next_mark=None, items=[]) is None:
            return 0  # a late event lowered the mark: the next pass rereads from it
        # Cleared. An event fanned out (and skipped) just before is committed, so reading
        # once more finds it: nothing is lost, a few events may arrive twice.
        late = await self.log.read_channel(channel, after=mark - 1, limit=self.batch)
        if late:
            await ops.replay(name, [format_delivery(e) for e in late])
        return len(late)

    def stop(self) -> None:
        """Make `run()` return at its next wait (a query is never cut off mid-flight)."""
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Loop until `stop()`: dispatch, then wait `interval` (or a wake-up)."""
        self._stopped = False
        while not self._stopped:
            try:
                while await self.run_once() == self.batch:
                    pass
                if time.monotonic() - self._last_catch_up >= self.catch_up_interval:
                    self._last_catch_up = time.monotonic()
                    await self.catch_up_lagging()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatcher pass failed", extra={"error": repr(exc)})
            if self._stopped:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
