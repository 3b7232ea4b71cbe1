"""Celery peer: Redis broker, prefork pool of 2 (`celery -A celery_app worker -c 2`)."""

from __future__ import annotations

import os

from bench.peers._common import PAD, producer_args, record, run_producer
from celery import Celery  # type: ignore[import-not-found]  # bench venv

app = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_ignore_result=True,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)


@app.task(name="bench.handle")  # type: ignore[untyped-decorator]
def handle(eid: str, sent: float, pad: str) -> None:
    record(eid, sent)


if __name__ == "__main__":
    import time

    args = producer_args()
    run_producer(args, lambda eid: handle.delay(eid, time.time(), PAD))
