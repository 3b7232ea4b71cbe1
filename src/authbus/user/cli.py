"""`authbus user ...`: manage accounts in the configured user database.

Commands go through `UserService`, as the HTTP API does, so every change is audited (actor
"cli") and announced by an event in the outbox; the running user service relays it.

    authbus user create alice --email alice@example.com --permission orders:read
    authbus user list --permission orders:read
    authbus user import users.csv --strict

The database is `Settings().database_url("user")` (`AUTHBUS_USER__DATABASE_URL`, else the
SQLite file under `AUTHBUS_DATA_DIR`); run `authbus migrate user` first.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from authbus.user.service import UserProfile, UserService

ACTOR = "cli"

user_app = typer.Typer(
    name="user",
    help="Manage user accounts in the configured user database.",
    no_args_is_help=True,
    add_completion=False,
)

T = TypeVar("T")


def _run(work: Callable[[UserService], Awaitable[T]]) -> T:
    """Run `work` with a service on the configured database; errors end the command."""
    from authbus.core.errors import AuthbusError, DependencyUnavailable

    try:
        return asyncio.run(_with_service(work))
    except DependencyUnavailable as exc:
        cause = exc.__cause__
        detail = str(getattr(cause, "orig", None) or cause or "").strip().splitlines()
        _fail(
            f"{exc.message}" + (f" ({detail[0]})" if detail else "") + "; is it reachable, "
            "and migrated (`authbus migrate user`)?"
        )
    except AuthbusError as exc:
        _fail(exc.message)


async def _with_service(work: Callable[[UserService], Awaitable[T]]) -> T:
    from authbus.core.db import create_engine, create_sessionmaker
    from authbus.core.settings import Settings
    from authbus.user.passwords import PasswordHasher
    from authbus.user.service import UserService
    from authbus.user.sql_repository import SqlUserRepository
    from authbus.user.throttle import LoginThrottle

    settings = Settings()
    engine = create_engine(settings.database_url("user"))
    try:
        service = UserService(
            SqlUserRepository(create_sessionmaker(engine)),
            PasswordHasher.from_settings(settings.user),
            # The CLI checks no logins; the throttle is never consulted.
            throttle=LoginThrottle(free_attempts=0, base_delay_s=0, max_delay_s=0),
        )
        return await work(service)
    finally:
        await engine.dispose()


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _read_password(password: str | None, prompt: bool, password_stdin: bool) -> str:
    """The new password from exactly one source: the option, stdin or a prompt (default)."""
    if sum((password is not None, prompt, password_stdin)) > 1:
        raise typer.BadParameter("give only one of --password, --prompt and --password-stdin")
    if password is not None:
        return password
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise typer.BadParameter("--password-stdin: no password on standard input")
        return line
    entered: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return entered


def _describe(profile: UserProfile) -> str:
    u = profile.user
    parts = [
        u.username,
        str(u.id),
        "disabled" if u.disabled else "enabled",
        f"email={u.email or '-'}",
        f"permissions={','.join(sorted(u.permissions)) or '-'}",
        f"roles={','.join(sorted(u.roles)) or '-'}",
    ]
    if profile.effective_permissions != u.permissions:
        parts.append(f"effective={','.join(sorted(profile.effective_permissions))}")
    return "  ".join(parts)


PasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        help="The password (visible to other local users in the process list; "
        "prefer the prompt or --password-stdin).",
    ),
]
PromptOpt = Annotated[bool, typer.Option("--prompt", help="Ask for it (the default).")]
StdinOpt = Annotated[
    bool, typer.Option("--password-stdin", help="Read it from the first line of stdin.")
]


@user_app.command()
def create(
    username: Annotated[str, typer.Argument(help="Letters, digits, '.', '_', '-'.")],
    password: PasswordOpt = None,
    prompt: PromptOpt = False,
    password_stdin: StdinOpt = False,
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    permission: Annotated[
        list[str] | None, typer.Option("--permission", "-p", help="A direct permission (repeat).")
    ] = None,
    role: Annotated[list[str] | None, typer.Option("--role", "-r", help="A role (repeat).")] = None,
) -> None:
    """Create a user (the password must pass the password policy)."""
    secret = _read_password(password, prompt, password_stdin)

    async def work(service: UserService) -> UserProfile:
        return await service.create_user(
            username=username,
            password=secret,
            actor=ACTOR,
            email=email,
            permissions=permission or (),
            roles=role or (),
        )

    profile = _run(work)
    typer.echo(f"created {_describe(profile)}")


@user_app.command("list")
def list_users(
    prefix: Annotated[str | None, typer.Option(help="Usernames starting with this.")] = None,
    permission: Annotated[
        str | None, typer.Option(help="Users holding it (directly or through a role).")
    ] = None,
    disabled: Annotated[
        bool | None, typer.Option("--disabled/--enabled", help="Only disabled / enabled users.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List users by username."""
    from authbus.user.domain import UserFilter

    where = UserFilter(username_prefix=prefix, permission=permission, disabled=disabled)

    async def work(service: UserService) -> list[UserProfile]:
        found: list[UserProfile] = []
        cursor: str | None = None
        while True:
            page = await service.list_users(where=where, cursor=cursor, limit=200)
            found.extend(page.items)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    for profile in _run(work):
        if as_json:
            u = profile.user
            record = {
                "id": str(u.id),
                "username": u.username,
                "email": u.email,
                "disabled": u.disabled,
                "permissions": sorted(u.permissions),
                "roles": sorted(u.roles),
                "effective_permissions": sorted(profile.effective_permissions),
                "created_at": u.created_at.isoformat(),
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
            }
            typer.echo(json.dumps(record))
        else:
            typer.echo(_describe(profile))


