"""The bound on dead lists: the oldest dead letters beyond `max_dead` are trimmed, and counted.

A dead letter is the delivery record of an event that failed `max_deliveries` times; the
event itself stays in the log, so trimming loses only that record. Each trim is logged at
ERROR with the positions trimmed (replay them from the log with `GET
/v1/channels/{channel}/events?after=`) and added to the subscriber's `dead_trimmed` count in
the event database, which the stats, `authbus events stats` and `/metrics` report.

    bound = DeadLetterBound(redis, "ab", event_log, max_dead=10_000)
    await bound.trim_channel("orders")    # {"billing": 12} when 12 were trimmed
"""

from __future__ import annotations

import logging
from typing import Any

from authbus.common._envelope import InvalidDelivery, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import AsyncRedis
from authbus.event.log import EventLog

__all__ = ["DeadLetterBound"]

log = logging.getLogger("authbus.event.dead_letters")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _position(item: str) -> int | None:
    try:
        return parse_delivery(item).event.position
    except InvalidDelivery:
        return None


class DeadLetterBound:
    """Trims each subscriber's dead list to `max_dead` (0: unbounded), oldest first."""

    def __init__(
        self,
        client: AsyncRedis,
        prefix: str,
        event_log: EventLog,
        *,
        max_dead: int,
        per_pass: int = 1000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.log = event_log
        self.max_dead = max_dead
        self.per_pass = per_pass

    async def trim_channel(self, channel: str) -> dict[str, int]:
        """Trim the dead lists of every subscriber of `channel`; returns how many per name."""
        if self.max_dead <= 0:
            return {}
        k = ChannelKeys(self.prefix, channel)
        trimmed: dict[str, int] = {}
        for raw_name in await self.client.smembers(k.subscribers):
            name = _text(raw_name)
            excess = int(await self.client.llen(k.dead(name))) - self.max_dead
            if excess <= 0:
                continue
            # The reaper pushes on the left, so the oldest are on the right.
            items = [
                _text(i)
                for i in await self.client.lrange(k.dead(name), -min(excess, self.per_pass), -1)
            ]
            positions = [p for p in map(_position, items) if p is not None]
            # Logged before the removal: a crash in between leaves a record, never a silence.
            log.error(
                "dead letters trimmed beyond the bound; the events stay in the log",
                extra={
                    "channel": channel,
                    "subscriber": name,
                    "count": len(items),
                    "positions": positions,
                    "max_dead": self.max_dead,
                },
            )
            # Exactly these items (LREM from the tail), so a dead letter that arrived or was
            # requeued meanwhile is left alone.
            async with self.client.pipeline(transaction=False) as pipe:
                for item in reversed(items):
                    pipe.lrem(k.dead(name), -1, item)
                removed = sum(int(n) for n in await pipe.execute())
            await self.log.record_dead_trimmed(channel, name, removed)
            trimmed[name] = removed
        return trimmed
