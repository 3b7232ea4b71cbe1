"""In-memory parts for grant tests: a dict of clients, the memory store, a fresh key ring."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from authbus.token.clients import Client, hash_secret
from authbus.token.grants import AuthorizationServer
from authbus.token.issuer import IssuerConfig, TokenIssuer
from authbus.token.keys import KeyRing, SigningKey, generate_key
from authbus.token.models import utcnow
from authbus.token.store import MemoryTokenStore

ISSUER = "http://token.test"
SECRET = "s3cret-value-for-tests"


@dataclass
class DictClients:
    """`ClientLookup` over a dict."""

    clients: dict[str, Client] = field(default_factory=dict)

    async def get(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def add(self, client: Client) -> Client:
        self.clients[client.client_id] = client
        return client


def make_ring(alg: str = "ES256") -> KeyRing:
    key = generate_key("EdDSA" if alg == "EdDSA" else "ES256")
    return KeyRing(
        [SigningKey(str(key.kid), "EdDSA" if alg == "EdDSA" else "ES256", key, utcnow())]
    )


@pytest.fixture
def clients() -> DictClients:
    c = DictClients()
    c.add(
        Client(
            "web",
            "Web app",
            "confidential",
            secret_hash=hash_secret(SECRET),
            redirect_uris=("https://app.example.com/cb",),
            grant_types=("authorization_code", "refresh_token"),
            scopes=("orders:read", "orders:write"),
            first_party=True,
        )
    )
    c.add(
        Client(
            "spa",
            "Single page app",
            "public",
            redirect_uris=("https://spa.example.com/cb", "http://127.0.0.1/cb"),
            grant_types=("authorization_code", "refresh_token"),
            scopes=("orders:read",),
            allow_implicit=True,
        )
    )
    c.add(
        Client(
            "svc",
            "A service",
            "confidential",
            secret_hash=hash_secret(SECRET),
            grant_types=("client_credentials",),
            scopes=("events:publish", "events:read"),
        )
    )
    return c


@pytest.fixture
def store() -> MemoryTokenStore:
    return MemoryTokenStore(warn=False)


@pytest.fixture
def ring() -> KeyRing:
    return make_ring()


@pytest.fixture
def issuer(store: MemoryTokenStore, ring: KeyRing) -> TokenIssuer:
    return TokenIssuer(IssuerConfig(issuer=ISSUER, refresh_reuse_grace_s=0), store, ring)


@pytest.fixture
def server(clients: DictClients, issuer: TokenIssuer) -> AuthorizationServer:
    return AuthorizationServer(clients, issuer)
