"""`EventSubscriber`: subclass it, name a channel, implement `process_event()`, run it.

    class BillingOnOrders(EventSubscriber):
        channel = "orders"
        name = "billing"            # every instance named "billing" shares the work

        async def process_event(self, event: Event) -> None:
            ...                     # raise to have the event retried after a backoff

    await BillingOnOrders("redis://127.0.0.1:6379/0").run()      # until .stop()
    # or, from synchronous code:
    sub = BillingOnOrders(redis_url); sub.start(); ...; sub.stop()

Delivery is at-least-once per subscriber name, in publish order except across retries
(DESIGN.md "Events"). Handlers should be idempotent; set `idempotent = True` to skip events
this subscriber already processed (a Redis mark with a TTL, see `ProcessedGuard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Awaitable
from typing import ClassVar

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from authbus.common._envelope import Event, InvalidDelivery, parse_delivery, valid_name
from authbus.common._keys import DEFAULT_PREFIX, ChannelKeys
from authbus.common._scripts import AsyncRedis, DeliveryOps, connect

__all__ = ["Event", "EventSubscriber", "ProcessedGuard"]

log = logging.getLogger("authbus.subscriber")

# Errors after which the subscriber waits and reconnects (Redis restarted, network cut, a
# connection pool exhausted): every Redis error, so no failure turns into a busy loop.
_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class ProcessedGuard:
    """Remembers which events a subscriber processed, for idempotent handlers.

    The mark is written after the handler succeeded, never before: a crash in between
    means the event is processed again (at-least-once), not lost.

        guard = ProcessedGuard(redis, "ab", "orders", "billing")
        if not await guard.already_processed(event.id):
            ...                                 # handle it
            await guard.mark_processed(event.id)
    """

    def __init__(
        self, client: AsyncRedis, prefix: str, channel: str, subscriber: str, ttl_s: int = 7 * 86400
    ) -> None:
        self.client = client
        self.keys = ChannelKeys(prefix, channel)
        self.subscriber = subscriber
        self.ttl_s = ttl_s

    async def already_processed(self, event_id: str) -> bool:
        """True when `event_id` was marked within the last `ttl_s` seconds."""
        return bool(await self.client.exists(self.keys.processed(self.subscriber, event_id)))

    async def mark_processed(self, event_id: str) -> None:
        """Remember `event_id` for `ttl_s` seconds."""
        await self.client.set(self.keys.processed(self.subscriber, event_id), "1", ex=self.ttl_s)


class EventSubscriber:
    """Base class of a subscriber service's consumer of one channel.

    Subclasses set `channel` and `name` and implement `process_event` (async, or a plain
    function which then runs in a worker thread). Options:

    - `lease_ms`: how long a claimed event is reserved for this instance before another
      may retry it; renewed every third of it while the handler runs.
    - `renew_leases`: False turns renewal off, so a handler running longer than `lease_ms`
      counts as hung and its event is redelivered (the late ack then removes nothing).
    - `redis_url`: `redis://...`, or with `?cluster=true` for a Redis Cluster node.
    - `max_deliveries`: after that many failed deliveries the event goes to the dead list.
    - `concurrency`: events processed at once by this instance.
    - `poll_interval`: seconds between drains without notification (pub/sub drops messages
      while disconnected), heartbeats and reaper runs.
    """

    channel: ClassVar[str] = ""
    name: ClassVar[str] = ""
    idempotent: ClassVar[bool] = False

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ms: int = 30_000,
        renew_leases: bool = True,
        max_deliveries: int = 5,
        concurrency: int = 8,
        poll_interval: float = 5.0,
        retry_backoff_ms: int = 1000,
        max_retry_backoff_ms: int = 60_000,
        stop_timeout: float = 30.0,
        client: AsyncRedis | None = None,
    ) -> None:
        if not valid_name(self.channel) or not valid_name(self.name):
            raise ValueError(
                f"{type(self).__name__} needs valid `channel` and `name` class attributes"
            )
        if redis_url is None and client is None:
            raise ValueError("give redis_url or client")
        self.redis_url = redis_url
        self.prefix = prefix
        self.lease_ms = lease_ms
        self.renew_leases = renew_leases
        self.max_deliveries = max_deliveries
        self.concurrency = max(1, concurrency)
        self.poll_interval = poll_interval
        self.retry_backoff_ms = retry_backoff_ms
        self.max_retry_backoff_ms = max_retry_backoff_ms
        self.stop_timeout = stop_timeout
        self.instance_id = f"{self.name}-{uuid.uuid4().hex[:12]}"
        self.keys = ChannelKeys(prefix, self.channel)
        self.processed_count = 0
        self._given_client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._inflight: dict[asyncio.Task[None], str] = {}
        self._thread: threading.Thread | None = None
        self._running = threading.Event()
        # Set once registered and listening: from then on no published event is missed.
        self.ready = threading.Event()

    def process_event(self, event: Event) -> Awaitable[None] | None:
        """Handle one event; raise to have it retried. Override this."""
        raise NotImplementedError

    # ----------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Consume events until `stop()` is called; reconnects with backoff when Redis is away."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        client = self._given_client or connect(
            self.redis_url or "", decode_responses=True, socket_connect_timeout=2
        )
        ops = DeliveryOps(client, self.prefix, self.channel)
        self._running.set()
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    await self._session(client, ops)
                    backoff = 0.1
                except _REDIS_DOWN as exc:
                    log.warning(
                        "redis unavailable, reconnecting",
                        extra={"channel": self.channel, "error": repr(exc), "retry_in": backoff},
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), backoff)
                    backoff = min(backoff * 2, 5.0)
            await self._finish_inflight(ops)
            with contextlib.suppress(*_REDIS_DOWN):
                await client.zrem(self.keys.instances(self.name), self.instance_id)
        finally:
            self._running.clear()
            self.ready.clear()
            if self._given_client is None:
                await client.aclose()

    def stop(self) -> None:
        """Ask `run()` to finish: no new claims, in-flight handlers complete. Thread-safe."""
        self._stop_requested = True
        loop, stopping = self._loop, self._stopping
        if loop is None or stopping is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            stopping.set()
        else:
            loop.call_soon_threadsafe(stopping.set)

    def start(self, *, wait: float | None = 10.0) -> threading.Thread:
        """Run in a background thread with its own event loop (for synchronous programs).

        Waits up to `wait` seconds until the subscriber is registered and listening, so an
        event published right after `start()` returns is delivered (unless Redis is down).
        """
        self._stop_requested = False
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.run()), name=f"subscriber-{self.name}", daemon=True
        )
        self._thread.start()
        if wait:
            self.ready.wait(wait)
        return self._thread

    async def wait_ready(self, seconds: float = 10.0) -> bool:
        """Wait until registered and listening (see `ready`); False after `seconds`."""
        return await asyncio.to_thread(self.ready.wait, seconds)

    run_in_thread = start

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background thread started by `start()` to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    # ----------------------------------------------------------------- internals

    async def _session(self, client: AsyncRedis, ops: DeliveryOps) -> None:
        """One connected period: register, subscribe to notifications, drain until stopped."""
        assert self._stopping is not None and self._wake is not None
        await self._heartbeat(client, ops)  # registers this subscriber name
        pubsub = client.pubsub()
        # The session's loops also end on this flag, not on cancellation alone: redis-py's
        # cluster client can swallow a CancelledError raised inside a command.
        ended = asyncio.Event()
        try:
            await pubsub.subscribe(self.keys.notify)
            self._wake.set()  # drain at start: events may have arrived while we were away
            self.ready.set()
            tasks = [
                asyncio.create_task(self._listen(pubsub, ended)),
                asyncio.create_task(self._tick(client, ops, ended)),
                asyncio.create_task(self._claim_loop(ops, ended)),
                asyncio.create_task(self._renew_loop(ops, ended)),
                asyncio.create_task(self._stopping.wait()),
            ]
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            ended.set()
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            errors = [e for e in (t.exception() for t in done) if e is not None]
            if errors:
                raise errors[0]
        finally:
            ended.set()
            with contextlib.suppress(*_REDIS_DOWN):
                await pubsub.aclose()

    async def _listen(self, pubsub: PubSub, ended: asyncio.Event) -> None:
        assert self._wake is not None
        while not ended.is_set():
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                self._wake.set()

    async def _tick(self, client: AsyncRedis, ops: DeliveryOps, ended: asyncio.Event) -> None:
        """Heartbeat, reaper and the drain timer, every `poll_interval`."""
        assert self._wake is not None
        while not await _wait_flag(ended, self.poll_interval):
            await self._heartbeat(client, ops)
            self._wake.set()

    async def _heartbeat(self, client: AsyncRedis, ops: DeliveryOps) -> None:
        now_ms = int(time.time() * 1000)
        instances = self.keys.instances(self.name)
        # Re-register on every beat: a running service stays subscribed even if Redis lost
        # its data (restart without persistence, failover); to unsubscribe, stop it first.
        await client.sadd(self.keys.subscribers, self.name)
        await client.zadd(instances, {self.instance_id: now_ms})
        # Instances silent for a day are forgotten, so restarts do not grow the set forever.
        await client.zremrangebyscore(instances, "-inf", now_ms - 86_400_000)
        requeued, dead = await ops.reap(self.name, max_deliveries=self.max_deliveries)
        if dead:
            log.error(
                "deliveries moved to the dead list",
                extra={"channel": self.channel, "subscriber": self.name, "count": dead},
            )
        if requeued:
            log.info("expired deliveries requeued", extra={"count": requeued})

    async def _claim_loop(self, ops: DeliveryOps, ended: asyncio.Event) -> None:
        assert self._wake is not None and self._stopping is not None
        while not self._stopping.is_set() and not ended.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            # Clear before claiming so a notification arriving meanwhile triggers a re-check.
            self._wake.clear()
            items = await ops.claim(self.name, count=free, lease_ms=self.lease_ms)
            for item in items:
                task = asyncio.create_task(self._deliver(ops, item))
                self._inflight[task] = item
                task.add_done_callback(self._inflight.pop)
            if len(items) < free:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _renew_loop(self, ops: DeliveryOps, ended: asyncio.Event) -> None:
        """Renew the leases of every in-flight delivery, every third of the lease."""
        if not self.renew_leases:
            await ended.wait()
            return
        while not await _wait_flag(ended, self.lease_ms / 3000):
            items = list(self._inflight.values())
            held = await ops.renew(self.name, items, self.lease_ms)
            still = set(self._inflight.values())  # not those finished meanwhile
            lost = [item for item, ok in zip(items, held, strict=True) if not ok and item in still]
            if lost:
                log.warning("lease lost; another instance may redo these", extra={"n": len(lost)})

    async def _deliver(self, ops: DeliveryOps, item: str) -> None:
        try:
            delivery = parse_delivery(item)
        except InvalidDelivery as exc:
            # Poison item: leave it to the reaper, which dead-letters it after max deliveries.
            log.error("unreadable delivery", extra={"channel": self.channel, "error": str(exc)})
            with contextlib.suppress(*_REDIS_DOWN):
                await ops.retry_after(self.name, item, 0)
            return
        event = delivery.event
        guard = ProcessedGuard(ops.client, self.prefix, self.channel, self.name)
        try:
            if self.idempotent and await guard.already_processed(event.id):
                await ops.ack(self.name, item)
                return
            await self._call_handler(event)
            if self.idempotent:
                await guard.mark_processed(event.id)
        except Exception as exc:
            backoff = min(
                self.retry_backoff_ms * 2 ** (delivery.attempt - 1), self.max_retry_backoff_ms
            )
            log.warning(
                "event handler failed; will retry",
                extra={
                    "channel": self.channel,
                    "event_id": event.id,
                    "attempt": delivery.attempt,
                    "retry_in_ms": backoff,
                    "error": repr(exc),
                },
            )
            with contextlib.suppress(*_REDIS_DOWN):
                await ops.retry_after(self.name, item, backoff)
            return
        try:
            if not await ops.ack(self.name, item):
                log.warning("late ack: the delivery was requeued meanwhile", extra={"id": event.id})
            self.processed_count += 1
        except _REDIS_DOWN as exc:
            # The lease expires and the event is delivered again: at-least-once.
            log.warning("ack failed", extra={"event_id": event.id, "error": repr(exc)})

    async def _call_handler(self, event: Event) -> None:
        if inspect.iscoroutinefunction(self.process_event):
            await self.process_event(event)
            return
        result = await asyncio.to_thread(self.process_event, event)
        if inspect.isawaitable(result):
            await result

    async def _finish_inflight(self, ops: DeliveryOps) -> None:
        if not self._inflight:
            return
        # Handlers finishing during shutdown keep their leases.
        finished = asyncio.Event()
        renewing = asyncio.create_task(self._renew_loop(ops, finished))
        _done, pending = await asyncio.wait(list(self._inflight), timeout=self.stop_timeout)
        for task in pending:
            # Left in processing: the reaper of another instance requeues it after the lease.
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        finished.set()
        renewing.cancel()
        await asyncio.gather(renewing, return_exceptions=True)


async def _wait_flag(flag: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `flag`; True when it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(flag.wait(), seconds)
    return flag.is_set()
