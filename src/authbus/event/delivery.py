"""Delivery from the log to Redis: fan-out after commit, the dispatcher, lagging catch-up.

Order of writes (DESIGN.md "Events"): the SQL commit first, then one fan-out script call.
If Redis is down the event stays `dispatched = false` in the log and the `Dispatcher`
delivers it once Redis is back, so every committed event reaches every subscriber at least
once. While a backlog exists, new publishes go through the dispatcher too, so events of this
process reach Redis in log order.

A Redis that restarts (or fails over) may come back without its last writes: with
`appendfsync everysec` up to about a second of fan-outs, although the log has them marked
dispatched. The dispatcher watches the server's `run_id` and, when it changes, fans out again
what this process fanned out shortly before (`restart_window_s`): delivery is at-least-once,
so a repeat is allowed where a loss is not.

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
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from authbus.common._batching import Coalescer
from authbus.common._envelope import Event, format_delivery
from authbus.common._scripts import AsyncRedis, DeliveryOps
from authbus.event.catch_up import CatchUp
from authbus.event.log import EventLog

__all__ = ["Dispatcher", "Fanout"]

log = logging.getLogger("authbus.event.delivery")

_REDIS_DOWN = (RedisError, OSError, TimeoutError)
# `dispatched` marks written per statement.
_MARK_BATCH = 1000


def _position(event: Event) -> int:
    return event.position


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
    commit and fan-out. `grace_s` keeps it off events whose inline fan-out is under way.
    Each pass also feeds lagging subscribers (`CatchUp`) and checks for a Redis restart."""

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
        on_redispatched: Callable[[int], None] | None = None,
        full_scan_interval: float = 300.0,
        restart_window_s: float = 10.0,
        catch_up: CatchUp | None = None,
        mark_delay_s: float = 0.05,
    ) -> None:
        self.log = event_log
        self.on_deferred = on_deferred
        self.on_dispatched = on_dispatched
        self.on_redispatched = on_redispatched
        self.fanout = fanout
        self.interval = interval
        self.grace_s = grace_s
        self.batch = batch
        # True while this process knows of undispatched events: new publishes queue behind.
        self.backlog = False
        # Raised on every deferral, so a pass that started before one does not clear backlog.
        self._deferrals = 0
        self.dispatched_total = 0
        self.redispatched_total = 0
        self._wake = asyncio.Event()
        # One pass at a time, or two passes would fan the same events out twice.
        self._pass = asyncio.Lock()
        self._stopped = False
        self.full_scan_interval = full_scan_interval
        self._last_full_scan = float("-inf")
        self.catch_up = catch_up
        if catch_up is None and fanout.client is not None:
            self.catch_up = CatchUp(
                fanout.client,
                fanout.prefix,
                event_log,
                max_waiting=fanout.max_waiting,
                batch=batch,
                channels=fanout.lagging_channels,
            )
        self.mark_delay_s = mark_delay_s
        # The publish path's fan-out, one call for the publishes of a turn; positions fanned
        # out but not yet marked dispatched.
        self._inline: Coalescer[Sequence[Event], bool] = Coalescer(self._fan_out_together)
        self._unmarked: list[int] = []
        self._marking: asyncio.Task[None] | None = None
        self.restart_window_s = restart_window_s
        # (monotonic time, positions) of recent fan-outs, to repeat after a Redis restart.
        self._recent: deque[tuple[float, list[int]]] = deque()
        self._server_ids: dict[str, str] | None = None

    def _remember(self, positions: list[int]) -> None:
        if self.restart_window_s > 0:
            self._recent.append((time.monotonic(), positions))

    async def after_commit(self, events: Sequence[Event]) -> bool:
        """The publish path: fan out now, or leave the events to the dispatcher. Never raises.

        The publishes committed together (one group commit) are fanned out together: one
        script call per channel, in log order. Their `dispatched` marks are written in one
        statement shortly after (`mark_delay_s`); a crash before that only means they are
        fanned out once more (at-least-once).
        """
        if not self.backlog and await self._inline.submit(events):
            return True
        self.backlog = True
        self._deferrals += 1
        self._wake.set()
        if self.on_deferred is not None:
            self.on_deferred(len(events))
        return False

    async def _fan_out_together(self, batches: list[Sequence[Event]]) -> list[bool]:
        by_channel: dict[str, list[Event]] = {}
        for event in sorted((e for batch in batches for e in batch), key=_position):
            by_channel.setdefault(event.channel, []).append(event)
        ordered = [e for batch in by_channel.values() for e in batch]
        delivered = await self.fanout.deliver(ordered)
        if delivered:
            positions = [e.position for e in ordered]
            self._remember(positions)
            self._unmarked.extend(positions)
            if self._marking is None or self._marking.done():
                self._marking = asyncio.create_task(self._mark_soon())
        return [delivered] * len(batches)

    async def _mark_soon(self) -> None:
        await asyncio.sleep(self.mark_delay_s)
        await self.flush_marks()

    async def flush_marks(self) -> None:
        """Write the `dispatched` marks of what the publish path fanned out."""
        while self._unmarked:
            positions, self._unmarked = self._unmarked[:_MARK_BATCH], self._unmarked[_MARK_BATCH:]
            try:
                await self.log.mark_dispatched(positions)
            except Exception as exc:
                # Unmarked events are fanned out again after `grace_s`: duplicates, no loss.
                log.warning("could not mark events dispatched", extra={"error": repr(exc)})
                return

    async def run_once(self) -> int:
        """Dispatch one batch of undispatched events; returns how many reached Redis."""
        async with self._pass:
            return await self._dispatch_batch()

    async def _dispatch_batch(self) -> int:
        # Marks still in memory first, so this pass does not fan those events out again.
        await self.flush_marks()
        # In backlog mode this process has stopped inline fan-out, so no grace is needed.
        deferrals = self._deferrals
        older_than = None if self.backlog else datetime.now(UTC) - timedelta(seconds=self.grace_s)
        pending = await self.log.undispatched(limit=self.batch, older_than=older_than)
        if not pending:
            # Only a full read made after the last deferral may end backlog mode.
            if older_than is None and deferrals == self._deferrals:
                self.backlog = False
            return 0
        if not await self.fanout.deliver(pending):
            self.backlog = True
            return 0
        positions = [e.position for e in pending]
        self._remember(positions)
        await self.log.mark_dispatched(positions)
        self.dispatched_total += len(pending)
        if self.on_dispatched is not None:
            self.on_dispatched(len(pending))
        log.info("dispatched events from the log", extra={"count": len(pending)})
        return len(pending)

    async def catch_up_lagging(self) -> int:
        """Feed lagging subscribers from the log up to their bound; returns events pushed.

        A subscriber whose list hit `max_waiting` is marked lagging and skipped by fan-out;
        `CatchUp` then gives it the missed events from the log, in order, batch after batch
        while its list has room, until it has caught up (then fan-out resumes for it).
        """
        if self.catch_up is None:
            return 0
        also: list[str] = []
        if time.monotonic() - self._last_full_scan >= self.full_scan_interval:
            # Marks left by another instance or before a restart: look at every channel,
            # rarely, since listing the log's channels scans the table.
            self._last_full_scan = time.monotonic()
            also = [c.channel for c in await self.log.channels()]
        return await self.catch_up.feed_all(also)

    async def _read_server_ids(self) -> dict[str, str]:
        client = self.fanout.client
        assert client is not None
        if isinstance(client, RedisCluster):
            found: Any = await client.info("server", target_nodes=RedisCluster.ALL_NODES)
            return {node: str(info.get("run_id")) for node, info in found.items()}
        return {"": str((await client.info("server")).get("run_id"))}

    async def check_restart(self) -> int:
        """Fan out recent events again when the Redis server's run_id changed; returns how many.

        A restarted server may have lost its last writes (with `appendfsync everysec`, up to
        about a second). What this process fanned out within `restart_window_s` before it
        last saw the old server is fanned out again; older fan-outs were on disk by then.
        """
        if self.fanout.client is None or self.restart_window_s <= 0:
            return 0
        ids = await self._read_server_ids()
        now = time.monotonic()
        previous, self._server_ids = self._server_ids, ids
        if previous is None or previous == ids:
            # The same server is up: what it got before the window is durable by now.
            while self._recent and self._recent[0][0] < now - self.restart_window_s:
                self._recent.popleft()
            return 0
        positions = sorted({p for _, batch in self._recent for p in batch})
        self._recent.clear()
        if not positions:
            return 0
        log.warning(
            "redis restarted or failed over: fanning out recent events again",
            extra={"count": len(positions)},
        )
        count = 0
        for start in range(0, len(positions), self.batch):
            found = await self.log.events_at(positions[start : start + self.batch])
            if found and not await self.fanout.deliver(found):
                # Down again: keep the rest for the next check.
                self._recent.appendleft((now, positions[start:]))
                self._server_ids = previous
                break
            self._remember([e.position for e in found])
            count += len(found)
        self.redispatched_total += count
        if self.on_redispatched is not None and count:
            self.on_redispatched(count)
        return count

    def stop(self) -> None:
        """Make `run()` return at its next wait (a query is never cut off mid-flight)."""
        self._stopped = True
        self._wake.set()

    async def run(self) -> None:
        """Loop until `stop()` (also one called before this started): dispatch, check for a
        Redis restart, feed lagging subscribers, then wait `interval` (or a wake-up); with a
        catch-up under way, go on at once."""
        while not self._stopped:
            busy = False
            try:
                while await self.run_once() == self.batch:
                    pass
                await self.check_restart()
                busy = await self.catch_up_lagging() >= self.batch
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("dispatcher pass failed", extra={"error": repr(exc)})
            if self._stopped:
                await self.flush_marks()
                return
            if busy:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
