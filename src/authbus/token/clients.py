"""OAuth clients: the domain object, redirect-URI rules, and the SQL repository.

Client secrets are generated here (256 bits) and stored as SHA-256 hex digests: a secret of
that entropy cannot be brute-forced from its digest, so a fast hash compared in constant time
is enough and the token endpoint stays fast (DESIGN.md "Identity model").

    repo = ClientRepository(sessionmaker)
    client, secret = await repo.create(ClientSpec(client_id="app", name="App", ...))
    client.verify_secret(secret)  # True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from authbus.core.credentials import ADMIN_CLIENT_ID, SERVICE_CLIENT_IDS
from authbus.core.errors import Conflict, NotFound, ValidationFailed
from authbus.token.models import ClientRow, utcnow

ClientType = Literal["confidential", "public"]
GRANT_TYPES = ("authorization_code", "client_credentials", "refresh_token")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# RFC 8252 §7.3 lets the port vary for loopback IP literals only.
_PORT_FREE_HOSTS = frozenset({"127.0.0.1", "::1"})
# RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,128}")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{1,128}")
# The clients `authbus bootstrap` creates and the services use (`protected_client_ids` adds
# the ids the settings name, when they differ).
BUILTIN_CLIENT_IDS = frozenset({ADMIN_CLIENT_ID, *SERVICE_CLIENT_IDS.values()})
# Column sizes of `ClientRow` (a longer value would be a database error).
NAME_MAX = 200
AUDIENCE_MAX = 200
REDIRECT_URI_MAX = 2000


def hash_secret(secret: str) -> str:
    """SHA-256 hex of a client secret (or of any other high-entropy opaque value)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def generate_client_secret() -> str:
    """A new client secret: 256 bits, URL-safe."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Client:
    """A registered OAuth client (RFC 6749 §2)."""

    client_id: str
    name: str
    type: ClientType
    secret_hash: str | None = None
    redirect_uris: tuple[str, ...] = ()
    grant_types: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    allow_implicit: bool = False
    first_party: bool = False
    audience: str | None = None
    access_token_ttl_s: int | None = None
    refresh_token_ttl_s: int | None = None
    created_at: datetime = field(default_factory=utcnow)

    @property
    def is_confidential(self) -> bool:
        return self.type == "confidential"

    def verify_secret(self, secret: str) -> bool:
        """Constant-time check of a presented secret against the stored digest."""
        if self.secret_hash is None:
            return False
        return hmac.compare_digest(hash_secret(secret), self.secret_hash)

    def allows_grant(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def public_view(self) -> dict[str, object]:
        """What the admin API shows (never the secret hash)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "type": self.type,
            "redirect_uris": list(self.redirect_uris),
            "grant_types": list(self.grant_types),
            "scopes": list(self.scopes),
            "allow_implicit": self.allow_implicit,
            "first_party": self.first_party,
            "audience": self.audience,
            "access_token_ttl_s": self.access_token_ttl_s,
            "refresh_token_ttl_s": self.refresh_token_ttl_s,
            "created_at": self.created_at.isoformat(),
        }


def _host_of(netloc: str) -> str:
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.split(":", 1)[0]


def redirect_uri_matches(requested: str, registered: str) -> bool:
    """Whether `requested` is the registered redirect URI.

    RFC 9700 §4.1.3: exact string comparison. The one exception, RFC 8252 §7.3: for an
    http redirect to a loopback IP literal the port may differ (native apps bind any port).
    """
    if requested == registered:
        return True
    reg = urlsplit(registered)
    if reg.scheme != "http" or reg.hostname not in _PORT_FREE_HOSTS:
        return False
    req = urlsplit(requested)
    if req.scheme != "http" or "@" in req.netloc or req.fragment or "#" in requested:
        return False
    try:
        req.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    return (
        _host_of(req.netloc) == _host_of(reg.netloc)
        and req.path == reg.path
        and req.query == reg.query
    )


def validate_redirect_uri(uri: str) -> str:
    """Registration rule: absolute, no fragment or userinfo, https except for loopback hosts."""
    parts = urlsplit(uri)
    if not parts.scheme or not parts.netloc:
        raise ValidationFailed(f"redirect URI {uri!r} must be absolute")
    if parts.fragment or "#" in uri:
        raise ValidationFailed(f"redirect URI {uri!r} must not have a fragment (RFC 6749 §3.1.2)")
    if "@" in parts.netloc:
        raise ValidationFailed(f"redirect URI {uri!r} must not carry userinfo")
    if parts.scheme == "https":
        return uri
    if parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS:
        return uri
    raise ValidationFailed(f"redirect URI {uri!r} must use https (http only for loopback)")


