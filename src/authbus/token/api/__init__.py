"""HTTP for the token service (the only layer, with `app`, that imports FastAPI).

- `oauth`: /token, /introspect, /revoke, /.well-known/oauth-authorization-server, JWKS
- `login`: /authorize (sign-in and consent pages), /logout
- `clients`: /v1/clients administration
"""

from authbus.token.api import clients, login, oauth

__all__ = ["clients", "login", "oauth"]
