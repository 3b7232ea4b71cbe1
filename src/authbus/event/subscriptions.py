"""Subscriber administration: subscribe (with replay), unsubscribe, stats, dead letters.

subs = Subscriptions(redis, "ab", log, stale_after_s=60, max_waiting=100_000)
await subs.subscribe("orders", "billing", start="beginning")   # fed from the log
await subs.subscribe("orders", "billing", start="beginning")   # created=False: no change
(await subs.stats("orders")).subscribers[0].waiting
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from redis.exceptions import RedisError, WatchError

from authbus.common._envelope import Event, InvalidDelivery, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import AsyncRedis, DeliveryOps
from authbus.core.errors import ValidationFailed
from authbus.event.catch_up import CatchUp
from authbus.event.errors import DeliveryUnavailable, SubscriberNotFound
from authbus.event.log import EventLog
from authbus.event.service import MAX_POSITION

__all__ = ["ChannelStats", "DeadLetter", "Subscribed", "SubscriberStats", "Subscriptions"]

_REDIS_DOWN = (RedisError, OSError, TimeoutError)
# Optimistic transactions on a channel's subscribers set, before giving up as busy.
_WATCH_ATTEMPTS = 20


@dataclass(frozen=True)
class Subscribed:
    """What `Subscriptions.subscribe` did: `created` is False when the name was subscribed
    already (then nothing changed and `replayed` is 0); `lagging_since_position` is the mark
    from which the dispatcher still feeds it from the log (None: not lagging)."""

    created: bool
    replayed: int
    lagging_since_position: int | None


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
    ) -> Subscribed:
        """Register `name`; with `beginning` (or a position) it is fed from the log.

        Idempotent: a name that is subscribed already is left as it is (`created` False, no
        replay), so repeating a PUT never queues the log a second time. To replay for an
        existing subscriber, unsubscribe it first.

        Replay does not push the whole log at once: the subscriber is marked lagging from
        the start position (`CatchUp.mark`, which explains why no event can slip through)
        and fed under its waiting bound, here as far as the bound allows and then by the
        dispatcher as it drains. The name and its mark are written in one transaction, so a
        failure never leaves the name subscribed without the replay it asked for.
        """
        if isinstance(start, int) and not 0 <= start < MAX_POSITION:
            raise ValidationFailed(f"start: a position must be 0 to {MAX_POSITION - 1}")
        ops = self._ops(channel)
        k = ops.keys
        try:
            if start == "now":
                if await ops.client.sadd(k.subscribers, name):
                    return Subscribed(created=True, replayed=0, lagging_since_position=None)
                return Subscribed(False, 0, (await ops.lagging()).get(name))
            first = 1 if start == "beginning" else start + 1
            if not await self._add_marked(ops, name, first):
                return Subscribed(False, 0, (await ops.lagging()).get(name))
            # Lowers a mark left from before (it never rises), and tells the dispatcher.
            await self.catch_up.mark(channel, name, first=first)
            pushed = await self.catch_up.feed(channel, name)
            return Subscribed(True, pushed, (await self.catch_up.lagging(channel)).get(name))
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    @staticmethod
    async def _add_marked(ops: DeliveryOps, name: str, first: int) -> bool:
        """Add `name` to the subscribers set with a lagging mark at `first` (unless it has
        one), in one transaction; False, writing nothing, when it was subscribed already."""
        k = ops.keys
        for _ in range(_WATCH_ATTEMPTS):
            async with ops.client.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(k.subscribers)
                    if await pipe.sismember(k.subscribers, name):
                        return False
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.sadd(k.subscribers, name)
                    pipe.hsetnx(k.lagging(), name, str(first))
                    await pipe.execute()
                    return True
                except WatchError:
                    continue  # the set changed meanwhile (another name): look again
        raise DeliveryUnavailable("the channel's subscribers kept changing; retry", retry_after=1)

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

    async def require_known(self, channel: str, name: str) -> None:
        """`SubscriberNotFound` unless `name` subscribes to `channel` or still has dead letters
        there (a subscriber removed while an instance was dead-lettering keeps them reachable,
        to be listed and purged)."""
        ops = self._ops(channel)
        try:
            if await ops.client.sismember(ops.keys.subscribers, name):
                return
            if await ops.client.exists(ops.keys.dead(name)):
                return
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc
        raise SubscriberNotFound(f"{name} does not subscribe to {channel}")

    async def dead_letters(self, channel: str, name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead deliveries of `name`; `SubscriberNotFound` for a name
        unknown on the channel (see `require_known`)."""
        await self.require_known(channel, name)
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
        """Move dead letters back to published (attempt 1); returns how many.

        Only for a subscriber: requeued letters of a removed one would wait in a list that no
        one consumes and the channel stats do not show (`SubscriberNotFound`; its dead
        letters can still be listed and purged)."""
        if not await self.is_subscribed(channel, name):
            ops = self._ops(channel)
            try:
                dead = int(await ops.client.llen(ops.keys.dead(name)))
            except _REDIS_DOWN as exc:
                raise DeliveryUnavailable("Redis is unavailable") from exc
            left = f"; its {dead} dead letter(s) can be listed and purged" if dead else ""
            raise SubscriberNotFound(f"{name} does not subscribe to {channel}{left}")
        try:
            return await self._ops(channel).requeue_dead(name, event_id)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc

    async def purge_dead(self, channel: str, name: str, event_id: str | None = None) -> int:
        """Delete dead letters; returns how many (`SubscriberNotFound` as `dead_letters`)."""
        await self.require_known(channel, name)
        try:
            return await self._ops(channel).purge_dead(name, event_id)
        except _REDIS_DOWN as exc:
            raise DeliveryUnavailable("Redis is unavailable") from exc