def _check_text(field: str, value: str, *, max_length: int, spaces: bool = True) -> None:
    """Refuse text no database can hold or no header should carry: control characters
    (a NUL is a 500 on Postgres otherwise) and lone surrogates; whitespace too unless
    `spaces`. Raises `ValidationFailed` naming `field`."""
    if len(value) > max_length:
        raise ValidationFailed(f"{field}: must be at most {max_length} characters long")
    for c in value:
        kind = unicodedata.category(c)
        if kind in ("Cc", "Cs"):
            raise ValidationFailed(
                f"{field}: must not contain control characters (found U+{ord(c):04X})"
            )
        if not spaces and c.isspace():
            raise ValidationFailed(f"{field}: must not contain whitespace (found U+{ord(c):04X})")


@dataclass(frozen=True)
class ClientSpec:
    """The fields of a client that an administrator chooses."""

    client_id: str
    name: str
    type: ClientType = "confidential"
    redirect_uris: Sequence[str] = ()
    grant_types: Sequence[str] = ("authorization_code", "refresh_token")
    scopes: Sequence[str] = ()
    allow_implicit: bool = False
    first_party: bool = False
    audience: str | None = None
    access_token_ttl_s: int | None = None
    refresh_token_ttl_s: int | None = None

    def validated(self) -> ClientSpec:
        """The spec with its rules checked (raises `ValidationFailed` naming the field)."""
        if not _CLIENT_ID.fullmatch(self.client_id):
            raise ValidationFailed("client_id: 1-128 characters of A-Z a-z 0-9 . _ ~ -")
        _check_text("name", self.name, max_length=NAME_MAX)
        if not self.name.strip():
            raise ValidationFailed("name: must not be blank")
        if self.audience is not None:
            # An empty audience would be minted into tokens as `aud: ""`; omit it instead
            # for the default. RFC 8707: a resource is a URI, which holds no whitespace.
            _check_text("audience", self.audience, max_length=AUDIENCE_MAX, spaces=False)
            if not self.audience:
                raise ValidationFailed("audience: must not be empty (omit it for the default)")
        if self.type not in ("confidential", "public"):
            raise ValidationFailed("type: must be 'confidential' or 'public'")
        for g in self.grant_types:
            if g not in GRANT_TYPES:
                raise ValidationFailed(f"grant_types: unsupported grant type {g!r}")
        if self.type == "public" and "client_credentials" in self.grant_types:
            raise ValidationFailed("grant_types: a public client cannot use client_credentials")
        for s in self.scopes:
            if not _SCOPE_TOKEN.fullmatch(s):
                raise ValidationFailed(f"scopes: {s!r} is not a valid scope token")
        for u in self.redirect_uris:
            # RFC 3986: a URI holds no whitespace nor control characters.
            _check_text("redirect_uris", u, max_length=REDIRECT_URI_MAX, spaces=False)
        uris = [validate_redirect_uri(u) for u in self.redirect_uris]
        needs_redirect = "authorization_code" in self.grant_types or self.allow_implicit
        if needs_redirect and not uris:
            raise ValidationFailed("redirect_uris: required for authorization_code or implicit")
        for ttl_name in ("access_token_ttl_s", "refresh_token_ttl_s"):
            ttl = getattr(self, ttl_name)
            if ttl is not None and not 1 <= ttl <= 365 * 24 * 3600:
                raise ValidationFailed(f"{ttl_name}: between 1 second and a year")
        return replace(
            self,
            redirect_uris=tuple(dict.fromkeys(uris)),
            grant_types=tuple(dict.fromkeys(self.grant_types)),
            scopes=tuple(dict.fromkeys(self.scopes)),
        )


def _to_client(row: ClientRow) -> Client:
    return Client(
        client_id=row.client_id,
        name=row.name,
        type="public" if row.type == "public" else "confidential",
        secret_hash=row.secret_hash,
        redirect_uris=tuple(row.redirect_uris or ()),
        grant_types=tuple(row.grant_types or ()),
        scopes=tuple(row.scopes or ()),
        allow_implicit=row.allow_implicit,
        first_party=row.first_party,
        audience=row.audience,
        access_token_ttl_s=row.access_token_ttl_s,
        refresh_token_ttl_s=row.refresh_token_ttl_s,
        created_at=row.created_at,
    )


def _apply(row: ClientRow, spec: ClientSpec) -> None:
    row.name = spec.name
    row.type = spec.type
    row.redirect_uris = list(spec.redirect_uris)
    row.grant_types = list(spec.grant_types)
    row.scopes = list(spec.scopes)
    row.allow_implicit = spec.allow_implicit
    row.first_party = spec.first_party
    row.audience = spec.audience
    row.access_token_ttl_s = spec.access_token_ttl_s
    row.refresh_token_ttl_s = spec.refresh_token_ttl_s


class ClientRepository:
    """Clients in the token database, with a short in-process cache for the token hot path.

    Changes made through this repository take effect at once in this process; other
    processes see them within `cache_ttl_s` (0 disables the cache).
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        cache_ttl_s: float = 5.0,
        protected: Collection[str] = BUILTIN_CLIENT_IDS,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.cache_ttl_s = cache_ttl_s
        # Clients the stack itself authenticates as: deleting one breaks it.
        self.protected = frozenset(protected)
        self._cache: dict[str, tuple[Client | None, float]] = {}

    async def get(self, client_id: str) -> Client | None:
        if not _CLIENT_ID.fullmatch(client_id):
            # No client has such an id; and a NUL would be a database error on Postgres.
            return None
        now = time.monotonic()
        hit = self._cache.get(client_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        async with self.sessionmaker() as session:
            row = await session.get(ClientRow, client_id)
            client = _to_client(row) if row is not None else None
        if self.cache_ttl_s > 0:
            if len(self._cache) > 10_000:  # bounded: unknown ids are cached too
                self._cache.clear()
            self._cache[client_id] = (client, now + self.cache_ttl_s)
        return client

    def _forget(self, client_id: str) -> None:
        self._cache.pop(client_id, None)

    async def list(self) -> list[Client]:
        async with self.sessionmaker() as session:
            rows = (await session.scalars(select(ClientRow).order_by(ClientRow.client_id))).all()
            return [_to_client(r) for r in rows]

    async def create(
        self, spec: ClientSpec, secret: str | None = None
    ) -> tuple[Client, str | None]:
        """Create a client; returns it and its secret (shown once; None for public clients)."""
        spec = spec.validated()
        # Public clients have no secret (RFC 6749 §2.1).
        secret = (secret or generate_client_secret()) if spec.type == "confidential" else None
        row = ClientRow(
            client_id=spec.client_id,
            secret_hash=hash_secret(secret) if secret else None,
            created_at=utcnow(),
        )
        _apply(row, spec)
        try:
            async with self.sessionmaker() as session, session.begin():
                session.add(row)
        except IntegrityError:
            raise Conflict(f"client {spec.client_id!r} already exists") from None
        self._forget(spec.client_id)
        return _to_client(row), secret

    async def update(self, spec: ClientSpec) -> Client:
        """Replace a client's settings (the secret is kept)."""
        spec = spec.validated()
        self._forget(spec.client_id)
        async with self.sessionmaker() as session, session.begin():
            row = await session.get(ClientRow, spec.client_id)
            if row is None:
                raise NotFound(f"no client {spec.client_id!r}")
            if spec.type == "confidential" and row.secret_hash is None:
                raise ValidationFailed("type: a public client cannot become confidential")
            _apply(row, spec)
            if spec.type == "public":
                row.secret_hash = None
            client = _to_client(row)
        self._forget(spec.client_id)  # again: a read racing the commit may have cached
        return client

    async def reset_secret(self, client_id: str) -> str:
        """A new secret for a confidential client (returned once)."""
        if not _CLIENT_ID.fullmatch(client_id):
            raise NotFound(f"no client {client_id!r}")
        secret = generate_client_secret()
        self._forget(client_id)
        async with self.sessionmaker() as session, session.begin():
            row = await session.get(ClientRow, client_id)
            if row is None:
                raise NotFound(f"no client {client_id!r}")
            if row.type != "confidential":
                raise ValidationFailed("a public client has no secret")
            row.secret_hash = hash_secret(secret)
        self._forget(client_id)
        return secret

    async def delete(self, client_id: str) -> None:
        """Delete a client; `NotFound`, or `Conflict` for a built-in one."""
        if client_id in self.protected:
            raise Conflict(
                f"client {client_id!r} is built in: the authbus services authenticate with it, "
                "so it cannot be deleted (rotate its secret instead)"
            )
        if not _CLIENT_ID.fullmatch(client_id):
            raise NotFound(f"no client {client_id!r}")
        self._forget(client_id)
        async with self.sessionmaker() as session, session.begin():
            result = await session.execute(
                delete(ClientRow).where(ClientRow.client_id == client_id)
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"no client {client_id!r}")
        self._forget(client_id)

    async def max_access_token_ttl(self, default: int) -> int:
        """The longest access-token lifetime any client has (for key rotation)."""
        clients = await self.list()
        return max([default, *(c.access_token_ttl_s or 0 for c in clients)])