def _set_disabled(username: str, disabled: bool) -> UserProfile:
    async def work(service: UserService) -> UserProfile:
        user = (await service.find_user(username)).user
        if user.disabled == disabled:
            return await service.profile(user)
        return await service.update_user(user.id, actor=ACTOR, disabled=disabled)

    return _run(work)


@user_app.command()
def disable(username: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Disable a user: logins are refused until it is enabled again."""
    profile = _set_disabled(username, True)
    typer.echo(f"disabled {profile.user.username}")


@user_app.command()
def enable(username: Annotated[str, typer.Argument(help="The user.")]) -> None:
    """Enable a disabled user."""
    profile = _set_disabled(username, False)
    typer.echo(f"enabled {profile.user.username}")


@user_app.command("set-password")
def set_password(
    username: Annotated[str, typer.Argument(help="The user.")],
    password_stdin: StdinOpt = False,
) -> None:
    """Set a new password (asked for, or read from stdin)."""
    secret = _read_password(None, False, password_stdin)

    async def work(service: UserService) -> str:
        user = (await service.find_user(username)).user
        await service.reset_password(user.id, secret, actor=ACTOR)
        return user.username

    typer.echo(f"password set for {_run(work)}")


@user_app.command()
def grant(
    username: Annotated[str, typer.Argument(help="The user.")],
    permissions: Annotated[list[str], typer.Argument(help="Permissions to add.")],
) -> None:
    """Give a user direct permissions."""

    async def work(service: UserService) -> UserProfile:
        user = (await service.find_user(username)).user
        return await service.grant_permissions(user.id, permissions, actor=ACTOR)

    typer.echo(f"granted: {_describe(_run(work))}")


@user_app.command()
def revoke(
    username: Annotated[str, typer.Argument(help="The user.")],
    permissions: Annotated[list[str], typer.Argument(help="Permissions to remove.")],
) -> None:
    """Take direct permissions from a user (those of its roles stay with the roles)."""

    async def work(service: UserService) -> tuple[UserProfile, frozenset[str]]:
        user = (await service.find_user(username)).user
        not_held = frozenset(permissions) - user.permissions
        return await service.revoke_permissions(user.id, permissions, actor=ACTOR), not_held

    profile, not_held = _run(work)
    for p in sorted(not_held):
        via_role = " (it comes with a role)" if p in profile.effective_permissions else ""
        _warn(f"{profile.user.username} holds no direct permission {p!r}{via_role}")
    typer.echo(f"revoked: {_describe(profile)}")


@user_app.command("import")
def import_users(
    file: Annotated[Path, typer.Argument(help="A .csv or .json file of users.")],
    strict: Annotated[
        bool, typer.Option(help="Import nothing unless every row is good (one transaction).")
    ] = False,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or json (default: by extension).")
    ] = None,
) -> None:
    """Import users with their existing password hashes (bcrypt or argon2id).

    Columns: username, password_hash (required), email, permissions and roles (space-
    separated), disabled (true/false). Users that exist already are skipped. Exits 1 when
    any row failed.
    """
    from authbus.core.errors import AuthbusError
    from authbus.user.importing import ImportReport, read_import_file

    try:
        records = read_import_file(file, fmt)
    except AuthbusError as exc:
        _fail(exc.message)

    async def work(service: UserService) -> ImportReport:
        return await service.import_users(records, actor=ACTOR, strict=strict)

    report = _run(work)
    for row, name, reason in report.skipped:
        typer.echo(f"row {row} ({name or '?'}): skipped: {reason}")
    for row, name, reason in report.failed:
        typer.echo(f"row {row} ({name or '?'}): failed: {reason}", err=True)
    typer.echo(
        f"created {len(report.created)}, skipped {len(report.skipped)}, failed {len(report.failed)}"
    )
    if report.aborted:
        _fail("nothing was imported (--strict and some rows failed)")
    if report.failed:
        raise typer.Exit(1)
