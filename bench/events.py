"""Event delivery workload: the same events through authbus and each peer, interleaved.

Per run: fresh Redis keys, start 2 subscriber processes, warm up, a flood of N events, then
a steady 50 events/s phase; every handler records `<id> <sent> <done> <pid>` (peers/_common.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import _venvs
from bench._proc import Procs
from bench._stats import percentile

PEERS = Path(__file__).resolve().parent / "peers"
PROJECT_PY = sys.executable


@dataclass
class System:
    name: str
    python: str
    consumers: list[list[str]]  # one argv per process the bench starts
    producer: list[str]  # argv after the python, before --mode etc.
    steady: bool = True
    env: dict[str, str] = field(default_factory=dict)
    # Reset between runs: delete the keys matching `keys` in `redis_url`, or (None) flush the
    # peers' own database. authbus's token store shares DB 0 with its delivery lists and must
    # survive: the services' own tokens (and the introspection token) live there.
    redis_url: str = ""
    keys: str | None = None


def systems(authbus_redis: str, authbus: dict[str, str] | None) -> list[System]:
    """Every system; the peers use DB 1 of the bench's private Redis, authbus DB 0."""
    project = PROJECT_PY
    redis_url = peer_db(authbus_redis)
    peer = {n: str(_venvs.python(n)) for n in ("dramatiq", "celery", "rq")}
    bindir = {n: str(Path(p).parent) for n, p in peer.items()}
    out: list[System] = []
    if authbus:
        prod = [
            "authbus_app.py",
            "produce",
            "--redis",
            authbus_redis,
            "--event-url",
            authbus["event_url"],
            "--token-url",
            authbus["token_url"],
            "--secret",
            authbus["secret"],
        ]
        cons = [[project, "authbus_app.py", "consume", "--redis", authbus_redis]] * 2
        keys = "ab:{bench}*"  # the bench channel's delivery keys, nothing else
        out.append(
            System(
                "authbus (single publish)",
                project,
                cons,
                prod,
                redis_url=authbus_redis,
                keys=keys,
            )
        )
        out.append(
            System(
                "authbus (batch publish)",
                project,
                cons,
                [*prod, "--batch-endpoint"],
                steady=False,
                redis_url=authbus_redis,
                keys=keys,
            )
        )
    raw_c = [project, "raw.py", "consume", "--redis", redis_url]
    out.append(
        System("raw redis-py", project, [raw_c] * 2, ["raw.py", "produce", "--redis", redis_url])
    )
    out.append(
        System(
            "pipelined ceiling",
            project,
            [[*raw_c, "--pipelined"]] * 2,
            ["raw.py", "produce", "--pipelined", "--redis", redis_url],
        )
    )
    out.append(
        System(
            "dramatiq",
            peer["dramatiq"],
            [[f"{bindir['dramatiq']}/dramatiq", "dramatiq_app", "--processes", "2"]],
            ["dramatiq_app.py", "--redis", redis_url],
        )
    )
    out.append(
        System(
            "celery",
            peer["celery"],
            [
                [
                    f"{bindir['celery']}/celery",
                    "-A",
                    "celery_app",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    "2",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ]
            ],
            ["celery_app.py", "--redis", redis_url],
        )
    )
    rq_w = [f"{bindir['rq']}/rq", "worker", "--url", redis_url, "--quiet", "bench"]
    out.append(System("rq", peer["rq"], [rq_w, rq_w], ["rq_app.py", "--redis", redis_url]))
    return out


def peer_db(url: str) -> str:
    """The same server, database 1 (the bench's private Redis: nobody else uses it)."""
    return url.rsplit("/", 1)[0] + "/1"


def reset(system: System, fallback_url: str) -> None:
    url = system.redis_url or peer_db(fallback_url)
    with redis.Redis.from_url(url) as r:
        if system.keys is None:
            r.flushdb()
            return
        batch = list(r.scan_iter(match=system.keys, count=1000))
        for i in range(0, len(batch), 500):
            r.delete(*batch[i : i + 500])


def read_records(path: Path) -> list[tuple[str, float, float, int]]:
    rows: list[tuple[str, float, float, int]] = []
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 4:
            rows.append((parts[0], float(parts[1]), float(parts[2]), int(parts[3])))
    return rows


def count_prefix(path: Path, prefix: str) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.startswith(prefix.encode()))


