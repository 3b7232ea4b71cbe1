"""Lagging subscribers: fed from the log, in order, under their waiting bound.

A subscriber is lagging while the channel's lagging hash holds a mark for it: the first log
position it has not been given. Fan-out skips a lagging subscriber (lowering the mark when an
event committed late has a lower position), and `CatchUp` reads the log from the mark and
pushes batches while the subscriber's list is below `max_waiting`. Each batch moves the mark
with a compare-and-set (`catch_up.lua`), so two service instances never push the same batch;
once the log has nothing past the mark, the mark is cleared and fan-out resumes.

    catch_up = CatchUp(redis, "ab", event_log, max_waiting=100_000)
    await catch_up.mark("orders", "audit", first=1)     # subscribe from the beginning
    await catch_up.feed_channel("orders")                # the dispatcher, every pass
"""

from __future__ import annotations

from collections.abc import Iterable

from authbus.common._envelope import Event, format_delivery
from authbus.common._scripts import AsyncRedis, DeliveryOps
from authbus.event.log import EventLog

__all__ = ["CatchUp"]

# One pass pushes at most the bound (or, without one, this many batches) per subscriber, so
# the dispatcher gets back to undispatched events in between; it runs again at once.
UNBOUNDED_PASS_BATCHES = 10


class CatchUp:
    """Feeds lagging subscribers from the log; see the module docstring."""

    def __init__(
        self,
        client: AsyncRedis,
        prefix: str,
        event_log: EventLog,
        *,
        max_waiting: int = 0,
        batch: int = 500,
        channels: set[str] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.log = event_log
        self.max_waiting = max_waiting
        self.batch = batch
        # Channels known to have lagging subscribers (fan-out adds to the same set).
        self.channels: set[str] = channels if channels is not None else set()

    def _ops(self, channel: str) -> DeliveryOps:
        return DeliveryOps(self.client, self.prefix, channel)

    async def mark(self, channel: str, name: str, *, first: int) -> None:
        """Subscribe `name` and have it fed from the log from position `first` on.

        Gap-free by its order: the SADD comes first. An event fanned out before the SADD was
        committed before it, so every catch-up read (all of them come after the mark, hence
        after the SADD) sees it; an event fanned out between the SADD and the mark is pushed
        directly and once more by the catch-up (a duplicate, never a gap); from the mark on,
        fan-out skips the subscriber and lowers the mark for late commits. The other order
        would leave a window where a catch-up pass moves the mark past an event whose fan-out
        did not yet see the subscriber. An existing lower mark is kept (those events are
        still owed).
        """
        ops = self._ops(channel)
        k = ops.keys
        await self.client.sadd(k.subscribers, name)
        while True:
            current = await self.client.hget(k.lagging(), name)
            if current is None:
                if await self.client.hsetnx(k.lagging(), name, str(first)):
                    break
                continue
            mark = int(current)
            if mark <= first:
                break
            # Compare-and-set, so a mark moved meanwhile is read again.
            if await ops.catch_up(name, mark=mark, next_mark=first, items=[]) is not None:
                break
        self.channels.add(channel)

    async def lagging(self, channel: str) -> dict[str, int]:
        """The lagging subscribers of `channel` with their marks."""
        return await self._ops(channel).lagging()

    async def feed_all(self, also: Iterable[str] = ()) -> int:
        """One pass over the channels with lagging subscribers (plus `also`); returns pushed."""
        pushed = 0
        for channel in sorted(self.channels | set(also)):
            pushed += await self.feed_channel(channel)
        return pushed

    async def feed_channel(self, channel: str) -> int:
        """Feed every lagging subscriber of `channel`; returns how many events were pushed."""
        marks = await self.lagging(channel)
        if not marks:
            self.channels.discard(channel)
            return 0
        self.channels.add(channel)
        pushed = 0
        for name in sorted(marks):
            pushed += await self.feed(channel, name)
        return pushed

    async def feed(self, channel: str, name: str) -> int:
        """Push log events to `name` while its list is below the bound; returns how many.

        Loops over batches, so catching up is limited by the bound and by how fast the
        subscriber consumes, not by one batch per pass.
        """
        ops = self._ops(channel)
        k = ops.keys
        pushed = 0
        budget = max(self.max_waiting, self.batch * UNBOUNDED_PASS_BATCHES)
        # Each turn either pushes, clears the mark, or sees it moved by someone else.
        for _ in range(10_000):
            current = await self.client.hget(k.lagging(), name)
            if current is None:
                return pushed
            mark = int(current)
            room = budget - pushed
            if self.max_waiting > 0:
                waiting = int(await self.client.llen(k.published(name)))
                room = min(room, self.max_waiting - waiting)
            if room <= 0:
                return pushed
            batch = await self.log.read_channel(
                channel, after=mark - 1, limit=min(self.batch, room)
            )
            if not batch:
                if await ops.catch_up(name, mark=mark, next_mark=None, items=[]) is None:
                    continue  # a late event lowered the mark: read again from it
                # Cleared. An event skipped just before the clear was committed before it,
                # so this read finds it; the few also fanned out directly come twice.
                return pushed + await self._late(ops, channel, name, mark, None, [])
            last = batch[-1].position
            done = await ops.catch_up(
                name, mark=mark, next_mark=last + 1, items=[format_delivery(e) for e in batch]
            )
            if done is None:
                continue  # moved meanwhile (a late event, or another instance's batch)
            pushed += done + await self._late(ops, channel, name, mark, last, batch)
        return pushed

    async def _late(
        self,
        ops: DeliveryOps,
        channel: str,
        name: str,
        mark: int,
        last: int | None,
        batch: list[Event],
    ) -> int:
        """Push events below the new mark that were not committed yet when read.

        Positions are taken at insert and become visible at commit, so a read may miss a
        lower position that commits a moment later; if its fan-out ran before the mark
        moved, it neither lowered the mark nor reached the list. Reading the range again
        after the mark moved finds every such event (its commit came before its fan-out).
        """
        upto = last if last is not None else await self.log.last_position(channel)
        if upto < mark:
            return 0
        # The common case: nothing late, one cheap count instead of a second read.
        if last is not None and len(batch) == await self.log.count_channel(
            channel, after=mark - 1, upto=upto
        ):
            return 0
        seen = {e.position for e in batch}
        pushed, after = 0, mark - 1
        while True:
            page = await self.log.read_channel(channel, after=after, upto=upto, limit=self.batch)
            late = [format_delivery(e) for e in page if e.position not in seen]
            if late:
                await ops.replay(name, late)
                pushed += len(late)
            if len(page) < self.batch:
                return pushed
            after = page[-1].position
