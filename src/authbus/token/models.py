"""Tables of the token service's own database: OAuth clients and signing keys."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, Boolean, DateTime, Integer, MetaData, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from authbus.core.db import Base

metadata = MetaData(
    info={"service": "token"},
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    },
)


def utcnow() -> datetime:
    """The current time, timezone-aware (UTC)."""
    return datetime.now(UTC)


class TokenBase(Base):
    """Declarative base of the token service; its tables live in their own `MetaData`."""

    __abstract__ = True
    metadata = metadata


class ClientRow(TokenBase):
    """An OAuth client (RFC 6749 §2). `secret_hash` is the SHA-256 hex of a generated secret."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))  # confidential | public
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    grant_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    allow_implicit: Mapped[bool] = mapped_column(Boolean, default=False)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    audience: Mapped[str | None] = mapped_column(String(200), nullable=True)
    access_token_ttl_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    refresh_token_ttl_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SigningKeyRow(TokenBase):
    """A JWS signing key. `private_jwk` is the JWK JSON, or its encryption under the master key.

    `retired_at` set: no longer signs; its public half stays in the JWKS until `not_after`
    (the expiry of the last token it signed).
    """

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    private_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
