"""Subscriber administration: subscribe (with replay), unsubscribe, stats, dead letters.

subs = Subscriptions(redis, "ab", log, stale_after_s=60, max_waiting=100_000)
await subs.subscribe("orders", "billing", start="beginning")   # fed from the log
(await subs.stats("orders")).subscribers[0].waiting
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from redis.exceptions import RedisError

from authbus.common._envelope import Event, InvalidDelivery, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import AsyncRedis, DeliveryOps
from authbus.event.catch_up import CatchUp
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
    # The most recent heartbeat of any instance (None: never seen).
    last_seen_at: str | None = None
    # Dead letters dropped from the bounded dead list (oldest first); the events stay in
    # the log.
    dead_trimmed: int = 0


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
        max_waiting: int = 0,
        catch_up: CatchUp | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.log = event_log
        self.stale_after_s = stale_after_s
        self._catch_up = catch_up
        self.max_waiting = max_waiting

    @property
    def catch_up(self) -> CatchUp:
        """What feeds replaying and lagging subscribers (shared with the dispatcher)."""
        if self.client is None:
            raise DeliveryUnavailable("Redis is not configured for this event service")
        if self._catch_up is None:
            self._catch_up = CatchUp(
                self.client, self.prefix, self.log, max_waiting=self.max_waiting
            )
        return self._catch_up

    def _ops(self, channel: str) -> DeliveryOps:
        if self.client is None:
            raise DeliveryUnavailable("Redis is not configured for this event service")
        return DeliveryOps(self.client, self.prefix, channel)

    async def subscribe(
        self, channel: str, name: str, start: Literal["now", "beginning"] | int = "now"
    ) -> tuple[int, int | None]:
        """Register `name`; with `beginning` (or a position) it is fed from the log.

        Replay does not push the whole log at once: the subscriber is marked lagging from
        the start position (`CatchUp.mark`, which explains why no event can slip through)
        and fed under its waiting bound, here as far as the bound allows and then by the
        dispatcher as it drains. Returns (events pushed now, the mark still to catch up
        from, or None once caught up).
        """
        ops = self._ops(channel)
        try:
            if start == "now":
                await ops.client.sadd(ops.keys.subscribers, name)
                return 0, None
            first = 1 if start == "beginning" else int(start) + 1
            await self.catch_up.mark(channel, name, first=first)
            pushed = await self.catch_up.feed(channel, name)
            return pushed, (await self.catch_up.lagging(channel)).get(name)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

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
            trimmed = await self.log.dead_trimmed(channel) if names else {}
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
                last_ms = max((score for _, score in beats), default=None)
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
                        last_seen_at=(
                            None
                            if last_ms is None
                            else datetime.fromtimestamp(last_ms / 1000, UTC).isoformat()
                        ),
                        dead_trimmed=trimmed.get(name, 0),
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
