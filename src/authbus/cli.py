"""The `authbus` command: up, serve, migrate, bootstrap, healthcheck, demo, config, user,
client, keys, events.

authbus up                  # the whole stack on this machine, in the foreground
authbus serve token         # one service (what containers run)
authbus healthcheck         # probe the service this container serves (the image's HEALTHCHECK)
authbus demo                # the end-to-end scenario against a running stack
"""

from __future__ import annotations

import enum
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

# `pip install authbus` (the client library) installs this command too, but not the server
# stack it runs (the `server` extra): one line saying what to install, not an ImportError.
SERVER_EXTRA_MISSING = "the authbus command needs the server extra: pip install 'authbus[server]'"
# Top-level modules of the `server` extra's distributions (pyproject.toml).
SERVER_EXTRA_MODULES = frozenset(
    {
        "typer",
        "click",
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic_settings",
        "sqlalchemy",
        "alembic",
        "aiosqlite",
        "asyncpg",
        "pwdlib",
        "jinja2",
        "multipart",
        "python_multipart",
        "prometheus_client",
        "orjson",
    }
)

try:
    import typer

    from authbus.core.settings import SERVICE_NAMES, Settings, redact_url
    from authbus.event.cli import events_app
    from authbus.token.cli import client_app, keys_app
    from authbus.user.cli import user_app as user_commands
except ModuleNotFoundError as _missing:
    if (_missing.name or "").partition(".")[0] not in SERVER_EXTRA_MODULES:
        raise
    # Raised while the console script imports `main`: it exits with this status (2: a usage
    # error, as for a bad option), and nothing else imports the CLI without the extra.
    sys.stderr.write(SERVER_EXTRA_MISSING + "\n")
    raise SystemExit(2) from None

if TYPE_CHECKING:
    from fastapi import FastAPI

cli = typer.Typer(
    name="authbus",
    help="authbus: accounts, OAuth2 tokens and events for Python microservices.",
    no_args_is_help=True,
    add_completion=False,
)
cli.add_typer(user_commands, name="user")
cli.add_typer(client_app, name="client")
cli.add_typer(keys_app, name="keys")
cli.add_typer(events_app, name="events")


class Service(enum.StrEnum):
    user = "user"
    token = "token"  # noqa: S105 - a service name
    event = "event"


class HealthPath(enum.StrEnum):
    healthz = "/healthz"
    readyz = "/readyz"


WaitOption = Annotated[
    float,
    typer.Option(
        "--wait",
        help="Seconds to keep retrying a database that does not accept connections yet "
        "(a container started before its database); 0: fail at once.",
    ),
]
DEFAULT_WAIT_S = 60.0


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _with_ports(settings: Settings, ports: str | None) -> Settings:
    if not ports:
        return settings
    try:
        user_port, token_port, event_port = (int(p) for p in ports.split(","))
    except ValueError:
        raise typer.BadParameter("--ports takes three numbers: USER,TOKEN,EVENT") from None
    data = settings.model_dump()
    for name, port in zip(SERVICE_NAMES, (user_port, token_port, event_port), strict=True):
        data[name]["port"] = port
        data.pop(f"{name}_url", None)
    return Settings.model_validate(data)


