"""The compose stack's own command lines and environment, run as processes without Docker.

No Docker engine runs on the build machines, so this test reads docker-compose.yml, takes each
authbus service's `command` and `environment` as written (values from .env.example), points the
container host names at loopback servers (Postgres, Redis, free ports), and runs them: the
one-shot bootstrap job, the user and event services and two token replicas, then the example's
client job and the example orders service itself. The replicas share the token store: a token
issued by one is introspected and revoked through the other.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+]([^}]*))?\}")


def env_example_as_written() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, value = line.split("=", 1)
            values[name] = value
    return values


@functools.cache
def env_example() -> dict[str, str]:
    """.env.example as an operator fills it in: every change-me placeholder replaced by a
    generated secret (the same for the whole test session), as its header says."""
    return {
        name: secrets.token_urlsafe(32) if value.startswith("change-me") else value
        for name, value in env_example_as_written().items()
    }


def interpolate(value: str, variables: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        if default is not None and match.group(0).startswith(f"${{{name}:-"):
            return default
        raise KeyError(name)

    return INTERPOLATION.sub(one, value)


def compose_services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def argv_of(service: dict[str, Any]) -> list[str]:
    """The service's command line as this machine runs it: the image's `authbus` entry point
    or the compose `entrypoint`/`command`, with `python` this interpreter and files
    bind-mounted from the repository at their repository paths."""
    argv = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    if argv[:1] != ["python"]:
        return [sys.executable, "-m", "authbus", *argv]
    mounts = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, str) and volume.startswith("."):
            source, target = volume.split(":")[:2]
            mounts[target] = str(ROOT / source)
    return [sys.executable, *(mounts.get(arg, arg) for arg in argv[1:])]


class ComposeRun:
    """The compose services as local processes, with container host names mapped to loopback."""

    def __init__(self, redis_url: str, database_urls: dict[str, str], tmp: Path) -> None:
        self.ports = {"user": free_port(), "token": free_port(), "event": free_port()}
        self.token_b_port = free_port()
        self.orders_port = free_port()
        self.tmp = tmp
        variables = env_example()
        self.hosts = {
            "redis://redis:6379/0": redis_url,
            "http://user:8081": f"http://127.0.0.1:{self.ports['user']}",
            "http://token:8082": f"http://127.0.0.1:{self.ports['token']}",
            "http://event:8083": f"http://127.0.0.1:{self.ports['event']}",
            # The public addresses (the gateway's, the example's published port).
            variables["AUTHBUS_PUBLIC_TOKEN_URL"]: f"http://127.0.0.1:{self.ports['token']}",
            variables["ORDERS_PUBLIC_URL"]: f"http://127.0.0.1:{self.orders_port}",
            "0.0.0.0": "127.0.0.1",  # noqa: S104 - replaced, never bound
        }
        self.database_urls = database_urls
        self.procs: list[subprocess.Popen[bytes]] = []

    def env_of(self, service: dict[str, Any], port: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHBUS_", "ORDERS_"))}
        for key, raw in service["environment"].items():
            value = self.local(str(raw))
            if key.endswith("__DATABASE_URL"):
                value = self.database_urls[key.split("__")[0].removeprefix("AUTHBUS_").lower()]
            env[key] = value
        # The issuer is the gateway in compose; here the first token replica plays it.
        env["AUTHBUS_ISSUER_URL"] = f"http://127.0.0.1:{self.ports['token']}"
        env["AUTHBUS_DATA_DIR"] = str(self.tmp)
        for name, p in self.ports.items():
            env[f"AUTHBUS_{name.upper()}__PORT"] = str(p)
        if "ORDERS_PORT" in env:
            env["ORDERS_PORT"] = str(self.orders_port)
        if port is not None and argv_of(service)[1:3] == ["-m", "authbus"]:
            svc = service["command"][1]
            env[f"AUTHBUS_{svc.upper()}__PORT"] = str(port)
        # The example's image has the repository's examples/ in its working directory.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        return env

    def local(self, raw: str) -> str:
        """A compose value as written (with .env.example values), hosts mapped to loopback."""
        value = interpolate(raw, env_example())
        for container, local in self.hosts.items():
            value = value.replace(container, local)
        return value

    def argv(self, service: dict[str, Any]) -> list[str]:
        return [self.local(arg) for arg in argv_of(service)]

    def run_once(self, name: str) -> subprocess.CompletedProcess[str]:
        service = compose_services()[name]
        return subprocess.run(
            self.argv(service),
            env=self.env_of(service),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(self, name: str, port: int) -> subprocess.Popen[bytes]:
        service = compose_services()[name]
        with (self.tmp / f"{name}-{port}.log").open("wb") as log:
            proc = subprocess.Popen(
                self.argv(service),
                env=self.env_of(service, port),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in self.tmp.glob("*.log"))

    def wait_ready(self, ports: list[int], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        pending = set(ports)
        while pending and time.monotonic() < deadline:
            for port in list(pending):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        pending.discard(port)
                except httpx.HTTPError:
                    pass
            dead = [p for p in self.procs if p.poll() is not None]
            assert not dead, f"a compose service exited with {dead[0].returncode}\n{self.logs()}"
            time.sleep(0.2)
        assert not pending, f"not ready: {pending}"

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def compose_run(
    tmp_path: Path, redis_url: str, postgres_url_factory: Callable[[], str]
) -> Iterator[ComposeRun]:
    urls = {name: postgres_url_factory() for name in ("user", "token", "event")}
    run = ComposeRun(redis_url, urls, tmp_path)
    yield run
    run.stop()


def test_the_placeholders_of_env_example_are_refused(compose_run: ComposeRun) -> None:
    written = env_example_as_written()
    assert any(v.startswith("change-me") for v in written.values())
    service = compose_services()["migrate"]
    env = compose_run.env_of(service)
    for name, value in written.items():
        if name in env and value.startswith("change-me"):
            env[name] = value
    boot = subprocess.run(
        compose_run.argv(service), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )

    assert boot.returncode != 0
    assert "AUTHBUS_ADMIN_CLIENT_SECRET is still the placeholder" in boot.stdout + boot.stderr
    assert "change-me" not in boot.stdout + boot.stderr  # names the variables, not values


def test_compose_commands_run_as_written_with_two_token_replicas(compose_run: ComposeRun) -> None:
    run = compose_run
    boot = run.run_once("migrate")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    # Preset secrets come from the operator's .env and are never printed.
    assert env_example()["AUTHBUS_ADMIN_CLIENT_SECRET"] not in boot.stdout + boot.stderr

    run.start("user", run.ports["user"])
    run.start("token", run.ports["token"])
    run.start("token", run.token_b_port)
    run.start("event", run.ports["event"])
    run.wait_ready([*run.ports.values(), run.token_b_port])

    secret = env_example()["AUTHBUS_ADMIN_CLIENT_SECRET"]
    auth = ("authbus-admin", secret)
    a = f"http://127.0.0.1:{run.ports['token']}"
    b = f"http://127.0.0.1:{run.token_b_port}"
    issued = httpx.post(
        f"{a}/token",
        data={"grant_type": "client_credentials", "scope": "events:publish"},
        auth=auth,
    )
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]

    # The replicas share the token store: B knows what A issued, A sees what B revoked.
    seen_by_b = httpx.post(f"{b}/introspect", data={"token": token}, auth=auth).json()
    assert seen_by_b["active"] is True

    published = httpx.post(
        f"http://127.0.0.1:{run.ports['event']}/v1/channels/orders/events",
        json={"type": "order.created", "data": {"id": 1}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert published.status_code == 201, published.text

    assert httpx.post(f"{b}/revoke", data={"token": token}, auth=auth).status_code == 200
    assert httpx.post(f"{a}/introspect", data={"token": token}, auth=auth).json() == {
        "active": False
    }
    refused = httpx.post(
        f"http://127.0.0.1:{run.ports['event']}/v1/channels/orders/events",
        json={"type": "order.created", "data": {"id": 2}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert refused.status_code == 401


def test_the_example_service_runs_from_its_compose_command(compose_run: ComposeRun) -> None:
    run = compose_run
    boot = run.run_once("migrate")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    run.start("user", run.ports["user"])
    run.start("token", run.ports["token"])
    run.start("event", run.ports["event"])
    run.wait_ready(list(run.ports.values()))

    # The client job registers the example with the secret from .env, and may run again.
    secret = env_example()["ORDERS_CLIENT_SECRET"]
    first = run.run_once("orders-client")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "created" in first.stdout and secret not in first.stdout + first.stderr
    again = run.run_once("orders-client")
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout + again.stderr

    orders = run.start("orders", run.orders_port)
    run.wait_ready([run.orders_port])
    url = f"http://127.0.0.1:{run.orders_port}"
    token_url = f"http://127.0.0.1:{run.ports['token']}"

    # Tokens name the public issuer; the example checks them with the JWKS fetched inside.
    issued = httpx.post(
        f"{token_url}/token",
        data={"grant_type": "client_credentials", "scope": "orders:read"},
        auth=("orders", secret),
    )
    assert issued.status_code == 200, issued.text
    bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
    assert httpx.get(f"{url}/orders", headers=bearer).json() == {"items": []}
    assert httpx.get(f"{url}/orders").status_code == 401

    # A browser is sent to the public sign-in page with the registered redirect URI.
    browser = httpx.get(f"{url}/orders", headers={"Accept": "text/html"})
    assert browser.status_code == 303, browser.text
    location = browser.headers["location"]
    assert location.startswith(f"{token_url}/authorize?")
    assert "client_id=orders" in location
    assert httpx.get(location).status_code == 200  # the token service knows that redirect URI

    # docker stop: SIGTERM, and the example shuts down cleanly within its grace period
    # (uvicorn re-raises the signal once done, hence -SIGTERM rather than 0).
    orders.terminate()
    assert orders.wait(30) in (0, -signal.SIGTERM)
    log = (run.tmp / f"orders-{run.orders_port}.log").read_text()
    assert "Application shutdown complete" in log, log[-3000:]
