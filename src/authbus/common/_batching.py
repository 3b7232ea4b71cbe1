"""Calls made in the same event-loop turn, sent as one batch call.

Many tasks finishing together (handlers of claimed events, publishes of one group commit)
each want one small Redis round trip; `Coalescer` gathers what they submit while the loop
runs them and makes one call for all, then hands each its own result.

    acks = Coalescer(lambda items: ops.ack_many("billing", items))
    held = await acks.submit(item)        # one ack_many for every submit of this turn
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Batches `submit(item)` calls into `call(items)`, which returns one result per item.

    A failing call fails every submit of its batch with the same error. A submitter that is
    cancelled does not take its item out of a batch already under way.
    """

    def __init__(self, call: Callable[[list[T]], Awaitable[list[R]]], *, max_batch: int = 500):
        self._call = call
        self.max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self.calls = 0

    async def submit(self, item: T) -> R:
        """Queue `item` for the next batch and wait for its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the other submitters of this turn join
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            try:
                self.calls += 1
                results = await self._call([item for item, _ in batch])
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    rest, self._waiting = self._waiting, []
                    for _, future in rest:
                        future.cancel()
                    raise
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
