"""First-start setup of the token service: built-in clients and a signing key.

created = await ensure_clients(settings, {"authbus-admin": "...", "user-service": "..."})
"""

from __future__ import annotations

from collections.abc import Mapping

from authbus.core.credentials import ADMIN_CLIENT_ID
from authbus.core.db import create_engine, create_sessionmaker
from authbus.core.errors import Conflict
from authbus.core.settings import Settings
from authbus.token.clients import BUILTIN_CLIENT_IDS, ClientRepository, ClientSpec
from authbus.token.keys import ensure_signing_key

BUILTIN_CLIENTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        ADMIN_CLIENT_ID,
        "authbus administration",
        (
            "users:admin",
            "users:verify",
            "clients:admin",
            "events:publish",
            "events:read",
            "events:admin",
        ),
    ),
    ("user-service", "authbus user service", ("events:publish", "events:read")),
    ("token-service", "authbus token service", ("users:verify", "events:read", "events:publish")),
    ("event-service", "authbus event service", ("events:read",)),
)


def protected_client_ids(settings: Settings) -> frozenset[str]:
    """Clients that may not be deleted: the built-in ones, and the ids the settings give the
    services (`AUTHBUS_<SERVICE>__CLIENT_ID`) when an operator chose others."""
    configured = (settings.user.client_id, settings.token.client_id, settings.event.client_id)
    return frozenset({*BUILTIN_CLIENT_IDS, *(c for c, _, _ in BUILTIN_CLIENTS), *configured})


async def ensure_clients(settings: Settings, secrets: Mapping[str, str]) -> list[str]:
    """Create the built-in confidential clients that are missing, with the given secrets
    (from the credentials file), and ensure a signing key exists.

    Returns the ids of the clients created now. A client missing from `secrets` gets a
    generated secret nobody knows; reset it with `POST /v1/clients/{id}/secret`.
    """
    engine = create_engine(settings.database_url("token"))
    try:
        sessionmaker = create_sessionmaker(engine)
        repo = ClientRepository(sessionmaker)
        created: list[str] = []
        for client_id, name, scopes in BUILTIN_CLIENTS:
            if await repo.get(client_id) is not None:
                continue
            spec = ClientSpec(
                client_id=client_id,
                name=name,
                type="confidential",
                grant_types=("client_credentials",),
                scopes=scopes,
                first_party=True,
            )
            try:
                await repo.create(spec, secret=secrets.get(client_id))
            except Conflict:
                continue  # another process created it just now
            created.append(client_id)
        master = settings.token.master_key
        await ensure_signing_key(
            sessionmaker,
            settings.token.signing_alg,
            master.get_secret_value() if master is not None else None,
        )
        return created
    finally:
        await engine.dispose()
