"""A subscriber process whose handler waits, mid-way, until the test lets it finish.

python -m tests.integration.common.signal_target <redis_url> <prefix> <gate_dir>

For each event it prints `started <id>`, waits until the file `<gate_dir>/<id>` exists,
then prints `finished <id>`. `run()` handles SIGINT and SIGTERM itself; the subscriber's
log lines go to stderr, so the test can see when a signal was taken.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

from authbus.common._envelope import Event
from authbus.common.subscriber import EventSubscriber


class WaitsForGate(EventSubscriber):
    channel = "signals"
    name = "worker"

    def __init__(self, *args: object, gate_dir: Path, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.gate_dir = gate_dir

    async def process_event(self, event: Event) -> None:
        print("started", event.id, flush=True)
        while not (self.gate_dir / event.id).exists():
            await asyncio.sleep(0.02)
        print("finished", event.id, flush=True)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    url, prefix, gate_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    WaitsForGate(
        url,
        prefix=prefix,
        gate_dir=gate_dir,
        concurrency=1,  # one event in flight; the others stay waiting
        lease_ms=3000,  # renewed while the handler runs; runs out soon once abandoned
        poll_interval=0.1,
        stop_timeout=600,  # the first signal waits for the handler, however long it takes
    ).run()
    print("exited", flush=True)
