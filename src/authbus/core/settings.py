"""Settings, read from `AUTHBUS_*` environment variables (nested with `__`).

Example: `AUTHBUS_USER__DATABASE_URL=postgresql+asyncpg://…`, `AUTHBUS_REDIS_URL=redis://…`.
Settings objects are built by the caller (`Settings()` in the CLI, explicit values in tests),
never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICE_NAMES = ("user", "token", "event")


class ServiceSettings(BaseModel):
    """What every service has: where it listens, its database, its own OAuth client."""

    host: str = "127.0.0.1"
    port: int
    # None: a SQLite file `<service>.db` under the data directory.
    database_url: str | None = None
    # The service's own confidential client (client credentials for calls to its peers).
    client_id: str
    client_secret: SecretStr | None = None
    workers: int = 1


class UserSettings(ServiceSettings):
    port: int = 8081
    client_id: str = "user-service"
    # argon2id parameters; defaults above OWASP's minimum (19 MiB, t=2, p=1).
    argon2_memory_kib: int = 19 * 1024
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    # Failed-login throttle per (username, client address).
    throttle_free_attempts: int = 5
    throttle_base_delay_s: float = 1.0
    throttle_max_delay_s: float = 300.0


class TokenSettings(ServiceSettings):
    port: int = 8082
    client_id: str = "token-service"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 30 * 24 * 3600
    refresh_reuse_grace_s: int = 10
    code_ttl_s: int = 60
    sso_session_ttl_s: int = 8 * 3600
    signing_alg: Literal["ES256", "EdDSA"] = "ES256"
    # Audience put in tokens when neither the client nor the request (RFC 8707) names one.
    default_audience: str = "authbus"
    # Encrypts private signing keys at rest when set.
    master_key: SecretStr | None = None


class EventSettings(ServiceSettings):
    port: int = 8083
    client_id: str = "event-service"
    max_payload_bytes: int = 256 * 1024
    # Events waiting per subscriber before it is marked lagging and fed from the log instead.
    max_waiting_per_subscriber: int = 100_000
    dispatch_interval_s: float = 1.0


class Settings(BaseSettings):
    """The whole configuration of an authbus deployment."""

    model_config = SettingsConfigDict(
        env_prefix="AUTHBUS_", env_nested_delimiter="__", extra="ignore"
    )

    data_dir: Path = Path("var")
    # None: the token store is an in-process dict and event delivery is unavailable;
    # `authbus up` starts an embedded server and sets this.
    redis_url: str | None = None
    redis_prefix: str = "ab"
    # Where the services reach each other; the token URL is also the issuer.
    user_url: str = "http://127.0.0.1:8081"
    token_url: str = "http://127.0.0.1:8082"  # noqa: S105 - a URL
    event_url: str = "http://127.0.0.1:8083"
    # The issuer as browsers and clients see it (behind a gateway); default: token_url.
    issuer_url: str | None = None
    # Audiences the services accept in access tokens.
    accepted_audiences: list[str] = Field(default_factory=lambda: ["authbus"])
    # Presets for the bootstrap; generated at first start when unset.
    admin_password: SecretStr | None = None
    admin_client_secret: SecretStr | None = None
    log_level: str = "INFO"
    log_json: bool = True

    user: UserSettings = Field(default_factory=UserSettings)
    token: TokenSettings = Field(default_factory=TokenSettings)
    event: EventSettings = Field(default_factory=EventSettings)

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
