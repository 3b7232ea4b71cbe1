"""`authbus up`: the three services as child processes, plus the embedded Redis when needed.

Order: check ports -> start Redis (embedded) -> migrate -> bootstrap -> start services ->
wait for every `/readyz` -> one ready line -> wait for Ctrl-C/SIGTERM or a child's death ->
stop every child (SIGTERM, then SIGKILL after a grace period). Children also get
PR_SET_PDEATHSIG on Linux, so a SIGKILLed supervisor leaves no orphans behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

import httpx

from authbus.core import credentials, embedded_redis
from authbus.core.settings import SERVICE_NAMES, Settings

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


class StartupError(RuntimeError):
    """The stack could not start; the message says why and what to do."""


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


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


@dataclass
class Stack:
    settings: Settings
    redis_port: int = 8379
    out: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    redis_url: str = ""

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
            return
        try:
            proc = embedded_redis.start(self.redis_port, self.settings.data_dir / "redis")
        except embedded_redis.RedisServerNotFound as exc:
            raise StartupError(str(exc)) from exc
        self.children.append(Child("redis", proc))
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartupError(f"the embedded Redis server exited with code {proc.returncode}")
            if port_in_use("127.0.0.1", self.redis_port):
                return
            time.sleep(0.05)
        raise StartupError("the embedded Redis server did not start listening within 10 s")

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
                preexec_fn=_die_with_parent,
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
                        f"the {dead.name} service exited with code {dead.proc.returncode} "
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
        path = self.settings.data_dir / "runtime.json"
        path.write_text(json.dumps(data, indent=2) + "\n")

    # -- stop ----------------------------------------------------------------------------

    def stop(self) -> None:
        # Services first (they may still talk to Redis while draining), Redis last.
        services = [c for c in self.children if c.name != "redis"]
        redis = [c for c in self.children if c.name == "redis"]
        for group in (services, redis):
            for child in group:
                if child.proc.poll() is None:
                    child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            for child in group:
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    child.proc.wait(remaining)
                except subprocess.TimeoutExpired:
                    child.proc.kill()
                    child.proc.wait()
        self.children.clear()
        with contextlib.suppress(FileNotFoundError):
            (self.settings.data_dir / "runtime.json").unlink()


def bootstrap(settings: Settings, out: Callable[[str], None] = print) -> None:
    """Migrate the three databases and create the admin user and built-in clients."""
    from authbus.core.migrate import upgrade
    from authbus.token.bootstrap import ensure_clients
    from authbus.user.bootstrap import ensure_admin

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVICE_NAMES:
        upgrade(settings.database_url(name), name)
    creds, created = credentials.ensure(settings)

    async def seed() -> tuple[bool, list[str]]:
        admin = creds["admin"]
        made_admin = await ensure_admin(settings, admin["username"], admin["password"])
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

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    old_int = signal.signal(signal.SIGINT, on_signal)
    old_term = signal.signal(signal.SIGTERM, on_signal)
    try:
        stack.check_ports()
        stack.start_redis()
        bootstrap(settings.model_copy(update={"redis_url": stack.redis_url}), out)
        stack.start_services()
        stack.wait_ready(interrupted=lambda: stopping)
        stack.write_runtime()
        out(
            f"authbus ready: user {settings.user_url} | token {settings.token_url} | "
            f"event {settings.event_url} | redis {stack.redis_url} | "
            f"credentials {settings.credentials_path().resolve()} (Ctrl-C stops)"
        )
        while not stopping:
            dead = stack.dead_child()
            if dead is not None:
                out(
                    f"authbus: the {dead.name} process exited with code "
                    f"{dead.proc.returncode}; stopping the stack"
                )
                return 1
            time.sleep(0.2)
        out("authbus: stopping")
        return 0
    except StartupError as exc:
        out(f"authbus: cannot start: {exc}")
        return 1
    finally:
        stack.stop()
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