def _with_postgres(settings: Settings, url: str) -> Settings:
    """All three services in one Postgres database (their tables and histories are distinct)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            url = "postgresql+asyncpg://" + url[len(scheme) :]
    updates = {
        name: getattr(settings, name).model_copy(update={"database_url": url})
        for name in SERVICE_NAMES
    }
    return settings.model_copy(update=updates)


def create_service_app(service: str, settings: Settings | None = None) -> FastAPI:
    """Build one service's app (imports only that service's package)."""
    settings = settings or Settings()
    if service == "user":
        from authbus.user.app import create_app as create_user_app

        return create_user_app(settings)
    if service == "token":
        from authbus.token.app import create_app as create_token_app

        return create_token_app(settings)
    if service == "event":
        from authbus.event.app import create_app as create_event_app

        return create_event_app(settings)
    raise ValueError(f"unknown service {service!r}")


# Zero-argument factories for uvicorn's multi-worker mode (each worker builds its own app).
def user_app() -> FastAPI:
    return _worker_app("user")


def token_app() -> FastAPI:
    return _worker_app("token")


def event_app() -> FastAPI:
    return _worker_app("event")


def _worker_app(service: str) -> FastAPI:
    from authbus.core.logging import configure_logging

    settings = Settings()
    configure_logging(service, settings.log_level, settings.log_json)
    return create_service_app(service, settings)


@cli.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where SQLite files live.")] = None,
    ports: Annotated[
        str | None, typer.Option(help="USER,TOKEN,EVENT ports, e.g. 9081,9082,9083.")
    ] = None,
    redis_port: Annotated[int, typer.Option(help="Port of the embedded Redis.")] = 8379,
    postgres: Annotated[
        str | None,
        typer.Option(help="A Postgres URL for all three services (instead of SQLite files)."),
    ] = None,
    redis: Annotated[
        str | None, typer.Option(help="A Redis URL (instead of the embedded server).")
    ] = None,
) -> None:
    """Run user, token and event services (and an embedded Redis) in the foreground."""
    from authbus.core.supervisor import run_stack

    settings = _with_ports(_settings(data_dir), ports)
    if redis:
        settings = settings.model_copy(update={"redis_url": redis})
    if postgres:
        settings = _with_postgres(settings, postgres)
    raise typer.Exit(run_stack(settings, redis_port=redis_port, out=_say))


@cli.command()
def serve(
    service: Annotated[Service, typer.Argument(help="Which service to run.")],
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes.")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply migrations first.")] = True,
    wait: WaitOption = DEFAULT_WAIT_S,
) -> None:
    """Run one service (what a container runs).

    SIGTERM stops it gracefully: no new connections, requests in flight get 10 s to finish,
    then the service's own shutdown (subscribers finish the event in hand); the exit code is
    then 0.
    """
    import uvicorn

    from authbus.core.credentials import check_presets
    from authbus.core.logging import configure_logging
    from authbus.core.migrate import upgrade
    from authbus.core.supervisor import REQUEST_DRAIN_S, wait_for_databases

    settings = Settings()
    name = service.value
    svc = getattr(settings, name)
    configure_logging(name, settings.log_level, settings.log_json)
    with _startup_errors("serve"):
        check_presets(settings)
        if migrate:
            wait_for_databases(settings, [name], wait_s=wait, out=_err)
            upgrade(settings.database_url(name), name)
    n_workers = workers or svc.workers
    common = server_options(settings, host or svc.host, port or svc.port)
    common["timeout_graceful_shutdown"] = REQUEST_DRAIN_S
    # uvicorn handles SIGTERM itself (the graceful shutdown), then raises it again with the
    # handler found at start; this one makes that a clean exit rather than death by signal.
    signal.signal(signal.SIGTERM, _exit_after_graceful_shutdown)
    if n_workers > 1:
        uvicorn.run(f"authbus.cli:{name}_app", factory=True, workers=n_workers, **common)
    else:
        uvicorn.run(create_service_app(name, settings), **common)


def server_options(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """uvicorn's options for one service: where it listens, our logging, and which proxies'
    X-Forwarded-For / X-Forwarded-Proto it believes.

    Only those of `settings.forwarded_allow_ips` (the gateway): a client talking to the
    service directly could otherwise choose its address, and the login throttle counts per
    (username, address). Unset, forwarded headers are ignored altogether (uvicorn would
    otherwise believe any process on the same host, or $FORWARDED_ALLOW_IPS).
    """
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": settings.forwarded_allow_ips is not None,
    }
    if settings.forwarded_allow_ips is not None:
        options["forwarded_allow_ips"] = settings.forwarded_allow_ips
    return options


def _exit_after_graceful_shutdown(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve_target(argv: Sequence[str], settings: Settings) -> tuple[str, str, int]:
    """(service, host, port) that the `authbus serve ...` command line `argv` listens on.

    serve_target(["authbus", "serve", "token", "--no-migrate"], Settings())
    # ('token', '127.0.0.1', 8082)

    Raises ValueError when `argv` is not a valid `authbus serve` command line.
    """
    if "serve" not in argv:
        raise ValueError(f"not an `authbus serve` command line: {' '.join(argv)!r}")
    group = typer.main.get_command(cli)
    command = group.commands["serve"]  # type: ignore[attr-defined]
    try:
        ctx = command.make_context("serve", list(argv[argv.index("serve") + 1 :]))
    except Exception as exc:  # the CLI's own usage errors
        format_message = getattr(exc, "format_message", None)
        raise ValueError(str(format_message() if format_message else exc)) from None
    name = Service(ctx.params["service"]).value
    svc = getattr(settings, name)
    return name, ctx.params["host"] or svc.host, ctx.params["port"] or svc.port


def read_cmdline(pid: int) -> list[str]:
    """The command line of process `pid` (Linux /proc)."""
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


@cli.command()
def healthcheck(
    service: Annotated[
        Service | None,
        typer.Argument(help="Which service; default: the one `--pid` serves."),
    ] = None,
    path: Annotated[
        HealthPath,
        typer.Option(help="/healthz: the process answers; /readyz: its dependencies too."),
    ] = HealthPath.healthz,
    pid: Annotated[
        int, typer.Option(help="The process whose `authbus serve` command line names the service.")
    ] = 1,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 3.0,
) -> None:
    """Exit 0 when the service answers 200 on /healthz (or /readyz); the image's HEALTHCHECK.

    Without SERVICE, the service, host and port are those of the `authbus serve` command line
    of process `--pid` (1: the container's main process), read with the same settings, so
    `docker run IMAGE serve token --port 9000` is probed on 9000.
    """
    import httpx

    settings = Settings()
    try:
        if service is not None:
            name, host, port = serve_target(["serve", service.value], settings)
        else:
            name, host, port = serve_target(read_cmdline(pid), settings)
    except (OSError, ValueError) as exc:
        _err(f"authbus healthcheck: {exc}")
        raise typer.Exit(2) from None
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a bind address, probed on loopback
        host = "127.0.0.1"
    url = f"http://{host}:{port}{path.value}"
    try:
        status = httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError as exc:
        _err(f"authbus healthcheck: {name} at {url}: {type(exc).__name__}: {exc}")
        raise typer.Exit(1) from None
    if status != 200:
        _err(f"authbus healthcheck: {name} at {url}: HTTP {status}")
        raise typer.Exit(1)
    _say(f"{name} at {url}: ok")


@cli.command()
def migrate(
    services: Annotated[list[Service] | None, typer.Argument(help="Default: all three.")] = None,
    wait: WaitOption = DEFAULT_WAIT_S,
) -> None:
    """Apply database migrations (each service has its own database and history)."""
    from authbus.core.migrate import upgrade
    from authbus.core.supervisor import wait_for_databases

    settings = Settings()
    names = [svc.value for svc in services or list(Service)]
    with _startup_errors("migrate"):
        wait_for_databases(settings, names, wait_s=wait, out=_err)
        for name in names:
            upgrade(settings.database_url(name), name)
            _say(f"migrated {name}: {redact_url(settings.database_url(name))}")


@cli.command()
def bootstrap(wait: WaitOption = DEFAULT_WAIT_S) -> None:
    """Migrate, then create the admin user and the built-in clients if missing
    (the one-shot job of docker-compose.yml)."""
    from authbus.core.supervisor import bootstrap as run_bootstrap
    from authbus.core.supervisor import wait_for_databases

    settings = Settings()
    with _startup_errors("bootstrap"):
        wait_for_databases(settings, wait_s=wait, out=_err)
        run_bootstrap(settings, _say)


@contextmanager
def _startup_errors(command: str) -> Iterator[None]:
    """One line on stderr and exit code 1 for what stops a command from starting: a weak
    preset secret, an unreachable database (password masked). Other errors propagate."""
    from authbus.core.credentials import WeakSecret
    from authbus.core.supervisor import StartupError, connection_failure

    try:
        yield
    except (StartupError, WeakSecret) as exc:
        _err(f"authbus {command}: {exc}")
        raise typer.Exit(1) from None
    except Exception as exc:
        detail = connection_failure(exc)
        if detail is None:
            raise
        _err(f"authbus {command}: lost the connection to a database: {detail}")
        raise typer.Exit(1) from None


@cli.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory of the stack.")] = None,
) -> None:
    """Run the end-to-end scenario against a running stack (exit 0 only if all steps pass)."""
    from authbus.demo import run_demo

    raise typer.Exit(run_demo(_settings(data_dir), out=_say))


@cli.command()
def config(
    reference: Annotated[
        bool, typer.Option(help="Print the configuration reference (Markdown) instead.")
    ] = False,
) -> None:
    """Print the effective configuration, secrets masked."""
    if reference:
        from authbus.core.settings_reference import render

        sys.stdout.write(render())
        return
    settings = Settings()
    data = json.loads(settings.model_dump_json())
    for name in SERVICE_NAMES:
        data[name]["database_url"] = redact_url(settings.database_url(name))
    if data.get("redis_url"):
        data["redis_url"] = redact_url(data["redis_url"])
    _say(json.dumps(data, indent=2))


def _say(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
