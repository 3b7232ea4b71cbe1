"""`authbus up`: the three services as child processes, plus the embedded Redis when needed.

Order: check preset secrets and ports -> start Redis (embedded) or ping the given one -> check
the databases answer -> migrate -> bootstrap -> start services -> wait for every `/readyz` ->
one ready line -> wait for Ctrl-C/SIGTERM or a child's death -> stop every child (SIGTERM,
then SIGKILL after a grace period; a second Ctrl-C kills at once). Every child, the embedded
Redis included, also gets PR_SET_PDEATHSIG on Linux, so a SIGKILLed supervisor leaves no
orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from authbus.core import credentials, embedded_redis
from authbus.core.settings import SERVICE_NAMES, Settings, redact_url

READY_TIMEOUT_S = 60.0
# Where a running `authbus up` says where its services and Redis are (read by `authbus demo`),
# in the data directory; removed by that process when it stops.
RUNTIME_FILE = "runtime.json"
# What `authbus serve` gives requests in flight after SIGTERM (uvicorn's graceful shutdown).
REQUEST_DRAIN_S = 10
# The longest a service's lifespan shutdown may take after that: the token service waits up
# to 35 s for its user-events subscriber to finish the event in hand (token/app.py).
LIFESPAN_SHUTDOWN_S = 35
# How long `authbus up` waits for a child after SIGTERM before it kills it: the service's own
# shutdown budget, plus a margin. docker-compose.yml's stop_grace_period is longer still.
STOP_GRACE_S = REQUEST_DRAIN_S + LIFESPAN_SHUTDOWN_S + 5

# SQLSTATEs worth waiting out: connection exceptions (08), the server starting up or shutting
# down (57P), a database not created yet (3D000, Postgres' init scripts still running), too
# many connections (53300). A refused password (28) or anything else will not improve.
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "57P", "3D000", "53300")


class StartupError(RuntimeError):
    """The stack could not start; the message says why and what to do."""


class DatabaseUnreachable(StartupError):
    """A database did not accept a connection; the message names it (password masked)."""


class RedisUnreachable(StartupError):
    """The configured Redis did not answer a PING; the message names it (password masked)."""


def describe_exit(returncode: int) -> str:
    """How a child ended, for a sentence: "exited with code 3", "was killed by SIGKILL".

    Popen gives a signal's death as a negative return code.
    """
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child get SIGTERM when `parent_pid` dies (Linux).

    Elsewhere there is no such request: None. The child also exits at once when the parent
    died between fork and the request (the signal would then never come).
    """
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child

    def preexec() -> None:  # pragma: no cover - runs in the child before exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]


COLOURS = {"user": "36", "token": "35", "event": "33", "redis": "31"}


def relay_output(name: str, stream: IO[bytes], sink: IO[str], colour: bool) -> None:
    """Copy a child's output line by line, prefixed with its name (coloured on a terminal)."""
    label = f"{name:<5} |"
    if colour:
        label = f"\x1b[{COLOURS.get(name, '37')}m{label}\x1b[0m"
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with _output_lock:
            sink.write(f"{label} {line}\n")
            sink.flush()
    stream.close()


_output_lock = threading.Lock()


# -- reaching the databases and Redis -----------------------------------------------------


