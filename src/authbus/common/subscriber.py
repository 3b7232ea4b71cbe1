"""`EventSubscriber`: subclass it, name a channel, implement `process_event()`, run it.

    class BillingOnOrders(EventSubscriber):
        channel = "orders"
        name = "billing"            # every instance named "billing" shares the work

        async def process_event(self, event: Event) -> None:
            ...                     # raise to have the event retried after a backoff

    BillingOnOrders("redis://127.0.0.1:6379/0").run()   # blocks; stops on SIGINT/SIGTERM
    # in a program with its own event loop:
    await BillingOnOrders(redis_url).serve()            # until .stop()
    # in a synchronous program, a background thread:
    sub = BillingOnOrders(redis_url); sub.start(); ...; sub.stop(); sub.join()

Delivery is at-least-once per subscriber name, in publish order except across retries
(DESIGN.md "Events"). Handlers should be idempotent; set `idempotent = True` to skip events
this subscriber already processed (a Redis mark with a TTL, see `ProcessedGuard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from functools import partial
from typing import Any, ClassVar

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from authbus.common._backoff import Backoff, exponential
from authbus.common._batching import Coalescer
from authbus.common._envelope import (
    NAME_PATTERN,
    Delivery,
    Event,
    InvalidDelivery,
    parse_delivery,
    valid_name,
)
from authbus.common._keys import DEFAULT_PREFIX, ChannelKeys
from authbus.common._processed import ProcessedGuard
from authbus.common._scripts import AsyncRedis, DeliveryOps, connect

__all__ = ["Event", "EventSubscriber", "ProcessedGuard"]

log = logging.getLogger("authbus.subscriber")

# Errors after which the subscriber waits and reconnects (Redis restarted, network cut, a
# connection pool exhausted): every Redis error, so no failure turns into a busy loop.
_REDIS_DOWN = (RedisError, OSError, TimeoutError)
# A retry's backoff ending wakes the reaper early, but reaper runs stay this far apart.
_MIN_REAP_GAP_S = 0.05


class EventSubscriber:
    """Base class of a service's consumer of one channel.

    Subclasses implement `process_event` (async, or a plain function which then runs in a
    worker thread) and name the channel and the subscriber, as class attributes or as
    `channel=` / `name=` arguments. Options:

    - `lease_ms`: how long a claimed event is reserved for this instance before another
      may retry it; renewed every third of it while the handler runs.
    - `renew_leases`: False turns renewal off, so a handler running longer than `lease_ms`
      counts as hung and its event is redelivered (the late ack then removes nothing).
    - `redis_url`: `redis://...`, or with `?cluster=true` for a Redis Cluster node.
    - `max_deliveries`: after that many failed deliveries the event goes to the dead list.
    - `retry_backoff_ms`, `max_retry_backoff_ms`: a failed or expired delivery is retried
      after `retry_backoff_ms * 2**(attempt-1)`, at most `max_retry_backoff_ms`.
    - `concurrency`: events processed at once by this instance.
    - `poll_interval`: seconds between drains without notification (pub/sub drops messages
      while disconnected), heartbeats and reaper runs.
    - `reconnect_backoff_s`, `max_reconnect_backoff_s`: when Redis is away, reconnect after
      a full-jitter delay, doubling from the first up to the second.
    - `redis_timeout_s`: a Redis command unanswered for this long counts as a dead
      connection (reconnect), so a silently dropped connection cannot hang the subscriber.
    - `stop_timeout`: how long `stop()` lets in-flight handlers finish.

    Example:
        class BillingOnOrders(EventSubscriber):
            channel = "orders"
            name = "billing"

            async def process_event(self, event: Event) -> None:
                await charge(event.data["order_id"])

        BillingOnOrders("redis://127.0.0.1:6379/0", concurrency=4, max_deliveries=5).run()
    """

    channel: str = ""
    name: str = ""
    idempotent: ClassVar[bool] = False

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        channel: str | None = None,
        name: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        lease_ms: int = 30_000,
        renew_leases: bool = True,
        max_deliveries: int = 5,
        concurrency: int = 8,
        poll_interval: float = 5.0,
        retry_backoff_ms: int = 1000,
        max_retry_backoff_ms: int = 60_000,
        reconnect_backoff_s: float = 0.1,
        max_reconnect_backoff_s: float = 10.0,
        redis_timeout_s: float = 10.0,
        stop_timeout: float = 30.0,
        client: AsyncRedis | None = None,
    ) -> None:
        if channel is not None:
            self.channel = channel
        if name is not None:
            self.name = name
        for what, value in (("channel", self.channel), ("name", self.name)):
            if not isinstance(value, str) or not valid_name(value):
                raise ValueError(
                    f"{type(self).__name__} needs a valid `{what}` (a class attribute or "
                    f"{what}=...), matching {NAME_PATTERN}; got {value!r}"
                )
        if redis_url is None and client is None:
            raise ValueError("give redis_url or client")
        if lease_ms <= 0 or max_deliveries < 1 or poll_interval <= 0 or redis_timeout_s <= 0:
            raise ValueError(
                "lease_ms, poll_interval and redis_timeout_s must be positive, "
                "max_deliveries at least 1"
            )
        self.redis_url = redis_url
        self.prefix = prefix
        self.lease_ms = lease_ms
        self.renew_leases = renew_leases
        self.max_deliveries = max_deliveries
        self.concurrency = max(1, concurrency)
        self.poll_interval = poll_interval
        self.retry_backoff_ms = retry_backoff_ms
        self.max_retry_backoff_ms = max_retry_backoff_ms
        self.reconnect_backoff_s = reconnect_backoff_s
        self.max_reconnect_backoff_s = max_reconnect_backoff_s
        self.redis_timeout_s = redis_timeout_s
        self.stop_timeout = stop_timeout
        self.instance_id = f"{self.name}-{uuid.uuid4().hex[:12]}"
        self.keys = ChannelKeys(prefix, self.channel)
        self.processed_count = 0
        self._given_client = client
        self._reconnect = Backoff(reconnect_backoff_s, max_reconnect_backoff_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._abandon: asyncio.Event | None = None
        self._stop_requested = False
        self._wake: asyncio.Event | None = None
        self._reap_soon: asyncio.Event | None = None
        self._inflight: dict[asyncio.Task[None], str] = {}
        # Deliveries whose handler is running: only these get their leases renewed.
        self._held: Counter[str] = Counter()
        self._renewal: asyncio.Future[list[bool]] | None = None
        self._acker: tuple[DeliveryOps, Coalescer[str, bool]] | None = None
        self._thread: threading.Thread | None = None
        self._thread_error: BaseException | None = None
        self._running = threading.Event()
        # Set once registered and listening: from then on no published event is missed.
        self.ready = threading.Event()

    def process_event(self, event: Event) -> Awaitable[None] | None:
        """Handle one event; raise to have it retried. Override this.

        Example:
            async def process_event(self, event: Event) -> None:
                if event.type == "order.placed":
                    await reserve_stock(event.data["order_id"])
        """
        raise NotImplementedError

    # ----------------------------------------------------------------- lifecycle

    def run(self) -> None:
        """Consume events until SIGINT or SIGTERM (or `stop()`); blocks the calling thread.

        The first signal stops claiming and lets the in-flight handlers finish (up to
        `stop_timeout`; what is left is redelivered after its lease); a second one stops
        without waiting. Signals are handled when called from the main thread. In code that
        already runs an event loop, `await serve()` instead.

        Example:
            if __name__ == "__main__":
                BillingOnOrders(os.environ["REDIS_URL"]).run()
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("run() blocks; inside an event loop use `await subscriber.serve()`")
        self._stop_requested = False
        asyncio.run(self._serve_until_signalled())

    async def serve(self) -> None:
        """Consume events until `stop()` is called; reconnects with backoff when Redis is away.

        The coroutine behind `run()` and `start()`, for programs with their own event loop
        (a FastAPI lifespan, say); it handles no signals.

        Example:
            task = asyncio.create_task(subscriber.serve())
            ...
            subscriber.stop()
            await task
        """
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._abandon = asyncio.Event()
        self._wake = asyncio.Event()
        self._reap_soon = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        client = self._given_client or connect(
            self.redis_url or "",
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=self.redis_timeout_s,
            socket_keepalive=True,
            health_check_interval=30,
        )
        ops = DeliveryOps(client, self.prefix, self.channel)
        self._running.set()
        try:
            while not self._stopping.is_set():
                try:
                    await self._session(client, ops)
                except _REDIS_DOWN as exc:
                    delay = self._reconnect.next_delay()
                    log.warning(
                        "redis unavailable, reconnecting",
                        extra={
                            "channel": self.channel,
                            "subscriber": self.name,
                            "error": repr(exc),
                            "retry_in_s": round(delay, 3),
                        },
                    )
                    await _wait_flag(self._stopping, delay)
            await self._finish_inflight(ops)
            with contextlib.suppress(*_REDIS_DOWN):
                await client.zrem(self.keys.instances(self.name), self.instance_id)
        finally:
            self._running.clear()
            self.ready.clear()
            if self._given_client is None:
                await client.aclose()

    def stop(self) -> None:
        """Ask the subscriber to finish: no new claims, in-flight handlers complete.

        Thread-safe, and safe to call from a signal handler or before it started.

        Example:
            subscriber.stop(); subscriber.join(timeout=30)
        """
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
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)

    def start(self, *, wait: float | None = 10.0) -> threading.Thread:
        """Run in a background thread with its own event loop (for synchronous programs).

        Waits up to `wait` seconds until the subscriber is registered and listening, so an
        event published right after `start()` returns is delivered. When it is not ready in
        time (Redis unreachable), the thread is stopped and `TimeoutError` raised; an error
        that ended the thread is raised as `RuntimeError`. `wait=None` returns at once and
        leaves the subscriber connecting in the background.

        Example:
            subscriber.start()
            try:
                serve_requests()
            finally:
                subscriber.stop(); subscriber.join(30)
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("this subscriber is already running in a thread")
        self._stop_requested = False
        self._thread_error = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"subscriber-{self.name}", daemon=True
        )
        self._thread.start()
        if wait is None:
            return self._thread
        deadline = time.monotonic() + wait
        while not self.ready.wait(0.05):
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"subscriber {self.name!r} on channel {self.channel!r} ended before it "
                    "was ready"
                ) from self._thread_error
            if time.monotonic() >= deadline:
                self.stop()
                self._thread.join(5 + self.reconnect_backoff_s)
                raise TimeoutError(
                    f"subscriber {self.name!r} on channel {self.channel!r} was not ready "
                    f"within {wait} s (is Redis reachable?); it was stopped"
                )
        return self._thread

    async def wait_ready(self, seconds: float = 10.0) -> bool:
        """Wait until registered and listening (see `ready`); False after `seconds`.

        Example:
            assert await subscriber.wait_ready(5)
        """
        return await asyncio.to_thread(self.ready.wait, seconds)

    run_in_thread = start

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background thread started by `start()` to end.

        Example:
            subscriber.stop(); subscriber.join(30)
        """
        if self._thread is not None:
            self._thread.join(timeout)

    # ----------------------------------------------------------------- signals & thread

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve())
        except BaseException as exc:
            self._thread_error = exc
            log.exception(
                "subscriber thread ended with an error",
                extra={"channel": self.channel, "subscriber": self.name},
            )

    async def _serve_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        restore: list[tuple[int, Any]] = []
        # Signals reach the main thread only; elsewhere `stop()` is the way to end run().
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT.value, signal.SIGTERM.value):
                restore.append((sig, signal.getsignal(sig)))
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                except NotImplementedError:  # event loops without it (Windows)
                    signal.signal(
                        sig, lambda s, _frame: loop.call_soon_threadsafe(self._on_signal, s)
                    )
        try:
            await self.serve()
        finally:
            for sig, previous in restore:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.remove_signal_handler(sig)
                if previous is not None:
                    signal.signal(sig, previous)

    def _on_signal(self, sig: int) -> None:
        name = signal.Signals(sig).name
        context = {"channel": self.channel, "subscriber": self.name, "signal": name}
        if not self._stop_requested:
            log.info(
                "stopping: finishing the events in flight",
                extra={**context, "in_flight": len(self._inflight)},
            )
            self.stop()
        elif self._abandon is not None and not self._abandon.is_set():
            log.warning(
                "second signal: not waiting for the events in flight (redelivered later)",
                extra=context,
            )
            self._abandon.set()

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
            self._reconnect.reset()
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
            # Subscribe confirmations wake too: redis-py reconnects a dropped pub/sub connection
            # and subscribes again by itself, and the notifications sent in between are lost;
            # the new confirmation is the only sign of it, so it triggers a drain.
            message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            if message is not None:
                self._wake.set()

    async def _tick(self, client: AsyncRedis, ops: DeliveryOps, ended: asyncio.Event) -> None:
        """Heartbeat, reaper and the drain timer: every `poll_interval`, and soon after a
        retry's backoff ends."""
        assert self._wake is not None and self._reap_soon is not None
        while not await _wait_either(ended, self._reap_soon, self.poll_interval):
            self._reap_soon.clear()
            await self._heartbeat(client, ops)
            self._wake.set()
            if await _wait_flag(ended, _MIN_REAP_GAP_S):
                return

    async def _heartbeat(self, client: AsyncRedis, ops: DeliveryOps) -> None:
        now_ms = int(time.time() * 1000)
        instances = self.keys.instances(self.name)
        # Re-register on every beat: a running service stays subscribed even if Redis lost
        # its data (restart without persistence, failover); to unsubscribe, stop it first.
        await client.sadd(self.keys.subscribers, self.name)
        await client.zadd(instances, {self.instance_id: now_ms})
        # Instances silent for a day are forgotten, so restarts do not grow the set forever.
        await client.zremrangebyscore(instances, "-inf", now_ms - 86_400_000)
        reaped = await ops.reap(
            self.name,
            max_deliveries=self.max_deliveries,
            backoff_ms=self.retry_backoff_ms,
            max_backoff_ms=self.max_retry_backoff_ms,
        )
        if reaped.dead:
            log.error(
                "deliveries moved to the dead list",
                extra={
                    "channel": self.channel,
                    "subscriber": self.name,
                    "count": len(reaped.dead),
                    "event_ids": [i or "<unreadable>" for i in reaped.dead[:100]],
                },
            )
        if reaped.requeued:
            log.info(
                "deliveries requeued for another attempt",
                extra={"channel": self.channel, "subscriber": self.name, "count": reaped.requeued},
            )

    async def _claim_loop(self, ops: DeliveryOps, ended: asyncio.Event) -> None:
        assert self._wake is not None and self._stopping is not None
        while not self._stopping.is_set() and not ended.is_set():
            free = self.concurrency - len(self._inflight)
            # Claim in batches: with handlers running, wait until half the slots are free.
            if self._inflight and free < max(1, self.concurrency // 2):
                await asyncio.wait(list(self._inflight), return_when=asyncio.FIRST_COMPLETED)
                continue
            # Clear before claiming so a notification arriving meanwhile triggers a re-check.
            self._wake.clear()
            items = await ops.claim(self.name, count=free, lease_ms=self.lease_ms)
            for item in items:
                self._held[item] += 1
                task = asyncio.create_task(self._deliver(ops, item))
                self._inflight[task] = item
                task.add_done_callback(self._inflight.pop)
            if len(items) < free:
                await _wait_flag(self._wake, self.poll_interval)

    async def _renew_loop(self, ops: DeliveryOps, ended: asyncio.Event) -> None:
        """Renew the leases of the deliveries whose handler runs, every third of the lease."""
        if not self.renew_leases:
            await ended.wait()
            return
        while not await _wait_flag(ended, self.lease_ms / 3000):
            items = list(self._held)
            if not items:
                continue
            # Published before the first await: a handler finishing from now on waits for
            # this call before its ack or retry, so a renewal never lands after a retry
            # and stretches its backoff to a whole lease.
            call = asyncio.ensure_future(ops.renew(self.name, items, self.lease_ms))
            self._renewal = call
            try:
                held = await asyncio.shield(call)
            finally:
                if self._renewal is call:
                    self._renewal = None
            lost = [i for i, ok in zip(items, held, strict=True) if not ok and i in self._held]
            if lost:
                log.warning(
                    "lease lost; another instance may redo these",
                    extra={"channel": self.channel, "subscriber": self.name, "n": len(lost)},
                )

    def _stop_renewing(self, item: str) -> None:
        self._held[item] -= 1
        if self._held[item] <= 0:
            del self._held[item]

    async def _settled_renewal(self) -> None:
        """Wait for a renewal call that may include a delivery this task stopped renewing."""
        pending = self._renewal
        if pending is not None and not pending.done():
            await asyncio.wait([pending])

    async def _deliver(self, ops: DeliveryOps, item: str) -> None:
        try:
            delivery = parse_delivery(item)
        except InvalidDelivery as exc:
            self._stop_renewing(item)
            # Poison item: released at once, the reaper moves it to the dead list.
            log.error(
                "unreadable delivery",
                extra={"channel": self.channel, "subscriber": self.name, "error": str(exc)},
            )
            await self._settled_renewal()
            with contextlib.suppress(*_REDIS_DOWN):
                await ops.retry_after(self.name, item, 0)
            return
        event = delivery.event
        guard = ProcessedGuard(ops.client, self.prefix, self.channel, self.name)
        failure: Exception | None = None
        duplicate = False
        try:
            duplicate = self.idempotent and await guard.already_processed(event.id)
            if not duplicate:
                await self._call_handler(event)
                if self.idempotent:
                    await guard.mark_processed(event.id)
        except Exception as exc:
            failure = exc
        finally:
            self._stop_renewing(item)  # also when cancelled: the lease then runs out
        await self._settled_renewal()
        if failure is not None:
            await self._retry(ops, delivery, failure)
            return
        context = {
            "channel": self.channel,
            "subscriber": self.name,
            "event_id": event.id,
            "attempt": delivery.attempt,
        }
        try:
            # Acks of handlers finishing together go out in one script call.
            if not await self._acks(ops).submit(item):
                log.warning("late ack: the delivery was requeued meanwhile", extra=context)
            if not duplicate:
                self.processed_count += 1
        except _REDIS_DOWN as exc:
            # The lease expires and the event is delivered again: at-least-once.
            log.warning(
                "ack failed; the event will be redelivered", extra={**context, "error": repr(exc)}
            )

    def _acks(self, ops: DeliveryOps) -> Coalescer[str, bool]:
        if self._acker is None or self._acker[0] is not ops:
            self._acker = (ops, Coalescer(partial(ops.ack_many, self.name)))
        return self._acker[1]

    async def _retry(self, ops: DeliveryOps, delivery: Delivery, failure: Exception) -> None:
        """Release a failed delivery; the reaper requeues it after its attempt's backoff."""
        last = delivery.attempt >= self.max_deliveries
        backoff_ms = exponential(delivery.attempt, self.retry_backoff_ms, self.max_retry_backoff_ms)
        log.log(
            logging.ERROR if last else logging.WARNING,
            "event handler failed; moving it to the dead list"
            if last
            else "event handler failed; will retry",
            exc_info=failure,
            extra={
                "channel": self.channel,
                "subscriber": self.name,
                "event_id": delivery.event.id,
                "attempt": delivery.attempt,
                "max_deliveries": self.max_deliveries,
                "retry_in_ms": None if last else int(backoff_ms),
                "error": repr(failure),
            },
        )
        with contextlib.suppress(*_REDIS_DOWN):
            await ops.retry_after(self.name, delivery.raw, 0)
        if self._loop is not None and self._reap_soon is not None:
            self._loop.call_later((0 if last else backoff_ms) / 1000, self._reap_soon.set)

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
        assert self._abandon is not None
        loop = asyncio.get_running_loop()
        # Handlers finishing during shutdown keep their leases.
        finished = asyncio.Event()
        renewing = asyncio.create_task(self._renew_loop(ops, finished))
        abandon = asyncio.create_task(self._abandon.wait())
        deadline = loop.time() + self.stop_timeout
        pending: set[asyncio.Future[Any]] = set(self._inflight)
        while pending and not abandon.done() and loop.time() < deadline:
            done, _ = await asyncio.wait(
                [*pending, abandon],
                timeout=deadline - loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            pending -= done
        for task in pending:
            # Left in processing: the reaper of another instance requeues it after the lease.
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        abandon.cancel()
        finished.set()
        renewing.cancel()
        await asyncio.gather(renewing, abandon, return_exceptions=True)


async def _wait_flag(flag: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for `flag`; True when it is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(flag.wait(), seconds)
    return flag.is_set()


async def _wait_either(ended: asyncio.Event, soon: asyncio.Event, seconds: float) -> bool:
    """Wait up to `seconds` for either flag; True when `ended` is set."""
    if not soon.is_set():
        waiters = [asyncio.create_task(ended.wait()), asyncio.create_task(soon.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
    return ended.is_set()
