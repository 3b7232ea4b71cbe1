"""Subscriber administration: subscribe (with replay), unsubscribe, stats, dead letters.

subs = Subscriptions(redis, "ab", log)
await subs.subscribe("orders", "billing", start="beginning")
(await subs.stats("orders")).subscribers[0].waiting
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from redis.exceptions import RedisError

from authbus.common._envelope import Event, InvalidDelivery, format_delivery, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import AsyncRedis, DeliveryOps
from authbus.event.errors import DeliveryUnavailable
from authbus.event.log import EventLog

__all__ = ["ChannelStats", "DeadLetter", "SubscriberStats", "Subscriptions"]

_REDIS_DOWN = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True)
class SubscriberStats:
    """Delivery figures of one subscriber name on one channel."""

    name: str
    waiting: int
    processing: int
    dead: int
    instances: list[dict[str, Any]] = field(default_factory=list)
    stale: bool = False
    lagging_since_position: int | None = None
    # Seconds since the oldest waiting event was published (0 when nothing waits).
    oldest_waiting_age_s: float = 0.0


@dataclass(frozen=True)
class ChannelStats:
    """Every subscriber of a channel."""

    channel: str
    subscribers: list[SubscriberStats]


@dataclass(frozen=True)
class DeadLetter:
    """One dead delivery: its event when readable, else the raw item."""

    attempt: int | None
    event: Event | None
    raw: str


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _age_s(item: Any, now_ms: float) -> float:
    """Seconds since the event in delivery `item` was created; 0 for none or unreadable."""
    if item is None:
        return 0.0
    try:
        created = parse_delivery(_text(item)).event.created_at
    except InvalidDelivery:
        return 0.0
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return max(0.0, round(now_ms / 1000 - created.timestamp(), 3))


class Subscriptions:
    """Subscriber administration: subscribe (with replay), unsubscribe, stats, dead letters."""

    def __init__(
        self,
        client: AsyncRedis | None,
        prefix: str,
        event_log: EventLog,
        *,
        stale_after_s: float = 60.0,
        replay_batch: int = 500,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.log = event_log
        self.stale_after_s = stale_after_s
        self.replay_batch = replay_batch

    def _ops(self, channel: str) -> DeliveryOps:
        if self.client is None:
            raise DeliveryUnavailable("Redis is not configured for this event service")
        return DeliveryOps(self.client, self.prefix, channel)

    async def subscribe(
        self, channel: str, name: str, start: Literal["now", "beginning"] | int = "now"
    ) -> int:
        """Register `name`; with `beginning` (or a position) the log is replayed into its list.

        Returns how many events were replayed. Replay runs up to the end of the log, then
        registers, then replays the gap once more: no event is missed, a few may come twice.
        """
        ops = self._ops(channel)
        try:
            replayed, after = 0, 0
            if start != "now":
                after = 0 if start == "beginning" else int(start)
                replayed, after = await self._replay(ops, channel, name, after)
            await ops.client.sadd(ops.keys.subscribers, name)
            if start != "now":
                # Clear the lagging mark first: fan-out skipped events before this point
                # were committed before it, so the gap replay below finds them.
                await ops.client.hdel(ops.keys.lagging(), name)
                more, _ = await self._replay(ops, channel, name, after)
                replayed += more
            return replayed
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    async def _replay(
        self, ops: DeliveryOps, channel: str, name: str, after: int
    ) -> tuple[int, int]:
        count = 0
        while True:
            batch = await self.log.read_channel(channel, after=after, limit=self.replay_batch)
            if not batch:
                return count, after
            await ops.replay(name, [format_delivery(e) for e in batch])
            count += len(batch)
            after = batch[-1].position

    async def unsubscribe(self, channel: str, name: str) -> bool:
        """Remove `name` and its lists; False when it was not subscribed."""
        try:
            return await self._ops(channel).drop_subscriber(name)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    async def is_subscribed(self, channel: str, name: str) -> bool:
        """Whether `name` is in the channel's subscribers set."""
        ops = self._ops(channel)
        try:
            return bool(await ops.client.sismember(ops.keys.subscribers, name))
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    async def stats(self, channel: str) -> ChannelStats:
        """Waiting / processing / dead counts and instance heartbeats per subscriber."""
        ops = self._ops(channel)
        k: ChannelKeys = ops.keys
        client = ops.client
        try:
            names = sorted(_text(n) for n in await client.smembers(k.subscribers))
            lagging = {_text(a): int(b) for a, b in (await client.hgetall(k.lagging())).items()}
            now_ms = time.time() * 1000
            found = []
            for name in names:
                waiting = int(await client.llen(k.published(name)))
                processing = int(await client.llen(k.processing(name)))
                dead = int(await client.llen(k.dead(name)))
                # Consumers take from the right: the rightmost item is the oldest waiting.
                oldest = await client.lindex(k.published(name), -1) if waiting else None
                beats: list[tuple[Any, float]] = await client.zrange(  # type: ignore[assignment]
                    k.instances(name), 0, -1, withscores=True
                )
                instances = [
                    {
                        "id": _text(member),
                        "last_seen_at": datetime.fromtimestamp(score / 1000, UTC).isoformat(),
                        "last_seen_ms_ago": max(0, int(now_ms - score)),
                        "stale": now_ms - score > self.stale_after_s * 1000,
                    }
                    for member, score in beats
                ]
                found.append(
                    SubscriberStats(
                        name=name,
                        waiting=waiting,
                        processing=processing,
                        dead=dead,
                        instances=instances,
                        stale=all(i["stale"] for i in instances),
                        lagging_since_position=lagging.get(name),
                        oldest_waiting_age_s=_age_s(oldest, now_ms),
                    )
                )
            return ChannelStats(channel, found)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    async def dead_letters(self, channel: str, name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead deliveries of `name`."""
        ops = self._ops(channel)
        try:
            raw = await ops.client.lrange(ops.keys.dead(name), 0, limit - 1)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc
        letters = []
        for item in raw:
            text = _text(item)
            try:
                d = parse_delivery(text)
                letters.append(DeadLetter(d.attempt, d.event, text))
            except InvalidDelivery:
                letters.append(DeadLetter(None, None, text))
        return letters

    async def requeue_dead(self, channel: str, name: str, event_id: str | None = None) -> int:
        """Move dead letters back to published (attempt 1); returns how many."""
        try:
            return await self._ops(channel).requeue_dead(name, event_id)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    async def purge_dead(self, channel: str, name: str, event_id: str | None = None) -> int:
        """Delete dead letters; returns how many."""
        try:
            return await self._ops(channel).purge_dead(name, event_id)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc
