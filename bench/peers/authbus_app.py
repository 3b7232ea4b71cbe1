"""authbus: REST publish (single or batch) -> event log -> fan-out -> 2 `EventSubscriber`s.

python authbus_app.py consume --redis URL
python authbus_app.py produce --redis URL --event-url URL --token-url URL --secret S
    [--batch-endpoint]
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import httpx
from bench.peers._common import PAD, record

from authbus.common.subscriber import Event, EventSubscriber

CHANNEL, NAME = "bench", "bench-sub"


class Recorder(EventSubscriber):
    channel = CHANNEL
    name = NAME

    async def process_event(self, event: Event) -> None:
        record(event.data["id"], event.data["ts"])


async def consume(url: str) -> None:
    sub = Recorder(url)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, sub.stop)
    await sub.serve()


def _arg(name: str, default: str | None = None) -> str:
    if name in sys.argv:
        return sys.argv[sys.argv.index(name) + 1]
    if default is None:
        raise SystemExit(f"missing {name}")
    return default


async def produce() -> None:
    mode, n, rate = _arg("--mode", "flood"), int(_arg("--n", "1000")), float(_arg("--rate", "50"))
    prefix, batch = _arg("--prefix", "e"), int(_arg("--batch", "100"))
    concurrency = int(_arg("--concurrency", "16"))
    use_batch = "--batch-endpoint" in sys.argv
    event_url, token_url = _arg("--event-url"), _arg("--token-url")
    limits = httpx.Limits(
        max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2
    )
    async with httpx.AsyncClient(timeout=60.0, limits=limits) as client:
        r = await client.post(
            f"{token_url}/token",
            data={"grant_type": "client_credentials", "scope": "events:publish"},
            auth=("authbus-admin", _arg("--secret")),
        )
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        single = f"{event_url}/v1/channels/{CHANNEL}/events"
        errors = 0

        async def post(url: str, body: object) -> None:
            nonlocal errors
            for _attempt in range(5):  # bounded retries on a transient 5xx / connection error
                try:
                    resp = await client.post(url, json=body, headers=headers)
                    if resp.status_code < 300:
                        return
                    if resp.status_code < 500 and resp.status_code != 429:
                        raise SystemExit(f"publish answered {resp.status_code}: {resp.text[:300]}")
                except httpx.TransportError:
                    pass
                errors += 1
                await asyncio.sleep(0.05)
            raise SystemExit("publish kept failing")

        def event(i: int) -> dict[str, object]:
            eid = f"{prefix}{i}"
            return {"type": "bench.tick", "data": {"id": eid, "ts": time.time(), "pad": PAD}}

        t0 = time.time()
        if mode == "steady":
            tasks = []
            for i in range(n):
                delay = t0 + i / rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(post(single, event(i))))
            await asyncio.gather(*tasks)
        elif use_batch:
            chunks = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
            queue = iter(chunks)

            async def worker_batches() -> None:
                for chunk in queue:
                    await post(f"{single}/batch", {"events": [event(i) for i in chunk]})

            await asyncio.gather(*(worker_batches() for _ in range(min(concurrency, 4))))
        else:
            numbers = iter(range(n))

            async def worker_single() -> None:
                for i in numbers:
                    await post(single, event(i))

            await asyncio.gather(*(worker_single() for _ in range(concurrency)))
        t1 = time.time()
    print(json.dumps({"t_start": t0, "t_end": t1, "n": n, "retries": errors}), flush=True)


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "consume":
        asyncio.run(consume(_arg("--redis")))
    else:
        asyncio.run(produce())
