"""Coalescer: submits of one event-loop turn become one call, each with its own result."""

from __future__ import annotations

import asyncio

import pytest

from authbus.common._batching import Coalescer


async def test_submits_of_one_turn_are_one_call_with_results_in_order() -> None:
    calls: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        calls.append(items)
        await asyncio.sleep(0.01)
        return [2 * i for i in items]

    batcher = Coalescer(double)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    later = await batcher.submit(10)

    assert results == [0, 2, 4, 6, 8] and later == 20
    assert calls == [[0, 1, 2, 3, 4], [10]]


async def test_a_batch_is_at_most_max_batch_items() -> None:
    sizes: list[int] = []

    async def count(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return items

    batcher = Coalescer(count, max_batch=3)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(7))) == list(range(7))
    assert sizes == [3, 3, 1]


async def test_a_failing_call_fails_every_submit_of_its_batch() -> None:
    async def broken(items: list[int]) -> list[int]:
        raise ConnectionError("redis is away")

    batcher = Coalescer(broken)
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)

    async def working(items: list[int]) -> list[int]:
        return items

    batcher._call = working  # the next batch is a new call
    assert await batcher.submit(3) == 3


async def test_a_cancelled_submitter_does_not_break_the_batch() -> None:
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int]:
        await release.wait()
        return items

    batcher = Coalescer(slow)
    gone = asyncio.create_task(batcher.submit(1))
    kept = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    release.set()

    assert await kept == 2
    with pytest.raises(asyncio.CancelledError):
        await gone
