"""orders_service: a small resource service built only on `authbus.common`.

It shows what another team's service does with authbus: check bearer tokens and scopes
(`requires`), send browsers to the sign-in page (`BrowserLogin`), publish events with
its own client credentials (`AsyncEventPublisher` + `AsyncTokenAuth`) and react to the
user service's events (`EventSubscriber`). Run it with `python -m examples.orders_service`.
"""

from .app import create_app
from .config import OrdersConfig

__all__ = ["OrdersConfig", "create_app"]
