"""The example's configuration, read from `ORDERS_*` environment variables.

config = OrdersConfig.from_env()          # in __main__, never at import time
app = create_app(config)
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field


class ConfigError(ValueError):
    """A required setting is missing or malformed."""


@dataclass(frozen=True)
class OrdersConfig:
    """Where the authbus services are and who this service is.

    | variable | default |
    |---|---|
    | ORDERS_CLIENT_ID | `orders` |
    | ORDERS_CLIENT_SECRET | required |
    | ORDERS_TOKEN_URL | `http://127.0.0.1:8082` (token requests and the JWKS) |
    | ORDERS_ISSUER_URL | the token URL (the tokens' `iss`; browsers sign in there) |
    | ORDERS_EVENT_URL | `http://127.0.0.1:8083` |
    | ORDERS_REDIS_URL | `redis://127.0.0.1:6379/0` |
    | ORDERS_REDIS_PREFIX | `ab` |
    | ORDERS_AUDIENCE | `authbus` |
    | ORDERS_HOST | `127.0.0.1` (`0.0.0.0` in a container) |
    | ORDERS_PORT | `8090` |
    | ORDERS_PUBLIC_URL | `http://127.0.0.1:<port>` (the sign-in callback is under it) |
    | ORDERS_COOKIE_SECRET | random per process (set it when running several instances) |
    """

    client_id: str
    client_secret: str
    token_url: str = "http://127.0.0.1:8082"  # noqa: S105  # a URL, not a secret
    # Behind a gateway (docker compose) the service reaches the token service at an inner
    # address, while tokens name, and browsers use, the public one.
    issuer_url: str = ""
    event_url: str = "http://127.0.0.1:8083"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "ab"
    audience: str = "authbus"
    host: str = "127.0.0.1"
    port: int = 8090
    public_url: str = ""
    cookie_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    def __post_init__(self) -> None:
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://127.0.0.1:{self.port}")
        if not self.issuer_url:
            object.__setattr__(self, "issuer_url", self.token_url)
        for name in ("token_url", "issuer_url", "event_url", "public_url"):
            object.__setattr__(self, name, getattr(self, name).rstrip("/"))

    @property
    def callback_url(self) -> str:
        """The redirect URI to register for this client (the sign-in callback)."""
        return f"{self.public_url}/auth/callback"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrdersConfig:
        """Read `ORDERS_*`; raises `ConfigError` naming what is missing.

        >>> OrdersConfig.from_env({"ORDERS_CLIENT_SECRET": "s"}).callback_url
        'http://127.0.0.1:8090/auth/callback'
        """
        env = os.environ if environ is None else environ
        secret = env.get("ORDERS_CLIENT_SECRET", "")
        if not secret:
            raise ConfigError("ORDERS_CLIENT_SECRET is required (the client's secret)")
        try:
            port = int(env.get("ORDERS_PORT", "8090"))
        except ValueError as exc:
            raise ConfigError("ORDERS_PORT must be a number") from exc
        given = {name: env[var] for name, var in OPTIONAL.items() if env.get(var)}
        return cls(
            client_id=env.get("ORDERS_CLIENT_ID", "orders"),
            client_secret=secret,
            port=port,
            **given,
        )


# setting -> variable, for the settings read as plain strings
OPTIONAL = {
    "token_url": "ORDERS_TOKEN_URL",
    "issuer_url": "ORDERS_ISSUER_URL",
    "event_url": "ORDERS_EVENT_URL",
    "redis_url": "ORDERS_REDIS_URL",
    "redis_prefix": "ORDERS_REDIS_PREFIX",
    "audience": "ORDERS_AUDIENCE",
    "host": "ORDERS_HOST",
    "public_url": "ORDERS_PUBLIC_URL",
    "cookie_secret": "ORDERS_COOKIE_SECRET",
}
# Every variable `from_env` reads (the compose validation checks against it).
VARIABLES = frozenset(
    {*OPTIONAL.values(), "ORDERS_CLIENT_ID", "ORDERS_CLIENT_SECRET", "ORDERS_PORT"}
)
