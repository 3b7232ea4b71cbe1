"""Shared by every producer and consumer of the event workload (stdlib only: runs in any venv).

The handler of every system is the same no-op: it records `<id> <sent> <done> <pid>` as one
O_APPEND write to the file named by BENCH_RECORDS, which the bench reads afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

PAD = "x" * 150  # with id and timestamp: about 200 bytes of JSON per event
_fd: int | None = None
_fd_pid: int | None = None


def record(eid: str, sent: float) -> None:
    global _fd, _fd_pid
    pid = os.getpid()
    if _fd is None or _fd_pid != pid:  # re-open after a fork (RQ forks a child per job)
        _fd = os.open(os.environ["BENCH_RECORDS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        _fd_pid = pid
    os.write(_fd, f"{eid} {sent:.6f} {time.time():.6f} {pid}\n".encode())


def payload(eid: str) -> dict[str, object]:
    return {"id": eid, "ts": time.time(), "pad": PAD}


def producer_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--redis", required=True)
    p.add_argument("--mode", choices=["flood", "steady"], default="flood")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--prefix", default="e")
    p.add_argument("--batch", type=int, default=100)
    return p.parse_args()


def run_producer(
    args: argparse.Namespace,
    send: Callable[[str], object],
    flush: Callable[[], object] | None = None,
) -> None:
    """Call send(eid) n times, as fast as possible (flood) or at `rate`/s (steady)."""
    t0 = time.time()
    for i in range(args.n):
        if args.mode == "steady":
            due = t0 + i / args.rate
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)
        send(f"{args.prefix}{i}")
    if flush is not None:
        flush()
    t1 = time.time()
    json.dump({"t_start": t0, "t_end": t1, "n": args.n}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