def wait_for(path: Path, prefix: str, n: int, stall_s: float, cap_s: float) -> bool:
    """Until n records with `prefix` (bounded: gives up after `stall_s` without progress)."""
    start = last_change = time.monotonic()
    seen = -1
    while time.monotonic() - start < cap_s:
        got = count_prefix(path, prefix)
        if got >= n:
            return True
        if got != seen:
            seen, last_change = got, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            return False
        time.sleep(0.05)
    return False


def produce(
    system: System,
    mode: str,
    n: int,
    prefix: str,
    env: dict[str, str],
    rate: float = 50.0,
    timeout: float = 900.0,
) -> dict[str, Any]:
    argv = [
        system.python,
        *system.producer,
        "--mode",
        mode,
        "--n",
        str(n),
        "--prefix",
        prefix,
        "--rate",
        str(rate),
    ]
    done = subprocess.run(argv, cwd=PEERS, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{system.name} producer failed: {done.stderr[-2000:]}")
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def phase_metrics(
    rows: list[tuple[str, float, float, int]], prefix: str, n: int, pub: dict[str, Any]
) -> dict[str, Any]:
    mine = [r for r in rows if r[0].startswith(prefix)]
    counts = Counter(r[0] for r in mine)
    expected = {f"{prefix}{i}" for i in range(n)}
    unique = len(expected & counts.keys())
    lat = [(r[2] - r[1]) * 1000 for r in mine]
    last_done = max((r[2] for r in mine), default=pub["t_end"])
    elapsed = max(last_done - pub["t_start"], 1e-9)
    return {
        "events": n,
        "processed_unique": unique,
        "missing": n - unique,
        "duplicates": sum(c - 1 for c in counts.values() if c > 1),
        "unexpected": len(counts.keys() - expected),
        "processes_seen": len({r[3] for r in mine}),
        "end_to_end_per_s": unique / elapsed,
        "publish_per_s": n / max(pub["t_end"] - pub["t_start"], 1e-9),
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": percentile(lat, 99),
        "latency_max_ms": max(lat, default=None),
    }


def run_once(
    system: System,
    procs: Procs,
    redis_url: str,
    workdir: Path,
    n: int,
    steady_n: int,
    say: Callable[[str], None],
    on_flood: Callable[[list[subprocess.Popen[bytes]]], object] | None = None,
) -> dict[str, Any]:
    """One system: start its consumers, warm up, flood of `n`, then `steady_n` at 50/s.

    `on_flood(consumers)` is called just before the flood (the profiler attaches there).
    """
    reset(system, redis_url)
    rec = workdir / f"records-{time.time_ns()}.log"
    env = {
        "BENCH_RECORDS": str(rec),
        "BENCH_REDIS_URL": system.redis_url or peer_db(redis_url),
        "PYTHONPATH": os.pathsep.join([str(PEERS), str(PEERS.parent.parent)]),
        **system.env,
    }
    full_env = {**os.environ, **env}
    started = [
        procs.start(f"{system.name.split()[0]}-consumer{i}", argv, env=env, cwd=PEERS)
        for i, argv in enumerate(system.consumers)
    ]
    result: dict[str, Any] = {"system": system.name}
    try:
        # Warm-up: every consumer started and connected before anything is timed.
        ok = False
        for attempt in range(6):
            time.sleep(0.5)
            produce(system, "flood", 10, f"w{attempt}_", full_env)
            if wait_for(rec, f"w{attempt}_", 10, 5, 20):
                ok = True
                break
        if not ok:
            dead = [p.args for p in started if p.poll() is not None]
            raise RuntimeError(f"{system.name}: consumers did not start (exited: {dead})")
        if on_flood is not None:
            on_flood(started)
        pub = produce(system, "flood", n, "f", full_env)
        complete = wait_for(rec, "f", n, 30, 900)
        result["flood"] = phase_metrics(read_records(rec), "f", n, pub)
        result["flood"]["complete"] = complete
        if system.steady and steady_n:
            pub = produce(system, "steady", steady_n, "s", full_env)
            wait_for(rec, "s", steady_n, 10, 120)
            result["steady"] = phase_metrics(read_records(rec), "s", steady_n, pub)
        f = result["flood"]
        say(
            f"  {system.name:<26} {f['end_to_end_per_s']:>9.0f} ev/s e2e  "
            f"{f['publish_per_s']:>9.0f} pub/s  missing {f['missing']} dup {f['duplicates']}"
            + (
                f"  steady p50 {result['steady']['latency_p50_ms']:.1f} ms "
                f"p99 {result['steady']['latency_p99_ms']:.1f} ms"
                if "steady" in result
                else ""
            )
        )
    finally:
        for p in started:
            procs.stop(p)
        rec.unlink(missing_ok=True)
    return result
