"""Redis connections: a plain client, or redis-py's cluster client for a cluster URL.

A URL with `?cluster=true` (any case; also `1` or `yes`) or the scheme `redis+cluster://`
selects the cluster client. The convention is `authbus.common`'s (`is_cluster_url`,
`connect`), so the services and the subscribers they feed read `AUTHBUS_REDIS_URL` alike.

    client = create_redis("redis://10.0.0.5:7000/0?cluster=true", decode_responses=True)
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from authbus.common._scripts import connect, is_cluster_url

__all__ = ["AnyRedis", "create_redis", "is_cluster_url"]

AnyRedis = aioredis.Redis | RedisCluster


def create_redis(url: str, **kwargs: Any) -> AnyRedis:
    """A `redis.asyncio` client for `url` (not connected until first use)."""
    kwargs.setdefault("socket_connect_timeout", 2)
    kwargs.setdefault("socket_timeout", 5)
    kwargs.setdefault("health_check_interval", 15)
    return connect(url, **kwargs)
