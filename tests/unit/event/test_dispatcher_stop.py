"""`Dispatcher.stop()` ends `run()` after the pass in progress, whenever it was called: also
before the task running `run()` took its first step (the event service's lifespan stops the
dispatcher that way when it shuts down right after starting)."""

from __future__ import annotations

import asyncio
from typing import Any

from authbus.event.delivery import Dispatcher, Fanout
from authbus.event.memory_log import InMemoryEventLog

# A wait no test sees the end of: only stop() can end run() here.
INTERVAL_S = 3600.0
# Loop turns a pass over an empty in-memory log (no Redis) may take, with a wide margin;
# counted in turns, not seconds, so a loaded machine changes nothing.
TURNS = 1000


class WatchedLog(InMemoryEventLog):
    """The in-memory log, telling when a dispatcher pass has read it."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()

    async def undispatched(self, *args: Any, **kwargs: Any) -> Any:
        self.read.set()
        return await super().undispatched(*args, **kwargs)


async def ended(task: asyncio.Task[None]) -> bool:
    for _ in range(TURNS):
        if task.done():
            return True
        await asyncio.sleep(0)
    return task.done()


async def test_stop_after_the_first_pass_ends_run() -> None:
    log = WatchedLog()
    d = Dispatcher(log, Fanout(None, "ab"), interval=INTERVAL_S)
    task = asyncio.create_task(d.run())
    try:
        await log.read.wait()
        d.stop()
        assert await ended(task)
    finally:
        task.cancel()


async def test_stop_before_the_first_step_ends_run() -> None:
    log = WatchedLog()
    d = Dispatcher(log, Fanout(None, "ab"), interval=INTERVAL_S)
    task = asyncio.create_task(d.run())
    d.stop()  # the task has not taken a step yet
    read = asyncio.create_task(log.read.wait())
    try:
        # It may return at once, or after one pass; it must not go on waiting.
        await asyncio.wait({task, read}, return_when=asyncio.FIRST_COMPLETED)
        assert await ended(task)
    finally:
        task.cancel()
        read.cancel()
