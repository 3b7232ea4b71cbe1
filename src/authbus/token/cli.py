"""`authbus client ...` and `authbus keys ...`: OAuth clients and signing keys, offline.

Both work on the token database named by the settings (`AUTHBUS_TOKEN__DATABASE_URL`, else
the SQLite file in `AUTHBUS_DATA_DIR`); the service need not run. Migrations must have been
applied (`authbus migrate`).

    authbus client create shop --redirect-uri https://shop.example.com/cb --scope orders:read
    authbus client rotate-secret shop          # the new secret is printed once
    authbus keys rotate                        # running replicas switch within ~15 s
    authbus keys reseal --old "$OLD" --new "$NEW"

Only `typer` is imported here at module level; the database code loads when a command runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from authbus.core.settings import Settings

T = TypeVar("T")

client_app = typer.Typer(
    name="client", help="Register and manage OAuth2 clients.", no_args_is_help=True
)
keys_app = typer.Typer(
    name="keys", help="Rotate, list and re-encrypt the token signing keys.", no_args_is_help=True
)


class ClientType(StrEnum):
    confidential = "confidential"
    public = "public"


class SigningAlg(StrEnum):
    ES256 = "ES256"
    EdDSA = "EdDSA"


def _run(work: Callable[[Settings, async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    """Run `work` against the token database; turn domain errors into a message + exit code."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    from authbus.core.db import create_engine, create_sessionmaker
    from authbus.core.errors import AuthbusError, Conflict, NotFound
    from authbus.core.settings import Settings

    settings = Settings()

    async def main() -> T:
        engine = create_engine(settings.database_url("token"))
        try:
            return await work(settings, create_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except (NotFound, Conflict) as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    except AuthbusError as exc:  # ValidationFailed and the like: the input was wrong
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except (OperationalError, DBAPIError) as exc:
        typer.echo(
            f"error: the token database is not usable ({type(exc.orig).__name__}); "
            "is it reachable and migrated (`authbus migrate token`)?",
            err=True,
        )
        raise typer.Exit(1) from None


def _master_key(settings: Settings) -> str | None:
    key = settings.token.master_key
    return key.get_secret_value() if key is not None else None


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------------------- clients


def _scopes(values: list[str] | None) -> tuple[str, ...]:
    # `--scope "a b" --scope c` and `--scope a,b` all work.
    return tuple(dict.fromkeys(s for v in values or () for s in v.replace(",", " ").split() if s))


def _show_secret(client_id: str, secret: str) -> None:
    typer.echo(f"client_secret: {secret}")
    typer.echo(
        f"Store the secret of {client_id!r} now: it is shown only once (only its digest is "
        "kept; `authbus client rotate-secret` makes a new one).",
        err=True,
    )


@client_app.command("create")
def create_client(
    client_id: Annotated[str, typer.Argument(help="The client_id (A-Z a-z 0-9 . _ ~ -).")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the id).")] = None,
    client_type: Annotated[
        ClientType, typer.Option("--type", help="Confidential clients get a secret.")
    ] = ClientType.confidential,
    redirect_uri: Annotated[
        list[str] | None,
        typer.Option(help="Exact redirect URI (repeatable): absolute, https except loopback."),
    ] = None,
    grant_type: Annotated[
        list[str] | None,
        typer.Option(help="Allowed grant (repeatable); default authorization_code + refresh."),
    ] = None,
    scope: Annotated[
        list[str] | None, typer.Option(help="Allowed scopes (repeatable, or space-separated).")
    ] = None,
    allow_implicit: Annotated[
        bool, typer.Option(help="Allow the legacy implicit flow (RFC 9700 §2.1.2).")
    ] = False,
    first_party: Annotated[bool, typer.Option(help="Skip the consent screen.")] = False,
    audience: Annotated[str | None, typer.Option(help="Default token audience.")] = None,
    access_token_ttl: Annotated[int | None, typer.Option(help="Seconds.")] = None,
    refresh_token_ttl: Annotated[int | None, typer.Option(help="Seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Register a client; a confidential client's secret is printed once."""
    from authbus.token.clients import ClientRepository, ClientSpec

    default_grants = ("authorization_code", "refresh_token")
    spec = ClientSpec(
        client_id=client_id,
        name=name or client_id,
        type=client_type.value,
        redirect_uris=tuple(redirect_uri or ()),
        grant_types=tuple(grant_type or default_grants),
        scopes=_scopes(scope),
        allow_implicit=allow_implicit,
        first_party=first_party,
        audience=audience,
        access_token_ttl_s=access_token_ttl,
        refresh_token_ttl_s=refresh_token_ttl,
    )

    async def work(
        _settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> tuple[dict[str, object], str | None]:
        # The same validation as POST /v1/clients (`ClientSpec.validated`).
        client, secret = await ClientRepository(sessionmaker, cache_ttl_s=0).create(spec)
        return client.public_view(), secret

    view, secret = _run(work)
    if as_json:
        _print_json({**view, **({"client_secret": secret} if secret else {})})
        return
    typer.echo(f"created client {client_id!r} ({view['type']})")
    if secret:
        _show_secret(client_id, secret)


@client_app.command("list")
def list_clients(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the registered clients (never their secrets)."""
    from authbus.token.clients import ClientRepository

    async def work(
        _settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> list[dict[str, object]]:
        return [c.public_view() for c in await ClientRepository(sessionmaker).list()]

    clients = _run(work)
    if as_json:
        _print_json({"clients": clients})
        return
    if not clients:
        typer.echo("no clients")
    for c in clients:
        grants = ",".join(str(g) for g in _seq(c.get("grant_types")))
        scopes = " ".join(str(s) for s in _seq(c.get("scopes")))
        typer.echo(f"{c['client_id']}\t{c['type']}\t{grants}\t{scopes}")


def _seq(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


@client_app.command("rotate-secret")
def rotate_client_secret(
    client_id: Annotated[str, typer.Argument(help="A confidential client.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Give a confidential client a new secret (printed once; the old one stops working)."""
    from authbus.token.clients import ClientRepository

    async def work(_settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> str:
        return await ClientRepository(sessionmaker, cache_ttl_s=0).reset_secret(client_id)

    secret = _run(work)
    if as_json:
        _print_json({"client_id": client_id, "client_secret": secret})
        return
    typer.echo(f"new secret for {client_id!r}; running services accept only it within ~5 s")
    _show_secret(client_id, secret)


@client_app.command("delete")
def delete_client(
    client_id: Annotated[str, typer.Argument(help="The client to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a client: it can no longer authenticate or get tokens. Built-in clients
    (authbus-admin and the services' own) cannot be deleted."""
    from authbus.token.bootstrap import protected_client_ids
    from authbus.token.clients import ClientRepository

    if not yes:
        typer.confirm(f"Delete client {client_id!r}?", abort=True)

    async def work(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        protected = protected_client_ids(settings)
        repo = ClientRepository(sessionmaker, cache_ttl_s=0, protected=protected)
        await repo.delete(client_id)

    _run(work)
    typer.echo(f"deleted client {client_id!r}")


# ------------------------------------------------------------------------------- keys


@keys_app.command("rotate")
def rotate_key(
    alg: Annotated[
        SigningAlg | None, typer.Option(help="Algorithm of the new key (default: settings).")
    ] = None,
) -> None:
    """Add a new signing key and retire the active one.

    Running token services switch to the new key within their reload interval
    (`AUTHBUS_TOKEN__KEY_RELOAD_INTERVAL_S`, 15 s) or at once when they meet a token signed
    with it; the retired public key stays in the JWKS
    until every token it signed has expired.
    """
    from authbus.token.clients import ClientRepository
    from authbus.token.keys import MasterKeyError, rotate_signing_key

    async def work(
        settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> tuple[str, float]:
        longest = await ClientRepository(sessionmaker).max_access_token_ttl(
            settings.token.access_token_ttl_s
        )
        chosen = alg.value if alg is not None else settings.token.signing_alg
        interval = settings.token.key_reload_interval_s
        try:
            kid = await rotate_signing_key(
                sessionmaker,
                "EdDSA" if chosen == "EdDSA" else "ES256",
                _master_key(settings),
                longest,
                reload_interval_s=interval,
            )
        except MasterKeyError as exc:  # checked before any change: nothing was rotated
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        return kid, interval

    kid, interval = _run(work)
    typer.echo(f"new signing key {kid}; running token services use it within ~{interval:g} s")


@keys_app.command("list")
def list_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the signing keys: active, retired (still published) or expired."""
    from sqlalchemy import select

    from authbus.token.models import SigningKeyRow, utcnow

    async def work(
        _settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]
    ) -> list[dict[str, Any]]:
        now = utcnow()
        async with sessionmaker() as session:
            rows = (
                await session.scalars(select(SigningKeyRow).order_by(SigningKeyRow.created_at))
            ).all()
        out = []
        for row in rows:
            if row.retired_at is None:
                state = "active"
            elif row.not_after is None or _aware(row.not_after) > now:
                state = "retired"  # still in the JWKS
            else:
                state = "expired"
            out.append(
                {
                    "kid": row.kid,
                    "alg": row.alg,
                    "state": state,
                    "encrypted": row.private_jwk.startswith("enc:"),
                    "created_at": row.created_at,
                    "retired_at": row.retired_at,
                    "not_after": row.not_after,
                }
            )
        return out

    keys = _run(work)
    if as_json:
        _print_json({"keys": keys})
        return
    if not keys:
        typer.echo("no signing keys (the token service creates one at start)")
    for k in keys:
        sealed = "encrypted" if k["encrypted"] else "plain"
        typer.echo(f"{k['kid']}\t{k['alg']}\t{k['state']}\t{sealed}\tcreated {k['created_at']}")


def _aware(dt: Any) -> Any:
    from datetime import UTC

    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@keys_app.command("reseal")
def reseal_keys(
    new: Annotated[
        str,
        typer.Option(
            prompt="New master key (empty: store unencrypted)",
            hide_input=True,
            confirmation_prompt=True,
            help="The master key to encrypt with; '' stores the keys unencrypted.",
        ),
    ],
    old: Annotated[
        str | None,
        typer.Option(help="The current master key (default: AUTHBUS_TOKEN__MASTER_KEY)."),
    ] = None,
) -> None:
    """Re-encrypt every private signing key under a new master key.

    Then set AUTHBUS_TOKEN__MASTER_KEY to the new key and restart the token services.
    """
    from authbus.token.keys import reseal_signing_keys

    async def work(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
        current = old if old is not None else _master_key(settings)
        try:
            return await reseal_signing_keys(sessionmaker, current or None, new or None)
        except ValueError as exc:  # wrong or missing old master key: nothing was changed
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    count = _run(work)
    state = "encrypted under the new master key" if new else "stored unencrypted"
    typer.echo(f"{count} signing key(s) {state}")
    typer.echo(
        "Set AUTHBUS_TOKEN__MASTER_KEY to the new value and restart the token services.",
        err=True,
    )
