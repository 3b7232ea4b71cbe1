"""Register an OAuth2 client with a secret the operator chose, or bring it up to date.

`authbus client create` generates the secret and fails when the client exists; a compose
stack needs the opposite: a secret preset in `.env` (the service that uses the client reads
the same variable) and a job that may run on every `docker compose up`. This one-shot job
writes straight to the token database (AUTHBUS_TOKEN__DATABASE_URL), like `authbus client`
does, and never prints the secret.

    ORDERS_CLIENT_SECRET=... python deploy/ensure_client.py orders \\
        --secret-env ORDERS_CLIENT_SECRET --redirect-uri http://localhost:8090/auth/callback \\
        --grant-type authorization_code --grant-type client_credentials \\
        --scope orders:read --scope orders:write --scope events:publish --first-party
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from authbus.core.credentials import GENERATE_COMMAND, MIN_PRESET_LENGTH, PLACEHOLDER_PREFIX
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.settings import Settings
from authbus.token.clients import ClientRepository, ClientSpec, hash_secret
from authbus.token.models import ClientRow


def parser() -> argparse.ArgumentParser:
    """The command line (the compose validation parses the job's command with it)."""
    p = argparse.ArgumentParser(prog="ensure_client", description=__doc__.splitlines()[0])
    p.add_argument("client_id")
    p.add_argument("--name", help="display name (default: the id)")
    p.add_argument(
        "--secret-env", required=True, help="the environment variable holding the secret"
    )
    p.add_argument("--redirect-uri", action="append", default=[])
    p.add_argument("--grant-type", action="append", default=[])
    p.add_argument("--scope", action="append", default=[])
    p.add_argument("--first-party", action="store_true")
    return p


async def ensure(spec: ClientSpec, secret: str, settings: Settings) -> str:
    """Create the client or update it to `spec` and `secret`; what was done."""
    engine = create_engine(settings.database_url("token"))
    try:
        sessionmaker = create_sessionmaker(engine)
        repo = ClientRepository(sessionmaker, cache_ttl_s=0)
        existing = await repo.get(spec.client_id)
        if existing is None:
            await repo.create(spec, secret=secret)
            return "created"
        await repo.update(spec)
        if existing.verify_secret(secret):
            return "up to date"
        # The operator changed the secret in .env: the new one replaces the old at once.
        async with sessionmaker() as session, session.begin():
            row = await session.get(ClientRow, spec.client_id)
            assert row is not None
            row.secret_hash = hash_secret(secret)
        return "updated, with the new secret"
    finally:
        await engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    secret = os.environ.get(args.secret_env, "")
    if secret.lower().startswith(PLACEHOLDER_PREFIX) or len(secret) < MIN_PRESET_LENGTH:
        print(
            f"ensure_client: set {args.secret_env} to a secret of {MIN_PRESET_LENGTH} characters "
            f"or more, not the placeholder from .env.example (generate one with: "
            f"{GENERATE_COMMAND})",
            file=sys.stderr,
        )
        return 2
    spec = ClientSpec(
        client_id=args.client_id,
        name=args.name or args.client_id,
        type="confidential",
        redirect_uris=tuple(args.redirect_uri),
        grant_types=tuple(args.grant_type or ["authorization_code", "refresh_token"]),
        scopes=tuple(s for scope in args.scope for s in scope.split()),
        first_party=args.first_party,
    )
    try:
        outcome = asyncio.run(ensure(spec, secret, Settings()))
    except Exception as exc:  # a clear line for the operator, not a traceback
        print(f"ensure_client: {args.client_id}: {exc}", file=sys.stderr)
        return 1
    print(f"client {args.client_id}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
