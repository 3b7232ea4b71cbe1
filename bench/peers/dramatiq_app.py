"""Dramatiq peer: Redis broker, default threads; `dramatiq dramatiq_app --processes 2`."""

from __future__ import annotations

import os

import dramatiq  # type: ignore[import-not-found]  # bench venv
from bench.peers._common import PAD, producer_args, record, run_producer
from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found]

dramatiq.set_broker(RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")))


@dramatiq.actor(max_retries=0)  # type: ignore[untyped-decorator]
def handle(eid: str, sent: float, pad: str) -> None:
    record(eid, sent)


if __name__ == "__main__":
    import time

    args = producer_args()
    run_producer(args, lambda eid: handle.send(eid, time.time(), PAD))
