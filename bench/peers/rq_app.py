"""RQ peer: 2 workers (`rq worker`, its default forking worker)."""

from __future__ import annotations

import time

from bench.peers._common import PAD, producer_args, record, run_producer


def handle(eid: str, sent: float, pad: str) -> None:
    record(eid, sent)


if __name__ == "__main__":
    from redis import Redis
    from rq import Queue  # type: ignore[import-not-found]  # bench venv

    args = producer_args()
    queue = Queue("bench", connection=Redis.from_url(args.redis))
    run_producer(args, lambda eid: queue.enqueue("rq_app.handle", eid, time.time(), PAD))
