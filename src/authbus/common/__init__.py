"""authbus.common: the client library every authbus service (and yours) imports.

    import requests
    from authbus.common import TokenAuth

    session = requests.Session()
    session.auth = TokenAuth("billing", secret, issuer="http://127.0.0.1:8082",
                             scopes=["events:publish"])
    session.post("http://127.0.0.1:8083/v1/channels/orders/events", json={...})

Resource servers check tokens with `authbus.common.security` (needs FastAPI:
`pip install authbus[server]`); services consume events with `EventSubscriber`.
Names that need optional or heavier modules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from authbus.common._errors import (
    AuthbusClientError,
    InvalidTokenError,
    TokenCheckUnavailable,
    TokenError,
)
from authbus.common._login import BrowserLogin
from authbus.common._revocation import IntrospectionRevocationCheck, RedisRevocationCheck
from authbus.common._validator import Caller, TokenValidator
from authbus.common.token_auth import (
    AsyncRefreshTokenAuth,
    AsyncTokenAuth,
    RefreshTokenAuth,
    TokenAuth,
)

if TYPE_CHECKING:
    from authbus.common.publisher import AsyncEventPublisher, EventPublisher, PublishError
    from authbus.common.security import requires
    from authbus.common.subscriber import Event, EventSubscriber, ProcessedGuard

__all__ = [
    "AsyncEventPublisher",
    "AsyncRefreshTokenAuth",
    "AsyncTokenAuth",
    "AuthbusClientError",
    "BrowserLogin",
    "Caller",
    "Event",
    "EventPublisher",
    "EventSubscriber",
    "IntrospectionRevocationCheck",
    "InvalidTokenError",
    "ProcessedGuard",
    "PublishError",
    "RedisRevocationCheck",
    "RefreshTokenAuth",
    "TokenAuth",
    "TokenCheckUnavailable",
    "TokenError",
    "TokenValidator",
    "requires",
]

# name -> module that defines it, imported on first access (PEP 562): security needs
# FastAPI, which the base install does not have; the event modules pull in more.
_LAZY = {
    "requires": "authbus.common.security",
    "EventSubscriber": "authbus.common.subscriber",
    "Event": "authbus.common.subscriber",
    "ProcessedGuard": "authbus.common.subscriber",
    "EventPublisher": "authbus.common.publisher",
    "AsyncEventPublisher": "authbus.common.publisher",
    "PublishError": "authbus.common.publisher",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'authbus.common' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install authbus[server] for FastAPI)" if "security" in module_name else ""
        raise ImportError(f"authbus.common.{name} is unavailable{hint}: {exc}") from exc
    value = getattr(module, name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
