"""Settings, read from `AUTHBUS_*` environment variables (nested with `__`).

Example: `AUTHBUS_USER__DATABASE_URL=postgresql+asyncpg://…`, `AUTHBUS_REDIS_URL=redis://…`.
Settings objects are built by the caller (`Settings()` in the CLI, explicit values in tests),
never at import time.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("user", "token", "event")
# The request body limit of the user and token services: forms and JSON documents of a few KiB
# are what they take; a megabyte leaves room without letting a client make them read gigabytes.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class ServiceSettings(BaseModel):
    """What every service has: where it listens, its database, its own OAuth client."""

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(description="Port.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the service's own database; unset: a SQLite file "
        "`<service>.db` under the data directory.",
    )
    client_id: str = Field(
        description="The service's own confidential client (for calls to its peers)."
    )
    client_secret: SecretStr | None = Field(
        None, description="Its secret; unset: read from the credentials file."
    )
    workers: int = Field(1, description="Worker processes for `authbus serve`.")

    @property
    def body_limit_bytes(self) -> int:
        """The largest request body the service reads; a larger one gets a 413."""
        return DEFAULT_MAX_BODY_BYTES


class UserSettings(ServiceSettings):
    """Accounts, passwords, permissions (`AUTHBUS_USER__*`)."""

    port: int = Field(8081, description="Port.")
    client_id: str = Field("user-service", description="The user service's own client.")
    argon2_memory_kib: int = Field(
        19 * 1024, description="argon2id memory cost (KiB); OWASP's minimum is 19 MiB."
    )
    argon2_time_cost: int = Field(2, description="argon2id iterations (OWASP: 2).")
    argon2_parallelism: int = Field(1, description="argon2id lanes (OWASP: 1).")
    throttle_free_attempts: int = Field(
        5, description="Failed logins per (username, address) before delays start."
    )
    throttle_base_delay_s: float = Field(
        1.0, description="First delay after the free attempts; doubles each failure."
    )
    throttle_max_delay_s: float = Field(
        300.0, description="Longest delay: the real owner is never locked out for longer."
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        gt=0,
        description="Largest request body (bytes); a larger one is refused with a 413 "
        "before it is read.",
    )

    @property
    def body_limit_bytes(self) -> int:
        return self.max_body_bytes


class TokenSettings(ServiceSettings):
    """The OAuth2 server (`AUTHBUS_TOKEN__*`)."""

    port: int = Field(8082, description="Port.")
    client_id: str = Field("token-service", description="The token service's own client.")
    access_token_ttl_s: int = Field(900, description="Access token lifetime (s).")
    refresh_token_ttl_s: int = Field(30 * 24 * 3600, description="Refresh token lifetime (s).")
    refresh_reuse_grace_s: int = Field(
        10,
        ge=0,
        description="A rotated refresh token presented again within this (the client lost "
        "the response) gets the same new token back instead of revoking the grant; 0: off.",
    )
    code_ttl_s: int = Field(60, description="Authorization code lifetime (s).")
    sso_session_ttl_s: int = Field(8 * 3600, description="Login session (SSO cookie) life (s).")
    signing_alg: Literal["ES256", "EdDSA"] = Field(
        "ES256", description="Algorithm of new signing keys."
    )
    default_audience: str = Field(
        "authbus",
        description="`aud` when neither the client nor the request (RFC 8707) names one.",
    )
    master_key: SecretStr | None = Field(
        None, description="Encrypts private signing keys at rest when set."
    )
    key_reload_interval_s: float = Field(
        15.0,
        gt=0,
        description="How often a running token service re-reads its signing keys, so "
        "`authbus keys rotate` reaches every replica (also at once on an unknown `kid`).",
    )
    max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        gt=0,
        description="Largest request body (bytes); a larger one is refused with a 413 "
        "before it is read.",
    )

    @property
    def body_limit_bytes(self) -> int:
        return self.max_body_bytes


class EventSettings(ServiceSettings):
    """The event log and delivery (`AUTHBUS_EVENT__*`)."""

    port: int = Field(8083, description="Port.")
    client_id: str = Field("event-service", description="The event service's own client.")
    max_payload_bytes: int = Field(
        1024 * 1024,
        gt=0,
        description="Largest request body (bytes); a larger one is refused with a 413 "
        "before it is read.",
    )
    max_waiting_per_subscriber: int = Field(
        100_000,
        ge=0,
        description="Waiting events per subscriber before it is marked lagging and fed "
        "from the log instead (also the bound of a replay). 0: unbounded.",
    )
    dispatch_interval_s: float = Field(
        1.0, description="How often events committed while Redis was away are re-sent."
    )
    subscriber_stale_after_s: float = Field(
        60.0,
        gt=0,
        description="A subscriber with no instance heartbeat for this long is reported stale.",
    )
    max_dead_per_subscriber: int = Field(
        10_000,
        ge=0,
        description="Dead letters kept per subscriber in Redis; the oldest beyond are trimmed "
        "(counted in the stats; the events stay in the log). 0: unbounded.",
    )

    @property
    def body_limit_bytes(self) -> int:
        return self.max_payload_bytes


class Settings(BaseSettings):
    """The whole configuration of an authbus deployment."""

    model_config = SettingsConfigDict(
        env_prefix="AUTHBUS_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Field(Path("var"), description="SQLite files and the credentials file.")
    redis_url: str | None = Field(
        None,
        description="Redis (`?cluster=true` for a cluster). Unset: the token store is an "
        "in-process dict and event delivery is off; `authbus up` starts an embedded server.",
    )
    redis_prefix: str = Field("ab", description="Prefix of every Redis key.")
    user_url: str = Field(
        "http://127.0.0.1:8081", description="Where services reach the user service."
    )
    token_url: str = Field(
        "http://127.0.0.1:8082", description="Where services reach the token service."
    )
    event_url: str = Field(
        "http://127.0.0.1:8083", description="Where services reach the event service."
    )
    issuer_url: str | None = Field(
        None,
        description="The token service's public URL (`iss`), behind a gateway; "
        "unset: the token URL.",
    )
    accepted_audiences: list[str] = Field(
        default_factory=lambda: ["authbus"],
        description="Audiences the services accept in access tokens.",
    )
    admin_password: SecretStr | None = Field(
        None, description="Preset admin password; unset: generated at first start."
    )
    admin_client_secret: SecretStr | None = Field(
        None, description="Preset `authbus-admin` secret; unset: generated at first start."
    )
    forwarded_allow_ips: str | None = Field(
        None,
        description="Comma-separated addresses or networks (CIDR) of the proxies whose "
        "`X-Forwarded-For` / `X-Forwarded-Proto` the services believe (the gateway's), so "
        "the client address (login throttle, audit) is the real client's; `*`: any peer. "
        "Unset: forwarded headers are ignored.",
    )
    log_level: str = Field("INFO", description="Log level.")
    log_json: bool = Field(True, description="One JSON object per log line.")

    user: UserSettings = Field(default_factory=UserSettings)
    token: TokenSettings = Field(default_factory=TokenSettings)
    event: EventSettings = Field(default_factory=EventSettings)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses_or_networks(cls, value: str | None) -> str | None:
        # uvicorn takes anything that is not an address as a literal, which never matches a
        # peer: a typo would silently trust nobody, so it is refused here.
        if value is None or not value.strip():
            return None
        items = [item.strip() for item in value.split(",") if item.strip()]
        if items == ["*"]:
            return "*"
        for item in items:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an IP address or network (e.g. 172.30.81.10, 10.0.0.0/8)"
                ) from None
        return ",".join(items)

    @model_validator(mode="after")
    def _urls_follow_ports(self) -> Settings:
        # A service moved to another port is reached there unless its URL was set explicitly.
        for service in SERVICE_NAMES:
            field = f"{service}_url"
            if field not in self.model_fields_set:
                svc: ServiceSettings = getattr(self, service)
                setattr(self, field, f"http://127.0.0.1:{svc.port}")
        return self

    @property
    def issuer(self) -> str:
        """The `iss` of every token; the token service's public URL."""
        return (self.issuer_url or self.token_url).rstrip("/")

    def database_url(self, service: str) -> str:
        """The SQLAlchemy URL of `service`'s own database."""
        svc: ServiceSettings = getattr(self, service)
        if svc.database_url:
            return svc.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def credentials_path(self) -> Path:
        return self.data_dir / "credentials.json"


def redact_url(url: str) -> str:
    """`url` with its password hidden, for printing (secrets are never shown).

    redact_url("postgresql://authbus:s3cret@db/user")  # 'postgresql://authbus:***@db/user'
    redact_url("redis://cache:6379/0?password=s3cret")  # 'redis://cache:6379/0?password=***'
    """
    parts = urlsplit(url)
    head, sep, query = url.partition("?")
    if parts.password:
        head = head.replace(f":{parts.password}@", ":***@", 1)
    if "password" in query.lower():
        # asyncpg and redis-py also take the password as a query parameter (`sslpassword` too).
        query, hash_, fragment = query.partition("#")
        fields = query.split("&")
        for i, item in enumerate(fields):
            key, eq, value = item.partition("=")
            if eq and value and "password" in key.lower():
                fields[i] = f"{key}=***"
        query = "&".join(fields) + hash_ + fragment
    # Edited as text, not rebuilt with urlunsplit, which drops the empty host of
    # `sqlite:////abs/path`.
    return head + sep + query
