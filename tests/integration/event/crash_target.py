"""A subscriber process whose handler kills its own process on a "crash" event.

python -m tests.integration.event.crash_target <redis_url> <prefix> <max_deliveries>

Prints `processed <id>` for each other event and `crash <id>` just before dying (SIGKILL, so
nothing is acknowledged, released or cleaned up: the crash looks like a power cut).
"""

from __future__ import annotations

import os
import signal
import sys

from authbus.common._envelope import Event
from authbus.common.subscriber import EventSubscriber


class CrashesOnPoison(EventSubscriber):
    channel = "orders"
    name = "billing"

    async def process_event(self, event: Event) -> None:
        if event.data.get("crash"):
            print("crash", event.id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        print("processed", event.id, flush=True)


if __name__ == "__main__":
    url, prefix, max_deliveries = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sub = CrashesOnPoison(
        url,
        prefix=prefix,
        lease_ms=300,
        max_deliveries=max_deliveries,
        concurrency=1,  # only the poison event is in flight when it crashes
        poll_interval=0.1,
    )
    sub.run()  # blocks (its own event loop); `serve()` is the coroutine
