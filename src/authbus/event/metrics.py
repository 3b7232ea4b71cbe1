"""Delivery lag on `/metrics`: the figures of `GET /v1/channels/{channel}` as Prometheus gauges.

Prometheus collectors are synchronous and Redis is read asynchronously, so a background task
refreshes the gauges every `interval_s` (and `refresh()` does it on demand); a scrape reads
the last snapshot, never Redis.

    lag = DeliveryMetrics(app.state.metrics.registry, subscriptions, event_log)
    asyncio.create_task(lag.run(stop))      # in the lifespan
    lag.saw_channel("orders")               # after a publish: watch it from now on
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge

from authbus.event.log import EventLog
from authbus.event.subscriptions import Subscriptions

__all__ = ["DeliveryMetrics"]

log = logging.getLogger("authbus.event.metrics")

_LABELS = ["channel", "subscriber"]


class DeliveryMetrics:
    """Per (channel, subscriber) gauges: waiting, processing, dead, oldest waiting age,
    lagging, stale, recently seen instances, last heartbeat and trimmed dead letters."""

    def __init__(
        self,
        registry: CollectorRegistry,
        subscriptions: Subscriptions,
        event_log: EventLog,
        *,
        interval_s: float = 15.0,
        channel_scan_s: float = 300.0,
    ) -> None:
        self.subscriptions = subscriptions
        self.log = event_log
        self.interval_s = interval_s
        self.channel_scan_s = channel_scan_s
        self._channels: set[str] = set()
        self._last_scan = float("-inf")

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, _LABELS, registry=registry)

        self.waiting = gauge("authbus_event_subscriber_waiting", "Events waiting to be claimed")
        self.processing = gauge(
            "authbus_event_subscriber_processing", "Events claimed and not yet acknowledged"
        )
        self.dead = gauge("authbus_event_subscriber_dead", "Deliveries in the dead list")
        self.oldest_age = gauge(
            "authbus_event_subscriber_oldest_waiting_age_seconds",
            "Age of the oldest waiting event (0 when none waits)",
        )
        self.lagging = gauge(
            "authbus_event_subscriber_lagging",
            "1 while the subscriber overflowed its waiting limit and is fed from the log",
        )
        self.stale = gauge("authbus_event_subscriber_stale", "1 when no instance was seen recently")
        self.instances = gauge(
            "authbus_event_subscriber_instances", "Instances seen recently (not stale)"
        )
        self.last_seen = gauge(
            "authbus_event_subscriber_last_seen_timestamp_seconds",
            "The most recent heartbeat of any instance (Unix time; absent when never seen)",
        )
        self.dead_trimmed = gauge(
            "authbus_event_subscriber_dead_trimmed",
            "Dead letters trimmed from the bounded dead list so far (the events stay in the log)",
        )
        self._gauges = (
            self.waiting,
            self.processing,
            self.dead,
            self.oldest_age,
            self.lagging,
            self.stale,
            self.instances,
            self.last_seen,
            self.dead_trimmed,
        )
        self.updated = Gauge(
            "authbus_event_delivery_stats_updated_timestamp_seconds",
            "When the delivery gauges were last read from Redis (Unix time)",
            registry=registry,
        )

    def saw_channel(self, channel: str) -> None:
        """Watch `channel` from now on (called on publish, so new channels show at once)."""
        self._channels.add(channel)

    async def watched_channels(self) -> list[str]:
        """The channels seen on publish, plus, every `channel_scan_s`, those of the log."""
        if time.monotonic() - self._last_scan >= self.channel_scan_s:
            # Channels published by other instances: listing the log's channels scans the
            # table, so it is done rarely.
            self._channels.update(c.channel for c in await self.log.channels())
            self._last_scan = time.monotonic()
        return sorted(self._channels)

    async def refresh(self) -> None:
        """Read every watched channel's stats from Redis and replace the gauges' values.

        Raises when Redis or the log is unreachable; the previous values then stay.
        """
        snapshot = [await self.subscriptions.stats(c) for c in await self.watched_channels()]
        for g in self._gauges:
            g.clear()  # unsubscribed subscribers disappear
        for channel in snapshot:
            for s in channel.subscribers:
                labels = (channel.channel, s.name)
                self.waiting.labels(*labels).set(s.waiting)
                self.processing.labels(*labels).set(s.processing)
                self.dead.labels(*labels).set(s.dead)
                self.oldest_age.labels(*labels).set(s.oldest_waiting_age_s)
                self.lagging.labels(*labels).set(int(s.lagging_since_position is not None))
                self.stale.labels(*labels).set(int(s.stale))
                self.instances.labels(*labels).set(sum(1 for i in s.instances if not i["stale"]))
                self.dead_trimmed.labels(*labels).set(s.dead_trimmed)
                if s.instances:
                    newest = max(datetime.fromisoformat(i["last_seen_at"]) for i in s.instances)
                    self.last_seen.labels(*labels).set(newest.timestamp())
        self.updated.set(time.time())

    async def run(
        self,
        stop: asyncio.Event,
        upkeep: Callable[[list[str]], Awaitable[object]] | None = None,
    ) -> None:
        """Refresh every `interval_s` until `stop` is set; failures are logged, not raised.

        `upkeep` runs on the watched channels first (the dead-list bound), so the gauges
        show its result.
        """
        while not stop.is_set():
            try:
                if upkeep is not None:
                    await upkeep(await self.watched_channels())
                await self.refresh()
            except Exception as exc:
                log.warning("delivery metrics refresh failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval_s)