def connection_failure(exc: BaseException) -> str | None:
    """A one-line description of `exc` when it says a server could not be reached (refused,
    reset, timed out, unresolvable, starting up, database missing); None for other errors."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy.exc import DBAPIError

    from authbus.core.app import is_connection_failure

    if isinstance(exc, DBAPIError):
        state = str(getattr(exc.orig, "sqlstate", "") or "")
        if exc.connection_invalidated or state.startswith(_RETRYABLE_SQLSTATE_PREFIXES):
            return _first_line(str(exc.orig))
        return None
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return _first_line(str(exc)) or type(exc).__name__
    if isinstance(exc, OSError) and is_connection_failure(exc):
        return _first_line(f"{type(exc).__name__}: {exc}")
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _probe_database(url: str) -> None:
    """Connect to `url` and run `SELECT 1` (raises what the driver raises)."""
    from sqlalchemy import pool, text

    from authbus.core.db import create_engine

    kwargs = {"connect_args": {"timeout": 5}} if url.startswith("postgresql+asyncpg") else {}

    async def probe() -> None:
        engine = create_engine(url, poolclass=pool.NullPool, **kwargs)
        try:
            async with asyncio.timeout(10), engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    asyncio.run(probe())


def _database_label(names: list[str]) -> str:
    if len(names) == 1:
        return f"the {names[0]} database"
    return f"the database of the {', '.join(names[:-1])} and {names[-1]} services"


def wait_for_databases(
    settings: Settings,
    services: list[str] | tuple[str, ...] = SERVICE_NAMES,
    *,
    wait_s: float = 0.0,
    out: Callable[[str], None] = print,
) -> None:
    """Check that each service's database accepts a connection, retrying for up to `wait_s`
    seconds while it is unreachable (a container that starts before its database).

    Raises `DatabaseUnreachable` with one line naming the database (password masked) when it
    still does not answer, or refuses the connection outright (wrong password, say).
    """
    from sqlalchemy.exc import DBAPIError

    from authbus.core.db import is_sqlite

    by_url: dict[str, list[str]] = {}
    for name in services:
        by_url.setdefault(settings.database_url(name), []).append(name)
    for url, names in by_url.items():
        if is_sqlite(url):
            continue  # a file: created on first use
        label = f"{_database_label(names)} at {redact_url(url)}"
        deadline = time.monotonic() + wait_s
        waited = False
        while True:
            try:
                _probe_database(url)
                break
            except (OSError, DBAPIError) as exc:
                detail = connection_failure(exc)
                retry = detail is not None
                if detail is None:
                    orig = getattr(exc, "orig", None) or exc
                    detail = _first_line(str(orig)) or type(orig).__name__
                if not retry or time.monotonic() >= deadline:
                    raise DatabaseUnreachable(f"cannot connect to {label}: {detail}") from None
                if not waited:
                    out(f"waiting up to {wait_s:.0f} s for {label} ({detail})")
                    waited = True
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        if waited:
            out(f"{label} answers")


def ping_redis(url: str) -> None:
    """PING the Redis at `url`; `RedisUnreachable` naming it (password masked) if it fails."""
    from redis.exceptions import RedisClusterException, RedisError

    from authbus.core.redis import create_redis

    async def ping() -> None:
        client = create_redis(url)
        try:
            async with asyncio.timeout(10):
                await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (OSError, RedisError, RedisClusterException) as exc:
        detail = connection_failure(exc) or _first_line(str(exc)) or type(exc).__name__
        raise RedisUnreachable(f"cannot reach Redis at {redact_url(url)}: {detail}") from None


@contextlib.contextmanager
def _reaching(what: str) -> Iterator[None]:
    """Turn a connection failure inside the block into one `DatabaseUnreachable` line."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except (OSError, DBAPIError) as exc:
        detail = connection_failure(exc)
        if detail is None:
            raise
        raise DatabaseUnreachable(f"lost the connection to {what}: {detail}") from None


