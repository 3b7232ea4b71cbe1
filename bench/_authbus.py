"""The authbus stack the bench runs: bootstrap a data dir, then each service by `authbus serve`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench._proc import HOST, Procs, free_port, wait_http


def start_stack(
    procs: Procs,
    workdir: Path,
    redis_url: str,
    *,
    token_workers: int = 2,
    event_workers: int = 1,
    user_workers: int = 1,
) -> dict[str, Any]:
    data = workdir / "authbus"
    ports = {"user": free_port(), "token": free_port(), "event": free_port()}
    env = {
        "AUTHBUS_DATA_DIR": str(data),
        "AUTHBUS_REDIS_URL": redis_url,
        **{f"AUTHBUS_{s.upper()}__PORT": str(p) for s, p in ports.items()},
        **{f"AUTHBUS_{s.upper()}__HOST": HOST for s in ports},
    }
    import os

    full_env = {**os.environ, **env}
    subprocess.run(
        [sys.executable, "-m", "authbus", "bootstrap"],
        env=full_env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    creds = json.loads((data / "credentials.json").read_text())
    workers = {"user": user_workers, "token": token_workers, "event": event_workers}
    started = {}
    for svc in ("user", "token", "event"):
        started[svc] = procs.start(
            f"authbus-{svc}",
            [
                sys.executable,
                "-m",
                "authbus",
                "serve",
                svc,
                "--no-migrate",
                "--workers",
                str(workers[svc]),
            ],
            env=env,
        )
    urls = {s: f"http://{HOST}:{p}" for s, p in ports.items()}
    for svc, url in urls.items():
        wait_http(f"{url}/readyz", started[svc])
    return {
        "user_url": urls["user"],
        "token_url": urls["token"],
        "event_url": urls["event"],
        "secret": creds["clients"]["authbus-admin"],
        "admin_password": creds["admin"]["password"],
        "procs": started,
        "env": env,
        "workers": workers,
    }
