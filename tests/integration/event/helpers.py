"""Small helpers for the event integration tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> None:
    """Poll `check` until it is truthy; fail after `timeout` seconds.

    A Redis connection error counts as "not yet" (tests restart servers)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except RedisConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