@dataclass
class Stack:
    settings: Settings
    redis_port: int = 8379
    out: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""
    # Set once this process has written runtime.json: only then may it remove the file.
    wrote_runtime: bool = False

    # -- start ---------------------------------------------------------------------------

    def check_ports(self) -> None:
        busy = []
        for name in SERVICE_NAMES:
            svc = getattr(self.settings, name)
            if port_in_use(svc.host, svc.port):
                busy.append(f"{name} service port {svc.port}")
        if self.settings.redis_url is None and port_in_use("127.0.0.1", self.redis_port):
            busy.append(f"embedded Redis port {self.redis_port}")
        if busy:
            raise StartupError(
                "port already in use: "
                + ", ".join(busy)
                + ". Stop what holds it, or choose other ports (authbus up --ports / "
                "AUTHBUS_USER__PORT, AUTHBUS_TOKEN__PORT, AUTHBUS_EVENT__PORT)."
            )

    def start_redis(self) -> None:
        if self.settings.redis_url:
            self.redis_url = self.settings.redis_url
            try:
                ping_redis(self.redis_url)
            except RedisUnreachable as exc:
                raise RedisUnreachable(
                    f"{exc}. Start it, or fix --redis / AUTHBUS_REDIS_URL."
                ) from None
            return
        try:
            proc = embedded_redis.start(
                self.redis_port,
                self.settings.data_dir / "redis",
                preexec_fn=die_with_parent(os.getpid()),
            )
        except embedded_redis.RedisServerNotFound as exc:
            raise StartupError(str(exc)) from exc
        self.children.append(Child("redis", proc))
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartupError(f"the embedded Redis server {describe_exit(proc.returncode)}")
            if port_in_use("127.0.0.1", self.redis_port):
                return
            time.sleep(0.05)
        raise StartupError("the embedded Redis server did not start listening within 10 s")

    def check_databases(self) -> None:
        try:
            wait_for_databases(self.settings, out=self.out)
        except DatabaseUnreachable as exc:
            raise DatabaseUnreachable(
                f"{exc}. Start the server, or fix --postgres / AUTHBUS_<SERVICE>__DATABASE_URL."
            ) from None

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["AUTHBUS_REDIS_URL"] = self.redis_url
        env["AUTHBUS_DATA_DIR"] = str(self.settings.data_dir.resolve())
        for name in SERVICE_NAMES:
            svc = getattr(self.settings, name)
            prefix = f"AUTHBUS_{name.upper()}__"
            env[prefix + "PORT"] = str(svc.port)
            env[prefix + "HOST"] = svc.host
            env[prefix + "DATABASE_URL"] = self.settings.database_url(name)
            env[f"AUTHBUS_{name.upper()}_URL"] = getattr(self.settings, f"{name}_url")
        return env

    def start_services(self) -> None:
        env = self.child_env()
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        for name in SERVICE_NAMES:
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "authbus", "serve", name, "--no-migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent(os.getpid()),
            )
            self.children.append(Child(name, proc))
            assert proc.stdout is not None
            threading.Thread(
                target=relay_output,
                args=(name, proc.stdout, sys.stdout, colour),
                name=f"relay-{name}",
                daemon=True,
            ).start()

    def dead_child(self) -> Child | None:
        for child in self.children:
            if child.proc.poll() is not None:
                return child
        return None

    def wait_ready(
        self, timeout: float = READY_TIMEOUT_S, interrupted: Callable[[], bool] = lambda: False
    ) -> None:
        urls = {name: getattr(self.settings, f"{name}_url") for name in SERVICE_NAMES}
        pending = dict(urls)
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while pending:
                if interrupted():
                    raise StartupError("interrupted while starting")
                dead = self.dead_child()
                if dead is not None:
                    raise StartupError(
                        f"the {dead.name} service {describe_exit(dead.proc.returncode)} "
                        "during startup (its log is above)"
                    )
                for name, url in list(pending.items()):
                    with contextlib.suppress(httpx.HTTPError):
                        if client.get(f"{url}/readyz").status_code == 200:
                            del pending[name]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"not ready after {timeout:.0f} s: {', '.join(sorted(pending))}"
                    )
                time.sleep(0.2)

    def write_runtime(self) -> None:
        """`<data_dir>/runtime.json`: where the running stack is (read by `authbus demo`)."""
        data = {
            "redis_url": self.redis_url,
            "redis_prefix": self.settings.redis_prefix,
            "user_url": self.settings.user_url,
            "token_url": self.settings.token_url,
            "event_url": self.settings.event_url,
            "pid": os.getpid(),
        }
        self.runtime_path().write_text(json.dumps(data, indent=2) + "\n")
        self.wrote_runtime = True

    def runtime_path(self) -> Path:
        return self.settings.data_dir / RUNTIME_FILE

    def remove_runtime(self) -> None:
        """Delete runtime.json if this process wrote it and it still names this process.

        A second `authbus up` that fails (its ports are taken by the running stack) must
        leave the running stack's file alone: `authbus demo` reads it.
        """
        if not self.wrote_runtime:
            return
        self.wrote_runtime = False
        path = self.runtime_path()
        try:
            pid = json.loads(path.read_text()).get("pid")
        except (OSError, ValueError, AttributeError):
            return
        if pid == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # -- stop ----------------------------------------------------------------------------

    def stop(self, forced: Callable[[], bool] = lambda: False) -> None:
        """SIGTERM every child, wait up to STOP_GRACE_S (less if `forced()` turns true), then
        SIGKILL what is left. Services first (they may still talk to Redis while draining),
        Redis last."""
        services = [c for c in self.children if c.name != "redis"]
        redis = [c for c in self.children if c.name == "redis"]
        for group in (services, redis):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            while (
                any(c.proc.poll() is None for c in group)
                and time.monotonic() < deadline
                and not forced()
            ):
                time.sleep(0.05)
            for child in group:
                if child.proc.poll() is None:
                    self.out(f"authbus: the {child.name} process did not stop: killing it")
                    child.proc.kill()
                child.proc.wait()
        self.children.clear()
        self.remove_runtime()


