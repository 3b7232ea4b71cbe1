"""`EventSubscriber.run()` and signals, in a real process against real Redis.

The first SIGTERM or SIGINT stops claiming and lets the event in flight finish: it is
acknowledged, and the process exits 0. A second signal stops without waiting: the event in
flight stays claimed under its lease, and another instance gets it once the lease runs out.

The subscriber runs `tests/integration/common/signal_target.py`, whose handler waits,
mid-way, for a gate file the test creates; the test knows a signal was taken when the
subscriber logs it (on the child's stderr).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from authbus.common._envelope import Event, format_delivery, parse_delivery
from authbus.common._keys import ChannelKeys
from authbus.common._scripts import DeliveryOps
from authbus.common.subscriber import EventSubscriber
from tests.integration.event.helpers import eventually

ROOT = Path(__file__).resolve().parents[3]
CHANNEL, NAME = "signals", "worker"
FIRST_SIGNAL_LOG = "stopping: finishing the events in flight"
SECOND_SIGNAL_LOG = "second signal: not waiting for the events in flight"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def publish(client: aioredis.Redis, prefix: str, *ids: str) -> None:
    """Fan events out to the subscriber `worker` (registered first, as a subscribe would)."""
    ops = DeliveryOps(client, prefix, CHANNEL)
    await client.sadd(ops.keys.subscribers, NAME)
    batch = [
        format_delivery(Event(id=i, position=n, channel=CHANNEL, type="t"))
        for n, i in enumerate(ids, start=1)
    ]
    await ops.fanout(batch, first_position=1)


class Target:
    """The subscriber process, with what it printed (stdout) and logged (stderr)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.out: list[str] = []
        self.err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._read(proc.stdout, self.out)),
            asyncio.create_task(self._read(proc.stderr, self.err)),
        ]

    @staticmethod
    async def _read(stream: asyncio.StreamReader, into: list[str]) -> None:
        while line := await stream.readline():
            into.append(line.decode().rstrip("\n"))

    async def printed(self, line: str) -> None:
        await self._seen(lambda: line in self.out)

    async def logged(self, text: str) -> None:
        await self._seen(lambda: any(text in line for line in self.err))

    async def _seen(self, found: Callable[[], bool]) -> None:
        async def check() -> bool:
            if not found() and self.proc.returncode is not None:
                raise AssertionError(f"the subscriber exited: {self.out} {self.err}")
            return found()

        await eventually(check, timeout=60)

    async def exit_code(self) -> int:
        code = await asyncio.wait_for(self.proc.wait(), 60)
        await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()  # the process this test started, by its pid
            await self.proc.wait()
        await asyncio.gather(*self._readers)


@pytest.fixture
async def target(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> AsyncIterator[Callable[[], Any]]:
    started: list[Target] = []

    async def start() -> Target:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.common.signal_target",
            redis_url,
            redis_prefix,
            str(tmp_path),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        started.append(Target(proc))
        return started[-1]

    yield start
    for t in started:
        await t.kill()


async def lists(client: aioredis.Redis, prefix: str) -> dict[str, Any]:
    keys = ChannelKeys(prefix, CHANNEL)
    return {
        "waiting": await client.lrange(keys.published(NAME), 0, -1),
        "processing": await client.lrange(keys.processing(NAME), 0, -1),
        "leases": await client.zcard(keys.leases(NAME)),
        "dead": await client.llen(keys.dead(NAME)),
        "instances": await client.zcard(keys.instances(NAME)),
    }


class Successor(EventSubscriber):
    """Another instance of `worker`, in this process, recording what it handles."""

    channel = CHANNEL
    name = NAME

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[str] = []

    async def process_event(self, event: Event) -> None:
        self.seen.append(event.id)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_a_signal_lets_the_event_in_flight_finish_then_exits_zero(
    target: Callable[[], Any],
    redis: aioredis.Redis,
    redis_prefix: str,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    await publish(redis, redis_prefix, "e-1", "e-2")
    sub: Target = await target()
    await sub.printed("started e-1")

    sub.proc.send_signal(sig)
    await sub.logged(FIRST_SIGNAL_LOG)
    # The handler is still mid-way: the signal did not cut it short.
    assert sub.proc.returncode is None and "finished e-1" not in sub.out
    (tmp_path / "e-1").touch()  # let it finish

    assert await sub.exit_code() == 0
    assert sub.out == ["started e-1", "finished e-1", "exited"]  # e-2 was not claimed
    after = await lists(redis, redis_prefix)
    # e-1 acknowledged: neither in flight nor under a lease, so never redelivered.
    assert after["processing"] == [] and after["leases"] == 0 and after["dead"] == 0
    assert [parse_delivery(i).event.id for i in after["waiting"]] == ["e-2"]
    assert after["instances"] == 0  # the instance deregistered on its way out


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (signal.SIGTERM, signal.SIGTERM),
        (signal.SIGINT, signal.SIGINT),
        (signal.SIGTERM, signal.SIGINT),
    ],
    ids=["TERM-TERM", "INT-INT", "TERM-INT"],
)
async def test_a_second_signal_exits_without_waiting_and_the_event_is_redelivered(
    target: Callable[[], Any],
    redis: aioredis.Redis,
    redis_url: str,
    redis_prefix: str,
    first: signal.Signals,
    second: signal.Signals,
) -> None:
    await publish(redis, redis_prefix, "e-1", "e-2")
    sub: Target = await target()
    await sub.printed("started e-1")
    sub.proc.send_signal(first)
    await sub.logged(FIRST_SIGNAL_LOG)

    sub.proc.send_signal(second)

    # The gate never opens and stop_timeout is 600 s: only abandoning ends the process.
    assert await sub.exit_code() == 0
    assert any(SECOND_SIGNAL_LOG in line for line in sub.err)
    assert "finished e-1" not in sub.out
    left = await lists(redis, redis_prefix)
    [held] = left["processing"]
    assert parse_delivery(held).event.id == "e-1" and left["leases"] == 1  # left to its lease
    assert [parse_delivery(i).event.id for i in left["waiting"]] == ["e-2"]

    successor = Successor(
        redis_url, prefix=redis_prefix, poll_interval=0.1, retry_backoff_ms=20, lease_ms=2000
    )
    task = asyncio.create_task(successor.serve())
    try:
        await eventually(lambda: _true(sorted(successor.seen) == ["e-1", "e-2"]), timeout=60)
        await eventually(lambda: _drained(redis, redis_prefix), timeout=60)
    finally:
        successor.stop()
        await asyncio.wait_for(task, 60)

    assert sorted(successor.seen) == ["e-1", "e-2"]  # e-1 redelivered once, nothing lost
    assert (await lists(redis, redis_prefix))["dead"] == 0


async def _true(value: bool) -> bool:
    return value


async def _drained(client: aioredis.Redis, prefix: str) -> bool:
    now = await lists(client, prefix)
    return bool(now["waiting"] == [] and now["processing"] == [] and now["leases"] == 0)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
async def test_an_idle_subscriber_exits_zero_on_the_first_signal(
    target: Callable[[], Any], redis: aioredis.Redis, redis_prefix: str, sig: signal.Signals
) -> None:
    sub: Target = await target()
    keys = ChannelKeys(redis_prefix, CHANNEL)
    # Registered (its heartbeat) means run() is serving, with its signal handlers installed.
    await eventually(lambda: redis.zcard(keys.instances(NAME)), timeout=60)

    sub.proc.send_signal(sig)

    assert await sub.exit_code() == 0
    assert sub.out == ["exited"]
    assert (await lists(redis, redis_prefix))["instances"] == 0
