"""The `authbus` command: up, serve, migrate, bootstrap, demo, config, user, client, keys.

authbus up                  # the whole stack on this machine, in the foreground
authbus serve token         # one service (what containers run)
authbus demo                # the end-to-end scenario against a running stack
"""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from authbus.core.settings import SERVICE_NAMES, Settings, redact_url
from authbus.event.cli import events_app
from authbus.token.cli import client_app, keys_app
from authbus.user.cli import user_app as user_commands

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
) -> None:
    """Run one service (what a container runs)."""
    import uvicorn

    from authbus.core.logging import configure_logging
    from authbus.core.migrate import upgrade

    settings = Settings()
    name = service.value
    svc = getattr(settings, name)
    configure_logging(name, settings.log_level, settings.log_json)
    if migrate:
        upgrade(settings.database_url(name), name)
    n_workers = workers or svc.workers
    common: dict[str, Any] = {
        "host": host or svc.host,
        "port": port or svc.port,
        "log_config": None,
        "access_log": False,
        "timeout_graceful_shutdown": 10,
        "server_header": False,
    }
    if n_workers > 1:
        uvicorn.run(f"authbus.cli:{name}_app", factory=True, workers=n_workers, **common)
    else:
        uvicorn.run(create_service_app(name, settings), **common)


@cli.command()
def migrate(
    services: Annotated[list[Service] | None, typer.Argument(help="Default: all three.")] = None,
) -> None:
    """Apply database migrations (each service has its own database and history)."""
    from authbus.core.migrate import upgrade

    settings = Settings()
    for svc in services or list(Service):
        upgrade(settings.database_url(svc.value), svc.value)
        _say(f"migrated {svc.value}: {redact_url(settings.database_url(svc.value))}")


@cli.command()
def bootstrap() -> None:
    """Migrate, then create the admin user and the built-in clients if missing."""
    from authbus.core.supervisor import bootstrap as run_bootstrap

    run_bootstrap(Settings(), _say)


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


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
