"""A subscriber process that claims an event and hangs in its handler (to be SIGKILLed).

python -m tests.integration.event.kill_target <redis_url> <prefix>

`run()` blocks until a signal (it runs its own event loop); a SIGKILL is not one it can
handle, so the claimed event stays in processing for another instance to take over.
"""

from __future__ import annotations

import asyncio
import sys

from authbus.common._envelope import Event
from authbus.common.subscriber import EventSubscriber


class Hangs(EventSubscriber):
    channel = "orders"
    name = "billing"

    async def process_event(self, event: Event) -> None:
        print("claimed", event.id, flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    url, prefix = sys.argv[1], sys.argv[2]
    Hangs(url, prefix=prefix, lease_ms=500, poll_interval=0.1).run()
