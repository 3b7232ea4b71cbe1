"""What the domain code may know of the request it serves, without importing the web stack.

The services' middleware (`authbus.core.app.RequestContextMiddleware`) sets the client's
address for each request (as uvicorn resolved it: the peer, or the forwarded address from a
trusted gateway); the user service's audit entries record it as "from where".

    address = client_address_var.get()     # "10.0.0.7", or None outside a request
"""

from __future__ import annotations

import contextvars

__all__ = ["client_address_var"]

client_address_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "authbus_client_address", default=None
)
