"""The processed-id guard: remember which events a subscriber finished, for idempotency."""

from __future__ import annotations

from authbus.common._keys import ChannelKeys
from authbus.common._scripts import AsyncRedis

__all__ = ["ProcessedGuard"]


class ProcessedGuard:
    """Remembers which events a subscriber processed, for idempotent handlers.

    The mark is written after the handler succeeded, never before: a crash in between
    means the event is processed again (at-least-once), not lost. `EventSubscriber` uses
    it when the subclass sets `idempotent = True`; handlers may also use it directly.

    Example:
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
