"""The delivery operations on Redis, as Lua scripts loaded once and called by SHA.

Every multi-key operation of delivery is one script in `authbus/common/lua/`, so it is atomic
and all its keys share the channel's `{channel}` hash tag (one Redis Cluster slot). Key names
come from `authbus.common._keys` only.

    ops = DeliveryOps(redis, "ab", "orders")
    await ops.fanout([format_delivery(event)], first_position=event.position)
    items = await ops.claim("billing", count=10, lease_ms=30_000)
    await ops.ack("billing", items[0])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any, NamedTuple, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError

from authbus.common._keys import ChannelKeys

__all__ = ["AsyncRedis", "DeliveryOps", "LuaScript", "Reaped", "connect", "is_cluster_url"]

AsyncRedis = Union["aioredis.Redis", "RedisCluster"]


def is_cluster_url(url: str) -> bool:
    """True for `redis+cluster://...` or a URL with `?cluster=true` (as AUTHBUS_REDIS_URL)."""
    parts = urlsplit(url)
    flag = dict(parse_qsl(parts.query)).get("cluster", "").lower()
    return parts.scheme == "redis+cluster" or flag in ("1", "true", "yes")


def connect(url: str, **kwargs: Any) -> AsyncRedis:
    """A client for `url`: redis-py's cluster client for a cluster URL, else a plain one.

        connect("redis://10.0.0.5:7000/0?cluster=true", decode_responses=True)

    The same URL convention as the services (`authbus.core.redis`), which `common` cannot
    import: it is installed without the server stack.
    """
    if not is_cluster_url(url):
        return aioredis.Redis.from_url(url, **kwargs)
    parts = urlsplit(url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"])
    scheme = "redis" if parts.scheme == "redis+cluster" else parts.scheme
    plain = urlunsplit((scheme, parts.netloc, parts.path, query, parts.fragment))
    kwargs.pop("health_check_interval", None)
    return RedisCluster.from_url(plain, **kwargs)


class LuaScript:
    """One script from `authbus/common/lua/`, called by EVALSHA (loaded on first NOSCRIPT)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = (resources.files("authbus.common") / "lua" / f"{name}.lua").read_text()
        # SHA1 is what Redis names scripts by; not a security use.
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, client: AsyncRedis, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # A fresh or restarted server: load once, then every later call goes by SHA.
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


_SCRIPTS: dict[str, LuaScript] = {}


def script(name: str) -> LuaScript:
    """The script `name`, read from the package once per process."""
    found = _SCRIPTS.get(name)
    if found is None:
        found = _SCRIPTS[name] = LuaScript(name)
    return found


