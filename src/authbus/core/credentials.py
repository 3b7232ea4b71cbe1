"""The bootstrap credentials file (`<data_dir>/credentials.json`, mode 0600).

It holds the generated admin password and the secrets of the built-in clients, written once
at first start. Settings preset them (`AUTHBUS_ADMIN_PASSWORD`, `AUTHBUS_ADMIN_CLIENT_SECRET`,
`AUTHBUS_<SERVICE>__CLIENT_SECRET`); `check_presets` refuses presets that are placeholders or
too short to be secrets, before anything starts:

    check_presets(Settings())   # raises WeakSecret naming each offending variable
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

from authbus.core.settings import Settings

ADMIN_USERNAME = "admin"
ADMIN_CLIENT_ID = "authbus-admin"
SERVICE_CLIENT_IDS = {"user": "user-service", "token": "token-service", "event": "event-service"}


# Client secrets are checked with a plain SHA-256 digest and the master key becomes an AES key
# through one SHA-256: neither is stretched, so a preset must carry its own entropy. 32
# characters is the floor (the command below prints 43, 256 bits).
MIN_PRESET_LENGTH = 32
GENERATE_COMMAND = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
# .env.example's placeholders all begin with this.
PLACEHOLDER_PREFIX = "change-me"


class WeakSecret(ValueError):
    """A preset secret is a placeholder or too short; the message names each variable."""


def _is_placeholder(value: str) -> bool:
    return value.lower().startswith(PLACEHOLDER_PREFIX)


def generate_secret() -> str:
    """256 bits of entropy, URL-safe."""
    return secrets.token_urlsafe(32)


def preset_secrets(settings: Settings) -> dict[str, SecretStr]:
    """The secrets the operator preset, by environment variable."""
    found: dict[str, SecretStr | None] = {
        "AUTHBUS_ADMIN_PASSWORD": settings.admin_password,
        "AUTHBUS_ADMIN_CLIENT_SECRET": settings.admin_client_secret,
        "AUTHBUS_TOKEN__MASTER_KEY": settings.token.master_key,
    }
    for service in SERVICE_CLIENT_IDS:
        found[f"AUTHBUS_{service.upper()}__CLIENT_SECRET"] = getattr(
            settings, service
        ).client_secret
    return {name: value for name, value in found.items() if value is not None}


def check_presets(settings: Settings) -> None:
    """Refuse preset secrets that are placeholders or shorter than `MIN_PRESET_LENGTH`, and
    database URLs whose password is a placeholder (the database's own rules decide the rest).

    Raises `WeakSecret` naming every offending variable (never its value).
    """
    bad = []
    for name, secret in preset_secrets(settings).items():
        value = secret.get_secret_value()
        if _is_placeholder(value):
            bad.append(f"{name} is still the placeholder from .env.example")
        elif len(value) < MIN_PRESET_LENGTH:
            bad.append(f"{name} has {len(value)} characters, fewer than {MIN_PRESET_LENGTH}")
    for service in SERVICE_CLIENT_IDS:
        url = getattr(settings, service).database_url
        password = urlsplit(url).password if url else None
        if password is not None and _is_placeholder(unquote(password)):
            bad.append(
                f"the password in AUTHBUS_{service.upper()}__DATABASE_URL is still the "
                "placeholder from .env.example (POSTGRES_PASSWORD)"
            )
    if bad:
        raise WeakSecret("; ".join(bad) + f". Generate each secret with: {GENERATE_COMMAND}")


def load(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    """Write atomically with mode 0600 from the start (the secrets never sit world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _preset(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def generated_names(settings: Settings) -> list[str]:
    """Which credentials were generated rather than preset (only those may be printed)."""
    names = []
    if settings.admin_password is None:
        names.append("admin_password")
    if settings.admin_client_secret is None:
        names.append(ADMIN_CLIENT_ID)
    return names


def ensure(settings: Settings) -> tuple[dict[str, Any], bool]:
    """The credentials, created on first call. Returns (credentials, created_now)."""
    path = settings.credentials_path()
    existing = load(path)
    if existing is not None:
        return existing, False
    clients: dict[str, str] = {}
    for service, client_id in SERVICE_CLIENT_IDS.items():
        preset = getattr(settings, service).client_secret
        clients[client_id] = preset.get_secret_value() if preset else generate_secret()
    clients[ADMIN_CLIENT_ID] = _preset(settings.admin_client_secret) or generate_secret()
    data = {
        "admin": {
            "username": ADMIN_USERNAME,
            "password": _preset(settings.admin_password) or generate_secret(),
        },
        "clients": clients,
    }
    write(path, data)
    return data, True


def service_client_secret(settings: Settings, service: str) -> str | None:
    """The service's own client secret: from its settings, else from the credentials file."""
    svc = getattr(settings, service)
    if svc.client_secret is not None:
        return str(svc.client_secret.get_secret_value())
    data = load(settings.credentials_path())
    if data is None:
        return None
    secret = data.get("clients", {}).get(svc.client_id)
    return str(secret) if secret else None
