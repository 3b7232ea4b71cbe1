"""Raw redis-py reference and the pipelined ceiling (no framework).

raw:       producer LPUSH + PUBLISH per event; consumers LMOVE one item, process, LREM it.
pipelined: producer pipelines batches of 100; consumers claim and ack 100 items per Lua call.

    python raw.py produce --redis URL [--pipelined] ...
    python raw.py consume --redis URL [--pipelined]
"""

from __future__ import annotations

import json
import signal
import sys

import redis
from bench.peers._common import payload, producer_args, record, run_producer

QUEUE, PROCESSING, NOTIFY = "raw:published", "raw:processing", "raw:notify"

CLAIM = """
local items = redis.call('LRANGE', KEYS[1], -tonumber(ARGV[1]), -1)
if #items > 0 then
  redis.call('LTRIM', KEYS[1], 0, -#items - 1)
  for i = #items, 1, -1 do redis.call('LPUSH', KEYS[2], items[i]) end
end
return items
"""
ACK = """
for i = 1, #ARGV do redis.call('LREM', KEYS[1], -1, ARGV[i]) end
return #ARGV
"""


def produce(pipelined: bool) -> None:
    args = producer_args()
    r = redis.Redis.from_url(args.redis)
    if not pipelined:

        def send(eid: str) -> None:
            r.lpush(QUEUE, json.dumps(payload(eid)))
            r.publish(NOTIFY, "1")

        run_producer(args, send)
        return
    pending: list[str] = []

    def flush() -> None:
        if pending:
            pipe = r.pipeline(transaction=False)
            pipe.lpush(QUEUE, *pending)
            pipe.publish(NOTIFY, "1")
            pipe.execute()
            pending.clear()

    def send_batched(eid: str) -> None:
        pending.append(json.dumps(payload(eid)))
        if len(pending) >= args.batch or args.mode == "steady":
            flush()

    run_producer(args, send_batched, flush)


def consume(url: str, pipelined: bool) -> None:
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    r = redis.Redis.from_url(url)
    pubsub = r.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(NOTIFY)
    claim, ack = r.register_script(CLAIM), r.register_script(ACK)
    while not stop:
        if pipelined:
            items = claim(keys=[QUEUE, PROCESSING], args=[100])
            for item in items:
                event = json.loads(item)
                record(event["id"], event["ts"])
            if items:
                ack(keys=[PROCESSING], args=items)
                continue
        else:
            item = r.lmove(QUEUE, PROCESSING, "RIGHT", "LEFT")
            if item is not None:
                event = json.loads(item)
                record(event["id"], event["ts"])
                r.lrem(PROCESSING, 1, item)  # type: ignore[arg-type]  # bytes is fine
                continue
        # Empty: wait for a notification (or poll again after 1 s; pub/sub can drop).
        pubsub.get_message(timeout=1.0)
        while pubsub.get_message(timeout=0) is not None:
            pass
    pubsub.close()


if __name__ == "__main__":
    role, piped = sys.argv[1], "--pipelined" in sys.argv
    sys.argv = [a for a in sys.argv if a != "--pipelined"]
    del sys.argv[1]
    if role == "produce":
        produce(piped)
    else:
        url = sys.argv[sys.argv.index("--redis") + 1]
        consume(url, piped)