class Reaped(NamedTuple):
    """What one reaper run did: deliveries requeued, and the event ids it dead-lettered
    (`""` for an unreadable item)."""

    requeued: int
    dead: list[str]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class DeliveryOps:
    """The delivery operations of one channel: fan-out, claim, ack, leases, reaper, dead letters.

    Shared by the event service (fan-out, dead letters, stats) and `EventSubscriber` (claim,
    ack, renew, retry, reap).
    """

    def __init__(self, client: AsyncRedis, prefix: str, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.keys = ChannelKeys(prefix, channel)

    async def fanout(
        self, items: Sequence[str], *, first_position: int, max_waiting: int = 0
    ) -> tuple[int, int]:
        """LPUSH `items` (oldest first) to every subscriber's published list and notify.

        Returns (subscribers that received them, subscribers skipped as lagging). A
        subscriber whose list already holds `max_waiting` items is skipped and marked
        lagging from `first_position`; it is then fed from the log (`catch_up`).
        """
        if not items:
            return 0, 0
        k = self.keys
        args = [k.notify, k.published(""), max_waiting, first_position, *items]
        found = await script("fanout")(self.client, [k.subscribers, k.lagging()], args)
        return int(found[0]), int(found[1])

    async def claim(self, subscriber: str, *, count: int, lease_ms: int) -> list[str]:
        """Move up to `count` deliveries from published to processing, leased for `lease_ms`."""
        k = self.keys
        keys = [k.published(subscriber), k.processing(subscriber), k.leases(subscriber)]
        found = await script("claim")(self.client, keys, [lease_ms, count])
        return [_text(item) for item in found or ()]

    async def ack(self, subscriber: str, item: str) -> bool:
        """Remove exactly `item` from processing; False when it was no longer ours."""
        return (await self.ack_many(subscriber, [item]))[0]

    async def ack_many(self, subscriber: str, items: Sequence[str]) -> list[bool]:
        """`ack` for many deliveries in one call; one flag per item."""
        if not items:
            return []
        k = self.keys
        keys = [k.processing(subscriber), k.leases(subscriber)]
        return [int(f) > 0 for f in await script("ack")(self.client, keys, list(items))]

    async def extend(self, subscriber: str, items: Sequence[str], ms: int) -> list[bool]:
        """Set the lease deadline of `items` to now + `ms`; one flag per item (still held)."""
        if not items:
            return []
        flags = await script("lease")(self.client, [self.keys.leases(subscriber)], [ms, *items])
        return [bool(int(f)) for f in flags]

    async def renew(self, subscriber: str, items: Sequence[str], lease_ms: int) -> list[bool]:
        """Renew the leases of long-running deliveries."""
        return await self.extend(subscriber, items, lease_ms)

    async def retry_after(self, subscriber: str, item: str, delay_ms: int = 0) -> bool:
        """Release a failed delivery: it stays in processing with its lease ending in
        `delay_ms`; the reaper requeues it once that and its attempt's backoff have passed."""
        held = await self.extend(subscriber, [item], delay_ms)
        return bool(held and held[0])

    async def reap(
        self,
        subscriber: str,
        *,
        max_deliveries: int,
        backoff_ms: int = 0,
        max_backoff_ms: int = 0,
        limit: int = 500,
    ) -> Reaped:
        """Requeue deliveries whose lease ended at least their attempt's backoff ago
        (`backoff_ms * 2**(attempt-1)`, at most `max_backoff_ms`); past `max_deliveries`
        they go to the dead list. Returns how many were requeued and the dead event ids."""
        k = self.keys
        keys = [
            k.processing(subscriber),
            k.leases(subscriber),
            k.published(subscriber),
            k.dead(subscriber),
        ]
        args = [max_deliveries, limit, k.notify, backoff_ms, max_backoff_ms]
        found = await script("reap")(self.client, keys, args)
        return Reaped(int(found[0]), [_text(i) for i in found[1:]])

    async def requeue_dead(self, subscriber: str, event_id: str | None = None) -> int:
        """Move dead letters (all, or those of `event_id`) back to published at attempt 1."""
        return await self._dead_letters("requeue", subscriber, event_id)

    async def purge_dead(self, subscriber: str, event_id: str | None = None) -> int:
        """Delete dead letters (all, or those of `event_id`)."""
        return await self._dead_letters("purge", subscriber, event_id)

    async def _dead_letters(self, op: str, subscriber: str, event_id: str | None) -> int:
        k = self.keys
        keys = [k.dead(subscriber), k.published(subscriber)]
        return int(await script("dead_letters")(self.client, keys, [op, event_id or "", k.notify]))

    async def replay(self, subscriber: str, items: Sequence[str]) -> int:
        """Push `items` (oldest first) into one subscriber's published list and notify."""
        k = self.keys
        return int(
            await script("replay")(self.client, [k.published(subscriber)], [k.notify, *items])
        )

    async def lagging(self) -> dict[str, int]:
        """Subscribers fed from the log, with the first position they still miss."""
        found = await self.client.hgetall(self.keys.lagging())
        return {_text(k): int(v) for k, v in found.items()}

    async def catch_up(
        self, subscriber: str, *, mark: int, next_mark: int | None, items: Sequence[str]
    ) -> int | None:
        """Push a batch read from the log at `mark` and move the mark to `next_mark`
        (None: caught up, clear it). Returns None when the mark moved meanwhile."""
        k = self.keys
        args = [subscriber, str(mark), "" if next_mark is None else str(next_mark), k.notify]
        keys = [k.published(subscriber), k.lagging()]
        pushed = int(await script("catch_up")(self.client, keys, [*args, *items]))
        return None if pushed < 0 else pushed

    async def drop_subscriber(self, subscriber: str) -> bool:
        """Unsubscribe `subscriber` and delete its lists; True when it was subscribed."""
        k = self.keys
        keys = [
            k.subscribers,
            k.published(subscriber),
            k.processing(subscriber),
            k.leases(subscriber),
            k.dead(subscriber),
            k.instances(subscriber),
            k.lagging(),
        ]
        return int(await script("drop_subscriber")(self.client, keys, [subscriber])) > 0
