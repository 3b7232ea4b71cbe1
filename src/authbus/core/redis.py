"""Redis connections: a plain client, or redis-py's cluster client for a cluster URL.

A URL with `?cluster=true` (or the scheme `redis+cluster://`) selects the cluster client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

AnyRedis = aioredis.Redis | RedisCluster


def is_cluster_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "redis+cluster" or dict(parse_qsl(parts.query)).get("cluster") in (
        "1",
        "true",
        "yes",
    )


def _strip_cluster_flag(url: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"]
    scheme = "redis" if parts.scheme == "redis+cluster" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def create_redis(url: str, **kwargs: Any) -> AnyRedis:
    """A `redis.asyncio` client for `url` (not connected until first use)."""
    kwargs.setdefault("socket_connect_timeout", 2)
    kwargs.setdefault("socket_timeout", 5)
    kwargs.setdefault("health_check_interval", 15)
    if is_cluster_url(url):
        kwargs.pop("health_check_interval", None)
        return RedisCluster.from_url(_strip_cluster_flag(url), **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)