def bootstrap(settings: Settings, out: Callable[[str], None] = print) -> None:
    """Migrate the three databases and create the admin user and built-in clients.

    Raises `credentials.WeakSecret` for a placeholder or short preset secret, and
    `DatabaseUnreachable` (one line, password masked) when a database cannot be reached.
    """
    from authbus.core.migrate import upgrade
    from authbus.token.bootstrap import ensure_clients
    from authbus.user.bootstrap import ensure_admin
    from authbus.user.errors import WeakPassword

    credentials.check_presets(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVICE_NAMES:
        url = settings.database_url(name)
        with _reaching(f"the {name} database at {redact_url(url)}"):
            upgrade(url, name)
    creds, created = credentials.ensure(settings)

    async def seed() -> tuple[bool, list[str]]:
        admin = creds["admin"]
        with _reaching(f"the user database at {redact_url(settings.database_url('user'))}"):
            try:
                made_admin = await ensure_admin(settings, admin["username"], admin["password"])
            except WeakPassword as exc:
                raise StartupError(f"AUTHBUS_ADMIN_PASSWORD is refused: {exc.message}") from None
        with _reaching(f"the token database at {redact_url(settings.database_url('token'))}"):
            made_clients = await ensure_clients(settings, creds["clients"])
        return made_admin, made_clients

    made_admin, made_clients = asyncio.run(seed())
    path = settings.credentials_path().resolve()
    if created:
        # Generated secrets are printed once, at first start; the file (mode 0600) keeps them.
        # Preset ones came from the operator and are never printed.
        out(f"first start: credentials written to {path} (mode 0600)")
        generated = credentials.generated_names(settings)
        if "admin_password" in generated:
            out(f"  admin user   : {creds['admin']['username']} / {creds['admin']['password']}")
        if credentials.ADMIN_CLIENT_ID in generated:
            secret = creds["clients"][credentials.ADMIN_CLIENT_ID]
            out(f"  admin client : {credentials.ADMIN_CLIENT_ID} / {secret}")
    elif made_admin or made_clients:
        out(
            f"bootstrap: created {', '.join(['admin'] * made_admin + made_clients)}; "
            f"credentials in {path}"
        )


def run_stack(
    settings: Settings, redis_port: int = 8379, out: Callable[[str], None] = print
) -> int:
    """Run the whole stack in the foreground; returns the process exit code."""
    stack = Stack(settings, redis_port=redis_port, out=out)
    stopping = False
    force = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping, force
        if stopping:
            force = True  # a second Ctrl-C: do not wait for the children's grace period
        stopping = True

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        credentials.check_presets(settings)
        stack.check_ports()
        stack.start_redis()
        stack.check_databases()
        bootstrap(settings.model_copy(update={"redis_url": stack.redis_url}), out)
        stack.start_services()
        stack.wait_ready(interrupted=lambda: stopping)
        stack.write_runtime()
        out(
            f"authbus ready: user {settings.user_url} | token {settings.token_url} | "
            f"event {settings.event_url} | redis {redact_url(stack.redis_url)} | "
            f"credentials {settings.credentials_path().resolve()} (Ctrl-C stops)"
        )
        while not stopping:
            dead = stack.dead_child()
            if dead is not None:
                out(
                    f"authbus: the {dead.name} process {describe_exit(dead.proc.returncode)}; "
                    "stopping the stack"
                )
                return 1
            time.sleep(0.2)
        out("authbus: stopping")
        return 0
    except (StartupError, credentials.WeakSecret) as exc:
        out(f"authbus: cannot start: {exc}")
        return 1
    finally:
        stack.stop(forced=lambda: force)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
